//! Stages: turn fixes into distance and distance into totals.
pub mod aggregate;
pub mod distance;
