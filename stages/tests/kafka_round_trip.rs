//! Fixes through a real Kafka topic: one queue produces, another consumes.

mod kafka_support;

use std::collections::BTreeMap;

use kafka_support::*;
use stages::ack::AckStatus;
use stages::event::Fix;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_arrive_whole_and_in_order_per_obu() {
    let topic = unique("round-trip");
    let config = config(&topic, &unique("group"), "partitions = 4\nmax_batch_events = 50");
    let producing = start_producing(&config);

    // Three OBUs, interleaved, in batches of 30.
    let sent: Vec<Fix> =
        (0..300).map(|i| fix(&format!("obu-{}", i % 3), 1_700_000_000_000 + i, 42 + i)).collect();
    let mut acks = Vec::new();
    for chunk in sent.chunks(30) {
        let (batch, ack) = acked_batch(chunk.to_vec());
        producing.input.send(batch).await.unwrap();
        acks.push(ack);
    }
    for ack in acks {
        assert_eq!(ack.await.unwrap(), AckStatus::Delivered);
    }

    let mut consuming = start_consuming(&config);
    let batches = consuming.batches_with(sent.len()).await;
    let mut received: BTreeMap<String, Vec<Fix>> = BTreeMap::new();
    for batch in &batches {
        for fix in fixes_of(batch) {
            received.entry(fix.obu_id.to_string()).or_default().push(fix.clone());
        }
    }
    for obu in ["obu-0", "obu-1", "obu-2"] {
        let expected: Vec<Fix> = sent.iter().filter(|f| f.obu_id == obu).cloned().collect();
        assert_eq!(received[obu], expected, "fixes of {obu}");
    }

    drop(batches);
    drop(producing.input);
    producing.task.await.unwrap().unwrap();
    consuming.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_acknowledges_only_what_the_broker_holds() {
    let topic = unique("acked");
    let config = config(&topic, &unique("group"), "partitions = 2");
    let producing = start_producing(&config);

    let (batch, ack) = acked_batch((0..25).map(|i| fix("obu-a", 1_000 + i, 7)).collect());
    producing.input.send(batch).await.unwrap();
    assert_eq!(ack.await.unwrap(), AckStatus::Delivered);

    // When the acknowledgement arrives the broker already holds every message.
    let held: i64 = high_watermarks(&topic, 2).iter().sum();
    assert_eq!(held, 25);
    assert_eq!(producing.telemetry.counter_sum("toll_kafka_produced_total", &[]), 25);
    drop(producing.input);
    producing.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusal_fails_the_batch_acknowledgement() {
    // The topic takes no message as large as a fix.
    let topic = unique("refused");
    create_topic(&topic, 1, &[("max.message.bytes", "16")]).await;
    let producing = start_producing(&config(&topic, &unique("group"), ""));

    let (batch, ack) = acked_batch(vec![fix("obu-a", 1_000, 7)]);
    producing.input.send(batch).await.unwrap();

    assert_eq!(ack.await.unwrap(), AckStatus::Failed);
    assert_eq!(producing.telemetry.counter_sum("toll_kafka_produced_total", &[]), 0);
    assert!(producing.telemetry.counter_sum("toll_component_errors_total", &[]) >= 1);
    drop(producing.input);
    producing.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_queue_may_produce_and_consume_the_same_topic() {
    use stages::component::{Component, Context, Input, Output, Shutdown};
    use stages::telemetry::Telemetry;

    let config = config(&unique("both"), &unique("group"), "partitions = 1");
    let telemetry = Telemetry::new();
    let Ok(Component::Queue(queue)) = build(&config, &telemetry) else { panic!("queue builds") };
    let (input, input_rx) = tokio::sync::mpsc::channel(4);
    let (output_tx, mut output) = tokio::sync::mpsc::channel(4);
    let (stop, shutdown) = Shutdown::new();
    let metrics = telemetry.component("fixes", "queue", "kafka");
    let cx = Context { name: "fixes".into(), metrics, shutdown };
    let io = (Some(Input::new(input_rx, None)), Some(Output::new(vec![output_tx], None)));
    let task = tokio::spawn(queue.run(io.0, io.1, cx));

    let sent = vec![fix("obu-b", 5, 1), fix("obu-b", 6, 2)];
    let (batch, ack) = acked_batch(sent.clone());
    input.send(batch).await.unwrap();
    assert_eq!(ack.await.unwrap(), AckStatus::Delivered);
    let got = tokio::time::timeout(PATIENCE, output.recv()).await.unwrap().unwrap();
    assert_eq!(fixes_of(&got), sent.as_slice());

    drop((got, input));
    let _ = stop.send(true);
    drop(output);
    task.await.unwrap().unwrap();
}
