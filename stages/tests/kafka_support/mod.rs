//! A `kafka` queue against the real broker of `.ci/kafka.sh`, and plain
//! librdkafka clients to look at the topic from outside.

#![allow(dead_code)] // Each test file uses its own part of the harness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use stages::ack::{Ack, AckSet, AckStatus};
use stages::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Input, Output, Resources,
    RunResult, Shutdown,
};
use stages::event::{Batch, EventContext, Events, Fix};
use stages::queues::kafka::KafkaQueueConfig;
use stages::registry::Validate;
use stages::telemetry::Telemetry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Longest any single wait may take, so a broken queue fails the test
/// instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The broker's address; the test fails with instructions when it is unset.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KAFKA_BOOTSTRAP is not set: these tests need a Kafka broker. Start one with \
             `eval \"$(bash .ci/kafka.sh start)\"` (stop it with `bash .ci/kafka.sh stop`)"
        )
    })
}

/// A name no other test or earlier run uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// A queue declaration for `topic` and `group` plus `extra` TOML keys.
pub fn config(topic: &str, group: &str, extra: &str) -> KafkaQueueConfig {
    let text =
        format!("brokers = \"{}\"\ntopic = \"{topic}\"\ngroup = \"{group}\"\n{extra}", bootstrap());
    let config: KafkaQueueConfig = toml::from_str(&text).expect("test config parses");
    config.validate().expect("test config is valid");
    config
}

pub fn build(config: &KafkaQueueConfig, telemetry: &Telemetry) -> Result<Component, BuildError> {
    let mut resources = Resources::default();
    let mut cx =
        BuildContext { name: "fixes", inputs: Vec::new(), telemetry, resources: &mut resources };
    config.build(&mut cx)
}

fn context(telemetry: &Telemetry, shutdown: Shutdown) -> Context {
    Context {
        name: "fixes".into(),
        metrics: telemetry.component("fixes", "queue", "kafka"),
        shutdown,
    }
}

/// A queue that only produces: batches sent into `input` go to the topic.
pub struct Producing {
    pub input: mpsc::Sender<Batch>,
    pub task: JoinHandle<RunResult>,
    pub telemetry: Telemetry,
}

pub fn start_producing(config: &KafkaQueueConfig) -> Producing {
    let telemetry = Telemetry::new();
    let Ok(Component::Queue(queue)) = build(config, &telemetry) else { panic!("queue builds") };
    let (input, rx) = mpsc::channel(16);
    let cx = context(&telemetry, Shutdown::never());
    let task = tokio::spawn(queue.run(Some(Input::new(rx, None)), None, cx));
    Producing { input, task, telemetry }
}

/// A queue that only consumes: batches read from the topic come out of `output`.
pub struct Consuming {
    pub output: mpsc::Receiver<Batch>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<RunResult>,
    pub telemetry: Telemetry,
}

pub fn start_consuming(config: &KafkaQueueConfig) -> Consuming {
    let telemetry = Telemetry::new();
    let Ok(Component::Queue(queue)) = build(config, &telemetry) else { panic!("queue builds") };
    let (tx, output) = mpsc::channel(64);
    let (stop, shutdown) = Shutdown::new();
    let cx = context(&telemetry, shutdown);
    let task = tokio::spawn(queue.run(None, Some(Output::new(vec![tx], None)), cx));
    Consuming { output, stop, task, telemetry }
}

impl Consuming {
    /// The next batch, failing the test when none comes in time.
    pub async fn next_batch(&mut self) -> Batch {
        let batch = tokio::time::timeout(PATIENCE, self.output.recv()).await;
        batch.expect("a batch arrives in time").expect("the consumer is running")
    }

    /// Batches until they hold `count` fixes in all.
    pub async fn batches_with(&mut self, count: usize) -> Vec<Batch> {
        let mut batches = Vec::new();
        let mut seen = 0;
        while seen < count {
            let batch = self.next_batch().await;
            seen += batch.len();
            batches.push(batch);
        }
        assert_eq!(seen, count, "no more fixes than were produced");
        batches
    }

    /// Asks the queue to stop and waits for it.
    pub async fn stop(self) -> RunResult {
        let _ = self.stop.send(true);
        drop(self.output);
        tokio::time::timeout(PATIENCE, self.task).await.expect("consumer stops").expect("no panic")
    }
}

/// A fix whose coordinates have seven decimals, as GNSS receivers report them.
pub fn fix(obu: &str, ts_ms: i64, received_ms: i64) -> Fix {
    let micro = ts_ms.rem_euclid(10_000_000);
    let lat = format!("50.{micro:07}").parse().unwrap();
    let lon = format!("11.{:07}", 9_999_999 - micro).parse().unwrap();
    Fix { obu_id: obu.into(), ts_ms, lat, lon, ctx: EventContext { received_ms, trace: None } }
}

/// A batch of fixes with an acknowledgement the test can wait for.
pub fn acked_batch(fixes: Vec<Fix>) -> (Batch, oneshot::Receiver<AckStatus>) {
    let (ack, rx) = Ack::channel();
    (Batch::new(Events::Fixes(fixes), AckSet::one(ack)), rx)
}

pub fn fixes_of(batch: &Batch) -> &[Fix] {
    match &batch.events {
        Events::Fixes(fixes) => fixes,
        other => panic!("expected fixes, got {:?}", other.kind()),
    }
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap());
    config
}

/// Creates `topic` with `partitions` and topic-level `settings`.
pub async fn create_topic(topic: &str, partitions: i32, settings: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().expect("admin");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in settings {
        new = new.set(key, value);
    }
    let results = admin.create_topics([&new], &AdminOptions::new()).await.expect("create");
    results.into_iter().for_each(|r| {
        r.expect("topic created");
    });
}

/// Partitions of `topic` as the broker reports them.
pub fn partition_count(topic: &str) -> usize {
    let consumer: BaseConsumer = client_config().create().expect("consumer");
    let metadata = consumer.fetch_metadata(Some(topic), PATIENCE).expect("metadata");
    metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len())
}

/// The high watermark of each partition: how many messages it holds.
pub fn high_watermarks(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = client_config().create().expect("consumer");
    (0..partitions)
        .map(|p| consumer.fetch_watermarks(topic, p, PATIENCE).expect("watermarks").1)
        .collect()
}

/// The offsets `group` has committed for each partition (`None`: nothing yet).
pub fn committed(topic: &str, group: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = client_config().set("group.id", group).create().expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let answer = consumer.committed_offsets(list, PATIENCE).expect("committed offsets");
    (0..partitions)
        .map(|p| match answer.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(offset)) => Some(offset),
            _ => None,
        })
        .collect()
}

/// Polls `probe` until it returns what `want` accepts, or fails the test.
pub async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    want: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = tokio::task::block_in_place(&mut probe);
        if want(&value) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {value:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes raw messages, as another program would.
pub async fn produce_raw(topic: &str, messages: &[(&str, &[u8])]) {
    let producer: FutureProducer = client_config().create().expect("producer");
    for (key, payload) in messages {
        let record = FutureRecord::to(topic).key(*key).payload(*payload);
        producer.send(record, PATIENCE).await.expect("raw message delivered");
    }
}

/// Reads `count` messages of `topic` from the start, outside any group.
pub fn read_raw(topic: &str, partitions: i32, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = client_config()
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut messages = Vec::new();
    while messages.len() < count {
        assert!(std::time::Instant::now() < deadline, "only {} of {count} read", messages.len());
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            messages.push(message.expect("message").detach());
        }
    }
    messages
}
