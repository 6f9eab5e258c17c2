//! What only the remediator's integration tests share (the rest comes from
//! `mlwatch-testkit`): the simulated platform serving for each test, the
//! remediator started through `start`, alerts published the way the
//! analyzer publishes them, and the audit trail read back from the actions
//! topic and the API.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{ActionDecision, ActionRecord, Alert, AlertStatus, Severity};
use mlwatch_testkit::sim::SimPlatform;

pub use mlwatch_remediator::Config;
// What most of the tests use from the kit (each test binary a part of it).
#[allow(unused_imports)]
pub use mlwatch_testkit::http::{get_json, get_text};
#[allow(unused_imports)]
pub use mlwatch_testkit::{init_logs, loopback, read_topic, within};

/// What every test starts with: private topics (and their suffix), a
/// shutdown token, and the simulated platform serving on a loopback port
/// until that token fires.
pub async fn fixture(name: &str) -> (KafkaConfig, String, CancellationToken, SimPlatform, SocketAddr) {
    let (kafka, suffix, shutdown) = mlwatch_testkit::setup(name);
    let sim = SimPlatform::default();
    let addr = sim.start(&shutdown).await;
    (kafka, suffix, shutdown, sim, addr)
}

pub struct Remediator {
    pub api: String,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), mlwatch_remediator::Error>>,
}

impl Remediator {
    pub async fn start(config: Config) -> Self {
        let shutdown = CancellationToken::new();
        let running = mlwatch_remediator::start(config, shutdown.clone())
            .await
            .expect("remediator starts");
        Self {
            api: format!("http://{}", running.admin_addr),
            shutdown,
            task: running.task,
        }
    }

    /// POSTs `body` to `path` of the remediator's API; returns the status
    /// and the JSON answer.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        mlwatch_testkit::post_json(&format!("{}{path}", self.api), body).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// An alert on `model` as the analyzer builds it (same fingerprint and id
/// rules).
pub fn alert(alert_type: &str, severity: Severity, model: &str, status: AlertStatus, starts_at_ms: i64) -> Alert {
    mlwatch_testkit::kafka::analyzer_alert(alert_type, severity, &[("model", model)], status, starts_at_ms)
}

/// [`alert`], firing.
pub fn firing(alert_type: &str, severity: Severity, model: &str, starts_at_ms: i64) -> Alert {
    alert(alert_type, severity, model, AlertStatus::Firing, starts_at_ms)
}

/// [`alert`], resolved.
pub fn resolved(alert_type: &str, severity: Severity, model: &str, starts_at_ms: i64) -> Alert {
    alert(alert_type, severity, model, AlertStatus::Resolved, starts_at_ms)
}

pub async fn publish(kafka: &KafkaConfig, alert: &Alert) {
    mlwatch_testkit::Publisher::new(kafka).await.send(alert).await;
}

/// Publishes with an explicit Kafka key (same key, same partition: handled
/// after what was published before under it).
pub async fn publish_keyed(kafka: &KafkaConfig, key: &str, alert: &Alert) {
    mlwatch_testkit::Publisher::new(kafka)
        .await
        .send_keyed(key, alert)
        .await;
}

/// The action records on the actions topic, once `done` holds (or after
/// `secs`).
pub async fn records(kafka: &KafkaConfig, secs: u64, done: impl Fn(&[ActionRecord]) -> bool) -> Vec<ActionRecord> {
    mlwatch_testkit::read_decoded(kafka, &kafka.topics.actions, secs, done).await
}

pub fn decisions(records: &[ActionRecord]) -> Vec<ActionDecision> {
    records
        .iter()
        .map(|r| ActionDecision::try_from(r.decision).unwrap_or_default())
        .collect()
}

pub fn count(records: &[ActionRecord], d: ActionDecision) -> usize {
    records.iter().filter(|r| r.decision == d as i32).count()
}

/// The trail of an action carried out and verified.
pub const PLANNED_EXECUTED_VERIFIED: [ActionDecision; 3] = [
    ActionDecision::Planned,
    ActionDecision::Executed,
    ActionDecision::Verified,
];

/// Polls the remediator's API until `done` holds for the listed actions.
pub async fn api_until(
    api: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let listed = |v: &serde_json::Value| v["actions"].as_array().cloned().unwrap_or_default();
    let v = mlwatch_testkit::http::poll_json(&format!("{api}/v1/actions"), secs, what, |v| done(&listed(v))).await;
    listed(&v)
}

/// The reason of the first listed action with `decision`.
pub fn reason<'a>(actions: &'a [serde_json::Value], decision: &str) -> &'a str {
    with_decision(actions, decision)[0]["reason"]
        .as_str()
        .unwrap_or_default()
}

pub fn with_decision<'a>(actions: &'a [serde_json::Value], decision: &str) -> Vec<&'a serde_json::Value> {
    actions.iter().filter(|a| a["decision"] == decision).collect()
}
