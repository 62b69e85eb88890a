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
use std::sync::Arc;

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
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// A signal that never fires, for tests and tools.
    pub fn never() -> Shutdown {
        let (tx, rx) = Shutdown::new();
        // Leaking the sender keeps the channel open for the life of the process.
        std::mem::forget(tx);
        rx
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once shutdown is requested (or the runner is gone).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
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
    targets: Vec<mpsc::Sender<Batch>>,
    metrics: Option<ComponentMetrics>,
}

/// Every consumer of an output is gone.
#[derive(Debug, thiserror::Error)]
#[error("every consumer of this output has stopped")]
pub struct Closed;

impl Output {
    pub fn new(targets: Vec<mpsc::Sender<Batch>>, metrics: Option<ComponentMetrics>) -> Self {
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
        let Some((last, rest)) = self.targets.split_last() else {
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
/// runner builds every component before it runs any).
#[derive(Clone, Default)]
pub struct Resources(Arc<std::sync::RwLock<HashMap<String, Arc<dyn Any + Send + Sync>>>>);

impl Resources {
    pub fn publish<T: Any + Send + Sync>(&mut self, owner: &str, value: Arc<T>) {
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        table.insert(owner.to_owned(), value);
    }

    pub fn get<T: Any + Send + Sync>(&self, owner: &str) -> Option<Arc<T>> {
        let table = self.0.read().unwrap_or_else(|e| e.into_inner());
        table.get(owner).cloned().and_then(|v| v.downcast::<T>().ok())
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
