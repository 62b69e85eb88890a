//! The registry's metrics and the tracer's spans as OTLP requests.
//!
//! Metrics are cumulative from the moment the registry was made: every
//! export repeats every series with its total so far, so a lost export costs
//! resolution, not counts.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as pm;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as pt;
use stages::otel::{AttrValue, SpanData, SpanKind};
use stages::telemetry::{names, Sample, Value, BOUNDS_S};

/// The instrumentation scope everything of the runner is exported under.
const SCOPE: &str = "toll";

/// The resource of this process: its service name and instance id.
pub fn resource(service_name: &str, instance_id: &str) -> Resource {
    Resource {
        attributes: vec![
            string_attribute("service.name", service_name),
            string_attribute("service.instance.id", instance_id),
            string_attribute("service.version", env!("CARGO_PKG_VERSION")),
        ],
        ..Resource::default()
    }
}

fn scope() -> Option<InstrumentationScope> {
    let version = env!("CARGO_PKG_VERSION").to_owned();
    Some(InstrumentationScope { name: SCOPE.to_owned(), version, ..Default::default() })
}

/// One request with every series of `samples`, which must be grouped by
/// name (as the registry lists them).
pub fn metrics_request(
    resource: &Resource,
    samples: &[Sample],
    start: SystemTime,
    now: SystemTime,
) -> ExportMetricsServiceRequest {
    let (start_ns, now_ns) = (unix_ns(start), unix_ns(now));
    let mut metrics: Vec<pm::Metric> = Vec::new();
    for sample in samples {
        let instrument = names::instrument(sample.name);
        let same = metrics.last().is_some_and(|m| m.name == instrument.name);
        if !same {
            metrics.push(pm::Metric {
                name: instrument.name.to_owned(),
                unit: instrument.unit.to_owned(),
                description: instrument.description.to_owned(),
                data: Some(empty_data(&sample.value)),
                ..pm::Metric::default()
            });
        }
        let attributes = sample
            .labels
            .iter()
            .map(|(key, value)| string_attribute(names::attribute_key(key), value))
            .collect();
        if let Some(data) = metrics.last_mut().and_then(|m| m.data.as_mut()) {
            add_point(data, &sample.value, attributes, start_ns, now_ns);
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![pm::ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![pm::ScopeMetrics { scope: scope(), metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn empty_data(value: &Value) -> pm::metric::Data {
    let cumulative = pm::AggregationTemporality::Cumulative as i32;
    match value {
        Value::Counter(_) => pm::metric::Data::Sum(pm::Sum {
            data_points: Vec::new(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        Value::Gauge(_) => pm::metric::Data::Gauge(pm::Gauge::default()),
        Value::Histogram(_) => pm::metric::Data::Histogram(pm::Histogram {
            data_points: Vec::new(),
            aggregation_temporality: cumulative,
        }),
    }
}

/// Adds a series to its metric. A series whose kind differs from the
/// metric's first (one name registered as two kinds) is left out.
fn add_point(
    data: &mut pm::metric::Data,
    value: &Value,
    attributes: Vec<KeyValue>,
    start_ns: u64,
    now_ns: u64,
) {
    use pm::number_data_point::Value as Number;
    let number = |value| pm::NumberDataPoint {
        attributes: attributes.clone(),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(value),
        ..Default::default()
    };
    match (data, value) {
        (pm::metric::Data::Sum(sum), Value::Counter(total)) => {
            sum.data_points.push(number(Number::AsDouble(*total)));
        }
        (pm::metric::Data::Gauge(gauge), Value::Gauge(level)) => {
            gauge.data_points.push(number(Number::AsInt(*level)));
        }
        (pm::metric::Data::Histogram(histogram), Value::Histogram(h)) => {
            histogram.data_points.push(pm::HistogramDataPoint {
                attributes,
                start_time_unix_nano: start_ns,
                time_unix_nano: now_ns,
                count: h.count,
                sum: Some(h.sum_s),
                bucket_counts: h.buckets.clone(),
                explicit_bounds: BOUNDS_S.to_vec(),
                ..Default::default()
            });
        }
        _ => {}
    }
}

/// One request holding `spans`.
pub fn trace_request(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
    let spans = spans.iter().map(span).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![pt::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![pt::ScopeSpans { scope: scope(), spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn span(data: &SpanData) -> pt::Span {
    let kind = match data.kind {
        SpanKind::Internal => pt::span::SpanKind::Internal,
        SpanKind::Server => pt::span::SpanKind::Server,
        SpanKind::Client => pt::span::SpanKind::Client,
        SpanKind::Producer => pt::span::SpanKind::Producer,
        SpanKind::Consumer => pt::span::SpanKind::Consumer,
    };
    let parent_span_id = match data.parent_span_id {
        0 => Vec::new(),
        id => id.to_be_bytes().to_vec(),
    };
    let status = data.error.as_ref().map(|message| pt::Status {
        message: message.clone(),
        code: pt::status::StatusCode::Error as i32,
    });
    pt::Span {
        trace_id: data.trace_id.to_be_bytes().to_vec(),
        span_id: data.span_id.to_be_bytes().to_vec(),
        parent_span_id,
        // The W3C flags: every exported span was sampled.
        flags: 1,
        name: data.name.to_owned(),
        kind: kind as i32,
        start_time_unix_nano: unix_ns(data.start),
        end_time_unix_nano: unix_ns(data.end),
        attributes: data.attributes.iter().map(|(key, value)| attribute(key, value)).collect(),
        status,
        ..Default::default()
    }
}

fn attribute(key: &str, value: &AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(text) => any_value::Value::StringValue(text.clone()),
        AttrValue::Int(n) => any_value::Value::IntValue(*n),
        AttrValue::Float(x) => any_value::Value::DoubleValue(*x),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    attribute(key, &AttrValue::Str(value.to_owned()))
}

fn unix_ns(time: SystemTime) -> u64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message;
    use stages::event::{EventContext, TraceContext};
    use stages::otel::{Sampling, Tracer};
    use stages::telemetry::Telemetry;

    use super::*;

    fn point_value(point: &pm::NumberDataPoint) -> f64 {
        match point.value {
            Some(pm::number_data_point::Value::AsDouble(x)) => x,
            Some(pm::number_data_point::Value::AsInt(n)) => n as f64,
            None => f64::NAN,
        }
    }

    #[test]
    fn counters_gauges_and_histograms_become_cumulative_otlp_metrics() {
        let telemetry = Telemetry::new();
        let distance = telemetry.component("distance", "stage", "distance");
        distance.received.add(7);
        distance.queue_depth.set(3);
        distance.processing.observe(Duration::from_millis(3));
        telemetry.counter("toll_billed_distance_meters_total", &[("component", "agg")]).add(1500);
        let labels = [("http_route", "/health"), ("http_response_status_code", "200")];
        telemetry.histogram("http_server_request_duration_seconds", &labels);

        let start = telemetry.started();
        let now = start + Duration::from_secs(5);
        let request = metrics_request(&resource("svc", "i-1"), &telemetry.samples(), start, now);
        let bytes = request.encode_to_vec();
        let request = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();

        let scope = &request.resource_metrics[0].scope_metrics[0];
        let metric = |name: &str| scope.metrics.iter().find(|m| m.name == name).unwrap();
        let received = metric("toll.component.received.events");
        let Some(pm::metric::Data::Sum(sum)) = &received.data else { panic!("a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, pm::AggregationTemporality::Cumulative as i32);
        assert_eq!(point_value(&sum.data_points[0]), 7.0);
        assert_eq!(
            sum.data_points[0].time_unix_nano - sum.data_points[0].start_time_unix_nano,
            5e9 as u64
        );
        let keys: Vec<&str> =
            sum.data_points[0].attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["component", "component_kind", "component_type"]);

        let billed = metric("toll.billed.distance");
        assert_eq!(billed.unit, "m");
        let Some(pm::metric::Data::Sum(sum)) = &billed.data else { panic!("a sum") };
        assert_eq!(point_value(&sum.data_points[0]), 1.5, "counted in mm, exported in m");

        let Some(pm::metric::Data::Gauge(depth)) = &metric("toll.component.queue.depth").data
        else {
            panic!("a gauge")
        };
        assert_eq!(point_value(&depth.data_points[0]), 3.0);

        let processing = metric("toll.component.processing.duration");
        assert_eq!(processing.unit, "s");
        let Some(pm::metric::Data::Histogram(h)) = &processing.data else { panic!("histogram") };
        let point = &h.data_points[0];
        assert_eq!((point.count, point.bucket_counts.len()), (1, BOUNDS_S.len() + 1));
        assert_eq!(point.explicit_bounds, BOUNDS_S);
        assert_eq!(point.bucket_counts[5], 1, "3 ms lies in (2.5 ms, 5 ms]");

        let http = metric("http.server.request.duration");
        let Some(pm::metric::Data::Histogram(h)) = &http.data else { panic!("histogram") };
        let keys: Vec<&str> = h.data_points[0].attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["http.route", "http.response.status_code"]);
    }

    #[test]
    fn spans_keep_their_ids_parents_and_attributes() {
        let tracer = Tracer::default();
        tracer.configure(true, &Sampling::default());
        let root = TraceContext { trace_id: 0x0102, span_id: 0, sampled: true };
        let mut ctx = EventContext { received_ms: 0, trace: Some(root) };
        let mut first = tracer.start(&mut ctx, "websocket.receive", SpanKind::Server).unwrap();
        first.set("obu.id", "obu-1");
        first.end();
        let mut second = tracer.start(&mut ctx, "kafka.produce", SpanKind::Producer).unwrap();
        second.fail("broker gone");
        second.end();
        let finished = tracer.take_finished();

        let request = trace_request(&resource("svc", "i-1"), &finished);
        let bytes = request.encode_to_vec();
        let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;

        let mut trace_id = [0u8; 16];
        trace_id[14..].copy_from_slice(&[1, 2]);
        assert_eq!(spans[0].trace_id, trace_id);
        assert!(spans[0].parent_span_id.is_empty(), "the entry's span is the root");
        assert_eq!(spans[0].kind, pt::span::SpanKind::Server as i32);
        assert_eq!(spans[0].attributes[0].key, "obu.id");
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[1].status.as_ref().unwrap().code, pt::status::StatusCode::Error as i32);
        assert!(spans[1].end_time_unix_nano >= spans[1].start_time_unix_nano);
    }
}
