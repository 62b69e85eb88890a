//! The delivery loop of the `grpc` sink: gather, call, retry, release.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::ack::AckSet;
use crate::component::{Context, Input, RunResult};
use crate::event::{Batch, Events, Segment};
use crate::grpc::proto::aggregator_client::AggregatorClient;
use crate::grpc::proto::{DeliverReply, SegmentBatch};
use crate::grpc::{segment_to_proto, traceparent, Backoff, WarnLimiter};
use crate::otel::{Span, SpanKind};
use crate::telemetry::Counter;

/// Failed calls are logged at most this often during an outage.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Segments on their way to one call, with the acknowledgements they owe.
struct Group {
    segments: Vec<Segment>,
    acks: AckSet,
}

impl Group {
    fn new(batch: Batch) -> Self {
        let mut group = Group { segments: Vec::new(), acks: AckSet::default() };
        group.absorb(batch);
        group
    }

    /// Adds a batch. Only segments reach this sink: the graph refuses edges
    /// of other kinds, so any other events would be a wiring bug and are
    /// dropped with the batch.
    fn absorb(&mut self, batch: Batch) {
        self.acks.extend(batch.acks);
        if let Events::Segments(mut segments) = batch.events {
            self.segments.append(&mut segments);
        }
    }
}

/// Sends groups of segments to one aggregator, one call at a time.
pub(super) struct Deliverer {
    client: AggregatorClient<Channel>,
    url: String,
    max_batch_segments: usize,
    backoff: Backoff,
    shutdown_grace: Duration,
}

/// What the loop learned so far, and its counters.
struct Link {
    calls: Counter,
    call_errors: Counter,
    refused: Counter,
    warn_limit: WarnLimiter,
    /// Failed calls since the last success.
    failures: u64,
    /// When retrying stops, once shutdown is requested.
    deadline: Option<Instant>,
    /// Past the deadline: everything left is failed without a call.
    given_up: bool,
}

impl Deliverer {
    pub(super) fn new(
        client: AggregatorClient<Channel>,
        url: String,
        max_batch_segments: usize,
        backoff: Backoff,
        shutdown_grace: Duration,
    ) -> Self {
        Deliverer { client, url, max_batch_segments, backoff, shutdown_grace }
    }

    pub(super) async fn run(mut self, mut input: Input, cx: Context) -> RunResult {
        let telemetry = cx.metrics.telemetry();
        let labels = [("component", &*cx.name), ("method", "Deliver")];
        let mut link = Link {
            calls: telemetry.counter("toll_grpc_calls_total", &labels),
            call_errors: telemetry.counter("toll_grpc_call_errors_total", &labels),
            refused: cx.metrics.rejected("refused_by_aggregator"),
            warn_limit: WarnLimiter::new(WARN_EVERY),
            failures: 0,
            deadline: None,
            given_up: false,
        };
        info!(component = %cx.name, url = %self.url, "grpc sink started");

        let mut carry = None;
        let mut abandoned = 0;
        while let Some(group) = self.gather(&mut input, &mut carry).await {
            if link.given_up {
                abandoned += group.segments.len();
                group.acks.fail();
            } else {
                self.deliver(group, &mut link, &cx).await;
            }
        }
        if abandoned > 0 {
            let segments = abandoned;
            warn!(component = %cx.name, segments, "undelivered segments failed at shutdown");
        }
        info!(component = %cx.name, "grpc sink stopped");
        Ok(())
    }

    /// The next group: what was left over, or the next batch, merged with
    /// the batches already waiting, up to the call's limit.
    async fn gather(&self, input: &mut Input, carry: &mut Option<Group>) -> Option<Group> {
        let mut group = match carry.take() {
            Some(group) => group,
            None => Group::new(input.recv().await?),
        };
        while group.segments.len() < self.max_batch_segments {
            let Some(batch) = input.try_recv() else { break };
            group.absorb(batch);
        }
        if group.segments.len() > self.max_batch_segments {
            // Both parts hold the acknowledgements, so they are released
            // only when the last part is delivered.
            let rest = group.segments.split_off(self.max_batch_segments);
            *carry = Some(Group { segments: rest, acks: group.acks.clone() });
        }
        Some(group)
    }

    /// Calls until the aggregator confirms, or until the shutdown grace is
    /// over; dropping the group then releases or fails its acknowledgements.
    async fn deliver(&mut self, mut group: Group, link: &mut Link, cx: &Context) {
        if group.segments.is_empty() {
            return;
        }
        let mut spans = self.send_spans(&mut group.segments, cx);
        loop {
            match self.call(&group.segments, link).await {
                Ok(reply) => {
                    self.delivered(&group, reply, link, cx);
                    return;
                }
                Err(status) => self.failed(&status, link, cx),
            }

            if cx.shutdown.is_requested() && link.deadline.is_none() {
                link.deadline = Some(Instant::now() + self.shutdown_grace);
            }
            if link.deadline.is_some_and(|d| Instant::now() >= d) {
                let segments = group.segments.len();
                let component = &cx.name;
                warn!(%component, segments, "shutdown grace over; failing undelivered segments");
                group.acks.fail();
                spans.iter_mut().for_each(|span| span.fail("shutdown grace over"));
                link.given_up = true;
                return;
            }
            self.wait(link, cx).await;
        }
    }

    /// Opens the client span of every traced segment, which each segment's
    /// wire form then names as its parent; they end when dropped, once the
    /// segments are delivered or given up.
    fn send_spans(&self, segments: &mut [Segment], cx: &Context) -> Vec<Span> {
        let tracer = cx.metrics.telemetry().tracer();
        let mut spans = Vec::new();
        for segment in segments {
            if let Some(mut span) = tracer.start(&mut segment.ctx, "grpc.send", SpanKind::Client) {
                span.set("rpc.system", "grpc");
                span.set("rpc.service", "toll.v1.Aggregator");
                span.set("rpc.method", "Deliver");
                span.set("server.address", self.url.as_str());
                span.set("obu.id", segment.obu_id.as_str());
                span.set("toll.segment.metres", segment.metres);
                spans.push(span);
            }
        }
        spans
    }

    /// One `Deliver` call, cut short when the shutdown grace ends.
    async fn call(&self, segments: &[Segment], link: &Link) -> Result<DeliverReply, Status> {
        link.calls.add(1);
        let batch = SegmentBatch { segments: segments.iter().map(segment_to_proto).collect() };
        let mut request = tonic::Request::new(batch);
        // Each segment names its own parent; the call carries the first
        // traced one, for whatever sits between the two processes.
        let first_traced = segments.iter().find_map(|s| s.ctx.trace.filter(|t| t.sampled));
        if let Some(value) = first_traced.and_then(|t| traceparent(&t).parse().ok()) {
            request.metadata_mut().insert("traceparent", value);
        }
        let mut client = self.client.clone();
        let call = client.deliver(request);
        let reply = match link.deadline {
            None => call.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), call)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("shutdown grace is over"))),
        };
        reply.map(tonic::Response::into_inner)
    }

    fn delivered(&mut self, group: &Group, reply: DeliverReply, link: &mut Link, cx: &Context) {
        if link.failures > 0 {
            let (url, failed_calls) = (&self.url, link.failures);
            info!(component = %cx.name, %url, failed_calls, "aggregator reachable again");
        }
        link.failures = 0;
        self.backoff.reset();
        cx.metrics.sent.add(reply.persisted);
        link.refused.add(reply.rejected);
        if reply.rejected > 0 {
            let segments = reply.rejected;
            warn!(component = %cx.name, segments, "aggregator refused malformed segments");
        }
        debug!(component = %cx.name, segments = group.segments.len(), "segments delivered");
    }

    fn failed(&self, status: &Status, link: &mut Link, cx: &Context) {
        link.failures += 1;
        link.call_errors.add(1);
        cx.metrics.errors.add(1);
        if let Some(held_back) = link.warn_limit.allow() {
            let (component, url, attempt, error) = (&cx.name, &self.url, link.failures, status);
            warn!(%component, %url, attempt, held_back, %error, "deliver failed; retrying");
        }
    }

    /// Sleeps before the next retry; wakes early when shutdown is requested,
    /// so that the grace period starts on time, and never sleeps past it.
    async fn wait(&mut self, link: &Link, cx: &Context) {
        let mut wait = self.backoff.next_wait();
        if let Some(deadline) = link.deadline {
            wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
            return;
        }
        let mut shutdown = cx.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.requested() => {}
        }
    }
}
