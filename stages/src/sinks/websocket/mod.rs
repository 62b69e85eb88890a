//! The `websocket` sink: the client side of an OBU, sending fixes to a
//! receiver (the `websocket` source of another runner process).
//!
//! Fixes are sent as JSON arrays, one frame per run of up to
//! `max_fixes_per_frame` fixes, in input order. Delivery is at least once:
//! every fix stays in a bounded backlog until the receiver acknowledged the
//! frame that carried it (`{"ack": n, "fixes": k}`, frames numbered per
//! connection from 1). A `nack` sends the frame's fixes again; when the
//! connection drops the sink reconnects with exponential backoff and jitter
//! and resends every unacknowledged fix in order. The receiver's distance
//! stage drops the duplicates this may cause.
//!
//! An input batch's acknowledgements are released once all its fixes are
//! acknowledged, so a pipeline in front of the sink learns when they are
//! delivered. While the backlog is full the sink takes no input, which slows
//! the pipeline in front of it; nothing is dropped for lack of room.
//!
//! Refusals: in the `legacy` format a fix whose OBU id is not a plain decimal
//! integer is dropped and counted as rejected (`not_legacy_id`), as is a fix
//! JSON cannot carry (`unencodable_fix`). A frame the receiver answers with
//! `{"error": ...}` can never succeed: its fixes are dropped, logged as an
//! error and counted in the errors; their batches are released, not failed,
//! because a durable queue in front would otherwise redeliver them forever.
//! A frame with more fixes than the receiver takes is instead split and sent
//! again.
//!
//! On shutdown the sink keeps reading its input and delivering for up to
//! `drain_timeout_ms`, then gives up on what is left: the acknowledgements of
//! the undelivered fixes are marked failed and a warning names their number.

mod backlog;
mod client;
mod encode;
mod link;

use futures::future::BoxFuture;
use serde::Deserialize;

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, Context, Input, Kind, RunResult,
    Signature, Sink,
};
use crate::event::EventKind;
use crate::registry::{self, ComponentType, FieldError, Validate};

pub use encode::Format;
use link::Endpoint;

pub const TYPE: ComponentType = ComponentType {
    name: "websocket",
    kind: Kind::Sink,
    about: "sends fixes to a websocket receiver, resending until each frame is acknowledged",
    parse: registry::parse::<WebsocketSinkConfig>,
};

/// The declaration of a `websocket` sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketSinkConfig {
    /// The receiver, `ws://host:port/path`. `wss://` (TLS) is not supported yet.
    pub url: String,
    /// How fixes are written: `"native"` (the default) or `"legacy"`, the old
    /// Go OBU's `{"obuID": 17, "lat": .., "long": ..}`, which has no time and
    /// only fits OBU ids that are decimal integers.
    #[serde(default)]
    pub format: Format,
    /// Most fixes in one frame; keep it within the receiver's own
    /// `max_fixes_per_frame` and `max_frame_bytes`.
    #[serde(default = "default_max_fixes_per_frame")]
    pub max_fixes_per_frame: usize,
    /// Most fixes held while disconnected or waiting for acknowledgements;
    /// when it is reached the sink stops taking input.
    #[serde(default = "default_backlog_fixes")]
    pub backlog_fixes: usize,
    /// Delay before the first reconnect attempt, in milliseconds; it doubles
    /// with each failure.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnect attempts, in milliseconds.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Time one connection attempt (TCP and WebSocket handshake) may take, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time the sink keeps delivering after shutdown is requested, in milliseconds.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

fn default_max_fixes_per_frame() -> usize {
    500
}

fn default_backlog_fixes() -> usize {
    100_000
}

fn default_reconnect_min_ms() -> u64 {
    200
}

fn default_reconnect_max_ms() -> u64 {
    10_000
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_drain_timeout_ms() -> u64 {
    10_000
}

impl Validate for WebsocketSinkConfig {
    fn validate(&self) -> Result<(), FieldError> {
        Endpoint::parse(&self.url).map_err(|message| FieldError::at("url", message))?;
        let at_least_one = [
            ("max_fixes_per_frame", self.max_fixes_per_frame as u64),
            ("backlog_fixes", self.backlog_fixes as u64),
            ("reconnect_min_ms", self.reconnect_min_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(FieldError::at(key, "must be at least 1"));
        }
        if self.reconnect_max_ms < self.reconnect_min_ms {
            let message = format!("must be at least reconnect_min_ms ({})", self.reconnect_min_ms);
            return Err(FieldError::at("reconnect_max_ms", message));
        }
        Ok(())
    }
}

impl ComponentConfig for WebsocketSinkConfig {
    fn signature(&self) -> Signature {
        Signature::sink(vec![EventKind::Fix])
    }

    /// Connecting happens when the sink runs, so a receiver that is down at
    /// startup delays delivery but does not stop the pipeline.
    fn build(&self, _cx: &mut BuildContext) -> Result<Component, BuildError> {
        Ok(Component::Sink(Box::new(self.sink()?)))
    }
}

impl WebsocketSinkConfig {
    /// The sink this declaration describes, ready to run.
    pub fn sink(&self) -> Result<WebsocketSink, BuildError> {
        let endpoint = Endpoint::parse(&self.url)
            .map_err(|message| BuildError::new(format!("websocket sink url: {message}")))?;
        Ok(WebsocketSink { config: self.clone(), endpoint })
    }
}

/// A built `websocket` sink.
#[derive(Debug)]
pub struct WebsocketSink {
    config: WebsocketSinkConfig,
    endpoint: Endpoint,
}

impl Sink for WebsocketSink {
    fn run(self: Box<Self>, input: Input, cx: Context) -> BoxFuture<'static, RunResult> {
        let uplink = client::Uplink::new(*self, &cx);
        Box::pin(uplink.run(input, cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebsocketSinkConfig, FieldError> {
        let value: toml::Value = toml::from_str(text).expect("test toml parses");
        let config: WebsocketSinkConfig =
            value.try_into().map_err(|e: toml::de::Error| FieldError::at("", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_fill_every_optional_field() {
        let config = parse(r#"url = "ws://127.0.0.1:30000/ws""#).expect("minimal config");

        assert_eq!(config.format, Format::Native);
        assert_eq!(config.max_fixes_per_frame, 500);
        assert_eq!(config.backlog_fixes, 100_000);
        assert_eq!((config.reconnect_min_ms, config.reconnect_max_ms), (200, 10_000));
        assert_eq!(config.connect_timeout_ms, 5_000);
        assert_eq!(config.drain_timeout_ms, 10_000);
    }

    #[test]
    fn legacy_format_is_chosen_by_name_and_others_are_refused() {
        let config = parse("url = \"ws://h/ws\"\nformat = \"legacy\"").expect("legacy");

        assert_eq!(config.format, Format::Legacy);
        assert!(parse("url = \"ws://h/ws\"\nformat = \"csv\"").is_err());
        assert!(parse("url = \"ws://h/ws\"\nretries = 3").is_err());
    }

    #[test]
    fn zero_limits_and_inverted_backoff_name_their_key() {
        let cases = [
            ("max_fixes_per_frame = 0", "max_fixes_per_frame"),
            ("backlog_fixes = 0", "backlog_fixes"),
            ("reconnect_min_ms = 0", "reconnect_min_ms"),
            ("connect_timeout_ms = 0", "connect_timeout_ms"),
            ("reconnect_min_ms = 500\nreconnect_max_ms = 100", "reconnect_max_ms"),
        ];
        for (line, key) in cases {
            let error = parse(&format!("url = \"ws://h/ws\"\n{line}")).expect_err(line);

            assert_eq!(error.path, vec![key.to_owned()], "{line}");
        }
    }

    #[test]
    fn wss_url_is_refused_as_not_supported_yet() {
        let error = parse(r#"url = "wss://receiver.example/ws""#).expect_err("tls");

        assert_eq!(error.path, vec!["url".to_owned()]);
        assert!(error.message.contains("not supported yet"), "{}", error.message);
    }
}
