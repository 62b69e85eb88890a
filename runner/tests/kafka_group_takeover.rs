//! Two consuming runners share one consumer group and one SQLite store
//! file. One of them stops mid-stream (SIGTERM, or SIGKILL in the second
//! test); the other takes over its partitions from the last committed
//! offsets, and the invoices equal those of one uninterrupted consumer.
//!
//! The moment is drawn from a seeded generator; the seed is printed and
//! `KAFKA_TAKEOVER_SEED=N` repeats a run.

mod kafka_common;
mod support;

use std::time::{Duration, Instant};

use kafka_common::{Rng, Topic};

const PARTITIONS: i32 = 6;
/// 30 trucks for 600 simulated seconds, streamed in about 20 s.
const FLEET: (usize, u64, f64) = (30, 600, 30.0);
/// How far (mm) an invoice may be off after the handover: see the final assertion.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    Term,
    Kill,
}

fn takeover(stop: Stop) {
    let started = Instant::now();
    let mut rng = Rng::from_env_or_clock("KAFKA_TAKEOVER_SEED");
    let dir = tempfile::tempdir().unwrap();
    let expected = kafka_common::reference_totals(dir.path(), "takeover-ref", PARTITIONS, FLEET);

    let mut topic = Topic::fresh("takeover", PARTITIONS);
    // A killed member's partitions move once its session expires.
    topic.consumer_options = vec![
        ("session.timeout.ms".to_owned(), "6000".to_owned()),
        ("heartbeat.interval.ms".to_owned(), "1000".to_owned()),
    ];
    kafka_common::create_topic(&topic.bootstrap, &topic.topic, PARTITIONS);
    let store = dir.path().join("shared.db");
    let mut first = kafka_common::handing_over_consumer(dir.path(), "takeover-1", &topic, &store);
    let mut second = kafka_common::billing_consumer(dir.path(), "takeover-2", &topic, &store);
    let assigning = Duration::from_secs(40);
    kafka_common::wait_assigned(&mut [&mut first, &mut second], PARTITIONS, assigning);
    let held_by_first = kafka_common::assignment(&first.runner.stderr());

    let path = kafka_common::fleet_producer(dir.path(), "takeover-producer.toml", &topic, FLEET);
    let mut producer = support::Background::spawn(&path, &[], dir.path(), "takeover-producer");
    std::thread::sleep(rng.between(Duration::from_secs(3), Duration::from_secs(12)));
    let first_received = first.distance_received();
    match stop {
        Stop::Term => first.stop(),
        Stop::Kill => first.runner.kill(),
    }
    let stopped_at = started.elapsed();
    let streaming = producer.exited().is_none();
    kafka_common::wait_assigned(&mut [&mut second], PARTITIONS, assigning);
    let taken_over_at = started.elapsed();
    kafka_common::wait_success(&mut producer, "the producer", Duration::from_secs(60));
    let messages = topic.messages();
    let quiet = Duration::from_secs(3);
    let second_received =
        kafka_common::wait_quiet(&mut second, 1.0, quiet, Duration::from_secs(60));
    kafka_common::drain(&mut second, &topic, 0, Duration::from_secs(5));
    let shared = support::totals(&store);

    let locked = [&first, &second].iter().any(|c| c.runner.stderr().contains("locked"));
    let diffs = kafka_common::differences(&expected, &shared);
    kafka_common::print_differences(&format!("takeover {stop:?}"), &diffs);
    println!(
        "takeover {stop:?}: {messages} fixes; first held {held_by_first:?}, received \
         {first_received} before it stopped at {:.1} s (producer streaming: {streaming}); \
         second held all at {:.1} s and received {second_received}; store locked: {locked}; \
         {} of {} invoices differ; test {:.1} s",
        stopped_at.as_secs_f64(),
        taken_over_at.as_secs_f64(),
        diffs.len(),
        expected.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(streaming, "the first consumer stops while fixes stream in");
    assert!(first_received > 0.0, "the first consumer billed part of the stream");
    assert!(!locked, "both processes write the shared store without `database is locked`");
    // The stopped consumer left what it held undecided (SIGTERM) or lost it
    // (SIGKILL); either way the second one decides it from the persisted
    // state, exactly as one consumer would have.
    kafka_common::assert_same_totals(&expected, &shared);
}

#[test]
fn a_consumer_stopped_with_sigterm_hands_its_partitions_over_without_changing_invoices() {
    takeover(Stop::Term);
}

#[test]
fn a_consumer_killed_with_sigkill_hands_its_partitions_over_without_changing_invoices() {
    takeover(Stop::Kill);
}
