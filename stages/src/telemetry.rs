//! The one place components report what they do.
//!
//! Every component gets a [`ComponentMetrics`] from the shared [`Telemetry`]
//! and reports through it the core set (events received and sent, errors,
//! rejections by reason). Counters are plain atomics registered up front, so a
//! hot loop adds to a counter it already holds and never looks one up. The
//! registry renders itself in the Prometheus text format, and the health map
//! tells which components are running, finished or failed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
#[derive(Clone, Default)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
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
            let _ = writeln!(out, "{name}{} {}", render_labels(labels), counter.get());
        }
        for ((name, labels), gauge) in &registry.gauges {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} gauge");
                last = name;
            }
            let _ = writeln!(out, "{name}{} {}", render_labels(labels), gauge.get());
        }
        out
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
}
