//! The mlwatch contracts, generated at build time from `proto/mlwatch/v1`.
//!
//! - [`v1::InferenceEvent`] and [`v1::LabelEvent`] travel on the inference and
//!   label topics; [`v1::Alert`] on the alerts topic; [`v1::ActionRecord`] on
//!   the actions topic. The wire format on Kafka is protobuf.
//! - [`v1::collector_server`] / [`v1::collector_client`]: the ingest API.
//! - [`v1::serving_control_server`] / [`v1::serving_control_client`]: what a
//!   serving platform implements so the remediator can scale and roll back.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`view`]: inference and label events read as borrowed views straight
//!   from their bytes (the collector's and the analyzer's hot path).
//! - [`identity`]: alert fingerprints and ids, shared by every service that
//!   reads or writes alerts.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/mlwatch.v1.rs"));
}

pub mod identity;
pub mod view;

/// Encoded `FileDescriptorSet` of every mlwatch proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mlwatch_descriptor.bin"));

pub use v1::{ActionRecord, Alert, InferenceEvent, LabelEvent};

impl v1::Severity {
    /// Lowercase name used in labels, routes and messages: `low`, `medium`,
    /// `high`, `critical` (`unspecified` for the zero value).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl v1::AlertStatus {
    /// Lowercase name: `firing`, `resolved`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}
