//! Sinks: deliver events out of the pipeline.

pub mod console;
pub mod gateway;
pub mod grpc;
pub mod websocket;
