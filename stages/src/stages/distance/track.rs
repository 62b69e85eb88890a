//! Judging each fix against the path of its vehicle.
//!
//! Fixes arrive here one OBU at a time, in time order. The filter keeps the
//! last accepted fix (the *anchor*, where billing resumes) and decides each
//! fix once a few later ones are known:
//! - a position equal to the previous one (a receiver's heartbeat while
//!   stopped) or to one of the last few (an old fix sent again) is dropped;
//! - a fix the vehicle cannot have reached from the anchor at `max_speed` is
//!   dropped, unless several such fixes agree with each other, in which case
//!   the anchor was the bad one and billing restarts from them (the jump itself
//!   is not billed);
//! - a fix within `stationary_radius` of the centre of the positions seen
//!   around the anchor is parking jitter and bills nothing;
//! - a fix from which the path turns straight back within a short time is a
//!   spike (a position ahead on the road followed by an older one, or a jump
//!   to the side);
//! - leaving the stationary cluster must be confirmed by every fix of the
//!   lookahead, so one stray fix does not move a parked vehicle.
//!
//! Accepted fixes bill the geodesic chord from the anchor. Chords cut the
//! corners of curved roads, so a chord whose both ends turn the same way is
//! lengthened to the arc of a circle with that mean turn (capped).
//!
//! The parameters were tuned on the Hof floating-car data against
//! hand-corrected routes; the figures are in `tests/accuracy_hof.rs`.

use serde::Deserialize;
use smallvec::SmallVec;

use super::checks::Reason;
use super::reorder::Pending;
use crate::event::{Chord, TrackState};
use crate::geo;
use crate::registry::FieldError;

/// The filter's settings: `[stages.NAME.filters]` of a distance stage.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackParams {
    /// Speed no vehicle reaches; faster jumps from the anchor are refused.
    pub max_speed_kmh: f64,
    /// Radius of parking jitter around a stopped vehicle; about three times
    /// the receivers' position noise.
    pub stationary_radius_m: f64,
    /// Later fixes seen before a fix is decided (more: steadier, but slower).
    pub lookahead_fixes: usize,
    /// Least extra length a detour through a fix must add to be a spike.
    pub spike_detour_m: f64,
    /// Ratio of the detour's length to the direct line above which the path
    /// turns back (2 is a turn of about 120 degrees).
    pub spike_ratio: f64,
    /// Turn-backs slower than this are real U-turns, not spikes.
    pub spike_window_s: f64,
    /// Agreeing fixes that prove the anchor wrong.
    pub recover_after_fixes: usize,
    /// Recent positions an exact repeat is compared with.
    pub resent_depth: usize,
    /// Largest turn the curve correction assumes for one chord; 0 disables it.
    pub curve_max_deg: f64,
}

impl Default for TrackParams {
    fn default() -> Self {
        TrackParams {
            max_speed_kmh: 250.0,
            stationary_radius_m: 12.0,
            lookahead_fixes: 3,
            spike_detour_m: 40.0,
            spike_ratio: 2.0,
            spike_window_s: 60.0,
            recover_after_fixes: 3,
            resent_depth: 4,
            curve_max_deg: 45.0,
        }
    }
}

impl TrackParams {
    pub fn validate(&self) -> Result<(), FieldError> {
        let positive = [("max_speed_kmh", self.max_speed_kmh), ("spike_ratio", self.spike_ratio)];
        for (key, value) in positive {
            if !value.is_finite() || value <= 0.0 {
                return Err(FieldError::at(key, "must be a finite number above zero"));
            }
        }
        let non_negative = [
            ("stationary_radius_m", self.stationary_radius_m),
            ("spike_detour_m", self.spike_detour_m),
            ("spike_window_s", self.spike_window_s),
            ("curve_max_deg", self.curve_max_deg),
        ];
        for (key, value) in non_negative {
            if !value.is_finite() || value < 0.0 {
                return Err(FieldError::at(key, "must be a finite number, zero or more"));
            }
        }
        if self.curve_max_deg > 90.0 {
            return Err(FieldError::at("curve_max_deg", "must be at most 90"));
        }
        if !(1..=8).contains(&self.recover_after_fixes) {
            return Err(FieldError::at("recover_after_fixes", "must be from 1 to 8"));
        }
        if self.lookahead_fixes > 8 {
            return Err(FieldError::at("lookahead_fixes", "must be at most 8"));
        }
        if !(1..=16).contains(&self.resent_depth) {
            return Err(FieldError::at("resent_depth", "must be from 1 to 16"));
        }
        Ok(())
    }

    fn max_speed_m_per_ms(&self) -> f64 {
        self.max_speed_kmh / 3.6 / 1000.0
    }
}

/// What the filter decided about one fix.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Billed: distance from the anchor (fix time `from_ms`) to this fix,
    /// measured on `chord` (plus the previous chord's curve correction),
    /// after which the filter's state is `state`.
    Segment {
        from_ms: i64,
        metres: f64,
        chord: Chord,
        state: TrackState,
    },
    /// Taken as the start of billing, with no distance (the first fix, or
    /// the fix billing restarts from after a bad anchor).
    First,
    Reject(Reason),
}

/// Positions seen around the anchor while the vehicle stands, and their
/// centre as a local frame for cheap distance checks.
#[derive(Clone, Copy, Debug, Default)]
struct Cluster {
    n: f64,
    lat_sum: f64,
    lon_sum: f64,
    centre: geo::LocalFrame,
}

impl Cluster {
    fn at(fix: &Pending) -> Self {
        Cluster {
            n: 1.0,
            lat_sum: fix.lat,
            lon_sum: fix.lon,
            centre: geo::LocalFrame::at(fix.lat, fix.lon),
        }
    }

    fn add(&mut self, fix: &Pending) {
        self.n += 1.0;
        self.lat_sum += fix.lat;
        self.lon_sum += fix.lon;
        self.centre = geo::LocalFrame::at(self.lat_sum / self.n, self.lon_sum / self.n);
    }

    fn distance_m(&self, fix: &Pending) -> f64 {
        self.centre.distance_m(fix.lat, fix.lon)
    }

    fn state(&self) -> (f64, f64, f64) {
        (self.n, self.lat_sum, self.lon_sum)
    }

    fn from_state((n, lat_sum, lon_sum): (f64, f64, f64)) -> Self {
        let n = n.max(1.0);
        let centre = geo::LocalFrame::at(lat_sum / n, lon_sum / n);
        Cluster { n, lat_sum, lon_sum, centre }
    }
}

type Fixes = SmallVec<[Pending; 4]>;

/// One vehicle's filter state.
#[derive(Default)]
pub struct Track {
    anchor: Option<Pending>,
    cluster: Cluster,
    recent: SmallVec<[(f64, f64); 4]>,
    queue: Fixes,
    bad_run: Fixes,
    chord: Option<Chord>,
}

impl Track {
    /// Takes the next fix in time order; calls `decide` for every fix whose
    /// fate is now known (possibly none, possibly earlier ones).
    pub fn push(
        &mut self,
        fix: Pending,
        p: &TrackParams,
        mut decide: impl FnMut(Pending, Decision),
    ) {
        let place = (fix.lat, fix.lon);
        let checked = &self.recent[self.recent.len().saturating_sub(p.resent_depth)..];
        if checked.last() == Some(&place) {
            return decide(fix, Decision::Reject(Reason::RepeatedPosition));
        }
        if checked.contains(&place) {
            return decide(fix, Decision::Reject(Reason::ResentPosition));
        }
        // Room for the undecided fixes besides the decided ones a snapshot
        // must keep (see `snapshot`).
        if self.recent.len() >= p.resent_depth + p.lookahead_fixes + p.recover_after_fixes {
            self.recent.remove(0);
        }
        self.recent.push(place);

        if self.anchor.is_none() {
            self.restart_at(fix);
            return decide(fix, Decision::First);
        }
        self.queue.push(fix);
        while self.queue.len() > p.lookahead_fixes {
            self.decide_front(p, &mut decide);
        }
    }

    /// Decides every fix still waiting, with whatever lookahead is left (the
    /// input ended, or the vehicle went quiet).
    pub fn finish(&mut self, p: &TrackParams, mut decide: impl FnMut(Pending, Decision)) {
        while !self.queue.is_empty() {
            self.decide_front(p, &mut decide);
        }
        for fix in self.bad_run.drain(..) {
            decide(fix, Decision::Reject(Reason::ImplausibleSpeed));
        }
    }

    /// What a restart needs to go on exactly as if there had been none,
    /// given that every fix not yet decided is delivered again: the anchor,
    /// the parked cluster and the positions of the last decided fixes.
    pub fn snapshot(&self, p: &TrackParams) -> TrackState {
        let anchor = self.anchor.map(|a| (a.ts_ms, a.lat, a.lon)).unwrap_or_default();
        let undecided = self.queue.len() + self.bad_run.len();
        let decided = &self.recent[..self.recent.len().saturating_sub(undecided)];
        let kept = &decided[decided.len().saturating_sub(p.resent_depth)..];
        TrackState { anchor, cluster: self.cluster.state(), recent: kept.iter().copied().collect() }
    }

    /// Goes on from a snapshot taken by an earlier run, with the chord that
    /// ended there.
    pub fn restore(&mut self, state: &TrackState, chord: Option<Chord>) {
        let (ts_ms, lat, lon) = state.anchor;
        let ctx = crate::event::EventContext::default();
        // The anchor is never decided again, so it holds no acknowledgement.
        self.anchor = Some(Pending { ts_ms, lat, lon, ctx, slot: 0 });
        self.cluster = Cluster::from_state(state.cluster);
        self.recent = state.recent.iter().copied().collect();
        self.chord = chord;
    }

    /// The chord of the last billed segment.
    pub fn chord(&self) -> Option<Chord> {
        self.chord
    }

    /// Fixes waiting for a decision.
    pub fn held(&self) -> usize {
        self.queue.len() + self.bad_run.len()
    }

    fn decide_front(&mut self, p: &TrackParams, decide: &mut impl FnMut(Pending, Decision)) {
        let b = self.queue.remove(0);
        let Some(a) = self.anchor else {
            self.restart_at(b);
            return decide(b, Decision::First);
        };
        let d_ab = geo::distance_m(a.lat, a.lon, b.lat, b.lon);

        if d_ab > p.max_speed_m_per_ms() * (b.ts_ms - a.ts_ms) as f64 {
            return self.too_fast(b, p, decide);
        }
        for fix in self.bad_run.drain(..) {
            decide(fix, Decision::Reject(Reason::ImplausibleSpeed));
        }

        if self.cluster.distance_m(&b) < p.stationary_radius_m {
            self.cluster.add(&b);
            return decide(b, Decision::Reject(Reason::Stationary));
        }
        if let Some(c) = self.queue.first() {
            if is_spike(&a, &b, c, d_ab, p) {
                return decide(b, Decision::Reject(Reason::Spike));
            }
            if self.queue.iter().any(|x| self.cluster.distance_m(x) < p.stationary_radius_m) {
                return decide(b, Decision::Reject(Reason::UnconfirmedMove));
            }
        }
        let (correction, chord) = self.curve_correction(&a, &b, d_ab, p);
        self.restart_at(b);
        let state = self.snapshot(p);
        decide(b, Decision::Segment { from_ms: a.ts_ms, metres: d_ab + correction, chord, state });
    }

    /// A fix too far from the anchor: refused, unless enough of them agree.
    fn too_fast(
        &mut self,
        b: Pending,
        p: &TrackParams,
        decide: &mut impl FnMut(Pending, Decision),
    ) {
        let joins_run = self.bad_run.last().is_some_and(|last| {
            let d = geo::distance_m(last.lat, last.lon, b.lat, b.lon);
            d <= p.max_speed_m_per_ms() * (b.ts_ms - last.ts_ms) as f64
        });
        if !joins_run {
            for fix in self.bad_run.drain(..) {
                decide(fix, Decision::Reject(Reason::ImplausibleSpeed));
            }
        }
        self.bad_run.push(b);
        if self.bad_run.len() < p.recover_after_fixes {
            return;
        }
        // The run agrees with itself and not with the anchor: the anchor was
        // wrong. Billing restarts at the run's first fix; the rest is judged again.
        let mut run = std::mem::take(&mut self.bad_run);
        let first = run.remove(0);
        self.restart_at(first);
        self.chord = None;
        decide(first, Decision::First);
        for (i, fix) in run.into_iter().enumerate() {
            self.queue.insert(i, fix);
        }
    }

    fn restart_at(&mut self, fix: Pending) {
        self.anchor = Some(fix);
        self.cluster = Cluster::at(&fix);
    }

    /// Extra length of the previous chord, known now that the turn at its end
    /// is, and the new chord from `a` to `b`.
    fn curve_correction(
        &mut self,
        a: &Pending,
        b: &Pending,
        d_ab: f64,
        p: &TrackParams,
    ) -> (f64, Chord) {
        let bearing_deg = bearing_deg(a, b);
        let previous = self.chord.take();
        let turn_in_deg = previous.map(|c| wrap_deg(bearing_deg - c.bearing_deg));
        let chord = Chord { metres: d_ab, bearing_deg, turn_in_deg };
        self.chord = Some(chord);
        let (Some(prev), Some(turn_out)) = (previous, turn_in_deg) else {
            return (0.0, chord);
        };
        let correction = match prev.turn_in_deg {
            Some(turn_in) if p.curve_max_deg > 0.0 && turn_in * turn_out > 0.0 => {
                let turn = ((turn_in + turn_out).abs() / 2.0).min(p.curve_max_deg);
                let half = turn.to_radians() / 2.0;
                if half < 1e-9 {
                    0.0
                } else {
                    prev.metres * (half / half.sin() - 1.0)
                }
            }
            _ => 0.0,
        };
        (correction, chord)
    }
}

/// Whether the path A→B→C turns back at B within the spike window.
fn is_spike(a: &Pending, b: &Pending, c: &Pending, d_ab: f64, p: &TrackParams) -> bool {
    if (c.ts_ms - a.ts_ms) as f64 > p.spike_window_s * 1000.0 {
        return false;
    }
    let d_bc = geo::distance_m(b.lat, b.lon, c.lat, c.lon);
    let d_ac = geo::distance_m(a.lat, a.lon, c.lat, c.lon);
    d_ab + d_bc - d_ac > p.spike_detour_m && d_ab + d_bc > p.spike_ratio * d_ac
}

/// Initial bearing from `a` to `b` in degrees from north, on the local
/// tangent plane (exact enough for the turn angles between short chords).
fn bearing_deg(a: &Pending, b: &Pending) -> f64 {
    let north = b.lat - a.lat;
    let east = wrap_deg(b.lon - a.lon) * ((a.lat + b.lat) * 0.5).to_radians().cos();
    east.atan2(north).to_degrees()
}

fn wrap_deg(angle: f64) -> f64 {
    (angle + 180.0).rem_euclid(360.0) - 180.0
}
