//! A small Rust client for the collector's HTTP API: batches events, sends
//! them with an optional bearer token, and retries 429 / 503 (and connection
//! failures) with exponential backoff that honours `Retry-After`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mlwatch_collector::client::ClientError> {
//! use mlwatch_collector::client::{Client, ClientConfig, Kind};
//! let client = Client::new(ClientConfig::new("http://127.0.0.1:8080"))?;
//! let events = vec![serde_json::json!({"event_id": "e1", "model": "fraud", "latency_ms": 12.5})];
//! let summary = client.send(Kind::Inferences, &events).await?;
//! assert_eq!(summary.accepted, 1);
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::security::Secret;

/// Which endpoint events go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Inferences,
    Labels,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Self::Inferences => "/v1/inferences",
            Self::Labels => "/v1/labels",
        }
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL of the collector's HTTP listener, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Bearer token, when the collector requires one.
    pub token: Option<Secret>,
    /// Events per request.
    pub batch_size: usize,
    /// Retries of one batch after a 429 / 503 / connection failure.
    pub max_retries: u32,
    /// First backoff; doubles per retry.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Extra PEM root certificate to trust (a private CA for TLS).
    pub root_ca_pem: Option<Vec<u8>>,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            batch_size: 500,
            max_retries: 8,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            root_ca_pem: None,
        }
    }
}

/// A rejected event as the collector reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Rejected {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// What became of everything sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Events acknowledged by the broker.
    pub accepted: usize,
    /// Rejected events; `index` counts across all events given to `send`.
    pub rejected: Vec<Rejected>,
    /// Retries made.
    pub retries: u32,
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("http client setup failed: {0}")]
    Setup(String),
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("collector answered {status}: {body}")]
    Refused { status: u16, body: String },
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    accepted: usize,
    #[serde(default)]
    rejected: Vec<Rejected>,
}

/// The backoff before retry `attempt` (0-based): exponential from
/// `initial`, capped at `max`, never shorter than the server's
/// `Retry-After`, with up to 20 % jitter (`jitter` in [0, 1)).
pub fn backoff(attempt: u32, initial: Duration, max: Duration, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let base = exp.max(retry_after.unwrap_or_default());
    base + base.mul_f64(0.2 * jitter.clamp(0.0, 1.0))
}

/// The collector client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().timeout(config.request_timeout);
        if let Some(pem) = &config.root_ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| ClientError::Setup(e.to_string()))?;
            builder = builder.tls_certs_merge([cert]);
        }
        let http = builder.build().map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self { http, config })
    }

    /// Sends `events` in batches of `batch_size`, retrying each batch on
    /// 429 / 503 until accepted or `max_retries` is spent.
    pub async fn send(&self, kind: Kind, events: &[Value]) -> Result<Summary, ClientError> {
        let mut summary = Summary::default();
        for (n, chunk) in events.chunks(self.config.batch_size.max(1)).enumerate() {
            let offset = n * self.config.batch_size.max(1);
            let mut body = Vec::with_capacity(chunk.len() * 256);
            for e in chunk {
                serde_json::to_writer(&mut body, e).map_err(|e| ClientError::Setup(e.to_string()))?;
                body.push(b'\n');
            }
            let (answer, retries) = self.post(kind, body).await?;
            summary.accepted += answer.accepted;
            summary.retries += retries;
            summary.rejected.extend(answer.rejected.into_iter().map(|mut r| {
                r.index += offset;
                r
            }));
        }
        Ok(summary)
    }

    async fn post(&self, kind: Kind, body: Vec<u8>) -> Result<(Answer, u32), ClientError> {
        let url = format!("{}{}", self.config.base_url.trim_end_matches('/'), kind.path());
        let mut attempt = 0u32;
        loop {
            let mut request = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone());
            if let Some(token) = &self.config.token {
                request = request.bearer_auth(token.expose());
            }
            let (last, retry_after) = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = response.text().await.unwrap_or_default();
                    match status {
                        // 400 with a list: every event was rejected, precisely.
                        200 | 400 => match serde_json::from_str::<Answer>(&text) {
                            Ok(a) if status == 200 || !a.rejected.is_empty() => return Ok((a, attempt)),
                            _ => return Err(ClientError::Refused { status, body: text }),
                        },
                        429 | 503 => (format!("{status}: {text}"), retry_after),
                        _ => return Err(ClientError::Refused { status, body: text }),
                    }
                }
                Err(e) => (e.to_string(), None),
            };
            if attempt >= self.config.max_retries {
                return Err(ClientError::GaveUp {
                    attempts: attempt + 1,
                    last,
                });
            }
            let wait = backoff(
                attempt,
                self.config.initial_backoff,
                self.config.max_backoff,
                retry_after,
                rand::random::<f64>(),
            );
            tracing::debug!(attempt, ?wait, reason = %last, "collector busy, retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_honours_retry_after() {
        let ms = Duration::from_millis;
        let (i, m) = (ms(100), ms(1000));
        assert_eq!(backoff(0, i, m, None, 0.0), ms(100));
        assert_eq!(backoff(1, i, m, None, 0.0), ms(200));
        assert_eq!(backoff(3, i, m, None, 0.0), ms(800));
        assert_eq!(backoff(4, i, m, None, 0.0), ms(1000));
        assert_eq!(backoff(40, i, m, None, 0.0), ms(1000));
        assert_eq!(backoff(0, i, m, Some(ms(2000)), 0.0), ms(2000));
        assert_eq!(backoff(0, i, m, None, 0.5), ms(110));
    }
}
