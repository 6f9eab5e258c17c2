//! Data drift end to end over the real broker: a reference profile (the
//! same JSON `mlwatch-profile build` writes) is uploaded to the analyzer,
//! stable traffic then traffic with one feature shifted by one standard
//! deviation go through the collector's HTTP API; `FeatureDrift` fires for
//! that feature only, the gauges are on `/metrics`, and the drift API shows
//! the reference and current distributions side by side.
//!
//! Profiles are shared through the profiles topic: one uploaded to an
//! instance is used by another with its own state directory, per model
//! version; records on the profiles topic that are not valid profiles are
//! skipped and counted.

use std::collections::BTreeSet;
use std::time::Duration;

use mlwatch_analyzer::drift::{BuildOptions, Profile, ProfileBuilder, Value};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{Alert, AlertStatus};
use mlwatch_testkit::http::{get_text, poll_json};
use mlwatch_testkit::{kafka_for_test, read_decoded, read_topic, scrape_until, setup, temp_dir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;
use rdkafka::producer::FutureRecord;
use serde_json::{Value as Json, json};

const COUNTRIES: [&str; 3] = ["DE", "FR", "US"];

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One row: amount ~ N(100 + shift, 10), age ~ N(40, 5), country uniform,
/// score uniform.
fn row(rng: &mut StdRng, shift: f64) -> (f64, f64, &'static str, f64) {
    let amount = 100.0 + shift + 10.0 * normal(rng);
    let age = 40.0 + 5.0 * normal(rng);
    let country = COUNTRIES[rng.random_range(0..3)];
    (amount, age, country, rng.random())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shifted_feature_fires_feature_drift_alone() {
    let (kafka, suffix, shutdown) = setup("drift");
    let dir = temp_dir("drift");
    let mut rng = StdRng::seed_from_u64(11);

    // The reference: 5000 rows of the stable distribution.
    let profile = reference_profile(&mut rng);

    let collector = start_collector(&kafka, &shutdown).await;

    let (analyzer, api) = start_analyzer(&kafka, &suffix, dir.path(), &shutdown).await;
    let client = reqwest::Client::new();

    // A profile for another model is refused, naming both.
    let r = put_profile(&client, &format!("{api}/v1/models/other/profile"), profile.clone()).await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("credit") && text.contains("other"), "{text}");
    let r = put_profile(&client, &format!("{api}/v1/models/credit/profile"), profile.clone()).await;
    assert_eq!(r.status(), 201);
    let v: Json = r.json().await.unwrap();
    assert_eq!(v["version"], 1);

    // 100 events per second of event time: 4 stable windows of 10 s, then
    // 4 with amount shifted by +1 σ.
    let t0 = (mlwatch_common::now_ms() - 3_600_000) / 60_000 * 60_000;
    let events: Vec<Json> = (0..8000i64)
        .map(|i| event(&mut rng, "v2", i, t0, if i >= 4000 { 10.0 } else { 0.0 }))
        .collect();
    post_events(&client, &collector, &events).await;

    // FeatureDrift on amount reaches the alerts topic.
    let alerts = alerts_until_amount_drifts(&kafka).await;
    let drifted: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.r#type == "FeatureDrift" || a.r#type == "PredictionDrift")
        .filter_map(|a| a.labels.get("feature").cloned())
        .collect();
    assert_eq!(drifted, BTreeSet::from(["amount".to_string()]), "{alerts:?}");
    let fired = alerts.iter().find(|a| a.r#type == "FeatureDrift").unwrap();
    assert_eq!(fired.status, AlertStatus::Firing as i32);
    assert_eq!(fired.labels["model"], "credit");
    assert_eq!(fired.labels["model_version"], "v2");

    // The report: both distributions on the same bins.
    let report = poll_json(&format!("{api}/v1/models/credit/drift"), 30, "the drift report", |v| {
        !v["report"].is_null()
    })
    .await;
    assert_eq!(report["profile_version"], 1);
    let features = report["report"]["features"].as_array().unwrap();
    let amount = features.iter().find(|f| f["name"] == "amount").unwrap();
    let d = &amount["distribution"];
    let (reference, current) = (d["reference"].as_array().unwrap(), d["current"].as_array().unwrap());
    assert!(reference.len() > 10 && reference.len() == current.len(), "{d}");
    assert!(amount["decision"]["firing"].as_bool().unwrap(), "{amount}");
    let country = features.iter().find(|f| f["name"] == "country").unwrap();
    assert!(!country["decision"]["firing"].as_bool().unwrap(), "{country}");

    // Gauges.
    // Gauges are refreshed after each evaluated window: wait until they show
    // the shifted windows (the API above already does).
    let gauge = |metrics: &str, feature: &str| -> Option<f64> {
        let prefix =
            format!(r#"ml_feature_drift_score{{feature_name="{feature}",model_name="credit",model_version="v2"}} "#);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    };
    let metrics = scrape_until(
        &client,
        &format!("{api}/metrics"),
        30,
        "amount's drift gauge over 0.2",
        |m| gauge(m, "amount").is_some_and(|v| v > 0.2) && gauge(m, "age").is_some(),
    )
    .await;
    let psi = |feature: &str| {
        gauge(&metrics, feature).unwrap_or_else(|| panic!("no drift gauge for {feature} in\n{metrics}"))
    };
    assert!(psi("amount") > 0.2, "{metrics}");
    assert!(psi("age") < 0.05, "{metrics}");
    assert!(
        metrics.contains(
            r#"ml_data_quality_score{model_name="credit",model_version="v2",quality_check="missing_values"}"#
        ),
        "{metrics}"
    );

    // The active profile is durable: on the profiles topic, keyed by model
    // (and cached in the instance's profile directory).
    let records = read_topic(&kafka, &kafka.topics.profiles, 30, |ms| !ms.is_empty()).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key(), Some(&b"credit"[..]));
    let stored = Profile::from_json(std::str::from_utf8(records[0].payload().unwrap()).unwrap()).unwrap();
    assert_eq!((stored.model.as_str(), stored.version), ("credit", 1));
    let cached = std::fs::read_to_string(dir.path().join("profiles").join("credit").join("active")).unwrap();
    assert_eq!(cached.trim(), "1");

    shutdown.cancel();
    analyzer.task.await.unwrap().unwrap();
    let _ = collector.task.await;
}

/// Event `i` of `version` (100 per second of event time from `t0`), its
/// amount shifted by `shift`.
fn event(rng: &mut StdRng, version: &str, i: i64, t0: i64, shift: f64) -> Json {
    let (amount, age, country, score) = row(rng, shift);
    json!({
        "event_id": format!("{version}-{i}"), "model": "credit", "model_version": version,
        "timestamp": t0 + i * 10, "latency_ms": 5.0, "status": "ok",
        "prediction": {"score": score},
        "features": {"amount": amount, "age": age, "country": country},
    })
}

/// PUTs a reference profile to `url` (an analyzer's profile API).
async fn put_profile(client: &reqwest::Client, url: &str, profile: String) -> reqwest::Response {
    client.put(url).body(profile).send().await.unwrap()
}

/// Sends `events` through the collector's HTTP API.
async fn post_events(client: &reqwest::Client, collector: &mlwatch_collector::Running, events: &[Json]) {
    let url = format!("http://{}/v1/inferences", collector.http_addr);
    for chunk in events.chunks(400) {
        let r = client.post(&url).json(&chunk).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    }
}

/// The alerts on `kafka`'s alerts topic once `FeatureDrift` on amount is
/// among them.
async fn alerts_until_amount_drifts(kafka: &mlwatch_common::kafka::KafkaConfig) -> Vec<Alert> {
    read_decoded(kafka, &kafka.topics.alerts, 90, |alerts: &[Alert]| {
        alerts
            .iter()
            .any(|a| a.r#type == "FeatureDrift" && a.labels.get("feature").is_some_and(|f| f == "amount"))
    })
    .await
}

/// The reference profile of [`row`] with no shift (5000 rows), as JSON.
fn reference_profile(rng: &mut StdRng) -> String {
    let mut builder = ProfileBuilder::new(BuildOptions::new("credit", 1)).unwrap();
    for _ in 0..5000 {
        let (amount, age, country, score) = row(rng, 0.0);
        builder.start_row();
        builder.add_feature("amount", Value::Number(amount));
        builder.add_feature("age", Value::Number(age));
        builder.add_feature("country", Value::Text(country));
        builder.add_prediction("score", Value::Number(score));
    }
    builder.finish().unwrap().to_json()
}

/// A collector on `kafka`'s topics, on loopback ports.
async fn start_collector(
    kafka: &mlwatch_common::kafka::KafkaConfig,
    shutdown: &CancellationToken,
) -> mlwatch_collector::Running {
    mlwatch_collector::start(mlwatch_collector::Config::for_test(kafka), shutdown.clone())
        .await
        .expect("collector")
}

/// Starts an analyzer with [`analyzer_config`]; returns it and its API base URL.
async fn start_analyzer(
    kafka: &mlwatch_common::kafka::KafkaConfig,
    name: &str,
    dir: &std::path::Path,
    shutdown: &CancellationToken,
) -> (mlwatch_analyzer::Running, String) {
    let running = mlwatch_analyzer::start(analyzer_config(kafka, name, dir), shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("analyzer {name}: {e}"));
    let api = format!("http://{}", running.admin_addr);
    (running, api)
}

/// A second instance's Kafka configuration: its own event topics, the
/// profiles topic of `kafka`.
fn sharing_profiles(
    kafka: &mlwatch_common::kafka::KafkaConfig,
    name: &str,
) -> (mlwatch_common::kafka::KafkaConfig, String) {
    let (mut other, suffix) = kafka_for_test(name);
    other.topics.profiles = kafka.topics.profiles.clone();
    (other, suffix)
}

/// An analyzer configuration with its own group, state topic and state
/// directory.
fn analyzer_config(
    kafka: &mlwatch_common::kafka::KafkaConfig,
    name: &str,
    dir: &std::path::Path,
) -> mlwatch_analyzer::Config {
    let mut c = mlwatch_analyzer::Config::for_test(kafka, name, dir);
    c.analyzer.checkpoint_interval_secs = 1;
    c.analyzer.idle_advance_after_secs = 1;
    c.drift.window_secs = 10;
    c.drift.rules.defaults.min_window_events = 500;
    c
}

/// A profile uploaded to instance A is on the topic before A answers;
/// instance B (another state directory, other event topics, started after
/// the upload) has it at start and judges each model version on its own
/// against it: only the canary `v2`, shifted, fires. A version-specific
/// profile uploaded to B reaches A, which follows the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_profile_uploaded_to_one_instance_is_used_by_another_per_version() {
    let (kafka_a, suffix, shutdown) = setup("profiles");
    let dir = temp_dir("profiles");
    let mut rng = StdRng::seed_from_u64(12);
    let client = reqwest::Client::new();

    let (a, api_a) = start_analyzer(&kafka_a, &format!("a-{suffix}"), &dir.path().join("a"), &shutdown).await;
    let r = put_profile(
        &client,
        &format!("{api_a}/v1/models/credit/profile"),
        reference_profile(&mut rng),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let v: Json = r.json().await.unwrap();
    assert_eq!(v["version"], 1);

    // Records the analyzer did not write are skipped (logged), never fatal:
    // not a profile, and a profile under another model's key.
    let producer = kafka_a.producer().unwrap();
    for (key, payload) in [
        ("credit", "not a profile".to_string()),
        ("other", reference_profile(&mut rng)),
    ] {
        producer
            .send(
                FutureRecord::to(&kafka_a.topics.profiles).key(key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    // Instance B: its own event topics and state, the same profiles topic.
    let (kafka_b, suffix_b) = sharing_profiles(&kafka_a, "profiles-b");
    let (b, api_b) = start_analyzer(&kafka_b, &format!("b-{suffix_b}"), &dir.path().join("b"), &shutdown).await;
    // Read in full at start: no waiting.
    let r = client
        .get(format!("{api_b}/v1/models/credit/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p: Json = r.json().await.unwrap();
    assert_eq!((p["model"].as_str(), p["version"].as_u64()), (Some("credit"), Some(1)));
    assert!(
        dir.path()
            .join("b")
            .join("profiles")
            .join("credit")
            .join("v1.json")
            .exists()
    );
    // The two foreign records are counted as skipped (and logged).
    let metrics = get_text(&format!("{api_b}/metrics")).await;
    assert!(
        metrics.contains(r#"mlwatch_analyzer_profile_records_total{result="skipped"} 2"#)
            && metrics.contains(r#"mlwatch_analyzer_profile_records_total{result="applied"} 1"#),
        "{metrics}"
    );

    let collector = start_collector(&kafka_b, &shutdown).await;

    // v1 stable throughout; v2 (the canary) with amount +1 σ from the
    // middle on. 100 events per second of event time per version.
    let t0 = (mlwatch_common::now_ms() - 3_600_000) / 60_000 * 60_000;
    let mut events = Vec::new();
    for i in 0..6000i64 {
        events.push(event(&mut rng, "v1", i, t0, 0.0));
        events.push(event(&mut rng, "v2", i, t0, if i >= 3000 { 10.0 } else { 0.0 }));
    }
    post_events(&client, &collector, &events).await;
    let drifted: BTreeSet<(String, String)> = alerts_until_amount_drifts(&kafka_b)
        .await
        .into_iter()
        .filter(|a| a.r#type == "FeatureDrift" || a.r#type == "PredictionDrift")
        .map(|a| (a.labels["model_version"].clone(), a.labels["feature"].clone()))
        .collect();
    assert_eq!(drifted, BTreeSet::from([("v2".to_string(), "amount".to_string())]));

    // The API shows each version; v1 is judged against the same profile.
    let report = poll_json(
        &format!("{api_b}/v1/models/credit/drift"),
        30,
        "both versions in the drift report",
        |v| {
            v["versions"]
                .as_array()
                .is_some_and(|vs| vs.len() == 2 && vs.iter().all(|v| !v["report"].is_null()))
        },
    )
    .await;
    for v in report["versions"].as_array().unwrap() {
        assert_eq!(v["profile_version"], 1, "{v}");
        let amount = v["report"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "amount")
            .unwrap();
        let firing = amount["decision"]["firing"].as_bool().unwrap();
        assert_eq!(firing, v["model_version"] == "v2", "{v}");
    }

    // A profile of the canary alone, uploaded to B, reaches A.
    let r = put_profile(
        &client,
        &format!("{api_b}/v1/models/credit/profile?model_version=v2"),
        reference_profile(&mut rng),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let v: Json = r.json().await.unwrap();
    assert_eq!(
        (v["version"].as_u64(), v["model_version"].as_str()),
        (Some(2), Some("v2"))
    );
    let p = poll_json(
        &format!("{api_a}/v1/models/credit/profile?model_version=v2"),
        30,
        "instance a to follow the profiles topic",
        |p| p["version"] == 2,
    )
    .await;
    assert_eq!(p["model_version"], "v2");
    // The model-wide profile is unchanged for the other versions.
    let p = poll_json(
        &format!("{api_a}/v1/models/credit/profile?model_version=v1"),
        30,
        "v1's profile",
        |_| true,
    )
    .await;
    assert_eq!(p["version"], 1);

    shutdown.cancel();
    a.task.await.unwrap().unwrap();
    b.task.await.unwrap().unwrap();
    let _ = collector.task.await;
}

/// A profile captured from a model version's events on instance A is
/// published on the profiles topic and becomes the active profile of
/// instance B too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_captured_profile_reaches_every_instance() {
    let (kafka_a, suffix, shutdown) = setup("capture");
    let dir = temp_dir("capture");
    let mut rng = StdRng::seed_from_u64(13);
    let client = reqwest::Client::new();
    let (a, api_a) = start_analyzer(&kafka_a, &format!("a-{suffix}"), &dir.path().join("a"), &shutdown).await;
    let (kafka_b, suffix_b) = sharing_profiles(&kafka_a, "capture-b");
    let (b, api_b) = start_analyzer(&kafka_b, &format!("b-{suffix_b}"), &dir.path().join("b"), &shutdown).await;

    let r = client
        .post(format!(
            "{api_a}/v1/models/credit/profile/capture?events=300&from_version=v1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = client
        .get(format!("{api_b}/v1/models/credit/profile"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // 400 events of each version; only v1's count, the first 300.
    let collector = start_collector(&kafka_a, &shutdown).await;
    let t0 = (mlwatch_common::now_ms() - 3_600_000) / 60_000 * 60_000;
    let mut events = Vec::new();
    for i in 0..400i64 {
        events.push(event(&mut rng, "v1", i, t0, 0.0));
        events.push(event(&mut rng, "v2", i, t0, 50.0));
    }
    post_events(&client, &collector, &events).await;

    let p = poll_json(
        &format!("{api_b}/v1/models/credit/profile"),
        30,
        "the captured profile on instance b",
        |p| p["version"] == 1,
    )
    .await;
    assert_eq!(p["rows"], 300, "{p}");
    assert!(p["source"].as_str().unwrap().contains("v1"), "{p}");
    let profile = Profile::from_json(&p.to_string()).unwrap();
    let mlwatch_analyzer::drift::FeatureProfile::Numeric(amount) = &profile.features["amount"] else {
        panic!("amount is not numeric: {p}")
    };
    // v2's amounts (shifted by 50) were not captured.
    assert!(amount.max < 150.0, "{p}");
    let on_a = poll_json(&format!("{api_a}/v1/models/credit/profile"), 30, "a's profile", |_| {
        true
    })
    .await;
    assert_eq!(on_a, p);

    shutdown.cancel();
    a.task.await.unwrap().unwrap();
    b.task.await.unwrap().unwrap();
    let _ = collector.task.await;
}
