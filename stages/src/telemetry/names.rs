//! How registry names translate into OpenTelemetry instrument names.
//!
//! The registry names metrics as Prometheus does (`_total` on counters, the
//! unit spelled out at the end). Exported over OTLP they become dotted names
//! with a unit, chosen so that a collector's Prometheus exporter (which turns
//! dots into underscores and appends `_total` and the unit) arrives back at
//! exactly the registry's name: the same query works against `/metrics` and
//! against a Prometheus fed by a collector.

/// Unit suffixes of registry names and the UCUM unit each stands for.
const UNIT_SUFFIXES: [(&str, &str); 3] = [("_seconds", "s"), ("_meters", "m"), ("_bytes", "By")];

/// Counters kept in integer sub-units, and what one count is worth in the
/// unit of the name.
const SCALES: [(&str, f64); 2] =
    [("toll_billed_distance_meters_total", 1e-3), ("toll_billed_amount_total", 1e-6)];

/// What the registry's metrics count, for the exporters' descriptions.
const DESCRIPTIONS: [(&str, &str); 12] = [
    ("toll_component_received_events_total", "events a component took from its inputs"),
    ("toll_component_sent_events_total", "events a component handed on"),
    ("toll_component_rejected_events_total", "events a component refused, by reason"),
    ("toll_component_errors_total", "failures a component recovered from or stopped on"),
    ("toll_component_processing_duration_seconds", "time a component spent on one batch"),
    ("toll_component_queue_depth", "batches waiting in a component's input"),
    ("toll_kafka_consumer_lag", "messages of a partition not yet consumed"),
    ("toll_websocket_connections", "open OBU WebSocket connections"),
    ("http_server_request_duration_seconds", "time to answer an HTTP request"),
    ("toll_reloads_total", "pipeline file reloads, by outcome"),
    ("toll_billed_distance_meters_total", "distance billed"),
    ("toll_billed_amount_total", "amount billed, in the currency of the label"),
];

/// The OpenTelemetry shape of one registry metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Instrument {
    /// Dotted name, without the unit and without `_total`.
    pub name: &'static str,
    /// UCUM unit, empty when the name carries none.
    pub unit: &'static str,
    pub description: &'static str,
}

/// The instrument a registry metric is exported as. Counters lose `_total`,
/// a unit suffix becomes the unit, and underscores become dots.
pub fn instrument(registry_name: &'static str) -> Instrument {
    let mut stem = registry_name.strip_suffix("_total").unwrap_or(registry_name);
    let mut unit = "";
    for (suffix, ucum) in UNIT_SUFFIXES {
        if let Some(rest) = stem.strip_suffix(suffix) {
            (stem, unit) = (rest, ucum);
            break;
        }
    }
    let description =
        DESCRIPTIONS.iter().find(|(n, _)| *n == registry_name).map_or("", |(_, d)| *d);
    Instrument { name: dotted(stem), unit, description }
}

/// What one count of a counter is worth in the unit of its name (1 for most).
pub fn scale(registry_name: &str) -> f64 {
    SCALES.iter().find(|(n, _)| *n == registry_name).map_or(1.0, |(_, s)| *s)
}

/// Label keys that OpenTelemetry's semantic conventions spell with dots; the
/// collector turns them back into these registry keys.
const SEMANTIC_KEYS: [(&str, &str); 3] = [
    ("http_route", "http.route"),
    ("http_request_method", "http.request.method"),
    ("http_response_status_code", "http.response.status_code"),
];

/// The attribute key a label is exported under.
pub fn attribute_key(label: &'static str) -> &'static str {
    SEMANTIC_KEYS.iter().find(|(k, _)| *k == label).map_or(label, |(_, dotted)| *dotted)
}

/// Instrument names are few and live for the whole process, so each dotted
/// form is made once and kept.
fn dotted(stem: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    names.entry(stem).or_insert_with(|| Box::leak(stem.replace('_', ".").into_boxed_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_lose_total_and_units_move_out_of_the_name() {
        let received = instrument("toll_component_received_events_total");
        assert_eq!((received.name, received.unit), ("toll.component.received.events", ""));
        let duration = instrument("http_server_request_duration_seconds");
        assert_eq!((duration.name, duration.unit), ("http.server.request.duration", "s"));
        let billed = instrument("toll_billed_distance_meters_total");
        assert_eq!((billed.name, billed.unit), ("toll.billed.distance", "m"));
        let lag = instrument("toll_kafka_consumer_lag");
        assert_eq!((lag.name, lag.unit), ("toll.kafka.consumer.lag", ""));
    }

    #[test]
    fn http_labels_take_their_semantic_convention_keys() {
        assert_eq!(attribute_key("http_response_status_code"), "http.response.status_code");
        assert_eq!(attribute_key("component"), "component");
    }
}
