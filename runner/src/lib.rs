//! The pipeline runner: file → validated graph → running topology.
//!
//! - [`config`]: reads a pipeline file into located component declarations.
//! - [`graph`]: resolves inputs, rejects cycles and mismatched event kinds.
//! - [`topology`]: builds the components, wires channels, runs and stops them.
//! - [`cli`]: the command line and what each command does.
//! - [`otel`]: metrics and spans exported over OTLP, and a scrape endpoint.
//!
//! Nothing here knows what a toll is: components come from the registry of
//! the `stages` crate.

pub mod cli;
pub mod config;
pub mod graph;
pub mod logging;
pub mod otel;
pub mod topology;
pub mod watch;
