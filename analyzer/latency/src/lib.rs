//! Latency and traffic of each model version (pure: no I/O, no clock reads).
//!
//! - [`window`]: event-time sliding windows of latency statistics (count,
//!   errors, slow requests, a DDSketch per slot).
//! - [`thresholds`]: the four threshold rules (p99, throughput, slow and
//!   error rate) and their per-model overrides.
//! - [`detectors`]: latency spikes (z-score) and SLA-breach prediction.
//! - [`relative`]: baseline-relative, multi-window latency and error checks.
//! - [`stats`]: the test statistics of the relative rules and the version
//!   comparison (binomial test, Wilson interval, quantile intervals).
//! - [`versions`]: version comparison (automated canary analysis).
//! - [`part`]: one partition's latency part ([`part::LatencyPart`]): a
//!   series per model, version and segment, evaluated on the partition's
//!   event clock; where latency and traffic alerts fire.

pub mod detectors;
pub mod part;
pub mod relative;
pub mod stats;
pub mod thresholds;
pub mod versions;
pub mod window;

pub use part::{LatencyConfig, LatencyPart, RulesConfig, Settings};
