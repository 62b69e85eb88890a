//! The `websocket` source: a server that OBUs connect to and send fixes over.
//!
//! Every data frame carries one fix or an array of them ([`wire`] describes
//! both accepted shapes) and becomes one batch with an acknowledgement.
//! Binary frames are read exactly like text frames (JSON in UTF-8), so an OBU
//! library that only writes binary frames works too. Frames are numbered per
//! connection from 1. Once every downstream component is done with a frame's
//! batch the OBU gets `{"ack": n, "fixes": k}`; `{"nack": n, "fixes": k}`
//! tells it that a component failed them and they should be sent again.
//!
//! Coordinates are not checked here; that is the distance stage's job. A
//! frame that does not parse is answered with
//! `{"error": "malformed frame", "frame": n, "detail": "..."}` and counted;
//! the connection stays open. A frame over `max_frame_bytes` closes the
//! connection with code 1009. While the pipeline is full a connection stops
//! reading, so its OBU waits on TCP instead of losing fixes.
//!
//! On shutdown the server stops accepting, lets each connection finish the
//! frame in hand, sends the confirmations already due and closes with 1001.

mod connection;
mod server;
pub mod wire;

use std::net::SocketAddr;

use serde::Deserialize;

use crate::component::{
    BuildContext, BuildError, Component, ComponentConfig, KeptListener, Signature,
};
use crate::component::{Kind, Source};
use crate::event::EventKind;
use crate::registry::{self, ComponentType, FieldError, Validate};

pub use server::WebsocketSource;

pub const TYPE: ComponentType = ComponentType {
    name: "websocket",
    kind: Kind::Source,
    about: "WebSocket server that OBUs send fixes to; confirms each frame once it is handled",
    parse: registry::parse::<WebsocketConfig>,
};

/// The declaration of a `websocket` source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketConfig {
    /// Address and port to listen on, for example `"0.0.0.0:30000"`.
    pub listen: SocketAddr,
    /// URL path of the WebSocket endpoint; upgrades on other paths get 404.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest frame (and reassembled message) accepted, in bytes; a larger one
    /// closes its connection with code 1009.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Most fixes one frame may carry; a frame with more is answered with an error.
    #[serde(default = "default_max_fixes_per_frame")]
    pub max_fixes_per_frame: usize,
    /// Most connections open at once; further ones are closed right after accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a connection may stay silent (no frame, no ping) or stay blocked
    /// writing a reply before it is closed.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
}

fn default_path() -> String {
    "/ws".to_owned()
}

fn default_max_frame_bytes() -> usize {
    1 << 20
}

fn default_max_fixes_per_frame() -> usize {
    10_000
}

fn default_max_connections() -> usize {
    20_000
}

fn default_idle_timeout_s() -> u64 {
    300
}

/// The most connections a semaphore permit count can describe.
const MAX_CONNECTIONS_LIMIT: usize = u32::MAX as usize;

impl Validate for WebsocketConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if !self.path.starts_with('/') {
            return Err(FieldError::at("path", "must start with `/`"));
        }
        if self.max_frame_bytes == 0 {
            return Err(FieldError::at("max_frame_bytes", "must be at least 1"));
        }
        if self.max_fixes_per_frame == 0 {
            return Err(FieldError::at("max_fixes_per_frame", "must be at least 1"));
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            let message = format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}");
            return Err(FieldError::at("max_connections", message));
        }
        if self.idle_timeout_s == 0 {
            return Err(FieldError::at("idle_timeout_s", "must be at least 1"));
        }
        Ok(())
    }
}

impl ComponentConfig for WebsocketConfig {
    fn signature(&self) -> Signature {
        Signature::source(EventKind::Fix)
    }

    fn build(&self, cx: &mut BuildContext) -> Result<Component, BuildError> {
        let source = self.bind_or_keep(cx.take_over::<KeptListener>())?;
        tracing::debug!(component = cx.name, address = %source.local_addr(), "websocket bound");
        Ok(Component::Source(Box::new(source) as Box<dyn Source>))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebsocketConfig, FieldError> {
        let value: toml::Value =
            toml::from_str(text).map_err(|e| FieldError::at("", e.to_string()))?;
        let config: WebsocketConfig =
            value.try_into().map_err(|e: toml::de::Error| FieldError::at("", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_fill_every_optional_field() {
        let config = parse(r#"listen = "127.0.0.1:30000""#).expect("minimal config parses");

        assert_eq!(config.listen, "127.0.0.1:30000".parse::<SocketAddr>().expect("address"));
        assert_eq!(config.path, "/ws");
        assert_eq!(config.max_frame_bytes, 1024 * 1024);
        assert_eq!(config.max_fixes_per_frame, 10_000);
        assert_eq!(config.max_connections, 20_000);
        assert_eq!(config.idle_timeout_s, 300);
    }

    #[test]
    fn unknown_field_is_refused() {
        let error = parse("listen = \"127.0.0.1:1\"\nmax_frame_size = 5").expect_err("unknown key");

        assert!(error.message.contains("max_frame_size"), "{error:?}");
    }

    #[test]
    fn listen_without_port_is_refused() {
        assert!(parse(r#"listen = "127.0.0.1""#).is_err());
    }

    #[test]
    fn zero_limits_and_relative_path_are_refused() {
        let cases = [
            ("path = \"ws\"", "path"),
            ("max_frame_bytes = 0", "max_frame_bytes"),
            ("max_fixes_per_frame = 0", "max_fixes_per_frame"),
            ("max_connections = 0", "max_connections"),
            ("idle_timeout_s = 0", "idle_timeout_s"),
        ];
        for (line, key) in cases {
            let error = parse(&format!("listen = \"127.0.0.1:1\"\n{line}")).expect_err(line);

            assert_eq!(error.path, vec![key.to_owned()], "{line}");
        }
    }
}
