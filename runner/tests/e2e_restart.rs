//! A runner killed with SIGKILL after its replay was persisted serves the same
//! invoices once started again, although the restart replays the whole file
//! once more: every segment already billed is recognised as a duplicate.
//!
//! Data: the Hof floating-car data (Map and Route GmbH & Co. KG via the
//! map-matching-2 project; see ../shared/data/hof-fcd-oberfranken/README.md).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "e2e-restart-token";
/// Tracks sampled: every `SAMPLE_STEP`-th of the file's 263.
const SAMPLE_STEP: usize = 13;

fn points() -> std::path::PathBuf {
    support::shared_data().join("hof-fcd-oberfranken/points.csv")
}

fn pipeline(dir: &Path, port: u16) -> String {
    format!(
        r#"[sources.hof]
type = "obu_sim"

[sources.hof.replay]
path = "{points}"
format = "csv"
obu_id_field = "id"
obu_id_prefix = "hof-"
time_field = "time"
point_field = "geometry"
order = "time"

[queues.fixes]
type = "memory"
inputs = ["hof"]

[stages.distance]
type = "distance"
inputs = ["fixes"]

[stages.aggregate]
type = "aggregate"
inputs = ["distance"]
price_per_km = 0.19
currency = "EUR"
store = "sqlite://{store}"

[sinks.gateway]
type = "gateway"
inputs = ["aggregate"]
listen = "127.0.0.1:{port}"
tokens_file = "{tokens}"
"#,
        points = points().display(),
        store = dir.join("hof.db").display(),
        tokens = dir.join("tokens").display(),
    )
}

/// A sample of OBU ids with the period (UTC month, the aggregate's default
/// time zone) of each track's first fix, read from the file itself.
fn sampled_tracks() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(points()).expect("points.csv is readable");
    let mut first_month = BTreeMap::new();
    for line in text.lines().skip(1) {
        let mut fields = line.splitn(3, ',');
        let (id, time) = (fields.next().expect("id"), fields.next().expect("time"));
        let id: u32 = id.parse().expect("track ids are numbers");
        // Times are written `2019-03-11 08:33:24+00:00`, already in UTC.
        assert!(time.ends_with("+00:00"), "time {time} is not UTC");
        first_month.entry(id).or_insert_with(|| time[..7].to_owned());
    }
    assert_eq!(first_month.len(), 263, "every track of the file is read");
    first_month
        .into_iter()
        .step_by(SAMPLE_STEP)
        .map(|(id, period)| (format!("hof-{id}"), period))
        .collect()
}

/// Status and body of every sampled invoice.
fn invoices(base: &str, tracks: &[(String, String)]) -> Vec<(u16, Value)> {
    let http = support::http();
    tracks
        .iter()
        .map(|(obu, period)| {
            let url = format!("{base}/invoice/{obu}?period={period}");
            let (status, body) = support::get(&http, &url, Some(TOKEN));
            assert!(status == 200 || status == 404, "{url}: {status} {body}");
            (status, serde_json::from_str(&body).expect("invoice answers are json"))
        })
        .collect()
}

fn metric(base: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, page) = support::get(&support::http(), &format!("{base}/metrics"), None);
    assert_eq!(status, 200);
    support::sample_sum(&page, name, labels)
}

fn assert_same(first: &[(u16, Value)], again: &[(u16, Value)], tracks: &[(String, String)]) {
    for ((before, after), (obu, period)) in first.iter().zip(again).zip(tracks) {
        let (distance, amount) = (&before.1["distance_m"], &before.1["amount"]);
        assert_eq!(distance, &after.1["distance_m"], "distance_m of {obu} in {period}");
        assert_eq!(amount, &after.1["amount"], "amount of {obu} in {period}");
        assert_eq!(before, after, "invoice of {obu} in {period}");
    }
}

#[test]
fn runner_killed_after_a_replay_serves_the_same_invoices_after_restart() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let tracks = sampled_tracks();
    let (mut runner, ports, pipeline_file) = support::start_pipeline(
        dir.path(),
        "restart",
        1,
        |ports| pipeline(dir.path(), ports[0]),
        |ports| ports[0],
        &[],
    );
    let base = format!("http://127.0.0.1:{}", ports[0]);
    let replay_limit = Duration::from_secs(45);
    support::wait_for_state(&mut runner, &base, "aggregate", "finished", replay_limit);
    let first = invoices(&base, &tracks);
    let billed = first.iter().filter(|(status, _)| *status == 200).count();
    assert!(billed >= tracks.len() * 3 / 4, "{billed} of {} sampled tracks billed", tracks.len());
    let segments =
        metric(&base, "toll_component_received_events_total", &[("component", "aggregate")]);
    assert!(segments > 0.0);

    runner.kill();
    let mut runner = support::Background::spawn(&pipeline_file, &[], dir.path(), "restart");
    if support::wait_for_health(&mut runner, &base).is_none() {
        panic!("restarted runner ended before /health answered:\n{}", runner.stderr());
    }
    let at_restart = invoices(&base, &tracks);
    assert_same(&first, &at_restart, &tracks);

    support::wait_for_state(&mut runner, &base, "aggregate", "finished", replay_limit);
    let after_replay = invoices(&base, &tracks);
    assert_same(&first, &after_replay, &tracks);
    let aggregate = [("component", "aggregate")];
    let received = metric(&base, "toll_component_received_events_total", &aggregate);
    let duplicates = metric(
        &base,
        "toll_component_rejected_events_total",
        &[("component", "aggregate"), ("reason", "duplicate_segment")],
    );
    let billed_m = metric(&base, "toll_billed_distance_meters_total", &aggregate);
    assert!(received > 0.0, "the second replay delivers segments again");
    assert_eq!(duplicates, received, "every segment of the second replay is a duplicate");
    assert_eq!(billed_m, 0.0, "nothing is billed twice");
    println!(
        "restart: {billed} of {} sampled invoices, {segments} segments replayed twice, {:.1} s",
        tracks.len(),
        started.elapsed().as_secs_f64()
    );
}
