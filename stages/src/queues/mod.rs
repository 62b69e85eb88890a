//! Queues: carry events between components, in this process or across processes.
pub mod kafka;
pub mod memory;
