//! What librdkafka calls back into: its logs and errors, rebalances, commit
//! results and statistics (for the consumer lag).

use std::fmt::Write as _;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::{Commit, Offsets};
use crate::telemetry::{Counter, Gauge, Telemetry};

/// Forwards librdkafka's logs and errors to `tracing`, under the queue's name.
#[derive(Clone)]
pub struct ClientLog {
    pub queue: String,
    pub errors: Counter,
}

impl ClientContext for ClientLog {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let queue = &self.queue;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(queue, facility, message, "librdkafka error")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(queue, facility, message, "librdkafka warning")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(queue, facility, message, "librdkafka notice")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(queue, facility, message, "librdkafka debug"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Mostly transient (a broker went away); librdkafka retries by itself.
        self.errors.add(1);
        tracing::warn!(queue = %self.queue, error = %error, reason, "kafka client error");
    }

    fn stats(&self, _statistics: Statistics) {}
}

/// The consumer's callbacks: keeps the offset book in step with rebalances,
/// counts commits and reports the lag.
pub struct ConsumerHooks {
    pub log: ClientLog,
    pub topic: String,
    pub offsets: Offsets,
    pub committed: Counter,
    pub lag: LagGauges,
}

/// `toll_kafka_consumer_lag{component,topic,partition}`, one gauge per
/// partition this consumer was told about.
pub struct LagGauges {
    telemetry: Telemetry,
    component: String,
    topic: String,
    partitions: std::sync::Mutex<std::collections::HashMap<i32, Gauge>>,
}

impl LagGauges {
    pub fn new(telemetry: &Telemetry, component: &str, topic: &str) -> Self {
        LagGauges {
            telemetry: telemetry.clone(),
            component: component.to_owned(),
            topic: topic.to_owned(),
            partitions: Default::default(),
        }
    }

    /// Sets the lag of the partitions listed; the others (revoked) go to 0.
    fn set(&self, lags: &[(i32, i64)]) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        for gauge in partitions.values() {
            gauge.set(0);
        }
        for &(partition, lag) in lags {
            let gauge = partitions.entry(partition).or_insert_with(|| {
                let partition = partition.to_string();
                let labels = [
                    ("component", self.component.as_str()),
                    ("topic", self.topic.as_str()),
                    ("partition", partition.as_str()),
                ];
                self.telemetry.gauge("toll_kafka_consumer_lag", &labels)
            });
            gauge.set(lag);
        }
    }
}

impl ClientContext for ConsumerHooks {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut lags: Vec<(i32, i64)> = topic
            .partitions
            .values()
            // Partition -1 is librdkafka's internal one; -1 lag means unknown.
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| (p.partition, p.consumer_lag))
            .collect();
        lags.sort_unstable();
        let total: i64 = lags.iter().map(|(_, lag)| lag).sum();
        self.lag.set(&lags);
        let mut per_partition = String::new();
        for (partition, lag) in &lags {
            let _ = write!(per_partition, "{}{partition}={lag}", sep(&per_partition));
        }
        tracing::info!(queue = %self.log.queue, lag = total, per_partition, "kafka consumer lag");
    }
}

fn sep(text: &str) -> &'static str {
    if text.is_empty() {
        ""
    } else {
        ","
    }
}

impl ConsumerContext for ConsumerHooks {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.partitions(list);
                tracing::info!(queue = %self.log.queue, ?partitions, "kafka partitions assigned");
                self.offsets.assign(&partitions);
            }
            Rebalance::Revoke(list) => {
                let partitions = self.partitions(list);
                tracing::info!(queue = %self.log.queue, ?partitions, "kafka partitions revoked");
                // Batches still downstream are read again by the next owner.
                let commits = self.offsets.revoke(&partitions);
                self.commit_now(consumer, &commits, true);
            }
            Rebalance::Error(error) => {
                self.log.errors.add(1);
                tracing::warn!(queue = %self.log.queue, error = %error, "kafka rebalance failed");
            }
        }
    }
}

impl ConsumerHooks {
    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect()
    }

    /// The partition list librdkafka takes for `commits`.
    pub fn commit_list(&self, commits: &[Commit]) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(commits.len());
        for commit in commits {
            // Adding a plain offset to a fresh list cannot fail.
            let _ = list.add_partition_offset(
                &self.topic,
                commit.partition,
                Offset::Offset(commit.offset),
            );
        }
        list
    }

    /// Commits synchronously and counts the advance once the broker accepted
    /// it. (librdkafka did not deliver the results of asynchronous commits to
    /// `commit_callback` in this set-up, so every commit is made this way, off
    /// the async threads.)
    pub fn commit_now<C: Consumer<Self>>(&self, consumer: &C, commits: &[Commit], revoked: bool) {
        if commits.is_empty() {
            return;
        }
        match consumer.commit(&self.commit_list(commits), CommitMode::Sync) {
            Ok(()) => {
                for commit in commits {
                    // Revoked partitions are gone from the book, which then
                    // reports no advance; the commit knows its own.
                    let moved = self.offsets.committed(commit.partition, commit.offset);
                    self.committed.add(if revoked { commit.advance } else { moved });
                }
                tracing::debug!(queue = %self.log.queue, ?commits, "kafka offsets committed");
            }
            Err(error) => self.commit_failed(&error),
        }
    }

    fn commit_failed(&self, error: &KafkaError) {
        self.log.errors.add(1);
        tracing::warn!(queue = %self.log.queue, error = %error, "kafka offset commit failed");
    }
}
