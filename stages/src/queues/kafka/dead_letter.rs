//! Messages of the topic that are not fixes ("poison"): counted, and written
//! unchanged to the dead-letter topic when one is configured.
//!
//! A poison message never blocks its partition: it belongs to the batch it
//! was read with, and its offset is done once the dead-letter topic has it
//! (the delivery holds a clone of the batch's acknowledgement).

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;

use super::produce::Producer;
use crate::ack::Ack;
use crate::telemetry::Counter;

/// Headers added to a dead letter, naming where it came from and why.
pub const SOURCE_TOPIC_HEADER: &str = "toll-source-topic";
pub const SOURCE_PARTITION_HEADER: &str = "toll-source-partition";
pub const SOURCE_OFFSET_HEADER: &str = "toll-source-offset";
pub const ERROR_HEADER: &str = "toll-error";

/// A message that could not be read as a fix.
pub struct Poison {
    pub message: OwnedMessage,
    pub error: String,
}

/// Where poison goes.
pub struct DeadLetters {
    pub producer: Producer,
    /// The dead-letter topic; `None` drops poison after counting it.
    pub topic: Option<String>,
    pub queue: String,
    pub errors: Counter,
}

impl DeadLetters {
    /// Whether poison messages must be kept until they are dead-lettered.
    pub fn keeps_poison(&self) -> bool {
        self.topic.is_some()
    }

    /// Writes `poison` to the dead-letter topic in the background; `ack` (the
    /// batch's) is released once every message is there, failed if one is not.
    pub fn send(&self, poison: Vec<Poison>, ack: Ack) {
        let Some(topic) = self.topic.clone() else { return };
        if poison.is_empty() {
            return;
        }
        let producer = self.producer.clone();
        let queue = self.queue.clone();
        let errors = self.errors.clone();
        tokio::spawn(async move {
            for letter in &poison {
                let headers = letter_headers(letter);
                let mut record = FutureRecord::to(&topic).headers(headers);
                if let Some(key) = letter.message.key() {
                    record = record.key(key);
                }
                if let Some(payload) = letter.message.payload() {
                    record = record.payload(payload);
                }
                if let Err((error, _)) = producer.send(record, Timeout::Never).await {
                    // The offset stays uncommitted, so the message is read again.
                    ack.fail();
                    errors.add(1);
                    tracing::error!(queue, topic, error = %error, "cannot write dead letter");
                }
            }
            tracing::debug!(queue, topic, count = poison.len(), "dead letters written");
            drop(ack);
        });
    }
}

/// The original headers plus where the message came from and why it failed.
fn letter_headers(letter: &Poison) -> OwnedHeaders {
    let message = &letter.message;
    let mut headers =
        OwnedHeaders::new_with_capacity(message.headers().map_or(0, |h| h.count()) + 4);
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(Header { key: header.key, value: header.value });
        }
    }
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    headers
        .insert(Header { key: SOURCE_TOPIC_HEADER, value: Some(message.topic()) })
        .insert(Header { key: SOURCE_PARTITION_HEADER, value: Some(partition.as_str()) })
        .insert(Header { key: SOURCE_OFFSET_HEADER, value: Some(offset.as_str()) })
        .insert(Header { key: ERROR_HEADER, value: Some(letter.error.as_str()) })
}
