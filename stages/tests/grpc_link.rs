//! Segments delivered from a `grpc` sink to a `grpc` source over a real gRPC
//! connection on 127.0.0.1: order, content, acknowledgements and retries.

mod grpc_support;

use grpc_support::{eventually, free_addr, segments, segments_of, start_server, start_sink};
use stages::ack::{Ack, AckSet, AckStatus};
use stages::event::{Batch, Events};

fn acked(
    segments: Vec<stages::event::Segment>,
) -> (Batch, tokio::sync::oneshot::Receiver<AckStatus>) {
    let (ack, status) = Ack::channel();
    (Batch::new(Events::Segments(segments), AckSet::one(ack)), status)
}

#[tokio::test]
async fn segments_arrive_in_order_with_every_field_intact() {
    let mut server = start_server("127.0.0.1:0".parse().unwrap(), None);
    let client = start_sink(server.addr, "");
    let sent = [segments("obu-1", 0..5), segments("obu-2", 0..7), segments("obu-1", 5..9)];

    for part in &sent {
        client.input.send(Batch::unacked(Events::Segments(part.clone()))).await.unwrap();
    }
    let expected: Vec<_> = sent.concat();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let batch = server.batches.recv().await.expect("server batch");
        received.extend(segments_of(&batch));
    }

    assert_eq!(received, expected);
}

#[tokio::test]
async fn sink_releases_acks_only_after_the_aggregator_drops_the_batch() {
    let mut server = start_server("127.0.0.1:0".parse().unwrap(), None);
    let client = start_sink(server.addr, "");
    let (batch, mut status) = acked(segments("obu-1", 0..3));

    client.input.send(batch).await.unwrap();
    let arrived = server.batches.recv().await.expect("server batch");
    assert!(status.try_recv().is_err(), "held while the aggregator holds the batch");
    drop(arrived);

    assert_eq!(status.await.unwrap(), AckStatus::Delivered);
    let calls = server.telemetry.counter_sum("toll_grpc_calls_total", &[("method", "Deliver")]);
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn sink_keeps_acks_while_the_server_is_down_and_delivers_once_it_is_up() {
    let addr = free_addr();
    let client = start_sink(addr, "");
    let (batch, mut status) = acked(segments("obu-3", 0..4));

    client.input.send(batch).await.unwrap();
    let errors = || client.telemetry.counter_sum("toll_grpc_call_errors_total", &[]);
    eventually("two failed calls", || errors() >= 2).await;
    assert!(status.try_recv().is_err(), "nothing was persisted yet");

    let mut server = start_server(addr, None);
    let arrived = server.batches.recv().await.expect("server batch");
    assert_eq!(segments_of(&arrived), segments("obu-3", 0..4));
    drop(arrived);
    assert_eq!(status.await.unwrap(), AckStatus::Delivered);
}

#[tokio::test]
async fn failed_commit_on_the_server_makes_the_client_send_again() {
    let mut server = start_server("127.0.0.1:0".parse().unwrap(), None);
    let client = start_sink(server.addr, "");
    let (batch, status) = acked(segments("obu-4", 0..6));

    client.input.send(batch).await.unwrap();
    let first = server.batches.recv().await.expect("first attempt");
    first.acks.fail();
    drop(first);
    let second = server.batches.recv().await.expect("second attempt");

    assert_eq!(segments_of(&second), segments("obu-4", 0..6));
    drop(second);
    assert_eq!(status.await.unwrap(), AckStatus::Delivered);
    assert_eq!(server.telemetry.counter_sum("toll_component_errors_total", &[]), 1);
}

#[tokio::test]
async fn large_batch_is_split_and_acknowledged_after_its_last_part() {
    let mut server = start_server("127.0.0.1:0".parse().unwrap(), None);
    let client = start_sink(server.addr, "max_batch_segments = 4");
    let (batch, mut status) = acked(segments("obu-5", 0..10));

    client.input.send(batch).await.unwrap();
    let mut sizes = Vec::new();
    let mut received = Vec::new();
    while received.len() < 10 {
        let part = server.batches.recv().await.expect("part");
        sizes.push(part.len());
        received.extend(segments_of(&part));
        if received.len() < 10 {
            assert!(status.try_recv().is_err(), "released before the last part");
        }
    }

    assert_eq!(sizes, [4, 4, 2]);
    assert_eq!(received, segments("obu-5", 0..10));
    assert_eq!(status.await.unwrap(), AckStatus::Delivered);
}

#[tokio::test]
async fn undelivered_acks_fail_once_the_shutdown_grace_is_over() {
    let client = start_sink(free_addr(), "shutdown_grace_ms = 200");
    let (first, first_status) = acked(segments("obu-6", 0..2));
    let (second, second_status) = acked(segments("obu-6", 2..4));

    client.input.send(first).await.unwrap();
    let errors = || client.telemetry.counter_sum("toll_grpc_call_errors_total", &[]);
    eventually("a failed call", || errors() >= 1).await;
    client.input.send(second).await.unwrap();
    client.running.stop.send(true).unwrap();
    drop(client.input);

    client.running.task.await.unwrap().expect("sink ends cleanly");
    assert_eq!(first_status.await.unwrap(), AckStatus::Failed);
    assert_eq!(second_status.await.unwrap(), AckStatus::Failed);
}

#[tokio::test]
async fn malformed_segment_is_refused_and_the_rest_persisted() {
    let mut server = start_server("127.0.0.1:0".parse().unwrap(), None);
    let client = start_sink(server.addr, "");
    let mut sent = segments("obu-7", 0..3);
    sent[1].to_lat = f64::NAN;

    client.input.send(Batch::unacked(Events::Segments(sent.clone()))).await.unwrap();
    let arrived = server.batches.recv().await.expect("server batch");

    assert_eq!(segments_of(&arrived), vec![sent[0].clone(), sent[2].clone()]);
    drop(arrived);
    let refused = || {
        client.telemetry.counter_sum(
            "toll_component_rejected_events_total",
            &[("reason", "refused_by_aggregator")],
        )
    };
    eventually("the refusal counted by the client", || refused() == 1).await;
    let invalid = &[("reason", "invalid_segment")];
    assert_eq!(server.telemetry.counter_sum("toll_component_rejected_events_total", invalid), 1);
}
