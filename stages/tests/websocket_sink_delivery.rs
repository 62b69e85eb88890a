//! The `websocket` sink against the real `websocket` source: order, per-frame
//! acknowledgements and the legacy format.

mod websocket_sink_support;

use stages::ack::AckStatus;
use websocket_sink_support::*;

#[tokio::test]
async fn fixes_arrive_in_order_and_acks_wait_for_the_receiver() {
    let mut receiver = start_receiver("127.0.0.1:0".parse().expect("address"), 64);
    let sink = start_sink(&receiver.url(), "max_fixes_per_frame = 3", 8);
    let all = fixes(0, 20);
    let mut statuses = Vec::new();
    for chunk in all.chunks(5) {
        let (batch, status) = acked(chunk.to_vec());
        sink.send(batch).await;
        statuses.push(status);
    }

    let (received, held) = receiver.collect(all.len()).await;

    let sent: Vec<Key> = all.iter().map(key).collect();
    assert_eq!(received.iter().map(key).collect::<Vec<_>>(), sent);
    for status in &mut statuses {
        assert!(status.try_recv().is_err(), "released before the receiver acknowledged");
    }
    drop(held);
    for status in statuses {
        assert_eq!(status_of(status).await, AckStatus::Delivered);
    }
    let frames = sink.counter("toll_websocket_sink_frames_total");
    sink.finish().await.expect("sink ends cleanly once its input closes");
    assert!(frames >= 20_u64.div_ceil(3), "{frames} frames of at most 3 fixes");
}

#[tokio::test]
async fn legacy_frames_carry_numeric_ids_and_other_ids_are_rejected() {
    let mut receiver = start_receiver("127.0.0.1:0".parse().expect("address"), 64);
    let sink = start_sink(&receiver.url(), "format = \"legacy\"", 8);
    let mixed = vec![fix("4711", 1), fix("obu-x", 2), fix("0815", 3), fix("4711", 4)];
    let (batch, status) = acked(mixed);
    let (refused, refused_status) = acked(vec![fix("truck-9", 5)]);

    sink.send(batch).await;
    sink.send(refused).await;
    let (received, held) = receiver.collect(2).await;

    // The legacy format has no time, so only id and position travel.
    let got: Vec<(String, f64, f64)> =
        received.iter().map(|f| (f.obu_id.to_string(), f.lat, f.lon)).collect();
    let expected: Vec<(String, f64, f64)> = [fix("4711", 1), fix("4711", 4)]
        .iter()
        .map(|f| (f.obu_id.to_string(), f.lat, f.lon))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(status_of(refused_status).await, AckStatus::Delivered, "nothing left to deliver");
    drop(held);
    assert_eq!(status_of(status).await, AckStatus::Delivered);
    assert_eq!(sink.rejected("not_legacy_id"), 3);
    sink.finish().await.expect("sink ends cleanly");
}
