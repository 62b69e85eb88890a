//! Creating the queue's topics when they are missing.
//!
//! An existing topic is used as it is (its partition count is logged, never
//! changed); a missing one is created with the configured partitions and
//! replication. Until the brokers answer, the queue waits and retries.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;

use super::context::ClientLog;
use crate::component::ComponentError;

/// How long one metadata request or topic creation may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between attempts while the brokers do not answer.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// A topic the queue needs.
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub replication_factor: i32,
}

/// What the brokers said about a topic.
enum Found {
    Exists { partitions: usize },
    Missing,
}

/// Makes sure every topic of `specs` exists.
pub async fn ensure_topics(
    mut config: ClientConfig,
    log: ClientLog,
    specs: &[TopicSpec<'_>],
) -> Result<(), ComponentError> {
    // A metadata request must never create the topic with the broker's defaults.
    config.set("allow.auto.create.topics", "false");
    let queue = log.queue.clone();
    let admin: AdminClient<ClientLog> = config
        .create_with_context(log)
        .map_err(|e| ComponentError::with("cannot create the kafka admin client", e))?;
    let admin = Arc::new(admin);

    for spec in specs {
        match look_up(&admin, spec.name, &queue).await? {
            Found::Exists { partitions } => {
                tracing::info!(queue, topic = spec.name, partitions, "using existing kafka topic");
            }
            Found::Missing => create(&admin, spec, &queue).await?,
        }
    }
    Ok(())
}

/// Asks the brokers about `topic`, retrying while they cannot be reached.
async fn look_up(
    admin: &Arc<AdminClient<ClientLog>>,
    topic: &str,
    queue: &str,
) -> Result<Found, ComponentError> {
    let mut pause = Duration::from_millis(200);
    loop {
        let client = Arc::clone(admin);
        let name = topic.to_owned();
        // The metadata call blocks its thread for up to the timeout.
        let answer = tokio::task::spawn_blocking(move || {
            let metadata = client.inner().fetch_metadata(Some(&name), REQUEST_TIMEOUT)?;
            let found = metadata.topics().iter().find(|t| t.name() == name).map(|t| {
                let missing = t.error()
                    == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                    || t.partitions().is_empty();
                if missing {
                    Found::Missing
                } else {
                    Found::Exists { partitions: t.partitions().len() }
                }
            });
            Ok::<_, KafkaError>(found.unwrap_or(Found::Missing))
        })
        .await
        .map_err(|e| ComponentError::with("kafka metadata lookup panicked", e))?;

        match answer {
            Ok(found) => return Ok(found),
            Err(error) => {
                tracing::warn!(queue, topic, error = %error, "waiting for kafka brokers");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }
}

async fn create(
    admin: &AdminClient<ClientLog>,
    spec: &TopicSpec<'_>,
    queue: &str,
) -> Result<(), ComponentError> {
    let replication = TopicReplication::Fixed(spec.replication_factor);
    let topic = NewTopic::new(spec.name, spec.partitions, replication);
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = admin.create_topics([&topic], &options).await.map_err(|e| {
        ComponentError::with(format!("cannot create kafka topic `{}`", spec.name), e)
    })?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(
                queue,
                topic = %name,
                partitions = spec.partitions,
                replication_factor = spec.replication_factor,
                "created kafka topic",
            ),
            // Another process created it between the lookup and now.
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(queue, topic = %name, "using existing kafka topic");
            }
            Err((name, code)) => {
                return Err(ComponentError::with(
                    format!("cannot create kafka topic `{name}`"),
                    KafkaError::AdminOp(code),
                ))
            }
        }
    }
    Ok(())
}
