//! `mlwatch-demo`: the whole mlwatch stack on one machine, with a traffic
//! generator for two models and three incidents injected one after another
//! (a latency surge, an accuracy decay whose labels arrive late, a
//! covariate drift), each told live: detected, paged, remediated, resolved;
//! then a summary table. Needs a Kafka-API broker: `scripts/run.sh` starts
//! the local one.
#![allow(clippy::print_stdout)]

use std::io::Write as _;

use anyhow::Context;
use clap::Parser;
use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_demo::scenario::{self, ScenarioOptions};
use mlwatch_demo::stack::{QualityWindows, Stack, StackOptions};

#[derive(Parser, Debug)]
#[command(version)]
#[command(about = "Run mlwatch locally and watch three incidents travel end to end")]
struct Args {
    /// Kafka-API broker to use.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// Seconds of normal traffic before the first incident.
    #[arg(long, default_value_t = 15)]
    incident_after_secs: u64,
    /// Give up if the incidents are not over within this many seconds of
    /// the first.
    #[arg(long, default_value_t = 280)]
    timeout_secs: u64,
    /// Keep the stack running after the incidents (Ctrl-C to stop).
    #[arg(long)]
    keep_running: bool,
    /// Write the services' admin addresses as a Prometheus file_sd target
    /// list to this file (for scraping the demo with a real Prometheus).
    #[arg(long)]
    targets_file: Option<std::path::PathBuf>,
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
    let suffix = mlwatch_testkit::run_suffix();
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

    let sim = scenario::platform();
    let mut opts = StackOptions::new(kafka.clone(), &suffix);
    let quality = QualityWindows::default();
    opts.quality = Some(quality.clone());
    let stack = Stack::start(opts.clone(), sim.clone())
        .await
        .context("starting the stack (is the broker up? scripts/broker.sh start)")?;
    println!(
        "services: collector http://{} (gRPC {}), analyzer http://{}, alerter http://{}, remediator http://{}",
        stack.collector_http, stack.collector_grpc, stack.analyzer_admin, stack.alerter_admin, stack.remediator_admin
    );
    println!(
        "web UI: http://{}/ui/ (models, history, drift, incident timeline)",
        stack.analyzer_admin
    );
    println!(
        "peers: serving platform (ServingControl gRPC) {}, Slack http://{}, PagerDuty http://{}, mail catcher smtp://{}",
        stack.serving_addr, stack.slack_addr, stack.pagerduty_addr, stack.smtp_addr
    );
    println!(
        "rules (demo windows): p99 > 200 ms over {} s; accuracy decay over {} s of predictions (baseline: each version's first {} labels); drift windows of {} s against each model's first {} events",
        opts.p99_window_secs,
        quality.decay_window_secs,
        quality.reference_labelled,
        quality.drift_window_secs,
        quality.capture_events
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

    let (sent, traffic) = scenario::start_traffic(&stack);
    println!("traffic: fraud v4 50 req/s on 2 replicas (labels 20-50 s late); recsys v12 80 req/s on 3 replicas");

    // Ctrl-C or SIGTERM ends the run (with --keep-running, the only end):
    // the table is printed and the stack drains.
    let stop = mlwatch_common::shutdown::on_signals();
    let scenario_opts = ScenarioOptions {
        first_after_secs: args.incident_after_secs,
        timeout_secs: args.timeout_secs,
        p99_window_secs: opts.p99_window_secs,
        keep_running: args.keep_running,
        ..ScenarioOptions::default()
    };
    let mut print = |line: &str| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let outcomes = scenario::run(
        &stack,
        &kafka,
        &format!("mlwatch-demo-observer-{suffix}"),
        &scenario_opts,
        stop,
        &mut print,
    )
    .await?;

    println!();
    print!("{}", scenario::summary_table(&outcomes));
    println!(
        "events accepted by the collector: {} inferences, {} labels; refused: {}",
        sent.accepted.load(std::sync::atomic::Ordering::Relaxed),
        sent.labels.load(std::sync::atomic::Ordering::Relaxed),
        sent.failed.load(std::sync::atomic::Ordering::Relaxed)
    );
    // The traffic stops first, so nothing is posted to a stopping collector.
    traffic.abort();
    stack.stop().await;
    let done = outcomes.iter().filter(|o| o.complete()).count();
    if done == outcomes.len() {
        println!("all {done} incidents detected, paged, remediated and resolved");
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} incidents did not complete: see the timeline above",
            outcomes.len() - done,
            outcomes.len()
        )
    }
}
