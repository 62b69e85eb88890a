//! The `grpc` sink: a distance process's link to its aggregator. It delivers
//! segments with the `toll.v1.Aggregator` service and holds each batch's
//! acknowledgements until the aggregator confirms the segments persisted, so
//! that a Kafka offset upstream advances only past billed distance.
//!
//! One call is in flight at a time: the aggregate skips a segment that ends
//! before one it already billed, so a later batch overtaking a retried one
//! would make the retry count for nothing. Failed calls are retried with
//! backoff for as long as the pipeline runs; after shutdown is requested,
//! for `shutdown_grace_ms` more, and then the rest is failed.

mod deliver;

use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Input, Kind, RunResult,
    Signature, Sink,
};
use crate::event::EventKind;
use crate::grpc::{self, Backoff, DEFAULT_MAX_MESSAGE_BYTES, MAX_BATCH_SEGMENTS};
use crate::registry::{self, ComponentType, FieldError, Validate};

pub const TYPE: ComponentType = ComponentType {
    name: "grpc",
    kind: Kind::Sink,
    about: "delivers segments to an aggregator over gRPC, acknowledged once persisted",
    parse: registry::parse::<GrpcSinkConfig>,
};

/// `[sinks.NAME] type = "grpc"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSinkConfig {
    /// The aggregator's `grpc` source, `http://HOST:PORT`.
    pub url: String,
    /// Most segments sent in one call; batches waiting on the input are
    /// merged up to it.
    #[serde(default = "default_max_batch_segments")]
    pub max_batch_segments: usize,
    /// Longest wait for a connection or for one call's answer (which comes
    /// after the aggregator's commit), in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First wait before a failed call is retried, in milliseconds.
    #[serde(default = "default_retry_backoff_min_ms")]
    pub retry_backoff_min_ms: u64,
    /// Longest wait between retries, in milliseconds; the wait doubles up to it.
    #[serde(default = "default_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// How long, after shutdown is requested, undelivered segments are still
    /// retried before their acknowledgements are failed, in milliseconds.
    /// Keep it below the runner's drain timeout.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_max_batch_segments() -> usize {
    4096
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_retry_backoff_min_ms() -> u64 {
    100
}

fn default_retry_backoff_max_ms() -> u64 {
    5_000
}

fn default_shutdown_grace_ms() -> u64 {
    10_000
}

impl Validate for GrpcSinkConfig {
    fn validate(&self) -> Result<(), FieldError> {
        grpc::check_url(&self.url).map_err(|e| FieldError::at("url", e.to_string()))?;
        if !(1..=MAX_BATCH_SEGMENTS).contains(&self.max_batch_segments) {
            let message = format!("must be 1 to {MAX_BATCH_SEGMENTS}");
            return Err(FieldError::at("max_batch_segments", message));
        }
        if self.timeout_ms == 0 {
            return Err(FieldError::at("timeout_ms", "must be greater than 0"));
        }
        if self.retry_backoff_min_ms == 0 {
            return Err(FieldError::at("retry_backoff_min_ms", "must be greater than 0"));
        }
        if self.retry_backoff_max_ms < self.retry_backoff_min_ms {
            let message = "must be at least retry_backoff_min_ms";
            return Err(FieldError::at("retry_backoff_max_ms", message));
        }
        Ok(())
    }
}

impl ComponentConfig for GrpcSinkConfig {
    fn signature(&self) -> Signature {
        Signature::sink(vec![EventKind::Segment])
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        let timeout = Duration::from_millis(self.timeout_ms);
        let client = grpc::channel(&self.url, timeout, DEFAULT_MAX_MESSAGE_BYTES)
            .map_err(|e| BuildError::with(format!("grpc sink '{}' has a bad url", cx.name), e))?;
        let backoff = Backoff::new(
            Duration::from_millis(self.retry_backoff_min_ms),
            Duration::from_millis(self.retry_backoff_max_ms),
        );
        Ok(Component::Sink(Box::new(GrpcSink(deliver::Deliverer::new(
            client,
            self.url.clone(),
            self.max_batch_segments,
            backoff,
            Duration::from_millis(self.shutdown_grace_ms),
        )))))
    }
}

/// A built `grpc` sink.
struct GrpcSink(deliver::Deliverer);

impl Sink for GrpcSink {
    fn run(self: Box<Self>, input: Input, cx: Context) -> BoxFuture<'static, RunResult> {
        Box::pin(self.0.run(input, cx))
    }
}
