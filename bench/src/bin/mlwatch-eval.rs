//! `mlwatch-eval`: detection quality through the real pipeline.
//!
//! Seven scenarios, one model each, run side by side in one event-time span
//! at 1,000 events/s per model (20 numeric + 5 categorical features,
//! binary predictions, labels): a deploy regression (v1 -> v2, latency
//! x1.5), a canary regression (10 % of traffic to a v2 with latency x1.5),
//! an error burst (0.5 % -> 5 % for 10 s), a latency spike (20 % of
//! requests x10 for 10 s), drift (num_00 +0.5 sd, num_01 +0.1 sd), concept
//! drift (accuracy 0.88 -> 0.69, labels 1-30 min late) and a stationary
//! control. Events go through the collector (gRPC batches, in arrival
//! order) to the broker; one analyzer with default settings reads them as
//! they come (live), a second one reads the same topics from scratch
//! afterwards (catch-up). The report gives, per scenario, the first alert
//! of an expected kind after the change (delay in events and seconds of
//! event time), every false alarm, and whether the catch-up run's alerts
//! equal the live run's, id for id.
#![allow(clippy::print_stdout)]

#[path = "../events.rs"]
#[allow(dead_code)]
mod events;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::collector_client::CollectorClient;
use mlwatch_proto::v1::{
    Alert, AlertStatus, InferenceEvent, InferenceStatus, IngestInferencesRequest, IngestLabelsRequest, LabelEvent,
    feature_value,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Detection delay, false alarms and catch-up = live, through the real pipeline"
)]
struct Args {
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// Inference events per scenario (1,000 per second of event time); the
    /// change comes at half of them.
    #[arg(long, default_value_t = 150_000)]
    events: u64,
    /// Where to write the report (Markdown).
    #[arg(long, default_value = "docs/detection-eval.md")]
    out: std::path::PathBuf,
}

const RATE: u64 = 1_000;

/// Whether an alert counts for a signal.
type Matches = fn(&Alert) -> bool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Deploy,
    Canary,
    ErrorBurst,
    LatencySpike,
    Drift,
    Concept,
    Control,
}

const ALL: [Scenario; 7] = [
    Scenario::Deploy,
    Scenario::Canary,
    Scenario::ErrorBurst,
    Scenario::LatencySpike,
    Scenario::Drift,
    Scenario::Concept,
    Scenario::Control,
];

impl Scenario {
    fn model(self) -> &'static str {
        match self {
            Self::Deploy => "eval-deploy",
            Self::Canary => "eval-canary",
            Self::ErrorBurst => "eval-error-burst",
            Self::LatencySpike => "eval-latency-spike",
            Self::Drift => "eval-drift",
            Self::Concept => "eval-concept",
            Self::Control => "eval-control",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Deploy => "deploy regression: v1 -> v2 at the change, latency x1.5",
            Self::Canary => "canary regression: 10 % of traffic to v2, latency x1.5",
            Self::ErrorBurst => "error burst: 0.5 % -> 5 % errors for 10 s",
            Self::LatencySpike => "latency spike: 20 % of requests x10 for 10 s",
            Self::Drift => "drift: num_00 +0.5 sd, num_01 +0.1 sd",
            Self::Concept => "concept drift: accuracy 0.88 -> 0.69, labels 1-30 min late",
            Self::Control => "stationary control",
        }
    }

    /// The signals that should fire after the change, each with the test an
    /// alert must pass to count for it.
    fn expected(self) -> Vec<(&'static str, Matches)> {
        match self {
            Self::Deploy | Self::Canary | Self::LatencySpike => vec![("latency", is_latency)],
            Self::ErrorBurst => vec![("errors", is_errors)],
            Self::Drift => vec![
                ("num_00 (0.5 sd)", |a| feature(a) == "num_00"),
                ("num_01 (0.1 sd)", |a| feature(a) == "num_01"),
            ],
            Self::Concept => vec![("accuracy", |a| a.r#type.contains("Accuracy"))],
            Self::Control => vec![],
        }
    }
}

fn feature(a: &Alert) -> &str {
    a.labels
        .get("feature")
        .or_else(|| a.labels.get("feature_name"))
        .map(String::as_str)
        .unwrap_or("")
}

fn metric(a: &Alert) -> &str {
    a.labels.get("metric").map(String::as_str).unwrap_or("")
}

fn is_latency(a: &Alert) -> bool {
    let t = &a.r#type;
    let latency_metric = matches!(metric(a), "p50" | "p90" | "p99") || metric(a).contains("latency");
    t.contains("Latency") || t.contains("Sla") || (t == "VersionRegression" && latency_metric)
}

fn is_errors(a: &Alert) -> bool {
    let t = &a.r#type;
    t.contains("Error") || (t == "VersionRegression" && metric(a).contains("error"))
}

/// Before the measured span, every model serves this long at a low rate, so
/// the rules that compare with a model's own recent past (ten minutes
/// ending five before) have a baseline when the change comes, as a model in
/// production has.
const WARMUP_MS: i64 = 16 * 60 * 1000;
/// Events per second during the warm-up.
const WARMUP_RATE: u64 = 20;

/// The generated stream: inferences and labels, each with the event time
/// at which it arrives.
struct Stream {
    inferences: Vec<InferenceEvent>,
    labels: Vec<(i64, LabelEvent)>,
    change_ms: i64,
}

fn generate(n: u64, start_ms: i64) -> Stream {
    let names = events::Names::default();
    let mut rng = SmallRng::seed_from_u64(2026);
    let change = n / 2;
    let change_ms = start_ms + (change * 1000 / RATE) as i64;
    let mut inferences = Vec::with_capacity(n as usize * ALL.len());
    let mut labels = Vec::new();
    let sd = 3f64.sqrt(); // uniform on [-3, 3]
    let warmup = WARMUP_MS as u64 * WARMUP_RATE / 1000;
    for i in 0..warmup + n {
        // The warm-up's events carry sequence numbers after the measured
        // span's, so event ids stay unique.
        let (seq, ts) = if i < warmup {
            (n + i, start_ms - WARMUP_MS + (i * 1000 / WARMUP_RATE) as i64)
        } else {
            (i - warmup, start_ms + ((i - warmup) * 1000 / RATE) as i64)
        };
        let i = seq;
        let after = i >= change && i < n;
        let burst = after && i < change + 10 * RATE;
        for s in ALL {
            let base = 15.0 + 10.0 * rng.random::<f64>() + 10.0 * rng.random::<f64>();
            let mut e = events::inference(&names, &mut rng, s.model(), seq, ts, base);
            let mut error_rate = 0.005;
            match s {
                Scenario::Deploy if after => {
                    e.model_version = "v2".into();
                    e.latency_ms *= 1.5;
                }
                Scenario::Canary if after && rng.random_bool(0.1) => {
                    e.model_version = "v2".into();
                    e.latency_ms *= 1.5;
                }
                Scenario::ErrorBurst if burst => error_rate = 0.05,
                Scenario::LatencySpike if burst && rng.random_bool(0.2) => e.latency_ms *= 10.0,
                Scenario::Drift if after => {
                    for (f, shift) in [("num_00", 0.5 * sd), ("num_01", 0.1 * sd)] {
                        if let Some(feature_value::Kind::Number(x)) =
                            e.features.get_mut(f).and_then(|v| v.kind.as_mut())
                        {
                            *x += shift;
                        }
                    }
                }
                _ => {}
            }
            if rng.random_bool(error_rate) {
                e.status = InferenceStatus::Error as i32;
                e.error = "model server error".into();
                e.prediction = None;
            }
            if let Some(predicted) = e.prediction.as_ref().and_then(|p| p.label.clone())
                && rng.random_bool(0.99)
            {
                let p_right = if s == Scenario::Concept && after { 0.69 } else { 0.88 };
                let truth = if rng.random_bool(p_right) {
                    predicted
                } else if predicted == "1" {
                    "0".into()
                } else {
                    "1".into()
                };
                let lag_ms = if s == Scenario::Concept {
                    rng.random_range(60_000..1_800_000)
                } else {
                    rng.random_range(30_000..120_000)
                };
                labels.push((
                    ts + lag_ms,
                    LabelEvent {
                        event_id: e.event_id.clone(),
                        model: s.model().into(),
                        timestamp_ms: ts + lag_ms,
                        label: Some(truth),
                        value: None,
                        received_at_ms: 0,
                    },
                ));
            }
            inferences.push(e);
        }
    }
    labels.sort_by_key(|(at, _)| *at);
    Stream {
        inferences,
        labels,
        change_ms,
    }
}

/// Sends everything through the collector in arrival order: batches of
/// inferences, and the labels whose arrival time has come between them.
async fn send(grpc: &str, stream: &Stream) -> anyhow::Result<(u64, u64)> {
    let mut client = CollectorClient::connect(grpc.to_string()).await?;
    let mut labels = stream.labels.iter().peekable();
    let (mut sent_i, mut sent_l) = (0u64, 0u64);
    for chunk in stream.inferences.chunks(5_000) {
        let until = chunk.last().map(|e| e.timestamp_ms).unwrap_or(i64::MIN);
        let answer = client
            .ingest_inferences(IngestInferencesRequest { events: chunk.to_vec() })
            .await
            .context("ingest inferences")?
            .into_inner();
        sent_i += u64::from(answer.accepted);
        let mut due = Vec::new();
        while let Some((at, l)) = labels.peek() {
            if *at > until {
                break;
            }
            due.push(l.clone());
            labels.next();
        }
        sent_l += send_labels(&mut client, due).await?;
    }
    let rest: Vec<LabelEvent> = labels.map(|(_, l)| l.clone()).collect();
    sent_l += send_labels(&mut client, rest).await?;
    Ok((sent_i, sent_l))
}

async fn send_labels(
    client: &mut CollectorClient<tonic::transport::Channel>,
    labels: Vec<LabelEvent>,
) -> anyhow::Result<u64> {
    let mut n = 0;
    for chunk in labels.chunks(5_000) {
        let answer = client
            .ingest_labels(IngestLabelsRequest { events: chunk.to_vec() })
            .await
            .context("ingest labels")?
            .into_inner();
        n += u64::from(answer.accepted);
    }
    Ok(n)
}

fn analyzer_config(kafka: &KafkaConfig, name: &str, dir: &std::path::Path) -> mlwatch_analyzer::Config {
    let mut c = mlwatch_analyzer::Config::for_test(kafka, name, dir);
    c.log = Default::default();
    c
}

/// Waits until the analyzer at `admin` consumed `total` messages, then a
/// little more for idle advance and the last evaluations.
async fn wait_consumed(admin: &str, total: u64, give_up: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let text = reqwest::get(format!("http://{admin}/metrics")).await?.text().await?;
        let consumed: f64 = text
            .lines()
            .filter(|l| l.starts_with("mlwatch_analyzer_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if consumed as u64 >= total {
            let took = start.elapsed();
            tokio::time::sleep(Duration::from_secs(20)).await;
            return Ok(took);
        }
        anyhow::ensure!(
            start.elapsed() < give_up,
            "the analyzer consumed {consumed} of {total} in {give_up:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The alerts on `topic`, read for a few seconds.
async fn alerts(kafka: &KafkaConfig, topic: &str) -> Vec<Alert> {
    mlwatch_testkit::read_decoded::<Alert>(kafka, topic, 15, |_| false).await
}

/// What identifies an alert event for the live/catch-up comparison.
fn key(a: &Alert) -> (String, String, String, i64, i32) {
    (
        a.labels.get("model").cloned().unwrap_or_default(),
        a.r#type.clone(),
        a.id.clone(),
        a.starts_at_ms,
        a.status,
    )
}

struct Outcome {
    detected: Vec<(String, Option<(i64, String)>)>,
    false_alarms: Vec<String>,
}

fn judge(s: Scenario, change_ms: i64, alerts: &[Alert]) -> Outcome {
    let mine: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.labels.get("model").is_some_and(|m| m == s.model()) && a.status == AlertStatus::Firing as i32)
        .collect();
    let expected = s.expected();
    let mut detected = Vec::new();
    for (signal, matches) in &expected {
        let first = mine
            .iter()
            .filter(|a| a.starts_at_ms >= change_ms && matches(a))
            .min_by_key(|a| a.starts_at_ms)
            .map(|a| (a.starts_at_ms - change_ms, a.r#type.clone()));
        detected.push((signal.to_string(), first));
    }
    let false_alarms = mine
        .iter()
        .filter(|a| a.starts_at_ms < change_ms || !expected.iter().any(|(_, m)| m(a)))
        .map(|a| {
            let detail = [feature(a), metric(a)]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "{} {} at {:+.1} s",
                a.r#type,
                detail,
                (a.starts_at_ms - change_ms) as f64 / 1000.0
            )
        })
        .collect();
    Outcome { detected, false_alarms }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let suffix = format!("eval-{}", mlwatch_testkit::run_suffix());
    let mut kafka = KafkaConfig {
        bootstrap_servers: args.bootstrap_servers.clone(),
        topics: Topics::with_suffix(&suffix),
        ..KafkaConfig::default()
    };
    let shutdown = CancellationToken::new();
    let dir = tempfile::tempdir()?;
    let collector = mlwatch_collector::start(mlwatch_collector::Config::for_test(&kafka), shutdown.clone()).await?;
    let grpc = format!("http://{}", collector.grpc_addr);

    // Everything in the past: labels arrive up to 30 min after the last
    // prediction, and none may be in the future.
    let span_ms = (args.events * 1000 / RATE) as i64;
    let start_ms = mlwatch_common::now_ms() - span_ms - 2 * 3_600_000;
    anyhow::ensure!(
        WARMUP_MS < 2 * 3_600_000,
        "the warm-up must stay within the collector's past limit"
    );
    println!(
        "mlwatch-eval: {} scenarios x {} events, broker {}",
        ALL.len(),
        args.events,
        args.bootstrap_servers
    );
    let stream = generate(args.events, start_ms);

    // Live: the analyzer reads while the events are sent.
    let live_dir = dir.path().join("live");
    let live = mlwatch_analyzer::start(
        analyzer_config(&kafka, &format!("{suffix}-live"), &live_dir),
        shutdown.clone(),
    )
    .await?;
    for s in [Scenario::Drift, Scenario::Control, Scenario::Concept] {
        events::upload_profile(&format!("http://{}", live.admin_addr), s.model()).await?;
    }
    let sending = Instant::now();
    let (sent_i, sent_l) = send(&grpc, &stream).await?;
    let send_took = sending.elapsed();
    let total = sent_i + sent_l;
    let live_took = wait_consumed(&live.admin_addr.to_string(), total, Duration::from_secs(1800)).await?;
    let live_alerts = alerts(&kafka, &kafka.topics.alerts).await;

    // Catch-up: a second analyzer reads the same topics from scratch and
    // publishes to a topic of its own.
    let alerts_live = kafka.topics.alerts.clone();
    kafka.topics.alerts = format!("{alerts_live}.catchup");
    let catchup_dir = dir.path().join("catchup");
    let catching = Instant::now();
    let catchup = mlwatch_analyzer::start(
        analyzer_config(&kafka, &format!("{suffix}-catchup"), &catchup_dir),
        shutdown.clone(),
    )
    .await?;
    wait_consumed(&catchup.admin_addr.to_string(), total, Duration::from_secs(1800)).await?;
    let catchup_took = catching.elapsed();
    let catchup_alerts = alerts(&kafka, &kafka.topics.alerts).await;
    shutdown.cancel();

    let live_keys: BTreeSet<_> = live_alerts.iter().map(key).collect();
    let catchup_keys: BTreeSet<_> = catchup_alerts.iter().map(key).collect();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "| scenario | signal | detected by | delay (events) | delay (s) | false alarms | catch-up = live |"
    );
    let _ = writeln!(report, "|---|---|---|---|---|---|---|");
    let mut false_list = BTreeMap::new();
    for s in ALL {
        let outcome = judge(s, stream.change_ms, &live_alerts);
        let model_live: BTreeSet<_> = live_keys.iter().filter(|k| k.0 == s.model()).collect();
        let model_catchup: BTreeSet<_> = catchup_keys.iter().filter(|k| k.0 == s.model()).collect();
        let same = if model_live == model_catchup {
            format!("yes ({} alert events)", model_live.len())
        } else {
            format!(
                "no: {} live only, {} catch-up only",
                model_live.difference(&model_catchup).count(),
                model_catchup.difference(&model_live).count()
            )
        };
        let signals = if outcome.detected.is_empty() {
            vec![("(none expected)".to_string(), None)]
        } else {
            outcome.detected.clone()
        };
        for (i, (signal, hit)) in signals.iter().enumerate() {
            let (by, events, secs) = match hit {
                Some((delay_ms, t)) => (
                    t.clone(),
                    format!("{}", (*delay_ms as u64 * RATE / 1000).max(1)),
                    format!("{:.1}", *delay_ms as f64 / 1000.0),
                ),
                None if s == Scenario::Control => ("-".into(), "-".into(), "-".into()),
                None => ("**missed**".into(), "-".into(), "-".into()),
            };
            let (what, fa, same) = if i == 0 {
                (
                    s.what().to_string(),
                    outcome.false_alarms.len().to_string(),
                    same.clone(),
                )
            } else {
                (String::new(), String::new(), String::new())
            };
            let _ = writeln!(
                report,
                "| {what} | {signal} | {by} | {events} | {secs} | {fa} | {same} |"
            );
        }
        if !outcome.false_alarms.is_empty() {
            false_list.insert(s.model(), outcome.false_alarms);
        }
    }
    let mut false_text = String::new();
    for (model, list) in &false_list {
        let _ = writeln!(false_text, "- {model}: {}", list.join("; "));
    }
    if false_text.is_empty() {
        false_text = "none\n".into();
    }
    let doc = format!(
        "# Detection evaluation\n\nWritten by `mlwatch-eval` (`cargo run --release -p mlwatch-bench --bin mlwatch-eval`) \
         against the broker in `KAFKA_BOOTSTRAP_SERVERS`, with the analyzer's default settings.\n\n\
         - {n} inference events per scenario at 1,000 events/s of event time, the change at event {half}, \
         after a 16-minute warm-up at 20 events/s (a model's recent past, which the relative rules compare with); \
         {sent_i} inferences and {sent_l} labels in all, sent through the collector in {send:.1} s\n\
         - live run: the analyzer read them as they were sent ({live:.1} s after the last was sent was \
         included in the wait); catch-up run: a second analyzer read the same topics from scratch in {catchup:.1} s\n\
         - delay: event time from the change to the first alert of the expected kind (its `starts_at`), \
         and the events of the model in that time\n\n{report}\n## False alarms\n\n{false_text}\n",
        n = args.events,
        half = args.events / 2,
        send = send_took.as_secs_f64(),
        live = live_took.as_secs_f64(),
        catchup = catchup_took.as_secs_f64(),
    );
    println!("\n{report}\nfalse alarms:\n{false_text}");
    std::fs::write(&args.out, doc).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    let _ = collector.task.await;
    Ok(())
}
