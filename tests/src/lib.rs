//! Helpers for the integration tests: a Kafka configuration with private
//! topics per test, waiting with a deadline, and reading a topic back.

use std::time::Duration;

use mlwatch_common::kafka::{KafkaConfig, Topics};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;

/// The broker under test: `KAFKA_BOOTSTRAP_SERVERS`, else the local default
/// that `scripts/broker.sh` starts.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A Kafka configuration whose topics are private to one test.
pub fn kafka_for_test(name: &str) -> (KafkaConfig, String) {
    let suffix = format!("{name}-{}", mlwatch_demo::run_suffix());
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

/// Installs a test log subscriber once (`RUST_LOG` controls it).
pub fn init_logs() {
    let _ = tracing_subscriber_init();
}

fn tracing_subscriber_init() -> Option<()> {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        mlwatch_common::telemetry::init(&mlwatch_common::telemetry::LogConfig {
            filter: "warn".into(),
            json: false,
        });
    });
    Some(())
}

/// Awaits `fut` or fails the test after `secs` seconds, naming `what`.
pub async fn within<T>(secs: u64, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s waiting for {what}"),
    }
}

/// Reads `topic` from the beginning until `done` says enough was read, or
/// `secs` pass; returns the messages read.
pub async fn read_topic(
    kafka: &KafkaConfig,
    topic: &str,
    secs: u64,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("reader-{}", mlwatch_demo::run_suffix()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("reader consumer");
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

/// The inference events on the inference topic once there are at least
/// `min` (or `secs` passed), decoded and sorted by event id.
pub async fn read_inferences(kafka: &KafkaConfig, min: usize, secs: u64) -> Vec<mlwatch_proto::InferenceEvent> {
    use prost::Message as _;
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
