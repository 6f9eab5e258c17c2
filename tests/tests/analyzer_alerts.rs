//! The analyzer's alerts are a function of the input alone: one recorded
//! stream (a latency regression on one model, an error burst on another)
//! is analysed twice by fresh analyzer groups over the real broker, and
//! both publish the same alerts with the same ids, firing and resolved.
//! The read API and the Prometheus gauges serve every statistic.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{AlertStatus, InferenceEvent};
use mlwatch_testkit::{get_json, scrape_until, setup, temp_dir, within};

const BASE_MS: i64 = 1_790_000_000_000;
/// 120 s of event time, 20 events/s per model.
const STEPS: i64 = 2400;

fn stream() -> Vec<(String, InferenceEvent)> {
    let mut out = Vec::new();
    for i in 0..STEPS {
        let t = BASE_MS + i * 50;
        let second = i / 20;
        let slow = (40..80).contains(&second);
        let failing = (60..90).contains(&second) && i % 10 == 0;
        for (model, version) in [("fraud", "v3"), ("ranker", "v2")] {
            let latency = if model == "fraud" && slow {
                450.0 + (i % 13) as f64
            } else {
                20.0 + (i % 41) as f64
            };
            let status = if model == "ranker" && failing { 2 } else { 1 };
            out.push((
                model.to_string(),
                InferenceEvent {
                    event_id: format!("{model}-{i}"),
                    model: model.into(),
                    model_version: version.into(),
                    timestamp_ms: t,
                    latency_ms: latency,
                    status,
                    ..Default::default()
                },
            ));
        }
    }
    out
}

fn config(kafka: &KafkaConfig, group: &str, alerts_topic: &str, dir: &Path) -> mlwatch_analyzer::Config {
    let mut c = mlwatch_analyzer::Config::for_test(kafka, group, dir);
    c.kafka.topics.alerts = alerts_topic.to_string();
    // Wall time must not move event time here: the run is pure replay.
    c.analyzer.idle_advance_after_secs = 0;
    c.analyzer.checkpoint_interval_secs = 1;
    c.rules.p99_latency.window_secs = 30;
    c.rules.p99_latency.resolve_for_secs = 5;
    c.rules.error_rate.window_secs = 30;
    c.rules.error_rate.resolve_for_secs = 5;
    c
}

type Seen = BTreeSet<(String, String, String, i32, i64, String)>;

/// Runs one analyzer over the whole stream; returns its alerts as
/// `(id, fingerprint, type, status, starts_at, value)` and the admin
/// address answers it gave.
async fn analyse(kafka: &KafkaConfig, group: &str, alerts_topic: &str) -> (Seen, serde_json::Value, String) {
    let shutdown = CancellationToken::new();
    let dir = temp_dir("analyzer-alerts");
    let analyzer = mlwatch_analyzer::start(config(kafka, group, alerts_topic, dir.path()), shutdown.clone())
        .await
        .expect("analyzer starts");
    let client = reqwest::Client::new();
    let base = format!("http://{}", analyzer.admin_addr);
    within(90, "every event applied", async {
        loop {
            let v = get_json(&format!("{base}/v1/models")).await;
            let total: i64 = v["models"]
                .as_array()
                .map(|a| a.iter().map(|s| s["events"].as_i64().unwrap_or(0)).sum())
                .unwrap_or(0);
            if total == 2 * STEPS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let latency = get_json(&format!("{base}/v1/models/fraud/latency?window=1m")).await;
    // Gauges are refreshed every evaluation interval.
    let metrics = scrape_until(&client, &format!("{base}/metrics"), 30, "the refreshed gauges", |m| {
        m.contains("mlwatch_analyzer_alerts_total{")
            && m.contains(r#"ml_model_throughput_rps{model_name="ranker",model_version="v2",window="1m"} 20"#)
            && m.lines().any(|l| {
                l.starts_with("ml_model_latency_seconds{")
                    && l.contains(r#"model_name="fraud""#)
                    && l.contains(r#"stat="p99""#)
            })
            && m.contains("mlwatch_analyzer_checkpoints_total{result=\"ok\"}")
    })
    .await;
    shutdown.cancel();
    analyzer.task.await.unwrap().unwrap();
    // The analyzer counts what it published; read that many back.
    let seen = support::published_alerts(kafka, alerts_topic, &metrics)
        .await
        .into_iter()
        .map(|a| {
            (
                a.id,
                a.fingerprint,
                a.r#type,
                a.status,
                a.starts_at_ms,
                format!("{:.6}", a.value),
            )
        })
        .collect();
    (seen, latency, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_stream_gives_the_same_alerts_with_the_same_ids() {
    let (kafka, suffix, _) = setup("analyzer-replay");
    let alerts_a = format!("{}.a", kafka.topics.alerts);
    let alerts_b = format!("{}.b", kafka.topics.alerts);
    kafka
        .ensure_topics(&[&kafka.topics.inference, &alerts_a, &alerts_b])
        .await
        .unwrap();
    support::produce_inferences(&kafka, &stream()).await;

    let (a, latency, metrics) = analyse(&kafka, &format!("a-{suffix}"), &alerts_a).await;
    let (b, _, _) = analyse(&kafka, &format!("b-{suffix}"), &alerts_b).await;
    assert_eq!(a, b, "two analyses of one stream disagree");

    let firing = AlertStatus::Firing as i32;
    let resolved = AlertStatus::Resolved as i32;
    let kinds: BTreeSet<(&str, i32)> = a.iter().map(|s| (s.2.as_str(), s.3)).collect();
    for want in [
        ("HighP99Latency", firing),
        ("HighP99Latency", resolved),
        ("HighErrorRate", firing),
        ("HighErrorRate", resolved),
    ] {
        assert!(kinds.contains(&want), "{want:?} missing from {kinds:?}");
    }
    // The p99 regression starts at second 40; one slow second in a 30 s
    // window is more than 1 %: it fires at the first evaluation after it.
    let p99_fire = a.iter().find(|s| s.2 == "HighP99Latency" && s.3 == firing).unwrap();
    assert_eq!(p99_fire.4, BASE_MS + 41_000);

    // The read API: every statistic for the window, as of event time.
    let v = &latency["versions"][0];
    assert_eq!(latency["window"], "1m");
    assert_eq!(v["model_version"], "v3");
    assert_eq!(v["count"], 1200);
    for field in [
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "p999_ms",
        "mean_ms",
        "std_ms",
        "min_ms",
        "max_ms",
        "throughput_rps",
        "error_rate",
        "slow_request_rate",
        "relative_error",
        "late_events",
    ] {
        assert!(v[field].is_number(), "{field} missing: {latency}");
    }
    assert_eq!(v["throughput_rps"], 20.0);
    assert_eq!(v["min_ms"], 20.0);
    // The gauges, with the names dashboards use.
    assert!(
        metrics.lines().any(|l| l.starts_with("ml_model_latency_seconds{")
            && l.contains(r#"model_name="fraud""#)
            && l.contains(r#"stat="p99""#)
            && l.contains(r#"window="5m""#)),
        "no p99 gauge in\n{metrics}"
    );
    for needle in [
        r#"ml_model_throughput_rps{model_name="ranker",model_version="v2",window="1m"} 20"#,
        "ml_model_error_rate{",
        "ml_model_slow_request_rate{",
        "mlwatch_analyzer_late_events{",
        "mlwatch_analyzer_checkpoints_total{result=\"ok\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} not in\n{metrics}");
    }
}
