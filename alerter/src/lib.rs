//! The mlwatch alerter: consumes `mlwatch.alerts.v1` and tells people, with
//! Alertmanager's semantics and state that survives restarts.
//!
//! Pure modules (no I/O, driven by a clock passed in):
//! - [`matcher`], [`route`]: label matchers and the routing tree.
//! - [`engine`]: grouping, repeat, inhibition, silences, acknowledgement
//!   and escalation, turning alerts and time into [`engine::Notification`]s.
//! - [`slack`], [`pagerduty`], [`email`], [`webhook`], [`template`]: what
//!   each channel is sent.
//!
//! At the edges:
//! - [`store`]: alerts, groups, silences, acks and the notification log in
//!   an embedded redb database; a notification is logged as pending in the
//!   same transaction as the state that made it, before it is sent.
//! - [`channel`], [`deliver`]: receivers' configuration and secrets, and
//!   delivery with timeouts, backoff, `Retry-After` and rate limits.
//! - [`api`]: the JSON API on the admin port.
//!
//! One worker per receiver sends its notifications in order; a ticker
//! flushes groups when the engine says they are due; the Kafka handler
//! stores an alert's offset only after the alert is durably filed.

pub mod alert;
pub mod api;
pub mod channel;
pub mod deliver;
pub mod email;
pub mod engine;
pub mod error;
pub mod inbound;
pub mod matcher;
pub mod pagerduty;
pub mod route;
pub mod slack;
pub mod store;
pub mod template;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::auth::{AuthConfig, Tokens};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::{self, DeadLetter, HandleError, Handler, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_common::telemetry::LogConfig;
use mlwatch_proto::v1::Alert;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::channel::{Receiver, Secret, SmtpTls};
use crate::deliver::RetryPolicy;
use crate::engine::{Engine, EngineConfig, InhibitRule, InhibitRuleConfig, Notification};
pub use crate::error::AlerterError;
pub use crate::route::RouteConfig;
use crate::store::{Outcome, Store};

pub const SECTIONS: &[&str] = &[
    "kafka",
    "admin",
    "log",
    "auth",
    "alerter",
    "route",
    "inhibit",
    "receivers",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Bearer tokens for the `/v1` routes (and their `/api/v1` aliases) (acks, silences); empty: open.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub alerter: AlerterConfig,
    /// The routing tree; unset means DESIGN.md's defaults
    /// ([`RouteConfig::design_defaults`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteConfig>,
    /// Inhibition rules (`[[inhibit]]`).
    #[serde(default)]
    pub inhibit: Vec<InhibitRuleConfig>,
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
            auth: AuthConfig::default(),
            alerter: AlerterConfig::default(),
            route: None,
            inhibit: vec![],
            receivers: BTreeMap::new(),
        }
    }
}

impl Config {
    /// An alerter for a test: `kafka`'s broker and topics, the consumer
    /// group `mlwatch-alerter-{name}`, the admin port on a loopback port the
    /// OS picks, state in memory; no routes or receivers yet. Tests adjust
    /// fields from there.
    pub fn for_test(kafka: &KafkaConfig, name: &str) -> Self {
        let mut config = Self {
            kafka: kafka.clone(),
            admin: AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Self::default()
        };
        config.alerter.group_id = format!("mlwatch-alerter-{name}");
        config.alerter.state_file = None;
        config
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
    /// Kafka consumer group.
    pub group_id: String,
    /// Timeout of one delivery attempt.
    pub timeout_ms: u64,
    /// Attempts per notification on 5xx / 429 / connection errors.
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt, with up to 25 % jitter.
    pub initial_backoff_ms: u64,
    /// Longest delay between retries (without `Retry-After`).
    pub max_backoff_ms: u64,
    /// Longest `Retry-After` honoured as given.
    pub max_retry_after_ms: u64,
    /// The state database (redb). Empty: in memory, lost at exit.
    pub state_file: Option<PathBuf>,
    /// Answered notifications kept in the history.
    pub history_keep: usize,
    /// This alerter's URL, sent as `externalURL` to webhooks.
    pub external_url: String,
    /// How long an alert taken from a Prometheus (`POST /api/v2/alerts`)
    /// without `endsAt` stays firing unless re-sent (Alertmanager's
    /// `resolve_timeout`).
    pub resolve_timeout_ms: u64,
}

impl Default for AlerterConfig {
    fn default() -> Self {
        Self {
            group_id: "mlwatch-alerter".into(),
            timeout_ms: 10_000,
            max_attempts: 6,
            initial_backoff_ms: 250,
            max_backoff_ms: 30_000,
            max_retry_after_ms: 600_000,
            state_file: Some(PathBuf::from("mlwatch-alerter.redb")),
            history_keep: 10_000,
            external_url: String::new(),
            resolve_timeout_ms: 300_000,
        }
    }
}

pub use mlwatch_common::ServiceError as Error;

pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

/// The engine and its store, behind one lock.
pub struct Core {
    pub engine: Engine,
    pub store: Store,
}

/// What the Kafka handler, the ticker, the workers and the API share.
pub struct Shared {
    core: Mutex<Core>,
    /// Receivers that are configured (notifications to others are dropped).
    configured: BTreeSet<String>,
    queues: BTreeMap<String, mpsc::UnboundedSender<Notification>>,
    wake: tokio::sync::Notify,
    /// How long an alert taken from a Prometheus without `endsAt` fires
    /// unless re-sent.
    pub resolve_timeout_ms: u64,
    /// Alerts taken from a Prometheus, by what the engine did with them.
    pub prometheus_alerts: IntCounterVec,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a change to the engine at the current time, commits the new
    /// state with the notifications it made (as pending) in one durable
    /// transaction, then queues them for delivery. If the commit fails the
    /// engine is rolled back and the error returned. Blocking (fsync).
    pub fn apply<T>(
        &self,
        f: impl FnOnce(&mut Engine, i64) -> Result<(T, Vec<Notification>), AlerterError>,
    ) -> Result<T, AlerterError> {
        let now = mlwatch_common::now_ms();
        let mut core = self.lock();
        let Core { engine, store } = &mut *core;
        let (value, mut made) = match f(engine, now) {
            Ok(v) => v,
            Err(e) => {
                engine.state = store.committed().clone();
                return Err(e);
            }
        };
        made.retain(|n| self.configured.contains(&n.receiver));
        if let Err(e) = store.commit(&engine.state, &made, now) {
            engine.state = store.committed().clone();
            return Err(e);
        }
        drop(core);
        for n in made {
            self.queue(n);
        }
        self.wake.notify_one();
        Ok(value)
    }

    fn queue(&self, n: Notification) {
        if let Some(q) = self.queues.get(&n.receiver) {
            let _ = q.send(n);
        }
    }
}

struct AlertHandler {
    shared: Arc<Shared>,
    /// Alerts consumed, by what the engine did with them.
    alerts: IntCounterVec,
}

impl Handler for AlertHandler {
    async fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), HandleError> {
        let alert: Alert = kafka::decode(message)?;
        let record = alert::AlertRecord::from_proto(&alert).map_err(|e| HandleError::Poison(e.to_string()))?;
        let fingerprint = record.fingerprint.clone();
        let shared = self.shared.clone();
        let filed = tokio::task::spawn_blocking(move || {
            shared.apply(|e, now| {
                let what = e.ingest(record, now);
                Ok((what, e.tick(now)))
            })
        })
        .await
        .map_err(|e| HandleError::Transient(format!("ingest task failed: {e}")))?;
        match filed {
            Ok(what) => {
                let outcome = what.name();
                self.alerts.with_label_values(&[outcome]).inc();
                match what {
                    engine::Ingested::Stale => {
                        tracing::info!(%fingerprint, "ignored an alert update older than the one held")
                    }
                    engine::Ingested::UnknownResolved => {
                        tracing::info!(%fingerprint, "ignored the resolve of an alert never seen firing")
                    }
                    _ => tracing::debug!(%fingerprint, outcome, "alert filed"),
                }
                Ok(())
            }
            Err(error) => Err(HandleError::Transient(error.to_string())),
        }
    }
}

/// Sets `mlwatch_alerter_firing_alerts` from the engine; label sets seen
/// before and no longer firing read 0 (the series stays, so dashboards
/// show the alert ending).
fn export_firing(
    engine: &Engine,
    now_ms: i64,
    gauge: &IntGaugeVec,
    seen: &mut BTreeSet<(String, String, &'static str)>,
) {
    let counts = engine.firing_counts(now_ms);
    seen.extend(counts.keys().cloned());
    for key in seen.iter() {
        let (kind, severity, state) = key;
        gauge
            .with_label_values(&[kind.as_str(), severity.as_str(), state])
            .set(counts.get(key).copied().unwrap_or(0));
    }
}

/// Flushes groups whenever the engine says something is due; keeps the
/// firing-alerts gauge current.
async fn ticker(shared: Arc<Shared>, firing: IntGaugeVec, shutdown: CancellationToken) {
    let mut seen = BTreeSet::new();
    loop {
        let now = mlwatch_common::now_ms();
        let next = {
            let core = shared.lock();
            export_firing(&core.engine, now, &firing, &mut seen);
            core.engine.next_wakeup()
        };
        let wait_ms = next.map(|t| (t - now).clamp(0, 1000)).unwrap_or(1000);
        if wait_ms > 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
                _ = shared.wake.notified() => {}
            }
            continue;
        }
        let s = shared.clone();
        let result = tokio::task::spawn_blocking(move || s.apply(|e, now| Ok(((), e.tick(now))))).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot commit flushed groups; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => tracing::error!(%error, "tick task failed"),
        }
    }
}

/// A rate limit shared by the receivers of one endpoint.
type SharedLimit = Arc<tokio::sync::Mutex<deliver::RateLimit>>;

struct Worker {
    name: String,
    resolved: channel::Resolved,
    limit: SharedLimit,
    client: reqwest::Client,
    policy: RetryPolicy,
    shared: Arc<Shared>,
    metric: IntCounterVec,
}

impl Worker {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Notification>, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = async { self.limit.lock().await.acquire().await } => {}
            }
            // A send cut short by shutdown stays pending and is resent at
            // the next start.
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.resolved.channel.send(&self.name, &n, &self.client, self.policy) => r,
            };
            let (outcome, error) = match &result {
                Ok(()) => {
                    tracing::info!(receiver = %self.name, notification = %n.id, kind = ?n.kind, firing = n.firing.len(), resolved = n.resolved.len(), "notification delivered");
                    (Outcome::Delivered, None)
                }
                Err(error) => {
                    tracing::error!(receiver = %self.name, notification = %n.id, %error, "notification failed");
                    (Outcome::Failed, Some(error.to_string()))
                }
            };
            let label = if outcome == Outcome::Delivered {
                "delivered"
            } else {
                "failed"
            };
            self.metric.with_label_values(&[&self.name, label]).inc();
            let shared = self.shared.clone();
            let id = n.id.clone();
            let marked = tokio::task::spawn_blocking(move || {
                shared.lock().store.mark(&id, outcome, error, mlwatch_common::now_ms())
            })
            .await;
            if !matches!(marked, Ok(Ok(()))) {
                tracing::error!(receiver = %self.name, notification = %n.id, "cannot record the outcome; it will be resent after a restart");
            }
        }
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    mlwatch_common::join(start(config, shutdown).await?.task).await
}

fn config_error(e: AlerterError, section: &str) -> Error {
    match e {
        AlerterError::BadConfig { key, reason } => Error::config(key, reason),
        other => Error::config(section, other),
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let route_config = config.route.clone().unwrap_or_else(RouteConfig::design_defaults);
    let route = route::Route::compile(&route_config).map_err(|e| config_error(e, "route"))?;
    let inhibit = config
        .inhibit
        .iter()
        .map(InhibitRule::compile)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error(e, "inhibit"))?;
    let timeout = Duration::from_millis(config.alerter.timeout_ms);
    let mut resolved = BTreeMap::new();
    for (name, receiver) in &config.receivers {
        let r = channel::resolve(name, receiver, timeout, &config.alerter.external_url)
            .map_err(|e| config_error(e, "receivers"))?;
        resolved.insert(name.clone(), r);
    }
    for name in route.receivers() {
        if !resolved.contains_key(&name) {
            tracing::warn!(receiver = %name, "a route names a receiver that is not configured; its notifications are skipped");
        }
    }
    let policies = resolved.iter().map(|(k, r)| (k.clone(), r.policy)).collect();
    let mut store =
        Store::open(config.alerter.state_file.as_deref()).map_err(|e| config_error(e, "alerter.state_file"))?;
    let state = store.load().map_err(|e| config_error(e, "alerter.state_file"))?;
    let pruned = store.prune(config.alerter.history_keep).unwrap_or(0);
    let pending = store
        .log(Some(Outcome::Pending))
        .map_err(|e| config_error(e, "alerter.state_file"))?;
    tracing::info!(
        alerts = state.alerts.len(),
        groups = state.groups.len(),
        silences = state.silences.len(),
        pending = pending.len(),
        pruned,
        "state loaded"
    );

    let registry = Registry::new();
    let notifications = IntCounterVec::new(
        Opts::new(
            "mlwatch_alerter_notifications_total",
            "Notifications by receiver and outcome",
        ),
        &["receiver", "outcome"],
    )?;
    registry.register(Box::new(notifications.clone()))?;
    let alerts_total = IntCounterVec::new(
        Opts::new(
            "mlwatch_alerter_alerts_total",
            "Alerts consumed, by what the engine did with them",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(alerts_total.clone()))?;
    let prometheus_alerts = IntCounterVec::new(
        Opts::new(
            "mlwatch_alerter_prometheus_alerts_total",
            "Alerts taken from a Prometheus (POST /api/v2/alerts), by what the engine did with them",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(prometheus_alerts.clone()))?;
    let firing = IntGaugeVec::new(
        Opts::new(
            "mlwatch_alerter_firing_alerts",
            "Firing alerts by type, severity and state (active, silenced, inhibited)",
        ),
        &["type", "severity", "state"],
    )?;
    registry.register(Box::new(firing.clone()))?;
    let ready = Readiness::default();
    let topics = config.kafka.topics.clone();
    let admin = admin::starting(&config.admin, registry.clone(), shutdown.clone()).await?;
    config
        .kafka
        .await_topics(&[&topics.alerts, &topics.deadletter], &shutdown, |s| admin.status(s))
        .await?;
    let producer = config.kafka.producer()?;
    let consumer = config.kafka.consumer(&config.alerter.group_id)?;
    consumer.subscribe(&[&topics.alerts])?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::config("alerter", format!("http client: {e}")))?;

    let mut queues = BTreeMap::new();
    let mut receivers = Vec::new();
    for name in resolved.keys() {
        let (tx, rx) = mpsc::unbounded_channel();
        queues.insert(name.clone(), tx);
        receivers.push((name.clone(), rx));
    }
    let engine_config = EngineConfig {
        route,
        inhibit,
        policies,
    };
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            engine: Engine::new(engine_config, state),
            store,
        }),
        configured: resolved.keys().cloned().collect(),
        queues,
        wake: tokio::sync::Notify::new(),
        resolve_timeout_ms: config.alerter.resolve_timeout_ms,
        prometheus_alerts,
    });
    // Resend what was logged but not answered before the last stop.
    for entry in pending {
        let n = entry.notification;
        if shared.configured.contains(&n.receiver) {
            tracing::info!(receiver = %n.receiver, notification = %n.id, "resending a notification left pending");
            shared.queue(n);
        } else {
            let _ = shared.lock().store.mark(
                &n.id,
                Outcome::Failed,
                Some(format!("receiver {} is no longer configured", n.receiver)),
                mlwatch_common::now_ms(),
            );
        }
    }
    let policy = RetryPolicy {
        max_attempts: config.alerter.max_attempts.max(1),
        initial_backoff: Duration::from_millis(config.alerter.initial_backoff_ms),
        max_backoff: Duration::from_millis(config.alerter.max_backoff_ms),
        max_retry_after: Duration::from_millis(config.alerter.max_retry_after_ms),
    };
    let mut tasks = Vec::new();
    // Slack allows one message per second per webhook, whichever receiver
    // posts it: receivers sharing an endpoint share the strictest limit.
    let mut limits: BTreeMap<String, SharedLimit> = BTreeMap::new();
    let mut intervals: BTreeMap<String, Duration> = BTreeMap::new();
    for r in resolved.values() {
        let e = intervals.entry(r.channel.endpoint()).or_default();
        *e = (*e).max(r.rate_limit);
    }
    for (endpoint, interval) in intervals {
        limits.insert(
            endpoint,
            Arc::new(tokio::sync::Mutex::new(deliver::RateLimit::new(interval))),
        );
    }
    for (name, rx) in receivers {
        let Some(r) = resolved.remove(&name) else { continue };
        let Some(limit) = limits.get(&r.channel.endpoint()).cloned() else {
            continue;
        };
        let worker = Worker {
            name,
            limit,
            resolved: r,
            client: client.clone(),
            policy,
            shared: shared.clone(),
            metric: notifications.clone(),
        };
        tasks.push(tokio::spawn(worker.run(rx, shutdown.clone())));
    }
    tasks.push(tokio::spawn(ticker(shared.clone(), firing, shutdown.clone())));

    let app = admin::router(registry, ready.clone()).merge(api::router(shared.clone(), Tokens::new(&config.auth)));
    let (admin_addr, admin_task) = admin.serve(app);
    let mut handler = AlertHandler {
        shared,
        alerts: alerts_total,
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
        for t in tasks {
            let _ = t.await;
        }
        let _ = admin_task.await;
        Ok(())
    });
    Ok(Running { admin_addr, task })
}
