//! Putting each OBU's fixes in time order before distance is measured.
//!
//! Fixes wait in a per-OBU buffer sorted by fix time. Time here is the
//! receive clock: the largest receive time seen so far (for a replay, the
//! replay clock), which runs on with the wall clock while no fix arrives. A
//! fix leaves the buffer once the clock is `window` past its receipt, so a
//! fix that arrives up to `window` late still takes its place in the order.
//! One that arrives later, older than a fix already measured, is refused
//! rather than billed as a zigzag.

use std::collections::VecDeque;

use super::checks::Reason;
use crate::event::EventContext;

/// A fix waiting for its turn.
#[derive(Clone, Copy, Debug)]
pub struct Pending {
    pub ts_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub ctx: EventContext,
    /// The acknowledgement slot of the batch it came in.
    pub slot: u32,
}

impl Pending {
    fn same_place(&self, other: &Pending) -> bool {
        self.lat == other.lat && self.lon == other.lon
    }
}

/// One OBU's buffer and the last fix that left it.
#[derive(Default)]
pub struct Buffer {
    waiting: VecDeque<Pending>,
    last_out: Option<Pending>,
}

impl Buffer {
    /// Puts `fix` in its place, or says why it cannot be taken.
    pub fn admit(&mut self, fix: Pending) -> Result<(), Reason> {
        if let Some(last) = &self.last_out {
            if fix.ts_ms == last.ts_ms {
                return Err(if fix.same_place(last) {
                    Reason::Duplicate
                } else {
                    Reason::SameTime
                });
            }
            if fix.ts_ms < last.ts_ms {
                return Err(Reason::TooLate);
            }
        }
        // Fixes mostly arrive in order: then they simply go to the back.
        if self.waiting.back().is_none_or(|back| back.ts_ms < fix.ts_ms) {
            self.waiting.push_back(fix);
            return Ok(());
        }
        let at = self.waiting.partition_point(|w| w.ts_ms < fix.ts_ms);
        if let Some(twin) = self.waiting.get(at).filter(|w| w.ts_ms == fix.ts_ms) {
            return Err(if fix.same_place(twin) { Reason::Duplicate } else { Reason::SameTime });
        }
        self.waiting.insert(at, fix);
        Ok(())
    }

    /// Treats `fix` as already measured: older fixes are refused from now on.
    pub fn resume_after(&mut self, fix: Pending) {
        self.last_out = Some(fix);
    }

    /// Takes the oldest fix if it has waited long enough by the clock `now_ms`.
    pub fn pop_due(&mut self, now_ms: i64, window_ms: i64) -> Option<Pending> {
        let front = self.waiting.front()?;
        if front.ctx.received_ms.saturating_add(window_ms) > now_ms {
            return None;
        }
        self.pop_any()
    }

    /// Takes the oldest fix regardless of time (at the end of input).
    pub fn pop_any(&mut self) -> Option<Pending> {
        let fix = self.waiting.pop_front()?;
        self.last_out = Some(fix);
        Some(fix)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// When each OBU's buffer should next be looked at.
#[derive(Default)]
pub struct Schedule {
    /// (receive time + window, OBU index), in receive order.
    due: VecDeque<(i64, u32)>,
    clock_ms: i64,
}

impl Schedule {
    /// Notes that a fix received at `received_ms` was buffered for `obu`.
    pub fn buffered(&mut self, obu: u32, received_ms: i64, window_ms: i64) {
        self.clock_ms = self.clock_ms.max(received_ms);
        self.due.push_back((received_ms.saturating_add(window_ms), obu));
    }

    /// Moves the clock forward (never back).
    pub fn advance_to(&mut self, now_ms: i64) {
        self.clock_ms = self.clock_ms.max(now_ms);
    }

    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// The next OBU whose buffer may hold a due fix.
    pub fn next_due(&mut self) -> Option<u32> {
        match self.due.front() {
            Some(&(at, obu)) if at <= self.clock_ms => {
                self.due.pop_front();
                Some(obu)
            }
            _ => None,
        }
    }

    /// Forgets every entry (after everything was flushed).
    pub fn clear(&mut self) {
        self.due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts_ms: i64, received_ms: i64, lat: f64) -> Pending {
        let ctx = EventContext { received_ms, trace: None };
        Pending { ts_ms, lat, lon: 11.9, ctx, slot: 0 }
    }

    #[test]
    fn late_fix_within_window_is_reordered() {
        let mut buffer = Buffer::default();
        buffer.admit(at(2_000, 2_000, 50.0)).unwrap();
        buffer.admit(at(1_000, 2_500, 50.1)).unwrap();
        let first = buffer.pop_due(10_000, 5_000).unwrap();
        assert_eq!(first.ts_ms, 1_000);
        assert_eq!(buffer.pop_due(10_000, 5_000).unwrap().ts_ms, 2_000);
    }

    #[test]
    fn fix_older_than_what_was_measured_is_too_late() {
        let mut buffer = Buffer::default();
        buffer.admit(at(2_000, 2_000, 50.0)).unwrap();
        buffer.pop_any().unwrap();
        assert_eq!(buffer.admit(at(1_000, 9_000, 50.1)), Err(Reason::TooLate));
    }

    #[test]
    fn same_time_is_a_duplicate_only_at_the_same_place() {
        let mut buffer = Buffer::default();
        buffer.admit(at(1_000, 1_000, 50.0)).unwrap();
        assert_eq!(buffer.admit(at(1_000, 1_100, 50.0)), Err(Reason::Duplicate));
        assert_eq!(buffer.admit(at(1_000, 1_100, 50.2)), Err(Reason::SameTime));
        buffer.pop_any().unwrap();
        assert_eq!(buffer.admit(at(1_000, 1_100, 50.0)), Err(Reason::Duplicate));
    }

    #[test]
    fn fixes_wait_for_the_window_by_the_receive_clock() {
        let mut buffer = Buffer::default();
        buffer.admit(at(1_000, 1_000, 50.0)).unwrap();
        assert!(buffer.pop_due(5_999, 5_000).is_none());
        assert!(buffer.pop_due(6_000, 5_000).is_some());
    }

    #[test]
    fn schedule_hands_out_obus_once_their_time_has_come() {
        let mut schedule = Schedule::default();
        schedule.buffered(7, 1_000, 500);
        schedule.buffered(8, 1_200, 500);
        assert_eq!(schedule.next_due(), None);
        schedule.advance_to(1_600);
        assert_eq!(schedule.next_due(), Some(7));
        assert_eq!(schedule.next_due(), None);
    }
}
