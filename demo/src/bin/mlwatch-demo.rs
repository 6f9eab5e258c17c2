//! `mlwatch-demo`: the whole mlwatch stack on one machine, with a traffic
//! generator that causes one incident (a traffic surge that overloads a
//! model) and a live account of it being detected, paged, remediated and
//! resolved. Needs a Kafka-API broker: `scripts/run.sh` starts the local one.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_demo::sim::{ModelSim, SimPlatform};
use mlwatch_demo::stack::{Stack, StackOptions};
use mlwatch_proto::v1::{ActionDecision, ActionRecord, Alert, AlertStatus};
use prost::Message as _;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};

#[derive(Parser, Debug)]
#[command(about = "Run mlwatch locally and watch one incident travel end to end")]
struct Args {
    /// Kafka-API broker to use.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// Seconds of normal traffic before the incident.
    #[arg(long, default_value_t = 15)]
    incident_after_secs: u64,
    /// Give up if the incident is not resolved within this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout_secs: u64,
    /// Keep the stack running after the incident (Ctrl-C to stop).
    #[arg(long)]
    keep_running: bool,
    /// Write the services' admin addresses as a Prometheus file_sd target
    /// list to this file (for scraping the demo with a real Prometheus).
    #[arg(long)]
    targets_file: Option<std::path::PathBuf>,
}

struct Clock(Instant);

impl Clock {
    fn stamp(&self) -> String {
        let t = self.0.elapsed().as_secs_f64();
        format!("[{:>02}:{:>04.1}]", (t / 60.0) as u64, t % 60.0)
    }
    fn say(&self, what: &str, text: impl std::fmt::Display) {
        println!("{} {:<10} {}", self.stamp(), what, text);
    }
}

#[derive(Default)]
struct Milestones {
    detected: Option<Duration>,
    paged: Option<Duration>,
    action: Option<(Duration, String)>,
    resolved: Option<Duration>,
    resolve_paged: Option<Duration>,
    verified: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let clock = Clock(Instant::now());
    let suffix = mlwatch_demo::run_suffix();
    let kafka = KafkaConfig {
        bootstrap_servers: args.bootstrap_servers.clone(),
        topics: Topics::with_suffix(&format!("demo-{suffix}")),
        partitions: 3,
        ..KafkaConfig::default()
    };
    println!(
        "mlwatch demo: broker {}, topics mlwatch.*.v1.demo-{suffix}",
        kafka.bootstrap_servers
    );

    let sim = SimPlatform::default();
    sim.add_model(ModelSim::new("fraud", "v3", 2, 50.0));
    sim.add_model(ModelSim::new("recsys", "v12", 3, 80.0));
    let opts = StackOptions::new(kafka.clone(), &suffix);
    let stack = Stack::start(opts.clone(), sim.clone())
        .await
        .context("starting the stack (is the broker up? scripts/broker.sh start)")?;
    clock.say(
        "STARTED",
        format!(
            "collector http://{} (gRPC {}), analyzer http://{}, alerter http://{}, remediator http://{}",
            stack.collector_http,
            stack.collector_grpc,
            stack.analyzer_admin,
            stack.alerter_admin,
            stack.remediator_admin
        ),
    );
    clock.say(
        "",
        format!(
            "serving platform (ServingControl gRPC) {}, Slack stand-in http://{}; rule: p99 > 200 ms over {} s",
            stack.serving_addr, stack.slack_addr, opts.p99_window_secs
        ),
    );

    if let Some(path) = &args.targets_file {
        let targets = serde_json::json!([
            {"targets": [stack.collector_admin.to_string()], "labels": {"job": "mlwatch-collector"}},
            {"targets": [stack.analyzer_admin.to_string()], "labels": {"job": "mlwatch-analyzer"}},
            {"targets": [stack.alerter_admin.to_string()], "labels": {"job": "mlwatch-alerter"}},
            {"targets": [stack.remediator_admin.to_string()], "labels": {"job": "mlwatch-remediator"}},
        ]);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&targets)?).context("writing the targets file")?;
        std::fs::rename(&tmp, path).context("writing the targets file")?;
    }

    let observer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("mlwatch-demo-observer-{suffix}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .context("observer consumer")?;
    observer.subscribe(&[&kafka.topics.alerts, &kafka.topics.actions])?;
    // Join the group before the traffic starts, so every alert is shown
    // as it happens.
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while observer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(200), observer.recv()).await;
        }
    })
    .await;
    if joined.is_err() {
        clock.say(
            "WARNING",
            "the observer did not join its consumer group within 30 s; alert lines may lag",
        );
    }

    let (sent, _traffic) = mlwatch_demo::traffic::start(
        format!("http://{}", stack.collector_http),
        sim.clone(),
        vec!["fraud".into(), "recsys".into()],
        Duration::from_millis(100),
        stack.shutdown.clone(),
    );
    clock.say(
        "TRAFFIC",
        "fraud v3: 50 req/s on 2 replicas; recsys v12: 80 req/s on 3 replicas",
    );

    let http = reqwest::Client::new();
    let mut status_tick = tokio::time::interval(Duration::from_secs(5));
    let incident_at = tokio::time::sleep(Duration::from_secs(args.incident_after_secs));
    tokio::pin!(incident_at);
    let deadline = tokio::time::sleep(Duration::from_secs(args.incident_after_secs + args.timeout_secs));
    tokio::pin!(deadline);
    let mut incident_start: Option<Instant> = None;
    let mut incident_ms: i64 = 0;
    let mut m = Milestones::default();
    let mut pages_seen = 0usize;
    let mut calls_seen = 0usize;
    let since = |start: Option<Instant>| start.map(|s| s.elapsed()).unwrap_or_default();

    loop {
        tokio::select! {
            _ = &mut incident_at, if incident_start.is_none() => {
                sim.set_load("fraud", 114.0);
                incident_start = Some(Instant::now());
                incident_ms = mlwatch_common::now_ms();
                clock.say("INCIDENT", "traffic surge on fraud: 50 -> 114 req/s; 2 replicas are now ~95 % busy");
            }
            _ = status_tick.tick() => {
                for model in ["fraud", "recsys"] {
                    let Some(s) = sim.model(model) else { continue };
                    let url = format!("http://{}/v1/models/{model}/latency?window={}s", stack.analyzer_admin, opts.p99_window_secs);
                    let p99 = match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => r.json::<serde_json::Value>().await.ok()
                            .and_then(|v| v["versions"][0]["p99_ms"].as_f64()),
                        _ => None,
                    };
                    clock.say("STATUS", format!(
                        "{model:<7} {:>5.0} req/s  {} replicas  p99 {}",
                        s.load_rps, s.deployment.replicas,
                        p99.map(|p| format!("{p:.0} ms")).unwrap_or_else(|| "-".into()),
                    ));
                }
            }
            msg = observer.recv() => {
                let Ok(msg) = msg else { continue };
                let payload = msg.payload().unwrap_or_default();
                if msg.topic() == kafka.topics.alerts {
                    if let Ok(a) = Alert::decode(payload) {
                        let status = AlertStatus::try_from(a.status).unwrap_or_default();
                        clock.say("ALERT", format!("{} {} on {} {}: {}", status.name().to_uppercase(), a.r#type,
                            a.labels.get("model").map(String::as_str).unwrap_or("-"),
                            a.labels.get("model_version").map(String::as_str).unwrap_or("-"),
                            a.annotations.get("summary").map(String::as_str).unwrap_or("")));
                        // Measured from the alert's own timestamp, not from
                        // when this observer read it.
                        let at = Duration::from_millis(u64::try_from(a.generated_at_ms - incident_ms).unwrap_or(0));
                        match status {
                            AlertStatus::Firing if m.detected.is_none() && incident_ms > 0 => m.detected = Some(at),
                            AlertStatus::Resolved if m.resolved.is_none() && incident_ms > 0 => m.resolved = Some(at),
                            _ => {}
                        }
                    }
                } else if let Ok(r) = ActionRecord::decode(payload) {
                    let decision = ActionDecision::try_from(r.decision).unwrap_or_default();
                    clock.say("ACTION", format!("{} {}: {}", decision.as_str_name().trim_start_matches("ACTION_DECISION_"), r.model, r.reason));
                    if decision == ActionDecision::Verified && m.verified.is_none() {
                        m.verified = Some(since(incident_start));
                    }
                }
            }
            received = stack.slack.wait_accepted(pages_seen) => {
                pages_seen += 1;
                let text = received.body["text"].as_str().unwrap_or_default().to_string();
                clock.say("PAGED", format!("Slack <- {text}"));
                if text.starts_with("[FIRING]") && m.paged.is_none() {
                    m.paged = Some(since(incident_start));
                }
                if text.starts_with("[RESOLVED]") && m.resolve_paged.is_none() {
                    m.resolve_paged = Some(since(incident_start));
                }
            }
            _ = sim.wait_for_calls(calls_seen) => {
                for call in sim.calls().into_iter().skip(calls_seen) {
                    clock.say("PLATFORM", format!("ServingControl.{} {} {} (request id {}{})", call.method, call.model, call.detail,
                        &call.request_id[..12.min(call.request_id.len())], if call.duplicate { ", duplicate ignored" } else { "" }));
                    if m.action.is_none() {
                        m.action = Some((since(incident_start), format!("{} {}", call.method, call.detail)));
                    }
                    calls_seen += 1;
                }
            }
            _ = &mut deadline => {
                clock.say("TIMEOUT", "the incident did not complete in time");
                break;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
        if m.resolved.is_some() && m.resolve_paged.is_some() && m.verified.is_some() && !args.keep_running {
            break;
        }
    }

    let fmt = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    println!();
    println!(
        "{:<28} {:>13} {:>11} {:<26} {:>13}",
        "incident", "detected after", "paged after", "action", "resolved after"
    );
    println!(
        "{:<28} {:>13} {:>11} {:<26} {:>13}",
        "latency surge (fraud v3)",
        fmt(m.detected),
        fmt(m.paged),
        m.action
            .as_ref()
            .map(|(d, a)| format!("{a} @ {:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into()),
        fmt(m.resolved),
    );
    println!(
        "events accepted by the collector: {}, refused: {}",
        sent.accepted.load(std::sync::atomic::Ordering::Relaxed),
        sent.failed.load(std::sync::atomic::Ordering::Relaxed)
    );
    let ok = m.detected.is_some() && m.paged.is_some() && m.action.is_some() && m.resolved.is_some();
    stack.stop().await;
    if ok {
        println!("incident detected, paged, remediated and resolved");
        Ok(())
    } else {
        anyhow::bail!("the incident did not complete: see the timeline above")
    }
}
