//! Waiting with a deadline: a test fails naming what it waited for, never
//! hangs.

use std::time::Duration;

/// Awaits `fut` or fails the test after `secs` seconds, naming `what`.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s waiting for {what}"),
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or fails the test
/// after `secs` seconds naming `what`.
pub async fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrapes `url` (a `/metrics` endpoint) until `ready` accepts the text,
/// or fails the test after `secs` seconds naming `what` and showing the
/// last text scraped.
pub async fn scrape_until(
    client: &reqwest::Client,
    url: &str,
    secs: u64,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = client.get(url).send().await
            && let Ok(text) = r.text().await
        {
            if ready(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs} s waiting for {what}; last scrape:\n{last}")
}
