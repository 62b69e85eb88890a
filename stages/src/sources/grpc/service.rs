//! The `toll.v1.Aggregator` service behind the `grpc` source.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::{Request, Response, Status};
use tracing::warn;

use crate::ack::{Ack, AckSet, AckStatus};
use crate::component::{Context, Output};
use crate::event::{Batch, Events, Segment};
use crate::grpc::proto::aggregator_server::Aggregator;
use crate::grpc::proto::{
    CurrentPeriodReply, CurrentPeriodRequest, DeliverReply, InvoiceReply, InvoiceRequest,
    SegmentBatch,
};
use crate::grpc::{invoice_to_proto, segment_from_proto, WarnLimiter};
use crate::invoice::InvoiceBook;
use crate::otel::{Span, SpanKind, Tracer};
use crate::sinks::gateway::valid_period;
use crate::telemetry::{Counter, Histogram};

/// Rejected segments and failed calls are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Answers the calls of one `grpc` source.
pub(super) struct AggregatorService {
    output: Output,
    book: Option<Arc<dyn InvoiceBook>>,
    component: Arc<str>,
    counters: Counters,
    warn_limit: Mutex<WarnLimiter>,
    tracer: Tracer,
}

/// Registered once, when the source starts.
struct Counters {
    deliver_calls: Counter,
    invoice_calls: Counter,
    period_calls: Counter,
    errors: Counter,
    rejected: Counter,
    processing: Histogram,
}

impl AggregatorService {
    pub(super) fn new(output: Output, book: Option<Arc<dyn InvoiceBook>>, cx: &Context) -> Self {
        let telemetry = cx.metrics.telemetry();
        let calls = |method| {
            telemetry
                .counter("toll_grpc_calls_total", &[("component", &cx.name), ("method", method)])
        };
        let counters = Counters {
            deliver_calls: calls("Deliver"),
            invoice_calls: calls("GetInvoice"),
            period_calls: calls("CurrentPeriod"),
            errors: cx.metrics.errors.clone(),
            rejected: cx.metrics.rejected("invalid_segment"),
            processing: cx.metrics.processing.clone(),
        };
        let warn_limit = Mutex::new(WarnLimiter::new(WARN_EVERY));
        let tracer = cx.metrics.telemetry().tracer().clone();
        let component = Arc::clone(&cx.name);
        AggregatorService { output, book, component, counters, warn_limit, tracer }
    }

    fn book(&self) -> Result<&dyn InvoiceBook, Status> {
        self.book.as_deref().ok_or_else(|| {
            Status::unimplemented("this aggregator serves no invoices (set invoices_from)")
        })
    }

    /// Logs `message` unless one was logged within [`WARN_EVERY`].
    fn warn(&self, message: &'static str, error: &str) {
        let allowed = self.warn_limit.lock().unwrap_or_else(|e| e.into_inner()).allow();
        if let Some(held_back) = allowed {
            warn!(component = %self.component, error, held_back, "{}", message);
        }
    }
}

impl AggregatorService {
    /// Hands a delivered batch to the aggregate and answers once it is
    /// persisted. Each traced segment gets a server span, a child of the
    /// client span its wire form names, ended with the answer.
    async fn take(&self, request: Request<SegmentBatch>) -> Result<Response<DeliverReply>, Status> {
        let wire = request.into_inner().segments;
        let mut segments = Vec::with_capacity(wire.len());
        let mut spans = Vec::new();
        let mut rejected = 0;
        for segment in wire {
            match segment_from_proto(segment) {
                Ok(mut segment) => {
                    spans.extend(self.receive_span(&mut segment));
                    segments.push(segment);
                }
                Err(error) => {
                    rejected += 1;
                    self.warn("segment refused", &error.to_string());
                }
            }
        }
        self.counters.rejected.add(rejected);
        let persisted = segments.len() as u64;
        if segments.is_empty() {
            return Ok(Response::new(DeliverReply { persisted, rejected }));
        }

        // The reply waits for the acknowledgement, which the aggregate
        // releases only after its commit.
        let (ack, status) = Ack::channel();
        let batch = Batch::new(Events::Segments(segments), AckSet::one(ack));
        if self.output.send(batch).await.is_err() {
            self.counters.errors.add(1);
            return Err(Status::unavailable("the aggregator is stopping; send again later"));
        }
        match status.await {
            Ok(AckStatus::Delivered) => Ok(Response::new(DeliverReply { persisted, rejected })),
            Ok(AckStatus::Failed) | Err(_) => {
                self.counters.errors.add(1);
                self.warn("segments not persisted", "the aggregate failed to commit them");
                Err(Status::unavailable("the segments were not persisted; send them again"))
            }
        }
    }

    fn receive_span(&self, segment: &mut Segment) -> Option<Span> {
        let mut span = self.tracer.start(&mut segment.ctx, "grpc.receive", SpanKind::Server)?;
        span.set("rpc.system", "grpc");
        span.set("rpc.service", "toll.v1.Aggregator");
        span.set("rpc.method", "Deliver");
        span.set("obu.id", segment.obu_id.as_str());
        span.set("toll.segment.metres", segment.metres);
        Some(span)
    }
}

#[tonic::async_trait]
impl Aggregator for AggregatorService {
    async fn deliver(
        &self,
        request: Request<SegmentBatch>,
    ) -> Result<Response<DeliverReply>, Status> {
        self.counters.deliver_calls.add(1);
        let started = std::time::Instant::now();
        let replied = self.take(request).await;
        self.counters.processing.observe(started.elapsed());
        replied
    }

    async fn get_invoice(
        &self,
        request: Request<InvoiceRequest>,
    ) -> Result<Response<InvoiceReply>, Status> {
        self.counters.invoice_calls.add(1);
        let book = self.book()?;
        let InvoiceRequest { obu_id, period } = request.into_inner();
        if !crate::event::valid_obu_id(&obu_id) {
            return Err(Status::invalid_argument(crate::event::OBU_ID_RULE));
        }
        let period = if period.is_empty() { book.current_period() } else { period };
        if !valid_period(&period) {
            return Err(Status::invalid_argument("period must be YYYY-MM with month 01 to 12"));
        }

        match book.invoice(&obu_id, &period).await {
            Ok(invoice) => {
                let invoice = invoice.map(invoice_to_proto);
                Ok(Response::new(InvoiceReply { invoice, period }))
            }
            Err(error) => {
                self.counters.errors.add(1);
                self.warn("invoice book failed", &error.to_string());
                Err(Status::unavailable(error.to_string()))
            }
        }
    }

    async fn current_period(
        &self,
        _request: Request<CurrentPeriodRequest>,
    ) -> Result<Response<CurrentPeriodReply>, Status> {
        self.counters.period_calls.add(1);
        let period = self.book()?.current_period();
        Ok(Response::new(CurrentPeriodReply { period }))
    }
}
