//! Bad input never crashes a service and never silently disappears: the
//! collector answers it precisely, and a consumer moves a poison message to
//! the dead-letter topic with its reason, then carries on.

use std::time::Duration;

use mlwatch_proto::v1::InferenceEvent;
use mlwatch_testkit::http::{get_status, get_text, poll_json};
use mlwatch_testkit::{header, read_topic, setup, temp_dir};
use prost::Message as _;
use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_dead_letters_poison_and_keeps_counting() {
    let (kafka, suffix, shutdown) = setup("poison");
    let dir = temp_dir("poison");
    let config = mlwatch_analyzer::Config::for_test(&kafka, &suffix, dir.path());
    let analyzer = mlwatch_analyzer::start(config, shutdown.clone())
        .await
        .expect("analyzer starts");

    let producer = kafka.producer().unwrap();
    let topic = &kafka.topics.inference;
    let good = |i: i64| InferenceEvent {
        event_id: format!("e{i}"),
        model: "fraud".into(),
        model_version: "v1".into(),
        timestamp_ms: mlwatch_common::now_ms(),
        latency_ms: 10.0,
        status: 1,
        ..Default::default()
    };
    let garbage: &[u8] = b"\xff\xff\xff this is not protobuf";
    let no_model = InferenceEvent {
        model: String::new(),
        ..good(0)
    }
    .encode_to_vec();
    let payloads: Vec<Vec<u8>> = vec![
        good(1).encode_to_vec(),
        garbage.to_vec(),
        no_model,
        good(2).encode_to_vec(),
    ];
    for p in &payloads {
        producer
            .send(FutureRecord::to(topic).key("fraud").payload(p), Duration::from_secs(5))
            .await
            .expect("produce");
    }

    // A label without an event id is poison too (on the labels topic).
    let label = mlwatch_proto::v1::LabelEvent {
        model: "fraud".into(),
        label: Some("1".into()),
        ..Default::default()
    }
    .encode_to_vec();
    producer
        .send(
            FutureRecord::to(&kafka.topics.labels).key("fraud").payload(&label),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");

    let dead = read_topic(&kafka, &kafka.topics.deadletter, 60, |ms| ms.len() >= 3).await;
    assert_eq!(dead.len(), 3, "every poison message dead-lettered");
    let label_dead = dead
        .iter()
        .find(|m| header(m, "mlwatch.source.topic").as_deref() == Some(kafka.topics.labels.as_str()))
        .expect("the poison label is dead-lettered");
    assert!(
        header(label_dead, "mlwatch.reason")
            .unwrap()
            .contains("without an event_id"),
        "{:?}",
        header(label_dead, "mlwatch.reason")
    );
    let dead: Vec<_> = dead
        .into_iter()
        .filter(|m| header(m, "mlwatch.source.topic").as_deref() == Some(topic.as_str()))
        .collect();
    assert_eq!(dead.len(), 2, "both poison inferences dead-lettered");
    assert_eq!(dead[0].payload().unwrap(), garbage);
    assert!(
        header(&dead[0], "mlwatch.reason")
            .unwrap()
            .contains("undecodable protobuf")
    );
    assert_eq!(
        header(&dead[0], "mlwatch.source.topic").as_deref(),
        Some(topic.as_str())
    );
    assert!(header(&dead[1], "mlwatch.reason").unwrap().contains("without a model"));
    assert_eq!(dead[0].key(), Some(topic.as_bytes()));

    // The valid events on either side were counted.
    let url = format!("http://{}/v1/models", analyzer.admin_addr);
    poll_json(&url, 30, "both valid events counted", |v| v["models"][0]["events"] == 2).await;
    assert_eq!(
        get_status(&format!("http://{}/healthz", analyzer.admin_addr)).await,
        200
    );
    shutdown.cancel();
    analyzer.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_answers_bad_input_precisely_and_publishes_the_rest() {
    let (kafka, _suffix, shutdown) = setup("ingest");
    let collector = mlwatch_collector::start(mlwatch_collector::Config::for_test(&kafka), shutdown.clone())
        .await
        .expect("collector starts");
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/inferences", collector.http_addr);
    let now = mlwatch_common::now_ms();
    let ok = json!({"event_id": "a1", "model": "fraud", "latency_ms": 12.5, "timestamp": now});

    // A batch with one good and two bad events: 200, the bad ones listed.
    let body = json!([ok, {"event_id": "a2", "model": "fraud", "latency_ms": -3}, {"model": "fraud", "latency_ms": 1}]);
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert_eq!(v["rejected"][0]["field"], "latency_ms");
    assert_eq!(v["rejected"][1]["index"], 2);
    assert_eq!(v["rejected"][1]["field"], "event_id");
    assert_eq!(v["rejected"][1]["reason"], "missing required field");

    // Nothing valid: 400 naming the problem.
    let r = client.post(&url).body("{\"event_id\": 1}").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["rejected"][0]["field"], "event_id");
    let r = client.post(&url).body("[{\"event_id\": ").send().await.unwrap();
    assert_eq!(r.status(), 400);

    // JSON Lines with a broken line: the others go through.
    let lines = format!("{ok}\nnot json\n{ok}\n");
    let r = client.post(&url).body(lines).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"][0]["index"], 1);

    // What was accepted is in Kafka, keyed by model.
    let msgs = read_topic(&kafka, &kafka.topics.inference, 30, |ms| ms.len() >= 3).await;
    assert_eq!(msgs.len(), 3);
    for m in &msgs {
        assert_eq!(m.key(), Some(&b"fraud"[..]));
        let e = InferenceEvent::decode(m.payload().unwrap()).unwrap();
        assert_eq!(e.event_id, "a1");
        assert_eq!(e.model_version, "unversioned");
    }
    assert_eq!(
        get_status(&format!("http://{}/readyz", collector.admin_addr)).await,
        200
    );
    let metrics = get_text(&format!("http://{}/metrics", collector.admin_addr)).await;
    assert!(metrics.contains("ml_inference_latency_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("mlwatch_collector_events_total"));
    shutdown.cancel();
    collector.task.await.unwrap().unwrap();
}
