//! Applying a new graph to the running one: planning what changes, then
//! building, retiring, rewiring and replacing components in an order that
//! loses nothing (see the parent module for the rules).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use stages::component::Kind;
use stages::event::Batch;
use stages::telemetry::ReloadRecord;
use tokio::sync::mpsc;

use super::{
    build, channel_capacity, fingerprint, shape, Built, Part, Retiring, Running, StartError,
};
use crate::graph::{Graph, Node};

/// A new graph to run in place of the current one.
pub struct Reload {
    /// The new graph, or why the file that should hold it was refused (the
    /// reload is then only recorded: nothing changes).
    pub graph: Result<Graph, String>,
    /// Settings outside the graph that the caller has already applied
    /// (the trace sampling), reported with the reload.
    pub also_changed: Vec<String>,
    /// When the change was noticed; the reload's duration counts from here.
    pub noticed: Instant,
}

impl Running {
    /// Applies a new graph. An error means the pipeline is broken beyond what
    /// the old graph could run and must stop.
    ///
    /// Shortcoming: the run loop waits here while replaced components drain
    /// (up to the drain timeout each), so a SIGTERM or a component failure
    /// during a slow reload is acted on only once the reload is done.
    pub(super) async fn reload(
        &mut self,
        reload: Reload,
    ) -> Result<(), Box<dyn std::error::Error>> {
        self.reloads += 1;
        let Reload { graph, also_changed, noticed } = reload;
        let mut record = ReloadRecord { attempt: self.reloads, ..ReloadRecord::default() };
        let result = match graph {
            Err(error) => {
                record.outcome = "rejected";
                record.error = Some(error);
                Ok(())
            }
            Ok(graph) => {
                let plan = Plan::new(&self.graph, &graph, &self.parts);
                record.added = plan.added.clone();
                record.removed = plan.removed.clone();
                record.changed = plan.changed.iter().chain(&also_changed).cloned().collect();
                record.rewired = plan.rewired.clone();
                record.outcome = "applied";
                if plan.is_empty() && also_changed.is_empty() {
                    record.outcome = "unchanged";
                }
                let applied = if plan.is_empty() { Ok(()) } else { self.apply(graph, plan).await };
                match applied {
                    Ok(()) => Ok(()),
                    Err(Failure::NothingChanged(error)) => {
                        record.outcome = "failed";
                        record.error = Some(stages::error_chain(&error));
                        Ok(())
                    }
                    Err(Failure::Partly(error)) => {
                        record.outcome = "failed";
                        record.error = Some(error);
                        Ok(())
                    }
                    Err(Failure::Fatal(error)) => {
                        record.outcome = "failed";
                        record.error = Some(stages::error_chain(&*error));
                        Err(error)
                    }
                }
            }
        };
        self.release_finished_inputs();
        record.took_ms = noticed.elapsed().as_millis() as u64;
        record.at_ms = unix_now_ms();
        log_reload(&record);
        self.telemetry.record_reload(record);
        result
    }

    async fn apply(&mut self, graph: Graph, plan: Plan) -> Result<(), Failure> {
        // 1. Build what is added before anything changes: a component that
        //    cannot be built leaves the running pipeline as it was.
        //    Shortcoming: removed components still hold their sockets at this
        //    point, so renaming a server in one edit (remove `a`, add `b` on
        //    the same address) fails to bind and the reload changes nothing;
        //    it takes two edits. Likewise a changed WebSocket source keeps its
        //    listening socket for its successor but closes its connections
        //    (code 1001), so its OBUs reconnect.
        let mut added = Vec::new();
        for name in &plan.added {
            let node = graph.node(name).expect("planned from this graph");
            let channel = (!node.declaration.inputs.is_empty()).then(|| self.channel(node));
            match build(&self.telemetry, &mut self.resources, node) {
                Ok(component) => added.push((name.clone(), component, channel)),
                Err(error) => {
                    for (name, _, _) in &added {
                        self.resources.withdraw(name);
                    }
                    self.resources.withdraw(name);
                    let error = StartError { component: name.clone(), error };
                    return Err(Failure::NothingChanged(error));
                }
            }
        }

        // 2. New input channels for replaced components; producers switch to
        //    them below, so the old instances' inputs close.
        let mut fresh: HashMap<String, mpsc::Receiver<Batch>> = HashMap::new();
        for name in &plan.changed {
            let node = graph.node(name).expect("planned from this graph");
            let part = self.parts.get_mut(name).expect("changed parts are running");
            part.input = None;
            if !node.declaration.inputs.is_empty() {
                let (tx, rx) = mpsc::channel(channel_capacity(node, &self.options));
                part.input = Some(tx);
                fresh.insert(name.clone(), rx);
            }
        }

        // 3. Retire removed and changed instances.
        let removed: HashSet<&String> = plan.removed.iter().collect();
        let mut replaced = Vec::new();
        for name in plan.removed.iter().chain(&plan.changed) {
            let is_removed = removed.contains(name);
            let part = if is_removed {
                self.parts.remove(name).expect("removed parts were running")
            } else {
                let part = self.parts.get_mut(name).expect("changed parts are running");
                // The successor is of the same type: it takes the state over.
                let same_type = graph.node(name).map(|n| n.declaration.component_type.name)
                    == Some(part.type_name);
                if same_type {
                    part.instance.shutdown.handover().request();
                }
                replaced.push(name.clone());
                let _ = part.instance.stop.send(true);
                continue;
            };
            let _ = part.instance.stop.send(true);
            self.resources.withdraw(name);
            self.telemetry.forget_state(name);
            if part.exited {
                part.wiring.set(Vec::new());
                continue;
            }
            // A removed producer drains into the consumers it had; `rewire`
            // keeps those that remain, on their current channels.
            self.retiring.push(Retiring {
                name: name.clone(),
                instance: part.instance,
                feeds: Vec::new(),
                wiring: Some(part.wiring),
            });
        }

        // 4. Start the added components and point every output at the new graph.
        let old_graph = std::mem::replace(&mut self.graph, graph);
        for (name, component, channel) in added {
            let (tx, rx) = channel.unzip();
            let built = Built { name: name.clone(), component, input: rx };
            let (name, part) = self.launch(built, tx);
            self.parts.insert(name, part);
        }
        self.rewire_current();
        self.rewire_retiring(&old_graph);
        self.go();
        // Fingerprints need no update: unchanged parts' are equal by plan,
        // and added and replaced parts get theirs when launched.
        for node in &self.graph.nodes {
            if let Some(part) = self.parts.get_mut(&node.declaration.name) {
                part.shape = shape(&self.graph, node);
            }
        }

        // 5. Replace changed components, downstream first.
        let mut order: Vec<&Node> =
            self.graph.nodes.iter().filter(|n| replaced.contains(&n.declaration.name)).collect();
        order.reverse();
        let names: Vec<String> = order.iter().map(|n| n.declaration.name.clone()).collect();
        let mut partly = Vec::new();
        for name in names {
            if let Err(error) = self.replace(&name, fresh.remove(&name), &old_graph).await {
                match error {
                    Failure::Partly(message) => partly.push(message),
                    other => return Err(other),
                }
            }
        }
        if partly.is_empty() {
            Ok(())
        } else {
            Err(Failure::Partly(partly.join("; ")))
        }
    }

    /// Waits for the old instance of `name` to stop, then starts its successor
    /// with what it left.
    ///
    /// Shortcoming: the old instance is stopped before the successor is
    /// built, because both may need the same socket or file. A successor that
    /// cannot be built (its new port is taken) is replaced by a rebuild of
    /// the previous settings, so nothing is lost, but the component did
    /// restart: a WebSocket source's OBUs were disconnected and reconnect.
    async fn replace(
        &mut self,
        name: &str,
        input: Option<mpsc::Receiver<Batch>>,
        old_graph: &Graph,
    ) -> Result<(), Failure> {
        let part = self.parts.get_mut(name).expect("changed parts are running");
        let mut done = part.instance.done.clone();
        let waited = tokio::time::timeout(self.options.drain_timeout, done.wait_for(|d| *d)).await;
        let mut partly = None;
        if waited.is_err() {
            part.instance.abort.abort();
            let message = format!(
                "`{name}` did not finish its work within {} s and was abandoned; \
                 what it held is redelivered or lost, as at a crash",
                self.options.drain_timeout.as_secs()
            );
            tracing::error!(component = %name, "{message}");
            partly = Some(message);
        }
        if let Some(state) = part.instance.shutdown.handover().take() {
            self.resources.hand_over(name, state);
        }
        let node = self.graph.node(name).expect("planned from this graph");
        let mut running_settings = None;
        let component = match build(&self.telemetry, &mut self.resources, node) {
            Ok(component) => component,
            Err(error) => {
                // Back to the settings that ran before, with the state the
                // new build did not take.
                let error = stages::error_chain(&StartError { component: name.to_owned(), error });
                tracing::error!(component = %name, %error, "keeping the previous settings");
                let old = old_graph.node(name).expect("a changed component was in the old graph");
                let component = build(&self.telemetry, &mut self.resources, old).map_err(|e| {
                    Failure::Fatal(Box::new(StartError { component: name.to_owned(), error: e }))
                })?;
                // What runs is the old declaration: the next reload compares
                // against it, so saving the file again retries the change.
                running_settings = Some(fingerprint(old));
                partly = Some(error);
                component
            }
        };
        drop(self.resources.reclaim(name));
        let tx = self.parts.get(name).expect("changed parts are running").input.clone();
        let built = Built { name: name.to_owned(), component, input };
        let (name, mut part) = self.launch(built, tx);
        if let Some(fingerprint) = running_settings {
            part.fingerprint = fingerprint;
        }
        self.parts.insert(name, part);
        self.rewire_current();
        self.go();
        match partly {
            Some(message) => Err(Failure::Partly(message)),
            None => Ok(()),
        }
    }
}

/// Why a reload did not go through as planned.
enum Failure {
    /// Checked before anything changed: the old pipeline runs on.
    NothingChanged(StartError),
    /// The new graph runs, but not every change took effect as asked.
    Partly(String),
    /// A component is down and could not be brought back.
    Fatal(Box<dyn std::error::Error>),
}

/// What a reload changes, by component name.
#[derive(Debug, Default)]
struct Plan {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
    rewired: Vec<String>,
}

impl Plan {
    fn new(old: &Graph, new: &Graph, parts: &HashMap<String, Part>) -> Plan {
        let mut plan = Plan::default();
        for node in &old.nodes {
            if new.node(&node.declaration.name).is_none() {
                plan.removed.push(node.declaration.name.clone());
            }
        }
        for node in &new.nodes {
            let d = &node.declaration;
            let (Some(before), Some(part)) = (old.node(&d.name), parts.get(&d.name)) else {
                plan.added.push(d.name.clone());
                continue;
            };
            let inputs = |n: &Node| {
                let mut names: Vec<String> =
                    n.declaration.inputs.iter().map(|i| i.name.clone()).collect();
                names.sort();
                names
            };
            let consumers = |g: &Graph| {
                let mut names: Vec<String> =
                    g.consumers(&d.name).map(|c| c.declaration.name.clone()).collect();
                names.sort();
                names
            };
            let inputs_differ = inputs(before) != inputs(node);
            let queue_reshaped = d.kind == Kind::Queue && part.shape != shape(new, node);
            let rebind = inputs_differ && d.config.binds_inputs();
            // A component that already finished (its input ran out) cannot
            // take new inputs; it starts again.
            let revive = inputs_differ && part.exited;
            if revive
                || part.kind != d.kind
                || part.fingerprint != fingerprint(node)
                || queue_reshaped
                || rebind
            {
                plan.changed.push(d.name.clone());
            } else if inputs_differ || consumers(old) != consumers(new) {
                plan.rewired.push(d.name.clone());
            }
        }
        plan
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.rewired.is_empty()
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One line per reload, whatever its outcome.
fn log_reload(record: &ReloadRecord) {
    let list = |names: &[String]| if names.is_empty() { "-".to_owned() } else { names.join(",") };
    let (added, removed) = (list(&record.added), list(&record.removed));
    let (changed, rewired) = (list(&record.changed), list(&record.rewired));
    match &record.error {
        None => tracing::info!(
            outcome = record.outcome,
            took_ms = record.took_ms,
            %added, %removed, %changed, %rewired,
            "pipeline reloaded",
        ),
        Some(error) => tracing::error!(
            outcome = record.outcome,
            took_ms = record.took_ms,
            %added, %removed, %changed, %rewired, %error,
            "pipeline reload failed",
        ),
    }
}
