//! The producing side: fixes from the queue's inputs to the topic.
//!
//! Each fix becomes one message keyed by its OBU id, so an OBU's fixes stay in
//! order on one partition; the value is the native JSON fix and the metadata
//! travels in headers. A batch's acknowledgements are released only once the
//! broker acknowledged every message of it. Up to `max_in_flight_batches`
//! batches wait for the broker at a time; beyond that the input is not read,
//! so a slow or absent broker slows the sources instead of losing fixes.

use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use super::context::ClientLog;
use crate::ack::AckSet;
use crate::component::{Context, Input, RunResult};
use crate::event::{Batch, Events, Fix, TraceContext};
use crate::otel::{Span, SpanKind, Tracer};
use crate::sources::websocket::wire;
use crate::telemetry::Counter;

/// Header holding the fix's `received_ms`, in decimal.
pub const RECEIVED_MS_HEADER: &str = "toll-received-ms";

/// Header holding the fix's W3C trace context, when it has one.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// How long to wait before offering a message again when librdkafka's local
/// queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

pub type Producer = FutureProducer<ClientLog>;

/// Writes fixes to one topic.
pub struct Writer {
    pub producer: Producer,
    pub topic: String,
    pub max_in_flight_batches: usize,
    pub tracer: Tracer,
}

/// A batch's deliveries and the acknowledgements they release; a message
/// librdkafka refused to queue is an error in place of its delivery.
struct InFlight {
    deliveries: Vec<Result<DeliveryFuture, KafkaError>>,
    acks: AckSet,
    /// Produce spans of the traced fixes, ended once the broker answered.
    spans: Vec<Span>,
}

/// What became of one batch's messages.
struct Settled {
    acks: AckSet,
    spans: Vec<Span>,
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Writer {
    /// Runs until the input is closed and every message is acknowledged.
    pub async fn run(self, mut input: Input, cx: &Context) -> RunResult {
        let produced = cx.metrics.counter("toll_kafka_produced_total");
        let unencodable = cx.metrics.rejected("unencodable_fix");
        let mut in_flight = FuturesOrdered::new();
        let mut value = Vec::with_capacity(128);
        loop {
            // At the limit the input waits, which holds the sources back.
            if in_flight.len() >= self.max_in_flight_batches {
                if let Some(settled) = in_flight.next().await {
                    self.settle(settled, &produced, cx);
                }
                continue;
            }
            tokio::select! {
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(settled, &produced, cx);
                }
                batch = input.recv() => {
                    let Some(batch) = batch else { break };
                    let sent = self.send(batch, &mut value, &unencodable).await;
                    in_flight.push_back(sent.wait());
                }
            }
        }
        while let Some(settled) = in_flight.next().await {
            self.settle(settled, &produced, cx);
        }
        tracing::info!(queue = %cx.name, topic = %self.topic, "kafka producer finished");
        Ok(())
    }

    /// Hands every fix of `batch` to librdkafka.
    async fn send(&self, batch: Batch, value: &mut Vec<u8>, unencodable: &Counter) -> InFlight {
        let Batch { events, acks } = batch;
        let Events::Fixes(fixes) = events else {
            // The graph lets only fixes reach this queue.
            let (topic, kind) = (&self.topic, events.kind());
            tracing::error!(%topic, %kind, "kafka queue got non-fix events");
            acks.fail();
            return InFlight { deliveries: Vec::new(), acks, spans: Vec::new() };
        };
        let mut deliveries = Vec::with_capacity(fixes.len());
        let mut spans = Vec::new();
        for fix in &fixes {
            // Shortcoming: serde_json is built without `float_roundtrip`, so a
            // coordinate with 16-17 significant digits may come back from the
            // topic one ulp off (about 1e-14 degrees); seven-decimal GNSS
            // values come back exactly.
            value.clear();
            if let Err(error) = wire::write_native_json(fix, value) {
                unencodable.add(1);
                let obu_id = &fix.obu_id;
                tracing::warn!(%obu_id, %error, "fix cannot be written to kafka");
                continue;
            }
            let mut ctx = fix.ctx;
            if let Some(span) = self.tracer.start(&mut ctx, "kafka.produce", SpanKind::Producer) {
                spans.push(self.describe(span, fix));
            }
            deliveries.push(self.enqueue(fix, ctx.trace, value).await);
        }
        InFlight { deliveries, acks, spans }
    }

    fn describe(&self, mut span: Span, fix: &Fix) -> Span {
        span.set("messaging.system", "kafka");
        span.set("messaging.operation.type", "send");
        span.set("messaging.destination.name", self.topic.as_str());
        span.set("obu.id", fix.obu_id.as_str());
        span
    }

    /// Queues one message, waiting while librdkafka's local queue is full.
    async fn enqueue(
        &self,
        fix: &Fix,
        trace: Option<TraceContext>,
        value: &[u8],
    ) -> Result<DeliveryFuture, KafkaError> {
        let received = fix.ctx.received_ms.to_string();
        let traceparent = trace.map(|t| crate::grpc::traceparent(&t));
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header { key: RECEIVED_MS_HEADER, value: Some(received.as_str()) });
            if let Some(traceparent) = &traceparent {
                headers = headers
                    .insert(Header { key: TRACEPARENT_HEADER, value: Some(traceparent.as_str()) });
            }
            let record = FutureRecord::to(&self.topic)
                .key(fix.obu_id.as_bytes())
                .payload(value)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    fn settle(&self, settled: Settled, produced: &Counter, cx: &Context) {
        produced.add(settled.delivered);
        if settled.failed > 0 {
            // Failing the acks tells the sources (a WebSocket OBU gets a nack).
            settled.acks.fail();
            cx.metrics.errors.add(settled.failed);
            tracing::error!(
                queue = %cx.name,
                topic = %self.topic,
                failed = settled.failed,
                error = settled.first_error.as_deref().unwrap_or(""),
                "kafka refused messages of a batch",
            );
        }
        let delivered = settled.delivered;
        tracing::trace!(queue = %cx.name, delivered, "kafka batch acknowledged");
        for mut span in settled.spans {
            if let Some(error) = &settled.first_error {
                span.fail(error.clone());
            }
            span.end();
        }
        drop(settled.acks);
    }
}

impl InFlight {
    async fn wait(self) -> Settled {
        let mut settled = Settled {
            acks: self.acks,
            spans: self.spans,
            delivered: 0,
            failed: 0,
            first_error: None,
        };
        for delivery in self.deliveries {
            let error = match delivery {
                Ok(pending) => match pending.await {
                    Ok(Ok(_)) => {
                        settled.delivered += 1;
                        continue;
                    }
                    Ok(Err((error, _))) => error.to_string(),
                    Err(_) => "the producer was dropped before delivery".to_owned(),
                },
                Err(refused) => refused.to_string(),
            };
            settled.failed += 1;
            settled.first_error.get_or_insert(error);
        }
        settled
    }
}
