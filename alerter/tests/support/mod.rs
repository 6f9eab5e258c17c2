//! Helpers shared by the alerter's integration tests: alerts published to
//! a private topic of the real broker, and polling with a deadline.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// An in-process alerter's configuration: the test's topics and consumer
/// group, an OS-chosen admin port, state in memory.
pub fn config(kafka: &KafkaConfig, suffix: &str) -> mlwatch_alerter::Config {
    let mut config = mlwatch_alerter::Config::default();
    config.kafka = kafka.clone();
    config.admin = mlwatch_common::config::AdminConfig::on(loopback());
    config.alerter.group_id = format!("alerter-{suffix}");
    config.alerter.state_file = None;
    config
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

pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    pub async fn new(kafka: &KafkaConfig) -> Self {
        kafka
            .ensure_topics(&[&kafka.topics.alerts, &kafka.topics.deadletter])
            .await
            .expect("topics");
        Self {
            producer: kafka.producer().expect("producer"),
            topic: kafka.topics.alerts.clone(),
        }
    }

    pub async fn send(&self, a: &Alert) {
        let bytes = a.encode_to_vec();
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(&a.fingerprint).payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }

    pub async fn send_raw(&self, key: &str, bytes: &[u8]) {
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(key).payload(bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after
/// `secs` naming `what`.
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

/// GETs a JSON answer from the alerter's API.
pub async fn get_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://{admin}{path}"))
        .await
        .expect("api answers")
        .json()
        .await
        .expect("json")
}

/// A header's value from a received request.
pub fn header(r: &mlwatch_demo::receiver::Received, name: &str) -> Option<String> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

/// [`get_json`] from synchronous code (the polling closures): runs on its
/// own thread and runtime, so it never blocks a runtime worker.
pub fn get_json_blocking(admin: SocketAddr, path: &str) -> serde_json::Value {
    let path = path.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(get_json(admin, &path))
    })
    .join()
    .unwrap()
}
