//! The whole mlwatch stack in one process, for the local demo and the
//! integration tests: the four services (each started through its own
//! `start`, exactly as its binary does), the simulated serving platform,
//! local HTTP receivers standing in for Slack and PagerDuty and an SMTP
//! mail catcher, all on loopback ports chosen by the OS, against a real
//! Kafka-API broker. Pages are routed as DESIGN.md says: critical and high
//! to PagerDuty, email and Slack; the rest to Slack.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use tokio::task::JoinHandle;

use mlwatch_testkit::loopback;
use mlwatch_testkit::receiver::HttpReceiver;
use mlwatch_testkit::sim::SimPlatform;
use mlwatch_testkit::smtp::SmtpServer;

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
    /// Short accuracy and drift windows (and rollbacks without approval),
    /// so that decay and drift show within a minute; `None` keeps the
    /// services' defaults.
    pub quality: Option<QualityWindows>,
}

/// Accuracy and drift settings for a demo: the services' defaults judge
/// over hours and days; these judge over seconds. Applied on top of the
/// defaults in [`Stack::start`].
#[derive(Debug, Clone)]
pub struct QualityWindows {
    /// Window judged for accuracy decay, seconds of prediction time.
    pub decay_window_secs: u64,
    /// Accuracy bucket width, seconds.
    pub bucket_secs: u64,
    /// Labelled outcomes forming a version's measured baseline.
    pub reference_labelled: u64,
    /// Labelled outcomes a window needs before it is judged.
    pub min_samples: u64,
    /// How long a decay must last before it fires (its severity is taken
    /// then, once the late labels show the whole drop).
    pub decay_for_secs: u64,
    /// How long a decay must be gone before it resolves.
    pub decay_resolve_for_secs: u64,
    /// Drift evaluation window, seconds.
    pub drift_window_secs: u64,
    /// Fewest events a drift window needs (smaller ones carry over).
    pub drift_min_window_events: u64,
    /// Each model's first this many events become its reference profile.
    pub capture_events: u64,
    /// Seconds between two rows of the series history (the UI's charts).
    pub history_step_secs: u64,
}

impl Default for QualityWindows {
    fn default() -> Self {
        Self {
            decay_window_secs: 60,
            bucket_secs: 5,
            reference_labelled: 500,
            min_samples: 200,
            decay_for_secs: 25,
            decay_resolve_for_secs: 5,
            drift_window_secs: 5,
            drift_min_window_events: 200,
            capture_events: 4000,
            history_step_secs: 5,
        }
    }
}

impl QualityWindows {
    /// Applies these windows to an analyzer configuration. Accuracy alone
    /// is judged (precision, recall, F1 and AUC follow it in this traffic,
    /// and one metric tells one incident once); the early warning is off
    /// for the same reason.
    pub fn apply(&self, analyzer: &mut mlwatch_analyzer::Config) {
        let a = &mut analyzer.accuracy;
        a.decay_window_secs = self.decay_window_secs;
        a.bucket_secs = self.bucket_secs;
        a.reference_labelled = self.reference_labelled;
        a.decay.min_samples = self.min_samples;
        a.for_secs = self.decay_for_secs;
        a.resolve_for_secs = self.decay_resolve_for_secs;
        a.early_warning.enabled = false;
        let t = &mut a.decay.thresholds;
        (t.precision, t.recall, t.f1, t.auc_roc) = (1.0, 1.0, 1.0, 1.0);
        let d = &mut analyzer.drift;
        d.window_secs = self.drift_window_secs;
        d.capture_events = self.capture_events;
        d.rules.defaults.min_window_events = self.drift_min_window_events;
        analyzer.history.step_secs = self.history_step_secs;
    }
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
            quality: None,
        }
    }
}

/// A running stack.
pub struct Stack {
    pub sim: SimPlatform,
    pub slack: HttpReceiver,
    /// PagerDuty Events API v2 stand-in (critical and high alerts).
    pub pagerduty: HttpReceiver,
    /// Mail catcher (critical and high alerts).
    pub smtp: SmtpServer,
    pub serving_addr: SocketAddr,
    pub slack_addr: SocketAddr,
    pub pagerduty_addr: SocketAddr,
    pub smtp_addr: SocketAddr,
    pub collector_http: SocketAddr,
    pub collector_grpc: SocketAddr,
    pub collector_admin: SocketAddr,
    pub analyzer_admin: SocketAddr,
    pub alerter_admin: SocketAddr,
    pub remediator_admin: SocketAddr,
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The analyzer's join store and profile cache for this run (private
    /// topics each run, so nothing to keep): removed by [`Stack::stop`].
    state_dir: std::path::PathBuf,
}

impl Stack {
    /// Starts the receivers, the platform and the four services (the
    /// analyzer last: its web UI is told the alerter's and remediator's
    /// addresses).
    pub async fn start(opts: StackOptions, sim: SimPlatform) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();

        let slack = HttpReceiver::default();
        let (slack_addr, t) = slack
            .serve(loopback(), shutdown.clone())
            .await
            .context("slack receiver")?;
        tasks.push(t);
        let pagerduty = HttpReceiver::default();
        let (pagerduty_addr, t) = pagerduty
            .serve(loopback(), shutdown.clone())
            .await
            .context("pagerduty receiver")?;
        tasks.push(t);
        let smtp = SmtpServer::default();
        let (smtp_addr, t) = smtp.serve(loopback(), shutdown.clone()).await.context("mail catcher")?;
        tasks.push(t);
        let (serving_addr, t) = sim
            .serve(loopback(), shutdown.clone())
            .await
            .context("serving platform")?;
        tasks.push(t);

        let collector = mlwatch_collector::start(mlwatch_collector::Config::for_test(&opts.kafka), shutdown.clone())
            .await
            .context("collector")?;

        let mut alerter = mlwatch_alerter::Config::for_test(&opts.kafka, &opts.group_suffix);
        // DESIGN.md's routing (critical/high also to PagerDuty and email),
        // one group per alert, flushed at once (the demo should not wait
        // Alertmanager's 30 s / 5 min).
        let child = |receiver: &str, matcher: Option<&str>, cont: bool| mlwatch_alerter::RouteConfig {
            receiver: Some(receiver.into()),
            matchers: matcher.map(|m| vec![m.to_string()]).unwrap_or_default(),
            continue_matching: cont,
            ..Default::default()
        };
        let high = r#"severity=~"critical|high""#;
        alerter.route = Some(mlwatch_alerter::RouteConfig {
            receiver: Some("slack".into()),
            group_by: Some(vec!["...".into()]),
            group_wait_ms: Some(0),
            group_interval_ms: Some(1000),
            routes: vec![
                child("pagerduty", Some(high), true),
                child("email", Some(high), true),
                child("slack", None, false),
            ],
            ..Default::default()
        });
        alerter.receivers.insert(
            "slack".into(),
            mlwatch_alerter::Receiver::slack(
                format!("http://{slack_addr}/services/T000/B000/XXXX"),
                opts.slack_channel.clone(),
            ),
        );
        alerter.receivers.insert(
            "pagerduty".into(),
            mlwatch_alerter::Receiver::Pagerduty {
                routing_key: Some(mlwatch_alerter::Secret::new("demo0routing0key0000000000000000")),
                routing_key_file: None,
                url: Some(format!("http://{pagerduty_addr}/v2/enqueue")),
                send_resolved: None,
                send_acknowledged: None,
                rate_limit_ms: None,
            },
        );
        alerter.receivers.insert(
            "email".into(),
            mlwatch_alerter::Receiver::Email {
                host: "127.0.0.1".into(),
                port: Some(smtp_addr.port()),
                tls: mlwatch_alerter::SmtpTls::None,
                ca_file: None,
                username: None,
                password: None,
                password_file: None,
                from: "mlwatch <alerts@mlwatch.local>".into(),
                to: vec!["ml-oncall@mlwatch.local".into()],
                subject_template: None,
                send_resolved: None,
                rate_limit_ms: None,
            },
        );
        let alerter = mlwatch_alerter::start(alerter, shutdown.clone())
            .await
            .context("alerter")?;

        let mut remediator = mlwatch_remediator::Config::for_test(&opts.kafka, &opts.group_suffix, serving_addr);
        if opts.quality.is_some() {
            // The demo shows the closed loop: a rollback needs no approval.
            remediator.guards.require_approval.clear();
        }
        let remediator = mlwatch_remediator::start(remediator, shutdown.clone())
            .await
            .context("remediator")?;

        let state_dir = std::env::temp_dir().join(format!("mlwatch-stack-{}", opts.group_suffix));
        let mut analyzer = mlwatch_analyzer::Config::for_test(&opts.kafka, &opts.group_suffix, &state_dir);
        analyzer.analyzer.eval_interval_ms = opts.eval_interval_ms;
        analyzer.rules.p99_latency.window_secs = opts.p99_window_secs;
        analyzer.rules.p99_latency.resolve_for_secs = opts.resolve_for_secs;
        // The demo tells one incident through one alert; the spike and SLA
        // detectors would page the same surge again under other names.
        analyzer.rules.latency_spike.enabled = false;
        analyzer.rules.sla_prediction.enabled = false;
        if let Some(q) = &opts.quality {
            q.apply(&mut analyzer);
        }
        // The web UI's incident timeline reads the alerter's pages and the
        // remediator's actions through the analyzer (started last for that).
        analyzer.ui.alerter_url = Some(format!("http://{}", alerter.admin_addr));
        analyzer.ui.remediator_url = Some(format!("http://{}", remediator.admin_addr));
        let analyzer = mlwatch_analyzer::start(analyzer, shutdown.clone())
            .await
            .context("analyzer")?;

        let stack = Self {
            sim,
            slack,
            pagerduty,
            smtp,
            serving_addr,
            slack_addr,
            pagerduty_addr,
            smtp_addr,
            collector_http: collector.http_addr,
            collector_grpc: collector.grpc_addr,
            collector_admin: collector.admin_addr,
            analyzer_admin: analyzer.admin_addr,
            alerter_admin: alerter.admin_addr,
            remediator_admin: remediator.admin_addr,
            shutdown,
            tasks,
            state_dir,
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

    /// Starts the traffic generator (every 100 ms) for `models` into this
    /// stack's collector, until the stack shuts down.
    pub fn start_traffic(&self, models: Vec<String>) -> (std::sync::Arc<crate::traffic::Sent>, JoinHandle<()>) {
        crate::traffic::start(
            format!("http://{}", self.collector_http),
            self.sim.clone(),
            models,
            Duration::from_millis(100),
            self.shutdown.clone(),
        )
    }

    /// Signals shutdown and waits (bounded) for every service to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn log_end<E: std::fmt::Display>(name: &str, r: Result<Result<(), E>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(())) => tracing::debug!(service = name, "stopped"),
        Ok(Err(error)) => tracing::error!(service = name, %error, "service failed"),
        Err(error) => tracing::error!(service = name, %error, "service panicked"),
    }
}
