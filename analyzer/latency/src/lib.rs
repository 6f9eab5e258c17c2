//! Latency and traffic of each model version (pure: no I/O, no clock reads).
//!
//! - [`window`]: event-time sliding windows of latency statistics (count,
//!   errors, slow requests, a DDSketch per slot).
//! - [`thresholds`]: the four threshold rules (p99, throughput, slow and
//!   error rate) and their per-model overrides.
//! - [`detectors`]: latency spikes (z-score) and SLA-breach prediction.
//! - [`part`]: one partition's latency part ([`part::LatencyPart`]): a
//!   series per model, version and segment, evaluated on the partition's
//!   event clock; where latency and traffic alerts fire.

pub mod detectors;
pub mod part;
pub mod thresholds;
pub mod window;

pub use part::{LatencyConfig, LatencyPart, RulesConfig, Settings};
