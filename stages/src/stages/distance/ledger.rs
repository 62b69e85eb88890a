//! When the acknowledgements of decided fixes may go.
//!
//! A fix the filter decided still shapes how later fixes are judged (it may
//! be the anchor, part of the parked cluster or a recent position). Its
//! acknowledgement may only be released once a restart can recover that
//! knowledge, that is once the filter's state after it is persisted with a
//! segment. A billed fix carries the state itself; refused fixes and an
//! OBU's first fix wait for the next segment, or for a checkpoint: a segment
//! that bills nothing and only carries the state. Checkpoints are taken when
//! enough fixes wait, and when nothing of the OBU is undecided any more.

use smallvec::SmallVec;

use super::acks::AckSlots;
use super::reorder::Pending;
use super::track::{Decision, Track, TrackParams};
use super::{Decided, Outcomes};
use crate::event::{ObuId, Segment};

/// Refused fixes of one OBU that may wait for a segment before a checkpoint
/// is taken for them (bounds how much a restart delivers again).
const CHECKPOINT_AFTER_FIXES: usize = 32;

/// One OBU's decided fixes whose state is not persisted yet.
#[derive(Default)]
pub(super) struct Ledger {
    /// Acknowledgement slots of decided fixes waiting for a segment.
    deferred: SmallVec<[u32; 4]>,
    /// The newest fix decided.
    last_decided: Option<Pending>,
}

impl Ledger {
    /// Starts after a fix an earlier run decided and persisted.
    pub fn resume_after(&mut self, fix: Pending) {
        self.last_decided = Some(fix);
    }
}

/// Records a track decision: a segment to send on, or a counted refusal.
pub(super) fn decide(
    obu: &ObuId,
    ledger: &mut Ledger,
    fix: Pending,
    decision: Decision,
    slots: &mut AckSlots,
    out: &mut Decided,
    outcomes: &Outcomes,
) {
    ledger.last_decided = Some(fix);
    outcomes.traced.decided(&fix, &decision);
    match decision {
        Decision::Segment { from_ms, metres, chord, state } => {
            outcomes.billed.add(1);
            out.segments.push(Segment {
                obu_id: obu.clone(),
                from_ms,
                to_ms: fix.ts_ms,
                metres,
                to_lat: fix.lat,
                to_lon: fix.lon,
                chord: Some(chord),
                checkpoint: false,
                state,
                ctx: fix.ctx,
            });
            // The segment's state covers this fix and every one before it.
            slots.release(fix.slot, &mut out.acks);
            for slot in ledger.deferred.drain(..) {
                slots.release(slot, &mut out.acks);
            }
        }
        Decision::First => {
            outcomes.first.add(1);
            ledger.deferred.push(fix.slot);
        }
        Decision::Reject(reason) => {
            outcomes.count(reason);
            ledger.deferred.push(fix.slot);
        }
    }
}

/// Takes a checkpoint when enough fixes wait, or when `track` has nothing
/// undecided left (so nothing else would carry its state).
pub(super) fn checkpoint(
    obu: &ObuId,
    ledger: &mut Ledger,
    track: &Track,
    params: &TrackParams,
    slots: &mut AckSlots,
    out: &mut Decided,
) {
    let due = ledger.deferred.len() >= CHECKPOINT_AFTER_FIXES || track.held() == 0;
    let Some(last) = ledger.last_decided.filter(|_| due && !ledger.deferred.is_empty()) else {
        return;
    };
    out.segments.push(Segment {
        obu_id: obu.clone(),
        from_ms: last.ts_ms,
        to_ms: last.ts_ms,
        metres: 0.0,
        to_lat: last.lat,
        to_lon: last.lon,
        chord: track.chord(),
        checkpoint: true,
        state: track.snapshot(params),
        ctx: last.ctx,
    });
    for slot in ledger.deferred.drain(..) {
        slots.release(slot, &mut out.acks);
    }
}
