//! End-to-end acknowledgements.
//!
//! A source that must know when its events are safely handled (to commit a
//! Kafka offset, or to confirm a frame to an OBU) attaches an [`Ack`] to the
//! batch it sends. Every copy of the batch on every branch holds a clone; the
//! source's callback runs once, when the last clone is dropped, and learns
//! whether any holder marked the events as failed.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use smallvec::SmallVec;

/// What happened to the events behind an acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckStatus {
    /// Every component downstream is done with the events.
    Delivered,
    /// At least one component could not handle them (for example the store
    /// refused a write); the source must not advance past them.
    Failed,
}

type Callback = Box<dyn FnOnce(AckStatus) + Send>;

struct Inner {
    failed: AtomicBool,
    // Only touched in `drop`, through `get_mut`, so it is never locked.
    callback: Mutex<Option<Callback>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let status = if *self.failed.get_mut() { AckStatus::Failed } else { AckStatus::Delivered };
        let callback = self.callback.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(callback) = callback {
            callback(status);
        }
    }
}

/// One source's claim on a batch; cloning it adds a holder.
#[derive(Clone)]
pub struct Ack(Arc<Inner>);

impl Ack {
    /// Runs `callback` once every clone of the returned handle is dropped.
    pub fn new(callback: impl FnOnce(AckStatus) + Send + 'static) -> Self {
        Ack(Arc::new(Inner {
            failed: AtomicBool::new(false),
            callback: Mutex::new(Some(Box::new(callback))),
        }))
    }

    /// An acknowledgement whose status is read from a channel.
    pub fn channel() -> (Self, tokio::sync::oneshot::Receiver<AckStatus>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ack = Ack::new(move |status| {
            // The receiver may be gone when the source stopped waiting.
            let _ = tx.send(status);
        });
        (ack, rx)
    }

    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack").field("holders", &Arc::strong_count(&self.0)).finish()
    }
}

/// The acknowledgements of a batch. Most batches come from one source and hold
/// one; merged batches hold several.
#[derive(Clone, Debug, Default)]
pub struct AckSet(SmallVec<[Ack; 1]>);

impl AckSet {
    pub fn one(ack: Ack) -> Self {
        let mut set = AckSet::default();
        set.0.push(ack);
        set
    }

    pub fn push(&mut self, ack: Ack) {
        self.0.push(ack);
    }

    pub fn extend(&mut self, other: AckSet) {
        self.0.extend(other.0);
    }

    pub fn fail(&self) {
        self.0.iter().for_each(Ack::fail);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Ack> + '_ {
        self.0.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_runs_once_after_last_clone_is_dropped() {
        let (ack, mut rx) = Ack::channel();
        let branch = ack.clone();
        drop(ack);
        assert!(rx.try_recv().is_err(), "one holder is still alive");
        drop(branch);
        assert_eq!(rx.try_recv().unwrap(), AckStatus::Delivered);
    }

    #[test]
    fn failure_on_any_branch_fails_the_whole_ack() {
        let (ack, mut rx) = Ack::channel();
        let set = AckSet::one(ack.clone());
        set.fail();
        drop(set);
        drop(ack);
        assert_eq!(rx.try_recv().unwrap(), AckStatus::Failed);
    }
}
