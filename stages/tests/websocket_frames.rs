//! What the `websocket` source does with each kind of frame an OBU may send.

mod websocket_support;

use futures::SinkExt;
use serde_json::json;
use stages::component::{BuildContext, Resources};
use stages::event::EventContext;
use stages::event::Fix;
use stages::sources::websocket::TYPE;
use stages::telemetry::Telemetry;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use websocket_support::*;

#[tokio::test]
async fn native_single_fix_becomes_one_batch_confirmed_after_delivery() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;
    let before = wall_clock_ms();

    send(&mut client, r#"{"obu_id":"obu-1","ts":"2024-05-01T12:00:00Z","lat":50.1,"lon":11.9}"#)
        .await;
    let batch = server.next_batch().await;
    let after = wall_clock_ms();

    let got = fixes(&batch).to_vec();
    assert_eq!(got.len(), 1);
    let received_ms = got[0].ctx.received_ms;
    assert!((before..=after).contains(&received_ms), "{before} <= {received_ms} <= {after}");
    let ctx = EventContext { received_ms, trace: None };
    // 2024-05-01T12:00:00Z is 1_714_564_800 s after the epoch.
    let expected =
        Fix { obu_id: "obu-1".into(), ts_ms: 1_714_564_800_000, lat: 50.1, lon: 11.9, ctx };
    assert_eq!(got, vec![expected]);
    drop(batch);
    assert_eq!(next_json(&mut client).await, json!({"ack": 1, "fixes": 1}));
    assert_eq!(server.counter("toll_websocket_frames_total"), 1);
}

#[tokio::test]
async fn native_array_backlog_arrives_as_one_batch_in_order() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;
    let backlog: Vec<String> = (0..50)
        .map(|i| {
            format!(r#"{{"obu_id":"obu-2","ts":"2024-05-01T12:00:{i:02}Z","lat":50,"lon":{i}}}"#)
        })
        .collect();

    send(&mut client, &format!("[{}]", backlog.join(","))).await;
    let batch = server.next_batch().await;

    let times: Vec<i64> = fixes(&batch).iter().map(|f| f.ts_ms).collect();
    let expected: Vec<i64> = (0..50).map(|i| 1_714_564_800_000 + i * 1000).collect();
    assert_eq!(times, expected);
    assert!(fixes(&batch).iter().enumerate().all(|(i, f)| f.lon == i as f64));
    drop(batch);
    assert_eq!(next_json(&mut client).await, json!({"ack": 1, "fixes": 50}));
}

#[tokio::test]
async fn go_fix_uses_the_receive_time_as_fix_time() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;
    let before = wall_clock_ms();

    send(&mut client, r#"{"obuID":123,"lat":50.1,"long":11.9}"#).await;
    let batch = server.next_batch().await;
    let after = wall_clock_ms();

    let fix = &fixes(&batch)[0];
    assert_eq!((fix.obu_id.as_str(), fix.lat, fix.lon), ("123", 50.1, 11.9));
    assert_eq!(fix.ts_ms, fix.ctx.received_ms);
    assert!((before..=after).contains(&fix.ts_ms));
}

#[tokio::test]
async fn binary_frame_with_json_is_accepted_like_text() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;

    let frame = br#"[{"obuID":1,"lat":1,"long":2},{"obuID":2,"lat":3,"long":4}]"#.to_vec();
    client.send(Message::binary(frame)).await.expect("client sends");
    let batch = server.next_batch().await;

    let ids: Vec<&str> = fixes(&batch).iter().map(|f| f.obu_id.as_str()).collect();
    assert_eq!(ids, ["1", "2"]);
}

#[tokio::test]
async fn malformed_frames_are_answered_and_the_connection_stays_usable() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;
    let bad = [
        "not json at all",
        r#"[1, 2, 3]"#,
        r#"{"obu_id":"a","lat":1,"lon":2}"#,
        r#"{"obu_id":"a","ts":"half past nine","lat":1,"lon":2}"#,
        r#"[{"obuID":1,"lat":1,"long":2}, {"obuID":2}]"#,
    ];

    for (i, text) in bad.iter().enumerate() {
        send(&mut client, text).await;
        let reply = next_json(&mut client).await;

        assert_eq!(reply["error"], "malformed frame", "{text}");
        assert_eq!(reply["frame"], i + 1, "{text}");
        assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()), "{reply}");
    }
    send(&mut client, r#"{"obuID":9,"lat":1,"long":2}"#).await;
    let batch = server.next_batch().await;

    assert_eq!(fixes(&batch)[0].obu_id, "9");
    drop(batch);
    assert_eq!(next_json(&mut client).await, json!({"ack": bad.len() + 1, "fixes": 1}));
    assert_eq!(server.rejected("malformed_frame"), bad.len() as u64);
    assert!(server.batches.try_recv().is_err(), "no batch from a malformed frame");
}

#[tokio::test]
async fn frame_over_the_fix_limit_is_answered_without_closing() {
    let mut server = start("max_fixes_per_frame = 2", 8);
    let mut client = connect(server.addr).await;
    let one = r#"{"obuID":1,"lat":1,"long":2}"#;

    send(&mut client, &format!("[{one},{one},{one}]")).await;
    let reply = next_json(&mut client).await;
    send(&mut client, &format!("[{one},{one}]")).await;
    let batch = server.next_batch().await;

    assert_eq!(reply["error"], "too many fixes");
    assert_eq!(batch.len(), 2);
    assert_eq!(server.rejected("too_many_fixes"), 1);
}

#[tokio::test]
async fn confirmation_waits_for_the_batch_to_be_dropped() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;

    send(&mut client, r#"{"obuID":1,"lat":1,"long":2}"#).await;
    let held = server.next_batch().await;
    // The server answers frames in order, so the error for frame 2 arriving
    // first proves that no confirmation of frame 1 was sent while it is held.
    send(&mut client, "garbage").await;
    let first = next_json(&mut client).await;
    drop(held);
    let second = next_json(&mut client).await;

    assert_eq!(first["error"], "malformed frame");
    assert_eq!(first["frame"], 2);
    assert_eq!(second, json!({"ack": 1, "fixes": 1}));
}

#[tokio::test]
async fn failed_batch_is_answered_with_a_nack() {
    let mut server = start("", 8);
    let mut client = connect(server.addr).await;

    send(&mut client, r#"[{"obuID":1,"lat":1,"long":2},{"obuID":1,"lat":1,"long":3}]"#).await;
    let batch = server.next_batch().await;
    batch.acks.fail();
    drop(batch);

    assert_eq!(next_json(&mut client).await, json!({"nack": 1, "fixes": 2}));
}

#[tokio::test]
async fn oversize_frame_closes_the_connection_with_1009() {
    let server = start("max_frame_bytes = 1024", 8);
    let mut client = connect(server.addr).await;
    let padding = "x".repeat(2048);

    send(&mut client, &format!(r#"{{"obuID":1,"lat":1,"long":2,"pad":"{padding}"}}"#)).await;
    let code = expect_close(client).await;

    assert_eq!(code, CloseCode::Size);
    assert_eq!(server.rejected("frame_too_large"), 1);
}

#[tokio::test]
async fn upgrade_on_another_path_is_refused() {
    let server = start("", 8);

    let refused = connect_to(server.addr, "/other").await;

    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) = refused else {
        panic!("expected an http refusal");
    };
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn connections_over_the_limit_are_refused() {
    let server = start("max_connections = 1", 8);
    let _first = connect(server.addr).await;

    let second = connect_to(server.addr, "/ws").await;

    assert!(second.is_err(), "the second connection must not be served");
    assert_eq!(server.counter("toll_websocket_refused_connections_total"), 1);
}

#[test]
fn taken_address_fails_the_build_and_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to occupy");
    let addr = taken.local_addr().expect("address");
    let table: toml::Value = toml::from_str(&format!("listen = \"{addr}\"")).expect("toml");
    let config = (TYPE.parse)(table).expect("declaration parses");
    let telemetry = Telemetry::new();
    let mut resources = Resources::default();
    let mut cx = BuildContext {
        name: "obus",
        inputs: vec![],
        telemetry: &telemetry,
        resources: &mut resources,
    };

    let Err(error) = config.build(&mut cx) else { panic!("a taken address must not build") };

    assert!(error.message.contains(&addr.to_string()), "{}", error.message);
}

#[tokio::test]
async fn full_pipeline_delays_frames_without_dropping_them() {
    let mut server = start("", 1);
    let mut client = connect(server.addr).await;

    for i in 0..5 {
        send(&mut client, &format!(r#"{{"obuID":{i},"lat":1,"long":2}}"#)).await;
    }
    let mut ids = Vec::new();
    for _ in 0..5 {
        let batch = server.next_batch().await;
        ids.push(fixes(&batch)[0].obu_id.to_string());
    }

    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
}

#[tokio::test]
async fn silent_client_is_closed_after_the_idle_timeout() {
    let server = start("idle_timeout_s = 1", 8);
    let client = connect(server.addr).await;

    let code = expect_close(client).await;

    assert_eq!(code, CloseCode::Normal);
}
