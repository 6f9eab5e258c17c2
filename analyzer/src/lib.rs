//! The mlwatch analyzer: turns the event topics into statistics and alerts.
//!
//! Pure modules (no I/O, no clock):
//! - [`sketch`]: a mergeable relative-error quantile sketch (DDSketch).
//! - [`window`]: event-time sliding windows of latency statistics.
//! - [`rules`]: threshold rule configuration, rule state machines (`for`,
//!   hysteresis), fingerprints and deterministic alert ids.
//! - [`detectors`]: latency spikes (z-score) and SLA-breach prediction.
//! - [`wire`]: decoding of inference events into reused memory.
//! - [`engine`]: per-partition state ([`engine::PartitionState`]) tying them
//!   together, evaluated on event time.
//!
//! I/O at the edges:
//! - [`checkpoint`]: per-partition state and offset on a compacted topic.
//! - [`consumer`]: the consume loop that owns partitions, restores and
//!   checkpoints their state, dead-letters poison and publishes alerts to
//!   `mlwatch.alerts.v1` before the checkpoint that reflects them.
//! - [`profiles`]: drift reference profiles on a compacted topic, read in
//!   full and followed by every instance; `drift_api`: their HTTP API and
//!   the drift reports per model version.
//! - this file: configuration, Prometheus gauges and the JSON read API
//!   (`GET /v1/models`, `GET /v1/models/{model}/latency?window=5m`).

pub mod accuracy;
pub mod checkpoint;
pub mod consumer;
pub mod detectors;
pub mod drift;
mod drift_api;
pub mod engine;
mod for_test;
pub mod profiles;
pub mod rules;
pub mod sketch;
pub mod trackers;
pub mod window;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::{DeadLetter, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_common::telemetry::LogConfig;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use rdkafka::consumer::Consumer;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::accuracy::export::AccuracyMetrics;
use crate::accuracy::tracker::AccuracyConfig;
use crate::checkpoint::CheckpointStore;
use crate::consumer::{LoopConfig, Shared};
use crate::engine::{Engine, EngineConfig, RulesConfig};
use crate::profiles::ProfileTopic;
use crate::trackers::{DriftSection, Trackers};

pub const SECTIONS: &[&str] = &["kafka", "admin", "log", "analyzer", "rules", "accuracy", "drift"];

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
    /// Label join, accuracy metrics and decay (docs/accuracy.md).
    #[serde(default)]
    pub accuracy: AccuracyConfig,
    /// Drift and data quality against reference profiles (docs/drift.md).
    #[serde(default)]
    pub drift: DriftSection,
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
            accuracy: AccuracyConfig::default(),
            drift: DriftSection::default(),
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
    /// How often rules are evaluated, in event time (and how often idle
    /// partitions and gauges are refreshed, in wall time).
    pub eval_interval_ms: u64,
    /// Compacted topic holding each partition's checkpoint.
    pub state_topic: String,
    /// How often changed partition state is checkpointed (also on revoke
    /// and at shutdown).
    pub checkpoint_interval_secs: u64,
    /// After this long without a message on a partition, its event-time
    /// clock follows wall time, so silent models are still judged (0 = off).
    pub idle_advance_after_secs: u64,
    /// Windows, lateness, slow threshold and segments (same section).
    #[serde(flatten)]
    pub engine: EngineConfig,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        Self {
            group_id: "mlwatch-analyzer".into(),
            eval_interval_ms: 1000,
            state_topic: "mlwatch.analyzer.state.v1".into(),
            checkpoint_interval_secs: 5,
            idle_advance_after_secs: 5,
            engine: EngineConfig::default(),
        }
    }
}

pub use mlwatch_common::ServiceError as Error;

pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

/// The analyzer's metrics, registered on the service's registry.
#[derive(Clone)]
pub struct Metrics {
    latency: GaugeVec,
    throughput: GaugeVec,
    error_rate: GaugeVec,
    slow_rate: GaugeVec,
    late: GaugeVec,
    state_bytes: IntGauge,
    partitions: IntGauge,
    series: IntGauge,
    pub(crate) events: IntCounterVec,
    pub(crate) alerts: IntCounterVec,
    pub(crate) poison: IntCounter,
    pub(crate) duplicates: IntCounter,
    pub(crate) checkpoints: IntCounterVec,
    /// `ml_model_accuracy` and the label join's metrics.
    pub(crate) accuracy: Arc<std::sync::Mutex<AccuracyMetrics>>,
    pub(crate) drift_score: GaugeVec,
    pub(crate) quality_score: GaugeVec,
}

impl Metrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let series = ["model_name", "model_version", "window"];
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
                &series,
            )?,
            error_rate: GaugeVec::new(
                Opts::new("ml_model_error_rate", "Share of failed requests over the window"),
                &series,
            )?,
            slow_rate: GaugeVec::new(
                Opts::new(
                    "ml_model_slow_request_rate",
                    "Share of requests slower than the slow threshold",
                ),
                &series,
            )?,
            late: GaugeVec::new(
                Opts::new(
                    "mlwatch_analyzer_late_events",
                    "Events that arrived beyond the allowed lateness, per series and window (kept with the state)",
                ),
                &series,
            )?,
            state_bytes: IntGauge::new("mlwatch_analyzer_state_bytes", "Approximate bytes of state held")?,
            partitions: IntGauge::new("mlwatch_analyzer_owned_partitions", "Source partitions owned")?,
            series: IntGauge::new("mlwatch_analyzer_series", "Series (model, version, segment) tracked")?,
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
            duplicates: IntCounter::new(
                "mlwatch_analyzer_duplicates_skipped_total",
                "Redelivered messages skipped because their checkpoint already holds them",
            )?,
            checkpoints: IntCounterVec::new(
                Opts::new("mlwatch_analyzer_checkpoints_total", "Partition checkpoints written"),
                &["result"],
            )?,
            accuracy: Arc::new(std::sync::Mutex::new(AccuracyMetrics::register(r)?)),
            drift_score: GaugeVec::new(
                Opts::new(
                    "ml_feature_drift_score",
                    "PSI of each feature (and prediction output) in the last evaluated drift window against the reference profile",
                ),
                &["model_name", "model_version", "feature_name"],
            )?,
            quality_score: GaugeVec::new(
                Opts::new(
                    "ml_data_quality_score",
                    "Data-quality score per check in the last evaluated window (1 = clean)",
                ),
                &["model_name", "model_version", "quality_check"],
            )?,
        };
        r.register(Box::new(m.drift_score.clone()))?;
        r.register(Box::new(m.quality_score.clone()))?;
        r.register(Box::new(m.latency.clone()))?;
        r.register(Box::new(m.throughput.clone()))?;
        r.register(Box::new(m.error_rate.clone()))?;
        r.register(Box::new(m.slow_rate.clone()))?;
        r.register(Box::new(m.late.clone()))?;
        r.register(Box::new(m.state_bytes.clone()))?;
        r.register(Box::new(m.partitions.clone()))?;
        r.register(Box::new(m.series.clone()))?;
        r.register(Box::new(m.events.clone()))?;
        r.register(Box::new(m.alerts.clone()))?;
        r.register(Box::new(m.poison.clone()))?;
        r.register(Box::new(m.duplicates.clone()))?;
        r.register(Box::new(m.checkpoints.clone()))?;
        Ok(m)
    }
}

/// Sets the gauges from the engine (whole-version series only, to keep
/// label cardinality low; segments are in the JSON API).
pub(crate) fn export(metrics: &Metrics, engine: &Engine) {
    for g in [
        &metrics.latency,
        &metrics.throughput,
        &metrics.error_rate,
        &metrics.slow_rate,
        &metrics.late,
    ] {
        g.reset();
    }
    for &w in engine.windows_secs() {
        for r in engine.reports(None, w).unwrap_or_default() {
            if !r.segment.is_empty() {
                continue;
            }
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
                metrics
                    .latency
                    .with_label_values(&[base[0], base[1], base[2], stat])
                    .set(v / 1000.0);
            }
            metrics.throughput.with_label_values(&base).set(s.throughput_rps);
            metrics.error_rate.with_label_values(&base).set(s.error_rate);
            metrics.slow_rate.with_label_values(&base).set(s.slow_request_rate);
            metrics.late.with_label_values(&base).set(r.late_events as f64);
        }
    }
    let mut bytes = 0;
    let mut series = 0;
    let mut partitions = 0;
    for (_, st) in engine.partitions() {
        bytes += st.heap_bytes();
        series += st.series_count();
        partitions += 1;
    }
    metrics.state_bytes.set(bytes as i64);
    metrics.series.set(series as i64);
    metrics.partitions.set(partitions);
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
    let a = &config.analyzer;
    config.accuracy.validate()?;
    config.drift.validate()?;
    config
        .kafka
        .ensure_topics(&[&topics.inference, &topics.labels, &topics.alerts, &topics.deadletter])
        .await?;
    let producer = config.kafka.producer()?;
    let store = CheckpointStore::open(&config.kafka, &a.state_topic)
        .await
        .map_err(|e| Error::Task("state topic", e.to_string()))?;
    let mut trackers = Trackers::new(
        config.accuracy.clone(),
        &a.group_id,
        &topics.inference,
        &topics.labels,
        a.eval_interval_ms,
        config.drift.clone(),
    );
    // Every instance reads the profiles topic in full before consuming.
    let profiles = if config.drift.enabled {
        let records = IntCounterVec::new(
            Opts::new(
                "mlwatch_analyzer_profile_records_total",
                "Records read from the profiles topic, by result (applied, unchanged, skipped: not a usable profile)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(records.clone()))?;
        let topic = ProfileTopic::open(
            &config.kafka,
            config.drift.profile_dir.clone(),
            records,
            shutdown.clone(),
        )
        .await?;
        let (captured, to_publish) = tokio::sync::mpsc::unbounded_channel();
        trackers.share_profiles(topic.registry(), captured);
        tokio::spawn(topic.clone().publish_captures(to_publish, shutdown.clone()));
        Some(topic)
    } else {
        None
    };
    let core = consumer::shared(
        Engine::new(a.engine.clone(), config.rules.clone(), a.eval_interval_ms),
        trackers,
    );
    let owner = Arc::new(consumer::Owner::new(
        core.clone(),
        Arc::new(store),
        a.group_id.clone(),
        topics.inference.clone(),
        topics.labels.clone(),
        metrics.clone(),
    ));
    let kafka_consumer = consumer::consumer(&config.kafka, &a.group_id, owner.clone())?;
    kafka_consumer.subscribe(&[&topics.inference, &topics.labels])?;

    let app = admin::router(registry.clone(), ready.clone()).merge(api(core, profiles));
    let (admin_addr, admin_task) = admin::serve(config.admin.listen, app, shutdown.clone()).await?;

    let timeout = Duration::from_millis(config.kafka.produce_timeout_ms);
    let dead_letter = DeadLetter::new(producer.clone(), topics.deadletter.clone(), timeout);
    let consume = consumer::Loop::new(
        owner,
        kafka_consumer,
        producer,
        dead_letter,
        LoopConfig {
            eval_interval: Duration::from_millis(a.eval_interval_ms.max(10)),
            checkpoint_interval: Duration::from_secs(a.checkpoint_interval_secs.max(1)),
            idle_after: (a.idle_advance_after_secs > 0).then(|| Duration::from_secs(a.idle_advance_after_secs)),
            alerts_topic: topics.alerts.clone(),
            produce_timeout: timeout,
        },
    );
    let consume_task = tokio::spawn(consume.run(shutdown.clone()));

    ready.set(true);
    tracing::info!(%admin_addr, group = %a.group_id, state_topic = %a.state_topic, "analyzer ready");
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        ready.set(false);
        let _ = consume_task.await;
        let _ = admin_task.await;
        Ok(())
    });
    Ok(Running { admin_addr, task })
}

fn api(core: Shared, profiles: Option<Arc<ProfileTopic>>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}/latency", get(model_latency))
        .route("/v1/models/{model}/accuracy", get(model_accuracy))
        .route("/v1/models/{model}/decay", get(model_decay))
        .route("/v1/models/{model}/accuracy/report", get(model_decay))
        .route("/v1/models/{model}/accuracy/join", get(model_join))
        .with_state(core.clone())
        .merge(drift_api::router(core, profiles))
}

fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

/// `GET /v1/models/{model}/accuracy?window=1h`: realised metrics and the
/// CBPE estimate per version and segment, coverage and label lag, each as
/// of its partition's accuracy clock.
async fn model_accuracy(
    State(core): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let core = consumer::lock(&core);
    let config = core.trackers.accuracy_config();
    if !config.enabled {
        return not_found("accuracy: disabled in [accuracy]".into());
    }
    let default = engine::window_name(config.decay_window_secs);
    let window = q.get("window").cloned().unwrap_or(default);
    let Some(secs) = engine::parse_window(&window) else {
        return bad_request(format!("window: cannot parse {window:?}; use e.g. 1h, 1d"));
    };
    if secs != config.decay_window_secs && !config.windows_secs.contains(&secs) {
        return bad_request(format!(
            "window: {window} is not served; served: {:?}",
            config
                .windows_secs
                .iter()
                .chain(std::iter::once(&config.decay_window_secs))
                .map(|s| engine::window_name(*s))
                .collect::<Vec<_>>()
        ));
    }
    let series: Vec<_> = core
        .trackers
        .accuracy_parts()
        .flat_map(|(t, _, clock)| t.window_metrics(Some(&model), secs, clock))
        .collect();
    if series.is_empty() {
        return not_found(format!("model: no predictions seen for {model:?} on this instance"));
    }
    axum::Json(serde_json::json!({"model": model, "window": engine::window_name(secs), "series": series}))
        .into_response()
}

/// `GET /v1/models/{model}/decay`: the decay report per version/segment.
async fn model_decay(State(core): State<Shared>, Path(model): Path<String>) -> Response {
    let core = consumer::lock(&core);
    let reports: Vec<_> = core
        .trackers
        .accuracy_parts()
        .flat_map(|(t, _, clock)| t.reports(&model, clock))
        .collect();
    if reports.is_empty() {
        return not_found(format!("model: no predictions seen for {model:?} on this instance"));
    }
    axum::Json(serde_json::json!({"model": model, "reports": reports})).into_response()
}

/// `GET /v1/models/{model}/accuracy/join`: the join counts of the
/// partition(s) holding the model (summed over owned partitions).
async fn model_join(State(core): State<Shared>, Path(model): Path<String>) -> Response {
    let core = consumer::lock(&core);
    let mut total = crate::accuracy::join::JoinCounts::default();
    let mut found = false;
    for (t, counts, clock) in core.trackers.accuracy_parts() {
        if !t
            .window_metrics(Some(&model), t.config().decay_window_secs, clock)
            .is_empty()
        {
            total.add(&counts);
            found = true;
        }
    }
    if !found {
        return not_found(format!("model: no predictions seen for {model:?} on this instance"));
    }
    axum::Json(serde_json::json!({"model": model, "join": total})).into_response()
}

async fn list_models(State(core): State<Shared>) -> Response {
    let series = consumer::lock(&core).engine.series();
    axum::Json(serde_json::json!({ "models": series })).into_response()
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}

async fn model_latency(
    State(core): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let window = q.get("window").map(String::as_str).unwrap_or("5m");
    let Some(secs) = engine::parse_window(window) else {
        return bad_request(format!("window: cannot parse {window:?}; use e.g. 30s, 5m, 1h"));
    };
    let core = consumer::lock(&core);
    let engine = &core.engine;
    match engine.reports(Some(&model), secs) {
        None => bad_request(format!(
            "window: {window} is not tracked; tracked: {:?}",
            engine
                .windows_secs()
                .iter()
                .map(|s| engine::window_name(*s))
                .collect::<Vec<_>>()
        )),
        Some(r) if r.is_empty() => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": format!("model: no events seen for {model:?} on this instance")})),
        )
            .into_response(),
        Some(mut r) => {
            r.sort_by(|a, b| (&a.model_version, &a.segment).cmp(&(&b.model_version, &b.segment)));
            axum::Json(serde_json::json!({"model": model, "window": engine::window_name(secs), "versions": r}))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_lists_the_defaults() {
        let c: Config = mlwatch_common::config::from_toml(include_str!("../../config/analyzer.toml")).unwrap();
        let d = Config::default();
        assert_eq!(
            serde_json::to_value(&c.analyzer).unwrap(),
            serde_json::to_value(&d.analyzer).unwrap()
        );
        assert_eq!(
            serde_json::to_value(&c.rules).unwrap(),
            serde_json::to_value(&d.rules).unwrap()
        );
        assert_eq!(c.accuracy, d.accuracy);
        assert_eq!(c.drift, d.drift);
    }

    #[test]
    fn per_model_overrides_parse_and_unknown_keys_are_named() {
        let c: Config =
            mlwatch_common::config::from_toml("[rules.models.fraud.p99_latency]\nthreshold = 150.0\nfor_secs = 30\n")
                .unwrap();
        let o = c.rules.models["fraud"].p99_latency.as_ref().unwrap();
        assert_eq!(o.threshold, Some(150.0));
        let p = c.rules.p99_latency.params().with(Some(o));
        assert_eq!((p.threshold, p.for_ms, p.window_secs), (150.0, 30_000, 300));
        let err = mlwatch_common::config::from_toml::<Config>("[rules.p99_latency]\nthreshhold_ms = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("threshhold_ms"), "{err}");
    }
}
