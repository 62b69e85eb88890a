//! The Hof replay through the five split services (OBU -> WebSocket ->
//! receiver -> Kafka -> distance -> gRPC -> aggregator, invoices through a
//! separate gateway) bills exactly what the same replay bills in one process.
//!
//! Data: the Hof floating-car data (Map and Route GmbH & Co. KG via the
//! map-matching-2 project; see ../shared/data/hof-fcd-oberfranken/README.md).

mod kafka_common;
mod split_common;
mod support;

use std::time::{Duration, Instant};

use split_common::{Fleet, Stack};

/// Rows of points.csv (without its header).
const HOF_FIXES: u64 = 14_651;
/// Tracks sampled for the invoice comparison: every 9th of 263, 30 in all.
const SAMPLE_STEP: usize = 9;

#[test]
fn hof_replay_through_five_services_bills_what_one_process_bills() {
    kafka_common::bootstrap();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let tracks = split_common::hof_sample(SAMPLE_STEP);
    let (mut one, one_base, one_store) = split_common::all_in_one(dir.path(), "one", Fleet::Hof);
    let expected: Vec<_> =
        tracks.iter().map(|(obu, period)| split_common::invoice(&one_base, obu, period)).collect();
    let expected_totals = support::totals(&one_store);
    one.kill();
    let one_s = started.elapsed().as_secs_f64();

    let mut stack = Stack::start(dir.path(), "hof");
    let mut obu = stack.start_obu(Fleet::Hof);
    let (sent, delivered) = split_common::wait_obu_done(&mut obu, "fleet", Duration::from_secs(60));
    let messages = stack.wait_billed(HOF_FIXES as i64, Duration::from_secs(45));
    let split: Vec<_> = tracks
        .iter()
        .map(|(obu, period)| split_common::invoice(&stack.gateway_base(), obu, period))
        .collect();
    let split_totals = stack.totals();
    stack.distance.stop();
    let (distance_received, segments, _) = stack.distance.summary("distance");

    let km = |t: &split_common::Totals| t.values().map(|&mm| mm as f64 / 1e6).sum::<f64>();
    let billed = expected.iter().filter(|(status, _)| *status == 200).count();
    println!(
        "split hof: one process {} OBU-periods {:.3} km ({one_s:.1} s); split {} OBU-periods \
         {:.3} km, {messages} messages, distance received {distance_received} and sent \
         {segments} segments; {billed} of {} sampled invoices billed; test {:.1} s",
        expected_totals.len(),
        km(&expected_totals),
        split_totals.len(),
        km(&split_totals),
        tracks.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!((sent, delivered), (HOF_FIXES, HOF_FIXES), "the OBU service sent every row");
    assert_eq!(messages, HOF_FIXES as i64, "every fix became one message, none twice");
    assert_eq!(distance_received, HOF_FIXES, "the distance service received every fix once");
    assert!(billed >= tracks.len() * 3 / 4, "{billed} of {} sampled tracks billed", tracks.len());
    for (((obu, period), want), got) in tracks.iter().zip(&expected).zip(&split) {
        assert_eq!(want, got, "invoice of {obu} in {period}: one process, then split");
    }
    let diffs = kafka_common::differences(&expected_totals, &split_totals);
    kafka_common::print_differences("split hof", &diffs);
    assert!(expected_totals.len() >= 250, "{} OBU-periods billed", expected_totals.len());
    assert!(diffs.is_empty(), "{} of {} OBU-periods differ", diffs.len(), expected_totals.len());
}
