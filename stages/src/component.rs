//! What every component implements, and what the runner hands it.
//!
//! A component is declared in the pipeline file, parsed into a
//! [`ComponentConfig`] (no side effects, so a file can be validated without
//! starting anything), built into a [`Component`] of one of four kinds, and run
//! with its [`Input`], [`Output`] and [`Context`].

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use crate::event::{Batch, EventKind};
use crate::telemetry::{ComponentMetrics, Telemetry};

/// The four kinds of component, named as in the pipeline file's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Source,
    Queue,
    Stage,
    Sink,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Source, Kind::Queue, Kind::Stage, Kind::Sink];

    /// The name of the pipeline file's table for this kind.
    pub fn table(self) -> &'static str {
        match self {
            Kind::Source => "sources",
            Kind::Queue => "queues",
            Kind::Stage => "stages",
            Kind::Sink => "sinks",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Queue => "queue",
            Kind::Stage => "stage",
            Kind::Sink => "sink",
        }
    }
}

/// Which events a component takes and what it produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Kinds it accepts; empty for a source.
    pub accepts: Vec<EventKind>,
    pub output: Emits,
}

/// What a component emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emits {
    Nothing,
    Kind(EventKind),
    /// The kind it was fed (queues).
    SameAsInput,
}

impl Signature {
    pub fn source(output: EventKind) -> Self {
        Signature { accepts: Vec::new(), output: Emits::Kind(output) }
    }

    pub fn transform(input: EventKind, output: EventKind) -> Self {
        Signature { accepts: vec![input], output: Emits::Kind(output) }
    }

    pub fn pass_through() -> Self {
        Signature {
            accepts: vec![EventKind::Fix, EventKind::Segment, EventKind::Total],
            output: Emits::SameAsInput,
        }
    }

    pub fn sink(accepts: Vec<EventKind>) -> Self {
        Signature { accepts, output: Emits::Nothing }
    }
}

/// A parsed, validated component declaration.
pub trait ComponentConfig: fmt::Debug + Send + Sync + 'static {
    fn signature(&self) -> Signature;

    /// Creates the component: opens files and stores, binds sockets.
    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError>;

    /// Whether having no consumer in this file is expected: its events are
    /// taken by another process (a durable queue), or they only report work
    /// already done (an aggregate's totals, which are in its store).
    fn may_go_unconsumed(&self) -> bool {
        false
    }

    /// How many batches its input channel holds before senders wait; `None`
    /// leaves it to the runner.
    fn input_capacity(&self) -> Option<usize> {
        None
    }

    /// Files the component reads, besides the pipeline file.
    fn referenced_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Whether the build looks at what the inputs publish (a gateway finds
    /// its invoice book there), so that a reload which rewires the inputs
    /// must build the component anew rather than only reroute events.
    fn binds_inputs(&self) -> bool {
        false
    }
}

/// A built component, ready to run.
pub enum Component {
    Source(Box<dyn Source>),
    Queue(Box<dyn Queue>),
    Stage(Box<dyn Stage>),
    Sink(Box<dyn Sink>),
}

pub type RunResult = Result<(), ComponentError>;

/// Produces events from outside the pipeline until it is told to stop or runs dry.
pub trait Source: Send {
    fn run(self: Box<Self>, output: Output, cx: Context) -> BoxFuture<'static, RunResult>;
}

/// Carries events between components; either side may live in another process.
pub trait Queue: Send {
    fn run(
        self: Box<Self>,
        input: Option<Input>,
        output: Option<Output>,
        cx: Context,
    ) -> BoxFuture<'static, RunResult>;
}

/// Turns events into other events; ends when its input is closed and drained.
pub trait Stage: Send {
    fn run(
        self: Box<Self>,
        input: Input,
        output: Output,
        cx: Context,
    ) -> BoxFuture<'static, RunResult>;
}

/// Delivers events out of the pipeline.
pub trait Sink: Send {
    fn run(self: Box<Self>, input: Input, cx: Context) -> BoxFuture<'static, RunResult>;
}

/// Everything a running component gets besides its events.
#[derive(Clone)]
pub struct Context {
    pub name: Arc<str>,
    pub metrics: ComponentMetrics,
    pub shutdown: Shutdown,
}

/// Tells a component to stop taking new work. Components with inputs keep
/// draining them until they close; sources stop producing.
///
/// A reload that replaces a component with a new instance of the same type
/// asks the old one for a handover as well: instead of finishing its work
/// (deciding what it holds, closing its listener) it leaves that state with
/// [`Shutdown::leave`], and the runner gives it to the successor's build
/// ([`BuildContext::take_over`]).
#[derive(Clone, Debug)]
pub struct Shutdown {
    stop: watch::Receiver<bool>,
    handover: Handover,
}

impl Shutdown {
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown { stop: rx, handover: Handover::default() })
    }

    /// A signal that never fires, for tests and tools.
    pub fn never() -> Shutdown {
        let (tx, rx) = Shutdown::new();
        // Leaking the sender keeps the channel open for the life of the process.
        std::mem::forget(tx);
        rx
    }

    pub fn is_requested(&self) -> bool {
        *self.stop.borrow()
    }

    /// Completes once shutdown is requested (or the runner is gone).
    pub async fn requested(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }

    /// Whether a successor will take over what this component leaves.
    pub fn handover_wanted(&self) -> bool {
        self.handover.0.wanted.load(Ordering::Acquire)
    }

    /// Leaves state for the successor; ignored unless a handover is wanted.
    pub fn leave<T: Any + Send>(&self, state: T) {
        if self.handover_wanted() {
            let mut slot = self.handover.0.state.lock().unwrap_or_else(|e| e.into_inner());
            *slot = Some(Box::new(state));
        }
    }

    /// The runner's side of the handover.
    pub fn handover(&self) -> Handover {
        self.handover.clone()
    }
}

/// What a component leaves for its successor, and whether one is wanted.
#[derive(Clone, Debug, Default)]
pub struct Handover(Arc<HandoverSlot>);

#[derive(Default)]
struct HandoverSlot {
    wanted: AtomicBool,
    state: std::sync::Mutex<Option<Carried>>,
}

impl fmt::Debug for HandoverSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandoverSlot").field("wanted", &self.wanted).finish_non_exhaustive()
    }
}

/// State passed from a replaced component to its successor.
pub type Carried = Box<dyn Any + Send>;

/// A listening socket a replaced server leaves its successor, so that no
/// client is refused while one instance gives way to the next: connections
/// that arrive meanwhile wait in the socket's backlog.
#[derive(Debug)]
pub struct KeptListener {
    /// The address as configured (port 0 included), which the successor's
    /// configuration must still ask for.
    pub asked: std::net::SocketAddr,
    pub listener: std::net::TcpListener,
}

impl KeptListener {
    /// A second handle on `listener`, to leave once serving on the first ends.
    pub fn keep(asked: std::net::SocketAddr, listener: &std::net::TcpListener) -> Option<Self> {
        match listener.try_clone() {
            Ok(listener) => Some(KeptListener { asked, listener }),
            Err(error) => {
                tracing::warn!(%error, "cannot keep the listener for a successor");
                None
            }
        }
    }
}

impl Handover {
    /// Asks the component to leave its state instead of finishing its work.
    pub fn request(&self) {
        self.0.wanted.store(true, Ordering::Release);
    }

    /// What the component left, once it has stopped.
    pub fn take(&self) -> Option<Carried> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The events a component receives, merged from all its inputs.
pub struct Input {
    rx: mpsc::Receiver<Batch>,
    metrics: Option<ComponentMetrics>,
    /// When the batch in hand was taken: asking for the next one ends its
    /// processing time.
    taken: Option<std::time::Instant>,
}

impl Input {
    pub fn new(rx: mpsc::Receiver<Batch>, metrics: Option<ComponentMetrics>) -> Self {
        Input { rx, metrics, taken: None }
    }

    /// The next batch, or `None` once every input is closed and drained.
    pub async fn recv(&mut self) -> Option<Batch> {
        self.processed();
        let batch = self.rx.recv().await?;
        self.count(&batch);
        Some(batch)
    }

    /// A batch that is already waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Batch> {
        let batch = self.rx.try_recv().ok()?;
        self.count(&batch);
        Some(batch)
    }

    /// Batches waiting in the channel.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    fn count(&mut self, batch: &Batch) {
        if let Some(metrics) = &self.metrics {
            metrics.received.add(batch.len() as u64);
            metrics.queue_depth.set(self.rx.len() as i64);
            // A batch taken without waiting joins the one in hand.
            self.taken.get_or_insert_with(std::time::Instant::now);
        }
    }

    /// Records how long the batch in hand took.
    fn processed(&mut self) {
        if let (Some(metrics), Some(taken)) = (&self.metrics, self.taken.take()) {
            metrics.processing.observe(taken.elapsed());
        }
    }
}

/// A component that stops before its input is drained (it failed, or was
/// aborted) did not handle what is still queued for it: those batches are
/// failed, so their sources do not advance past them.
impl Drop for Input {
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(batch) = self.rx.try_recv() {
            batch.acks.fail();
        }
    }
}

/// Sends a component's batches to every component that takes it as input.
#[derive(Clone)]
pub struct Output {
    targets: Wiring,
    metrics: Option<ComponentMetrics>,
}

/// The consumers an output sends to. The runner keeps a [`WeakWiring`] to
/// each component's and replaces the list when a reload rewires the graph; a
/// send in progress finishes with the list it started with. Once the
/// component has dropped its output the list goes with it, so that its
/// consumers' channels close.
#[derive(Clone, Default)]
pub struct Wiring(Arc<ArcSwap<Vec<mpsc::Sender<Batch>>>>);

/// The runner's handle on a component's [`Wiring`], which does not keep it alive.
#[derive(Clone, Default)]
pub struct WeakWiring(std::sync::Weak<ArcSwap<Vec<mpsc::Sender<Batch>>>>);

impl WeakWiring {
    /// Sends from now on go to `targets`, if the output still exists.
    pub fn set(&self, targets: Vec<mpsc::Sender<Batch>>) {
        if let Some(wiring) = self.0.upgrade() {
            wiring.store(Arc::new(targets));
        }
    }
}

impl Wiring {
    pub fn downgrade(&self) -> WeakWiring {
        WeakWiring(Arc::downgrade(&self.0))
    }

    pub fn new(targets: Vec<mpsc::Sender<Batch>>) -> Self {
        Wiring(Arc::new(ArcSwap::from_pointee(targets)))
    }

    /// Sends from now on go to `targets`.
    pub fn set(&self, targets: Vec<mpsc::Sender<Batch>>) {
        self.0.store(Arc::new(targets));
    }

    pub fn len(&self) -> usize {
        self.0.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every consumer of an output is gone.
#[derive(Debug, thiserror::Error)]
#[error("every consumer of this output has stopped")]
pub struct Closed;

impl Output {
    pub fn new(targets: Vec<mpsc::Sender<Batch>>, metrics: Option<ComponentMetrics>) -> Self {
        Output { targets: Wiring::new(targets), metrics }
    }

    /// An output whose consumers the runner may change while it runs.
    pub fn wired(targets: Wiring, metrics: Option<ComponentMetrics>) -> Self {
        Output { targets, metrics }
    }

    /// Sends a batch to every consumer, waiting while a consumer's channel is
    /// full (backpressure). Empty batches are dropped here, which releases
    /// their acknowledgements.
    pub async fn send(&self, batch: Batch) -> Result<(), Closed> {
        if batch.is_empty() && batch.acks.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        let targets = self.targets.0.load_full();
        let Some((last, rest)) = targets.split_last() else {
            return Ok(());
        };
        let mut delivered = false;
        for target in rest {
            let copy = Batch::new(batch.events.clone(), batch.acks.clone());
            delivered |= target.send(copy).await.is_ok();
        }
        delivered |= last.send(batch).await.is_ok();
        if !delivered {
            return Err(Closed);
        }
        if let Some(metrics) = &self.metrics {
            metrics.sent.add(n);
        }
        Ok(())
    }

    pub fn has_consumers(&self) -> bool {
        !self.targets.is_empty()
    }
}

/// Facts and shared objects available while components are built.
pub struct BuildContext<'a> {
    pub name: &'a str,
    /// The names of the components this one takes as input.
    pub inputs: Vec<String>,
    pub telemetry: &'a Telemetry,
    pub resources: &'a mut Resources,
}

/// Objects that one component publishes for others, keyed by the publisher's
/// name: for example the invoice book an aggregate offers the gateway that
/// takes it as input.
///
/// Clones share one table: a component may keep a clone from its build and
/// look up, once it runs, what components built after it published (the
/// runner builds every component before it runs any). The table outlives
/// reloads, and it also carries the state a replaced component left for its
/// successor.
#[derive(Clone, Default)]
pub struct Resources(Arc<Shelves>);

#[derive(Default)]
struct Shelves {
    published: std::sync::RwLock<HashMap<String, Arc<dyn Any + Send + Sync>>>,
    handed: std::sync::Mutex<HashMap<String, Carried>>,
}

impl Resources {
    pub fn publish<T: Any + Send + Sync>(&mut self, owner: &str, value: Arc<T>) {
        let mut table = self.0.published.write().unwrap_or_else(|e| e.into_inner());
        table.insert(owner.to_owned(), value);
    }

    pub fn get<T: Any + Send + Sync>(&self, owner: &str) -> Option<Arc<T>> {
        let table = self.0.published.read().unwrap_or_else(|e| e.into_inner());
        table.get(owner).cloned().and_then(|v| v.downcast::<T>().ok())
    }

    /// Withdraws what `owner` published (it was removed from the pipeline).
    pub fn withdraw(&self, owner: &str) {
        let mut table = self.0.published.write().unwrap_or_else(|e| e.into_inner());
        table.remove(owner);
    }

    /// Keeps what a replaced component left until its successor is built.
    pub fn hand_over(&self, name: &str, state: Carried) {
        let mut handed = self.0.handed.lock().unwrap_or_else(|e| e.into_inner());
        handed.insert(name.to_owned(), state);
    }

    /// Takes back a handover its successor did not take (its build failed).
    pub fn reclaim(&self, name: &str) -> Option<Carried> {
        self.0.handed.lock().unwrap_or_else(|e| e.into_inner()).remove(name)
    }
}

impl BuildContext<'_> {
    /// What the instance this one replaces left, if it was of type `T`.
    /// Take it only once nothing else in the build can fail: a failed build
    /// hands the state back to the runner only while it is still here.
    pub fn take_over<T: Any>(&mut self) -> Option<T> {
        let carried = self.resources.reclaim(self.name)?;
        match carried.downcast::<T>() {
            Ok(state) => Some(*state),
            Err(_) => {
                tracing::debug!(component = self.name, "predecessor left state of another type");
                None
            }
        }
    }
}

/// A component could not be created.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BuildError {
    pub fn new(message: impl Into<String>) -> Self {
        BuildError { message: message.into(), source: None }
    }

    pub fn with(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        BuildError { message: message.into(), source: Some(Box::new(source)) }
    }
}

/// A running component stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ComponentError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ComponentError {
    pub fn new(message: impl Into<String>) -> Self {
        ComponentError { message: message.into(), source: None }
    }

    pub fn with(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ComponentError { message: message.into(), source: Some(Box::new(source)) }
    }
}
