//! Sources: where fixes enter the pipeline.
pub mod grpc;
pub mod grpc_invoices;
pub mod obu_sim;
pub mod websocket;
