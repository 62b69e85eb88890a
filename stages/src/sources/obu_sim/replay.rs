//! Replaying loaded fixes: file or time order, repeats, and the replay clock.
//!
//! The replay clock is the largest fix time sent so far. It is every fix's
//! receive time and, in paced mode, the time a fix is due: a row whose time
//! goes backwards (files grouped by trip) is sent at once, as late data would
//! arrive, and a downstream check of fix time against receive time behaves on
//! an old recording as it would live.

use super::config::{ReplayConfig, ReplayOrder};
use super::emit::Feed;
use crate::event::{Fix, Millis};

pub struct ReplayFeed {
    fixes: Vec<Fix>,
    repeat_each: u32,
    /// The next row, and how many of its copies were sent.
    next: usize,
    copies_sent: u32,
    clock_ms: Millis,
}

impl ReplayFeed {
    pub fn new(config: &ReplayConfig, mut fixes: Vec<Fix>) -> Self {
        if config.order == ReplayOrder::Time {
            // Stable, so rows with equal times keep their file order.
            fixes.sort_by_key(|f| f.ts_ms);
        }
        ReplayFeed {
            fixes,
            repeat_each: config.repeat_each,
            next: 0,
            copies_sent: 0,
            clock_ms: Millis::MIN,
        }
    }

    /// Fixes the replay will send, repeats included.
    pub fn total(&self) -> u64 {
        self.fixes.len() as u64 * u64::from(self.repeat_each)
    }
}

impl Feed for ReplayFeed {
    fn next_due_ms(&mut self) -> Option<Millis> {
        let fix = self.fixes.get(self.next)?;
        Some(fix.ts_ms.max(self.clock_ms))
    }

    fn fill(&mut self, out: &mut Vec<Fix>, limit: usize, until_ms: Millis) {
        while out.len() < limit {
            let Some(fix) = self.fixes.get(self.next) else { return };
            let due_ms = fix.ts_ms.max(self.clock_ms);
            if due_ms > until_ms {
                return;
            }
            self.clock_ms = due_ms;
            let mut copy = fix.clone();
            copy.ctx.received_ms = due_ms;
            out.push(copy);

            self.copies_sent += 1;
            if self.copies_sent == self.repeat_each {
                (self.next, self.copies_sent) = (self.next + 1, 0);
            }
        }
    }
}
