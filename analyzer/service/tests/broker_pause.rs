//! Checkpoints and offset commits resume after the broker froze: the
//! analyzer runs against a private broker that is frozen (SIGSTOP) for 30 s
//! and resumed, as a long GC pause or a stalled disk would. An idempotent
//! producer whose state the broker dropped meanwhile is fenced for good;
//! the analyzer must replace it, so that after the resume new events are
//! checkpointed and their offsets committed without a restart.

use std::time::Duration;

use mlwatch_analyzer::Config;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{InferenceEvent, InferenceStatus};
use mlwatch_testkit::broker::PrivateBroker;
use mlwatch_testkit::{kafka_for_test, scrape_until, temp_dir};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// `mlwatch_analyzer_checkpoints_total{result="ok"}` in a scrape.
fn checkpoints_ok(metrics: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with("mlwatch_analyzer_checkpoints_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn send(producer: &FutureProducer, topic: &str, from: u64, n: u64) {
    let t0 = mlwatch_common::now_ms();
    for i in from..from + n {
        let event = InferenceEvent {
            event_id: format!("e{i}"),
            model: format!("m{}", i % 3),
            model_version: "v1".into(),
            timestamp_ms: t0 + i as i64,
            latency_ms: 10.0,
            status: InferenceStatus::Ok as i32,
            ..Default::default()
        };
        let key = event.model.clone();
        let bytes = event.encode_to_vec();
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .expect("event produced");
    }
}

/// Sum of the group's committed offsets on the inference topic.
fn committed(consumer: &BaseConsumer, topic: &str, partitions: i32) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_and_commits_resume_after_a_frozen_broker() {
    mlwatch_testkit::init_logs();
    let broker = PrivateBroker::start().await;
    let (mut kafka, suffix) = kafka_for_test("analyzer-pause");
    kafka.bootstrap_servers = broker.bootstrap();
    let dir = temp_dir("analyzer-pause");
    let mut config = Config::for_test(&kafka, &suffix, dir.path());
    config.analyzer.checkpoint_interval_secs = 1;
    let group = config.analyzer.group_id.clone();
    let shutdown = CancellationToken::new();
    let analyzer = mlwatch_analyzer::start(config, shutdown.clone())
        .await
        .expect("analyzer starts");
    let metrics = format!("http://{}/metrics", analyzer.admin_addr);
    let http = reqwest::Client::new();
    let producer = kafka.producer().expect("producer");
    let topic = kafka.topics.inference.clone();
    let reader: BaseConsumer = kafka
        .client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader");

    send(&producer, &topic, 0, 300).await;
    mlwatch_testkit::eventually(60, "the first events committed", || {
        (committed(&reader, &topic, kafka.partitions) == 300).then_some(())
    })
    .await;
    let before = checkpoints_ok(&scrape_until(&http, &metrics, 10, "metrics", |_| true).await);
    assert!(before > 0, "no checkpoint before the freeze");

    broker.freeze();
    tokio::time::sleep(Duration::from_secs(30)).await;
    broker.resume();

    send(&producer, &topic, 300, 300).await;
    mlwatch_testkit::eventually(90, "the events after the freeze committed", || {
        (committed(&reader, &topic, kafka.partitions) == 600).then_some(())
    })
    .await;
    let after = checkpoints_ok(&scrape_until(&http, &metrics, 10, "metrics", |_| true).await);
    assert!(
        after > before,
        "no checkpoint after the resume ({before} before, {after} after)"
    );
    let served: serde_json::Value =
        mlwatch_testkit::get_json(&format!("http://{}/v1/models", analyzer.admin_addr)).await;
    let events: u64 = served["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter(|s| s["segment"] == "")
        .map(|s| s["events"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(events, 600, "every event counted once: {served}");
    shutdown.cancel();
    let _ = analyzer.task.await;
}
