//! What every signal of the analyzer shares (pure: no I/O, no clock reads).
//!
//! - [`series`]: series identity (model, version, segment), the labels of
//!   its alerts, serde helpers for maps keyed by it.
//! - [`rules`]: the rule state machine (inactive, pending, firing; `for` and
//!   hysteresis) and alert building with the contract's fingerprint and id.
//! - [`clock`]: the one event-time clock a partition is driven by, the
//!   schedules its parts evaluate on, and window names (`5m`, `1h`).
//! - [`sketch`]: a mergeable relative-error quantile sketch (DDSketch).
//! - [`wire`]: inference events read as borrowed views into reused memory.
//! - [`error`]: the libraries' error type.
//!
//! The signals build on it: `mlwatch-analyzer-latency`,
//! `mlwatch-analyzer-accuracy` and `mlwatch-analyzer-drift`; the service
//! (`mlwatch-analyzer`) drives them from Kafka. None of these libraries
//! depends on Kafka, HTTP or an async runtime (their `Cargo.toml` says so).

pub mod clock;
pub mod error;
pub mod rules;
pub mod series;
pub mod sketch;
pub mod wire;

pub use clock::{EventClock, Schedule};
pub use error::{Error, Result};
pub use series::{SeriesId, SeriesKey};
