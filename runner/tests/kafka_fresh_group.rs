//! A consumer group that is new to a topic reads it from the beginning; fed
//! into the store an earlier group already billed, it changes no invoice:
//! every OBU resumes from the end of its last billed segment.

mod kafka_common;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kafka_common::{Gatewayed, Topic};

fn producer(dir: &Path, topic: &Topic) -> String {
    let text =
        format!("{}\n{}", kafka_common::fleet_toml(20, 600, 0.0), topic.queue_toml(Some("fleet")));
    let path = dir.join("producer.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn consumer(dir: &Path, topic: &Topic, stem: &str) -> Gatewayed {
    let store = dir.join("billing.db");
    Gatewayed::start(dir, stem, |port| {
        format!(
            "{}\n{}",
            topic.queue_toml(None),
            kafka_common::billing_toml(&store, true, port, dir)
        )
    })
}

#[test]
fn a_fresh_group_replaying_the_topic_into_the_same_store_changes_no_invoice() {
    let started = Instant::now();
    let topic = Topic::fresh("fresh", 4);
    let dir = tempfile::tempdir().unwrap();
    support::run_pipeline(&producer(dir.path(), &topic), &[]);
    let messages = topic.messages();
    // Fixes lost in signal gaps without a backlog are never sent.
    assert!(messages > 20 * 600 * 9 / 10, "only {messages} of 12000 simulated fixes on the topic");

    let mut first = consumer(dir.path(), &topic, "first-group");
    kafka_common::drain(&mut first, &topic, messages, Duration::from_secs(60));
    let billed = support::totals(&dir.path().join("billing.db"));
    assert!(billed.len() >= 20, "every truck is billed: {billed:?}");

    let again = topic.with_fresh_group("fresh-again");
    assert_eq!(again.uncommitted(), messages, "the new group has committed nothing");
    let mut second = consumer(dir.path(), &again, "second-group");
    second.wait_distance_received(messages as f64, Duration::from_secs(60));
    let billed_fixes =
        second.metric("toll_distance_billed_fixes_total", &[("component", "distance")]);
    kafka_common::drain(&mut second, &again, messages, Duration::from_secs(5));
    let after = support::totals(&dir.path().join("billing.db"));

    let diffs = kafka_common::differences(&billed, &after);
    kafka_common::print_differences("fresh group", &diffs);
    println!(
        "fresh group: {messages} fixes read twice, {} OBU-periods, second group billed \
         {billed_fixes} fixes, test {:.1} s",
        billed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(diffs.is_empty(), "{} invoices changed", diffs.len());
    assert_eq!(billed_fixes, 0.0, "no fix is billed a second time");
}
