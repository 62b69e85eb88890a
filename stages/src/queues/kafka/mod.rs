//! The Kafka queue: fixes carried between processes through a Kafka topic.
//!
//! A process whose pipeline feeds the queue produces to the topic; one whose
//! components take the queue as input consumes it in a consumer group; one
//! file may do both. Delivery is at least once: the producer releases a
//! batch's acknowledgements only after the broker has every message, and the
//! consumer commits an offset only after everything below it is done
//! downstream.
//!
//! - [`config`]: the keys and the librdkafka settings built from them.
//! - `produce`, `consume`: the two sides.
//! - `offsets`: which consumed offsets may be committed.
//! - `context`: librdkafka's callbacks (logs, rebalances, commits, lag).
//! - `admin`: creating missing topics.
//! - `dead_letter`: messages that are not fixes.

mod admin;
pub mod config;
mod consume;
mod context;
pub mod dead_letter;
mod offsets;
mod produce;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use self::admin::TopicSpec;
use self::consume::{KafkaConsumer, Reader};
use self::context::{ClientLog, ConsumerHooks, LagGauges};
use self::dead_letter::DeadLetters;
use self::offsets::Offsets;
use self::produce::{Producer, Writer};
use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Input, Kind, Output, Queue,
    RunResult, Signature,
};
use crate::event::EventKind;
use crate::otel::Tracer;
use crate::registry::{self, ComponentType};

pub use self::config::KafkaQueueConfig;
pub use self::produce::{RECEIVED_MS_HEADER, TRACEPARENT_HEADER};

pub const TYPE: ComponentType = ComponentType {
    name: "kafka",
    kind: Kind::Queue,
    about: "durable queue of fixes in a Kafka topic, shared between processes (at least once)",
    parse: registry::parse::<KafkaQueueConfig>,
};

impl ComponentConfig for KafkaQueueConfig {
    fn signature(&self) -> Signature {
        Signature::transform(EventKind::Fix, EventKind::Fix)
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::new("the kafka queue must be built inside a tokio runtime"));
        }
        self.check_options_with_librdkafka()?;

        let metrics = cx.telemetry.component(cx.name, Kind::Queue.as_str(), TYPE.name);
        let log = ClientLog { queue: cx.name.to_owned(), errors: metrics.errors.clone() };
        let producer: Producer = self
            .producer_config()
            .create_with_context(log.clone())
            .map_err(|e| BuildError::with("cannot create the kafka producer", e))?;

        let offsets = Offsets::default();
        let hooks = ConsumerHooks {
            log: log.clone(),
            topic: self.topic.clone(),
            offsets: offsets.clone(),
            committed: metrics.counter("toll_kafka_committed_offsets_total"),
            lag: LagGauges::new(cx.telemetry, cx.name, &self.topic),
        };
        let consumer: KafkaConsumer = self
            .consumer_config()
            .create_with_context(hooks)
            .map_err(|e| BuildError::with("cannot create the kafka consumer", e))?;

        Ok(Component::Queue(Box::new(KafkaQueue {
            tracer: cx.telemetry.tracer().clone(),
            config: self.clone(),
            log,
            producer,
            consumer: Arc::new(consumer),
            offsets,
        })))
    }

    fn may_go_unconsumed(&self) -> bool {
        // Another process consumes the topic.
        true
    }
}

struct KafkaQueue {
    tracer: Tracer,
    config: KafkaQueueConfig,
    log: ClientLog,
    producer: Producer,
    consumer: Arc<KafkaConsumer>,
    offsets: Offsets,
}

impl Queue for KafkaQueue {
    fn run(
        self: Box<Self>,
        input: Option<Input>,
        output: Option<Output>,
        cx: Context,
    ) -> BoxFuture<'static, RunResult> {
        Box::pin(async move {
            if input.is_none() && output.is_none() {
                return Ok(());
            }
            // The brokers may not answer at all; a stop request must still end the queue.
            let mut shutdown = cx.shutdown.clone();
            tokio::select! {
                ready = self.ensure_topics() => ready?,
                _ = shutdown.requested() => {
                    refuse(input, &cx).await;
                    return Ok(());
                }
            }
            let (writer, reader) = self.sides();
            match (input, output) {
                (Some(input), None) => {
                    // Closing even an idle consumer blocks; keep it off the async threads.
                    tokio::task::spawn_blocking(move || drop(reader));
                    writer.run(input, &cx).await
                }
                (None, Some(output)) => reader.run(output, &cx).await,
                (Some(input), Some(output)) => {
                    let (produced, consumed) =
                        tokio::join!(writer.run(input, &cx), reader.run(output, &cx));
                    produced.and(consumed)
                }
                (None, None) => Ok(()),
            }
        })
    }
}

impl KafkaQueue {
    async fn ensure_topics(&self) -> RunResult {
        let config = &self.config;
        let mut specs = vec![TopicSpec {
            name: &config.topic,
            partitions: config.partitions,
            replication_factor: config.replication_factor,
        }];
        if let Some(dead_letters) = &config.dead_letter_topic {
            specs.push(TopicSpec {
                name: dead_letters,
                partitions: config.partitions,
                replication_factor: config.replication_factor,
            });
        }
        admin::ensure_topics(config.producer_config(), self.log.clone(), &specs).await
    }

    fn sides(self) -> (Writer, Reader) {
        let config = self.config;
        let writer = Writer {
            producer: self.producer.clone(),
            topic: config.topic.clone(),
            max_in_flight_batches: config.max_in_flight_batches,
            tracer: self.tracer.clone(),
        };
        let dead_letters = DeadLetters {
            producer: self.producer,
            topic: config.dead_letter_topic.clone(),
            queue: self.log.queue.clone(),
            errors: self.log.errors.clone(),
        };
        let reader = Reader {
            consumer: self.consumer,
            topic: config.topic,
            offsets: self.offsets,
            dead_letters,
            max_batch_events: config.max_batch_events,
            max_batch_wait: Duration::from_millis(config.max_batch_wait_ms),
            commit_interval: Duration::from_millis(config.commit_interval_ms),
            committing: Arc::default(),
            tracer: self.tracer,
        };
        (writer, reader)
    }
}

/// Fails every batch of `input` until it closes: their sources must not take
/// them as delivered.
async fn refuse(input: Option<Input>, cx: &Context) {
    let Some(mut input) = input else { return };
    tracing::warn!(queue = %cx.name, "stopped before the kafka brokers answered; refusing input");
    while let Some(batch) = input.recv().await {
        batch.acks.fail();
    }
}
