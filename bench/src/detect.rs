//! Detection time: from the first bad event sent to the page received by a
//! real HTTP receiver (the Slack stand-in), at 1,000 events/s over gRPC,
//! for a latency regression, a drift and an accuracy decay.
//!
//! One stack (collector, analyzer, alerter; state in a temporary directory)
//! serves the three scenarios, each on a model of its own. The analyzer
//! runs with its default settings; the alerter routes every alert to the
//! receiver at once (group_wait 0, as the demo does), so the figure is the
//! analyzer's detection plus delivery, not Alertmanager's grouping delay.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::collector_client::CollectorClient;
use mlwatch_proto::v1::{IngestInferencesRequest, IngestLabelsRequest, LabelEvent, feature_value};
use mlwatch_testkit::receiver::HttpReceiver;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::events;

/// Events per 100 ms tick: 1,000 events/s.
const PER_TICK: u64 = 100;
/// The analyzer's default drift window.
pub const DRIFT_WINDOW_SECS: u64 = 60;

/// What goes wrong in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every request takes 450 ms.
    Latency,
    /// Feature `num_00` moves by 2 (its reference is uniform on [-3, 3]).
    Drift,
    /// Labels agree with the prediction 70 % of the time instead of 95 %.
    Accuracy,
}

impl Fault {
    fn model(self) -> &'static str {
        match self {
            Self::Latency => "detect-latency",
            Self::Drift => "detect-drift",
            Self::Accuracy => "detect-accuracy",
        }
    }

    /// Alert types that count as the page for this fault.
    fn alert_types(self) -> &'static [&'static str] {
        match self {
            Self::Latency => &[
                "HighP99Latency",
                "LatencySpike",
                "HighSlowRequestRate",
                "PredictedSlaBreach",
            ],
            Self::Drift => &["FeatureDrift"],
            Self::Accuracy => &["AccuracyDecay", "AccuracyDecayEarlyWarning"],
        }
    }
}

/// The services under measurement.
pub struct Stack {
    grpc: String,
    analyzer_api: String,
    slack: HttpReceiver,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(kafka: KafkaConfig, suffix: &str) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let dir = tempfile::tempdir()?;
        let slack = HttpReceiver::default();
        let (slack_addr, slack_task) = slack.serve(mlwatch_testkit::loopback(), shutdown.clone()).await?;

        let collector = mlwatch_collector::start(mlwatch_collector::Config::for_test(&kafka), shutdown.clone()).await?;

        let group = format!("bench-detect-{suffix}");
        let analyzer = mlwatch_analyzer::Config::for_test(&kafka, &group, dir.path());
        let analyzer = mlwatch_analyzer::start(analyzer, shutdown.clone()).await?;

        let mut alerter = mlwatch_alerter::Config::for_test(&kafka, &group);
        alerter.route = Some(mlwatch_alerter::RouteConfig {
            receiver: Some("slack".into()),
            group_by: Some(vec!["...".into()]),
            group_wait_ms: Some(0),
            group_interval_ms: Some(1000),
            ..Default::default()
        });
        alerter.receivers.insert(
            "slack".into(),
            mlwatch_alerter::Receiver::slack(format!("http://{slack_addr}/services/T000/B000/XXXX"), None),
        );
        let alerter = mlwatch_alerter::start(alerter, shutdown.clone()).await?;

        let mut tasks = vec![slack_task];
        tasks.push(tokio::spawn(async move {
            let _ = collector.task.await;
        }));
        tasks.push(tokio::spawn(async move {
            let _ = analyzer.task.await;
        }));
        tasks.push(tokio::spawn(async move {
            let _ = alerter.task.await;
        }));
        Ok(Self {
            grpc: format!("http://{}", collector.grpc_addr),
            analyzer_api: format!("http://{}", analyzer.admin_addr),
            slack,
            shutdown,
            tasks,
            _dir: dir,
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }

    /// The first page for `fault`'s model of one of its alert types.
    fn paged(&self, fault: Fault) -> Option<String> {
        self.slack.accepted().into_iter().find_map(|r| {
            let body = r.body.to_string();
            if !body.contains(fault.model()) {
                return None;
            }
            fault
                .alert_types()
                .iter()
                .find(|t| body.contains(&format!("{t} (")))
                .map(|t| t.to_string())
        })
    }
}

/// What one scenario measured.
pub struct Detection {
    pub after: Duration,
    pub alert_type: String,
}

/// Sends healthy traffic, then the fault, until the page arrives (or
/// `give_up` after the first bad event).
pub async fn measure(stack: &Stack, fault: Fault, give_up: Duration) -> anyhow::Result<Detection> {
    let model = fault.model();
    if fault == Fault::Drift {
        events::upload_profile(&stack.analyzer_api, model).await?;
    }
    let mut client: CollectorClient<Channel> = CollectorClient::connect(stack.grpc.clone()).await?;
    let names = events::Names::default();
    let mut rng = SmallRng::seed_from_u64(5);
    let mut seq = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let started = Instant::now();
    let healthy_for = Duration::from_secs(15);
    let mut first_bad: Option<Instant> = None;
    let mut labels: Vec<LabelEvent> = Vec::new();
    loop {
        ticker.tick().await;
        let now = mlwatch_common::now_ms();
        let bad = first_bad.is_some() || {
            let due = started.elapsed() >= healthy_for;
            // Drift starts just after a window boundary, so the window it
            // is judged in holds only drifted events.
            let window_ms = DRIFT_WINDOW_SECS as i64 * 1000;
            due && (fault != Fault::Drift || now.rem_euclid(window_ms) < 200)
        };
        let mut batch = Vec::with_capacity(PER_TICK as usize);
        let mut next_labels = Vec::new();
        for _ in 0..PER_TICK {
            seq += 1;
            let latency = if bad && fault == Fault::Latency {
                450.0
            } else {
                15.0 + (seq % 10) as f64
            };
            let mut e = events::inference(&names, &mut rng, model, seq, now, latency);
            if bad
                && fault == Fault::Drift
                && let Some(feature_value::Kind::Number(x)) = e.features.get_mut("num_00").and_then(|v| v.kind.as_mut())
            {
                *x += 2.0;
            }
            if seq.is_multiple_of(2) {
                // The label follows a tick later, right or wrong.
                let p_right = if bad && fault == Fault::Accuracy { 0.70 } else { 0.95 };
                let predicted = e.prediction.as_ref().and_then(|p| p.label.clone()).unwrap_or_default();
                let right = rng.random_bool(p_right);
                let truth = match (predicted.as_str(), right) {
                    (p, true) => p.to_string(),
                    ("1", false) => "0".into(),
                    _ => "1".into(),
                };
                next_labels.push(LabelEvent {
                    event_id: e.event_id.clone(),
                    model: model.into(),
                    timestamp_ms: now + 100,
                    label: Some(truth),
                    value: None,
                    received_at_ms: 0,
                });
            }
            batch.push(e);
        }
        if bad && first_bad.is_none() {
            first_bad = Some(Instant::now());
        }
        client
            .ingest_inferences(IngestInferencesRequest { events: batch })
            .await
            .context("ingest inferences")?;
        if !labels.is_empty() {
            client
                .ingest_labels(IngestLabelsRequest {
                    events: std::mem::take(&mut labels),
                })
                .await
                .context("ingest labels")?;
        }
        labels = next_labels;
        if let Some(alert_type) = stack.paged(fault) {
            let after = first_bad.map(|t| t.elapsed()).unwrap_or_default();
            return Ok(Detection { after, alert_type });
        }
        if first_bad.is_some_and(|t| t.elapsed() > give_up) || started.elapsed() > give_up + Duration::from_secs(120) {
            anyhow::bail!(
                "no page for {fault:?} within {} s of the first bad event",
                give_up.as_secs()
            );
        }
    }
}
