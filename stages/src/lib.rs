//! Event types and every component of the toll pipeline.
//!
//! - [`event`]: fixes, distance segments and invoice totals, moved in batches.
//! - [`ack`]: end-to-end acknowledgements that let sources advance safely.
//! - [`component`]: the traits each kind of component implements.
//! - [`registry`]: the one table of component types the runner builds from.
//! - [`telemetry`]: the shared metrics and health every component reports to.
//! - [`otel`]: sampling and spans of traced fixes.
//! - [`sources`], [`queues`], [`stages`], [`sinks`]: the components.

pub mod ack;
pub mod component;
pub mod event;
pub mod geo;
pub mod grpc;
pub mod invoice;
pub mod otel;
pub mod registry;
pub mod store;
pub mod telemetry;

pub mod queues;
pub mod sinks;
pub mod sources;
pub mod stages;

/// An error and its causes on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
