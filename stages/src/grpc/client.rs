//! What every client of an aggregator shares: the checked address, the
//! channel that reconnects by itself, the retry backoff and the limiter that
//! keeps a long outage from flooding the log.

use std::time::{Duration, Instant};

use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::proto::aggregator_client::AggregatorClient;

/// How often a client pings an idle connection, so that a dead peer is
/// noticed before the next call rather than by it.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A client of an aggregator cannot be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClientError {
    #[error("`{url}` is not a URL: {reason}")]
    Syntax { url: String, reason: String },
    #[error("`{0}` must start with http:// (TLS is not supported)")]
    Scheme(String),
    #[error("`{0}` must name a host and a port, as in http://127.0.0.1:50051")]
    HostPort(String),
    #[error("a gRPC client can only be made inside a Tokio runtime")]
    NoRuntime,
}

/// Checks that `url` is `http://HOST:PORT` (a trailing `/` is allowed).
pub fn check_url(url: &str) -> Result<(), ClientError> {
    let uri: Uri = url.parse().map_err(|e: tonic::codegen::http::uri::InvalidUri| {
        ClientError::Syntax { url: url.to_owned(), reason: e.to_string() }
    })?;
    if uri.scheme_str() != Some("http") {
        return Err(ClientError::Scheme(url.to_owned()));
    }
    let has_host_port = uri.host().is_some_and(|h| !h.is_empty()) && uri.port_u16().is_some();
    let bare = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !has_host_port || !bare {
        return Err(ClientError::HostPort(url.to_owned()));
    }
    Ok(())
}

/// A client of the aggregator at `url` that connects at its first call and
/// reconnects by itself after the connection is lost; `timeout` bounds each
/// connection attempt and each call. Must be called inside a Tokio runtime.
pub fn channel(
    url: &str,
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<AggregatorClient<Channel>, ClientError> {
    check_url(url)?;
    // The channel spawns its connection task right away.
    tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| ClientError::Syntax { url: url.to_owned(), reason: crate::error_chain(&e) })?;
    let channel = endpoint
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(AggregatorClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes))
}

/// Waits between retries: doubling from `min` up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), next: min }
    }

    /// The wait before the next retry.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Starts again from `min`, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Lets a repeated warning through at most once per interval, and counts
/// how many were held back in between.
#[derive(Debug)]
pub struct WarnLimiter {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl WarnLimiter {
    pub fn new(every: Duration) -> Self {
        WarnLimiter { every, last: None, held_back: 0 }
    }

    /// `Some(number held back since the last one)` when a warning may be
    /// logged now; `None` when it should be held back.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_host_and_port_are_accepted() {
        assert_eq!(check_url("http://127.0.0.1:50051"), Ok(()));
        assert_eq!(check_url("http://aggregator:7000/"), Ok(()));
        assert!(matches!(check_url("https://127.0.0.1:50051"), Err(ClientError::Scheme(_))));
        assert!(matches!(check_url("127.0.0.1:50051"), Err(ClientError::Scheme(_))));
        assert!(matches!(check_url("http://127.0.0.1"), Err(ClientError::HostPort(_))));
        assert!(matches!(check_url("http://127.0.0.1:1/deliver"), Err(ClientError::HostPort(_))));
        assert!(matches!(check_url("http://exa mple:1"), Err(ClientError::Syntax { .. })));
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u64> = (0..4).map(|_| backoff.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(100));
    }

    #[test]
    fn limiter_lets_the_first_warning_through_and_holds_back_the_next() {
        let mut limiter = WarnLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), None);
        assert_eq!(limiter.allow(), None);
    }
}
