//! A service binary started while its broker is down, as each service's
//! `tests/startup.rs` checks it: the admin port answers at once
//! (`/healthz` 200, `/metrics` 200, `/readyz` 503 saying it waits for the
//! broker and why), SIGTERM stops it within seconds with exit code 0, and
//! once a broker listens on the address it becomes ready by itself.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::broker::{PrivateBroker, free_port};

/// How long SIGTERM may take to stop a service that waits for its broker.
pub const STOP_WITHIN: Duration = Duration::from_secs(5);

async fn status_and_text(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// Polls `url` until `check` holds for its status and body; panics after
/// `secs` with the last answer.
async fn until(url: &str, secs: u64, what: &str, check: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some((status, text)) = status_and_text(url).await {
            if check(status, &text) {
                return text;
            }
            last = Some((status, text));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not within {secs} s at {url}; last answer {last:?}");
}

fn spawn(binary: &str, dir: &Path, config: &str) -> Child {
    let file = dir.join("service.toml");
    std::fs::write(&file, config).unwrap();
    Command::new(binary)
        .arg("--config")
        .arg(&file)
        .current_dir(dir)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("service.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("the service binary runs")
}

/// Sends SIGTERM and returns the exit code and how long the exit took.
async fn terminate(child: &mut Child) -> (Option<i32>, Duration) {
    let pid = child.id().expect("running").to_string();
    let start = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the service exits after SIGTERM")
        .unwrap();
    (status.code(), start.elapsed())
}

/// Checks the start-up of `binary` without a broker. `admin_port` is the
/// service's fixed admin port; `extra` is more TOML for the service (its
/// own sections).
pub async fn assert_waits_for_broker(binary: &str, admin_port: u16, extra: &str) {
    let dir = crate::temp_dir("startup");
    let broker_port = free_port();
    let config = format!(
        "[kafka]\nbootstrap_servers = \"127.0.0.1:{broker_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{extra}"
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    let log = || std::fs::read_to_string(dir.path().join("service.log")).unwrap_or_default();

    // No broker: the admin port answers and says why it is not ready.
    let mut child = spawn(binary, dir.path(), &config);
    until(&format!("{admin}/healthz"), 10, "/healthz answers", |s, _| s == 200).await;
    until(&format!("{admin}/metrics"), 5, "/metrics answers", |s, t| {
        s == 200 && t.contains("process_start_time_seconds")
    })
    .await;
    let why = until(
        &format!("{admin}/readyz"),
        60,
        "/readyz names the failed attempt",
        |s, t| s == 503 && t.contains("attempt 1, next in 1 s"),
    )
    .await;
    assert!(
        why.contains(&format!("waiting for the broker at 127.0.0.1:{broker_port}")),
        "{why}"
    );
    let (code, took) = terminate(&mut child).await;
    assert_eq!(code, Some(0), "exit code after SIGTERM; log:\n{}", log());
    assert!(took < STOP_WITHIN, "SIGTERM took {took:?}; log:\n{}", log());
    assert!(
        log().contains("the broker cannot be reached; retrying"),
        "the wait is logged:\n{}",
        log()
    );

    // Again, then a broker appears: ready by itself.
    let mut child = spawn(binary, dir.path(), &config);
    until(&format!("{admin}/readyz"), 30, "/readyz waits", |s, t| {
        s == 503 && t.contains("waiting for the broker")
    })
    .await;
    let _broker = PrivateBroker::start_on(broker_port).await;
    until(
        &format!("{admin}/readyz"),
        90,
        "ready once the broker listens",
        |s, _| s == 200,
    )
    .await;
    let (code, took) = terminate(&mut child).await;
    assert_eq!(code, Some(0), "exit code after SIGTERM; log:\n{}", log());
    assert!(took < Duration::from_secs(15), "SIGTERM took {took:?} when running");
}
