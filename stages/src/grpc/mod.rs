//! The gRPC link between the processes of a split pipeline: the generated
//! `toll.v1` code, conversions between pipeline events and their wire form,
//! and what every client of an aggregator shares.
//!
//! The components built on it are the `grpc` source (the aggregator's
//! server), the `grpc` sink (a distance process delivering segments) and the
//! `grpc_invoices` source (a gateway process reading invoices).

mod book;
mod client;
mod convert;

pub use book::RemoteBook;
pub use client::{channel, check_url, Backoff, ClientError, WarnLimiter};
pub use convert::{
    invoice_from_proto, invoice_to_proto, parse_traceparent, segment_from_proto, segment_to_proto,
    traceparent, SegmentError,
};

/// Code generated from `proto/toll/v1/aggregator.proto` by `build.rs`.
pub mod proto {
    // The generated code is not ours to lint: clippy's style lints on it
    // would fail the build without anything we could change here.
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("toll.v1");
}

/// Longest message either side accepts unless configured otherwise, bytes:
/// 65,536 segments of the longest OBU id fit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Most segments one `Deliver` call may carry, so that a batch always fits
/// in [`DEFAULT_MAX_MESSAGE_BYTES`].
pub const MAX_BATCH_SEGMENTS: usize = 65_536;
