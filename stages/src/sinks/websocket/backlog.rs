//! The fixes the sink holds, in input order, until the receiver acknowledged them.
//!
//! Every fix gets a sequence number when it comes in. A frame carries a run of
//! consecutive fixes that are neither in flight nor done; a reply settles
//! (or, for a `nack`, reopens) exactly the fixes of its frame. The
//! acknowledgements of an input batch are released once every fix of that
//! batch is settled, whatever order the replies came in.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use crate::ack::AckSet;

/// One encoded fix; `bytes` is `None` once it is settled.
#[derive(Debug)]
struct Slot {
    bytes: Option<Box<[u8]>>,
    in_flight: bool,
}

/// The acknowledgements of one input batch and how many of its fixes are open.
#[derive(Debug)]
struct Held {
    /// Sequence number just past the batch's last fix.
    end: u64,
    remaining: usize,
    acks: AckSet,
}

/// A frame ready to be written.
#[derive(Debug, PartialEq)]
pub struct Frame {
    /// A JSON array of the fixes.
    pub text: String,
    pub fixes: usize,
}

/// A bounded, ordered store of fixes waiting for their acknowledgement.
#[derive(Debug)]
pub struct Backlog {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    base: u64,
    /// Every fix before this sequence number is in flight or settled.
    cursor: u64,
    batches: VecDeque<Held>,
    /// The fixes of each frame in flight on the current connection.
    frames: BTreeMap<u64, Range<u64>>,
    /// Fixes not settled yet.
    open: usize,
    capacity: usize,
}

impl Backlog {
    pub fn new(capacity: usize) -> Self {
        Backlog {
            slots: VecDeque::new(),
            base: 0,
            cursor: 0,
            batches: VecDeque::new(),
            frames: BTreeMap::new(),
            open: 0,
            capacity,
        }
    }

    /// Whether `fixes` more fit. Settled fixes behind an open one still take
    /// room, which keeps memory bounded when one old frame is never answered.
    /// An empty backlog takes a batch of any size, which could never fit otherwise.
    pub fn has_room(&self, fixes: usize) -> bool {
        self.slots.is_empty() || self.slots.len() + fixes <= self.capacity
    }

    /// Fixes not acknowledged yet.
    pub fn open(&self) -> usize {
        self.open
    }

    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    /// Takes in the encoded fixes of one batch together with its acknowledgements.
    pub fn push(&mut self, fixes: Vec<Box<[u8]>>, acks: AckSet) {
        if fixes.is_empty() {
            return; // Nothing to deliver: dropping `acks` releases them now.
        }
        let count = fixes.len();
        let end = self.end() + count as u64;
        self.slots.extend(fixes.into_iter().map(|b| Slot { bytes: Some(b), in_flight: false }));
        self.batches.push_back(Held { end, remaining: count, acks });
        self.open += count;
    }

    /// Whether some fix waits to be sent on the current connection.
    pub fn has_unsent(&mut self) -> bool {
        while self.cursor < self.end() {
            let slot = &self.slots[self.index(self.cursor)];
            if slot.bytes.is_some() && !slot.in_flight {
                return true;
            }
            self.cursor += 1;
        }
        false
    }

    /// Puts up to `max_fixes` waiting fixes in flight as frame number `frame`.
    pub fn next_frame(&mut self, frame: u64, max_fixes: usize) -> Option<Frame> {
        if !self.has_unsent() {
            return None;
        }
        let start = self.cursor;
        let mut text = String::from("[");
        while self.cursor < self.end() && self.cursor - start < max_fixes as u64 {
            let index = self.index(self.cursor);
            let slot = &mut self.slots[index];
            let Some(bytes) = slot.bytes.as_deref().filter(|_| !slot.in_flight) else { break };
            if self.cursor > start {
                text.push(',');
            }
            // Encoded by serde_json, so always UTF-8.
            text.push_str(&String::from_utf8_lossy(bytes));
            slot.in_flight = true;
            self.cursor += 1;
        }
        text.push(']');
        self.frames.insert(frame, start..self.cursor);
        Some(Frame { text, fixes: (self.cursor - start) as usize })
    }

    /// Settles the fixes of `frame`: acknowledged, or refused for good.
    /// Returns how many there were, `None` for a frame not in flight.
    pub fn settle(&mut self, frame: u64) -> Option<usize> {
        let range = self.frames.remove(&frame)?;
        let mut batch = self.batches.partition_point(|held| held.end <= range.start);
        for seq in range.clone() {
            let index = self.index(seq);
            if self.slots[index].bytes.take().is_none() {
                continue;
            }
            self.open -= 1;
            while self.batches[batch].end <= seq {
                batch += 1;
            }
            let held = &mut self.batches[batch];
            held.remaining -= 1;
            if held.remaining == 0 {
                drop(std::mem::take(&mut held.acks));
            }
        }
        self.compact();
        Some((range.end - range.start) as usize)
    }

    /// Makes the fixes of `frame` wait to be sent again, ahead of later ones.
    ///
    /// Missing: ordering against frames already in flight. Frames sent after
    /// the nacked one are not recalled, so the receiver may see the resent
    /// fixes after newer ones of the same OBU; its distance stage then drops
    /// them as late unless its reorder window still covers them.
    pub fn reopen(&mut self, frame: u64) -> Option<usize> {
        let range = self.frames.remove(&frame)?;
        for seq in range.clone() {
            let index = self.index(seq);
            self.slots[index].in_flight = false;
        }
        self.cursor = self.cursor.min(range.start);
        Some((range.end - range.start) as usize)
    }

    /// The connection is gone: every fix in flight waits to be sent again.
    pub fn rewind(&mut self) {
        self.frames.clear();
        self.slots.iter_mut().for_each(|slot| slot.in_flight = false);
        self.cursor = self.base;
    }

    /// Gives up on every open fix, marking the acknowledgements of their
    /// batches as failed; returns how many fixes were given up.
    pub fn abandon(&mut self) -> usize {
        let abandoned = self.open;
        for held in self.batches.drain(..).filter(|held| held.remaining > 0) {
            held.acks.fail();
        }
        self.base = self.end();
        self.cursor = self.base;
        self.slots.clear();
        self.frames.clear();
        self.open = 0;
        abandoned
    }

    /// Drops settled fixes and released batches from the front.
    fn compact(&mut self) {
        while self.slots.front().is_some_and(|slot| slot.bytes.is_none()) {
            self.slots.pop_front();
            self.base += 1;
        }
        self.cursor = self.cursor.max(self.base);
        while self.batches.front().is_some_and(|held| held.remaining == 0) {
            self.batches.pop_front();
        }
    }

    fn end(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    fn index(&self, seq: u64) -> usize {
        (seq - self.base) as usize
    }
}

#[cfg(test)]
#[path = "backlog_tests.rs"]
mod tests;
