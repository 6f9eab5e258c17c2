//! The whole mlwatch stack in one process, for the local demo and the
//! integration tests: the four services (each started through its own
//! `start`, exactly as its binary does), the simulated serving platform and
//! a local HTTP receiver standing in for Slack, all on loopback ports
//! chosen by the OS, against a real Kafka-API broker.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use tokio::task::JoinHandle;

use crate::receiver::HttpReceiver;
use crate::sim::SimPlatform;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Knobs for a stack; the defaults suit a demo that should show an
/// incident within a minute.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub kafka: KafkaConfig,
    /// Suffix of the consumer groups (unique per test).
    pub group_suffix: String,
    /// Window of the p99 rule, seconds.
    pub p99_window_secs: u64,
    /// Seconds the p99 must stay low before the alert resolves.
    pub resolve_for_secs: u64,
    pub eval_interval_ms: u64,
    /// Channel named in Slack messages.
    pub slack_channel: Option<String>,
}

impl StackOptions {
    pub fn new(kafka: KafkaConfig, group_suffix: &str) -> Self {
        Self {
            kafka,
            group_suffix: group_suffix.to_string(),
            p99_window_secs: 20,
            resolve_for_secs: 5,
            eval_interval_ms: 500,
            slack_channel: None,
        }
    }
}

/// A running stack.
pub struct Stack {
    pub sim: SimPlatform,
    pub slack: HttpReceiver,
    pub serving_addr: SocketAddr,
    pub slack_addr: SocketAddr,
    pub collector_http: SocketAddr,
    pub collector_grpc: SocketAddr,
    pub collector_admin: SocketAddr,
    pub analyzer_admin: SocketAddr,
    pub alerter_admin: SocketAddr,
    pub remediator_admin: SocketAddr,
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Starts the receivers, the platform and the four services.
    pub async fn start(opts: StackOptions, sim: SimPlatform) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let slack = HttpReceiver::default();
        let (slack_addr, t) = slack
            .serve(loopback(), shutdown.clone())
            .await
            .context("slack receiver")?;
        tasks.push(t);
        let (serving_addr, t) = sim
            .serve(loopback(), shutdown.clone())
            .await
            .context("serving platform")?;
        tasks.push(t);

        let mut collector = mlwatch_collector::Config::default();
        collector.kafka = opts.kafka.clone();
        collector.admin = AdminConfig::on(loopback());
        collector.http.listen = loopback();
        collector.grpc.listen = loopback();
        let collector = mlwatch_collector::start(collector, shutdown.clone())
            .await
            .context("collector")?;

        let mut analyzer = mlwatch_analyzer::Config::default();
        analyzer.kafka = opts.kafka.clone();
        analyzer.admin = AdminConfig::on(loopback());
        analyzer.analyzer.group_id = format!("mlwatch-analyzer-{}", opts.group_suffix);
        analyzer.accuracy.join.dir = std::env::temp_dir().join(format!("mlwatch-join-{}", opts.group_suffix));
        analyzer.analyzer.eval_interval_ms = opts.eval_interval_ms;
        analyzer.rules.p99_latency.window_secs = opts.p99_window_secs;
        analyzer.rules.p99_latency.resolve_for_secs = opts.resolve_for_secs;
        // The demo tells one incident through one alert; the spike and SLA
        // detectors would page the same surge again under other names.
        analyzer.rules.latency_spike.enabled = false;
        analyzer.rules.sla_prediction.enabled = false;
        let analyzer = mlwatch_analyzer::start(analyzer, shutdown.clone())
            .await
            .context("analyzer")?;

        let mut alerter = mlwatch_alerter::Config::default();
        alerter.kafka = opts.kafka.clone();
        alerter.admin = AdminConfig::on(loopback());
        alerter.alerter.group_id = format!("mlwatch-alerter-{}", opts.group_suffix);
        // Only the Slack stand-in is wired in this stack: route every
        // severity to it, one group per alert, flushed at once (the demo
        // should not wait Alertmanager's 30 s / 5 min).
        alerter.route = Some(mlwatch_alerter::RouteConfig {
            receiver: Some("slack".into()),
            group_by: Some(vec!["...".into()]),
            group_wait_ms: Some(0),
            group_interval_ms: Some(1000),
            ..Default::default()
        });
        alerter.alerter.state_file = None;
        alerter.receivers.insert(
            "slack".into(),
            mlwatch_alerter::Receiver::slack(
                format!("http://{slack_addr}/services/T000/B000/XXXX"),
                opts.slack_channel.clone(),
            ),
        );
        let alerter = mlwatch_alerter::start(alerter, shutdown.clone())
            .await
            .context("alerter")?;

        let mut remediator = mlwatch_remediator::Config::default();
        remediator.kafka = opts.kafka.clone();
        remediator.admin = AdminConfig::on(loopback());
        remediator.remediator.group_id = format!("mlwatch-remediator-{}", opts.group_suffix);
        remediator.serving.endpoint = format!("http://{serving_addr}");
        let remediator = mlwatch_remediator::start(remediator, shutdown.clone())
            .await
            .context("remediator")?;

        let stack = Self {
            sim,
            slack,
            serving_addr,
            slack_addr,
            collector_http: collector.http_addr,
            collector_grpc: collector.grpc_addr,
            collector_admin: collector.admin_addr,
            analyzer_admin: analyzer.admin_addr,
            alerter_admin: alerter.admin_addr,
            remediator_admin: remediator.admin_addr,
            shutdown,
            tasks,
        };
        let mut tasks = stack.tasks;
        for (name, t) in [
            (
                "collector",
                tokio::spawn(async move { log_end("collector", collector.task.await) }),
            ),
            (
                "analyzer",
                tokio::spawn(async move { log_end("analyzer", analyzer.task.await) }),
            ),
            (
                "alerter",
                tokio::spawn(async move { log_end("alerter", alerter.task.await) }),
            ),
            (
                "remediator",
                tokio::spawn(async move { log_end("remediator", remediator.task.await) }),
            ),
        ] {
            let _ = name;
            tasks.push(t);
        }
        Ok(Self { tasks, ..stack })
    }

    /// Signals shutdown and waits (bounded) for every service to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

fn log_end<E: std::fmt::Display>(name: &str, r: Result<Result<(), E>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(())) => tracing::debug!(service = name, "stopped"),
        Ok(Err(error)) => tracing::error!(service = name, %error, "service failed"),
        Err(error) => tracing::error!(service = name, %error, "service panicked"),
    }
}
