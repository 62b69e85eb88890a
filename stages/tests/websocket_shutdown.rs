//! How the `websocket` source stops: on request, and when its consumers are gone.

mod websocket_support;

use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use websocket_support::*;

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_and_stops_listening() {
    let mut server = start("", 8);
    let mut clients = vec![connect(server.addr).await, connect(server.addr).await];
    for (i, client) in clients.iter_mut().enumerate() {
        send(client, &format!(r#"{{"obuID":{i},"lat":1,"long":2}}"#)).await;
        drop(server.next_batch().await);
        assert_eq!(next_json(client).await, json!({"ack": 1, "fixes": 1}));
    }

    server.stop.send(true).expect("source listens for shutdown");
    for client in clients {
        assert_eq!(expect_close(client).await, CloseCode::Away);
    }
    let result = tokio::time::timeout(PATIENCE, server.task).await.expect("stops in time");

    result.expect("task not panicked").expect("clean stop");
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err(), "listener closed");
    assert!(server.batches.recv().await.is_none(), "output released");
}

#[tokio::test]
async fn frame_accepted_before_shutdown_is_still_sent_on() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;

    send(&mut client, r#"{"obuID":5,"lat":1,"long":2}"#).await;
    let batch = server.next_batch().await;
    server.stop.send(true).expect("source listens for shutdown");
    let code = expect_close(client).await;
    let result = tokio::time::timeout(PATIENCE, server.task).await.expect("stops in time");

    assert_eq!(fixes(&batch)[0].obu_id, "5");
    assert_eq!(code, CloseCode::Away);
    result.expect("task not panicked").expect("clean stop");
}

#[tokio::test]
async fn gone_consumer_nacks_the_frame_and_fails_the_source() {
    let server = start("", 8);
    let mut client = connect(server.addr).await;
    drop(server.batches);

    send(&mut client, r#"{"obuID":1,"lat":1,"long":2}"#).await;
    let reply = next_json(&mut client).await;
    let code = expect_close(client).await;
    let result = tokio::time::timeout(PATIENCE, server.task).await.expect("stops in time");

    assert_eq!(reply, json!({"nack": 1, "fixes": 1}));
    assert_eq!(code, CloseCode::Error);
    assert!(result.expect("task not panicked").is_err(), "the source reports the lost output");
}
