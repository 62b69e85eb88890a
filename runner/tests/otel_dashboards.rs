//! Every PromQL query of the Grafana dashboards returns data from a
//! Prometheus fed by the runner through the OpenTelemetry collector: the
//! runner exports its registry over OTLP/HTTP, the collector turns it into
//! a scrape endpoint, Prometheus scrapes it. Each query is scoped to this
//! run's `job` (the runner's service name), so data of other runs cannot
//! answer for it.
//!
//! Needs a Kafka broker (`KAFKA_BOOTSTRAP`) and the telemetry back end
//! (`eval "$(bash .ci/otel.sh start)"`).

mod kafka_common;
mod otel_common;
mod support;

use std::time::{Duration, Instant};

/// What `$__rate_interval` stands for: Prometheus scrapes every second in
/// the test set-up, so a minute holds plenty of points.
const RATE_INTERVAL: &str = "1m";

#[test]
fn every_dashboard_query_returns_data_from_the_collector() {
    let bootstrap = kafka_common::bootstrap();
    let otlp = otel_common::otlp_http_endpoint();
    otel_common::prometheus_url();
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "the dashboards hold queries: {queries:?}");

    let dir = tempfile::tempdir().unwrap();
    let job = kafka_common::unique("dashboards");
    let topic = kafka_common::Topic::fresh("dashboards", 2);
    kafka_common::create_topic(&bootstrap, &topic.topic, topic.partitions);
    let store = dir.path().join("dashboards.db");
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
        let keys = format!(
            "service_name = \"{job}\"\nendpoint = \"{otlp}\"\nprotocol = \"http\"\n\
             export_interval_ms = 1000\n"
        );
        otel_common::with_telemetry(&otel_common::every_component(&wiring), &keys)
    };
    let (mut runner, ports, _) =
        support::start_pipeline(dir.path(), "dashboards", 4, render, |ports| ports[2], &[]);

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending: Vec<(String, String)> =
        queries.iter().map(|(file, expr)| (file.clone(), scoped(expr, &job))).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        assert!(runner.exited().is_none(), "runner ended:\n{}", runner.stderr());
        // Invoice requests keep the gateways' request metrics moving.
        for port in [ports[2], ports[3]] {
            for obu in ["obu-0001", "obu-0002"] {
                let url = format!("http://127.0.0.1:{port}/invoice/{obu}");
                support::get(&support::http(), &url, Some(kafka_common::TOKEN));
            }
        }
        pending.retain(|(_, expr)| otel_common::query(expr).is_empty());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(pending.is_empty(), "queries without data after 120 s: {pending:#?}");
    println!("otel_dashboards: {} queries answered for job {job}", queries.len());
}

/// Every `expr` of grafana/dashboards/*.json with its file, `$__rate_interval`
/// replaced.
fn dashboard_queries() -> Vec<(String, String)> {
    let folder = support::repo_root().join("grafana/dashboards");
    let mut queries = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{} is readable: {e}", folder.display()))
        .map(|entry| entry.expect("dashboard entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("dashboard is readable");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is json");
        let mut exprs = Vec::new();
        collect_exprs(&dashboard, &mut exprs);
        let file = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for expr in exprs {
            queries.push((file.clone(), expr.replace("$__rate_interval", RATE_INTERVAL)));
        }
    }
    queries
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// `expr` with `job="JOB"` added to the selector of every metric of the
/// runner (names starting `toll_` or `http_server_`).
fn scoped(expr: &str, job: &str) -> String {
    let matcher = format!("job=\"{job}\"");
    let bytes = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() + 64);
    let mut i = 0;
    while i < bytes.len() {
        let starts_name = (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_')
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts_name {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let end = (i..bytes.len())
            .find(|&j| !(bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] == b':'))
            .unwrap_or(bytes.len());
        let name = &expr[i..end];
        out.push_str(name);
        if name.starts_with("toll_") || name.starts_with("http_server_") {
            if bytes.get(end) == Some(&b'{') {
                out.push('{');
                out.push_str(&matcher);
                out.push(',');
                i = end + 1;
                continue;
            }
            out.push('{');
            out.push_str(&matcher);
            out.push('}');
        }
        i = end;
    }
    out
}

#[test]
fn scoping_adds_the_job_to_every_runner_metric() {
    assert_eq!(
        scoped("sum by (job) (rate(toll_a_total[1m])) / sum(http_server_x_count{le=\"1\"})", "j"),
        concat!(
            "sum by (job) (rate(toll_a_total{job=\"j\"}[1m])) / ",
            "sum(http_server_x_count{job=\"j\",le=\"1\"})"
        )
    );
}
