//! The analysis libraries' error type.

/// Why an analysis step failed. The service maps it to its own error (a
/// bad value to exit code 64 naming the key, the rest to a failed task).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that is well-formed but unusable; names the key.
    #[error("{key}: {reason}")]
    Config { key: String, reason: String },
    /// An on-disk store (the label join's) could not be read or written;
    /// names the store, the file and the operation.
    #[error("{store}: {what}")]
    Storage { store: &'static str, what: String },
    /// A state or input that breaks an invariant (a corrupt record, a
    /// checkpoint that does not fit); says which.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn config(key: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Config {
            key: key.into(),
            reason: reason.to_string(),
        }
    }

    /// A storage failure of `store`.
    pub fn storage(store: &'static str, what: impl std::fmt::Display) -> Self {
        Self::Storage {
            store,
            what: what.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
