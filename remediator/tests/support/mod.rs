//! Shared by the remediator's integration tests: a real broker with private
//! topics, the simulated platform (a real tonic `ServingControl` server),
//! the remediator started through `start` (or as a child process), alerts
//! published the way the analyzer publishes them, and the audit trail read
//! back from the actions topic and the API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_demo::sim::SimPlatform;
use mlwatch_proto::v1::{ActionDecision, ActionRecord, Alert, AlertStatus, Severity};
use mlwatch_remediator::Config;
use prost::Message as _;
use rdkafka::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

pub use mlwatch_tests::{init_logs, kafka_for_test, read_topic, within};

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A platform serving `ServingControl` on a loopback port.
pub async fn platform(sim: &SimPlatform, shutdown: &CancellationToken) -> SocketAddr {
    let (addr, _task) = sim.serve(loopback(), shutdown.clone()).await.expect("platform serves");
    addr
}

/// What every test starts with: private topics (and their suffix), a
/// shutdown token, and the simulated platform serving on a loopback port
/// until that token fires.
pub async fn fixture(name: &str) -> (KafkaConfig, String, CancellationToken, SimPlatform, SocketAddr) {
    init_logs();
    let (kafka, suffix) = kafka_for_test(name);
    let shutdown = CancellationToken::new();
    let sim = SimPlatform::default();
    let addr = platform(&sim, &shutdown).await;
    (kafka, suffix, shutdown, sim, addr)
}

/// A remediator configuration for one test: private topics and group,
/// loopback admin port, the given platform, fast ticks.
pub fn config(kafka: &KafkaConfig, suffix: &str, serving: SocketAddr) -> Config {
    let mut c = Config::default();
    c.kafka = kafka.clone();
    c.admin = AdminConfig::on(loopback());
    c.remediator.group_id = format!("mlwatch-remediator-{suffix}");
    c.remediator.tick_ms = 200;
    c.serving.endpoint = format!("http://{serving}");
    c
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

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

/// An alert as the analyzer builds it (same fingerprint and id rules).
pub fn alert(alert_type: &str, severity: Severity, model: &str, status: AlertStatus, starts_at_ms: i64) -> Alert {
    let mut labels = BTreeMap::new();
    labels.insert("model".to_string(), model.to_string());
    let fingerprint = mlwatch_proto::identity::fingerprint(alert_type, &labels);
    Alert {
        id: mlwatch_proto::identity::alert_id(&fingerprint, status, starts_at_ms),
        fingerprint,
        status: status as i32,
        r#type: alert_type.to_string(),
        severity: severity as i32,
        labels: labels.into_iter().collect(),
        starts_at_ms,
        ends_at_ms: if status == AlertStatus::Resolved {
            starts_at_ms + 1
        } else {
            0
        },
        source: "analyzer".into(),
        generated_at_ms: mlwatch_common::now_ms(),
        ..Default::default()
    }
}

pub async fn publish(kafka: &KafkaConfig, alert: &Alert) {
    publish_keyed(kafka, &alert.fingerprint, alert).await;
}

/// Publishes with an explicit Kafka key (same key, same partition: handled
/// after what was published before under it).
pub async fn publish_keyed(kafka: &KafkaConfig, key: &str, alert: &Alert) {
    let producer: FutureProducer = kafka.producer().expect("producer");
    producer
        .send(
            FutureRecord::to(&kafka.topics.alerts)
                .key(key)
                .payload(&alert.encode_to_vec()),
            Duration::from_secs(10),
        )
        .await
        .expect("alert published");
}

/// The action records on the actions topic, once `done` holds (or after
/// `secs`).
pub async fn records(kafka: &KafkaConfig, secs: u64, done: impl Fn(&[ActionRecord]) -> bool) -> Vec<ActionRecord> {
    let msgs = read_topic(kafka, &kafka.topics.actions, secs, |ms| {
        done(
            &ms.iter()
                .filter_map(|m| ActionRecord::decode(m.payload().unwrap_or_default()).ok())
                .collect::<Vec<_>>(),
        )
    })
    .await;
    msgs.iter()
        .filter_map(|m| ActionRecord::decode(m.payload().unwrap_or_default()).ok())
        .collect()
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

/// Polls the remediator's API until `done` holds for the listed actions.
pub async fn api_until(
    api: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    within(secs, what, async {
        loop {
            if let Ok(r) = client.get(format!("{api}/v1/actions")).send().await
                && let Ok(v) = r.json::<serde_json::Value>().await
            {
                let actions = v["actions"].as_array().cloned().unwrap_or_default();
                if done(&actions) {
                    return actions;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

pub fn with_decision<'a>(actions: &'a [serde_json::Value], decision: &str) -> Vec<&'a serde_json::Value> {
    actions.iter().filter(|a| a["decision"] == decision).collect()
}

pub async fn post(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("api answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .expect("api answers")
        .json()
        .await
        .expect("json answer")
}
