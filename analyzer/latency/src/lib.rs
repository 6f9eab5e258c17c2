//! Latency and traffic of each model version (pure: no I/O, no clock reads).
//!
//! - [`window`]: event-time sliding windows of latency statistics (count,
//!   errors, slow requests, a DDSketch per slot).
//! - [`thresholds`]: the four threshold rules (p99, throughput, slow and
//!   error rate) and their per-model overrides.
//! - [`detectors`]: latency spikes (z-score) and SLA-breach prediction.
//! - [`engine`]: one partition's latency part ([`engine::PartitionState`]):
//!   a series per model, version and segment, evaluated on event time;
//!   where latency and traffic alerts fire (`evaluate_series`).

pub mod detectors;
pub mod engine;
pub mod thresholds;
pub mod window;
