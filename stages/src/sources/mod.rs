//! Sources: where fixes enter the pipeline.
pub mod obu_sim;
pub mod websocket;
