//! How the `websocket` sink treats a `nack` (send again) and an `error`
//! (drop, count, release) from a scripted receiver.

mod websocket_sink_support;

use futures::{SinkExt, StreamExt};
use stages::ack::AckStatus;
use stages::sources::websocket::wire;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use websocket_sink_support::*;

async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Vec<Key> {
    loop {
        let next = tokio::time::timeout(PATIENCE, ws.next()).await.expect("frame within patience");
        let Message::Text(text) = next.expect("open").expect("readable") else { continue };
        let mut fixes = Vec::new();
        wire::parse_frame(text.as_bytes(), 0, usize::MAX, &mut fixes).expect("frame parses");
        return fixes.iter().map(key).collect();
    }
}

#[tokio::test]
async fn nacked_frame_is_resent_and_refused_frame_is_dropped_with_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback binds");
    let addr = listener.local_addr().expect("bound address");
    let sink = start_sink(&format!("ws://{addr}/ws"), "", 8);
    let (first, first_status) = acked(fixes(0, 3));
    let (second, second_status) = acked(fixes(3, 5));
    sink.send(first).await;
    let (tcp, _) = listener.accept().await.expect("sink connects");
    let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("handshake");
    let first_keys: Vec<Key> = fixes(0, 3).iter().map(key).collect();

    let frame1 = next_frame(&mut ws).await;
    ws.send(Message::text(wire::ack_reply(1, 3, AckStatus::Failed))).await.expect("nack sent");
    let frame2 = next_frame(&mut ws).await;
    let refusal = r#"{"error":"malformed frame","frame":2,"detail":"test refusal"}"#;
    ws.send(Message::text(refusal)).await.expect("error sent");
    let released = status_of(first_status).await;
    let errors = sink.telemetry.counter_sum("toll_component_errors_total", &[]);
    sink.send(second).await;
    let frame3 = next_frame(&mut ws).await;
    ws.send(Message::text(wire::ack_reply(3, 2, AckStatus::Delivered))).await.expect("ack sent");

    assert_eq!(frame1, first_keys);
    assert_eq!(frame2, first_keys, "the nacked fixes are sent again");
    assert_eq!(released, AckStatus::Delivered, "refused fixes are released, not retried");
    assert_eq!(errors, 1);
    assert_eq!(frame3, fixes(3, 5).iter().map(key).collect::<Vec<_>>());
    assert_eq!(status_of(second_status).await, AckStatus::Delivered);
    sink.finish().await.expect("sink ends cleanly");
}
