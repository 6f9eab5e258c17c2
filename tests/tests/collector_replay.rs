//! Replay (the `mlwatch-replay` engine) and the Rust client against a real
//! collector whose in-flight budget is smaller than the offered load:
//! three replays at once are pushed back with 429, retry with backoff, and
//! in the end every valid event is on the broker, every bad line reported
//! by its line number. And a file mixing inferences and labels in arrival
//! order, replayed through a recording proxy: full batches of each kind,
//! each label sent only after the request holding its prediction was
//! answered, every event once on the topics.

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

/// A merged file in arrival order: `n` inferences over four models; two in
/// three of them get a label 1 to 40 inferences later (so with batches of
/// 50 many labels come while their prediction's batch is still being
/// gathered), and every 25th inference is followed by a label whose
/// prediction is not in the file. Returns the text and the number of
/// labels.
fn arrival_order(tag: &str, n: usize) -> (String, usize) {
    let key = |i: usize| (format!("{tag}-{i}"), format!("m{}", i % 4));
    let mut lines = Vec::new();
    let mut due: Vec<(usize, usize)> = Vec::new();
    let mut labels = 0;
    for i in 0..n {
        let (id, model) = key(i);
        lines
            .push(json!({"event_id": id, "model": model, "latency_ms": 2.0, "prediction": {"score": 0.7}}).to_string());
        if i % 3 != 0 {
            due.push((i + 1 + (i * 7) % 40, i));
        }
        if i % 25 == 0 {
            lines.push(json!({"event_id": format!("{tag}-orphan-{i}"), "model": "m0", "label": "0"}).to_string());
            labels += 1;
        }
        let (now, later): (Vec<_>, Vec<_>) = due.into_iter().partition(|(at, _)| *at <= i || i + 1 == n);
        due = later;
        for (_, p) in now {
            let (id, model) = key(p);
            lines.push(json!({"event_id": id, "model": model, "label": "1"}).to_string());
            labels += 1;
        }
    }
    (lines.join("\n") + "\n", labels)
}

/// One request the replay made, as the proxy in front of the collector saw
/// it: when it came and when its answer went back (one counter for both),
/// its endpoint, status and the (model, event id) of its events.
#[derive(Debug, Clone)]
struct Seen {
    came: u64,
    answered: u64,
    labels: bool,
    status: u16,
    keys: Vec<(String, String)>,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    clock: std::sync::Arc<std::sync::atomic::AtomicU64>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

async fn forward(
    axum::extract::State(proxy): axum::extract::State<Proxy>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, String) {
    use std::sync::atomic::Ordering;
    let came = proxy.clock.fetch_add(1, Ordering::SeqCst);
    let keys = body
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .filter_map(|v| mlwatch_collector::replay::key_of(&v))
        .collect();
    let answer = proxy
        .http
        .post(format!("{}{}", proxy.upstream, uri.path()))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("collector answers");
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    let answered = proxy.clock.fetch_add(1, Ordering::SeqCst);
    proxy.seen.lock().unwrap().push(Seen {
        came,
        answered,
        labels: uri.path().ends_with("/labels"),
        status,
        keys,
    });
    (axum::http::StatusCode::from_u16(status).unwrap(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merged_file_goes_in_full_batches_and_each_label_after_its_prediction() {
    let collector = TestCollector::start("replay-merged", |_| {}).await;
    let proxy = Proxy {
        upstream: collector.url(""),
        http: reqwest::Client::new(),
        clock: Default::default(),
        seen: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (n, batch) = (1000, 50);
    let (text, labels) = arrival_order("merged", n);
    let mut config = ClientConfig::new(proxy_url);
    config.batch_size = batch;
    let client = Client::new(config).unwrap();
    let options = Options {
        rate_per_sec: None,
        batch_size: batch,
    };
    let report = replay(std::io::Cursor::new(text), &client, &options, |_| {})
        .await
        .expect("replay finishes");
    assert_eq!(report.sent as usize, n + labels);
    assert_eq!(report.accepted as usize, n + labels);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    // What the collector was asked, in order: full batches (the last of
    // each kind excepted), every event once, each label only after the
    // request holding its prediction was answered.
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.status == 200));
    let (label_requests, inference_requests): (Vec<&Seen>, Vec<&Seen>) = seen.iter().partition(|s| s.labels);
    assert_eq!(inference_requests.len(), n.div_ceil(batch));
    assert_eq!(label_requests.len(), labels.div_ceil(batch));
    let mut answered_at = std::collections::HashMap::new();
    for s in &inference_requests {
        for key in &s.keys {
            assert!(
                answered_at.insert(key.clone(), s.answered).is_none(),
                "{key:?} sent twice"
            );
        }
    }
    let mut label_keys = BTreeSet::new();
    for s in &label_requests {
        for key in &s.keys {
            assert!(label_keys.insert(key.clone()), "label {key:?} sent twice");
            if let Some(answered) = answered_at.get(key) {
                assert!(
                    *answered < s.came,
                    "label {key:?} sent at {} before its prediction was acknowledged at {answered}",
                    s.came
                );
            }
        }
    }
    assert_eq!(label_keys.len(), labels);

    // What a consumer sees: every event exactly once, and no label
    // published before its prediction.
    let inferences = read_topic(&collector.kafka, &collector.kafka.topics.inference, 60, |ms| {
        ms.len() >= n
    })
    .await;
    let labelled = read_topic(&collector.kafka, &collector.kafka.topics.labels, 60, |ms| {
        ms.len() >= labels
    })
    .await;
    let published_at: std::collections::HashMap<String, i64> = inferences
        .iter()
        .map(|m| {
            let e = InferenceEvent::decode(m.payload().unwrap()).unwrap();
            (e.event_id, m.timestamp().to_millis().unwrap())
        })
        .collect();
    assert_eq!((inferences.len(), published_at.len()), (n, n));
    let mut label_ids = BTreeSet::new();
    for m in &labelled {
        let e = LabelEvent::decode(m.payload().unwrap()).unwrap();
        if let Some(at) = published_at.get(&e.event_id) {
            assert!(
                m.timestamp().to_millis().unwrap() >= *at,
                "label {} before its prediction",
                e.event_id
            );
        }
        label_ids.insert(e.event_id);
    }
    assert_eq!((labelled.len(), label_ids.len()), (labels, labels));
    collector.stop().await;
}
