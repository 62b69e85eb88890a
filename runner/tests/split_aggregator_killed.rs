//! The aggregator service killed with SIGKILL while fixes stream through
//! the five split services, and started again on the same port and store:
//! the distance service holds its Kafka offsets while the aggregator is away
//! (its grpc sink keeps the acknowledgements until the aggregator confirms),
//! retries, and the invoices equal those of an uninterrupted run.

mod kafka_common;
mod split_common;
mod support;

use std::time::{Duration, Instant};

use split_common::{Fleet, Stack};

/// Streams the fleet in about 20 s.
const SPEEDUP: f64 = 45.0;
/// How long the aggregator stays away after the offsets settled.
const OUTAGE: Duration = Duration::from_secs(3);

#[test]
fn aggregator_killed_mid_stream_holds_offsets_and_bills_what_an_uninterrupted_run_bills() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (expected, fixes) =
        split_common::uninterrupted(dir.path(), "reference", Fleet::streamed(0.0));
    let reference_s = started.elapsed().as_secs_f64();

    let mut stack = Stack::start(dir.path(), "killed");
    let mut obu = stack.start_obu(Fleet::streamed(SPEEDUP));
    let topic = stack.topic().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while split_common::committed(&topic).iter().flatten().sum::<i64>() < fixes as i64 / 4 {
        assert!(Instant::now() < deadline, "a quarter of the fixes not billed within 30 s");
        stack.distance.assert_running();
        std::thread::sleep(Duration::from_millis(100));
    }

    stack.aggregator.kill();
    let killed_at = topic.messages();
    // A commit of offsets confirmed just before the kill may still be under
    // way (the consumer commits every second); after two intervals none is.
    std::thread::sleep(Duration::from_millis(2_100));
    let (settled, produced_then) = (split_common::committed(&topic), topic.messages());
    std::thread::sleep(OUTAGE);
    let (held, produced_later) = (split_common::committed(&topic), topic.messages());
    let billed_while_away = stack.totals();
    stack.aggregator.restart();
    let streaming = obu.runner.exited().is_none();

    let (sent, delivered) = split_common::wait_obu_done(&mut obu, "fleet", Duration::from_secs(60));
    let messages = stack.wait_billed(fixes as i64, Duration::from_secs(45));
    let killed = stack.totals();
    let retried = stack.distance.log_lines("deliver failed; retrying").len();
    let reconnected = stack.distance.log_lines("aggregator reachable again");

    let diffs = kafka_common::differences(&expected, &killed);
    kafka_common::print_differences("aggregator killed", &diffs);
    let committed_sum = |c: &[Option<i64>]| c.iter().flatten().sum::<i64>();
    println!(
        "aggregator killed at {killed_at} of {fixes} messages; while away committed stayed at \
         {} while the topic grew {produced_then} -> {produced_later}; {retried} retries logged, \
         {reconnected:?}; {messages} messages, {} OBU-periods, {} differ; \
         reference {reference_s:.1} s, test {:.1} s",
        committed_sum(&held),
        expected.len(),
        diffs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(streaming, "the OBU service was still streaming when the aggregator came back");
    assert_eq!(held, settled, "no offset is committed while the aggregator is away");
    assert!(produced_later > produced_then, "fixes kept arriving while the aggregator was away");
    assert!(committed_sum(&held) < produced_later, "the held offsets leave fixes uncommitted");
    let mm = |t: &split_common::Totals| t.values().sum::<i64>();
    assert!(mm(&billed_while_away) < mm(&killed), "the kill left distance to bill afterwards");
    assert_eq!((sent, delivered), (fixes, fixes), "the OBU service sent the same fleet");
    assert_eq!(messages, fixes as i64, "the receiver was not interrupted: no fix sent twice");
    assert!(!reconnected.is_empty(), "the distance service saw the aggregator come back");
    assert!(expected.len() >= Fleet::STREAMED_TRUCKS, "every truck is billed");
    assert!(diffs.is_empty(), "{} of {} OBU-periods differ", diffs.len(), expected.len());
}
