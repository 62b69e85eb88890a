//! A consuming runner killed with SIGKILL at five random moments while fixes
//! stream in, and started again each time, bills what an uninterrupted
//! consumer bills from the same fixes: offsets are committed only once the
//! aggregate persisted the fixes' segments, and each OBU resumes from the end
//! of its last billed segment.
//!
//! The moments are drawn from a seeded generator; the seed is printed and
//! `KAFKA_KILL_SEED=N` repeats a run.

mod kafka_common;
mod support;

use std::time::{Duration, Instant};

use kafka_common::{Rng, Topic};

const TRUCKS: usize = 40;
/// Simulated seconds of driving: 40 trucks, one fix a second.
const DURATION_S: u64 = 900;
/// 900 simulated seconds stream in about 25 s.
const SPEEDUP: f64 = 36.0;
const KILLS: usize = 5;
const PARTITIONS: i32 = 6;

/// A topic whose consumer comes back at once after a restart: static group
/// membership hands the restarted process its predecessor's partitions
/// without waiting for the dead one's session to expire.
fn topic(name: &str) -> Topic {
    let mut topic = Topic::fresh(name, PARTITIONS);
    let instance = kafka_common::unique("e2e-billing");
    topic.consumer_options = vec![
        ("group.instance.id".to_owned(), instance),
        ("session.timeout.ms".to_owned(), "10000".to_owned()),
    ];
    kafka_common::create_topic(&topic.bootstrap, &topic.topic, topic.partitions);
    topic
}

#[test]
fn a_consumer_killed_five_times_mid_stream_bills_what_an_uninterrupted_one_bills() {
    let started = Instant::now();
    let mut rng = Rng::from_env_or_clock("KAFKA_KILL_SEED");
    let dir = tempfile::tempdir().unwrap();
    let fleet = (TRUCKS, DURATION_S, SPEEDUP);
    let expected =
        kafka_common::reference_totals(dir.path(), "killed-reference", PARTITIONS, fleet);

    let topic = topic("killed");
    let store = dir.path().join("killed.db");
    let mut billing = kafka_common::billing_consumer(dir.path(), "killed-consumer", &topic, &store);
    kafka_common::wait_assigned(&mut [&mut billing], PARTITIONS, Duration::from_secs(30));
    let path = kafka_common::fleet_producer(dir.path(), "killed-producer.toml", &topic, fleet);
    let mut producer = support::Background::spawn(&path, &[], dir.path(), "killed-producer");
    let streaming_since = Instant::now();

    let mut committed_at_restart = Vec::new();
    let mut moments = Vec::new();
    for _ in 0..KILLS {
        let deadline = Instant::now() + Duration::from_secs(30);
        while billing.distance_received() == 0.0 {
            assert!(Instant::now() < deadline, "restarted consumer received nothing in 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(rng.between(Duration::from_millis(300), Duration::from_secs(4)));
        let received = billing.distance_received();
        billing.runner.kill();
        let streaming = producer.exited().is_none();
        moments.push((streaming_since.elapsed().as_secs_f64(), received, streaming));
        committed_at_restart =
            kafka_common::committed_offsets(&topic.bootstrap, &topic.group, &topic.topic);
        billing.restart(dir.path());
    }

    kafka_common::wait_success(&mut producer, "the producer", Duration::from_secs(90));
    let high = kafka_common::high_watermarks(&topic.bootstrap, &topic.topic);
    let left: i64 = high.iter().zip(&committed_at_restart).map(|(h, c)| h - c.unwrap_or(0)).sum();
    kafka_common::drain(&mut billing, &topic, left, Duration::from_secs(60));
    let killed = support::totals(&store);

    for (at_s, received, streaming) in &moments {
        println!("killed at {at_s:.1} s after {received} fixes (producer streaming: {streaming})");
    }
    let diffs = kafka_common::differences(&expected, &killed);
    kafka_common::print_differences("killed", &diffs);
    let streamed = moments.iter().filter(|(_, _, streaming)| *streaming).count();
    println!(
        "killed: {} fixes, {} OBU-periods, {streamed} of {KILLS} kills while streaming, \
         {} differ, test {:.1} s",
        topic.messages(),
        expected.len(),
        diffs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(streamed >= 1, "at least one kill happens while fixes stream in");
    assert!(expected.len() >= TRUCKS, "every truck is billed");
    // Every fix decided before a kill was persisted with the filter's state
    // (or is delivered again), so the resumed runs decide exactly as one run.
    kafka_common::assert_same_totals(&expected, &killed);
}
