//! Traces of single fixes across every hop of the pipeline.
//!
//! A fix is sampled once, where it enters (the OBU simulator creates it, or
//! the WebSocket source receives it, possibly with a `traceparent` from its
//! OBU): the [`Sampler`] decides, and the decision travels in the fix's
//! [`EventContext`]. Each later hop that sees a sampled context opens one
//! span as a child of the context's span and moves the context on to its
//! own span, so the next hop (in this process, across Kafka or gRPC) becomes
//! its child. An unsampled fix has no context at all and costs every hop one
//! branch.
//!
//! Finished spans wait in a bounded buffer for the exporter; when it is
//! full, spans are dropped and counted, so the pipeline never waits for it.
//!
//! - `sampler`: the entry decision.
//! - `span`: open spans and what is kept of finished ones.

mod sampler;
mod span;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::Notify;

pub use sampler::{Sampler, Sampling};
pub use span::{AttrValue, Span, SpanData, SpanKind};

use crate::event::{EventContext, TraceContext};
use crate::telemetry::Counter;

/// Finished spans kept for the exporter by default.
pub const DEFAULT_BUFFER_SPANS: usize = 16_384;

/// Records the spans of traced fixes; cheap to clone, shared by the
/// components of one process.
#[derive(Clone)]
pub struct Tracer(Arc<Inner>);

struct Inner {
    sampler: RwLock<Arc<Sampler>>,
    /// Whether anything takes finished spans; without it hops open none.
    recording: AtomicBool,
    finished: Mutex<Vec<SpanData>>,
    capacity: AtomicUsize,
    dropped: Counter,
    /// Woken when the buffer is half full, so the exporter empties it early.
    filling: Notify,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer::new(Counter::default())
    }
}

impl Tracer {
    /// A tracer that records nothing until [`Tracer::configure`] turns it on;
    /// spans that find the buffer full are counted in `dropped`.
    pub fn new(dropped: Counter) -> Self {
        Tracer(Arc::new(Inner {
            sampler: RwLock::new(Arc::new(Sampler::off())),
            recording: AtomicBool::new(false),
            finished: Mutex::new(Vec::new()),
            capacity: AtomicUsize::new(DEFAULT_BUFFER_SPANS),
            dropped,
            filling: Notify::new(),
        }))
    }

    /// Turns recording on or off and sets how entries sample. Without
    /// recording no new trace is started; contexts that fixes bring along
    /// are still passed on unchanged.
    pub fn configure(&self, recording: bool, sampling: &Sampling) {
        self.0.recording.store(recording, Ordering::Relaxed);
        let sampler = if recording { Sampler::new(sampling) } else { Sampler::off() };
        *self.0.sampler.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(sampler);
    }

    /// Changes how many finished spans may wait for the exporter.
    pub fn set_buffer_capacity(&self, spans: usize) {
        self.0.capacity.store(spans.max(1), Ordering::Relaxed);
    }

    /// The entry decision as it stands; take it once per frame or batch.
    pub fn sampler(&self) -> Arc<Sampler> {
        Arc::clone(&self.0.sampler.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn is_recording(&self) -> bool {
        self.0.recording.load(Ordering::Relaxed)
    }

    /// Opens this hop's span for an event, when the event is sampled, and
    /// moves the event's context on to the new span.
    #[inline]
    pub fn start(
        &self,
        ctx: &mut EventContext,
        name: &'static str,
        kind: SpanKind,
    ) -> Option<Span> {
        let parent = ctx.trace?;
        if !parent.sampled {
            return None;
        }
        self.start_child(&mut ctx.trace, parent, name, kind)
    }

    fn start_child(
        &self,
        trace: &mut Option<TraceContext>,
        parent: TraceContext,
        name: &'static str,
        kind: SpanKind,
    ) -> Option<Span> {
        if !self.is_recording() {
            return None;
        }
        let span_id = span::new_span_id();
        *trace = Some(TraceContext { span_id, ..parent });
        let data = SpanData {
            trace_id: parent.trace_id,
            span_id,
            parent_span_id: parent.span_id,
            name,
            kind,
            start: SystemTime::now(),
            end: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            error: None,
        };
        Some(Span::new(self.clone(), data))
    }

    /// Takes the finished spans waiting for export.
    pub fn take_finished(&self) -> Vec<SpanData> {
        std::mem::take(&mut *self.0.finished.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Completes once the buffer is half full.
    pub async fn filling(&self) {
        self.0.filling.notified().await;
    }

    fn finish(&self, data: SpanData) {
        let capacity = self.0.capacity.load(Ordering::Relaxed);
        let mut finished = self.0.finished.lock().unwrap_or_else(|e| e.into_inner());
        if finished.len() >= capacity {
            drop(finished);
            self.0.dropped.add(1);
            return;
        }
        finished.push(data);
        if finished.len() == capacity / 2 {
            self.0.filling.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled_root() -> EventContext {
        let trace = TraceContext { trace_id: 0xfeed, span_id: 0x51, sampled: true };
        EventContext { received_ms: 0, trace: Some(trace) }
    }

    #[test]
    fn a_hop_becomes_the_parent_of_the_next() {
        let tracer = Tracer::default();
        tracer.configure(true, &Sampling::default());
        let mut ctx = sampled_root();

        let first = tracer.start(&mut ctx, "first", SpanKind::Internal).expect("sampled");
        let first_id = ctx.trace.unwrap().span_id;
        let second = tracer.start(&mut ctx, "second", SpanKind::Internal).expect("sampled");
        first.end();
        second.end();

        let spans = tracer.take_finished();
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].parent_span_id, spans[0].span_id), (0x51, first_id));
        assert_eq!(spans[1].parent_span_id, first_id);
        assert_eq!(spans[1].trace_id, 0xfeed);
        assert_eq!(ctx.trace.unwrap().span_id, spans[1].span_id);
    }

    #[test]
    fn unsampled_or_unrecorded_events_open_no_span() {
        let tracer = Tracer::default();
        let mut ctx = sampled_root();
        assert!(tracer.start(&mut ctx, "off", SpanKind::Internal).is_none());
        assert_eq!(ctx, sampled_root(), "a context passes through a tracer that records nothing");

        tracer.configure(true, &Sampling::default());
        let mut untraced = EventContext::default();
        assert!(tracer.start(&mut untraced, "none", SpanKind::Internal).is_none());
        let mut unsampled = sampled_root();
        unsampled.trace.as_mut().unwrap().sampled = false;
        assert!(tracer.start(&mut unsampled, "unsampled", SpanKind::Internal).is_none());
    }

    #[test]
    fn a_full_buffer_drops_and_counts() {
        let dropped = Counter::default();
        let tracer = Tracer::new(dropped.clone());
        tracer.configure(true, &Sampling::default());
        tracer.set_buffer_capacity(2);
        for _ in 0..5 {
            let mut ctx = sampled_root();
            tracer.start(&mut ctx, "hop", SpanKind::Internal).expect("sampled").end();
        }
        assert_eq!(tracer.take_finished().len(), 2);
        assert_eq!(dropped.get(), 3);
    }
}
