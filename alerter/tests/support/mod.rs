//! What only the alerter's integration tests share (the rest comes from
//! `mlwatch-testkit`): alert records for the pure engine, alerts with the
//! values the page assertions expect, and the URL of the alerter's API.

#![allow(dead_code)]

use std::net::SocketAddr;

use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use mlwatch_testkit::Publisher;

/// Starts an in-process alerter on `config`, then a publisher on its
/// alerts topic.
pub async fn start(
    config: mlwatch_alerter::Config,
    shutdown: &CancellationToken,
) -> (mlwatch_alerter::Running, Publisher) {
    let kafka = config.kafka.clone();
    let running = mlwatch_alerter::start(config, shutdown.clone())
        .await
        .expect("alerter starts");
    (running, Publisher::new(&kafka).await)
}

/// An alert record for the pure engine, generated at `at`.
pub fn record(
    fp: &str,
    kind: &str,
    severity: &str,
    model: &str,
    status: mlwatch_alerter::alert::Status,
    at: i64,
) -> mlwatch_alerter::alert::AlertRecord {
    use mlwatch_alerter::alert::{AlertRecord, Status};
    AlertRecord {
        id: format!("{fp}-{}-{at}", status.as_str()),
        fingerprint: fp.into(),
        status,
        kind: kind.into(),
        severity: severity.into(),
        labels: [("model".to_string(), model.to_string())].into(),
        annotations: Default::default(),
        value: 1.0,
        threshold: 0.5,
        starts_at_ms: at,
        ends_at_ms: if status == Status::Resolved { at } else { 0 },
        recommendations: vec![],
        source: "analyzer".into(),
        generated_at_ms: at,
        expires_at_ms: 0,
    }
}

/// An alert as the analyzer would publish it.
pub fn alert(fingerprint: &str, kind: &str, severity: Severity, model: &str, firing: bool, at_ms: i64) -> Alert {
    let status = if firing {
        AlertStatus::Firing
    } else {
        AlertStatus::Resolved
    };
    let mut a = Alert {
        id: format!("{fingerprint}-{}-{at_ms}", status.as_str_name()),
        fingerprint: fingerprint.into(),
        status: status as i32,
        r#type: kind.into(),
        severity: severity as i32,
        value: 431.0,
        threshold: 200.0,
        starts_at_ms: at_ms,
        ends_at_ms: if firing { 0 } else { at_ms + 1 },
        recommendations: vec!["scale up to 3 replicas".into()],
        source: "analyzer".into(),
        generated_at_ms: at_ms,
        ..Default::default()
    };
    a.labels.insert("model".into(), model.into());
    a.labels.insert("model_version".into(), "v3".into());
    a.annotations.insert(
        "summary".into(),
        format!("p99 latency of {model} is 431 ms (threshold 200 ms)"),
    );
    a
}

/// Publishes [`alert`], firing.
pub async fn fire(publisher: &Publisher, fingerprint: &str, kind: &str, severity: Severity, model: &str, at_ms: i64) {
    publisher
        .send(&alert(fingerprint, kind, severity, model, true, at_ms))
        .await;
}

/// Publishes [`alert`], resolved.
pub async fn resolve(
    publisher: &Publisher,
    fingerprint: &str,
    kind: &str,
    severity: Severity,
    model: &str,
    at_ms: i64,
) {
    publisher
        .send(&alert(fingerprint, kind, severity, model, false, at_ms))
        .await;
}

/// The URL of `path` on the alerter's admin port (its API).
pub fn api(admin: SocketAddr, path: &str) -> String {
    format!("http://{admin}{path}")
}
