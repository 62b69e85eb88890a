//! Topic creation at start, and settings refused when the queue is built.

mod kafka_support;

use kafka_support::*;
use stages::ack::AckStatus;
use stages::telemetry::Telemetry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_is_created_with_the_configured_partitions() {
    let (topic, dlt) = (unique("created"), unique("created-dlt"));
    let extra = format!("partitions = 3\ndead_letter_topic = \"{dlt}\"");
    let producing = start_producing(&config(&topic, &unique("group"), &extra));

    // The first acknowledged batch proves the queue has finished starting.
    let (batch, ack) = acked_batch(vec![fix("obu-t", 1, 1)]);
    producing.input.send(batch).await.unwrap();
    assert_eq!(ack.await.unwrap(), AckStatus::Delivered);

    assert_eq!(partition_count(&topic), 3);
    assert_eq!(partition_count(&dlt), 3);
    drop(producing.input);
    producing.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_topic_is_used_as_it_is() {
    let topic = unique("existing");
    create_topic(&topic, 2, &[]).await;
    let producing = start_producing(&config(&topic, &unique("group"), "partitions = 7"));

    let (batch, ack) = acked_batch(vec![fix("obu-t", 1, 1)]);
    producing.input.send(batch).await.unwrap();
    assert_eq!(ack.await.unwrap(), AckStatus::Delivered);

    assert_eq!(partition_count(&topic), 2);
    drop(producing.input);
    producing.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_librdkafka_option_is_a_build_error_naming_it() {
    let config = config("t", "g", "options = { \"linger.msec\" = \"5\" }");
    let Err(error) = build(&config, &Telemetry::new()) else { panic!("the build must fail") };
    assert!(error.message.contains("`linger.msec`"), "{}", error.message);
    assert!(error.message.contains("`options`"), "{}", error.message);
    let cause = stages::error_chain(&error);
    assert!(cause.contains("No such configuration property"), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_option_value_is_a_build_error_naming_it() {
    let config = config("t", "g", "consumer_options = { \"fetch.wait.max.ms\" = \"soon\" }");
    let Err(error) = build(&config, &Telemetry::new()) else { panic!("the build must fail") };
    assert!(error.message.contains("`fetch.wait.max.ms`"), "{}", error.message);
    assert!(error.message.contains("`consumer_options`"), "{}", error.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_while_brokers_never_answer_fails_the_waiting_batches() {
    use stages::component::{Component, Context, Input, Shutdown};
    use stages::queues::kafka::KafkaQueueConfig;

    // A loopback port that was free a moment ago: nothing answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!("brokers = \"127.0.0.1:{port}\"\ntopic = \"t\"\ngroup = \"g\"");
    let config: KafkaQueueConfig = toml::from_str(&text).unwrap();
    let telemetry = Telemetry::new();
    let Ok(Component::Queue(queue)) = build(&config, &telemetry) else { panic!("queue builds") };
    let (input, rx) = tokio::sync::mpsc::channel(4);
    let (stop, shutdown) = Shutdown::new();
    let metrics = telemetry.component("fixes", "queue", "kafka");
    let cx = Context { name: "fixes".into(), metrics, shutdown };
    let task = tokio::spawn(queue.run(Some(Input::new(rx, None)), None, cx));

    let (batch, ack) = acked_batch(vec![fix("obu-u", 1, 1)]);
    input.send(batch).await.unwrap();
    let _ = stop.send(true);
    drop(input);

    assert_eq!(ack.await.unwrap(), AckStatus::Failed);
    task.await.unwrap().unwrap();
}
