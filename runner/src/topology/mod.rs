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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use stages::component::{
    BuildContext, BuildError, Component, ComponentError, Context, Input, Kind, Output, Resources,
    Shutdown, WeakWiring, Wiring,
};
use stages::event::Batch;
use stages::telemetry::{ComponentState, Telemetry};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

use crate::graph::{Graph, Node};

mod reload;

pub use reload::Reload;

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
        let kind_name = kind.as_str();
        tracing::debug!(component = %name, kind = kind_name, instance = id, "component started");
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
