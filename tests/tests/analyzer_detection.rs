//! Detection with the default rules through the real broker (issue 14):
//! one recorded stream of three models is analysed by a fresh analyzer
//! reading it from scratch.
//!
//! - `deploy`: v1 for 130 s, then v2 with p50 × 1.5: `VersionRegression`
//!   (metric p50, baseline_version v1).
//! - `burst`: 0.5 % errors, then 5 % for ten seconds at second 400:
//!   `ErrorRateRegression` within the burst.
//! - `steady`: stationary for the whole run: no alert of any kind.
//!
//! Two analyses of the stream by two groups give the same alerts with the
//! same ids (the alerts are a function of the event sequence alone).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{Alert, AlertStatus, InferenceEvent, Prediction};
use mlwatch_testkit::{get_json, scrape_until, setup, temp_dir, within};

const BASE_MS: i64 = 1_790_000_000_000;

/// SplitMix64, so the stream is the same on every run.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `(model, events per second, seconds)`; what each second looks like
/// comes from `regime(model, second) = (version, median ms, error rate)`.
const MODELS: [(&str, i64, i64); 3] = [("deploy", 20, 280), ("burst", 50, 430), ("steady", 20, 430)];
const BURST_SECS: std::ops::Range<i64> = 400..410;

fn regime(model: &str, second: i64) -> (&'static str, f64, f64) {
    match model {
        "deploy" if second >= 130 => ("v2", 30.0, 0.005),
        "burst" if BURST_SECS.contains(&second) => ("v1", 20.0, 0.05),
        _ => ("v1", 20.0, 0.005),
    }
}

fn stream() -> Vec<(String, InferenceEvent)> {
    let mut rng = Rng(14);
    let mut out = Vec::new();
    // Interleaved by event time, as a live stream would be.
    for ms in (0..430_000i64).step_by(10) {
        for (model, rate, secs) in MODELS {
            let every = 1000 / rate;
            if ms % every != 0 || ms >= secs * 1000 {
                continue;
            }
            let (version, median, error_rate) = regime(model, ms / 1000);
            let error = rng.uniform() < error_rate;
            out.push((
                model.to_string(),
                InferenceEvent {
                    event_id: format!("{model}-{ms}"),
                    model: model.into(),
                    model_version: version.into(),
                    timestamp_ms: BASE_MS + ms,
                    latency_ms: median * (0.4 * rng.normal()).exp(),
                    status: if error { 2 } else { 1 },
                    prediction: Some(Prediction {
                        score: Some((0.3 + 0.15 * rng.normal()).clamp(0.0, 1.0)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ));
        }
    }
    out
}

/// Runs one analyzer with the default rules over the whole stream and
/// returns every alert it published.
async fn analyse(kafka: &KafkaConfig, group: &str, alerts_topic: &str, total: usize) -> Vec<Alert> {
    let shutdown = CancellationToken::new();
    let dir = temp_dir("analyzer-detection");
    let mut c = mlwatch_analyzer::Config::for_test(kafka, group, dir.path());
    c.kafka.topics.alerts = alerts_topic.to_string();
    // Pure replay: wall time never moves event time.
    c.analyzer.idle_advance_after_secs = 0;
    let analyzer = mlwatch_analyzer::start(c, shutdown.clone())
        .await
        .expect("analyzer starts");
    let client = reqwest::Client::new();
    let base = format!("http://{}", analyzer.admin_addr);
    within(300, "every event applied", async {
        loop {
            let v = get_json(&format!("{base}/v1/models")).await;
            let applied: usize = v["models"]
                .as_array()
                .map(|a| a.iter().map(|s| s["events"].as_u64().unwrap_or(0) as usize).sum())
                .unwrap_or(0);
            if applied == total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let metrics = scrape_until(&client, &format!("{base}/metrics"), 30, "the alert counters", |m| {
        m.contains("mlwatch_analyzer_alerts_total{")
    })
    .await;
    shutdown.cancel();
    analyzer.task.await.unwrap().unwrap();
    support::published_alerts(kafka, alerts_topic, &metrics).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rules_catch_a_deploy_regression_and_an_error_burst_and_stay_quiet_otherwise() {
    let (kafka, suffix, _) = setup("analyzer-detection");
    let alerts_a = format!("{}.a", kafka.topics.alerts);
    let alerts_b = format!("{}.b", kafka.topics.alerts);
    kafka
        .ensure_topics(&[&kafka.topics.inference, &alerts_a, &alerts_b])
        .await
        .unwrap();
    let events = stream();
    support::produce_inferences(&kafka, &events).await;

    let a = analyse(&kafka, &format!("a-{suffix}"), &alerts_a, events.len()).await;
    let firing = |model: &str, kind: &str| -> Vec<&Alert> {
        a.iter()
            .filter(|x| x.labels["model"] == model && x.r#type == kind && x.status == AlertStatus::Firing as i32)
            .collect()
    };

    // The deploy: v2's p50 is 1.5 × v1's.
    let version = firing("deploy", "VersionRegression");
    let p50 = version
        .iter()
        .find(|x| x.labels["metric"] == "p50")
        .unwrap_or_else(|| panic!("no p50 VersionRegression in {a:?}"));
    assert_eq!(p50.labels["model_version"], "v2");
    assert_eq!(p50.labels["baseline_version"], "v1");
    assert!(p50.value > 1.3 * 20.0 && p50.threshold < p50.value, "{p50:?}");
    assert!(p50.annotations["description"].contains("lower bound"), "{p50:?}");
    assert!(
        !version
            .iter()
            .any(|x| x.labels["metric"] == "error_rate" || x.labels["metric"] == "score"),
        "{version:?}"
    );

    // The burst: fired within the ten seconds (or the second after).
    let burst = firing("burst", "ErrorRateRegression");
    assert!(!burst.is_empty(), "no ErrorRateRegression in {a:?}");
    let at = burst[0].starts_at_ms - BASE_MS;
    assert!(
        (BURST_SECS.start * 1000..=(BURST_SECS.end + 1) * 1000).contains(&at),
        "fired at {at} ms"
    );

    // The stationary control: nothing.
    let steady: Vec<&Alert> = a.iter().filter(|x| x.labels["model"] == "steady").collect();
    assert!(steady.is_empty(), "false alarms on the stationary model: {steady:?}");

    // A second analysis from scratch: the same alerts, the same ids.
    let b = analyse(&kafka, &format!("b-{suffix}"), &alerts_b, events.len()).await;
    let ids = |v: &[Alert]| -> BTreeSet<(String, String, i32, i64)> {
        v.iter()
            .map(|x| (x.id.clone(), x.r#type.clone(), x.status, x.starts_at_ms))
            .collect()
    };
    assert_eq!(ids(&a), ids(&b));
}
