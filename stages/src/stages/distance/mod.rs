//! The `distance` stage: per-OBU geodesic distance, with bad fixes filtered.
//!
//! Every fix goes through three steps, each of which may refuse it with a
//! counted [`Reason`]:
//! 1. [`checks`]: the fix on its own (coordinates, time against receive time);
//! 2. [`reorder`]: the fix among its OBU's fixes (order, duplicates, lateness);
//! 3. [`track`]: the fix against the vehicle's path (speed, spikes, jitter).
//!
//! What passes becomes a [`Segment`] from the previous accepted fix, measured
//! on the WGS-84 ellipsoid ([`crate::geo`]).

pub mod acks;
pub mod checks;
mod ledger;
pub mod reorder;
mod traced;
pub mod track;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::ack::AckSet;
use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Input, Kind, Output, RunResult,
    Signature, Stage,
};
use crate::event::{Batch, EventKind, Events, ObuId, Segment};
use crate::registry::{self, ComponentType, FieldError, Validate};
use crate::store::{BilledEnd, Durability, SqliteStore};
use crate::telemetry::{ComponentMetrics, Counter};
use acks::AckSlots;
use checks::{Reason, Skew};
use ledger::{checkpoint, decide, Ledger};
use reorder::{Buffer, Pending, Schedule};
use track::{Track, TrackParams};

pub const TYPE: ComponentType = ComponentType {
    name: "distance",
    kind: Kind::Stage,
    about: "per-OBU geodesic distance (WGS-84) with filters for bad fixes",
    parse: registry::parse::<DistanceConfig>,
};

/// `[stages.NAME] type = "distance"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistanceConfig {
    /// How long a fix waits for earlier fixes that arrive late, by receive time.
    #[serde(default = "default_reorder_window_s")]
    pub reorder_window_s: f64,
    /// Fixes dated further than this after their receipt are refused (`future`).
    #[serde(default = "default_max_future_s")]
    pub max_future_s: f64,
    /// Fixes dated further than this before their receipt are refused (`stale`).
    #[serde(default = "default_max_past_s")]
    pub max_past_s: f64,
    /// Receive-clock time after which a quiet OBU's last fixes are decided
    /// with the lookahead they have, so its distance is billed without waiting
    /// for it to drive on.
    #[serde(default = "default_idle_flush_s")]
    pub idle_flush_s: f64,
    /// What to do at a stop (SIGTERM) with fixes still waiting for lookahead:
    /// `true` decides them with what is known; `false` leaves them undecided
    /// and unacknowledged, so that a queue that delivers them again (Kafka)
    /// hands them to the next process, which decides them exactly as an
    /// uninterrupted run would. Input that simply ends (a replay) is always
    /// decided in full.
    #[serde(default = "default_decide_held_on_stop")]
    pub decide_held_on_stop: bool,
    /// The aggregate's store (`sqlite://PATH`): an OBU seen for the first
    /// time resumes from the end of its last billed segment there, so that
    /// fixes delivered again after a restart are neither lost nor billed twice.
    #[serde(default)]
    pub store: Option<String>,
    /// The filters that judge a fix against the vehicle's path.
    #[serde(default)]
    pub filters: TrackParams,
}

fn default_decide_held_on_stop() -> bool {
    true
}

fn default_idle_flush_s() -> f64 {
    120.0
}

fn default_reorder_window_s() -> f64 {
    30.0
}

fn default_max_future_s() -> f64 {
    300.0
}

fn default_max_past_s() -> f64 {
    7.0 * 24.0 * 3600.0
}

impl Validate for DistanceConfig {
    fn validate(&self) -> Result<(), FieldError> {
        for (key, value) in [
            ("reorder_window_s", self.reorder_window_s),
            ("max_future_s", self.max_future_s),
            ("max_past_s", self.max_past_s),
            ("idle_flush_s", self.idle_flush_s),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(FieldError::at(
                    key,
                    "must be a finite number of seconds, zero or more",
                ));
            }
        }
        if let Some(store) = &self.store {
            crate::store::sqlite_path(store).map_err(|e| FieldError::at("store", e.to_string()))?;
        }
        self.filters.validate().map_err(|mut e| {
            e.path.insert(0, "filters".to_owned());
            e
        })
    }
}

impl ComponentConfig for DistanceConfig {
    fn signature(&self) -> Signature {
        Signature::transform(EventKind::Fix, EventKind::Segment)
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        let metrics = cx.telemetry.component(cx.name, Kind::Stage.as_str(), TYPE.name);
        let resume = match &self.store {
            Some(url) => {
                let path = crate::store::sqlite_path(url)
                    .map_err(|e| BuildError::with("bad store url", e))?;
                let store = SqliteStore::open(&path, Durability::Normal).map_err(|e| {
                    BuildError::with(format!("cannot open store {}", path.display()), e)
                })?;
                Some(Arc::new(store))
            }
            None => None,
        };
        // A reload that changed the settings keeps every OBU's track: the
        // fixes held for ordering and lookahead, the last decided positions,
        // and the acknowledgements they carry.
        let mut stage = match cx.take_over::<Box<Distance>>() {
            Some(mut previous) => {
                previous.reconfigure(self);
                previous
            }
            None => Box::new(Distance::new(self, &metrics)),
        };
        stage.resume = resume;
        Ok(Component::Stage(stage))
    }
}

/// Everything the stage knows about one OBU.
struct Obu {
    id: ObuId,
    buffer: Buffer,
    track: Track,
    /// Receive time of the newest fix handed to the track filter.
    last_tracked_ms: i64,
    ledger: Ledger,
}

/// The stage's state; also driven directly by benchmarks and tests.
pub struct Distance {
    window_ms: i64,
    idle_ms: i64,
    skew: Skew,
    params: TrackParams,
    index: ahash::HashMap<ObuId, u32>,
    obus: Vec<Obu>,
    schedule: Schedule,
    /// When quiet OBUs' filters should be finished.
    idle: Schedule,
    slots: AckSlots,
    outcomes: Outcomes,
    decide_held_on_stop: bool,
    /// Where OBUs seen for the first time resume from.
    resume: Option<Arc<SqliteStore>>,
}

/// What became of fixes: every fix the stage receives ends up in exactly one
/// of these counters, or is still held.
struct Outcomes {
    by_reason: [Counter; Reason::ALL.len()],
    /// Fixes that ended a billed segment.
    billed: Counter,
    /// Fixes that started billing (an OBU's first, or a restart after a bad anchor).
    first: Counter,
    /// The spans of traced fixes not decided yet.
    traced: traced::TracedFixes,
}

impl Outcomes {
    fn register(metrics: &ComponentMetrics) -> Self {
        Outcomes {
            by_reason: Reason::ALL.map(|r| metrics.rejected(r.as_str())),
            billed: metrics.counter("toll_distance_billed_fixes_total"),
            first: metrics.counter("toll_distance_first_fixes_total"),
            traced: traced::TracedFixes::new(metrics.telemetry().tracer().clone()),
        }
    }

    fn count(&self, reason: Reason) {
        self.by_reason[reason.index()].add(1);
    }
}

/// What the stage hands on: segments, and the acknowledgements of batches
/// whose fixes are all decided.
#[derive(Debug, Default)]
pub struct Decided {
    pub segments: Vec<Segment>,
    pub acks: AckSet,
}

impl Decided {
    fn into_batch(self) -> Batch {
        Batch::new(Events::Segments(self.segments), self.acks)
    }
}

impl Distance {
    /// A stage that reports its outcomes through `metrics`.
    pub fn new(config: &DistanceConfig, metrics: &ComponentMetrics) -> Self {
        Distance {
            window_ms: (config.reorder_window_s * 1000.0) as i64,
            skew: checks::Skew {
                max_future_ms: (config.max_future_s * 1000.0) as i64,
                max_past_ms: (config.max_past_s * 1000.0) as i64,
            },
            idle_ms: (config.idle_flush_s * 1000.0) as i64,
            params: config.filters.clone(),
            index: ahash::HashMap::default(),
            obus: Vec::new(),
            schedule: Schedule::default(),
            idle: Schedule::default(),
            slots: AckSlots::default(),
            outcomes: Outcomes::register(metrics),
            decide_held_on_stop: config.decide_held_on_stop,
            resume: None,
        }
    }

    /// Takes new settings; what is known of each OBU stays. Fixes already
    /// admitted keep the reorder deadline they were given.
    fn reconfigure(&mut self, config: &DistanceConfig) {
        self.window_ms = (config.reorder_window_s * 1000.0) as i64;
        self.skew = checks::Skew {
            max_future_ms: (config.max_future_s * 1000.0) as i64,
            max_past_ms: (config.max_past_s * 1000.0) as i64,
        };
        self.idle_ms = (config.idle_flush_s * 1000.0) as i64;
        self.params = config.filters.clone();
        self.decide_held_on_stop = config.decide_held_on_stop;
    }

    /// Resumes OBUs from the ends of their billed segments in `store`.
    pub fn resume_from(&mut self, store: Arc<SqliteStore>) {
        self.resume = Some(store);
    }

    /// Takes a batch of fixes; adds to `out` whatever became decided.
    pub fn ingest(&mut self, batch: Batch, out: &mut Decided) {
        let Events::Fixes(fixes) = batch.events else {
            return;
        };
        let slot = self.slots.open(batch.acks);
        // Most fixes end a segment; growing the vector while filling it
        // would move every segment several times.
        out.segments.reserve(fixes.len());
        for fix in fixes {
            let mut ctx = fix.ctx;
            let span = self.outcomes.traced.start(&fix, &mut ctx);
            if let Some(reason) = checks::check(&fix, self.skew) {
                self.outcomes.count(reason);
                traced::refused(span, reason);
                continue;
            }
            let obu = self.obu_index(&fix.obu_id);
            let pending = Pending { ts_ms: fix.ts_ms, lat: fix.lat, lon: fix.lon, ctx, slot };
            match self.obus[obu as usize].buffer.admit(pending) {
                Ok(()) => {
                    self.slots.hold(slot);
                    self.schedule.buffered(obu, fix.ctx.received_ms, self.window_ms);
                    self.outcomes.traced.hold(span);
                }
                Err(reason) => {
                    self.outcomes.count(reason);
                    traced::refused(span, reason);
                }
            }
        }
        self.slots.release(slot, &mut out.acks);
        self.release_due(out);
    }

    /// Lets the receive clock run on while no fix arrives.
    pub fn advance_clock(&mut self, now_ms: i64, out: &mut Decided) {
        self.schedule.advance_to(now_ms);
        self.release_due(out);
    }

    pub fn clock_ms(&self) -> i64 {
        self.schedule.clock_ms()
    }

    /// Decides every fix still held (the input ended).
    pub fn flush(&mut self, out: &mut Decided) {
        let (params, slots, outcomes) = (&self.params, &mut self.slots, &self.outcomes);
        for obu in &mut self.obus {
            let (id, ledger) = (&obu.id, &mut obu.ledger);
            let mut on_decision = |f, d| decide(id, ledger, f, d, slots, out, outcomes);
            while let Some(fix) = obu.buffer.pop_any() {
                obu.track.push(fix, params, &mut on_decision);
            }
            obu.track.finish(params, &mut on_decision);
            checkpoint(&obu.id, &mut obu.ledger, &obu.track, params, slots, out);
        }
        self.schedule.clear();
        self.idle.clear();
    }

    /// Fixes waiting in buffers or in the track filters.
    pub fn held(&self) -> usize {
        self.obus.iter().map(|o| o.buffer.len() + o.track.held()).sum()
    }

    fn release_due(&mut self, out: &mut Decided) {
        let (clock, window) = (self.schedule.clock_ms(), self.window_ms);
        let idle_after = window.saturating_add(self.idle_ms);
        let (params, slots, outcomes) = (&self.params, &mut self.slots, &self.outcomes);
        while let Some(i) = self.schedule.next_due() {
            let obu = &mut self.obus[i as usize];
            let (id, ledger) = (&obu.id, &mut obu.ledger);
            while let Some(fix) = obu.buffer.pop_due(clock, window) {
                obu.last_tracked_ms = fix.ctx.received_ms;
                self.idle.buffered(i, fix.ctx.received_ms, idle_after);
                obu.track.push(fix, params, |f, d| decide(id, ledger, f, d, slots, out, outcomes));
            }
            checkpoint(&obu.id, &mut obu.ledger, &obu.track, params, slots, out);
        }
        self.idle.advance_to(clock);
        while let Some(i) = self.idle.next_due() {
            let obu = &mut self.obus[i as usize];
            let quiet = obu.last_tracked_ms.saturating_add(idle_after) <= clock;
            if quiet && obu.buffer.is_empty() && obu.track.held() > 0 {
                let (id, ledger) = (&obu.id, &mut obu.ledger);
                obu.track.finish(params, |f, d| decide(id, ledger, f, d, slots, out, outcomes));
                checkpoint(&obu.id, &mut obu.ledger, &obu.track, params, slots, out);
            }
        }
    }

    fn obu_index(&mut self, id: &ObuId) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.obus.len() as u32;
        let mut obu = Obu {
            id: id.clone(),
            buffer: Buffer::default(),
            track: Track::default(),
            last_tracked_ms: 0,
            ledger: Ledger::default(),
        };
        if let Some(end) = self.billed_end(id) {
            // The last fix decided before; never decided again, so it holds
            // no acknowledgement slot.
            let ctx = crate::event::EventContext::default();
            let last = Pending { ts_ms: end.ts_ms, lat: end.lat, lon: end.lon, ctx, slot: 0 };
            obu.buffer.resume_after(last);
            obu.ledger.resume_after(last);
            obu.track.restore(&end.state, end.chord);
        }
        self.obus.push(obu);
        self.index.insert(id.clone(), i);
        i
    }
}

impl Distance {
    /// One lookup per OBU and run, the first time the OBU is seen.
    fn billed_end(&self, id: &ObuId) -> Option<BilledEnd> {
        let store = self.resume.as_ref()?;
        match store.billed_end(id) {
            Ok(end) => end,
            Err(error) => {
                // Billing then starts afresh for this OBU: the segment across
                // the restart is lost, but nothing is billed twice.
                let error = crate::error_chain(&error);
                tracing::warn!(obu_id = %id, %error, "cannot read where billing stopped");
                None
            }
        }
    }
}

impl Stage for Distance {
    fn run(
        mut self: Box<Self>,
        mut input: Input,
        output: Output,
        cx: Context,
    ) -> BoxFuture<'static, RunResult> {
        Box::pin(async move {
            let held = cx.metrics.gauge("toll_distance_held_fixes");
            let active = cx.metrics.gauge("toll_active_obus");
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_input = Instant::now();
            let mut clock_at_last_input = self.clock_ms();
            loop {
                let mut out = Decided::default();
                tokio::select! {
                    batch = input.recv() => match batch {
                        Some(batch) => {
                            self.ingest(batch, &mut out);
                            last_input = Instant::now();
                            clock_at_last_input = self.clock_ms();
                        }
                        None if cx.shutdown.handover_wanted() => {
                            // Replaced by a reload: the successor decides what is held.
                            let _ = output.send(out.into_batch()).await;
                            tracing::debug!(held = self.held(), "handing the tracks over");
                            cx.shutdown.leave(self);
                            return Ok(());
                        }
                        None => {
                            if self.decide_held_on_stop || !cx.shutdown.is_requested() {
                                self.flush(&mut out);
                            } else {
                                // Dropping the stage fails the acknowledgements of
                                // every fix it did not decide or persist.
                                tracing::info!(held = self.held(), "leaving held fixes undecided");
                            }
                            let _ = output.send(out.into_batch()).await;
                            return Ok(());
                        }
                    },
                    _ = tick.tick() => {
                        // With no input, the receive clock follows the wall clock,
                        // so a vehicle that went quiet still gets its last fixes billed.
                        // Shortcoming: this makes decisions depend on pacing. An input
                        // that pauses for longer than `idle_flush_s` mid-stream (a
                        // stalled upstream) has quiet OBUs' last fixes decided with
                        // less lookahead than a run without the pause would use; the
                        // distance billed can then differ by a few metres.
                        let idle_ms = last_input.elapsed().as_millis() as i64;
                        self.advance_clock(clock_at_last_input + idle_ms, &mut out);
                        held.set(self.held() as i64);
                        active.set(self.obus.len() as i64);
                    }
                }
                let sending = Instant::now();
                if output.send(out.into_batch()).await.is_err() {
                    tracing::warn!(stage = %cx.name, "every consumer stopped; distance stops");
                    return Ok(());
                }
                // Time spent waiting for a full output is not time without
                // input: the receive clock must not run on while fixes wait
                // upstream, or quiet OBUs would be decided too early.
                last_input += sending.elapsed();
            }
        })
    }
}
