//! HTTP delivery with timeouts and retries: exponential backoff with jitter
//! on 5xx, 429 and connection errors, honouring `Retry-After`; no retry on
//! other 4xx. Error texts never include the URL (webhook URLs are secrets).

use std::time::Duration;

use rand::Rng;
use serde_json::Value;

/// The outcome of a delivery that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("receiver refused with {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
}

/// Retry policy of a channel.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Posts `body` as JSON to `url`, retrying as the policy says.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    policy: RetryPolicy,
) -> Result<(), DeliveryError> {
    let mut backoff = policy.initial_backoff;
    let mut last = String::new();
    for attempt in 1..=policy.max_attempts {
        let wait = match client.post(url).json(body).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let hint = retry_after(resp.headers());
                let text: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
                if status != 429 && !(500..600).contains(&status) {
                    return Err(DeliveryError::Refused { status, body: text });
                }
                last = format!("{status}: {text}");
                hint
            }
            Err(error) => {
                last = error.without_url().to_string();
                None
            }
        };
        if attempt == policy.max_attempts {
            break;
        }
        let jitter = rand::rng().random_range(0.0..0.25);
        let delay = wait
            .unwrap_or_else(|| backoff.mul_f64(1.0 + jitter))
            .min(policy.max_backoff);
        tracing::debug!(attempt, ?delay, %last, "delivery failed, retrying");
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    }
    Err(DeliveryError::Exhausted {
        attempts: policy.max_attempts,
        last,
    })
}
