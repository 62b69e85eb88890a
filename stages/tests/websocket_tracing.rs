//! Where the `websocket` source starts or continues a fix's trace: a
//! `traceparent` on the upgrade request, the always-traced list, or neither.

mod websocket_support;

use stages::otel::{Sampling, SpanData};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use websocket_support::*;

const UPGRADE_TRACE: u128 = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c;
const UPGRADE_SPAN: u64 = 0xb7ad_6b71_6920_3331;

fn fix(obu: &str, second: u32) -> String {
    format!(r#"{{"obu_id":"{obu}","ts":"2024-05-01T12:00:{second:02}Z","lat":50.1,"lon":11.9}}"#)
}

fn receive_span(spans: &[SpanData], span_id: u64) -> &SpanData {
    let span = spans.iter().find(|s| s.span_id == span_id).expect("the fix names its span");
    assert_eq!(span.name, "websocket.receive");
    span
}

/// Ends every connection and the server, so every span is finished.
async fn finish(server: Server) -> Vec<SpanData> {
    let _ = server.stop.send(true);
    server.task.await.expect("source joins").expect("source ok");
    server.telemetry.tracer().take_finished()
}

#[tokio::test]
async fn fixes_of_a_connection_upgraded_with_a_traceparent_continue_its_trace() {
    let mut server = start("", 8);
    let sampling = Sampling { ratio: 0.0, always_trace: Vec::new() };
    server.telemetry.tracer().configure(true, &sampling);
    let mut request = format!("ws://{}/ws", server.addr).into_client_request().unwrap();
    let header = format!("00-{UPGRADE_TRACE:032x}-{UPGRADE_SPAN:016x}-01");
    request.headers_mut().insert("traceparent", header.parse().unwrap());
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();

    send(&mut client, &format!("[{},{}]", fix("obu-1", 1), fix("obu-2", 2))).await;
    let batch = server.next_batch().await;
    let got = fixes(&batch).to_vec();
    drop(batch);
    next_json(&mut client).await;
    drop(client);
    let spans = finish(server).await;

    for fix in &got {
        let trace = fix.ctx.trace.expect("traced");
        assert_eq!(trace.trace_id, UPGRADE_TRACE);
        assert!(trace.sampled);
        let span = receive_span(&spans, trace.span_id);
        assert_eq!(span.parent_span_id, UPGRADE_SPAN, "a child of the OBU's span");
    }
}

#[tokio::test]
async fn always_traced_obus_start_a_trace_and_the_others_stay_untraced() {
    let mut server = start("", 8);
    let sampling = Sampling { ratio: 0.0, always_trace: vec!["obu-7".to_owned()] };
    server.telemetry.tracer().configure(true, &sampling);
    let mut client = connect(server.addr).await;

    send(&mut client, &format!("[{},{}]", fix("obu-7", 1), fix("obu-8", 1))).await;
    let batch = server.next_batch().await;
    let got = fixes(&batch).to_vec();
    drop(batch);
    next_json(&mut client).await;
    drop(client);
    let spans = finish(server).await;

    let traced = got[0].ctx.trace.expect("obu-7 is always traced");
    let span = receive_span(&spans, traced.span_id);
    assert_eq!(span.parent_span_id, 0, "the receive span is the trace's root");
    assert_eq!(got[1].ctx.trace, None, "obu-8 is not traced at ratio 0");
    assert_eq!(spans.len(), 1);
}
