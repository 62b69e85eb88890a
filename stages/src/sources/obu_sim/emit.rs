//! Pacing and batching shared by the simulation and the replay.
//!
//! A [`Feed`] yields fixes in the order they are sent, each due at a simulated
//! time. The emitter maps simulated time onto the wall clock (`speedup` times
//! faster, or not at all when 0), sends whatever is due in batches of up to
//! `batch_size`, waits for the channel when downstream is slow, and stops
//! between batches or while sleeping when shutdown is requested.

use std::time::Duration;

use tokio::time::Instant;

use super::progress::Progress;
use crate::component::{Context, Output};
use crate::event::{Batch, Events, Fix, Millis};
use crate::otel::{Span, SpanKind, Tracer};

/// Fixes in sending order, each due at a simulated time.
pub trait Feed: Send {
    /// Simulated time at which the next fix is due; `None` once exhausted.
    fn next_due_ms(&mut self) -> Option<Millis>;

    /// Moves fixes due at or before `until_ms` into `out` until it holds `limit`.
    fn fill(&mut self, out: &mut Vec<Fix>, limit: usize, until_ms: Millis);
}

/// How an emitter run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The feed is exhausted.
    Finished,
    /// Shutdown was requested.
    Stopped,
    /// Every consumer of the output is gone.
    Closed,
}

/// Maps simulated time onto the wall clock.
struct Clock {
    sim_origin_ms: Millis,
    wall_origin: Instant,
    speedup: f64,
}

impl Clock {
    fn sim_now(&self) -> Millis {
        let elapsed_ms = self.wall_origin.elapsed().as_secs_f64() * 1_000.0;
        self.sim_origin_ms + (elapsed_ms * self.speedup) as Millis
    }

    fn wall_at(&self, sim_ms: Millis) -> Instant {
        let wait_ms = (sim_ms - self.sim_origin_ms).max(0) as f64 / self.speedup;
        self.wall_origin + Duration::from_secs_f64(wait_ms.ceil() / 1_000.0)
    }
}

/// Sends the feed's fixes until it is exhausted, shutdown is requested or
/// nobody listens any more.
pub async fn run(
    feed: &mut dyn Feed,
    output: &Output,
    cx: &mut Context,
    speedup: f64,
    batch_size: usize,
    progress: &mut Progress,
) -> Outcome {
    let mut clock: Option<Clock> = None;
    let mut scratch: Vec<Fix> = Vec::with_capacity(batch_size);
    loop {
        if cx.shutdown.is_requested() {
            return Outcome::Stopped;
        }
        let Some(due_ms) = feed.next_due_ms() else {
            return Outcome::Finished;
        };

        // In paced modes, sleep until the next fix is due, then take
        // everything due by now, so nothing is held back.
        let until_ms = if speedup > 0.0 {
            let clock = clock.get_or_insert_with(|| Clock {
                sim_origin_ms: due_ms,
                wall_origin: Instant::now(),
                speedup,
            });
            let now_ms = clock.sim_now();
            if due_ms > now_ms {
                tokio::select! {
                    _ = tokio::time::sleep_until(clock.wall_at(due_ms)) => continue,
                    _ = cx.shutdown.requested() => return Outcome::Stopped,
                }
            }
            now_ms
        } else {
            Millis::MAX
        };

        let started = std::time::Instant::now();
        feed.fill(&mut scratch, batch_size, until_ms);
        let mut fixes = take_batch(&mut scratch, batch_size);
        if fixes.is_empty() {
            tokio::task::yield_now().await;
            continue;
        }
        progress.advance(fixes.len() as u64);
        let spans = sample(cx.metrics.telemetry().tracer(), &mut fixes);
        let sent = output.send(Batch::unacked(Events::Fixes(fixes))).await;
        drop(spans);
        cx.metrics.processing.observe(started.elapsed());
        if sent.is_err() {
            return Outcome::Closed;
        }
    }
}

/// Makes the entry's sampling decision for each new fix and opens the emit
/// span of each one sampled; the spans end when dropped, once sent.
fn sample(tracer: &Tracer, fixes: &mut [Fix]) -> Vec<Span> {
    let sampler = tracer.sampler();
    if !sampler.is_active() {
        return Vec::new();
    }
    let mut spans = Vec::new();
    for fix in fixes {
        fix.ctx.trace = sampler.decide(&fix.obu_id, fix.ctx.trace);
        if let Some(mut span) = tracer.start(&mut fix.ctx, "obu_sim.emit", SpanKind::Producer) {
            span.set("obu.id", fix.obu_id.as_str());
            span.set("toll.fix.time_ms", fix.ts_ms);
            spans.push(span);
        }
    }
    spans
}

/// Hands out the filled scratch vector. A full one is given away whole (no
/// copy); a small paced batch is copied into a vector of its own size so the
/// scratch capacity is kept instead of shipping mostly empty buffers.
fn take_batch(scratch: &mut Vec<Fix>, batch_size: usize) -> Vec<Fix> {
    if scratch.len() * 2 >= batch_size {
        std::mem::replace(scratch, Vec::with_capacity(batch_size))
    } else {
        let mut fixes = Vec::with_capacity(scratch.len());
        fixes.append(scratch);
        fixes
    }
}
