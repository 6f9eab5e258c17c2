//! The mlwatch analyzer: turns the event topics into statistics and alerts.
//!
//! - [`sketch`]: a mergeable relative-error quantile sketch (DDSketch).
//! - [`window`]: event-time sliding windows of latency statistics.
//! - [`rules`]: rule state machines (`for`, hysteresis), fingerprints and
//!   deterministic alert ids.
//! - [`engine`]: per model-version state tying the three together.
//!
//! These are pure. This file wires them to Kafka (an at-least-once consumer
//! of `mlwatch.inference.v1`, poison to the dead-letter topic), a ticker
//! that evaluates rules every second and publishes alert transitions to
//! `mlwatch.alerts.v1`, Prometheus gauges, and the JSON read API
//! (`GET /v1/models`, `GET /v1/models/{model}/latency?window=5m`).

pub mod accuracy;
pub mod drift;
pub mod engine;
pub mod rules;
pub mod sketch;
pub mod window;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::{self, DeadLetter, HandleError, Handler, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_common::telemetry::LogConfig;
use mlwatch_proto::v1::{Alert, InferenceEvent};
use prometheus::{GaugeVec, IntCounter, IntCounterVec, Opts, Registry};
use prost::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::engine::{Engine, EngineConfig, RulesConfig};

pub const SECTIONS: &[&str] = &["kafka", "admin", "log", "analyzer", "rules"];

/// The analyzer's configuration.
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
    pub analyzer: AnalyzerConfig,
    #[serde(default)]
    pub rules: RulesConfig,
}

fn default_admin() -> AdminConfig {
    AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 9102)))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            admin: default_admin(),
            log: LogConfig::default(),
            analyzer: AnalyzerConfig::default(),
            rules: RulesConfig::default(),
        }
    }
}

impl HasLog for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

/// The `[analyzer]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyzerConfig {
    /// Consumer group of the analyzer instances.
    pub group_id: String,
    /// How often rules are evaluated.
    pub eval_interval_ms: u64,
    #[serde(flatten)]
    pub engine: EngineConfig,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            group_id: "mlwatch-analyzer".into(),
            eval_interval_ms: 1000,
            engine: EngineConfig::default(),
        }
    }
}

pub use mlwatch_common::ServiceError as Error;

pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

#[derive(Clone)]
struct Metrics {
    latency: GaugeVec,
    throughput: GaugeVec,
    error_rate: GaugeVec,
    slow_rate: GaugeVec,
    events: IntCounterVec,
    alerts: IntCounterVec,
    poison: IntCounter,
}

impl Metrics {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            latency: GaugeVec::new(
                Opts::new(
                    "ml_model_latency_seconds",
                    "Latency statistics per window from the analyzer's sketches",
                ),
                &["model_name", "model_version", "window", "stat"],
            )?,
            throughput: GaugeVec::new(
                Opts::new("ml_model_throughput_rps", "Requests per second over the window"),
                &["model_name", "model_version", "window"],
            )?,
            error_rate: GaugeVec::new(
                Opts::new("ml_model_error_rate", "Share of failed requests over the window"),
                &["model_name", "model_version", "window"],
            )?,
            slow_rate: GaugeVec::new(
                Opts::new(
                    "ml_model_slow_request_rate",
                    "Share of requests slower than the slow threshold",
                ),
                &["model_name", "model_version", "window"],
            )?,
            events: IntCounterVec::new(
                Opts::new("mlwatch_analyzer_events_total", "Events consumed by topic kind"),
                &["kind"],
            )?,
            alerts: IntCounterVec::new(
                Opts::new("mlwatch_analyzer_alerts_total", "Alert transitions published"),
                &["type", "status"],
            )?,
            poison: IntCounter::new(
                "mlwatch_analyzer_deadlettered_total",
                "Messages moved to the dead-letter topic",
            )?,
        };
        r.register(Box::new(m.latency.clone()))?;
        r.register(Box::new(m.throughput.clone()))?;
        r.register(Box::new(m.error_rate.clone()))?;
        r.register(Box::new(m.slow_rate.clone()))?;
        r.register(Box::new(m.events.clone()))?;
        r.register(Box::new(m.alerts.clone()))?;
        r.register(Box::new(m.poison.clone()))?;
        Ok(m)
    }
}

type Shared = Arc<Mutex<Engine>>;

fn lock(engine: &Shared) -> std::sync::MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

struct EventHandler {
    engine: Shared,
    metrics: Metrics,
}

impl Handler for EventHandler {
    async fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), HandleError> {
        let event: InferenceEvent = kafka::decode(message).inspect_err(|_| self.metrics.poison.inc())?;
        if event.model.is_empty() {
            self.metrics.poison.inc();
            return Err(HandleError::Poison("inference event without a model".into()));
        }
        lock(&self.engine).observe(&event);
        self.metrics.events.with_label_values(&["inference"]).inc();
        Ok(())
    }
}

/// Runs the analyzer until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    mlwatch_common::join(start(config, shutdown).await?.task).await
}

/// Starts the analyzer and returns once it is subscribed and serving.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let registry = Registry::new();
    let metrics = Metrics::register(&registry)?;
    let ready = Readiness::default();
    let topics = config.kafka.topics.clone();
    config
        .kafka
        .ensure_topics(&[&topics.inference, &topics.labels, &topics.alerts, &topics.deadletter])
        .await?;
    let producer = config.kafka.producer()?;
    let consumer = config.kafka.consumer(&config.analyzer.group_id)?;
    consumer.subscribe(&[&topics.inference])?;
    let engine: Shared = Arc::new(Mutex::new(Engine::new(
        config.analyzer.engine.clone(),
        config.rules.clone(),
    )));

    let app = admin::router(registry.clone(), ready.clone()).merge(api(engine.clone()));
    let (admin_addr, admin_task) = admin::serve(config.admin.listen, app, shutdown.clone()).await?;

    let timeout = Duration::from_millis(config.kafka.produce_timeout_ms);
    let dead_letter = DeadLetter::new(producer.clone(), topics.deadletter.clone(), timeout);
    let mut handler = EventHandler {
        engine: engine.clone(),
        metrics: metrics.clone(),
    };
    let consume_shutdown = shutdown.clone();
    let consume_task = tokio::spawn(async move {
        kafka::consume(&consumer, &dead_letter, &consume_shutdown, &mut handler).await;
    });

    let eval = Evaluator {
        engine,
        producer,
        topic: topics.alerts.clone(),
        timeout,
        metrics,
        outbox: Vec::new(),
    };
    let interval = Duration::from_millis(config.analyzer.eval_interval_ms.max(10));
    let eval_task = tokio::spawn(eval.run(interval, shutdown.clone()));

    ready.set(true);
    tracing::info!(%admin_addr, group = %config.analyzer.group_id, "analyzer ready");
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        ready.set(false);
        let _ = consume_task.await;
        let _ = eval_task.await;
        let _ = admin_task.await;
        Ok(())
    });
    Ok(Running { admin_addr, task })
}

/// Evaluates rules on a ticker and publishes alert transitions; alerts not
/// yet acknowledged by the broker stay in an outbox and are retried.
struct Evaluator {
    engine: Shared,
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
    metrics: Metrics,
    outbox: Vec<Alert>,
}

impl Evaluator {
    async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let now = mlwatch_common::now_ms();
            let alerts = {
                let mut engine = lock(&self.engine);
                let alerts = engine.evaluate(now);
                self.export(&engine, now);
                alerts
            };
            self.outbox.extend(alerts);
            self.flush().await;
        }
        self.flush().await;
    }

    async fn flush(&mut self) {
        let mut kept = Vec::new();
        for alert in std::mem::take(&mut self.outbox) {
            let payload = alert.encode_to_vec();
            let record = FutureRecord::to(&self.topic).key(&alert.fingerprint).payload(&payload);
            match self.producer.send(record, self.timeout).await {
                Ok(_) => {
                    let status = mlwatch_proto::v1::AlertStatus::try_from(alert.status)
                        .map(|s| s.name())
                        .unwrap_or("unknown");
                    tracing::info!(
                        alert_type = %alert.r#type,
                        status,
                        fingerprint = %alert.fingerprint,
                        value = alert.value,
                        "alert published"
                    );
                    self.metrics.alerts.with_label_values(&[&alert.r#type, status]).inc();
                }
                Err((error, _)) => {
                    tracing::warn!(%error, "alert publish failed, will retry");
                    kept.push(alert);
                }
            }
        }
        self.outbox = kept;
    }

    fn export(&self, engine: &Engine, now: i64) {
        for &w in engine.windows_secs() {
            let Some(reports) = engine.reports(None, w, now) else {
                continue;
            };
            for r in reports {
                let base = [r.model.as_str(), r.model_version.as_str(), r.window.as_str()];
                let s = &r.summary;
                for (stat, v) in [
                    ("p50", s.p50_ms),
                    ("p90", s.p90_ms),
                    ("p95", s.p95_ms),
                    ("p99", s.p99_ms),
                    ("p999", s.p999_ms),
                    ("mean", s.mean_ms),
                    ("std", s.std_ms),
                    ("min", s.min_ms),
                    ("max", s.max_ms),
                ] {
                    self.metrics
                        .latency
                        .with_label_values(&[base[0], base[1], base[2], stat])
                        .set(v / 1000.0);
                }
                self.metrics.throughput.with_label_values(&base).set(s.throughput_rps);
                self.metrics.error_rate.with_label_values(&base).set(s.error_rate);
                self.metrics.slow_rate.with_label_values(&base).set(s.slow_request_rate);
            }
        }
    }
}

fn api(engine: Shared) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}/latency", get(model_latency))
        .with_state(engine)
}

async fn list_models(State(engine): State<Shared>) -> Response {
    let series = lock(&engine).series();
    axum::Json(serde_json::json!({ "models": series })).into_response()
}

async fn model_latency(
    State(engine): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let window = q.get("window").map(String::as_str).unwrap_or("5m");
    let Some(secs) = engine::parse_window(window) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": format!("window: cannot parse {window:?}; use e.g. 30s, 5m, 1h")})),
        )
            .into_response();
    };
    let engine = lock(&engine);
    let now = mlwatch_common::now_ms();
    match engine.reports(Some(&model), secs, now) {
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": format!("window: {window} is not tracked; tracked: {:?}",
                    engine.windows_secs().iter().map(|s| engine::window_name(*s)).collect::<Vec<_>>())
            })),
        )
            .into_response(),
        Some(r) if r.is_empty() => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("model: no events seen for {model:?}")})),
        )
            .into_response(),
        Some(r) => axum::Json(serde_json::json!({"model": model, "window": window, "versions": r})).into_response(),
    }
}
