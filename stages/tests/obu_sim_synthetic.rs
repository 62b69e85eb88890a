//! The simulated fleet: reproducible, plausible, with stops and signal gaps.

mod obu_sim_support;

use obu_sim_support::{haversine_m, run};
use stages::component::{Context, Output, Shutdown};
use stages::telemetry::Telemetry;
use tokio::sync::mpsc;

const START: &str = "start = \"2024-05-01T08:00:00Z\"\n";
/// 2024-05-01T08:00:00Z, converted by hand (`date -u -d ... +%s`).
const START_MS: i64 = 1_714_550_400_000;

fn fleet(extra: &str) -> String {
    format!("speedup = 0\n{START}{extra}")
}

#[tokio::test]
async fn same_seed_yields_identical_fixes_and_another_seed_differs() {
    let a = run(&fleet("seed = 7\ntrucks = 4\nfixes_per_truck = 500\n")).await;
    let b = run(&fleet("seed = 7\ntrucks = 4\nfixes_per_truck = 500\n")).await;
    let c = run(&fleet("seed = 8\ntrucks = 4\nfixes_per_truck = 500\n")).await;

    assert!(!a.fixes.is_empty());
    assert_eq!(a.fixes, b.fixes);
    assert_ne!(a.fixes, c.fixes);
}

#[tokio::test]
async fn fix_count_follows_trucks_and_duration_without_gaps() {
    let r = run(&fleet("trucks = 3\ninterval_ms = 2000\nduration_s = 60\ngap_every_s = 0\n")).await;

    // 60 s at one fix every 2 s is 30 intervals per truck.
    assert_eq!(r.fixes.len(), 3 * 30);
    let ids: Vec<String> = r.by_obu().into_keys().collect();
    assert_eq!(ids, ["obu-0001", "obu-0002", "obu-0003"]);
    assert_eq!(r.fixes[0].ts_ms, START_MS);
    assert!(r.fixes.iter().all(|f| (f.ts_ms - START_MS) % 2_000 == 0));
    assert!(r.fixes.iter().all(|f| f.ctx.received_ms == f.ts_ms), "no gap, no backlog");
}

#[tokio::test]
async fn batches_never_exceed_batch_size() {
    let r = run(&fleet("trucks = 7\nfixes_per_truck = 100\nbatch_size = 64\n")).await;

    assert!(r.batch_sizes.iter().all(|&n| n > 0 && n <= 64), "{:?}", r.batch_sizes);
    assert_eq!(r.batch_sizes.iter().sum::<usize>(), r.fixes.len());
}

#[tokio::test]
async fn speeds_stay_plausible_and_trucks_stop_and_lose_signal() {
    // One hour at 1 Hz, no GPS noise, so distances are the truck's own.
    let r = run(&fleet(
        "trucks = 10\nfixes_per_truck = 3600\ngps_noise_m = 0\n\
         stop_every_s = 600\nstop_s = 90\ngap_every_s = 600\ngap_s = 40\nbacklog_share = 0.5\n",
    ))
    .await;

    let (mut max_kmh, mut parked_runs, mut gaps) = (0.0f64, 0, 0);
    for fixes in r.by_obu().values_mut() {
        fixes.sort_by_key(|f| f.ts_ms);
        let mut still = 0;
        for pair in fixes.windows(2) {
            let dt_s = (pair[1].ts_ms - pair[0].ts_ms) as f64 / 1_000.0;
            let metres = haversine_m(&pair[0], &pair[1]);
            max_kmh = max_kmh.max(metres / dt_s * 3.6);
            gaps += usize::from(dt_s > 1.0);
            still = if metres == 0.0 { still + 1 } else { 0 };
            parked_runs += usize::from(still == 30);
        }
    }
    let backlogged = r.fixes.iter().filter(|f| f.ctx.received_ms > f.ts_ms).count();

    assert!(max_kmh <= 90.0 * 1.01, "fastest truck drove {max_kmh:.1} km/h");
    assert!(parked_runs >= 10, "only {parked_runs} stops of 30 s or more");
    assert!(gaps >= 10, "only {gaps} signal gaps");
    assert!(backlogged > 0, "no gap ended with a backlog");
    assert!(r.fixes.len() < 10 * 3600, "gaps without backlog lose fixes");
}

#[tokio::test]
async fn gps_noise_keeps_almost_all_speeds_below_130_kmh() {
    let r = run(&fleet("trucks = 10\nfixes_per_truck = 1000\ninterval_ms = 5000\n")).await;

    let mut speeds = Vec::new();
    for fixes in r.by_obu().values_mut() {
        fixes.sort_by_key(|f| f.ts_ms);
        for pair in fixes.windows(2) {
            let dt_s = (pair[1].ts_ms - pair[0].ts_ms) as f64 / 1_000.0;
            speeds.push(haversine_m(&pair[0], &pair[1]) / dt_s * 3.6);
        }
    }
    speeds.sort_by(f64::total_cmp);
    let p99 = speeds[speeds.len() * 99 / 100];
    assert!(p99 < 130.0, "99th percentile speed {p99:.1} km/h");
}

#[tokio::test]
async fn trucks_stay_near_their_bounding_box() {
    let r = run(&fleet(
        "trucks = 5\nfixes_per_truck = 7200\n\
         bbox = { min_lat = 48.0, min_lon = 11.0, max_lat = 48.1, max_lon = 11.15 }\n",
    ))
    .await;

    // A truck turning back at the edge overshoots by its turning circle
    // (under 300 m, about 0.004 degrees).
    let inside = |f: &stages::event::Fix| {
        (47.995..=48.105).contains(&f.lat) && (10.994..=11.156).contains(&f.lon)
    };
    assert!(r.fixes.iter().all(inside));
}

#[tokio::test]
async fn real_time_run_stops_on_shutdown() {
    let telemetry = Telemetry::new();
    let source = obu_sim_support::build("trucks = 2\nspeedup = 1.0\n", &telemetry).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let metrics = telemetry.component("sim", "source", "obu_sim");
    let (stop, shutdown) = Shutdown::new();
    let cx = Context { name: "sim".into(), metrics, shutdown };
    let task = tokio::spawn(source.run(Output::new(vec![tx], None), cx));

    let first = rx.recv().await.expect("a first batch in real time");
    stop.send(true).unwrap();
    while rx.recv().await.is_some() {}

    assert_eq!(first.len(), 2, "one fix per truck is due at the start");
    task.await.unwrap().expect("stops cleanly");
}
