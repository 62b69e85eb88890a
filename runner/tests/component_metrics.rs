//! Every component type reports the core metric set, under one naming
//! scheme: events received and sent, errors, processing time per batch and
//! input queue depth, labelled with the component's name, kind and type.
//!
//! One runner process holds a component of every registered type (the test
//! fails when a type is added without joining it) and serves its registry on
//! the `[telemetry]` Prometheus endpoint. Needs a Kafka broker
//! (`KAFKA_BOOTSTRAP`) for the kafka queue.

mod kafka_common;
mod otel_common;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use otel_common::EVERY_TYPE;

/// What each component of the pipeline is expected to have done.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Work {
    /// Took events from its inputs.
    Receives,
    /// Sent events it made (a source).
    Emits,
    /// Nothing: a `grpc_invoices` source emits no events, so the gateway
    /// behind it receives none; both only serve invoices.
    Serves,
}

/// The components of [`otel_common::every_component`]: name, kind, type, work.
const COMPONENTS: [(&str, &str, &str, Work); 13] = [
    ("fleet", "source", "obu_sim", Work::Emits),
    ("buffer", "queue", "memory", Work::Receives),
    ("uplink", "sink", "websocket", Work::Receives),
    ("obus", "source", "websocket", Work::Emits),
    ("fixes", "queue", "kafka", Work::Receives),
    ("distance", "stage", "distance", Work::Receives),
    ("deliver", "sink", "grpc", Work::Receives),
    ("segments", "source", "grpc", Work::Emits),
    ("aggregate", "stage", "aggregate", Work::Receives),
    ("gateway", "sink", "gateway", Work::Receives),
    ("totals", "sink", "console", Work::Receives),
    ("invoices", "source", "grpc_invoices", Work::Serves),
    ("remote_gateway", "sink", "gateway", Work::Serves),
];

#[test]
fn every_component_type_reports_the_core_metric_set() {
    let registered: BTreeSet<(&str, &str)> =
        stages::registry::component_types().iter().map(|t| (t.kind.table(), t.name)).collect();
    assert_eq!(registered, BTreeSet::from(EVERY_TYPE), "every type joins this test");
    let bootstrap = kafka_common::bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let topic = kafka_common::Topic::fresh("core-metrics", 2);
    kafka_common::create_topic(&bootstrap, &topic.topic, topic.partitions);
    let store = dir.path().join("core.db");
    let tokens = kafka_common::tokens_file(dir.path());

    let render = |ports: &[u16]| {
        let wiring = otel_common::Wiring {
            topic: &topic,
            store: &store,
            tokens: &tokens,
            websocket: ports[0],
            grpc: ports[1],
            gateway: ports[2],
            remote_gateway: ports[3],
        };
        let keys = format!("prometheus_listen = \"127.0.0.1:{}\"", ports[4]);
        otel_common::with_telemetry(&otel_common::every_component(&wiring), &keys)
    };
    let (_runner, ports, _) =
        support::start_pipeline(dir.path(), "core", 5, render, |ports| ports[2], &[]);
    let scrape = format!("http://127.0.0.1:{}/metrics", ports[4]);

    // Every component has worked once the gateway received totals.
    let page = otel_common::eventually(Duration::from_secs(60), "totals at the gateway", || {
        let (status, page) = support::get(&support::http(), &scrape, None);
        assert_eq!(status, 200, "{page}");
        let at_gateway = [("component", "gateway")];
        let received = "toll_component_received_events_total";
        let processed = "toll_component_processing_duration_seconds_count";
        let done = support::sample_sum(&page, received, &at_gateway) > 0.0
            && support::sample_sum(&page, processed, &at_gateway) > 0.0;
        done.then_some(page)
    });

    for (name, kind, type_name, work) in COMPONENTS {
        let labels = [("component", name), ("component_kind", kind), ("component_type", type_name)];
        let value = |metric: &str| {
            let found = support::samples(&page, metric);
            let series: Vec<f64> = found
                .into_iter()
                .filter(|(have, _)| {
                    labels.iter().all(|(k, v)| have.get(*k).is_some_and(|l| l == v))
                })
                .map(|(_, value)| value)
                .collect();
            assert_eq!(series.len(), 1, "one {metric} series of {name} ({type_name})");
            series[0]
        };
        let received = value("toll_component_received_events_total");
        let sent = value("toll_component_sent_events_total");
        value("toll_component_errors_total");
        value("toll_component_queue_depth");
        let batches = value("toll_component_processing_duration_seconds_count");
        value("toll_component_processing_duration_seconds_sum");
        match work {
            Work::Receives => assert!(received > 0.0 && batches > 0.0, "{name} received"),
            Work::Emits => assert!(sent > 0.0 && batches > 0.0, "{name} emitted"),
            Work::Serves => {}
        }
    }
}
