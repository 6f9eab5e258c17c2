//! Replay (the `mlwatch-replay` engine) and the Rust client against a real
//! collector whose in-flight budget is smaller than the offered load:
//! three replays at once are pushed back with 429, retry with backoff, and
//! in the end every valid event is on the broker, every bad line reported
//! by its line number.

mod support;

use std::collections::BTreeSet;

use mlwatch_collector::client::{Client, ClientConfig};
use mlwatch_collector::replay::{Options, replay};
use mlwatch_proto::v1::{InferenceEvent, LabelEvent};
use mlwatch_testkit::read_topic;
use prost::Message as _;
use rdkafka::Message;
use serde_json::json;
use support::TestCollector;

/// A JSON Lines file: 600 inferences, 200 labels, 400 inferences, with two
/// malformed lines and one invalid event. Returns the text and the line
/// numbers of the bad lines.
fn jsonl(tag: &str) -> (String, Vec<usize>) {
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    let inference = |i: usize| {
        json!({"event_id": format!("{tag}-{i}"), "model": format!("m{}", i % 4), "latency_ms": 3.5, "prediction": {"score": 0.4}}).to_string()
    };
    for i in 0..600 {
        if i == 100 {
            lines.push("{not json".to_string());
            bad.push(lines.len());
        }
        lines.push(inference(i));
    }
    for i in 0..200 {
        lines.push(json!({"event_id": format!("{tag}-{i}"), "model": format!("m{}", i % 4), "label": "1"}).to_string());
    }
    for i in 600..1000 {
        if i == 700 {
            lines.push(json!({"event_id": format!("{tag}-{i}"), "model": "m0", "latency_ms": -1}).to_string());
            bad.push(lines.len());
            continue;
        }
        if i == 900 {
            lines.push(String::new());
            lines.push("[1, 2".to_string());
            bad.push(lines.len());
        }
        lines.push(inference(i));
    }
    (lines.join("\n") + "\n", bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_under_backpressure_deliver_every_valid_event() {
    let collector = TestCollector::start("replay", |c| c.ingest.max_in_flight_events = 300).await;
    let mut config = ClientConfig::new(collector.url(""));
    config.batch_size = 200;
    config.initial_backoff = std::time::Duration::from_millis(20);
    config.max_retries = 100;
    let client = Client::new(config).unwrap();
    let options = Options {
        rate_per_sec: None,
        batch_size: 200,
    };

    let replays = ["a", "b", "c"].map(|tag| {
        let client = client.clone();
        let options = options.clone();
        tokio::spawn(async move {
            let (text, bad) = jsonl(tag);
            let mut last = 0;
            let report = replay(std::io::Cursor::new(text), &client, &options, |n| {
                assert!(n >= last, "progress went back");
                last = n;
            })
            .await
            .expect("replay finishes");
            (report, bad, last)
        })
    });
    let mut retries = 0;
    for r in replays {
        let (report, bad, progress) = r.await.unwrap();
        assert_eq!(report.sent, 1200);
        assert_eq!(report.accepted, 1199);
        let lines: Vec<usize> = report.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, bad);
        assert_eq!(report.rejected[1].field, "latency_ms");
        assert!(report.rejected[0].reason.starts_with("malformed JSON line"));
        assert_eq!(progress, 1203);
        retries += report.retries;
    }
    // Every retry answered a 429 for one full batch of 200 events.
    let throttled = collector
        .metric("mlwatch_collector_events_total{kind=\"inference\",outcome=\"throttled\",reason=\"in_flight\"}")
        .await
        + collector
            .metric("mlwatch_collector_events_total{kind=\"label\",outcome=\"throttled\",reason=\"in_flight\"}")
            .await;
    assert_eq!(throttled, f64::from(retries) * 200.0);

    let inferences = read_topic(&collector.kafka, &collector.kafka.topics.inference, 60, |ms| {
        ms.len() >= 3 * 999
    })
    .await;
    let ids: BTreeSet<String> = inferences
        .iter()
        .map(|m| InferenceEvent::decode(m.payload().unwrap()).unwrap().event_id)
        .collect();
    assert_eq!(ids.len(), 3 * 999);
    assert!(!ids.contains("a-700"));
    let labels = read_topic(&collector.kafka, &collector.kafka.topics.labels, 60, |ms| {
        ms.len() >= 600
    })
    .await;
    let label_ids: BTreeSet<String> = labels
        .iter()
        .map(|m| LabelEvent::decode(m.payload().unwrap()).unwrap().event_id)
        .collect();
    assert_eq!(label_ids.len(), 600);
    collector.stop().await;
}
