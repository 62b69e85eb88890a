//! The `kafka` queue's keys, their checks, and the librdkafka settings built from them.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::component::BuildError;
use crate::registry::{FieldError, Validate};

/// `[queues.NAME] type = "kafka"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaQueueConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic the queue's fixes are written to and read from.
    pub topic: String,
    /// Consumer group id of the processes that read the topic.
    pub group: String,
    /// Partitions of the topic when this queue creates it.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replicas of each partition when this queue creates the topic.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Where messages that are not fixes are written, unchanged; without it
    /// they are only counted and skipped.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// librdkafka settings for both the producer and the consumer.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka settings for the producer only.
    #[serde(default)]
    pub producer_options: BTreeMap<String, String>,
    /// librdkafka settings for the consumer only.
    #[serde(default)]
    pub consumer_options: BTreeMap<String, String>,
    /// Most fixes the consumer puts in one batch.
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// Longest the consumer waits to fill a batch once it holds a message.
    #[serde(default = "default_max_batch_wait_ms")]
    pub max_batch_wait_ms: u64,
    /// How often the consumer commits the offsets it is done with.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Batches the producer keeps awaiting the broker's acknowledgement
    /// before it stops reading its input.
    #[serde(default = "default_max_in_flight_batches")]
    pub max_in_flight_batches: usize,
    /// How often the consumer measures and logs its lag.
    #[serde(default = "default_lag_interval_ms")]
    pub lag_interval_ms: u64,
}

fn default_partitions() -> i32 {
    12
}

fn default_replication_factor() -> i32 {
    1
}

fn default_max_batch_events() -> usize {
    4096
}

fn default_max_batch_wait_ms() -> u64 {
    20
}

fn default_commit_interval_ms() -> u64 {
    1000
}

fn default_max_in_flight_batches() -> usize {
    8
}

fn default_lag_interval_ms() -> u64 {
    30_000
}

/// Settings the queue's guarantees rest on: user options may repeat them
/// but not change them.
const PRODUCER_FORCED: [(&str, &str); 2] = [("acks", "all"), ("enable.idempotence", "true")];
const CONSUMER_FORCED: [(&str, &str); 2] =
    [("enable.auto.commit", "false"), ("enable.auto.offset.store", "false")];

/// Settings that have their own key in the declaration.
const OWN_KEYS: [(&str, &str); 3] =
    [("bootstrap.servers", "brokers"), ("metadata.broker.list", "brokers"), ("group.id", "group")];

impl Validate for KafkaQueueConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.brokers.trim().is_empty() {
            return Err(FieldError::at("brokers", "must name at least one `host:port`"));
        }
        check_topic("topic", &self.topic)?;
        if self.group.trim().is_empty() {
            return Err(FieldError::at("group", "must not be empty"));
        }
        if let Some(dlt) = &self.dead_letter_topic {
            check_topic("dead_letter_topic", dlt)?;
            if *dlt == self.topic {
                return Err(FieldError::at("dead_letter_topic", "must differ from `topic`"));
            }
        }
        at_least_one("partitions", self.partitions as i64)?;
        at_least_one("replication_factor", self.replication_factor as i64)?;
        at_least_one("max_batch_events", self.max_batch_events as i64)?;
        at_least_one("max_batch_wait_ms", self.max_batch_wait_ms as i64)?;
        at_least_one("commit_interval_ms", self.commit_interval_ms as i64)?;
        at_least_one("max_in_flight_batches", self.max_in_flight_batches as i64)?;
        at_least_one("lag_interval_ms", self.lag_interval_ms as i64)?;

        for table in ["options", "producer_options", "consumer_options"] {
            let options = self.table(table);
            check_own_keys(table, options)?;
            if table != "consumer_options" {
                check_forced(table, options, &PRODUCER_FORCED)?;
            }
            if table != "producer_options" {
                check_forced(table, options, &CONSUMER_FORCED)?;
            }
        }
        Ok(())
    }
}

impl KafkaQueueConfig {
    fn table(&self, name: &str) -> &BTreeMap<String, String> {
        match name {
            "producer_options" => &self.producer_options,
            "consumer_options" => &self.consumer_options,
            _ => &self.options,
        }
    }

    /// The producer's settings (also used for topic administration).
    pub(super) fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in PRODUCER_FORCED {
            config.set(key, value);
        }
        config.extend(self.options.clone());
        config.extend(self.producer_options.clone());
        config
    }

    /// The consumer's settings; `auto.offset.reset` and the statistics
    /// interval are defaults that options may change.
    pub(super) fn consumer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", self.lag_interval_ms.to_string());
        for (key, value) in CONSUMER_FORCED {
            config.set(key, value);
        }
        config.extend(self.options.clone());
        config.extend(self.consumer_options.clone());
        config
    }

    /// Asks librdkafka about every user option on its own, so that a refused
    /// one is named with the table it came from.
    pub(super) fn check_options_with_librdkafka(&self) -> Result<(), BuildError> {
        for table in ["options", "producer_options", "consumer_options"] {
            for (key, value) in self.table(table) {
                let mut single = ClientConfig::new();
                single.set(key, value);
                if let Err(error) = single.create_native_config() {
                    return Err(BuildError::with(
                        format!("librdkafka refuses `{table}` setting `{key}` = {value:?}"),
                        error,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(key: &str, name: &str) -> Result<(), FieldError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > 249
        || name == "."
        || name == ".."
        || !name.chars().all(legal)
    {
        return Err(FieldError::at(
            key,
            format!("{name:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)"),
        ));
    }
    Ok(())
}

fn at_least_one(key: &str, value: i64) -> Result<(), FieldError> {
    if value < 1 {
        return Err(FieldError::at(key, "must be at least 1"));
    }
    Ok(())
}

fn check_own_keys(table: &str, options: &BTreeMap<String, String>) -> Result<(), FieldError> {
    for (key, own) in OWN_KEYS {
        if options.contains_key(key) {
            let message = format!("is set with the queue's `{own}` key");
            return Err(FieldError { path: vec![table.into(), key.into()], message });
        }
    }
    Ok(())
}

fn check_forced(
    table: &str,
    options: &BTreeMap<String, String>,
    forced: &[(&str, &str)],
) -> Result<(), FieldError> {
    for (key, required) in forced {
        let Some(value) = options.get(*key) else { continue };
        // librdkafka also accepts `-1` for `acks = all`.
        let same = value == required || (*key == "acks" && value == "-1");
        if !same {
            let message =
                format!("must stay {required:?}: the queue's delivery guarantees depend on it");
            return Err(FieldError { path: vec![table.into(), (*key).into()], message });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<KafkaQueueConfig, FieldError> {
        let text =
            format!("brokers = \"127.0.0.1:9092\"\ntopic = \"fixes\"\ngroup = \"g\"\n{extra}");
        let config: KafkaQueueConfig = toml::from_str(&text).expect("keys parse");
        config.validate().map(|()| config)
    }

    #[test]
    fn defaults_follow_the_documented_values() {
        let config = config("").unwrap();
        assert_eq!(config.partitions, 12);
        assert_eq!(config.replication_factor, 1);
        assert_eq!(config.max_batch_events, 4096);
        assert_eq!(config.max_batch_wait_ms, 20);
        assert_eq!(config.commit_interval_ms, 1000);
        assert_eq!(config.max_in_flight_batches, 8);
    }

    #[test]
    fn weakening_producer_acks_is_refused() {
        let error = config("options = { acks = \"1\" }").unwrap_err();
        assert_eq!(error.path, vec!["options", "acks"]);
        assert!(error.message.contains("\"all\""), "{}", error.message);
        assert!(config("producer_options = { acks = \"-1\" }").is_ok());
    }

    #[test]
    fn auto_commit_in_consumer_options_is_refused() {
        let error = config("consumer_options = { \"enable.auto.commit\" = \"true\" }").unwrap_err();
        assert_eq!(error.path, vec!["consumer_options", "enable.auto.commit"]);
    }

    #[test]
    fn brokers_in_options_point_to_the_brokers_key() {
        let error = config("options = { \"bootstrap.servers\" = \"x:1\" }").unwrap_err();
        assert!(error.message.contains("`brokers`"), "{}", error.message);
    }

    #[test]
    fn empty_brokers_and_bad_topic_names_are_refused() {
        let text = "brokers = \" \"\ntopic = \"fixes\"\ngroup = \"g\"";
        let config: KafkaQueueConfig = toml::from_str(text).unwrap();
        assert_eq!(config.validate().unwrap_err().path, vec!["brokers"]);
        assert_eq!(
            self::config("dead_letter_topic = \"bad topic\"").unwrap_err().path,
            vec!["dead_letter_topic"]
        );
        assert_eq!(
            self::config("dead_letter_topic = \"fixes\"").unwrap_err().path,
            vec!["dead_letter_topic"]
        );
    }

    #[test]
    fn unknown_librdkafka_setting_is_named_with_its_table() {
        let config = config("producer_options = { \"no.such.setting\" = \"1\" }").unwrap();
        let error = config.check_options_with_librdkafka().unwrap_err();
        assert!(error.message.contains("`producer_options`"), "{}", error.message);
        assert!(error.message.contains("`no.such.setting`"), "{}", error.message);
    }
}
