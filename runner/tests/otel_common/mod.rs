//! Helpers of the telemetry tests: the OpenTelemetry back end under test
//! (the collector, Prometheus and Jaeger that `.ci/otel.sh` starts), the
//! `[telemetry]` table of a pipeline, and reading traces and query results.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support;

/// What a test says when no back end was started for it.
pub const NO_BACKEND: &str =
    "start the telemetry back end first: eval \"$(bash .ci/otel.sh start)\"";

/// A variable that `.ci/otel.sh start` exports; fails the test without it.
pub fn backend(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value.trim_end_matches('/').to_owned(),
        _ => panic!("{name} is not set; {NO_BACKEND}"),
    }
}

/// The collector's OTLP/gRPC address.
pub fn otlp_endpoint() -> String {
    backend("OTLP_ENDPOINT")
}

/// The collector's OTLP/HTTP address.
pub fn otlp_http_endpoint() -> String {
    backend("OTLP_HTTP_ENDPOINT")
}

pub fn prometheus_url() -> String {
    backend("PROMETHEUS_URL")
}

pub fn jaeger_url() -> String {
    backend("JAEGER_QUERY_URL")
}

/// `pipeline` with a `[telemetry]` table holding `keys` (TOML lines).
/// A `[telemetry]` table the pipeline already has is replaced.
pub fn with_telemetry(pipeline: &str, keys: &str) -> String {
    let mut doc: toml_edit::DocumentMut = pipeline.parse().expect("pipeline is TOML");
    doc.remove("telemetry");
    format!("{doc}\n[telemetry]\n{keys}\n")
}

/// One span of a trace as Jaeger returns it.
#[derive(Clone, Debug)]
pub struct TraceSpan {
    pub service: String,
    pub name: String,
    pub span_id: String,
    /// Empty for the root.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, Value>,
}

impl TraceSpan {
    /// A string attribute, or an empty string.
    pub fn text(&self, key: &str) -> &str {
        self.attributes.get(key).and_then(|v| v["stringValue"].as_str()).unwrap_or("")
    }
}

/// Every span of trace `trace_id` (32 hex digits), from Jaeger's API; empty
/// while Jaeger does not know the trace.
pub fn trace(trace_id: &str) -> Vec<TraceSpan> {
    let url = format!("{}/api/v3/traces/{trace_id}", jaeger_url());
    let (status, body) = support::get(&support::http(), &url, None);
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "GET {url}: {body}");
    let answer: Value = serde_json::from_str(&body).expect("jaeger answers json");
    let mut spans = Vec::new();
    for resource in answer["result"]["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or("")
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let attributes = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| (a["key"].as_str().unwrap_or("").to_owned(), a["value"].clone()))
                    .collect();
                spans.push(TraceSpan {
                    service: service.clone(),
                    name: span["name"].as_str().unwrap_or("").to_owned(),
                    span_id: span["spanId"].as_str().unwrap_or("").to_owned(),
                    parent_span_id: span["parentSpanId"].as_str().unwrap_or("").to_owned(),
                    attributes,
                });
            }
        }
    }
    spans
}

/// Ids of the traces of `service` with a span tagged `key` = `value`.
pub fn find_traces(service: &str, key: &str, value: &str) -> Vec<String> {
    let tags = serde_json::json!({ key: value }).to_string();
    let url = format!(
        "{}/api/traces?service={}&tags={}&limit=1000&lookback=1h",
        jaeger_url(),
        escape(service),
        escape(&tags)
    );
    let (status, body) = support::get(&support::http(), &url, None);
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "GET {url}: {body}");
    let answer: Value = serde_json::from_str(&body).expect("jaeger answers json");
    let traces = answer["data"].as_array().into_iter().flatten();
    traces.filter_map(|t| t["traceID"].as_str().map(str::to_owned)).collect()
}

/// The result vector of an instant PromQL query.
pub fn query(expr: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/query?query={}", prometheus_url(), escape(expr));
    let (_, body) = support::get(&support::http(), &url, None);
    let answer: Value = serde_json::from_str(&body).expect("prometheus answers json");
    assert_eq!(answer["status"], "success", "{expr}: {body}");
    answer["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// `text` percent-encoded for a query string.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Polls `probe` every half second until it returns something, or fails
/// after `within` with `what`.
pub fn eventually<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Ports and files of [`every_component`].
pub struct Wiring<'a> {
    pub topic: &'a crate::kafka_common::Topic,
    pub store: &'a std::path::Path,
    pub tokens: &'a std::path::Path,
    pub websocket: u16,
    pub grpc: u16,
    pub gateway: u16,
    pub remote_gateway: u16,
}

/// The types of component [`every_component`] declares, as (table, type).
pub const EVERY_TYPE: [(&str, &str); 12] = [
    ("sources", "obu_sim"),
    ("sources", "websocket"),
    ("sources", "grpc"),
    ("sources", "grpc_invoices"),
    ("queues", "memory"),
    ("queues", "kafka"),
    ("stages", "distance"),
    ("stages", "aggregate"),
    ("sinks", "gateway"),
    ("sinks", "console"),
    ("sinks", "grpc"),
    ("sinks", "websocket"),
];

/// One process holding a component of every type, each link going through
/// a real socket: a simulated fleet sends over WebSocket to the process's
/// own WebSocket source, through Kafka to the distance stage, over gRPC to
/// its own aggregator, whose invoices two gateways serve (one directly, one
/// through a `grpc_invoices` source). The fleet is paced, so events flow
/// for about ten minutes.
pub fn every_component(w: &Wiring<'_>) -> String {
    let topic = w.topic;
    format!(
        r#"[sources.fleet]
type = "obu_sim"
trucks = 6
seed = 20260105
start = "2026-01-05T08:00:00Z"
duration_s = 36000
speedup = 60

[queues.buffer]
type = "memory"
inputs = ["fleet"]

[sinks.uplink]
type = "websocket"
inputs = ["buffer"]
url = "ws://127.0.0.1:{websocket}/ws"

[sources.obus]
type = "websocket"
listen = "127.0.0.1:{websocket}"

[queues.fixes]
type = "kafka"
inputs = ["obus"]
brokers = "{brokers}"
topic = "{topic_name}"
group = "{group}"
partitions = {partitions}
lag_interval_ms = 1000

[stages.distance]
type = "distance"
inputs = ["fixes"]
reorder_window_s = 1
idle_flush_s = 1
max_past_s = 1000000000

[sinks.deliver]
type = "grpc"
inputs = ["distance"]
url = "http://127.0.0.1:{grpc}"

[sources.segments]
type = "grpc"
listen = "127.0.0.1:{grpc}"
invoices_from = "aggregate"

[stages.aggregate]
type = "aggregate"
inputs = ["segments"]
price_per_km = 0.19
currency = "EUR"
store = "sqlite://{store}"

[sinks.gateway]
type = "gateway"
inputs = ["aggregate"]
listen = "127.0.0.1:{gateway}"
tokens_file = "{tokens}"

[sinks.totals]
type = "console"
inputs = ["aggregate"]

[sources.invoices]
type = "grpc_invoices"
url = "http://127.0.0.1:{grpc}"

[sinks.remote_gateway]
type = "gateway"
inputs = ["invoices"]
listen = "127.0.0.1:{remote_gateway}"
tokens_file = "{tokens}"
"#,
        websocket = w.websocket,
        grpc = w.grpc,
        gateway = w.gateway,
        remote_gateway = w.remote_gateway,
        brokers = topic.bootstrap,
        topic_name = topic.topic,
        group = topic.group,
        partitions = topic.partitions,
        store = w.store.display(),
        tokens = w.tokens.display(),
    )
}
