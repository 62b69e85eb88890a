use tokio::sync::oneshot;

use super::*;
use crate::ack::{Ack, AckStatus};

/// A batch of fixes encoded as the numbers `first..first + count`.
fn batch(first: u32, count: u32) -> (Vec<Box<[u8]>>, AckSet, oneshot::Receiver<AckStatus>) {
    let fixes = (first..first + count).map(|n| n.to_string().into_bytes().into()).collect();
    let (ack, status) = Ack::channel();
    (fixes, AckSet::one(ack), status)
}

fn push(backlog: &mut Backlog, first: u32, count: u32) -> oneshot::Receiver<AckStatus> {
    let (fixes, acks, status) = batch(first, count);
    backlog.push(fixes, acks);
    status
}

fn frame_text(backlog: &mut Backlog, frame: u64, max: usize) -> String {
    backlog.next_frame(frame, max).expect("a frame is due").text
}

#[test]
fn frames_take_waiting_fixes_in_order_up_to_the_limit() {
    let mut backlog = Backlog::new(100);
    let _first = push(&mut backlog, 1, 3);
    let _second = push(&mut backlog, 4, 2);

    assert_eq!(frame_text(&mut backlog, 1, 4), "[1,2,3,4]");
    assert_eq!(frame_text(&mut backlog, 2, 4), "[5]");
    assert_eq!(backlog.next_frame(3, 4), None);
    assert_eq!(backlog.open(), 5);
}

#[test]
fn batch_is_released_only_when_every_frame_holding_it_is_acknowledged() {
    let mut backlog = Backlog::new(100);
    let mut first = push(&mut backlog, 1, 3);
    let mut second = push(&mut backlog, 4, 1);
    frame_text(&mut backlog, 1, 2); // fixes 1, 2
    frame_text(&mut backlog, 2, 2); // fixes 3, 4

    assert_eq!(backlog.settle(2), Some(2));
    assert_eq!(second.try_recv(), Ok(AckStatus::Delivered));
    assert!(first.try_recv().is_err(), "fixes 1 and 2 are not acknowledged yet");

    assert_eq!(backlog.settle(1), Some(2));
    assert_eq!(first.try_recv(), Ok(AckStatus::Delivered));
    assert!(backlog.is_empty());
}

#[test]
fn unknown_or_repeated_frame_settles_nothing() {
    let mut backlog = Backlog::new(100);
    let _status = push(&mut backlog, 1, 1);
    frame_text(&mut backlog, 1, 10);

    assert_eq!(backlog.settle(7), None);
    assert_eq!(backlog.settle(1), Some(1));
    assert_eq!(backlog.settle(1), None);
}

#[test]
fn reopened_frame_is_sent_again_before_later_fixes() {
    let mut backlog = Backlog::new(100);
    let _status = push(&mut backlog, 1, 5);
    frame_text(&mut backlog, 1, 2); // 1, 2
    frame_text(&mut backlog, 2, 2); // 3, 4

    assert_eq!(backlog.reopen(1), Some(2));

    assert_eq!(frame_text(&mut backlog, 3, 10), "[1,2]");
    assert_eq!(frame_text(&mut backlog, 4, 10), "[5]");
}

#[test]
fn rewind_resends_everything_unacknowledged_in_order() {
    let mut backlog = Backlog::new(100);
    let mut status = push(&mut backlog, 1, 4);
    frame_text(&mut backlog, 1, 1); // 1
    frame_text(&mut backlog, 2, 1); // 2
    frame_text(&mut backlog, 3, 1); // 3
    backlog.settle(2);

    backlog.rewind();

    // Frame numbers restart with the new connection; a frame stops at the
    // acknowledged fix 2, so the resent fixes keep their order.
    assert_eq!(frame_text(&mut backlog, 1, 10), "[1]");
    assert_eq!(frame_text(&mut backlog, 2, 10), "[3,4]");
    assert_eq!(backlog.settle(1), Some(1));
    assert_eq!(backlog.settle(2), Some(2));
    assert_eq!(status.try_recv(), Ok(AckStatus::Delivered));
}

#[test]
fn room_counts_settled_fixes_behind_an_open_one() {
    let mut backlog = Backlog::new(3);
    let _a = push(&mut backlog, 1, 1);
    let _b = push(&mut backlog, 2, 2);
    assert!(!backlog.has_room(1));

    frame_text(&mut backlog, 1, 1); // 1 stays open
    frame_text(&mut backlog, 2, 2);
    backlog.settle(2);

    assert_eq!(backlog.open(), 1);
    assert!(!backlog.has_room(1), "fixes 2 and 3 still sit behind fix 1");
    backlog.settle(1);
    assert!(backlog.has_room(3));
}

#[test]
fn empty_backlog_takes_a_batch_larger_than_its_bound() {
    let mut backlog = Backlog::new(2);

    assert!(backlog.has_room(5));
    let _status = push(&mut backlog, 1, 5);
    assert!(!backlog.has_room(1));
}

#[test]
fn empty_batch_is_released_at_once() {
    let mut backlog = Backlog::new(2);
    let (_, acks, mut status) = batch(0, 0);

    backlog.push(Vec::new(), acks);

    assert_eq!(status.try_recv(), Ok(AckStatus::Delivered));
    assert!(backlog.is_empty());
}

#[test]
fn abandon_fails_open_batches_and_spares_settled_ones() {
    let mut backlog = Backlog::new(100);
    let mut settled = push(&mut backlog, 1, 1);
    let mut open = push(&mut backlog, 2, 2);
    frame_text(&mut backlog, 1, 1);
    backlog.settle(1);

    assert_eq!(backlog.abandon(), 2);

    assert_eq!(settled.try_recv(), Ok(AckStatus::Delivered));
    assert_eq!(open.try_recv(), Ok(AckStatus::Failed));
    assert!(backlog.is_empty() && backlog.has_room(100));
}
