//! The Hof replay through a Kafka queue, produced and consumed in one
//! process, bills exactly what the same replay bills through the memory queue.
//!
//! Data: the Hof floating-car data (Map and Route GmbH & Co. KG via the
//! map-matching-2 project; see ../shared/data/hof-fcd-oberfranken/README.md).

mod kafka_common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kafka_common::{Gatewayed, Topic};

/// Rows of points.csv (without its header).
const HOF_FIXES: i64 = 14_651;

fn points() -> std::path::PathBuf {
    support::shared_data().join("hof-fcd-oberfranken/points.csv")
}

fn replay_toml() -> String {
    format!(
        r#"[sources.hof]
type = "obu_sim"

[sources.hof.replay]
path = "{}"
format = "csv"
obu_id_field = "id"
obu_id_prefix = "hof-"
time_field = "time"
point_field = "geometry"
order = "time"
"#,
        points().display()
    )
}

fn kafka_pipeline(dir: &Path, topic: &Topic, port: u16) -> String {
    let store = dir.join("kafka.db");
    let billing = kafka_common::billing_toml(&store, false, port, dir);
    format!("{}\n{}\n{billing}", replay_toml(), topic.queue_toml(Some("hof")))
}

#[test]
fn hof_replay_through_kafka_bills_exactly_what_the_memory_queue_bills() {
    let topic = Topic::fresh("hof", 12);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let memory_db = dir.path().join("memory.db");
    let store = format!("sqlite://{}", memory_db.display());
    support::run_pipeline("pipelines/replay-hof.toml", &[("TOLL_STAGES__AGGREGATE__STORE", store)]);
    let memory = support::totals(&memory_db);
    let memory_s = started.elapsed().as_secs_f64();

    let mut runner =
        Gatewayed::start(dir.path(), "hof-kafka", |port| kafka_pipeline(dir.path(), &topic, port));
    kafka_common::drain(&mut runner, &topic, HOF_FIXES, Duration::from_secs(60));
    assert_eq!(topic.messages(), HOF_FIXES, "every row became one message");
    let kafka = support::totals(&dir.path().join("kafka.db"));

    let km = |t: &std::collections::BTreeMap<(String, String), i64>| {
        t.values().map(|&mm| mm as f64 / 1e6).sum::<f64>()
    };
    println!(
        "hof: memory {} rows {:.3} km in {memory_s:.1} s; kafka {} rows {:.3} km; test {:.1} s",
        memory.len(),
        km(&memory),
        kafka.len(),
        km(&kafka),
        started.elapsed().as_secs_f64()
    );
    assert!(memory.len() > 200, "the memory run billed {} OBU-periods", memory.len());
    let differing: Vec<_> = memory
        .keys()
        .chain(kafka.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|key| memory.get(*key) != kafka.get(*key))
        .map(|key| (key.clone(), memory.get(key).copied(), kafka.get(key).copied()))
        .collect();
    assert!(
        differing.is_empty(),
        "{} OBU-periods differ (key, memory mm, kafka mm), e.g. {:?}",
        differing.len(),
        &differing[..differing.len().min(10)]
    );
}
