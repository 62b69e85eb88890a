//! Turning a validated graph into running tasks, changing it while it runs,
//! and stopping it in order.
//!
//! Every component with inputs gets one bounded channel that all its inputs
//! send into; a component's output holds a [`Wiring`], the list of its
//! consumers' channels, which a reload may replace. A full channel makes the
//! sender wait, so pressure travels back to the sources. Stopping asks sources
//! to stop; everything downstream then ends by itself once its input is
//! closed and drained, so nothing in flight is dropped.
//!
//! A reload ([`Running::run_until`] takes new graphs) compares the new graph
//! with the running one, component by component:
//! - unchanged components keep running; if their inputs or consumers differ,
//!   only the wiring lists change;
//! - added components are built first: if one cannot be built, nothing
//!   changes;
//! - removed components are told to stop and drain into the consumers they
//!   had;
//! - changed components get a new input channel that their producers switch
//!   to at once, so nothing waits on the old instance; the old instance
//!   drains what reached it, leaves its state ([`Shutdown::leave`]), and the
//!   successor is built with that state and starts on the new channel.
//!   Successors are started downstream first, so an old instance always has a
//!   running consumer to drain into.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stages::component::{
    BuildContext, BuildError, Component, ComponentError, Context, Input, Kind, Output, Resources,
    Shutdown, WeakWiring, Wiring,
};
use stages::event::Batch;
use stages::telemetry::{ComponentState, ReloadRecord, Telemetry};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::graph::{Graph, Node};

/// How the topology runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Batches each component's input channel holds before senders wait.
    pub channel_batches: usize,
    /// How long stopping may take before the remaining tasks are abandoned;
    /// also how long a reload waits for a replaced component to drain.
    pub drain_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { channel_batches: 16, drain_timeout: Duration::from_secs(30) }
    }
}

/// A component could not be built; nothing was started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start `{component}`")]
pub struct StartError {
    pub component: String,
    #[source]
    pub error: BuildError,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every component finished on its own (for example a replay ran out).
    Completed,
    /// Stopped on request, after draining.
    Stopped,
    /// A component failed, or draining took too long.
    Failed,
}

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
    /// Told what became of the reload, if someone waits for it.
    pub done: Option<oneshot::Sender<ReloadRecord>>,
}

/// One running instance of a component.
struct Instance {
    id: u64,
    stop: watch::Sender<bool>,
    shutdown: Shutdown,
    done: watch::Receiver<bool>,
    abort: AbortHandle,
}

/// A component of the current graph.
struct Part {
    kind: Kind,
    type_name: &'static str,
    fingerprint: u64,
    /// Whether it has inputs and whether anything consumes it: a queue runs
    /// differently without either, so a change of these rebuilds it.
    shape: (bool, bool),
    /// The sending side of its input channel, handed to producers on rewiring.
    input: Option<mpsc::Sender<Batch>>,
    /// Its output's consumers.
    wiring: WeakWiring,
    instance: Instance,
    exited: bool,
}

/// An instance on its way out (removed or replaced).
struct Retiring {
    name: String,
    instance: Instance,
    /// The components it still sends to.
    feeds: Vec<String>,
    /// Its output's consumers, while it has an output.
    wiring: Option<WeakWiring>,
}

struct Exit {
    name: String,
    instance: u64,
    ok: bool,
}

/// Components started and running.
pub struct Running {
    graph: Graph,
    parts: HashMap<String, Part>,
    retiring: Vec<Retiring>,
    exits: mpsc::UnboundedReceiver<Exit>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    telemetry: Telemetry,
    resources: Resources,
    options: Options,
    next_instance: u64,
    reloads: u64,
    /// Launched components waiting for their outputs to be wired.
    waiting: Vec<oneshot::Sender<()>>,
}

/// A built component waiting to be started.
struct Built {
    name: String,
    component: Component,
    input: Option<mpsc::Receiver<Batch>>,
}

/// Builds every component, then starts them all.
pub fn start(graph: Graph, telemetry: &Telemetry, options: Options) -> Result<Running, StartError> {
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let mut running = Running {
        graph: Graph { nodes: Vec::new(), warnings: Vec::new() },
        parts: HashMap::new(),
        retiring: Vec::new(),
        exits,
        exits_tx,
        telemetry: telemetry.clone(),
        resources: Resources::default(),
        options,
        next_instance: 0,
        reloads: 0,
        waiting: Vec::new(),
    };
    let mut channels = HashMap::new();
    for node in graph.nodes.iter().filter(|n| !n.declaration.inputs.is_empty()) {
        channels.insert(node.declaration.name.clone(), running.channel(node));
    }
    let mut built = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let d = &node.declaration;
        let component = build(&running.telemetry, &mut running.resources, node)
            .map_err(|error| StartError { component: d.name.clone(), error })?;
        let (tx, rx) = channels.remove(&d.name).unzip();
        built.push((Built { name: d.name.clone(), component, input: rx }, tx));
    }
    running.graph = graph;
    let mut parts = Vec::new();
    for (built, tx) in built {
        let part = running.launch(built, tx);
        parts.push(part);
    }
    for part in parts {
        running.parts.insert(part.0, part.1);
    }
    running.rewire_current();
    running.release_finished_inputs();
    running.go();
    Ok(running)
}

impl Running {
    /// Runs until every component has finished, a component fails, or `stop`
    /// completes; then drains and stops the rest. Meanwhile it applies the
    /// graphs that arrive on `reloads`.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        mut reloads: mpsc::Receiver<Reload>,
    ) -> Outcome {
        tokio::pin!(stop);
        let mut reloading = true;
        loop {
            if self.all_exited() {
                return Outcome::Completed;
            }
            tokio::select! {
                _ = &mut stop => {
                    tracing::info!("stopping pipeline");
                    return self.drain(false).await;
                }
                reload = reloads.recv(), if reloading => match reload {
                    Some(reload) => {
                        if let Err(fatal) = self.reload(reload).await {
                            let error = stages::error_chain(&*fatal);
                            tracing::error!(%error, "stopping pipeline after a failed reload");
                            return self.drain(true).await;
                        }
                    }
                    None => reloading = false,
                },
                Some(exit) = self.exits.recv() => {
                    if !self.exited(exit) {
                        tracing::error!("stopping pipeline after a component failed");
                        return self.drain(true).await;
                    }
                    self.release_finished_inputs();
                }
            }
        }
    }

    /// Records an exit; false when a current component failed.
    fn exited(&mut self, exit: Exit) -> bool {
        if let Some(i) =
            self.retiring.iter().position(|r| r.name == exit.name && r.instance.id == exit.instance)
        {
            let retired = self.retiring.swap_remove(i);
            if let Some(wiring) = retired.wiring {
                wiring.set(Vec::new());
            }
            if !self.parts.contains_key(&retired.name) {
                self.telemetry.forget_state(&retired.name);
            }
            return true;
        }
        if let Some(part) = self.parts.get_mut(&exit.name) {
            if part.instance.id == exit.instance {
                part.exited = true;
                // Its consumers' channels close once nothing else feeds them.
                part.wiring.set(Vec::new());
                return exit.ok;
            }
        }
        true
    }

    fn all_exited(&self) -> bool {
        self.retiring.is_empty() && self.parts.values().all(|p| p.exited)
    }

    async fn drain(mut self, mut failed: bool) -> Outcome {
        for part in self.parts.values_mut() {
            let _ = part.instance.stop.send(true);
            // Producers hold the only senders now; channels close behind them.
            part.input = None;
        }
        for retiring in &self.retiring {
            let _ = retiring.instance.stop.send(true);
        }
        let deadline = tokio::time::sleep(self.options.drain_timeout);
        tokio::pin!(deadline);
        loop {
            if self.all_exited() {
                return if failed { Outcome::Failed } else { Outcome::Stopped };
            }
            tokio::select! {
                Some(exit) = self.exits.recv() => failed |= !self.exited(exit),
                _ = &mut deadline => {
                    let remaining: Vec<&str> = self
                        .parts
                        .iter()
                        .filter(|(_, p)| !p.exited)
                        .map(|(n, _)| n.as_str())
                        .chain(self.retiring.iter().map(|r| r.name.as_str()))
                        .collect();
                    tracing::error!(
                        remaining = %remaining.join(", "),
                        timeout_s = self.options.drain_timeout.as_secs(),
                        "drain timed out; abandoning components still running",
                    );
                    for part in self.parts.values() {
                        part.instance.abort.abort();
                    }
                    for retiring in &self.retiring {
                        retiring.instance.abort.abort();
                    }
                    return Outcome::Failed;
                }
            }
        }
    }

    /// Applies a new graph. An error means the pipeline is broken beyond what
    /// the old graph could run and must stop.
    ///
    /// Shortcoming: the run loop waits here while replaced components drain
    /// (up to the drain timeout each), so a SIGTERM or a component failure
    /// during a slow reload is acted on only once the reload is done.
    async fn reload(&mut self, reload: Reload) -> Result<(), Box<dyn std::error::Error>> {
        self.reloads += 1;
        let Reload { graph, also_changed, noticed, done } = reload;
        let graph = match graph {
            Ok(graph) => graph,
            Err(error) => {
                let record = ReloadRecord {
                    attempt: self.reloads,
                    outcome: "rejected",
                    at_ms: chrono_now_ms(),
                    took_ms: noticed.elapsed().as_millis() as u64,
                    error: Some(error),
                    ..ReloadRecord::default()
                };
                log_reload(&record);
                self.telemetry.record_reload(record.clone());
                if let Some(done) = done {
                    let _ = done.send(record);
                }
                return Ok(());
            }
        };
        let plan = Plan::new(&self.graph, &graph, &self.parts);
        let mut record = ReloadRecord {
            attempt: self.reloads,
            added: plan.added.clone(),
            removed: plan.removed.clone(),
            changed: plan.changed.iter().chain(&also_changed).cloned().collect(),
            rewired: plan.rewired.clone(),
            ..ReloadRecord::default()
        };
        let result = if plan.is_empty() {
            record.outcome = if also_changed.is_empty() { "unchanged" } else { "applied" };
            Ok(())
        } else {
            match self.apply(graph, plan).await {
                Ok(()) => {
                    record.outcome = "applied";
                    Ok(())
                }
                Err(Failure::NothingChanged(error)) => {
                    record.outcome = "failed";
                    record.error = Some(stages::error_chain(&error));
                    Ok(())
                }
                Err(Failure::Partly(error)) => {
                    record.outcome = "failed";
                    record.error = Some(error.clone());
                    Ok(())
                }
                Err(Failure::Fatal(error)) => {
                    record.outcome = "failed";
                    record.error = Some(stages::error_chain(&*error));
                    Err(error)
                }
            }
        };
        self.release_finished_inputs();
        record.took_ms = noticed.elapsed().as_millis() as u64;
        record.at_ms = chrono_now_ms();
        log_reload(&record);
        self.telemetry.record_reload(record.clone());
        if let Some(done) = done {
            let _ = done.send(record);
        }
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
        for node in &self.graph.nodes {
            if let Some(part) = self.parts.get_mut(&node.declaration.name) {
                part.fingerprint = fingerprint(node);
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

    fn channel(&self, node: &Node) -> (mpsc::Sender<Batch>, mpsc::Receiver<Batch>) {
        mpsc::channel(channel_capacity(node, &self.options))
    }

    /// Starts a built component; `input_tx` is its channel's sending side.
    /// It starts sending once [`Running::rewire_current`] has given it consumers.
    fn launch(&mut self, built: Built, input_tx: Option<mpsc::Sender<Batch>>) -> (String, Part) {
        let wiring = Wiring::default();
        let Built { name, component, input } = built;
        let node = self.graph.node(&name).expect("launched from the current graph");
        let d = &node.declaration;
        let (kind, type_name) = (d.kind, d.component_type.name);
        let (fingerprint, (shape_inputs, has_consumers)) =
            (fingerprint(node), shape(&self.graph, node));
        let metrics = self.telemetry.component(&name, kind.as_str(), type_name);
        self.telemetry
            .counter("toll_component_starts_total", &[("component", name.as_str())])
            .add(1);
        let (stop, shutdown) = Shutdown::new();
        let output = Output::wired(wiring.clone(), Some(metrics.clone()));
        let input = input.map(|rx| Input::new(rx, Some(metrics.clone())));
        let cx = Context { name: Arc::from(name.as_str()), metrics, shutdown: shutdown.clone() };
        let run = match (component, input) {
            (Component::Source(source), _) => source.run(output, cx),
            (Component::Queue(queue), input) => {
                queue.run(input, has_consumers.then_some(output), cx)
            }
            (Component::Stage(stage), Some(input)) => stage.run(input, output, cx),
            (Component::Sink(sink), Some(input)) => sink.run(input, cx),
            (Component::Stage(_) | Component::Sink(_), None) => {
                unreachable!("the graph gives every stage and sink inputs")
            }
        };
        self.next_instance += 1;
        let id = self.next_instance;
        tracing::debug!(component = %name, kind = kind.as_str(), instance = id, "component started");
        self.telemetry.set_state(&name, ComponentState::Running);
        let (done_tx, done) = watch::channel(false);
        // It starts once the outputs are wired ([`Running::go`]); a source
        // that ran earlier would send into an empty list and lose its events.
        let (go_tx, go) = oneshot::channel::<()>();
        self.waiting.push(go_tx);
        let task = tokio::spawn(async move {
            let _ = go.await;
            run.await
        });
        let abort = task.abort_handle();
        let (telemetry, exits, task_name) =
            (self.telemetry.clone(), self.exits_tx.clone(), name.clone());
        tokio::spawn(async move {
            let ok = finished(&task_name, task.await);
            let state = if ok { ComponentState::Finished } else { ComponentState::Failed };
            telemetry.set_state(&task_name, state);
            let _ = done_tx.send(true);
            let _ = exits.send(Exit { name: task_name, instance: id, ok });
        });
        let part = Part {
            kind,
            type_name,
            fingerprint,
            shape: (shape_inputs, has_consumers),
            input: input_tx,
            wiring: wiring.downgrade(),
            instance: Instance { id, stop, shutdown, done, abort },
            exited: false,
        };
        (name, part)
    }

    /// Lets every launched component start.
    fn go(&mut self) {
        for go in self.waiting.drain(..) {
            let _ = go.send(());
        }
    }

    /// Points every current component's output at its consumers' channels.
    fn rewire_current(&self) {
        for node in &self.graph.nodes {
            let name = &node.declaration.name;
            let Some(part) = self.parts.get(name) else { continue };
            if part.exited {
                continue;
            }
            let targets = self
                .graph
                .consumers(name)
                .filter_map(|c| self.parts.get(&c.declaration.name)?.input.clone())
                .collect();
            part.wiring.set(targets);
        }
    }

    /// Points each removed producer at the consumers it had that remain.
    fn rewire_retiring(&mut self, old_graph: &Graph) {
        for retiring in &mut self.retiring {
            let Some(wiring) = &retiring.wiring else { continue };
            let feeds: Vec<String> = old_graph
                .consumers(&retiring.name)
                .map(|c| c.declaration.name.clone())
                .filter(|c| self.parts.get(c).is_some_and(|p| p.input.is_some()))
                .collect();
            let targets = feeds.iter().filter_map(|c| self.parts.get(c)?.input.clone()).collect();
            wiring.set(targets);
            retiring.feeds = feeds;
        }
    }

    /// Lets go of the input channels that nothing running can feed any more,
    /// so that their components see the end of their input and finish (a
    /// replay ran out, and everything downstream of it drains).
    fn release_finished_inputs(&mut self) {
        let mut orphaned = Vec::new();
        for node in &self.graph.nodes {
            let name = &node.declaration.name;
            if self.parts.get(name).is_none_or(|p| p.input.is_none()) {
                continue;
            }
            let fed = node
                .declaration
                .inputs
                .iter()
                .any(|i| self.parts.get(&i.name).is_some_and(|p| !p.exited))
                || self.retiring.iter().any(|r| r.feeds.contains(name));
            if !fed {
                orphaned.push(name.clone());
            }
        }
        for name in orphaned {
            if let Some(part) = self.parts.get_mut(&name) {
                part.input = None;
            }
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

/// Whether a node has inputs, and whether anything consumes it.
fn shape(graph: &Graph, node: &Node) -> (bool, bool) {
    let name = &node.declaration.name;
    (!node.declaration.inputs.is_empty(), graph.consumers(name).next().is_some())
}

/// The component's settings and the contents of the files it reads: equal
/// fingerprints mean a reload leaves it running.
fn fingerprint(node: &Node) -> u64 {
    let d = &node.declaration;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    d.kind.hash(&mut hasher);
    d.settings.to_string().hash(&mut hasher);
    for file in d.config.referenced_files() {
        file.hash(&mut hasher);
        // A file that cannot be read now counts as changed; the build reports why.
        match std::fs::read(&file) {
            Ok(bytes) => bytes.hash(&mut hasher),
            Err(error) => error.kind().to_string().hash(&mut hasher),
        }
    }
    hasher.finish()
}

fn build(
    telemetry: &Telemetry,
    resources: &mut Resources,
    node: &Node,
) -> Result<Component, BuildError> {
    let d = &node.declaration;
    let mut cx = BuildContext {
        name: &d.name,
        inputs: d.inputs.iter().map(|i| i.name.clone()).collect(),
        telemetry,
        resources,
    };
    d.config.build(&mut cx)
}

fn channel_capacity(node: &Node, options: &Options) -> usize {
    node.declaration.config.input_capacity().unwrap_or(options.channel_batches).max(1)
}

fn chrono_now_ms() -> i64 {
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

/// Logs how a component ended; false when it failed.
fn finished(
    name: &str,
    joined: Result<Result<(), ComponentError>, tokio::task::JoinError>,
) -> bool {
    match joined {
        Ok(Ok(())) => {
            tracing::info!(component = %name, "component finished");
            true
        }
        Ok(Err(error)) => {
            let chain = stages::error_chain(&error);
            tracing::error!(component = %name, error = %chain, "component failed");
            false
        }
        Err(error) if error.is_cancelled() => {
            tracing::warn!(component = %name, "component abandoned");
            false
        }
        Err(error) => {
            tracing::error!(component = %name, error = %error, "component panicked");
            false
        }
    }
}
