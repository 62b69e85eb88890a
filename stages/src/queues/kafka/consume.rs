//! The consuming side: messages of the topic into batches of fixes.
//!
//! Messages are gathered into batches of up to `max_batch_events`, or what
//! arrived within `max_batch_wait_ms` of the first. Each batch carries an
//! acknowledgement that tells the offset book which offsets it covered; the
//! book's commit points are committed every `commit_interval_ms` (also while
//! the output is full), when partitions are revoked, and at shutdown once
//! every batch handed out is done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::context::ConsumerHooks;
use super::dead_letter::{DeadLetters, Poison};
use super::offsets::{Offsets, Range};
use super::produce::{RECEIVED_MS_HEADER, TRACEPARENT_HEADER};
use crate::ack::{Ack, AckSet, AckStatus};
use crate::component::{ComponentError, Context, Output, RunResult};
use crate::event::{Batch, Events, Fix, Millis, TraceContext};
use crate::otel::{Span, SpanKind, Tracer};
use crate::sources::websocket::wire;
use crate::telemetry::Counter;

pub type KafkaConsumer = StreamConsumer<ConsumerHooks>;

/// Pause after a failed fetch, so a lasting fault does not spin.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Reads fixes from one topic.
pub struct Reader {
    pub consumer: Arc<KafkaConsumer>,
    pub topic: String,
    pub offsets: Offsets,
    pub dead_letters: DeadLetters,
    pub max_batch_events: usize,
    pub max_batch_wait: Duration,
    pub commit_interval: Duration,
    /// Whether a commit is under way.
    pub committing: Arc<AtomicBool>,
    pub tracer: Tracer,
}

/// One message read: a fix, or poison.
struct Item {
    partition: i32,
    offset: i64,
    read: Result<Fix, Option<Poison>>,
    /// The consume span of a traced fix.
    span: Option<Span>,
}

/// A batch being gathered.
struct Gathering {
    generation: u64,
    fixes: Vec<Fix>,
    ranges: Vec<Range>,
    poison: Vec<Poison>,
    poison_count: usize,
    spans: Vec<Span>,
}

impl Gathering {
    fn push(&mut self, item: Item) {
        self.spans.extend(item.span);
        match self.ranges.iter_mut().find(|r| r.partition == item.partition) {
            Some(range) => range.last = item.offset,
            None => self.ranges.push(Range {
                partition: item.partition,
                first: item.offset,
                last: item.offset,
            }),
        }
        match item.read {
            Ok(fix) => self.fixes.push(fix),
            Err(poison) => {
                self.poison_count += 1;
                self.poison.extend(poison);
            }
        }
    }

    fn messages(&self) -> usize {
        self.fixes.len() + self.poison_count
    }
}

impl Reader {
    /// Runs until shutdown is requested and every batch handed out is done.
    pub async fn run(self, output: Output, cx: &Context) -> RunResult {
        self.consumer.subscribe(&[&self.topic]).map_err(|e| {
            ComponentError::with(format!("cannot subscribe to `{}`", self.topic), e)
        })?;
        tracing::info!(queue = %cx.name, topic = %self.topic, "kafka consumer started");
        let poisoned = cx.metrics.rejected("poison_message");
        let mut commit_tick = tokio::time::interval(self.commit_interval);
        commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut shutdown = cx.shutdown.clone();
        let mut scratch = Vec::with_capacity(1);
        let mut carry = None;

        loop {
            let first = match carry.take() {
                Some(item) => item,
                None => tokio::select! {
                    biased;
                    _ = shutdown.requested() => break,
                    _ = commit_tick.tick() => {
                        self.commit_in_background();
                        continue;
                    }
                    message = self.consumer.recv() => match message {
                        Ok(message) => self.read(&message, &mut scratch, &poisoned),
                        Err(error) => {
                            self.receive_failed(&error, cx).await;
                            continue;
                        }
                    },
                },
            };
            let mut batch = Gathering {
                generation: self.offsets.generation(),
                fixes: Vec::with_capacity(self.max_batch_events.min(1024)),
                ranges: Vec::new(),
                poison: Vec::new(),
                poison_count: 0,
                spans: Vec::new(),
            };
            let started = Instant::now();
            batch.push(first);
            carry = self.gather(&mut batch, &mut scratch, &poisoned, cx).await;
            let handed_on = self.hand_on(batch, &output, &mut commit_tick, cx).await;
            cx.metrics.processing.observe(started.elapsed());
            if !handed_on {
                tracing::warn!(queue = %cx.name, "every consumer stopped; kafka consumer stops");
                break;
            }
        }

        // Downstream ends once its inputs close; its acks then complete.
        drop(output);
        self.offsets.drained().await;
        let topic = self.topic.clone();
        self.close().await;
        tracing::info!(queue = %cx.name, topic, "kafka consumer finished");
        Ok(())
    }

    /// Adds messages to `batch` until it is full or its time is up; returns a
    /// message read after a rebalance, which must start the next batch.
    async fn gather(
        &self,
        batch: &mut Gathering,
        scratch: &mut Vec<Fix>,
        poisoned: &Counter,
        cx: &Context,
    ) -> Option<Item> {
        let deadline = Instant::now() + self.max_batch_wait;
        while batch.messages() < self.max_batch_events {
            let message = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => return None,
                Ok(Err(error)) => {
                    self.receive_failed(&error, cx).await;
                    return None;
                }
                Ok(Ok(message)) => message,
            };
            let item = self.read(&message, scratch, poisoned);
            if self.offsets.generation() != batch.generation {
                return Some(item);
            }
            batch.push(item);
        }
        None
    }

    /// Parses one message into a fix, or poison when it is not one.
    fn read(
        &self,
        message: &BorrowedMessage<'_>,
        scratch: &mut Vec<Fix>,
        poisoned: &Counter,
    ) -> Item {
        let partition = message.partition();
        let offset = message.offset();
        let received_ms = received_ms(message);
        scratch.clear();
        let payload = message.payload().unwrap_or_default();
        let read = match wire::parse_frame(payload, received_ms, 1, scratch) {
            Ok(()) => scratch.pop().ok_or_else(|| "message holds no fix".to_owned()),
            Err(error) => Err(error.to_string()),
        };
        let mut span = None;
        let read = read.map(|mut fix| {
            fix.ctx.trace = fix.ctx.trace.or_else(|| traceparent(message));
            span = self.consume_span(&mut fix, partition, offset);
            fix
        });
        let read = read.map_err(|error| {
            poisoned.add(1);
            let topic = &self.topic;
            tracing::warn!(%topic, partition, offset, error, "kafka message is not a fix");
            self.dead_letters.keeps_poison().then(|| Poison { message: message.detach(), error })
        });
        Item { partition, offset, read, span }
    }

    /// Opens the consume span of a traced fix, a child of its produce span.
    fn consume_span(&self, fix: &mut Fix, partition: i32, offset: i64) -> Option<Span> {
        let mut span = self.tracer.start(&mut fix.ctx, "kafka.consume", SpanKind::Consumer)?;
        span.set("messaging.system", "kafka");
        span.set("messaging.operation.type", "receive");
        span.set("messaging.destination.name", self.topic.as_str());
        span.set("messaging.destination.partition.id", partition.to_string());
        span.set("messaging.kafka.offset", offset);
        span.set("obu.id", fix.obu_id.as_str());
        Some(span)
    }

    /// Sends the batch on, committing meanwhile; false once nothing consumes.
    async fn hand_on(
        &self,
        batch: Gathering,
        output: &Output,
        commit_tick: &mut Interval,
        cx: &Context,
    ) -> bool {
        let Gathering { generation, fixes, ranges, poison, spans, .. } = batch;
        self.offsets.open(generation, &ranges);
        let ack = self.batch_ack(generation, ranges, cx);
        self.dead_letters.send(poison, ack.clone());
        if fixes.is_empty() {
            return true;
        }

        // Shortcoming: the consumer is not polled while the output is full.
        // If downstream stays blocked longer than librdkafka's
        // `max.poll.interval.ms` (5 min by default), the broker drops this
        // consumer from the group and its partitions move to another member,
        // which reads the uncommitted batches again. Pausing the partitions
        // and polling on would keep the membership.

        // Holding a clone keeps the callback from running before a refused
        // send can mark the batch failed.
        let guard = ack.clone();
        let send = output.send(Batch::new(Events::Fixes(fixes), AckSet::one(ack)));
        tokio::pin!(send);
        let sent = loop {
            tokio::select! {
                sent = &mut send => break sent,
                _ = commit_tick.tick() => self.commit_in_background(),
            }
        };
        if sent.is_err() {
            guard.fail();
        }
        drop(spans);
        sent.is_ok()
    }

    /// The acknowledgement that marks a batch's offsets done.
    fn batch_ack(&self, generation: u64, ranges: Vec<Range>, cx: &Context) -> Ack {
        let offsets = self.offsets.clone();
        let queue = Arc::clone(&cx.name);
        Ack::new(move |status| {
            if status == AckStatus::Failed {
                // The pipeline stops after a failure; these offsets stay
                // uncommitted and are read again on the next start.
                tracing::error!(%queue, ?ranges, "batch failed downstream; offsets held back");
            }
            offsets.finish(generation, &ranges, status);
        })
    }

    /// Commits what is done on a blocking thread, unless the last commit is
    /// still under way.
    ///
    /// Shortcoming: a commit under way when a rebalance revokes its partition
    /// may reach the broker after the revocation's commit, moving the offset
    /// back a little; the next owner then reads those messages twice (at
    /// least once still holds).
    fn commit_in_background(&self) {
        if self.committing.swap(true, Ordering::AcqRel) {
            return;
        }
        let commits = self.offsets.to_commit();
        if commits.is_empty() {
            self.committing.store(false, Ordering::Release);
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let committing = Arc::clone(&self.committing);
        tokio::task::spawn_blocking(move || {
            consumer.context().commit_now(&*consumer, &commits, false);
            committing.store(false, Ordering::Release);
        });
    }

    async fn receive_failed(&self, error: &KafkaError, cx: &Context) {
        cx.metrics.errors.add(1);
        tracing::warn!(queue = %cx.name, topic = %self.topic, error = %error, "kafka fetch failed");
        tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
    }

    /// Commits what is done and leaves the group; both block, so they run
    /// off the async threads.
    async fn close(self) {
        // A commit still under way could land after the last one and undo it.
        while self.committing.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let consumer = self.consumer;
        let closed = tokio::task::spawn_blocking(move || {
            let hooks = consumer.context();
            hooks.commit_now(&*consumer, &hooks.offsets.to_commit(), false);
            consumer.unsubscribe();
            drop(consumer);
        });
        if let Err(error) = closed.await {
            let topic = &self.topic;
            tracing::error!(%topic, %error, "closing the kafka consumer panicked");
        }
    }
}

/// The trace context the producer put in the message's headers.
fn traceparent(message: &BorrowedMessage<'_>) -> Option<TraceContext> {
    let headers = message.headers()?;
    let header = headers.iter().find(|h| h.key == TRACEPARENT_HEADER)?;
    crate::grpc::parse_traceparent(std::str::from_utf8(header.value?).ok()?)
}

/// When the fix was received: the producer's header, else the message time,
/// else now.
fn received_ms(message: &BorrowedMessage<'_>) -> Millis {
    let from_header = message.headers().and_then(|headers| {
        let header = headers.iter().find(|h| h.key == RECEIVED_MS_HEADER)?;
        std::str::from_utf8(header.value?).ok()?.parse().ok()
    });
    from_header
        .or_else(|| message.timestamp().to_millis())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
}
