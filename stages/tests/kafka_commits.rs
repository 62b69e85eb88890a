//! When the consuming side commits offsets, and where a restart resumes.

mod kafka_support;

use std::time::Duration;

use kafka_support::*;
use stages::ack::AckStatus;

const FAST_COMMITS: &str = "partitions = 1\ncommit_interval_ms = 50\nmax_batch_events = 10";

async fn produce(config: &stages::queues::kafka::KafkaQueueConfig, count: i64) {
    let producing = start_producing(config);
    let (batch, ack) = acked_batch((0..count).map(|i| fix("obu-c", 1_000 + i, 9)).collect());
    producing.input.send(batch).await.unwrap();
    assert_eq!(ack.await.unwrap(), AckStatus::Delivered);
    drop(producing.input);
    producing.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_batches_are_dropped() {
    let (topic, group) = (unique("commit"), unique("group"));
    let config = config(&topic, &group, FAST_COMMITS);
    produce(&config, 30).await;
    let mut consuming = start_consuming(&config);

    let batches = consuming.batches_with(30).await;
    // Many commit intervals pass while the test holds every batch.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(committed(&topic, &group, 1), vec![None]);

    drop(batches);
    eventually("committed offsets", || committed(&topic, &group, 1), |c| *c == vec![Some(30)])
        .await;
    let telemetry = consuming.telemetry.clone();
    let committed_total = || telemetry.counter_sum("toll_kafka_committed_offsets_total", &[]);
    eventually("committed offsets counter", committed_total, |n| *n == 30).await;
    consuming.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_consumer_resumes_after_the_last_done_batch() {
    let (topic, group) = (unique("resume"), unique("group"));
    let config = config(&topic, &group, FAST_COMMITS);
    produce(&config, 40).await;

    // The first batch is done; every later one fails downstream.
    let mut first_run = start_consuming(&config);
    let mut batches = first_run.batches_with(40).await.into_iter();
    let done = batches.next().unwrap();
    let done_count = done.len() as i64;
    drop(done);
    for failed in batches {
        failed.acks.fail();
    }
    first_run.stop().await.unwrap();
    assert_eq!(committed(&topic, &group, 1), vec![Some(done_count)]);

    // The same group reads again exactly the fixes that were not done.
    let mut second_run = start_consuming(&config);
    let again = second_run.batches_with((40 - done_count) as usize).await;
    let first_again = fixes_of(&again[0])[0].ts_ms;
    assert_eq!(first_again, 1_000 + done_count);
    drop(again);
    second_run.stop().await.unwrap();
    assert_eq!(committed(&topic, &group, 1), vec![Some(40)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_held_batches_then_commits_them() {
    let (topic, group) = (unique("drain"), unique("group"));
    let config = config(&topic, &group, "partitions = 1\ncommit_interval_ms = 3600000");
    produce(&config, 12).await;
    let mut consuming = start_consuming(&config);
    let batches = consuming.batches_with(12).await;

    let _ = consuming.stop.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!consuming.task.is_finished(), "the queue waits for the batches it handed out");

    drop(batches);
    consuming.stop().await.unwrap();
    assert_eq!(committed(&topic, &group, 1), vec![Some(12)]);
}
