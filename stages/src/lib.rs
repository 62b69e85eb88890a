//! Event types and every component of the toll pipeline.
//!
//! - [`event`]: fixes, distance segments and invoice totals, moved in batches.
//! - [`ack`]: end-to-end acknowledgements that let sources advance safely.
//! - [`component`]: the traits each kind of component implements.
//! - [`registry`]: the one table of component types the runner builds from.
//! - [`telemetry`]: the shared metrics and health every component reports to.
//! - [`sources`], [`queues`], [`stages`], [`sinks`]: the components.

pub mod ack;
pub mod component;
pub mod event;
pub mod invoice;
pub mod registry;
pub mod telemetry;
