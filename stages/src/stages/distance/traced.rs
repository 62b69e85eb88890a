//! The spans of traced fixes while the stage holds them.
//!
//! A traced fix's `distance.segment` span opens when the fix comes in and
//! ends when the filter decides it (billed, first, or refused with a reason),
//! which may be a reorder window later. Only traced fixes are kept here, so an
//! untraced fix costs one branch on the way in and one when decided.

use std::collections::HashMap;
use std::sync::Mutex;

use super::checks::Reason;
use super::reorder::Pending;
use super::track::Decision;
use crate::event::{EventContext, Fix};
use crate::otel::{Span, SpanKind, Tracer};

/// Open spans by span id (which the held fix's context carries).
pub(super) struct TracedFixes {
    tracer: Tracer,
    // Only touched for traced fixes. A lock rather than a cell: the filter's
    // callbacks reach it through a shared reference.
    open: Mutex<HashMap<u64, Span>>,
}

impl TracedFixes {
    pub fn new(tracer: Tracer) -> Self {
        TracedFixes { tracer, open: Mutex::default() }
    }

    /// Opens the span of a traced fix and moves its context on to it.
    #[inline]
    pub fn start(&self, fix: &Fix, ctx: &mut EventContext) -> Option<Span> {
        let mut span = self.tracer.start(ctx, "distance.segment", SpanKind::Internal)?;
        span.set("obu.id", fix.obu_id.as_str());
        span.set("toll.fix.time_ms", fix.ts_ms);
        Some(span)
    }

    /// Keeps the span of a fix the stage now holds.
    pub fn hold(&self, span: Option<Span>) {
        if let Some(span) = span {
            self.lock().insert(span.span_id(), span);
        }
    }

    /// Ends the span of a decided fix, if it is traced.
    #[inline]
    pub fn decided(&self, fix: &Pending, decision: &Decision) {
        let Some(trace) = fix.ctx.trace else { return };
        let Some(mut span) = self.lock().remove(&trace.span_id) else { return };
        match decision {
            Decision::Segment { from_ms, metres, .. } => {
                span.set("toll.outcome", "billed");
                span.set("toll.segment.metres", *metres);
                span.set("toll.segment.from_ms", *from_ms);
            }
            Decision::First => span.set("toll.outcome", "first"),
            Decision::Reject(reason) => span.set("toll.outcome", reason.as_str()),
        }
        span.end();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Span>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Ends the span of a fix refused on arrival.
pub(super) fn refused(span: Option<Span>, reason: Reason) {
    if let Some(mut span) = span {
        span.set("toll.outcome", reason.as_str());
        span.end();
    }
}
