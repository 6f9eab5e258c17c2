//! What every mlwatch service needs, in one small crate.
//!
//! - [`config`]: layered configuration (defaults < TOML file <
//!   `MLWATCH_<SECTION>__<KEY>` environment variables), with errors that name
//!   the offending key; bad config exits with code 64.
//! - [`kafka`]: broker settings, librdkafka pass-through, topic names and
//!   creation, an idempotent producer, and the at-least-once consume loop with
//!   dead-lettering of poison messages.
//! - [`auth`]: secrets that never print and bearer-token authentication.
//! - [`secrets`]: which configuration keys hold secrets, one rule for config
//!   errors and logged settings.
//! - [`admin`]: the admin HTTP server (`/metrics`, `/healthz`, `/readyz`) that
//!   each service extends with its own routes.
//! - [`problem`]: the one error body of every HTTP API (RFC 9457 problem
//!   details) and the OpenAPI contract served at `/openapi.json`.
//! - [`shutdown`]: one root cancellation token fired by SIGTERM/SIGINT.
//! - [`telemetry`]: tracing setup (text or JSON lines).

pub mod admin;
pub mod auth;
pub mod cardinality;
pub mod cli;
pub mod config;
pub mod kafka;
pub mod listener;
pub mod problem;
pub mod process;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Whether retrying the same operation later can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Transient: the broker, a receiver or a peer is slow or away.
    Retry,
    /// Permanent: the input or the configuration is wrong.
    DoNotRetry,
}

/// Why a service could not start or stopped; shared by every service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSetupError),
    #[error("kafka: {0}")]
    KafkaClient(#[from] rdkafka::error::KafkaError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A configuration value that is well-formed but unusable; names the key.
    #[error("{key}: {reason}")]
    Config { key: String, reason: String },
    #[error("{0} failed: {1}")]
    Task(&'static str, String),
}

impl ServiceError {
    pub fn config(key: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Config {
            key: key.into(),
            reason: reason.to_string(),
        }
    }

    /// Process exit code: 64 for bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config { .. } => config::EXIT_BAD_CONFIG,
            Self::Kafka(kafka::KafkaSetupError::Stopped) => 0,
            _ => 1,
        }
    }
}

/// Waits for a service's main task (the tail of every service's `run`).
pub async fn join(task: tokio::task::JoinHandle<Result<(), ServiceError>>) -> Result<(), ServiceError> {
    task.await
        .map_err(|e| ServiceError::Task("service task", e.to_string()))?
}
