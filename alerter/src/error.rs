//! The alerter's one error enum (start-up failures use the services'
//! shared `mlwatch_common::ServiceError`). Each variant knows whether a
//! retry can help and which HTTP status the admin API answers with.

use mlwatch_common::RetryHint;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlerterError {
    #[error("bad matcher {text:?}: {reason}")]
    BadMatcher { text: String, reason: String },
    #[error("route {route}: {reason}")]
    BadRoute { route: String, reason: String },
    /// A configuration value that is unusable; names the key.
    #[error("{key}: {reason}")]
    BadConfig { key: String, reason: String },
    #[error("invalid alert: {0}")]
    InvalidAlert(String),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("receiver refused with {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("state store: {0}")]
    Store(String),
    #[error("cannot render {channel} message: {reason}")]
    Render { channel: &'static str, reason: String },
}

impl AlerterError {
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            Self::Exhausted { .. } | Self::Store(_) => RetryHint::Retry,
            _ => RetryHint::DoNotRetry,
        }
    }

    /// The admin API's answer status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotFound { .. } => 404,
            Self::BadMatcher { .. } | Self::Invalid(_) | Self::InvalidAlert(_) => 400,
            Self::Store(_) => 503,
            _ => 500,
        }
    }
}
