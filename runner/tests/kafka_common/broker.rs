//! The tests' own calls to the broker: topics, offsets, raw messages.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::unique;

/// The header the kafka queue carries a fix's receive time in.
pub const RECEIVED_MS_HEADER: &str = "toll-received-ms";
/// Bound of every call to the broker made by the tests themselves.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

fn client(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// Creates `topic` with `partitions` partitions (one replica).
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        client(bootstrap).create().expect("admin client builds");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(BROKER_TIMEOUT));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .expect("the broker answers create_topics");
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("cannot create topic {name}: {code}"));
    }
}

fn metadata_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    client(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer builds")
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> i32 {
    let metadata = consumer.fetch_metadata(Some(topic), BROKER_TIMEOUT).expect("metadata");
    let found = metadata.topics().iter().find(|t| t.name() == topic).expect("topic listed");
    assert!(found.error().is_none(), "topic {topic}: {:?}", found.error());
    found.partitions().len() as i32
}

/// One past the last offset of every partition of `topic`.
pub fn high_watermarks(bootstrap: &str, topic: &str) -> Vec<i64> {
    let consumer = metadata_consumer(bootstrap, "e2e-watermarks");
    (0..partitions(&consumer, topic))
        .map(|p| consumer.fetch_watermarks(topic, p, BROKER_TIMEOUT).expect("watermarks").1)
        .collect()
}

/// The offsets `group` committed on each partition of `topic` (`None`: none yet).
pub fn committed_offsets(bootstrap: &str, group: &str, topic: &str) -> Vec<Option<i64>> {
    let consumer = metadata_consumer(bootstrap, group);
    let mut list = TopicPartitionList::new();
    for p in 0..partitions(&consumer, topic) {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, BROKER_TIMEOUT).expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// A message as the tests write it: key, value and `toll-received-ms`.
pub struct Raw {
    pub key: String,
    pub value: Vec<u8>,
    pub received_ms: Option<i64>,
}

/// Writes `messages` to `topic` in order and waits until the broker has them.
pub fn produce_raw(bootstrap: &str, topic: &str, messages: &[Raw]) {
    let producer: ThreadedProducer<DefaultProducerContext> = client(bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer builds");
    for message in messages {
        let received = message.received_ms.map(|ms| ms.to_string());
        let mut headers = OwnedHeaders::new();
        if let Some(received) = &received {
            headers = headers.insert(Header { key: RECEIVED_MS_HEADER, value: Some(received) });
        }
        let record =
            BaseRecord::to(topic).key(&message.key).payload(&message.value).headers(headers);
        producer.send(record).map_err(|(e, _)| e).expect("message is queued");
    }
    producer.flush(BROKER_TIMEOUT).expect("the broker takes every message");
}

/// A message read back: key, value and header names.
pub type Read = (Option<Vec<u8>>, Vec<u8>, Vec<String>);

/// Every message of `topic` from the beginning: key and value, partition by partition.
pub fn read_all(bootstrap: &str, topic: &str) -> Vec<Read> {
    let consumer = metadata_consumer(bootstrap, &unique("e2e-reader"));
    let high = high_watermarks(bootstrap, topic);
    let mut list = TopicPartitionList::new();
    for p in 0..high.len() as i32 {
        list.add_partition_offset(topic, p, Offset::Beginning).expect("partition added");
    }
    consumer.assign(&list).expect("partitions assigned");
    let total: i64 = high.iter().sum();
    let mut messages = Vec::new();
    let deadline = Instant::now() + BROKER_TIMEOUT;
    while (messages.len() as i64) < total && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.expect("message reads");
        let headers =
            message.headers().map_or(Vec::new(), |h| h.iter().map(|h| h.key.to_owned()).collect());
        messages.push((
            message.key().map(<[u8]>::to_vec),
            message.payload().unwrap_or_default().to_vec(),
            headers,
        ));
    }
    assert_eq!(messages.len() as i64, total, "every message of {topic} read");
    messages
}
