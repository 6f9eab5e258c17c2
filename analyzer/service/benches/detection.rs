//! Detection-latency bench: the real analyzer (in-process, default rules:
//! p99 over 5 minutes above 200 ms) against the real broker. A 5-minute
//! healthy baseline at 1,000 events/s is backfilled (event times in the
//! past five minutes), then live traffic flows at 1,000 events/s with
//! event time = wall time; then a regression makes every request slow.
//! Prints the time from the regression's first event to the
//! `HighP99Latency` firing alert on the alerts topic.
//!
//! `cargo bench -p mlwatch-analyzer --bench detection` (broker from
//! `KAFKA_BOOTSTRAP_SERVERS`, else 127.0.0.1:9092).

use std::time::{Duration, Instant};

use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{Alert, AlertStatus, InferenceEvent};
use prost::Message as _;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const RATE: i64 = 1000;
const MODEL: &str = "fraud";

fn event(n: i64, t_ms: i64, latency_ms: f64) -> Vec<u8> {
    InferenceEvent {
        event_id: format!("e{n}"),
        model: MODEL.into(),
        model_version: "v3".into(),
        timestamp_ms: t_ms,
        latency_ms,
        status: 1,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Healthy latency: 20–80 ms, deterministic.
fn healthy(n: i64) -> f64 {
    20.0 + (n.wrapping_mul(7919) % 61) as f64
}

async fn send_all(producer: &FutureProducer, topic: &str, payloads: Vec<Vec<u8>>) {
    let sends = payloads
        .iter()
        .map(|p| producer.send(FutureRecord::to(topic).key(MODEL).payload(p), Duration::from_secs(30)));
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e).expect("produce");
    }
}

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let suffix = format!("detect-{}", mlwatch_common::now_ms());
    let kafka = KafkaConfig {
        bootstrap_servers: std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topics: Topics::with_suffix(&suffix),
        partitions: 1,
        ..KafkaConfig::default()
    };
    kafka
        .ensure_topics(&[&kafka.topics.inference, &kafka.topics.alerts])
        .await
        .expect("topics");
    let producer = kafka.producer().expect("producer");
    let topic = kafka.topics.inference.clone();

    // Backfill: five minutes of healthy traffic ending now.
    let now = mlwatch_common::now_ms();
    let backfill = 300 * RATE;
    let t0 = Instant::now();
    for chunk in (0..backfill).collect::<Vec<_>>().chunks(20_000) {
        let payloads = chunk
            .iter()
            .map(|n| event(*n, now - 300_000 + n * 1000 / RATE, healthy(*n)))
            .collect();
        send_all(&producer, &topic, payloads).await;
    }
    println!("backfilled {backfill} events in {:.1} s", t0.elapsed().as_secs_f64());

    let shutdown = CancellationToken::new();
    let mut config = mlwatch_analyzer::Config::default();
    config.kafka = kafka.clone();
    config.admin = AdminConfig::on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    config.log.filter = "warn".into();
    config.analyzer.group_id = format!("analyzer-{suffix}");
    config.analyzer.state_topic = format!("mlwatch.analyzer.state.v1.{suffix}");
    config.accuracy.join.dir = std::env::temp_dir().join(format!("mlwatch-join-{suffix}"));
    let analyzer = mlwatch_analyzer::start(config, shutdown.clone())
        .await
        .expect("analyzer");

    // Alerts reader, positioned before anything can fire; assigned to the
    // topic's single partition directly (no group join delays the read).
    let alerts: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("reader-{suffix}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&kafka.topics.alerts, 0, rdkafka::Offset::Beginning)
        .expect("partition");
    alerts.assign(&tpl).expect("assign");

    // Live traffic, event time = wall time, 10 events every 10 ms.
    let mut n = backfill;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let caught_up = Instant::now();
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/models", analyzer.admin_addr);
    // Healthy until the analyzer has caught up with the backfill, plus 5 s.
    let mut healthy_until: Option<Instant> = None;
    let mut regression_started: Option<(Instant, i64)> = None;
    let mut fired: Option<(Instant, Alert)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while fired.is_none() && Instant::now() < deadline {
        tokio::select! {
            _ = tick.tick() => {
                let t = mlwatch_common::now_ms();
                let slow = healthy_until.is_some_and(|h| Instant::now() >= h);
                if slow && regression_started.is_none() {
                    regression_started = Some((Instant::now(), t));
                    let v: serde_json::Value = client.get(&url).send().await.expect("api").json().await.expect("json");
                    println!(
                        "at the regression: analyzer has applied {} events, newest event time {} ms behind wall time",
                        v["models"][0]["events"],
                        t - v["models"][0]["last_event_ms"].as_i64().unwrap_or(0)
                    );
                }
                let payloads: Vec<Vec<u8>> = (0..RATE / 100)
                    .map(|k| event(n + k, t, if slow { 450.0 + (k as f64) } else { healthy(n + k) }))
                    .collect();
                n += RATE / 100;
                let p = producer.clone();
                let topic = topic.clone();
                tokio::spawn(async move { send_all(&p, &topic, payloads).await });
                if healthy_until.is_none() && n % 1000 == 0 {
                    let v: serde_json::Value = client.get(&url).send().await.expect("api").json().await.expect("json");
                    if v["models"][0]["events"].as_i64().unwrap_or(0) >= backfill {
                        println!("analyzer caught up with the backfill after {:.1} s", caught_up.elapsed().as_secs_f64());
                        healthy_until = Some(Instant::now() + Duration::from_secs(5));
                    }
                }
            }
            m = alerts.recv() => {
                let Ok(m) = m else { continue };
                let Ok(a) = Alert::decode(m.payload().unwrap_or_default()) else { continue };
                if a.r#type == "HighP99Latency" && a.status == AlertStatus::Firing as i32 {
                    if let Some(ts) = m.timestamp().to_millis() {
                        println!(
                            "alert produced {} ms after its event time, read {} ms after it was produced",
                            ts - a.generated_at_ms,
                            mlwatch_common::now_ms() - ts
                        );
                    }
                    fired = Some((Instant::now(), a));
                } else {
                    println!("other alert before the regression: {} {}", a.r#type, a.status);
                }
            }
        }
    }
    let (Some((start, first_event_ms)), Some((at, alert))) = (regression_started, fired) else {
        println!("no HighP99Latency within the deadline");
        std::process::exit(1);
    };
    println!(
        "detection latency: HighP99Latency on the alerts topic {:.2} s after the regression's first event \
         (alert starts_at {} ms after it in event time; p99 {:.1} ms over 5m; 1,000 events/s; target 5 s)",
        (at - start).as_secs_f64(),
        alert.starts_at_ms - first_event_ms,
        alert.value
    );
    shutdown.cancel();
    let _ = analyzer.task.await;
}
