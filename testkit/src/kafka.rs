//! The broker under test: private topics per test, the TOML a child
//! process reads, topics read back and decoded, alerts published.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};

/// The broker under test: `KAFKA_BOOTSTRAP_SERVERS`, else the local default
/// that `scripts/broker.sh` starts.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A Kafka configuration whose topics are private to one test (3
/// partitions each), and the suffix of their names (`{name}-{run}`), for
/// the test's consumer groups.
pub fn kafka_for_test(name: &str) -> (KafkaConfig, String) {
    let suffix = format!("{name}-{}", crate::run_suffix());
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap(),
        topics: Topics::with_suffix(&suffix),
        partitions: 3,
        ..KafkaConfig::default()
    };
    (kafka, suffix)
}

/// The `[kafka]` and `[kafka.topics]` sections of a service's TOML file
/// for `kafka`: what a test that runs a service binary writes first.
pub fn kafka_toml(kafka: &KafkaConfig) -> String {
    let t = &kafka.topics;
    format!(
        r#"[kafka]
bootstrap_servers = "{}"
partitions = {}
[kafka.topics]
inference = "{}"
labels = "{}"
alerts = "{}"
actions = "{}"
deadletter = "{}"
profiles = "{}"
"#,
        kafka.bootstrap_servers, kafka.partitions, t.inference, t.labels, t.alerts, t.actions, t.deadletter, t.profiles
    )
}

/// Writes the TOML file of a service that a test runs as a child process
/// (`--config`): `kafka`'s sections ([`kafka_toml`]), the admin port on a
/// loopback port the OS picks, then `rest` (the service's own sections).
/// Returns its path, `{dir}/{name}.toml`.
pub fn config_file(dir: &Path, name: &str, kafka: &KafkaConfig, rest: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!("{}[admin]\nlisten = \"127.0.0.1:0\"\n{rest}", kafka_toml(kafka));
    std::fs::write(&path, text).expect("config file written");
    path
}

/// The client settings of a consumer that reads from the beginning, in a
/// group of its own (`{prefix}-{run}`), and commits nothing.
pub fn reader_config(kafka: &KafkaConfig, prefix: &str) -> ClientConfig {
    let mut config = kafka.client_config();
    config
        .set("group.id", format!("{prefix}-{}", crate::run_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000");
    config
}

/// Reads `topic` from the beginning until `done` says enough was read, or
/// `secs` pass; returns the messages read.
pub async fn read_topic(
    kafka: &KafkaConfig,
    topic: &str,
    secs: u64,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = reader_config(kafka, "reader").create().expect("reader consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done(&out) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => break,
        }
    }
    out
}

/// The messages of `topic` that decode as `M`, read from the beginning
/// until `done` holds for them (or `secs` pass); others are skipped.
pub async fn read_decoded<M: prost::Message + Default>(
    kafka: &KafkaConfig,
    topic: &str,
    secs: u64,
    done: impl Fn(&[M]) -> bool,
) -> Vec<M> {
    let decode = |ms: &[OwnedMessage]| -> Vec<M> {
        ms.iter()
            .filter_map(|m| M::decode(m.payload().unwrap_or_default()).ok())
            .collect()
    };
    decode(&read_topic(kafka, topic, secs, |ms| done(&decode(ms))).await)
}

/// The inference events on the inference topic once there are at least
/// `min` (or `secs` passed), decoded and sorted by event id.
pub async fn read_inferences(kafka: &KafkaConfig, min: usize, secs: u64) -> Vec<mlwatch_proto::InferenceEvent> {
    let messages = read_topic(kafka, &kafka.topics.inference, secs, |ms| ms.len() >= min).await;
    let mut events: Vec<mlwatch_proto::InferenceEvent> = messages
        .iter()
        .map(|m| mlwatch_proto::InferenceEvent::decode(m.payload().unwrap_or_default()).expect("an inference event"))
        .collect();
    events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    events
}

/// A header's value as text.
pub fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// An alert as the analyzer builds it: fingerprint and id by the rules of
/// `mlwatch_proto::identity`, `labels` as given, generated now; a resolved
/// alert ends 1 ms after it started.
pub fn analyzer_alert(
    alert_type: &str,
    severity: Severity,
    labels: &[(&str, &str)],
    status: AlertStatus,
    starts_at_ms: i64,
) -> Alert {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
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

/// Publishes to the alerts topic of a test, as the analyzer does: keyed by
/// fingerprint, protobuf values.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    /// Creates the alerts and dead-letter topics if they are missing.
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

    /// Publishes `alert` under its fingerprint.
    pub async fn send(&self, alert: &Alert) {
        self.send_keyed(&alert.fingerprint, alert).await;
    }

    /// Publishes `alert` under `key` (same key, same partition: handled
    /// after what was published before under it).
    pub async fn send_keyed(&self, key: &str, alert: &Alert) {
        self.send_raw(key, &alert.encode_to_vec()).await;
    }

    /// Publishes any bytes (a poison message, say) under `key`.
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
