//! A thousand OBUs on loopback send fixes to the real runner at once, half in
//! the native wire format and half in the old Go format, some of the fixes
//! bad on purpose. Every client hears an acknowledgement for every frame, and
//! the distance stage accounts for every fix: billed, first of its OBU, or
//! rejected under a named reason.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use geographiclib_rs::{Geodesic, InverseGeodesic};
use serde_json::{json, Value};
use tokio::sync::{Barrier, Semaphore};
use tokio_tungstenite::tungstenite::Message;

const NATIVE_CLIENTS: usize = 500;
const GO_CLIENTS: usize = 500;
const TOKEN: &str = "e2e-websocket-token";
const PRICE_PER_KM: f64 = 0.19;
/// Every this many native clients one also sends a malformed frame.
const MALFORMED_EVERY: usize = 10;
/// Handshakes in flight at once while the clients connect.
const CONNECTING_AT_ONCE: usize = 100;
/// Metres a native OBU moves between fixes (1 s apart: 108 km/h).
const NATIVE_STEP_M: f64 = 30.0;
/// Metres a Go OBU moves between frames (1 s apart: 72 km/h).
const GO_STEP_M: f64 = 20.0;
/// Degrees of latitude per metre northwards near 50° N (about 111.2 km per degree).
const DEG_PER_M: f64 = 1.0 / 111_200.0;
/// Reasons a Go fix after the first may be refused for when the server read
/// it too soon after the one before (the fix takes its time of receipt).
const TIMING_REASONS: [&str; 3] = ["implausible_speed", "same_time", "too_late"];

/// What the distance stage should make of a fix the test sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    First,
    Billed,
    Rejected(&'static str),
    /// A Go fix after the first: it carries no time, so its speed from the
    /// previous fix depends on when the server read both; normally billed.
    Timed,
}

/// One text frame, the fates of its fixes, and the pause after sending it.
struct Frame {
    text: String,
    fates: Vec<Fate>,
    pause: Duration,
    /// The server refuses the frame as a whole and answers with an error.
    malformed: bool,
}

impl Frame {
    fn new(fixes: Vec<(Value, Fate)>, pause: Duration) -> Frame {
        let (values, fates): (Vec<Value>, Vec<Fate>) = fixes.into_iter().unzip();
        let text = match <[Value; 1]>::try_from(values) {
            Ok([single]) => single.to_string(),
            Err(values) => Value::Array(values).to_string(),
        };
        Frame { text, fates, pause, malformed: false }
    }

    /// A frame whose fix lacks its latitude: refused whole, nothing reaches the stages.
    fn malformed(obu_id: &str) -> Frame {
        let text = json!({"obu_id": obu_id, "ts": rfc3339(0), "lon": 11.9}).to_string();
        Frame { text, fates: Vec::new(), pause: Duration::ZERO, malformed: true }
    }
}

fn rfc3339(ms: i64) -> String {
    let time = DateTime::<Utc>::from_timestamp_millis(ms).expect("time in range");
    time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A native OBU's start position: clients spread over a few kilometres.
fn native_start(i: usize) -> (f64, f64) {
    (50.30 + (i % 25) as f64 * 0.002, 11.90 + (i / 25) as f64 * 0.003)
}

fn native_id(i: usize) -> String {
    format!("ws-native-{i:03}")
}

/// Five good fixes 1 s apart moving north, sent in four frames with a
/// duplicate, an out-of-range latitude and a (0, 0) among them; every
/// `MALFORMED_EVERY`-th client also sends a malformed frame second.
fn native_frames(i: usize, t0_ms: i64) -> Vec<Frame> {
    let id = native_id(i);
    let (lat0, lon) = native_start(i);
    let fix = |ts_ms: i64, lat: f64, lon: f64| {
        let ts = rfc3339(ts_ms);
        json!({"obu_id": id, "ts": ts, "lat": lat, "lon": lon})
    };
    let good = |k: i64| fix(t0_ms + k * 1000, lat0 + k as f64 * NATIVE_STEP_M * DEG_PER_M, lon);
    let none = Duration::ZERO;
    let mut frames = vec![
        Frame::new(vec![(good(0), Fate::First), (good(1), Fate::Billed)], none),
        Frame::new(
            vec![
                (good(2), Fate::Billed),
                (good(2), Fate::Rejected("duplicate")),
                (fix(t0_ms + 2500, 95.0, lon), Fate::Rejected("out_of_range")),
            ],
            none,
        ),
        Frame::new(
            vec![
                (fix(t0_ms + 2600, 0.0, 0.0), Fate::Rejected("null_island")),
                (good(3), Fate::Billed),
            ],
            none,
        ),
        Frame::new(vec![(good(4), Fate::Billed)], none),
    ];
    if i % MALFORMED_EVERY == 0 {
        frames.insert(1, Frame::malformed(&id));
    }
    frames
}

/// Three good fixes a second apart, one frame each, with a (0, 0) and an
/// out-of-range longitude in between; the server stamps them with their receipt.
fn go_frames(j: usize) -> Vec<Frame> {
    let id = 700_000 + j as i64;
    let (lat0, lon) = (50.25 + (j % 25) as f64 * 0.002, 11.85 + (j / 25) as f64 * 0.003);
    let fix = |lat: f64, lon: f64| json!({"obuID": id, "lat": lat, "long": lon});
    let good = |k: f64| fix(lat0 + k * GO_STEP_M * DEG_PER_M, lon);
    let (second, none) = (Duration::from_secs(1), Duration::ZERO);
    vec![
        Frame::new(vec![(good(0.0), Fate::First)], second),
        Frame::new(vec![(good(1.0), Fate::Timed)], none),
        Frame::new(vec![(fix(0.0, 0.0), Fate::Rejected("null_island"))], second),
        Frame::new(vec![(good(2.0), Fate::Timed)], none),
        Frame::new(vec![(fix(lat0, 200.5), Fate::Rejected("out_of_range"))], none),
    ]
}

fn pipeline(dir: &Path, ws: u16, gateway: u16) -> String {
    format!(
        r#"[sources.obus]
type = "websocket"
listen = "127.0.0.1:{ws}"
path = "/ws"

[queues.fixes]
type = "memory"
inputs = ["obus"]

[stages.distance]
type = "distance"
inputs = ["fixes"]
reorder_window_s = 1
idle_flush_s = 1

[stages.aggregate]
type = "aggregate"
inputs = ["distance"]
price_per_km = {PRICE_PER_KM}
currency = "EUR"
store = "sqlite://{store}"
durability = "normal"

[sinks.gateway]
type = "gateway"
inputs = ["aggregate"]
listen = "127.0.0.1:{gateway}"
tokens_file = "{tokens}"
"#,
        store = dir.join("ws.db").display(),
        tokens = dir.join("tokens").display(),
    )
}

/// Fails unless this process (and so the runner it starts) may open enough
/// files: each side holds one socket per client.
fn assert_enough_file_descriptors() {
    let out = std::process::Command::new("sh").args(["-c", "ulimit -n"]).output().unwrap();
    let limit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let needed = NATIVE_CLIENTS + GO_CLIENTS + 1_000;
    let enough = limit == "unlimited" || limit.parse::<usize>().is_ok_and(|n| n >= needed);
    assert!(enough, "`ulimit -n` is {limit}; this test needs {needed} (raise it: ulimit -n 4096)");
}

/// One OBU: connects, waits for every other client, sends its frames, and
/// reads until each frame is acknowledged with its number of fixes.
async fn client(
    url: String,
    frames: Vec<Frame>,
    start: Arc<Barrier>,
    connecting: Arc<Semaphore>,
) -> Result<(), String> {
    let connected = {
        let _permit = connecting.acquire().await.expect("semaphore stays open");
        tokio_tungstenite::connect_async(url.as_str()).await
    };
    start.wait().await;
    let (mut ws, _) = connected.map_err(|e| format!("connect: {e}"))?;

    for frame in &frames {
        ws.send(Message::text(frame.text.clone())).await.map_err(|e| format!("send: {e}"))?;
        tokio::time::sleep(frame.pause).await;
    }
    let mut acked = vec![false; frames.len()];
    while acked.iter().any(|done| !done) {
        let message = match ws.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err(format!("closed with frames unacknowledged: {acked:?}")),
        };
        let Message::Text(text) = message else { continue };
        let reply: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        let refused = reply["error"] == "malformed frame";
        let number = if refused { &reply["frame"] } else { &reply["ack"] };
        let n = number.as_u64().ok_or_else(|| format!("neither ack nor error: {text}"))? as usize;
        let frame =
            frames.get(n.wrapping_sub(1)).ok_or_else(|| format!("unknown frame: {text}"))?;
        let fits = if frame.malformed { refused } else { reply["fixes"] == frame.fates.len() };
        if !fits || acked[n - 1] {
            return Err(format!("wrong or repeated answer to frame {n}: {text}"));
        }
        acked[n - 1] = true;
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))
}

/// Runs every client at once; returns the failures.
fn run_clients(url: &str, plans: Vec<Vec<Frame>>) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let start = Arc::new(Barrier::new(plans.len()));
        let connecting = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
        let tasks: Vec<_> = plans
            .into_iter()
            .map(|frames| {
                let task = client(url.to_owned(), frames, start.clone(), connecting.clone());
                tokio::spawn(tokio::time::timeout(Duration::from_secs(40), task))
            })
            .collect();
        let mut failures = Vec::new();
        for task in tasks {
            match task.await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => failures.push(error),
                Ok(Err(_)) => failures.push("no ack within 40 s".to_owned()),
                Err(panic) => failures.push(format!("client panicked: {panic}")),
            }
        }
        failures
    })
}

/// The distance stage's rejections by reason, and its billed and first fixes.
fn distance_outcomes(page: &str) -> (BTreeMap<String, f64>, f64, f64) {
    let mut rejected = BTreeMap::new();
    for (labels, value) in support::samples(page, "toll_component_rejected_events_total") {
        if labels.get("component").is_some_and(|c| c == "distance") {
            let reason = labels.get("reason").cloned().unwrap_or_default();
            *rejected.entry(reason).or_insert(0.0) += value;
        }
    }
    let distance = [("component", "distance")];
    let billed = support::sample_sum(page, "toll_distance_billed_fixes_total", &distance);
    let first = support::sample_sum(page, "toll_distance_first_fixes_total", &distance);
    (rejected, billed, first)
}

/// Billed metres of a native OBU: four 30 m steps north, by Karney's geodesic.
fn native_expected_m(i: usize) -> f64 {
    let (lat0, lon) = native_start(i);
    let geodesic = Geodesic::wgs84();
    (0..4)
        .map(|k| {
            let from = lat0 + k as f64 * NATIVE_STEP_M * DEG_PER_M;
            let to = lat0 + (k + 1) as f64 * NATIVE_STEP_M * DEG_PER_M;
            let metres: f64 = geodesic.inverse(from, lon, to, lon);
            metres
        })
        .sum()
}

#[test]
fn a_thousand_websocket_clients_have_every_fix_billed_or_rejected_with_a_reason() {
    assert_enough_file_descriptors();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let (mut runner, ports, _) = support::start_pipeline(
        dir.path(),
        "websocket",
        2,
        |ports| pipeline(dir.path(), ports[0], ports[1]),
        |ports| ports[1],
        &[],
    );
    let base = format!("http://127.0.0.1:{}", ports[1]);

    // Native fixes are dated in the recent past, whole seconds apart.
    let t0_ms = (Utc::now().timestamp_millis() / 1000 - 30) * 1000;
    let mut plans: Vec<Vec<Frame>> = (0..NATIVE_CLIENTS).map(|i| native_frames(i, t0_ms)).collect();
    plans.extend((0..GO_CLIENTS).map(go_frames));
    let mut expected: BTreeMap<Fate, f64> = BTreeMap::new();
    for fate in plans.iter().flatten().flat_map(|frame| &frame.fates) {
        *expected.entry(*fate).or_insert(0.0) += 1.0;
    }
    let sent: f64 = expected.values().sum();
    let frames = plans.iter().flatten().count() as f64;
    let malformed = plans.iter().flatten().filter(|frame| frame.malformed).count() as f64;

    let url = format!("ws://127.0.0.1:{}/ws", ports[0]);
    let failures = run_clients(&url, plans);
    let clients_done = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} clients failed, e.g. {:?}; runner stderr:\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        runner.stderr()
    );

    let http = support::http();
    let (status, page) = support::get(&http, &format!("{base}/metrics"), None);
    assert_eq!(status, 200);
    let source = [("component", "obus")];
    let malformed_counted = support::sample_sum(
        &page,
        "toll_component_rejected_events_total",
        &[("component", "obus"), ("reason", "malformed_frame")],
    );
    assert_eq!(support::sample_sum(&page, "toll_websocket_frames_total", &source), frames);
    assert_eq!(malformed_counted, malformed, "malformed frames are counted by the source");
    let forwarded = support::sample_sum(&page, "toll_component_sent_events_total", &source);
    assert_eq!(forwarded, sent, "the source forwarded every fix of every well-formed frame");
    let received = support::sample_sum(
        &page,
        "toll_component_received_events_total",
        &[("component", "distance")],
    );
    let (rejected, billed, first) = distance_outcomes(&page);
    let rejected_sum: f64 = rejected.values().sum();
    assert_eq!(received, sent, "the distance stage received every fix sent");
    assert_eq!(
        received,
        rejected_sum + billed + first,
        "rejected {rejected:?}, billed {billed}, first {first}"
    );
    let planned = |reason: &str| {
        expected.keys().any(|fate| matches!(fate, Fate::Rejected(r) if *r == reason))
    };
    for (reason, count) in rejected.iter().filter(|(_, &count)| count > 0.0) {
        let named =
            !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        assert!(named, "{count} fixes rejected under reason {reason:?}");
        let foreseen = planned(reason) || TIMING_REASONS.contains(&reason.as_str());
        assert!(foreseen, "{count} fixes rejected as {reason}, which no fix sent should be");
    }
    for (fate, count) in &expected {
        if let Fate::Rejected(reason) = fate {
            assert_eq!(rejected.get(*reason).copied(), Some(*count), "fixes rejected as {reason}");
        }
    }
    assert_eq!(first, expected[&Fate::First], "every OBU's first fix starts its billing");
    let (certain, timed) = (expected[&Fate::Billed], expected[&Fate::Timed]);
    assert!(
        (certain..=certain + timed).contains(&billed),
        "billed {billed} of {certain} + {timed} timed"
    );

    // Invoices of a sample of native OBUs, summed over the periods their fixes span.
    let periods: std::collections::BTreeSet<String> =
        [t0_ms, t0_ms + 4000].iter().map(|&ms| rfc3339(ms)[..7].to_owned()).collect();
    for i in (0..NATIVE_CLIENTS).step_by(50) {
        let (mut metres, mut amounts) = (0.0, 0.0);
        for period in &periods {
            let url = format!("{base}/invoice/{}?period={period}", native_id(i));
            let (status, body) = support::get(&http, &url, Some(TOKEN));
            if status == 404 && periods.len() > 1 {
                continue;
            }
            assert_eq!(status, 200, "{url}: {body}");
            let invoice: Value = serde_json::from_str(&body).unwrap();
            let km = invoice["distance_km"].as_f64().expect("distance_km");
            assert_eq!(
                invoice["amount"].as_f64(),
                Some((km * PRICE_PER_KM * 100.0).round() / 100.0)
            );
            metres += invoice["distance_m"].as_f64().expect("distance_m");
            amounts += invoice["amount"].as_f64().expect("amount");
        }
        let want = native_expected_m(i);
        assert!(
            (metres - want).abs() < 0.01,
            "{} billed {metres} m, expected {want:.3} m",
            native_id(i)
        );
        assert!(amounts > 0.0);
    }

    let others: BTreeMap<_, _> = rejected.iter().filter(|(_, &n)| n > 0.0).collect();
    println!(
        "websocket load: {sent} fixes in {frames} frames ({malformed} malformed) \
         from {} clients, billed {billed}, first {first}, rejected {others:?}; \
         clients done in {:.1} s, test {:.1} s",
        NATIVE_CLIENTS + GO_CLIENTS,
        clients_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    runner.kill();
}
