//! The `websocket` sink's bounded backlog: a receiver that is down slows the
//! input instead of losing fixes, and shutdown gives up after the drain time.

mod websocket_sink_support;

use std::time::Duration;

use stages::ack::AckStatus;
use websocket_sink_support::*;

#[tokio::test]
async fn full_backlog_stops_taking_input_until_the_receiver_is_up() {
    let addr = vacant_addr().await;
    let extra = "backlog_fixes = 4\nreconnect_min_ms = 10\nreconnect_max_ms = 50";
    let sink = start_sink(&format!("ws://{addr}/ws"), extra, 1);
    let all = fixes(0, 10);
    let mut batches: Vec<_> = all.chunks(2).map(|pair| acked(pair.to_vec())).collect();
    let (last, last_status) = batches.pop().expect("five batches");
    let mut statuses = Vec::new();

    // Two batches fill the backlog, a third waits in the sink, a fourth in the channel.
    for (batch, status) in batches {
        sink.send(batch).await;
        statuses.push(status);
    }
    sink.wait_for_backlog(4).await;
    let blocked =
        tokio::time::timeout(Duration::from_millis(300), sink.input.reserve()).await.is_err();

    assert!(blocked, "the sink must not take more input while its backlog is full");
    assert_eq!(sink.telemetry.counter_sum("toll_component_received_events_total", &[]), 6);
    for status in &mut statuses {
        assert!(status.try_recv().is_err(), "nothing released while the receiver is down");
    }

    let mut receiver = start_receiver(addr, 64);
    let input = sink.input.clone();
    let late = tokio::spawn(async move { input.send(last).await.is_ok() });
    let received = receiver.collect_acking(all.len()).await;

    let all_keys: Vec<Key> = all.iter().map(key).collect();
    assert_eq!(received.iter().map(key).collect::<Vec<_>>(), all_keys);
    assert!(late.await.expect("sender not panicked"), "the last batch was taken");
    statuses.push(last_status);
    for status in statuses {
        assert_eq!(status_of(status).await, AckStatus::Delivered);
    }
    sink.finish().await.expect("sink ends cleanly");
}

#[tokio::test]
async fn shutdown_with_the_receiver_down_fails_the_undelivered_acks() {
    let addr = vacant_addr().await;
    let extra = "drain_timeout_ms = 50\nreconnect_min_ms = 10\nreconnect_max_ms = 20";
    let sink = start_sink(&format!("ws://{addr}/ws"), extra, 4);
    let (batch, status) = acked(fixes(0, 3));
    sink.send(batch).await;
    sink.wait_for_backlog(3).await;

    sink.stop.send(true).expect("sink listens for shutdown");
    let ended = tokio::time::timeout(PATIENCE, sink.task).await.expect("sink gives up in time");

    ended.expect("sink not panicked").expect("giving up is not a crash");
    assert_eq!(status_of(status).await, AckStatus::Failed);
    assert_eq!(sink.telemetry.counter_sum("toll_component_errors_total", &[]), 1);
}
