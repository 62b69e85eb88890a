//! The `[telemetry]` table: where metrics and traces go, and which fixes are
//! traced.
//!
//! ```toml
//! [telemetry]
//! service_name = "toll-receiver"
//! endpoint = "http://127.0.0.1:4317"   # an OpenTelemetry collector
//! protocol = "grpc"                    # or "http" (OTLP/HTTP, protobuf)
//! sampling_ratio = 0.01
//! always_trace = ["obu-0001"]
//! log_format = "json"
//! prometheus_listen = "127.0.0.1:9464"
//! ```
//!
//! Every key may be left out. The standard variables `OTEL_SERVICE_NAME`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_EXPORTER_OTLP_PROTOCOL` stand in
//! for the keys they name; without an endpoint nothing is exported and no
//! span is recorded.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use stages::otel::Sampling;

use super::{Diagnostic, Diagnostics, Locator};
use crate::logging::LogFormat;

/// The name of the table in the pipeline file.
pub const TABLE: &str = "telemetry";

/// `service.name` when neither the file nor `OTEL_SERVICE_NAME` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "toll-runner";

/// The table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryTable {
    /// `service.name` of everything this process exports.
    service_name: Option<String>,
    /// OTLP endpoint, `http://HOST:PORT`; for HTTP the signal paths
    /// (`/v1/metrics`, `/v1/traces`) are appended.
    endpoint: Option<String>,
    /// `grpc` (default) or `http` (OTLP/HTTP with protobuf bodies).
    protocol: Option<Protocol>,
    /// Share of fixes traced, 0 to 1, for fixes whose OBU sent no
    /// `traceparent`. Default 0: only `always_trace` and OBU decisions.
    #[serde(default)]
    sampling_ratio: f64,
    /// OBU ids whose fixes are always traced.
    #[serde(default)]
    always_trace: Vec<String>,
    /// Log line format on stderr, read once at start; the command line's
    /// `--log-format` wins.
    log_format: Option<LogFormat>,
    /// Address of a Prometheus scrape endpoint (`/metrics`) for set-ups
    /// without a collector; none by default.
    prometheus_listen: Option<SocketAddr>,
    /// How often metrics are exported, in milliseconds.
    #[serde(default = "default_export_interval_ms")]
    export_interval_ms: u64,
    /// Finished spans kept for the exporter; more are dropped and counted
    /// in `toll_trace_spans_dropped_total`.
    #[serde(default = "default_max_queued_spans")]
    max_queued_spans: usize,
}

impl Default for TelemetryTable {
    /// A file without the table.
    fn default() -> Self {
        TelemetryTable {
            service_name: None,
            endpoint: None,
            protocol: None,
            sampling_ratio: 0.0,
            always_trace: Vec::new(),
            log_format: None,
            prometheus_listen: None,
            export_interval_ms: default_export_interval_ms(),
            max_queued_spans: default_max_queued_spans(),
        }
    }
}

fn default_export_interval_ms() -> u64 {
    10_000
}

fn default_max_queued_spans() -> usize {
    stages::otel::DEFAULT_BUFFER_SPANS
}

/// How OTLP travels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http", alias = "http/protobuf")]
    Http,
}

/// Where OTLP goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://HOST:PORT`, without a trailing `/`.
    pub url: String,
    pub protocol: Protocol,
}

/// The telemetry settings of one pipeline, with the environment's defaults
/// filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetrySettings {
    pub service_name: String,
    /// `None`: nothing is exported.
    pub endpoint: Option<Endpoint>,
    pub sampling: Sampling,
    pub log_format: Option<LogFormat>,
    pub prometheus_listen: Option<SocketAddr>,
    pub export_interval: Duration,
    pub max_queued_spans: usize,
}

impl Default for TelemetrySettings {
    /// Nothing exported, no scrape endpoint; the environment is not read.
    fn default() -> Self {
        TelemetrySettings {
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            endpoint: None,
            sampling: Sampling::default(),
            log_format: None,
            prometheus_listen: None,
            export_interval: Duration::from_millis(default_export_interval_ms()),
            max_queued_spans: default_max_queued_spans(),
        }
    }
}

impl TelemetrySettings {
    /// Whether a change from `self` to `next` can be applied to a running
    /// process; sampling is, the rest needs a restart.
    pub fn same_except_sampling(&self, next: &TelemetrySettings) -> bool {
        TelemetrySettings { sampling: next.sampling.clone(), ..self.clone() } == *next
    }

    fn resolve(table: TelemetryTable) -> Result<TelemetrySettings, (&'static str, String)> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let service_name = table
            .service_name
            .or_else(|| env("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        if service_name.trim().is_empty() {
            return Err(("service_name", "must not be empty".to_owned()));
        }

        let protocol = match (table.protocol, env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            (Some(protocol), _) => protocol,
            (None, Some(text)) => env_protocol(&text).ok_or_else(|| {
                let why = "is not supported; use grpc or http/protobuf";
                ("protocol", format!("OTEL_EXPORTER_OTLP_PROTOCOL={text} {why}"))
            })?,
            (None, None) => Protocol::Grpc,
        };
        let endpoint = match table.endpoint.or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
            Some(url) => Some(Endpoint { url: check_endpoint(&url)?, protocol }),
            None => None,
        };

        if !(0.0..=1.0).contains(&table.sampling_ratio) {
            return Err(("sampling_ratio", "must be between 0 and 1".to_owned()));
        }
        if let Some(bad) = table.always_trace.iter().find(|id| !stages::event::valid_obu_id(id)) {
            let rule = stages::event::OBU_ID_RULE;
            return Err(("always_trace", format!("`{bad}` is not an OBU id: {rule}")));
        }
        if table.export_interval_ms < 100 {
            return Err(("export_interval_ms", "must be at least 100".to_owned()));
        }
        if table.max_queued_spans == 0 {
            return Err(("max_queued_spans", "must be at least 1".to_owned()));
        }
        Ok(TelemetrySettings {
            service_name,
            endpoint,
            sampling: Sampling { ratio: table.sampling_ratio, always_trace: table.always_trace },
            log_format: table.log_format,
            prometheus_listen: table.prometheus_listen,
            export_interval: Duration::from_millis(table.export_interval_ms),
            max_queued_spans: table.max_queued_spans,
        })
    }
}

/// The protocols `OTEL_EXPORTER_OTLP_PROTOCOL` may name that this build speaks.
fn env_protocol(text: &str) -> Option<Protocol> {
    match text.trim() {
        "grpc" => Some(Protocol::Grpc),
        "http/protobuf" | "http" => Some(Protocol::Http),
        _ => None,
    }
}

/// `http://HOST:PORT` with an optional path and no trailing `/`.
fn check_endpoint(url: &str) -> Result<String, (&'static str, String)> {
    let fail = |why: &str| ("endpoint", format!("`{url}` {why}"));
    let uri: tonic::codegen::http::Uri = url.parse().map_err(|_| fail("is not a URL"))?;
    // Missing: TLS. The exporter's clients are built without it, so an
    // https collector is refused here rather than failing at every export.
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(fail("uses https, which this build cannot speak")),
        _ => return Err(fail("must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(fail("names no host"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The `log_format` of a pipeline file's `[telemetry]` table, read before
/// logging starts; a file that cannot be read or parsed names none (its
/// errors are reported when it is loaded).
pub fn log_format_of(path: &std::path::Path) -> Option<LogFormat> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut file: toml::Table = toml::from_str(&text).ok()?;
    let toml::Value::Table(mut table) = file.remove(TABLE)? else { return None };
    table.remove("log_format")?.try_into().ok()
}

/// Reads the `[telemetry]` table of a parsed pipeline file; errors name the
/// line and column of the key they concern.
pub fn parse(
    locator: &Locator<'_>,
    value: Option<toml::Value>,
) -> Result<TelemetrySettings, Diagnostics> {
    let at = |path: &[&str]| {
        let full: Vec<&str> = [TABLE].iter().chain(path).copied().collect();
        locator.nearest(&full)
    };
    let table = match value {
        None => TelemetryTable::default(),
        Some(value @ toml::Value::Table(_)) => {
            serde_path_to_error::deserialize(value).map_err(|e| {
                let path: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|segment| match segment {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        _ => None,
                    })
                    .collect();
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                let message = e.into_inner().to_string().trim().replace('\n', " ");
                Diagnostics::one(Diagnostic::new(at(&path), message))
            })?
        }
        Some(_) => {
            let message = format!("`{TABLE}` must be a table");
            return Err(Diagnostics::one(Diagnostic::new(at(&[]), message)));
        }
    };
    TelemetrySettings::resolve(table).map_err(|(key, message)| {
        Diagnostics::one(Diagnostic::new(at(&[key]), format!("`{key}`: {message}")))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    fn parse_text(text: &str) -> Result<TelemetrySettings, String> {
        let doc = toml_edit::Document::parse(text.to_owned()).unwrap();
        let locator = Locator::new(Arc::from(Path::new("p.toml")), text, &doc);
        let mut table: toml::Table = toml::from_str(text).unwrap();
        parse(&locator, table.remove(TABLE)).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_is_read() {
        let settings = parse_text(
            "[telemetry]\nservice_name = \"rx\"\nendpoint = \"http://127.0.0.1:4318/\"\n\
             protocol = \"http\"\nsampling_ratio = 0.5\nalways_trace = [\"obu-1\"]\n\
             log_format = \"json\"\nprometheus_listen = \"127.0.0.1:9464\"\n\
             export_interval_ms = 500\n",
        )
        .unwrap();
        assert_eq!(settings.service_name, "rx");
        let endpoint = Endpoint { url: "http://127.0.0.1:4318".into(), protocol: Protocol::Http };
        assert_eq!(settings.endpoint, Some(endpoint));
        assert_eq!(settings.sampling.ratio, 0.5);
        assert_eq!(settings.sampling.always_trace, ["obu-1"]);
        assert_eq!(settings.log_format, Some(LogFormat::Json));
        assert_eq!(settings.prometheus_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(settings.export_interval, Duration::from_millis(500));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported_where_they_are_written() {
        let unknown = parse_text("[telemetry]\nsampling = 1\n").unwrap_err();
        assert!(unknown.starts_with("error: p.toml:2:1: unknown field `sampling`"), "{unknown}");

        let ratio = parse_text("[telemetry]\nendpoint = \"http://a:1\"\nsampling_ratio = 2.0\n");
        let ratio = ratio.unwrap_err();
        assert!(ratio.starts_with("error: p.toml:3:1: `sampling_ratio`"), "{ratio}");

        let tls = parse_text("[telemetry]\nendpoint = \"https://a:1\"\n").unwrap_err();
        assert!(tls.contains("p.toml:2:1") && tls.contains("https"), "{tls}");

        let protocol = parse_text("[telemetry]\nprotocol = \"udp\"\n").unwrap_err();
        assert!(protocol.contains("p.toml:2:1"), "{protocol}");
    }

    #[test]
    fn only_sampling_changes_apply_without_a_restart() {
        let before = parse_text("[telemetry]\nalways_trace = [\"a\"]\n").unwrap();
        let sampling = parse_text("[telemetry]\nalways_trace = [\"b\"]\nsampling_ratio = 1.0\n");
        assert!(before.same_except_sampling(&sampling.unwrap()));
        let service = parse_text("[telemetry]\nservice_name = \"other\"\n").unwrap();
        assert!(!before.same_except_sampling(&service));
    }
}
