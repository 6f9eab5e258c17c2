//! Accuracy with delayed labels: the label join, the metrics of labelled
//! outcomes, decay detection, trends and the confidence-based estimate.
//!
//! - [`metrics`]: mergeable accumulators (binary, multiclass, regression,
//!   label lag, CBPE) and the metrics they yield; pure.
//! - [`join`]: the on-disk store of pending predictions and early labels
//!   (redb, or an in-memory index over an append-only log), one per input
//!   partition, with TTL and idempotent replay.
//! - [`decay`]: significance tests and the decay decision against a
//!   baseline; pure.
//! - [`sequential`]: Page-Hinkley on the per-prediction correctness stream
//!   (early warning); pure.
//! - [`trend`]: least-squares slope and one-hour-ahead prediction; pure.
//! - [`tracker`]: per model/version/segment state tying the above together:
//!   where accuracy decay and early-warning alerts fire; pure.
//! - [`part`]: one partition's store and tracker, fed in message order and
//!   evaluated on the partition's event clock.
//!
//! docs/accuracy.md describes how the service drives these modules; the
//! Prometheus gauges are the service's (`mlwatch-analyzer`, `metrics`).

pub mod decay;
pub mod join;
pub mod metrics;
pub mod part;
pub mod sequential;
pub mod tracker;
pub mod trend;
