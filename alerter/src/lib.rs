//! The mlwatch alerter: consumes `mlwatch.alerts.v1` and tells people.
//!
//! - [`slack`]: Slack incoming-webhook messages (pure).
//! - [`deliver`]: HTTP delivery with timeouts, backoff, jitter and
//!   `Retry-After`.
//!
//! Routing follows DESIGN.md's defaults (critical/high → PagerDuty + Slack +
//! email; medium → Slack; low → the Slack info channel); a route naming a
//! receiver that is not configured is skipped with a warning. Each alert
//! state change (alert id) is delivered at most once per receiver by this
//! process; redeliveries from Kafka are recognised and skipped.

pub mod alert;
pub mod deliver;
pub mod engine;
pub mod error;
pub mod matcher;
pub mod route;
pub mod slack;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::{self, DeadLetter, HandleError, Handler, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_common::telemetry::LogConfig;
use mlwatch_proto::v1::{Alert, Severity};
use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::deliver::RetryPolicy;

pub const SECTIONS: &[&str] = &["kafka", "admin", "log", "alerter", "routing", "receivers"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub alerter: AlerterConfig,
    /// Receivers per severity.
    #[serde(default)]
    pub routing: Routing,
    /// Receivers by name.
    #[serde(default)]
    pub receivers: BTreeMap<String, Receiver>,
}

fn default_admin() -> AdminConfig {
    AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 9103)))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            admin: default_admin(),
            log: LogConfig::default(),
            alerter: AlerterConfig::default(),
            routing: Routing::default(),
            receivers: BTreeMap::new(),
        }
    }
}

impl HasLog for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

/// The `[alerter]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlerterConfig {
    pub group_id: String,
    /// Timeout of one delivery attempt.
    pub timeout_ms: u64,
    /// Attempts per notification on 5xx / 429 / connection errors.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with jitter.
    pub initial_backoff_ms: u64,
    /// Send a notification when an alert resolves.
    pub send_resolved: bool,
}

impl Default for AlerterConfig {
    fn default() -> Self {
        Self {
            group_id: "mlwatch-alerter".into(),
            timeout_ms: 10_000,
            max_attempts: 6,
            initial_backoff_ms: 250,
            send_resolved: true,
        }
    }
}

/// Receivers per severity (DESIGN.md defaults).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Routing {
    pub critical: Vec<String>,
    pub high: Vec<String>,
    pub medium: Vec<String>,
    pub low: Vec<String>,
}

impl Default for Routing {
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Self {
            critical: v(&["pagerduty", "slack", "email"]),
            high: v(&["pagerduty", "slack", "email"]),
            medium: v(&["slack"]),
            low: v(&["slack-info"]),
        }
    }
}

impl Routing {
    fn receivers(&self, severity: Severity) -> &[String] {
        match severity {
            Severity::Critical => &self.critical,
            Severity::High => &self.high,
            Severity::Medium => &self.medium,
            Severity::Low | Severity::Unspecified => &self.low,
        }
    }
}

/// A receiver. Secrets (webhook URLs) come inline or from a file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum Receiver {
    /// A Slack incoming webhook.
    Slack {
        #[serde(default)]
        webhook_url: Option<String>,
        #[serde(default)]
        webhook_url_file: Option<PathBuf>,
        #[serde(default)]
        channel: Option<String>,
    },
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Slack { channel, .. } => f
                .debug_struct("Slack")
                .field("webhook_url", &"<redacted>")
                .field("channel", channel)
                .finish(),
        }
    }
}

pub use mlwatch_common::ServiceError as Error;

/// A receiver ready to send, its secret resolved.
enum Channel {
    Slack { url: String, channel: Option<String> },
}

fn resolve(name: &str, receiver: &Receiver) -> Result<Channel, Error> {
    let bad = |reason: String| Error::config(format!("receivers.{name}"), reason);
    match receiver {
        Receiver::Slack {
            webhook_url,
            webhook_url_file,
            channel,
        } => {
            let url = match (webhook_url, webhook_url_file) {
                (Some(u), None) => u.clone(),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .map_err(|e| bad(format!("webhook_url_file {}: {e}", p.display())))?
                    .trim()
                    .to_string(),
                _ => return Err(bad("give exactly one of webhook_url, webhook_url_file".into())),
            };
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(bad("webhook_url must be an http(s) URL".into()));
            }
            Ok(Channel::Slack {
                url,
                channel: channel.clone(),
            })
        }
    }
}

pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

struct AlertHandler {
    client: reqwest::Client,
    channels: BTreeMap<String, Channel>,
    routing: Routing,
    policy: RetryPolicy,
    send_resolved: bool,
    /// (alert id, receiver) pairs already delivered, newest last.
    delivered: HashSet<(String, String)>,
    order: VecDeque<(String, String)>,
    warned: HashSet<String>,
    notifications: IntCounterVec,
}

const DELIVERED_MEMORY: usize = 100_000;

impl Handler for AlertHandler {
    async fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), HandleError> {
        let alert: Alert = kafka::decode(message)?;
        if alert.fingerprint.is_empty() || alert.id.is_empty() {
            return Err(HandleError::Poison("alert without fingerprint or id".into()));
        }
        let status = mlwatch_proto::v1::AlertStatus::try_from(alert.status).unwrap_or_default();
        if status == mlwatch_proto::v1::AlertStatus::Resolved && !self.send_resolved {
            return Ok(());
        }
        let severity = Severity::try_from(alert.severity).unwrap_or(Severity::Unspecified);
        for name in self.routing.receivers(severity).to_vec() {
            let key = (alert.id.clone(), name.clone());
            if self.delivered.contains(&key) {
                continue;
            }
            let Some(channel) = self.channels.get(&name) else {
                if self.warned.insert(name.clone()) {
                    tracing::warn!(receiver = %name, "route names a receiver that is not configured; skipping it");
                }
                continue;
            };
            let result = match channel {
                Channel::Slack { url, channel } => {
                    deliver::post_json(
                        &self.client,
                        url,
                        &slack::message(&alert, channel.as_deref()),
                        self.policy,
                    )
                    .await
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(receiver = %name, alert_type = %alert.r#type, status = status.name(), fingerprint = %alert.fingerprint, "notification delivered");
                    self.notifications.with_label_values(&[&name, "delivered"]).inc();
                }
                Err(error) => {
                    tracing::error!(receiver = %name, %error, fingerprint = %alert.fingerprint, "notification failed");
                    self.notifications.with_label_values(&[&name, "failed"]).inc();
                }
            }
            self.delivered.insert(key.clone());
            self.order.push_back(key);
            while self.order.len() > DELIVERED_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.delivered.remove(&old);
                }
            }
        }
        Ok(())
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    mlwatch_common::join(start(config, shutdown).await?.task).await
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let mut channels = BTreeMap::new();
    for (name, receiver) in &config.receivers {
        channels.insert(name.clone(), resolve(name, receiver)?);
    }
    let registry = Registry::new();
    let notifications = IntCounterVec::new(
        Opts::new(
            "mlwatch_alerter_notifications_total",
            "Notifications by receiver and outcome",
        ),
        &["receiver", "outcome"],
    )?;
    registry.register(Box::new(notifications.clone()))?;
    let ready = Readiness::default();
    let topics = config.kafka.topics.clone();
    config
        .kafka
        .ensure_topics(&[&topics.alerts, &topics.deadletter])
        .await?;
    let producer = config.kafka.producer()?;
    let consumer = config.kafka.consumer(&config.alerter.group_id)?;
    consumer.subscribe(&[&topics.alerts])?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.alerter.timeout_ms))
        .build()
        .map_err(|e| Error::config("alerter", format!("http client: {e}")))?;
    let (admin_addr, admin_task) = admin::serve(
        config.admin.listen,
        admin::router(registry, ready.clone()),
        shutdown.clone(),
    )
    .await?;
    let mut handler = AlertHandler {
        client,
        channels,
        routing: config.routing.clone(),
        policy: RetryPolicy {
            max_attempts: config.alerter.max_attempts.max(1),
            initial_backoff: Duration::from_millis(config.alerter.initial_backoff_ms),
            ..RetryPolicy::default()
        },
        send_resolved: config.alerter.send_resolved,
        delivered: HashSet::new(),
        order: VecDeque::new(),
        warned: HashSet::new(),
        notifications,
    };
    let dead_letter = DeadLetter::new(
        producer,
        topics.deadletter.clone(),
        Duration::from_millis(config.kafka.produce_timeout_ms),
    );
    ready.set(true);
    tracing::info!(%admin_addr, receivers = ?config.receivers.keys().collect::<Vec<_>>(), "alerter ready");
    let task = tokio::spawn(async move {
        kafka::consume(&consumer, &dead_letter, &shutdown, &mut handler).await;
        ready.set(false);
        let _ = admin_task.await;
        Ok(())
    });
    Ok(Running { admin_addr, task })
}
