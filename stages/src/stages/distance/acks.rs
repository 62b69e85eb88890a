//! Acknowledgements of fixes the distance stage is still holding.
//!
//! A batch's acknowledgements may only be released once every fix of the
//! batch is decided: billed into a segment or rejected. Fixes wait in the
//! reorder buffer (and a little longer for the spike check), so each batch
//! gets a slot that counts its undecided fixes; the slot's acknowledgements go
//! out with the segments of the output batch in which its count reaches zero.

use crate::ack::AckSet;

/// A batch's acknowledgements and the number of its fixes not yet decided.
struct Slot {
    acks: AckSet,
    pending: u32,
}

/// Reusable slots, so holding a fix never allocates.
#[derive(Default)]
pub struct AckSlots {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl AckSlots {
    /// Takes a batch's acknowledgements; the batch itself holds the slot until
    /// [`AckSlots::release`] is called for it once.
    pub fn open(&mut self, acks: AckSet) -> u32 {
        let slot = Slot { acks, pending: 1 };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// One more fix of the slot's batch is held.
    pub fn hold(&mut self, slot: u32) {
        self.slots[slot as usize].pending += 1;
    }

    /// One holder is done; when it was the last, the acknowledgements move to `out`.
    pub fn release(&mut self, slot: u32, out: &mut AckSet) {
        let entry = &mut self.slots[slot as usize];
        entry.pending -= 1;
        if entry.pending == 0 {
            out.extend(std::mem::take(&mut entry.acks));
            self.free.push(slot);
        }
    }

    /// Slots still holding fixes.
    pub fn open_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

/// Batches with fixes still undecided when the stage goes away (it was
/// aborted) were not handled: their sources must not advance past them.
impl Drop for AckSlots {
    fn drop(&mut self) {
        for slot in self.slots.iter().filter(|s| s.pending > 0) {
            slot.acks.fail();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{Ack, AckStatus};

    #[test]
    fn acks_leave_when_the_last_held_fix_is_decided() {
        let mut slots = AckSlots::default();
        let (ack, mut rx) = Ack::channel();
        let slot = slots.open(AckSet::one(ack));
        slots.hold(slot);
        let mut out = AckSet::default();
        slots.release(slot, &mut out);
        assert!(out.is_empty(), "a held fix keeps the batch open");
        slots.release(slot, &mut out);
        assert_eq!(out.len(), 1);
        drop(out);
        assert_eq!(rx.try_recv().unwrap(), AckStatus::Delivered);
        assert_eq!(slots.open_count(), 0);
        assert_eq!(slots.open(AckSet::default()), slot, "freed slots are reused");
    }

    #[test]
    fn acks_of_fixes_still_held_fail_when_the_stage_goes_away() {
        let mut slots = AckSlots::default();
        let (ack, mut rx) = Ack::channel();
        let slot = slots.open(AckSet::one(ack));
        slots.hold(slot);
        drop(slots);
        assert_eq!(rx.try_recv().unwrap(), AckStatus::Failed);
    }
}
