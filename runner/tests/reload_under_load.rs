//! Twenty edits of a running pipeline's file while OBUs keep sending fixes.
//!
//! Two runners take the same steady load over WebSocket: one whose file is
//! never touched (the reference) and one whose file is edited twenty times:
//! prices, filter settings, a console sink added and removed, the distance
//! stage's inputs rewired around a queue, broken files, a save by rename,
//! and a file deleted and written back. Afterwards:
//! - every OBU's billed distance equals the reference to the millimetre;
//! - each price line holds the distance driven while that price was in force,
//!   and its amount is that distance times the price;
//! - components whose settings never changed were started once, and the
//!   OBUs' WebSocket connections to the edited runner were never closed
//!   before the runner was asked to stop.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use support::Background;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "reload-test-token";
const TRUCKS: usize = 24;
/// One fix per truck and second of wall time, dated when it is sent.
const FIXES_PER_TRUCK: usize = 45;

/// The parts of the pipeline file that the edits change.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    price: f64,
    max_speed_kmh: u32,
    /// A console sink takes the distance stage's segments.
    audit: bool,
    /// The distance stage takes its fixes through a memory queue.
    buffered: bool,
}

impl Settings {
    fn render(&self, dir: &Path, ws: u16, gateway: u16) -> String {
        let mut text = format!(
            r#"[sources.obus]
type = "websocket"
listen = "127.0.0.1:{ws}"
path = "/ws"

[stages.distance]
type = "distance"
inputs = ["{input}"]
filters.max_speed_kmh = {speed}

[stages.aggregate]
type = "aggregate"
inputs = ["distance"]
price_per_km = {price}
store = "sqlite://{store}"

[sinks.gateway]
type = "gateway"
inputs = ["aggregate"]
listen = "127.0.0.1:{gateway}"
tokens_file = "{tokens}"
"#,
            input = if self.buffered { "buffer" } else { "obus" },
            speed = self.max_speed_kmh,
            price = self.price,
            store = dir.join("toll.db").display(),
            tokens = dir.join("tokens").display(),
        );
        if self.buffered {
            text.push_str("\n[queues.buffer]\ntype = \"memory\"\ninputs = [\"obus\"]\n");
        }
        if self.audit {
            text.push_str(
                "\n[sinks.audit]\ntype = \"console\"\ninputs = [\"distance\"]\n\
                 target = \"stdout\"\n",
            );
        }
        text
    }
}

/// How an edit reaches the file.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Save {
    InPlace,
    /// Written beside the file, then renamed over it.
    Rename,
    /// Deleted, and written again a moment later.
    DeleteAndWrite,
    /// Invalid TOML: the running pipeline must stay as it is.
    BrokenToml,
    /// Valid TOML with a misspelt key.
    UnknownKey,
}

struct Edit {
    save: Save,
    settings: Settings,
    /// `applied`, `unchanged` or `rejected`.
    outcome: &'static str,
}

fn edits() -> Vec<Edit> {
    let mut s = Settings { price: 0.10, max_speed_kmh: 250, audit: false, buffered: true };
    let mut list = Vec::new();
    let mut push = |save, s: &Settings, outcome| {
        list.push(Edit { save, settings: s.clone(), outcome });
    };
    s.price = 0.11;
    push(Save::InPlace, &s, "applied");
    s.max_speed_kmh = 260;
    push(Save::InPlace, &s, "applied");
    s.audit = true;
    push(Save::InPlace, &s, "applied");
    s.audit = false;
    push(Save::InPlace, &s, "applied");
    s.buffered = false;
    push(Save::InPlace, &s, "applied");
    push(Save::BrokenToml, &s, "rejected");
    push(Save::InPlace, &s, "unchanged");
    s.price = 0.12;
    push(Save::Rename, &s, "applied");
    s.buffered = true;
    push(Save::InPlace, &s, "applied");
    s.max_speed_kmh = 270;
    push(Save::DeleteAndWrite, &s, "applied");
    s.price = 0.13;
    push(Save::InPlace, &s, "applied");
    s.audit = true;
    push(Save::Rename, &s, "applied");
    s.max_speed_kmh = 280;
    s.audit = false;
    push(Save::InPlace, &s, "applied");
    push(Save::UnknownKey, &s, "rejected");
    s.price = 0.14;
    push(Save::InPlace, &s, "applied");
    s.buffered = false;
    push(Save::Rename, &s, "applied");
    push(Save::DeleteAndWrite, &s, "unchanged");
    s.price = 0.15;
    s.buffered = true;
    push(Save::InPlace, &s, "applied");
    s.max_speed_kmh = 290;
    push(Save::InPlace, &s, "applied");
    s.price = 0.16;
    push(Save::Rename, &s, "applied");
    list
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as i64
}

/// Where truck `truck` is after `i` seconds: driving at 14–25 m/s on a
/// gently curving road somewhere around Hof.
fn position(truck: usize, i: usize) -> (f64, f64) {
    let speed = 14.0 + truck as f64 * 0.45;
    let (lat0, lon0) = (50.30 + truck as f64 * 0.01, 11.90);
    let (mut x, mut y) = (0.0, 0.0);
    for step in 0..i {
        let heading = (truck as f64) * 0.3 + (step as f64 / 40.0).sin() * 0.6;
        x += speed * heading.cos();
        y += speed * heading.sin();
    }
    let lat = lat0 + y / 111_320.0;
    let lon = lon0 + x / (111_320.0 * lat0.to_radians().cos());
    (lat, lon)
}

/// What happened to the connections of one runner: closes and errors
/// seen, with when they happened.
#[derive(Default)]
struct Connections {
    ended: Vec<(i64, String)>,
}

/// Sends every truck's fixes to both runners, one per truck and second;
/// returns when the last fix was sent.
async fn drive(urls: [String; 2], seen: [Arc<Mutex<Connections>>; 2]) -> i64 {
    let mut tasks = Vec::new();
    for truck in 0..TRUCKS {
        let mut sinks = Vec::new();
        for (url, seen) in urls.iter().zip(&seen) {
            let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap_or_else(|e| panic!("connect {url}: {e}"));
            let (sink, mut stream) = socket.split();
            let seen = Arc::clone(seen);
            tokio::spawn(async move {
                while let Some(message) = stream.next().await {
                    match message {
                        Ok(Message::Text(text)) => {
                            let reply: Value = serde_json::from_str(&text).expect("json reply");
                            assert!(reply.get("ack").is_some(), "only confirmations: {reply}");
                        }
                        Ok(Message::Close(frame)) => {
                            seen.lock().unwrap().ended.push((now_ms(), format!("close {frame:?}")));
                            return;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            seen.lock().unwrap().ended.push((now_ms(), error.to_string()));
                            return;
                        }
                    }
                }
                seen.lock().unwrap().ended.push((now_ms(), "stream ended".to_owned()));
            });
            sinks.push(sink);
        }
        tasks.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for i in 0..FIXES_PER_TRUCK {
                tokio::time::sleep_until(start + Duration::from_secs(i as u64)).await;
                let (lat, lon) = position(truck, i);
                let ts = chrono::DateTime::from_timestamp_millis(now_ms()).expect("valid time");
                let frame = serde_json::json!({
                    "obu_id": format!("truck-{truck:02}"),
                    "ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "lat": lat,
                    "lon": lon,
                })
                .to_string();
                for sink in &mut sinks {
                    sink.send(Message::text(frame.clone())).await.expect("frame is sent");
                }
            }
            sinks
        }));
    }
    for task in tasks {
        // The connections stay open until the runners stop.
        std::mem::forget(task.await.expect("truck task ends"));
    }
    now_ms()
}

/// Billed millimetres per OBU, and per OBU and price.
fn billed(db: &Path) -> (BTreeMap<String, i64>, BTreeMap<(String, String), i64>) {
    let conn = rusqlite::Connection::open(db).expect("store opens");
    let mut stmt = conn
        .prepare("SELECT obu_id, price_per_km, SUM(distance_mm) FROM totals GROUP BY 1, 2")
        .expect("query prepares");
    let rows: Vec<(String, f64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("rows read");
    let mut per_obu = BTreeMap::new();
    let mut per_price = BTreeMap::new();
    for (obu, price, mm) in rows {
        *per_obu.entry(obu.clone()).or_insert(0) += mm;
        *per_price.entry((obu, format!("{price:.2}"))).or_insert(0) += mm;
    }
    (per_obu, per_price)
}

fn write_pipeline(path: &Path, text: &str, save: Save) {
    match save {
        Save::InPlace => std::fs::write(path, text).expect("file written"),
        Save::Rename => {
            let beside = path.with_extension("toml.new");
            std::fs::write(&beside, text).expect("file written");
            std::fs::rename(&beside, path).expect("file renamed");
        }
        Save::DeleteAndWrite => {
            std::fs::remove_file(path).expect("file removed");
            // Long enough for the watcher to see the file gone on its own.
            std::thread::sleep(Duration::from_millis(600));
            std::fs::write(path, text).expect("file written");
        }
        Save::BrokenToml => {
            std::fs::write(path, format!("{text}\n[stages.distance\n")).expect("file written")
        }
        Save::UnknownKey => {
            let broken = text.replace("price_per_km", "price_per_kilometre");
            std::fs::write(path, broken).expect("file written")
        }
    }
}

/// When the last price window closed.
fn edits_end_ms(windows: &[(f64, i64, i64)]) -> i64 {
    windows.iter().map(|w| w.1).max().unwrap_or(0)
}

fn health(client: &reqwest::blocking::Client, base: &str) -> Value {
    let (status, body) = support::get(client, &format!("{base}/health"), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("health is json")
}

fn start(dir: &Path, stem: &str, settings: &Settings) -> (Background, u16, u16, PathBuf) {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("tokens"), format!("{TOKEN}\n")).expect("tokens written");
    let (runner, ports, path) = support::start_pipeline(
        dir,
        stem,
        2,
        |p| settings.render(dir, p[0], p[1]),
        |p| p[1],
        &[("RUST_LOG", "info".to_owned())],
    );
    (runner, ports[0], ports[1], path)
}

#[test]
fn twenty_edits_under_load_lose_nothing_and_restart_only_what_changed() {
    let temp = tempfile::tempdir().expect("temp dir");
    let edits = edits();
    let first = Settings { price: 0.10, max_speed_kmh: 250, audit: false, buffered: true };
    let (mut reference, ref_ws, ref_gateway, _) =
        start(&temp.path().join("reference"), "reference", &first);
    let dir = temp.path().join("edited");
    let (mut edited, ws, gateway, path) = start(&dir, "edited", &first);
    let base = format!("http://127.0.0.1:{gateway}");
    let client = support::http();

    let seen = [
        Arc::new(Mutex::new(Connections::default())),
        Arc::new(Mutex::new(Connections::default())),
    ];
    let urls = [format!("ws://127.0.0.1:{ref_ws}/ws"), format!("ws://127.0.0.1:{ws}/ws")];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let load = runtime.spawn(drive(urls, seen.clone()));
    std::thread::sleep(Duration::from_secs(3));

    // Each price and the fix-time window in which it was in force.
    let mut windows: Vec<(f64, i64, i64)> = vec![(first.price, i64::MIN, i64::MAX)];
    let mut reload_ms = Vec::new();
    let mut attempt = 0;
    let mut current = first.clone();
    for (n, edit) in edits.iter().enumerate() {
        let text = edit.settings.render(&dir, ws, gateway);
        let saved_ms = now_ms();
        let saved = Instant::now();
        write_pipeline(&path, &text, edit.save);
        let deadline = Instant::now() + Duration::from_secs(20);
        let record = loop {
            let h = health(&client, &base);
            if h["reload"]["attempt"].as_u64().unwrap_or(0) > attempt {
                break h["reload"].clone();
            }
            assert!(Instant::now() < deadline, "edit {n} ({:?}) was not reloaded", edit.save);
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = saved.elapsed();
        attempt = record["attempt"].as_u64().expect("attempt");
        assert_eq!(record["outcome"], edit.outcome, "edit {n} ({:?}): {record}", edit.save);
        if edit.outcome == "rejected" {
            let error = record["error"].as_str().expect("a rejected reload says why");
            assert!(error.contains("edited.toml:"), "the error names file and line: {error}");
            // Restore the last good file; the pipeline never changed.
            continue;
        }
        if edit.outcome == "applied" {
            reload_ms.push(took.as_millis() as u64);
        }
        if edit.settings.price != current.price {
            let at = record["at_ms"].as_i64().expect("at_ms");
            windows.last_mut().expect("a window").2 = at;
            windows.push((edit.settings.price, saved_ms, i64::MAX));
        }
        current = edit.settings.clone();
        std::thread::sleep(Duration::from_millis(400));
    }
    let load_end = runtime.block_on(load).expect("load generator finished");
    assert!(edits_end_ms(&windows) < load_end, "every edit was made under load");
    // Every fix reached the distance stage once, and was judged alike in both runs.
    std::thread::sleep(Duration::from_secs(1));
    let sent = (TRUCKS * FIXES_PER_TRUCK) as f64;
    let ref_base = format!("http://127.0.0.1:{ref_gateway}");
    let (_, ref_metrics) = support::get(&client, &format!("{ref_base}/metrics"), None);
    let (_, metrics) = support::get(&client, &format!("{base}/metrics"), None);
    for page in [&ref_metrics, &metrics] {
        let received = support::sample_sum(
            page,
            "toll_component_received_events_total",
            &[("component", "distance")],
        );
        assert_eq!(received, sent, "the distance stage received every fix once");
    }
    let rejected = |page: &str| {
        let by_reason = support::samples(page, "toll_component_rejected_events_total");
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        for (labels, value) in by_reason {
            if labels.get("component").is_some_and(|c| c == "distance") {
                *counts.entry(labels["reason"].clone()).or_default() += value;
            }
        }
        counts
    };
    assert_eq!(rejected(&metrics), rejected(&ref_metrics), "fixes refused alike");

    // Components never edited were started once; the edited ones once per change.
    let starts =
        |c: &str| support::sample_sum(&metrics, "toll_component_starts_total", &[("component", c)]);
    assert_eq!(starts("obus"), 1.0, "the websocket source was never restarted");
    assert_eq!(starts("gateway"), 1.0, "the gateway was never restarted");
    let price_changes = windows.len() - 1;
    assert_eq!(starts("aggregate"), 1.0 + price_changes as f64);
    assert_eq!(starts("distance"), 5.0, "one start and four filter changes");
    // An invoice shows each price's share.
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let (status, body) =
        support::get(&client, &format!("{base}/invoice/truck-03?period={period}"), Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let invoice: Value = serde_json::from_str(&body).expect("invoice json");
    let lines = invoice["lines"].as_array().expect("price lines");
    // Fixes wait out the reorder window before they are billed, so the
    // latest prices may have no line yet.
    assert!(lines.len() >= 2, "one line per price billed so far: {invoice}");
    let mut sum = 0.0;
    for line in lines {
        let (km, price) =
            (line["distance_km"].as_f64().unwrap(), line["price_per_km"].as_f64().unwrap());
        let amount = line["amount"].as_f64().expect("line amount");
        let priced = (km * price * 100.0).round() / 100.0;
        assert!((amount - priced).abs() < 1e-9, "line amount is distance times price: {line}");
        sum += amount;
    }
    let total = invoice["amount"].as_f64().expect("amount");
    assert!((total - sum).abs() < 1e-9, "the invoice adds its lines up: {invoice}");

    // Stop both; held fixes are decided at the stop.
    let stop_ms = now_ms();
    for runner in [&mut reference, &mut edited] {
        let status = runner.terminate(Duration::from_secs(30));
        assert!(status.is_some_and(|s| s.success()), "runner stops cleanly:\n{}", runner.stderr());
    }
    for (at, what) in &seen[1].lock().unwrap().ended {
        assert!(*at >= stop_ms, "a connection ended before the stop: {what}");
    }

    let (expected, _) = billed(&temp.path().join("reference/toll.db"));
    let (got, by_price) = billed(&dir.join("toll.db"));
    assert_eq!(expected.len(), TRUCKS);
    assert_eq!(got, expected, "distance per OBU equals the run without edits");

    // Each price holds the distance driven in its window: speed times time,
    // give or take the seconds around each switch.
    for truck in 0..TRUCKS {
        let obu = format!("truck-{truck:02}");
        let prices = by_price.keys().filter(|(o, _)| *o == obu).count();
        assert_eq!(prices, windows.len(), "{obu} drove under every price");
        let speed_mm = (14.0 + truck as f64 * 0.45) * 1000.0;
        for (price, from, to) in &windows {
            let billed = by_price.get(&(obu.clone(), format!("{price:.2}"))).copied().unwrap_or(0);
            // The first and last windows also hold the load's start and end.
            if *from == i64::MIN || *to == i64::MAX {
                continue;
            }
            let driven = speed_mm * (to - from).max(0) as f64 / 1000.0;
            let slack = speed_mm * 2.5;
            assert!(
                (billed as f64 - driven).abs() <= slack,
                "{obu} at {price}: billed {billed} mm, driven about {driven:.0} mm"
            );
        }
    }
    reload_ms.sort_unstable();
    println!(
        "reload time, file saved to new pipeline running, over {} applied edits: \
         min {} ms, median {} ms, max {} ms",
        reload_ms.len(),
        reload_ms[0],
        reload_ms[reload_ms.len() / 2],
        reload_ms[reload_ms.len() - 1]
    );
}
