//! Data drift end to end over the real broker: a reference profile (the
//! same JSON `mlwatch-profile build` writes) is uploaded to the analyzer,
//! stable traffic then traffic with one feature shifted by one standard
//! deviation go through the collector's HTTP API; `FeatureDrift` fires for
//! that feature only, the gauges are on `/metrics`, and the drift API shows
//! the reference and current distributions side by side.

use std::collections::BTreeSet;
use std::time::Duration;

use mlwatch_analyzer::drift::{BuildOptions, ProfileBuilder, Value};
use mlwatch_common::config::AdminConfig;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{Alert, AlertStatus};
use mlwatch_tests::{init_logs, kafka_for_test, read_topic, within};
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;
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
    init_logs();
    let (kafka, suffix) = kafka_for_test("drift");
    let shutdown = CancellationToken::new();
    let dir = std::env::temp_dir().join(format!("mlwatch-drift-{suffix}"));
    let mut rng = StdRng::seed_from_u64(11);

    // The reference: 5000 rows of the stable distribution.
    let mut builder = ProfileBuilder::new(BuildOptions::new("credit", 1)).unwrap();
    for _ in 0..5000 {
        let (amount, age, country, score) = row(&mut rng, 0.0);
        builder.start_row();
        builder.add_feature("amount", Value::Number(amount));
        builder.add_feature("age", Value::Number(age));
        builder.add_feature("country", Value::Text(country));
        builder.add_prediction("score", Value::Number(score));
    }
    let profile = builder.finish().unwrap().to_json();

    let mut collector = mlwatch_collector::Config::default();
    collector.kafka = kafka.clone();
    collector.admin = AdminConfig::on(([127, 0, 0, 1], 0).into());
    collector.http.listen = ([127, 0, 0, 1], 0).into();
    collector.grpc.listen = ([127, 0, 0, 1], 0).into();
    let collector = mlwatch_collector::start(collector, shutdown.clone())
        .await
        .expect("collector");

    let mut c = mlwatch_analyzer::Config::default();
    c.kafka = kafka.clone();
    c.admin = AdminConfig::on(([127, 0, 0, 1], 0).into());
    c.analyzer.group_id = format!("analyzer-{suffix}");
    c.analyzer.state_topic = format!("mlwatch.analyzer.state.v1.{suffix}");
    c.analyzer.checkpoint_interval_secs = 1;
    c.analyzer.idle_advance_after_secs = 1;
    c.accuracy.join.dir = dir.join("join");
    c.drift.profile_dir = dir.join("profiles");
    c.drift.window_secs = 10;
    c.drift.rules.defaults.min_window_events = 500;
    let analyzer = mlwatch_analyzer::start(c, shutdown.clone()).await.expect("analyzer");
    let client = reqwest::Client::new();
    let api = format!("http://{}", analyzer.admin_addr);

    // A profile for another model is refused, naming both.
    let r = client
        .put(format!("{api}/v1/models/other/profile"))
        .body(profile.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("credit") && text.contains("other"), "{text}");
    let r = client
        .put(format!("{api}/v1/models/credit/profile"))
        .body(profile.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Json = r.json().await.unwrap();
    assert_eq!(v["version"], 1);

    // 100 events per second of event time: 4 stable windows of 10 s, then
    // 4 with amount shifted by +1 σ.
    let t0 = (mlwatch_common::now_ms() - 3_600_000) / 60_000 * 60_000;
    let mut events = Vec::new();
    for i in 0..8000i64 {
        let shift = if i >= 4000 { 10.0 } else { 0.0 };
        let (amount, age, country, score) = row(&mut rng, shift);
        events.push(json!({
            "event_id": format!("e{i}"), "model": "credit", "model_version": "v2",
            "timestamp": t0 + i * 10, "latency_ms": 5.0, "status": "ok",
            "prediction": {"score": score},
            "features": {"amount": amount, "age": age, "country": country},
        }));
    }
    let url = format!("http://{}/v1/inferences", collector.http_addr);
    for chunk in events.chunks(200) {
        let r = client.post(&url).json(&chunk).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    }

    // FeatureDrift on amount reaches the alerts topic.
    let msgs = read_topic(&kafka, &kafka.topics.alerts, 90, |ms| {
        ms.iter().any(|m| {
            Alert::decode(m.payload().unwrap_or_default())
                .is_ok_and(|a| a.r#type == "FeatureDrift" && a.labels.get("feature").is_some_and(|f| f == "amount"))
        })
    })
    .await;
    let alerts: Vec<Alert> = msgs
        .iter()
        .filter_map(|m| Alert::decode(m.payload().unwrap_or_default()).ok())
        .collect();
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
    let report: Json = within(30, "the drift report", async {
        loop {
            let v: Json = client
                .get(format!("{api}/v1/models/credit/drift"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if !v["report"].is_null() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
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
        let prefix = format!(r#"ml_feature_drift_score{{feature_name="{feature}",model_name="credit"}} "#);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    };
    let metrics = mlwatch_tests::scrape_until(
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
        metrics.contains(r#"ml_data_quality_score{model_name="credit",quality_check="missing_values"}"#),
        "{metrics}"
    );

    // The active profile is durable: a fresh store reads it back.
    let stored = std::fs::read_to_string(dir.join("profiles").join("credit").join("active")).unwrap();
    assert_eq!(stored.trim(), "1");

    shutdown.cancel();
    analyzer.task.await.unwrap().unwrap();
    let _ = collector.task.await;
    let _ = std::fs::remove_dir_all(&dir);
}
