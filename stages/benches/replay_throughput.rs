//! Replay throughput: fixes per second through the distance and aggregate
//! stages, persisted to SQLite, on the real components and channels.
//!
//! `cargo bench -p stages --bench replay_throughput` (a release build). The
//! fleet is generated before the clock starts: OBUS vehicles driving at about
//! 20 m/s with a fix a second, sent in time order in batches of BATCH fixes,
//! as a replay at full speed would. Prints the rate and what was billed.
//! Set BENCH_OBUS / BENCH_FIXES_PER_OBU to change the load.

use std::time::Instant;

use stages::component::{
    BuildContext, Component, Context, Input, Kind, Output, Resources, Shutdown,
};
use stages::event::{Batch, EventContext, Events, Fix, ObuId};
use stages::registry;
use stages::telemetry::Telemetry;
use tokio::sync::mpsc;

const BATCH: usize = 4096;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Fixes of `obus` vehicles, one a second each, interleaved by time.
fn fleet(obus: usize, per_obu: usize) -> Vec<Vec<Fix>> {
    let ids: Vec<ObuId> = (0..obus).map(|i| ObuId::from(format!("obu-{i:06}"))).collect();
    let start_ms = 1_733_000_000_000_i64;
    let mut all = Vec::with_capacity(obus * per_obu);
    for step in 0..per_obu {
        for (i, id) in ids.iter().enumerate() {
            let ts_ms = start_ms + step as i64 * 1000;
            // Each vehicle drives its own heading at 18-22 m/s, with a slight wobble.
            let heading = (i as f64 * 0.618).rem_euclid(std::f64::consts::TAU);
            let speed = 18.0 + (i % 5) as f64;
            let along = speed * step as f64;
            let wobble = ((step as f64) * 0.3).sin() * 2.0;
            let lat = 48.0 + (i % 100) as f64 * 0.02 + (along * heading.cos() + wobble) / 111_200.0;
            let lon = 9.0 + (i / 100) as f64 * 0.02 + (along * heading.sin()) / 74_000.0;
            let ctx = EventContext { received_ms: ts_ms, trace: None };
            all.push(Fix { obu_id: id.clone(), ts_ms, lat, lon, ctx });
        }
    }
    all.chunks(BATCH).map(<[Fix]>::to_vec).collect()
}

fn stage(
    kind: Kind,
    type_name: &str,
    toml_text: &str,
    name: &str,
    resources: &mut Resources,
    telemetry: &Telemetry,
) -> Component {
    let value: toml::Value = toml::from_str(toml_text).expect("bench config parses");
    let config =
        (registry::find(kind, type_name).expect("registered").parse)(value).expect("valid");
    let mut cx = BuildContext { name, inputs: Vec::new(), telemetry, resources };
    config.build(&mut cx).expect("builds")
}

fn context(telemetry: &Telemetry, name: &str) -> Context {
    let metrics = telemetry.component(name, "stage", name);
    Context { name: name.into(), metrics, shutdown: Shutdown::never() }
}

fn main() {
    let obus = env_usize("BENCH_OBUS", 10_000);
    let per_obu = env_usize("BENCH_FIXES_PER_OBU", 200);
    let batches = fleet(obus, per_obu);
    let fixes: usize = batches.iter().map(Vec::len).sum();
    let dir = std::env::temp_dir().join(format!("toll-bench-{}", std::process::id()));
    let store = format!("sqlite://{}", dir.join("bench.db").display());

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();
    let distance = stage(Kind::Stage, "distance", "", "distance", &mut resources, &telemetry);
    let aggregate_toml = format!("price_per_km = 0.19\nstore = \"{store}\"");
    let aggregate =
        stage(Kind::Stage, "aggregate", &aggregate_toml, "aggregate", &mut resources, &telemetry);
    let (Component::Stage(distance), Component::Stage(aggregate)) = (distance, aggregate) else {
        panic!("both are stages");
    };

    let elapsed = runtime.block_on(async {
        let (fix_tx, fix_rx) = mpsc::channel(16);
        let (seg_tx, seg_rx) = mpsc::channel(16);
        let (tot_tx, mut tot_rx) = mpsc::channel(16);
        let started = Instant::now();
        let d = tokio::spawn(distance.run(
            Input::new(fix_rx, None),
            Output::new(vec![seg_tx], None),
            context(&telemetry, "distance"),
        ));
        let a = tokio::spawn(aggregate.run(
            Input::new(seg_rx, None),
            Output::new(vec![tot_tx], None),
            context(&telemetry, "aggregate"),
        ));
        let drain = tokio::spawn(async move { while tot_rx.recv().await.is_some() {} });
        for batch in batches {
            fix_tx.send(Batch::unacked(Events::Fixes(batch))).await.expect("distance runs");
        }
        drop(fix_tx);
        d.await.expect("distance joins").expect("distance ok");
        let distance_done = started.elapsed();
        a.await.expect("aggregate joins").expect("aggregate ok");
        drain.await.expect("drain joins");
        (distance_done, started.elapsed())
    });
    let (distance_done, elapsed) = elapsed;

    let billed_km = telemetry.counter_sum("toll_billed_distance_mm_total", &[]) as f64 / 1e6;
    let rate = fixes as f64 / elapsed.as_secs_f64();
    println!(
        "replay_throughput: {fixes} fixes from {obus} OBUs in {:.3} s = {:.0} fixes/s \
         (distance + aggregate, SQLite durability full; distance done after {:.3} s); \
         billed {billed_km:.1} km",
        elapsed.as_secs_f64(),
        rate,
        distance_done.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
