//! One GPS fix traced end to end through the split services: receiver
//! (WebSocket -> Kafka), distance (Kafka -> gRPC) and aggregator (gRPC ->
//! aggregate), each a runner process exporting spans to an OpenTelemetry
//! collector, which hands them to Jaeger. The fix's trace, fetched from
//! Jaeger by trace id, must hold a span of every hop, each the child of the
//! one before across the WebSocket, Kafka and gRPC boundaries.
//!
//! Needs a Kafka broker (`KAFKA_BOOTSTRAP`) and the telemetry back end
//! (`eval "$(bash .ci/otel.sh start)"`).

mod kafka_common;
mod otel_common;
mod split_common;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use otel_common::TraceSpan;
use serde_json::{json, Value};
use split_common::pipelines;
use split_common::{Ready, Service, Wiring, PARTITIONS};
use tokio_tungstenite::tungstenite::Message;

/// The OBU in `always_trace`.
const TRACED: &str = "obu-traced";
/// An OBU nobody asked to trace (the sampling ratio is 0).
const PLAIN: &str = "obu-plain";
/// An OBU whose fix brings its own `traceparent`.
const PARENTED: &str = "obu-parented";
/// Fixes each of the first two OBUs sends, one a second.
const FIXES: usize = 8;

/// The hops of a billed fix in order, with the service each runs in.
const HOPS: [(&str, &str); 7] = [
    ("websocket.receive", "receiver"),
    ("kafka.produce", "receiver"),
    ("kafka.consume", "distance"),
    ("distance.segment", "distance"),
    ("grpc.send", "distance"),
    ("grpc.receive", "aggregator"),
    ("aggregate.write", "aggregator"),
];

#[test]
fn an_always_traced_fix_is_one_trace_across_websocket_kafka_and_grpc() {
    let bootstrap = kafka_common::bootstrap();
    let otlp = otel_common::otlp_endpoint();
    otel_common::jaeger_url();
    let dir = tempfile::tempdir().unwrap();
    let name = kafka_common::unique("otel-trace");
    let topic = kafka_common::Topic::fresh(&name, PARTITIONS);
    kafka_common::create_topic(&bootstrap, &topic.topic, PARTITIONS);
    let wiring = Wiring {
        topic,
        store: dir.path().join("otel-trace.db"),
        tokens: kafka_common::tokens_file(dir.path()),
    };
    let service = |role: &str| format!("{name}-{role}");
    let telemetry = |role: &str| {
        format!(
            "service_name = \"{}\"\nendpoint = \"{otlp}\"\nprotocol = \"grpc\"\n\
             sampling_ratio = 0.0\nalways_trace = [\"{TRACED}\"]\nexport_interval_ms = 1000\n",
            service(role)
        )
    };

    let (_aggregator, grpc_port) = Service::start_listening(
        dir.path(),
        "aggregator",
        |port| {
            let pipeline = pipelines::aggregator(&wiring, port);
            otel_common::with_telemetry(&pipeline, &telemetry("aggregator"))
        },
        Ready::Listening,
    );
    let distance = pipelines::distance(&wiring, grpc_port);
    let _distance = Service::start(
        dir.path(),
        "distance",
        &otel_common::with_telemetry(&distance, &telemetry("distance")),
        Ready::Assigned(PARTITIONS),
    );
    let (_receiver, ws_port) = Service::start_listening(
        dir.path(),
        "receiver",
        |port| {
            let pipeline = pipelines::receiver(&wiring, port);
            otel_common::with_telemetry(&pipeline, &telemetry("receiver"))
        },
        Ready::Listening,
    );

    let parent_trace = format!("{:032x}", now_ms() as u128 * 7919 + 1);
    let parent_span = "00f067aa0ba902b7";
    let frames = frames(&format!("00-{parent_trace}-{parent_span}-01"));
    send_all(ws_port, &frames);

    // Every fix of the traced OBU is a trace of its own; the one billed
    // last waits for the reorder window and idle flush of the distance stage.
    let receiver = service("receiver");
    let complete = otel_common::eventually(Duration::from_secs(60), "a trace of every hop", || {
        let ids = otel_common::find_traces(&receiver, "obu.id", TRACED);
        let traces: Vec<Vec<TraceSpan>> = ids.iter().map(|id| otel_common::trace(id)).collect();
        let billed = traces.iter().filter(|t| has_every_hop(t)).count();
        (ids.len() >= FIXES && billed >= FIXES - 2).then_some(traces)
    });

    let billed: Vec<&Vec<TraceSpan>> = complete.iter().filter(|t| has_every_hop(t)).collect();
    for spans in &billed {
        assert_hops_chain(spans, &name);
    }
    let untraced = otel_common::find_traces(&receiver, "obu.id", PLAIN);
    assert!(untraced.is_empty(), "fixes of {PLAIN} were traced: {untraced:?}");

    let parented = otel_common::eventually(Duration::from_secs(30), "the OBU's own trace", || {
        let spans = otel_common::trace(&parent_trace);
        spans.iter().any(|s| s.name == "distance.segment").then_some(spans)
    });
    let receive = parented.iter().find(|s| s.name == "websocket.receive").expect("received");
    assert_eq!(receive.parent_span_id, parent_span, "the receive span continues the OBU's span");
    assert_eq!(receive.text("obu.id"), PARENTED);
    println!(
        "otel_trace: {} traces of {TRACED}, {} with all {} hops; {PARENTED} continued its trace",
        complete.len(),
        billed.len(),
        HOPS.len()
    );
}

/// Whether a trace holds a span of every hop of a billed fix.
fn has_every_hop(spans: &[TraceSpan]) -> bool {
    HOPS.iter().all(|(hop, _)| spans.iter().any(|s| s.name == *hop))
}

/// Each hop has exactly one span, in the service it runs in, whose parent
/// is the span of the hop before; the first is the trace's root.
fn assert_hops_chain(spans: &[TraceSpan], name: &str) {
    let mut parent = String::new();
    for (hop, role) in HOPS {
        let of_hop: Vec<&TraceSpan> = spans.iter().filter(|s| s.name == hop).collect();
        assert_eq!(of_hop.len(), 1, "one {hop} span in {spans:#?}");
        let span = of_hop[0];
        assert_eq!(span.service, format!("{name}-{role}"), "service of {hop}");
        assert_eq!(span.parent_span_id, parent, "parent of {hop} in {spans:#?}");
        assert_eq!(span.text("obu.id"), TRACED, "obu.id of {hop}");
        parent = span.span_id.clone();
    }
    let segment = spans.iter().find(|s| s.name == "distance.segment").expect("segment span");
    assert_eq!(segment.text("toll.outcome"), "billed");
}

/// The frames the OBUs send: each carries a fix of the traced and of the
/// plain OBU, 20 m apart from the last one a second later; the last frame
/// adds one fix that brings `traceparent`.
fn frames(traceparent: &str) -> Vec<String> {
    let start_ms = now_ms() - 60_000;
    let fix = |obu: &str, i: usize, lat0: f64| {
        let ts_ms = start_ms + i as i64 * 1000;
        let ts = chrono::DateTime::from_timestamp_millis(ts_ms).expect("valid time");
        let lat = lat0 + i as f64 * 20.0 / 111_200.0;
        json!({ "obu_id": obu, "ts": ts.to_rfc3339(), "lat": lat, "lon": 11.9 })
    };
    let mut frames: Vec<String> = (0..FIXES)
        .map(|i| json!([fix(TRACED, i, 50.30), fix(PLAIN, i, 50.40)]).to_string())
        .collect();
    let mut own = fix(PARENTED, 0, 50.50);
    own["traceparent"] = json!(traceparent);
    frames.push(json!([own]).to_string());
    frames
}

/// Sends every frame over one connection and waits until each is acknowledged.
fn send_all(ws_port: u16, frames: &[String]) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let url = format!("ws://127.0.0.1:{ws_port}/ws");
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("receiver accepts");
        for frame in frames {
            ws.send(Message::text(frame.clone())).await.expect("frame is sent");
        }
        let mut acknowledged = 0;
        while acknowledged < frames.len() {
            let reply = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
            let reply = reply.expect("a reply within 30 s").expect("connection open").unwrap();
            let Message::Text(text) = reply else { continue };
            let reply: Value = serde_json::from_str(&text).expect("replies are json");
            assert!(reply.get("ack").is_some(), "frame not acknowledged: {text}");
            acknowledged += 1;
        }
        let _ = ws.close(None).await;
    });
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
