//! Turning a validated graph into running tasks, and stopping them in order.
//!
//! Every component with inputs gets one bounded channel that all its inputs
//! send into; a component's output holds a sender to each consumer. A full
//! channel makes the sender wait, so pressure travels back to the sources.
//! Stopping asks sources to stop; everything downstream then ends by itself
//! once its input is closed and drained, so nothing in flight is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use stages::component::{BuildContext, Component, Context, Input, Output, Resources, Shutdown};
use stages::event::Batch;
use stages::telemetry::{ComponentState, Telemetry};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::graph::Graph;

/// How the topology runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Batches each component's input channel holds before senders wait.
    pub channel_batches: usize,
    /// How long stopping may take before the remaining tasks are abandoned.
    pub drain_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { channel_batches: 16, drain_timeout: Duration::from_secs(30) }
    }
}

/// Components started and running.
pub struct Running {
    tasks: JoinSet<(String, Result<(), stages::component::ComponentError>)>,
    stop: watch::Sender<bool>,
    options: Options,
}

/// A component could not be built; nothing was started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start `{component}`")]
pub struct StartError {
    pub component: String,
    #[source]
    pub error: stages::component::BuildError,
}

/// Builds every component, then starts them all.
pub fn start(graph: Graph, telemetry: &Telemetry, options: Options) -> Result<Running, StartError> {
    let mut senders: HashMap<String, mpsc::Sender<Batch>> = HashMap::new();
    let mut receivers: HashMap<String, mpsc::Receiver<Batch>> = HashMap::new();
    for node in graph.nodes.iter().filter(|n| !n.declaration.inputs.is_empty()) {
        let capacity = node.declaration.config.input_capacity().unwrap_or(options.channel_batches);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        senders.insert(node.declaration.name.clone(), tx);
        receivers.insert(node.declaration.name.clone(), rx);
    }

    let mut resources = Resources::default();
    let mut built = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let d = &node.declaration;
        let mut cx = BuildContext {
            name: &d.name,
            inputs: d.inputs.iter().map(|i| i.name.clone()).collect(),
            telemetry,
            resources: &mut resources,
        };
        let component = d
            .config
            .build(&mut cx)
            .map_err(|error| StartError { component: d.name.clone(), error })?;
        let targets: Vec<_> =
            graph.consumers(&d.name).map(|c| senders[&c.declaration.name].clone()).collect();
        built.push((d.name.clone(), d.kind, d.component_type.name, component, targets));
    }
    // Only outputs hold senders now, so a channel closes when its producers end.
    drop(senders);

    let (stop, shutdown) = Shutdown::new();
    let mut tasks = JoinSet::new();
    for (name, kind, type_name, component, targets) in built {
        let metrics = telemetry.component(&name, kind.as_str(), type_name);
        let has_consumers = !targets.is_empty();
        let output = Output::new(targets, Some(metrics.clone()));
        let input = receivers.remove(&name).map(|rx| Input::new(rx, Some(metrics.clone())));
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
        tracing::debug!(component = %name, kind = kind.as_str(), "component started");
        telemetry.set_state(&name, ComponentState::Running);
        let telemetry = telemetry.clone();
        tasks.spawn(async move {
            let result = run.await;
            let state =
                if result.is_ok() { ComponentState::Finished } else { ComponentState::Failed };
            telemetry.set_state(&name, state);
            (name, result)
        });
    }
    Ok(Running { tasks, stop, options })
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

impl Running {
    /// Runs until every component has finished, a component fails, or `stop`
    /// completes; then drains and stops the rest.
    pub async fn run_until(mut self, stop: impl std::future::Future<Output = ()>) -> Outcome {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => {
                    tracing::info!("stopping pipeline");
                    let _ = self.stop.send(true);
                    return self.drain(false).await;
                }
                joined = self.tasks.join_next() => match joined {
                    None => return Outcome::Completed,
                    Some(joined) => {
                        if !finished(joined) {
                            tracing::error!("stopping pipeline after a component failed");
                            let _ = self.stop.send(true);
                            return self.drain(true).await;
                        }
                    }
                },
            }
        }
    }

    async fn drain(mut self, mut failed: bool) -> Outcome {
        let deadline = tokio::time::sleep(self.options.drain_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    None => return if failed { Outcome::Failed } else { Outcome::Stopped },
                    Some(joined) => failed |= !finished(joined),
                },
                _ = &mut deadline => {
                    tracing::error!(
                        remaining = self.tasks.len(),
                        timeout_s = self.options.drain_timeout.as_secs(),
                        "drain timed out; abandoning components still running",
                    );
                    self.tasks.abort_all();
                    return Outcome::Failed;
                }
            }
        }
    }
}

/// Logs how a component ended; false when it failed.
fn finished(
    joined: Result<(String, Result<(), stages::component::ComponentError>), tokio::task::JoinError>,
) -> bool {
    match joined {
        Ok((name, Ok(()))) => {
            tracing::info!(component = %name, "component finished");
            true
        }
        Ok((name, Err(error))) => {
            let chain = stages::error_chain(&error);
            tracing::error!(component = %name, error = %chain, "component failed");
            false
        }
        Err(error) => {
            tracing::error!(error = %error, "component panicked");
            false
        }
    }
}
