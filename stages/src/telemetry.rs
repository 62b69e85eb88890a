//! The one place components report what they do.
//!
//! Every component gets a [`ComponentMetrics`] from the shared [`Telemetry`]
//! and reports through it the core set (events received and sent, errors,
//! rejections by reason). Counters are plain atomics registered up front, so a
//! hot loop adds to a counter it already holds and never looks one up. The
//! registry renders itself in the Prometheus text format, and the health map
//! tells which components are running, finished or failed.
//!
//! - `histogram`: latency histograms with fixed buckets.
//! - `names`: how registry names become OpenTelemetry instruments.

mod histogram;
pub mod names;

pub use histogram::{Histogram, HistogramSnapshot, BOUNDS_S};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::otel::Tracer;

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (connections, queue depth).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a component is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentState {
    Starting,
    Running,
    Finished,
    Failed,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, Labels), Counter>,
    gauges: BTreeMap<(&'static str, Labels), Gauge>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
    health: BTreeMap<String, ComponentState>,
    last_reload: Option<ReloadRecord>,
}

/// What the latest reload of the pipeline file did, for `/health`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReloadRecord {
    /// Reloads attempted since start, this one included.
    pub attempt: u64,
    /// `applied`, `unchanged`, `rejected` (the file is broken; nothing
    /// changed) or `failed` (valid, but not every change could be made).
    pub outcome: &'static str,
    /// Wall-clock time the reload finished, in Unix milliseconds.
    pub at_ms: i64,
    /// From the change being noticed to the new pipeline running.
    pub took_ms: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// Kept running, with other inputs or consumers.
    pub rewired: Vec<String>,
    pub error: Option<String>,
}

/// Shared by every component of a running pipeline.
#[derive(Clone)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    tracer: Tracer,
    /// When counting began, the start of every cumulative series.
    started: SystemTime,
}

impl Default for Telemetry {
    fn default() -> Self {
        let registry: Arc<Mutex<Registry>> = Arc::default();
        let dropped = Counter::default();
        let key = ("toll_trace_spans_dropped_total", Labels::new());
        registry.lock().unwrap_or_else(|e| e.into_inner()).counters.insert(key, dropped.clone());
        Telemetry { registry, tracer: Tracer::new(dropped), started: SystemTime::now() }
    }
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where components record the spans of traced fixes.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    /// When counting began.
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Registers (or finds) a latency histogram. Call it when a component
    /// starts, or per request where the labels are only known then.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let key = (name, own(labels));
        self.lock().histograms.entry(key).or_default().clone()
    }

    /// Registers (or finds) a counter. Call it when a component starts, not per event.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        let key = (name, own(labels));
        self.lock().counters.entry(key).or_default().clone()
    }

    /// Registers (or finds) a gauge. Call it when a component starts, not per event.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        let key = (name, own(labels));
        self.lock().gauges.entry(key).or_default().clone()
    }

    /// The metrics handle of one component.
    pub fn component(&self, name: &str, kind: &str, type_name: &str) -> ComponentMetrics {
        let labels = [("component", name), ("component_kind", kind), ("component_type", type_name)];
        ComponentMetrics {
            telemetry: self.clone(),
            name: name.to_owned(),
            received: self.counter("toll_component_received_events_total", &labels),
            sent: self.counter("toll_component_sent_events_total", &labels),
            errors: self.counter("toll_component_errors_total", &labels),
            processing: self.histogram("toll_component_processing_duration_seconds", &labels),
            queue_depth: self.gauge("toll_component_queue_depth", &labels),
        }
    }

    pub fn set_state(&self, component: &str, state: ComponentState) {
        self.lock().health.insert(component.to_owned(), state);
    }

    pub fn states(&self) -> BTreeMap<String, ComponentState> {
        self.lock().health.clone()
    }

    /// Forgets a component removed from the pipeline (its counters stay).
    pub fn forget_state(&self, component: &str) {
        self.lock().health.remove(component);
    }

    /// Counts a reload by outcome and keeps it as the latest.
    pub fn record_reload(&self, record: ReloadRecord) {
        self.counter("toll_reloads_total", &[("outcome", record.outcome)]).add(1);
        self.lock().last_reload = Some(record);
    }

    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.lock().last_reload.clone()
    }

    /// The sum of a counter over every label set that includes `labels`.
    pub fn counter_sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let registry = self.lock();
        let matches = |have: &Labels| {
            labels.iter().all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        };
        registry
            .counters
            .iter()
            .filter(|((n, l), _)| *n == name && matches(l))
            .map(|(_, c)| c.get())
            .sum()
    }

    /// The core counts of every component, with its non-zero rejections.
    pub fn summary(&self) -> Vec<ComponentSummary> {
        let registry = self.lock();
        let mut by_component: BTreeMap<String, ComponentSummary> = BTreeMap::new();
        for ((name, labels), counter) in &registry.counters {
            let Some((_, component)) = labels.iter().find(|(k, _)| *k == "component") else {
                continue;
            };
            let entry = by_component.entry(component.clone()).or_insert_with(|| ComponentSummary {
                component: component.clone(),
                ..ComponentSummary::default()
            });
            let value = counter.get();
            match *name {
                "toll_component_received_events_total" => entry.received += value,
                "toll_component_sent_events_total" => entry.sent += value,
                "toll_component_errors_total" => entry.errors += value,
                "toll_component_rejected_events_total" if value > 0 => {
                    let reason = labels.iter().find(|(k, _)| *k == "reason");
                    entry
                        .rejected
                        .push((reason.map(|(_, r)| r.clone()).unwrap_or_default(), value));
                }
                _ => {}
            }
        }
        by_component.into_values().collect()
    }

    /// Every metric in the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let registry = self.lock();
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), counter) in &registry.counters {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let scale = names::scale(name);
            let labels = render_labels(labels);
            if scale == 1.0 {
                let _ = writeln!(out, "{name}{labels} {}", counter.get());
            } else {
                let _ = writeln!(out, "{name}{labels} {}", counter.get() as f64 * scale);
            }
        }
        for ((name, labels), gauge) in &registry.gauges {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} gauge");
                last = name;
            }
            let _ = writeln!(out, "{name}{} {}", render_labels(labels), gauge.get());
        }
        for ((name, labels), histogram) in &registry.histograms {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} histogram");
                last = name;
            }
            render_histogram(&mut out, name, labels, &histogram.snapshot());
        }
        out
    }

    /// Every metric's current value, for exporters.
    pub fn samples(&self) -> Vec<Sample> {
        let registry = self.lock();
        let counters = registry.counters.iter().map(|((name, labels), c)| Sample {
            name,
            labels: labels.clone(),
            value: Value::Counter(c.get() as f64 * names::scale(name)),
        });
        let gauges = registry.gauges.iter().map(|((name, labels), g)| Sample {
            name,
            labels: labels.clone(),
            value: Value::Gauge(g.get()),
        });
        let histograms = registry.histograms.iter().map(|((name, labels), h)| Sample {
            name,
            labels: labels.clone(),
            value: Value::Histogram(h.snapshot()),
        });
        counters.chain(gauges).chain(histograms).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain counters behind; they stay usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let body: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn render_histogram(out: &mut String, name: &str, labels: &Labels, h: &HistogramSnapshot) {
    let with_le = |le: &str| {
        let mut all = labels.clone();
        all.push(("le", le.to_owned()));
        render_labels(&all)
    };
    let mut cumulative = 0;
    for (bound, count) in BOUNDS_S.iter().zip(&h.buckets) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{} {cumulative}", with_le(&bound.to_string()));
    }
    let _ = writeln!(out, "{name}_bucket{} {}", with_le("+Inf"), h.count);
    let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels), h.sum_s);
    let _ = writeln!(out, "{name}_count{} {}", render_labels(labels), h.count);
}

/// One metric series and its value, as exporters read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The registry name, as rendered for Prometheus.
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// The value of a series: counters already scaled to the unit of their name.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Counter(f64),
    Gauge(i64),
    Histogram(HistogramSnapshot),
}

/// What one component did, for the summary logged when a pipeline stops.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ComponentSummary {
    pub component: String,
    pub received: u64,
    pub sent: u64,
    pub errors: u64,
    /// Reasons with a non-zero count.
    pub rejected: Vec<(String, u64)>,
}

/// The core set every component reports, plus a way to register its own.
#[derive(Clone)]
pub struct ComponentMetrics {
    telemetry: Telemetry,
    name: String,
    pub received: Counter,
    pub sent: Counter,
    pub errors: Counter,
    /// Time spent on one batch, from taking it to being ready for the next.
    pub processing: Histogram,
    /// Batches waiting in the component's input channel.
    pub queue_depth: Gauge,
}

impl ComponentMetrics {
    /// The counter of events this component rejected for `reason`.
    pub fn rejected(&self, reason: &str) -> Counter {
        self.telemetry.counter(
            "toll_component_rejected_events_total",
            &[("component", &self.name), ("reason", reason)],
        )
    }

    /// A counter of this component's own, labelled with its name.
    pub fn counter(&self, name: &'static str) -> Counter {
        self.telemetry.counter(name, &[("component", &self.name)])
    }

    /// A gauge of this component's own, labelled with its name.
    pub fn gauge(&self, name: &'static str) -> Gauge {
        self.telemetry.gauge(name, &[("component", &self.name)])
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The component's name, as its metrics are labelled.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_with_the_same_labels_are_shared() {
        let telemetry = Telemetry::new();
        let a = telemetry.component("distance", "stage", "distance");
        let b = telemetry.component("distance", "stage", "distance");
        a.received.add(3);
        b.received.add(4);
        a.rejected("duplicate").add(2);
        assert_eq!(telemetry.counter_sum("toll_component_received_events_total", &[]), 7);
        let text = telemetry.render_prometheus();
        assert!(text.contains(
            "toll_component_rejected_events_total{component=\"distance\",reason=\"duplicate\"} 2"
        ));
    }

    #[test]
    fn histograms_and_scaled_counters_render_as_prometheus_reads_them() {
        let telemetry = Telemetry::new();
        let metrics = telemetry.component("gateway", "sink", "gateway");
        metrics.processing.observe(std::time::Duration::from_millis(3));
        let labels = [("component", "aggregate")];
        telemetry.counter("toll_billed_distance_meters_total", &labels).add(1_250);

        let text = telemetry.render_prometheus();

        let series = "component=\"gateway\",component_kind=\"sink\",component_type=\"gateway\"";
        let name = "toll_component_processing_duration_seconds";
        assert!(text.contains(&format!("# TYPE {name} histogram")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{{series},le=\"0.0025\"}} 0")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{{series},le=\"0.005\"}} 1")), "{text}");
        assert!(text.contains(&format!("{name}_bucket{{{series},le=\"+Inf\"}} 1")), "{text}");
        assert!(text.contains(&format!("{name}_count{{{series}}} 1")), "{text}");
        let billed = "toll_billed_distance_meters_total{component=\"aggregate\"} 1.25";
        assert!(text.contains(billed), "counted in mm, shown in m: {text}");
    }
}
