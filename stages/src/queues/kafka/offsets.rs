//! Which consumed offsets are done, and which may therefore be committed.
//!
//! Messages of a partition are read in offset order and handed out in
//! batches; a batch covers one contiguous range of each partition it read
//! from. A range stays open until the batch's acknowledgement arrives. The
//! offset a partition may commit is the first of its open ranges (everything
//! below was read earlier and is done), or one past the last offset read when
//! nothing is open. A failed batch leaves its range open for good, so the
//! partition's committed offset never passes it.
//!
//! Rebalances number the assignments: a batch remembers the generation it was
//! read in, and its ranges count only while its partitions are still assigned
//! since then, so a late acknowledgement from a revoked assignment cannot move
//! a later one's offsets.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::ack::AckStatus;

/// The offsets one batch covers in one partition, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

#[derive(Debug)]
struct Partition {
    /// The generation in which this partition was assigned.
    assigned_in: u64,
    /// One past the highest offset read.
    read_to: Option<i64>,
    /// Ranges handed out and not yet done: first offset to last.
    open: BTreeMap<i64, i64>,
    /// The first offset read since the assignment.
    started_at: Option<i64>,
    /// The last offset committed (the next one to read).
    committed: Option<i64>,
}

impl Partition {
    fn commit_point(&self) -> Option<i64> {
        self.open.keys().next().copied().or(self.read_to)
    }

    /// The commit point, when it is past the last commit (or the first read).
    fn due(&self) -> Option<i64> {
        let point = self.commit_point()?;
        (Some(point) > self.committed.or(self.started_at)).then_some(point)
    }

    /// Offsets between the last commit (or the first read) and `offset`.
    fn advance(&self, offset: i64) -> u64 {
        let from = self.committed.or(self.started_at).unwrap_or(offset);
        offset.saturating_sub(from).max(0) as u64
    }
}

/// An offset to commit, and by how many offsets it moves the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub partition: i32,
    pub offset: i64,
    pub advance: u64,
}

#[derive(Debug, Default)]
struct Book {
    partitions: HashMap<i32, Partition>,
}

/// Shared by the consume loop, the acknowledgement callbacks and the
/// consumer's rebalance callbacks.
#[derive(Clone)]
pub struct Offsets {
    book: Arc<Mutex<Book>>,
    generation: Arc<AtomicU64>,
    /// Batches handed out and not yet acknowledged.
    outstanding: Arc<watch::Sender<usize>>,
}

impl Default for Offsets {
    fn default() -> Self {
        Offsets {
            book: Arc::default(),
            generation: Arc::default(),
            outstanding: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Offsets {
    /// The current assignment generation; it changes on every rebalance.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Partitions were assigned to this consumer.
    pub fn assign(&self, partitions: &[i32]) {
        let mut book = self.lock();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        for &partition in partitions {
            let fresh = Partition {
                assigned_in: generation,
                read_to: None,
                open: BTreeMap::new(),
                started_at: None,
                committed: None,
            };
            book.partitions.insert(partition, fresh);
        }
    }

    /// Partitions were taken away; returns the offsets to commit for them.
    pub fn revoke(&self, partitions: &[i32]) -> Vec<Commit> {
        let mut book = self.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut commits = Vec::new();
        for partition in partitions {
            let Some(state) = book.partitions.remove(partition) else { continue };
            if let Some(offset) = state.due() {
                commits.push(Commit {
                    partition: *partition,
                    offset,
                    advance: state.advance(offset),
                });
            }
        }
        commits
    }

    /// Records the ranges of a batch read in `generation`; ranges of
    /// partitions no longer assigned since then are not tracked.
    pub fn open(&self, generation: u64, ranges: &[Range]) {
        let mut book = self.lock();
        for range in ranges {
            let Some(state) = current(&mut book, generation, range.partition) else { continue };
            state.open.insert(range.first, range.last);
            state.started_at.get_or_insert(range.first);
            state.read_to = Some(state.read_to.unwrap_or(0).max(range.last + 1));
        }
        drop(book);
        self.outstanding.send_modify(|n| *n += 1);
    }

    /// The batch of `ranges` was acknowledged.
    pub fn finish(&self, generation: u64, ranges: &[Range], status: AckStatus) {
        if status == AckStatus::Delivered {
            let mut book = self.lock();
            for range in ranges {
                if let Some(state) = current(&mut book, generation, range.partition) {
                    state.open.remove(&range.first);
                }
            }
        }
        self.outstanding.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Partitions whose commit point moved past what was last committed.
    pub fn to_commit(&self) -> Vec<Commit> {
        let book = self.lock();
        let mut commits: Vec<Commit> = book
            .partitions
            .iter()
            .filter_map(|(partition, state)| {
                let offset = state.due()?;
                Some(Commit { partition: *partition, offset, advance: state.advance(offset) })
            })
            .collect();
        commits.sort_unstable_by_key(|c| c.partition);
        commits
    }

    /// The broker accepted `offset` for `partition`; returns by how many
    /// offsets the partition's committed position moved.
    pub fn committed(&self, partition: i32, offset: i64) -> u64 {
        let mut book = self.lock();
        let Some(state) = book.partitions.get_mut(&partition) else { return 0 };
        if state.committed >= Some(offset) {
            return 0;
        }
        let advance = state.advance(offset);
        state.committed = Some(offset);
        advance
    }

    /// Waits until every batch handed out has been acknowledged.
    pub async fn drained(&self) {
        let mut rx = self.outstanding.subscribe();
        // The sender lives in `self`, so waiting cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // The book holds plain numbers; a panic elsewhere leaves it usable.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The partition's state if it has been assigned since `generation` began.
fn current(book: &mut Book, generation: u64, partition: i32) -> Option<&mut Partition> {
    book.partitions.get_mut(&partition).filter(|state| state.assigned_in <= generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(partition: i32, first: i64, last: i64) -> Range {
        Range { partition, first, last }
    }

    fn points(offsets: &Offsets) -> Vec<(i32, i64)> {
        offsets.to_commit().iter().map(|c| (c.partition, c.offset)).collect()
    }

    #[test]
    fn commit_waits_for_the_oldest_open_batch() {
        let offsets = Offsets::default();
        offsets.assign(&[0]);
        let generation = offsets.generation();
        offsets.open(generation, &[range(0, 0, 9)]);
        offsets.open(generation, &[range(0, 10, 19)]);

        offsets.finish(generation, &[range(0, 10, 19)], AckStatus::Delivered);
        assert!(points(&offsets).is_empty(), "offsets 0..9 are still open");

        offsets.finish(generation, &[range(0, 0, 9)], AckStatus::Delivered);
        assert_eq!(points(&offsets), vec![(0, 20)]);
    }

    #[test]
    fn failed_batch_holds_its_partition_back_for_good() {
        let offsets = Offsets::default();
        offsets.assign(&[0, 1]);
        let generation = offsets.generation();
        offsets.open(generation, &[range(0, 5, 7), range(1, 0, 3)]);
        offsets.open(generation, &[range(0, 8, 9)]);
        offsets.finish(generation, &[range(0, 5, 7), range(1, 0, 3)], AckStatus::Failed);
        offsets.finish(generation, &[range(0, 8, 9)], AckStatus::Delivered);
        assert!(points(&offsets).is_empty(), "both partitions wait for the failed batch");
    }

    #[test]
    fn committed_positions_are_not_committed_again() {
        let offsets = Offsets::default();
        offsets.assign(&[3]);
        let generation = offsets.generation();
        offsets.open(generation, &[range(3, 100, 149)]);
        offsets.finish(generation, &[range(3, 100, 149)], AckStatus::Delivered);
        assert_eq!(offsets.to_commit(), vec![Commit { partition: 3, offset: 150, advance: 50 }]);
        assert_eq!(offsets.committed(3, 150), 50);
        assert!(offsets.to_commit().is_empty());
    }

    #[test]
    fn acknowledgement_from_a_revoked_assignment_is_ignored() {
        let offsets = Offsets::default();
        offsets.assign(&[0]);
        let old = offsets.generation();
        offsets.open(old, &[range(0, 0, 9)]);
        assert!(offsets.revoke(&[0]).is_empty(), "nothing was done");
        offsets.assign(&[0]);
        let new = offsets.generation();
        offsets.open(new, &[range(0, 0, 4)]);

        offsets.finish(old, &[range(0, 0, 9)], AckStatus::Delivered);
        assert!(points(&offsets).is_empty(), "the new reading of 0..4 is still open");
    }

    #[tokio::test]
    async fn drained_completes_when_every_batch_is_acknowledged() {
        let offsets = Offsets::default();
        offsets.assign(&[0]);
        offsets.open(offsets.generation(), &[range(0, 0, 0)]);
        let waiting = offsets.clone();
        let wait = tokio::spawn(async move { waiting.drained().await });
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        offsets.finish(offsets.generation(), &[range(0, 0, 0)], AckStatus::Failed);
        wait.await.unwrap();
    }
}
