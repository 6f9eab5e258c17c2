//! Data drift and data quality against a reference profile (pure, no I/O
//! but the file readers of the `files` feature).
//!
//! - [`profile`]: the compact, versioned reference profile (quantile bins for
//!   numbers, frequency tables for categories) and its builder.
//! - [`ingest`]: CSV and JSON Lines readers feeding the profile builder
//!   (feature `files`; used by the `mlwatch-profile` binary, feature `cli`).
//! - [`stats`]: PSI, KS, Jensen-Shannon, Wasserstein, chi-square and the
//!   CUSUM threshold, on bin counts.
//! - [`monitor`]: one model's drift and quality state: `observe` events,
//!   `evaluate` at the end of a window to get decisions (`FeatureDrift`,
//!   `PredictionDrift`, `DataQuality`), read the report and metric values.
//! - [`part`]: one partition's monitors (a [`DriftMonitor`] per model
//!   version, deciding at the end of its windows of the partition's clock)
//!   and the `[drift]` section; where drift and quality alerts fire.
//! - [`capture`]: reference profiles captured from a model's own events.
//! - [`registry`]: the profiles an instance knows and their local file
//!   cache.
//! - `names`: lookup of a profile's names by an event's bytes.
//! - [`sim`]: deterministic synthetic streams with injected drift (tests,
//!   benchmark, demo).
//!
//! The statistical method and the integration points are in `docs/drift.md`.

pub mod capture;
#[cfg(feature = "files")]
pub mod ingest;
pub mod monitor;
mod names;
pub mod part;
pub mod profile;
pub mod registry;
pub mod sim;
pub mod stats;

pub use monitor::{
    Decision, DecisionKind, DecisionStatus, DriftConfig, DriftMonitor, DriftReport, DriftRulesConfig, MetricValues,
    MonitorState, QualityCheck, QualityConfig,
};
pub use profile::{BuildOptions, FeatureProfile, Profile, ProfileBuilder, Value};

/// Why a profile or its input could not be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DriftError {
    /// The profile JSON is malformed or breaks an invariant; names the field.
    #[error("invalid profile: {0}")]
    InvalidProfile(String),
    /// Input rows for a profile could not be read; names the row and field.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Build options or drift configuration are unusable; names the key.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A checkpoint does not fit the profile it is restored with.
    #[error("invalid checkpoint: {0}")]
    InvalidState(String),
    /// A profile for a different model was given to a monitor.
    #[error("profile is for model {profile:?}, not {model:?}")]
    WrongModel { profile: String, model: String },
}
