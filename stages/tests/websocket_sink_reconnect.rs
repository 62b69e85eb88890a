//! The `websocket` sink loses its receiver mid-stream and resends exactly
//! what was not acknowledged once the receiver is back on the same port.

mod websocket_sink_support;

use stages::ack::AckStatus;
use tokio::net::TcpListener;
use websocket_sink_support::*;

const BACKOFF: &str = "reconnect_min_ms = 10\nreconnect_max_ms = 100\nmax_fixes_per_frame = 2";

#[tokio::test]
async fn unacknowledged_frames_are_resent_in_order_after_the_receiver_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback binds");
    let addr = listener.local_addr().expect("bound address");
    let sink = start_sink(&format!("ws://{addr}/ws"), BACKOFF, 64);
    let all = fixes(0, 30);
    let (batch, status) = acked(all.clone());
    sink.send(batch).await;

    // The first receiver reads three frames, acknowledges only the first and hangs up.
    let first = scripted_receiver(listener, 3, 1).await;
    let mut second = start_receiver(addr, 64);
    let acknowledged = first[0].len();
    let (resent, held) = second.collect(all.len() - acknowledged).await;

    let read_first: Vec<Key> = first.iter().flatten().map(key).collect();
    let all_keys: Vec<Key> = all.iter().map(key).collect();
    assert_eq!(read_first, all_keys[..read_first.len()], "first receiver got a prefix");
    assert_eq!(
        resent.iter().map(key).collect::<Vec<_>>(),
        all_keys[acknowledged..],
        "everything after the acknowledged frame is resent, in order, once"
    );
    drop(held);
    assert_eq!(status_of(status).await, AckStatus::Delivered);
    assert!(sink.counter("toll_websocket_sink_reconnects_total") >= 1);
    sink.finish().await.expect("sink ends cleanly");
}

#[tokio::test]
async fn restarted_source_gets_every_fix_the_stopped_one_did_not_confirm() {
    let first = start_receiver("127.0.0.1:0".parse().expect("address"), 64);
    let addr = first.addr;
    let sink = start_sink(&first.url(), BACKOFF, 64);
    let all = fixes(0, 20);
    // Batches of two fixes and frames of two fixes: frame n carries batch n.
    let mut statuses = Vec::new();
    for pair in all.chunks(2) {
        let (batch, status) = acked(pair.to_vec());
        sink.send(batch).await;
        statuses.push(status);
    }
    let mut first = first;

    let (confirmed, _) = first.collect(2).await;
    assert_eq!(status_of(statuses.remove(0)).await, AckStatus::Delivered);
    let (_, unconfirmed) = first.collect(2).await;
    let leftovers = first.shut_down().await;
    drop((unconfirmed, leftovers));
    let mut second = start_receiver(addr, 64);
    let (resent, held) = second.collect(all.len() - 2).await;

    let all_keys: Vec<Key> = all.iter().map(key).collect();
    assert_eq!(confirmed.iter().map(key).collect::<Vec<_>>(), all_keys[..2]);
    assert_eq!(resent.iter().map(key).collect::<Vec<_>>(), all_keys[2..]);
    drop(held);
    for status in statuses {
        assert_eq!(status_of(status).await, AckStatus::Delivered);
    }
    sink.finish().await.expect("sink ends cleanly");
}
