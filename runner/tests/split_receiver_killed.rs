//! The receiver service killed with SIGKILL while the OBU service streams,
//! and started again on the same port: the OBU service reconnects and sends
//! its backlog (every fix the receiver had not acknowledged, so some twice),
//! and the invoices equal those of an uninterrupted run: no fix is lost and
//! none is billed twice.

mod kafka_common;
mod split_common;
mod support;

use std::time::{Duration, Instant};

use split_common::{Fleet, Stack};

/// Streams the fleet in about 20 s.
const SPEEDUP: f64 = 45.0;
/// How long the receiver stays away before it is started again.
const OUTAGE: Duration = Duration::from_secs(2);

#[test]
fn receiver_killed_mid_stream_loses_and_doubles_no_fix() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (expected, fixes) =
        split_common::uninterrupted(dir.path(), "reference", Fleet::streamed(0.0));
    let reference_s = started.elapsed().as_secs_f64();

    let mut stack = Stack::start(dir.path(), "killed");
    let mut obu = stack.start_obu(Fleet::streamed(SPEEDUP));
    let topic = stack.topic().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while topic.messages() < fixes as i64 / 3 {
        assert!(Instant::now() < deadline, "a third of the fixes not received within 30 s");
        stack.receiver.assert_running();
        std::thread::sleep(Duration::from_millis(100));
    }

    stack.receiver.kill();
    let killed_at = topic.messages();
    std::thread::sleep(OUTAGE);
    let while_away = topic.messages();
    stack.receiver.restart();
    let streaming = obu.runner.exited().is_none();

    let (sent, delivered) = split_common::wait_obu_done(&mut obu, "fleet", Duration::from_secs(60));
    let messages = stack.wait_billed(fixes as i64, Duration::from_secs(45));
    let killed = stack.totals();
    stack.distance.stop();
    let (distance_received, _, distance_line) = stack.distance.summary("distance");
    let connects = obu.log_lines("websocket sink connected").len();
    let disconnects = obu.log_lines("websocket sink disconnected");

    let diffs = kafka_common::differences(&expected, &killed);
    kafka_common::print_differences("receiver killed", &diffs);
    println!(
        "receiver killed at {killed_at} of {fixes} messages; OBU connected {connects} times, \
         {disconnects:?}; {messages} messages ({} sent twice); {distance_line}; \
         {} OBU-periods, {} differ; reference {reference_s:.1} s, test {:.1} s",
        messages - fixes as i64,
        expected.len(),
        diffs.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(streaming, "the OBU service was still streaming when the receiver came back");
    assert_eq!(while_away, killed_at, "nothing reaches the topic while the receiver is away");
    assert!(connects >= 2, "the OBU service reconnected ({connects} connections)");
    assert_eq!(sent, fixes, "the OBU service sent the same fleet");
    assert_eq!(delivered, fixes, "the uplink delivered every fix: the backlog was sent");
    assert!(messages >= fixes as i64, "no fix is lost on the way to the topic");
    assert_eq!(distance_received as i64, messages, "the distance service read the whole topic");
    assert!(expected.len() >= Fleet::STREAMED_TRUCKS, "every truck is billed");
    assert!(diffs.is_empty(), "{} of {} OBU-periods differ", diffs.len(), expected.len());
}
