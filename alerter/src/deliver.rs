//! Delivery: timeouts, retries with exponential backoff and jitter on
//! transient failures (5xx, 429, connection errors, SMTP 4xx), honouring
//! `Retry-After` (seconds or an HTTP date); no retry on other refusals,
//! whose error keeps the receiver's own text; and a per-channel rate
//! limit. Error texts never include a URL (webhook URLs are secrets).

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde_json::Value;

use crate::error::AlerterError;

/// Retry policy of a channel.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured as given; longer ones are capped.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug)]
pub enum Attempt {
    Done,
    /// Transient: try again, after `wait` if the receiver said so.
    Retry {
        error: String,
        wait: Option<Duration>,
    },
    /// Permanent: give up now.
    Fail(AlerterError),
}

/// The delay before retry number `attempt` (1-based): `initial * 2^(attempt-1)`
/// stretched by `jitter` (0..1, a fraction added), capped at `max`.
pub fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let exp = policy
        .initial_backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.mul_f64(1.0 + jitter.clamp(0.0, 1.0)).min(policy.max_backoff)
}

/// Parses `Retry-After`: delay seconds or an HTTP date (relative to `now`).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Runs `attempt` until it succeeds, fails permanently, or the policy's
/// attempts are used up.
pub async fn with_retries<F, Fut>(policy: RetryPolicy, mut attempt: F) -> Result<(), AlerterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt>,
{
    let attempts = policy.max_attempts.max(1);
    let mut last = String::new();
    for n in 1..=attempts {
        let wait = match attempt().await {
            Attempt::Done => return Ok(()),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry { error, wait } => {
                last = error;
                wait
            }
        };
        if n == attempts {
            break;
        }
        let delay = match wait {
            Some(w) => w.min(policy.max_retry_after),
            None => backoff(&policy, n, rand::rng().random_range(0.0..0.25)),
        };
        tracing::debug!(attempt = n, ?delay, error = %last, "delivery failed, retrying");
        tokio::time::sleep(delay).await;
    }
    Err(AlerterError::Exhausted { attempts, last })
}

/// Classifies an HTTP answer.
pub async fn classify(resp: reqwest::Response) -> Attempt {
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Attempt::Done;
    }
    let wait = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, SystemTime::now()));
    let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
    if status == 429 || (500..600).contains(&status) {
        Attempt::Retry {
            error: format!("{status}: {body}"),
            wait,
        }
    } else {
        Attempt::Fail(AlerterError::Refused { status, body })
    }
}

/// Posts `body` as JSON to `url` with extra headers, retrying as the
/// policy says.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, String)],
    policy: RetryPolicy,
) -> Result<(), AlerterError> {
    with_retries(policy, || async {
        let mut req = client.post(url).json(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(resp) => classify(resp).await,
            Err(error) => Attempt::Retry {
                error: error.without_url().to_string(),
                wait: None,
            },
        }
    })
    .await
}

/// At most one send per `interval` (Slack: one message per second per
/// webhook).
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    next: Option<tokio::time::Instant>,
}

impl RateLimit {
    pub fn new(interval: Duration) -> Self {
        Self { interval, next: None }
    }

    /// Waits for the next slot and takes it.
    pub async fn acquire(&mut self) {
        let now = tokio::time::Instant::now();
        if let Some(next) = self.next
            && next > now
        {
            tokio::time::sleep_until(next).await;
        }
        self.next = Some(tokio::time::Instant::now() + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        assert_eq!(backoff(&p, 1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff(&p, 2, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(&p, 3, 0.5), Duration::from_millis(600));
        assert_eq!(backoff(&p, 9, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_honour_retry_after_and_stop_on_permanent_failure() {
        let policy = RetryPolicy::default();
        let start = tokio::time::Instant::now();
        let mut answers = vec![
            Attempt::Retry {
                error: "500".into(),
                wait: None,
            },
            Attempt::Retry {
                error: "429".into(),
                wait: Some(Duration::from_secs(7)),
            },
            Attempt::Done,
        ]
        .into_iter();
        with_retries(policy, || std::future::ready(answers.next().unwrap()))
            .await
            .unwrap();
        let waited = start.elapsed();
        // 250 ms (+ up to 25 % jitter) then exactly the 7 s asked for.
        assert!(
            waited >= Duration::from_millis(7250) && waited <= Duration::from_millis(7313),
            "{waited:?}"
        );

        let mut calls = 0;
        let e = with_retries(policy, || {
            calls += 1;
            std::future::ready(Attempt::Fail(AlerterError::Refused {
                status: 404,
                body: "no_service".into(),
            }))
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(e.to_string(), "receiver refused with 404: no_service");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_sends() {
        let mut r = RateLimit::new(Duration::from_secs(1));
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            r.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}
