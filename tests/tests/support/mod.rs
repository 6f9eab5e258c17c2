//! Shared by the workspace tests that need more than `mlwatch-testkit`: a
//! real collector on loopback ports with private topics, against the
//! broker under test.

#![allow(dead_code)]

use mlwatch_collector::{Config, Running};
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_testkit::{init_logs, kafka_for_test};
use tokio_util::sync::CancellationToken;

/// A started collector and what a test needs to talk to it.
pub struct TestCollector {
    pub running: Running,
    pub shutdown: CancellationToken,
    pub kafka: KafkaConfig,
}

impl TestCollector {
    /// Starts a collector with private topics; `adjust` edits the config.
    pub async fn start(name: &str, adjust: impl FnOnce(&mut Config)) -> Self {
        let (kafka, _suffix) = kafka_for_test(name);
        Self::start_with(kafka, adjust).await
    }

    /// Starts a collector on the given broker settings.
    pub async fn start_with(kafka: KafkaConfig, adjust: impl FnOnce(&mut Config)) -> Self {
        init_logs();
        let shutdown = CancellationToken::new();
        let mut config = Config::for_test(&kafka);
        adjust(&mut config);
        let running = mlwatch_collector::start(config, shutdown.clone())
            .await
            .expect("collector starts");
        Self {
            running,
            shutdown,
            kafka,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.http_addr)
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.admin_addr)
    }

    pub fn grpc(&self) -> String {
        format!("http://{}", self.running.grpc_addr)
    }

    /// The collector still answers health, readiness and a good event.
    pub async fn assert_healthy(&self) {
        let http = reqwest::Client::new();
        let r = http.get(self.admin("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = http.get(self.admin("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let good = serde_json::json!({"event_id": "health-check", "model": "health", "latency_ms": 1.0});
        let r = http.post(self.url("/v1/inferences")).json(&good).send().await.unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }

    /// Value of one sample line of the admin `/metrics`, 0 when absent.
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let text = mlwatch_testkit::http::get_text(&self.admin("/metrics")).await;
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.task.await.unwrap().unwrap();
    }
}

/// Publishes `(key, event)` pairs to the inference topic of `kafka`, 500
/// sends in flight at a time, each acknowledged.
pub async fn produce_inferences(kafka: &KafkaConfig, events: &[(String, mlwatch_proto::v1::InferenceEvent)]) {
    use prost::Message as _;
    use rdkafka::producer::FutureRecord;
    let producer = kafka.producer().expect("producer");
    for chunk in events.chunks(500) {
        let sends = chunk.iter().map(|(key, e)| {
            let payload = e.encode_to_vec();
            let producer = producer.clone();
            let topic = kafka.topics.inference.clone();
            let key = key.clone();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        std::time::Duration::from_secs(10),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        });
        for r in futures::future::join_all(sends).await {
            r.expect("produce");
        }
    }
}

/// Every alert an analyzer published to `alerts_topic`: as many as its
/// `mlwatch_analyzer_alerts_total` counters in `metrics` say, read back.
pub async fn published_alerts(kafka: &KafkaConfig, alerts_topic: &str, metrics: &str) -> Vec<mlwatch_proto::v1::Alert> {
    use prost::Message as _;
    use rdkafka::Message as _;
    let published: usize = metrics
        .lines()
        .filter(|l| l.starts_with("mlwatch_analyzer_alerts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
        .sum();
    let msgs = mlwatch_testkit::read_topic(kafka, alerts_topic, 60, |ms| ms.len() >= published).await;
    assert_eq!(msgs.len(), published, "alerts on the topic vs published");
    msgs.iter()
        .map(|m| mlwatch_proto::v1::Alert::decode(m.payload().unwrap()).expect("alert decodes"))
        .collect()
}
