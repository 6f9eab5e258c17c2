//! Accuracy with delayed labels, end to end over the real broker: the
//! collector's HTTP API takes predictions and (later) labels, the analyzer
//! joins them per partition in its on-disk store and judges decay.
//!
//! Two binary models, 600 predictions each (one per 100 ms of event time):
//! - `fraud`: correct 90 % for the first 300, 60 % after; labels arrive
//!   shuffled, 20 of them twice, 20 after the label lag (late), 20 never.
//! - `churn`: correct 90 % throughout; all labels arrive, 10 of them before
//!   their predictions.
//!
//! The accuracy API shows exactly the joined counts; `fraud` fires
//! `AccuracyDecay` (configured baseline 0.90) on the alerts topic, `churn`
//! fires nothing. The analyzer restarts between the on-time labels and the
//! duplicates and late ones: the counts stay exact. The test runs with each
//! backend of the label join (`redb`, `memory`).

use std::collections::HashMap;
use std::time::Duration;

use mlwatch_analyzer::accuracy::join::JoinBackend;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{Alert, AlertStatus};
use mlwatch_testkit::{read_topic, setup, temp_dir, within};
use prost::Message as _;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rdkafka::Message;
use serde_json::{Value, json};

/// Event time of the first prediction: an hour ago (the collector refuses
/// timestamps far in the past), on a whole minute.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| (mlwatch_common::now_ms() - 3_600_000) / 60_000 * 60_000)
}
const N: i64 = 600;
const LAG_SECS: i64 = 120;

fn actual(i: i64) -> &'static str {
    if i % 2 == 0 { "1" } else { "0" }
}

fn correct(model: &str, i: i64) -> bool {
    if model == "fraud" && i >= 300 {
        i % 10 < 6
    } else {
        i % 10 != 0
    }
}

fn prediction(model: &str, i: i64) -> Value {
    let truth = actual(i) == "1";
    let predicted = if correct(model, i) { truth } else { !truth };
    json!({
        "event_id": format!("{model}-{i}"), "model": model, "model_version": "v1",
        "endpoint": "predict", "timestamp": t0() + i * 100, "latency_ms": 12.0, "status": "ok",
        "prediction": {"score": if predicted { 0.8 } else { 0.2 }, "label": if predicted { "1" } else { "0" }},
    })
}

/// The label of prediction `i`, `after_ms` after it.
fn label(model: &str, i: i64, after_ms: i64) -> Value {
    json!({"event_id": format!("{model}-{i}"), "model": model, "timestamp": t0() + i * 100 + after_ms, "label": actual(i)})
}

async fn post(client: &reqwest::Client, url: &str, body: &[Value]) {
    for chunk in body.chunks(100) {
        let r = client.post(url).json(&chunk).send().await.expect("collector answers");
        assert!(
            r.status().is_success(),
            "{url}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_labels_join_exactly_and_decay_fires_only_on_the_drop() {
    delayed_labels_with(JoinBackend::Redb, "accuracy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delayed_labels_join_exactly_with_the_memory_join_backend() {
    delayed_labels_with(JoinBackend::Memory, "accuracy-memory").await;
}

async fn delayed_labels_with(backend: JoinBackend, name: &str) {
    let (kafka, suffix, shutdown) = setup(name);
    let dir = temp_dir("accuracy");

    let collector = mlwatch_collector::start(mlwatch_collector::Config::for_test(&kafka), shutdown.clone())
        .await
        .expect("collector");

    let mut c = mlwatch_analyzer::Config::for_test(&kafka, &suffix, dir.path());
    c.analyzer.checkpoint_interval_secs = 1;
    c.analyzer.idle_advance_after_secs = 1;
    c.accuracy.join.backend = backend;
    c.accuracy.join.label_lag_secs = LAG_SECS as u64;
    for model in ["fraud", "churn"] {
        c.accuracy
            .baselines
            .insert(model.into(), [("accuracy".to_string(), 0.90)].into_iter().collect());
    }
    let first_stop = CancellationToken::new();
    let analyzer = mlwatch_analyzer::start(c.clone(), first_stop.clone())
        .await
        .expect("analyzer");

    let client = reqwest::Client::new();
    let inferences = format!("http://{}/v1/inferences", collector.http_addr);
    let labels = format!("http://{}/v1/labels", collector.http_addr);
    let first_api = format!("http://{}", analyzer.admin_addr);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    // churn: ten labels arrive before their predictions.
    let early: Vec<Value> = (590..600).map(|i| label("churn", i, 30_000)).collect();
    post(&client, &labels, &early).await;
    let mut preds: Vec<Value> = Vec::new();
    for i in 0..N {
        preds.push(prediction("fraud", i));
        preds.push(prediction("churn", i));
    }
    post(&client, &inferences, &preds).await;

    // On-time labels, shuffled (out of order), 30 s after their prediction.
    let mut on_time: Vec<Value> = Vec::new();
    for i in 0..590 {
        if i < 560 {
            on_time.push(label("fraud", i, 30_000));
        }
        on_time.push(label("churn", i, 30_000));
    }
    // Out of order within blocks of 50 (each block keeps the stream's
    // accuracy, so the stationary model's labelled sample stays at 0.90).
    for block in on_time.chunks_mut(100) {
        block.shuffle(&mut rng);
    }
    post(&client, &labels, &on_time).await;
    // Everything so far is joined; then the analyzer restarts (checkpoint
    // and join store on disk) and the rest arrives at the new instance.
    within(120, "on-time labels joined before the restart", async {
        loop {
            let mut done = true;
            for (model, want) in [("fraud", 560), ("churn", 600)] {
                let v = get(&client, &format!("{first_api}/v1/models/{model}/accuracy?window=1h")).await;
                let labelled = v["series"]
                    .as_array()
                    .and_then(|s| s.iter().find(|s| s["segment"] == "").map(|s| s["labelled"].clone()));
                done &= labelled == Some(json!(want));
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    first_stop.cancel();
    analyzer.task.await.unwrap().unwrap();
    let analyzer = mlwatch_analyzer::start(c, shutdown.clone())
        .await
        .expect("analyzer restarts");
    let api = format!("http://{}", analyzer.admin_addr);

    // Duplicates of 20 fraud labels, then 20 fraud labels beyond the lag;
    // fraud 580..599 never get one.
    let dups: Vec<Value> = (0..20).map(|i| label("fraud", i, 45_000)).collect();
    post(&client, &labels, &dups).await;
    let late: Vec<Value> = (560..580).map(|i| label("fraud", i, (LAG_SECS + 80) * 1000)).collect();
    post(&client, &labels, &late).await;

    // The join settles: every prediction joined, expired or late.
    let fraud = within(120, "fraud's predictions settled", async {
        loop {
            let v = get(&client, &format!("{api}/v1/models/fraud/accuracy?window=1h")).await;
            let whole = v["series"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["segment"] == "").cloned());
            if let Some(s) = whole
                && s["labelled"] == 560
            {
                let j = get(&client, &format!("{api}/v1/models/fraud/accuracy/join")).await;
                if j["join"]["pending"] == 0 && j["join"]["late_labels"].as_i64() >= Some(20) {
                    return (s, j);
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let (series, join) = fraud;
    assert_eq!(series["predictions"], 600, "{series}");
    assert_eq!(series["labelled"], 560, "{series}");
    let b = &series["binary"];
    // 270 of the first 300 correct, 156 of the next 260.
    assert_eq!(b["n"].as_f64(), Some(560.0), "{b}");
    assert!((b["accuracy"].as_f64().unwrap() - 426.0 / 560.0).abs() < 1e-12, "{b}");
    assert!((series["label_coverage"].as_f64().unwrap() - 560.0 / 600.0).abs() < 1e-12);
    assert!(series["binary_estimated"]["accuracy"].as_f64().is_some(), "{series}");
    assert!(
        (series["label_lag"]["mean_secs"].as_f64().unwrap() - 30.0).abs() < 1e-9,
        "{series}"
    );

    let churn = within(60, "churn's labels joined", async {
        loop {
            let v = get(&client, &format!("{api}/v1/models/churn/accuracy?window=1h")).await;
            if let Some(s) = v["series"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["segment"] == "").cloned())
                && s["labelled"] == 600
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert_eq!(churn["predictions"], 600);
    assert!(
        (churn["binary"]["accuracy"].as_f64().unwrap() - 0.9).abs() < 1e-12,
        "{churn}"
    );

    // Join counts, per owning partition (both models may share one).
    let models = get(&client, &format!("{api}/v1/models")).await;
    let partition_of = |m: &str| {
        models["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["model"] == m)
            .map(|s| s["partition"].as_i64().unwrap())
            .unwrap()
    };
    let j = &join["join"];
    let shared = partition_of("fraud") == partition_of("churn");
    let (churn_preds, churn_labels) = if shared { (600, 600) } else { (0, 0) };
    assert_eq!(j["predictions"], 600 + churn_preds, "{j}");
    assert_eq!(j["joined"], 560 + churn_labels, "{j}");
    assert_eq!(j["duplicate_labels"], 20, "{j}");
    assert_eq!(j["late_labels"], 20, "{j}");
    assert_eq!(j["expired_predictions"], 40, "{j}");
    assert_eq!(j["labels"], 600 + churn_labels, "{j}");
    assert_eq!(j["pending"], 0, "{j}");
    assert_eq!(j["waiting_labels"], 0, "{j}");

    // fraud decays: the alert is on the alerts topic, the report says so.
    let msgs = read_topic(&kafka, &kafka.topics.alerts, 60, |ms| {
        ms.iter().any(|m| {
            Alert::decode(m.payload().unwrap_or_default())
                .is_ok_and(|a| a.r#type == "AccuracyDecay" && a.labels.get("model").is_some_and(|m| m == "fraud"))
        })
    })
    .await;
    let alerts: Vec<Alert> = msgs
        .iter()
        .filter_map(|m| Alert::decode(m.payload().unwrap_or_default()).ok())
        .collect();
    let decay: Vec<&Alert> = alerts.iter().filter(|a| a.r#type == "AccuracyDecay").collect();
    assert!(!decay.is_empty(), "no AccuracyDecay in {alerts:?}");
    let first = decay[0];
    assert_eq!(first.status, AlertStatus::Firing as i32);
    let l: HashMap<&str, &str> = first.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        (l["model"], l["model_version"], l["metric"]),
        ("fraud", "v1", "accuracy")
    );
    assert!(!first.fingerprint.is_empty() && !first.id.is_empty());
    assert!(
        alerts
            .iter()
            .all(|a| a.labels.get("model").is_none_or(|m| m != "churn")),
        "churn is stationary: {alerts:?}"
    );

    let report = get(&client, &format!("{api}/v1/models/fraud/decay")).await;
    let r = &report["reports"].as_array().unwrap()[0];
    let acc = r["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "accuracy")
        .unwrap();
    assert_eq!(acc["baseline"], 0.9, "{acc}");
    assert_eq!(acc["baseline_source"], "configured", "{acc}");
    assert!(acc["firing"].as_bool().unwrap(), "{acc}");
    assert!(!r["last_alerts"].as_array().unwrap().is_empty(), "{r}");

    // Every signal's firing alerts are served (kept with the partition's
    // checkpoint across the restart above): the alerts API lists the decay
    // as active, /v1/models lists its type for the version.
    let fingerprint = first.fingerprint.clone();
    within(30, "the decay among the active alerts", async {
        loop {
            let v = get(&client, &format!("{api}/v1/alerts?model=fraud")).await;
            let active = v["active"].as_array().unwrap();
            let models = get(&client, &format!("{api}/v1/models")).await;
            let listed = models["models"].as_array().unwrap().iter().any(|s| {
                s["model"] == "fraud"
                    && s["segment"] == ""
                    && s["alerts_firing"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|t| t == "AccuracyDecay")
            });
            if active
                .iter()
                .any(|a| a["fingerprint"] == fingerprint.as_str() && a["type"] == "AccuracyDecay")
                && listed
            {
                assert!(active.iter().all(|a| a["labels"]["model"] == "fraud"), "{v}");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let bad = get(&client, &format!("{api}/v1/alerts?limit=0")).await;
    assert!(bad["detail"].as_str().unwrap_or_default().contains("limit"), "{bad}");

    // The gauges are on /metrics.
    let metrics = mlwatch_testkit::scrape_until(
        &client,
        &format!("{api}/metrics"),
        30,
        "the fraud accuracy gauge at 426/560",
        |m| {
            m.lines().any(|l| {
                l.strip_prefix(r#"ml_model_accuracy{metric_type="accuracy",model_name="fraud",model_version="v1"} "#)
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| (v - 426.0 / 560.0).abs() < 1e-9)
            })
        },
    )
    .await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"ml_model_accuracy{metric_type="accuracy",model_name="fraud",model_version="v1"}"#))
        .unwrap_or_else(|| panic!("no fraud accuracy gauge in\n{metrics}"));
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((v - 426.0 / 560.0).abs() < 1e-9, "{line}");
    assert!(
        metrics.contains(r#"mlwatch_analyzer_label_join_total{outcome="duplicate_label"} 20"#),
        "{metrics}"
    );

    shutdown.cancel();
    analyzer.task.await.unwrap().unwrap();
    let _ = collector.task.await;
}
