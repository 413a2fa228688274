//! `multichat-bench`: drives a MultiChat server over its real protocol on loopback and measures it (see
//! docs/performance.md for the figures and how they were taken).

pub mod baseline;
pub mod client;
pub mod comparison;
pub mod report;
pub mod scenario;
pub mod target;
