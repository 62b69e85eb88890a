//! The embedded queue: a bounded in-process buffer between components.
//!
//! Its inputs send into a bounded channel; when it is full they wait, so a
//! slow consumer slows the sources instead of losing events. Small batches
//! that are already waiting (one per WebSocket frame, say) are merged into
//! larger ones, so the stages behind the queue pay their per-batch costs once
//! for many events.

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Input, Kind, Output, Queue,
    RunResult, Signature,
};
use crate::event::Batch;
use crate::registry::{self, ComponentType, FieldError, Validate};

pub const TYPE: ComponentType = ComponentType {
    name: "memory",
    kind: Kind::Queue,
    about: "bounded in-process queue with backpressure (no external service)",
    parse: registry::parse::<MemoryQueueConfig>,
};

/// `[queues.NAME] type = "memory"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryQueueConfig {
    /// Batches the queue holds before its inputs wait.
    #[serde(default = "default_capacity_batches")]
    pub capacity_batches: usize,
    /// Largest batch the queue hands on after merging waiting batches.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
}

fn default_capacity_batches() -> usize {
    64
}

fn default_max_batch_events() -> usize {
    4096
}

impl Validate for MemoryQueueConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.capacity_batches == 0 {
            return Err(FieldError::at("capacity_batches", "must be at least 1"));
        }
        if self.max_batch_events == 0 {
            return Err(FieldError::at("max_batch_events", "must be at least 1"));
        }
        Ok(())
    }
}

impl ComponentConfig for MemoryQueueConfig {
    fn signature(&self) -> Signature {
        Signature::pass_through()
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        if cx.inputs.is_empty() {
            return Err(BuildError::new(format!(
                "memory queue `{}` has no inputs; only a queue shared between processes \
                 (kafka) can be fed from elsewhere",
                cx.name
            )));
        }
        Ok(Component::Queue(Box::new(MemoryQueue { max_batch_events: self.max_batch_events })))
    }

    fn input_capacity(&self) -> Option<usize> {
        Some(self.capacity_batches)
    }
}

struct MemoryQueue {
    max_batch_events: usize,
}

impl Queue for MemoryQueue {
    fn run(
        self: Box<Self>,
        input: Option<Input>,
        output: Option<Output>,
        cx: Context,
    ) -> BoxFuture<'static, RunResult> {
        Box::pin(async move {
            let Some(mut input) = input else {
                return Ok(());
            };
            let depth = &cx.metrics.queue_depth;
            while let Some(mut batch) = input.recv().await {
                while batch.len() < self.max_batch_events {
                    let Some(next) = input.try_recv() else { break };
                    batch = merge(batch, next, &output).await;
                }
                depth.set(input.queued() as i64);
                match &output {
                    Some(output) => {
                        if output.send(batch).await.is_err() {
                            tracing::warn!(queue = %cx.name, "every consumer stopped; queue stops");
                            return Ok(());
                        }
                    }
                    // Nothing consumes this queue: the runner warned at start.
                    None => drop(batch),
                }
            }
            Ok(())
        })
    }
}

/// Appends `next` to `batch`; batches of different kinds cannot merge, so the
/// first is sent on and the second becomes the batch being filled.
async fn merge(mut batch: Batch, next: Batch, output: &Option<Output>) -> Batch {
    match batch.events.append(next.events) {
        Ok(()) => {
            batch.acks.extend(next.acks);
            batch
        }
        Err(events) => {
            if let Some(output) = output {
                // A closed output is noticed on the next regular send.
                let _ = output.send(batch).await;
            }
            Batch::new(events, next.acks)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{Ack, AckSet, AckStatus};
    use crate::event::{EventContext, Events, Fix};
    use crate::telemetry::Telemetry;
    use tokio::sync::mpsc;

    fn fix(id: &str, ts_ms: i64) -> Fix {
        Fix { obu_id: id.into(), ts_ms, lat: 50.0, lon: 11.9, ctx: EventContext::default() }
    }

    #[tokio::test]
    async fn batches_left_in_an_input_that_is_dropped_are_failed() {
        let (tx, rx) = mpsc::channel(4);
        let (ack, mut status) = Ack::channel();
        tx.send(Batch::new(Events::Fixes(vec![fix("a", 1)]), AckSet::one(ack))).await.unwrap();
        drop(Input::new(rx, None));
        assert_eq!(status.try_recv().unwrap(), AckStatus::Failed);
    }

    #[tokio::test]
    async fn waiting_batches_are_merged_and_acks_released_downstream() {
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let mut acks = Vec::new();
        for i in 0..3 {
            let (ack, rx) = Ack::channel();
            acks.push(rx);
            let events = Events::Fixes(vec![fix("a", i)]);
            in_tx.send(Batch::new(events, AckSet::one(ack))).await.unwrap();
        }
        drop(in_tx);

        let telemetry = Telemetry::new();
        let metrics = telemetry.component("q", "queue", "memory");
        let cx =
            Context { name: "q".into(), metrics, shutdown: crate::component::Shutdown::never() };
        let queue = Box::new(MemoryQueue { max_batch_events: 100 });
        let input = Input::new(in_rx, None);
        queue.run(Some(input), Some(Output::new(vec![out_tx], None)), cx).await.unwrap();

        let merged = out_rx.recv().await.unwrap();
        assert_eq!(merged.len(), 3);
        assert!(out_rx.recv().await.is_none());
        drop(merged);
        for mut rx in acks {
            assert_eq!(rx.try_recv().unwrap(), AckStatus::Delivered);
        }
    }
}
