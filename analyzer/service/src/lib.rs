//! The mlwatch analyzer service: consumes the inference and label topics,
//! drives the analysis libraries per owned partition, publishes alerts.
//!
//! The statistics live in libraries without I/O (each `Cargo.toml` says
//! so): `mlwatch-analyzer-core` (series, rule state machines, alert
//! building, the event clock, the sketch), `mlwatch-analyzer-latency`,
//! `mlwatch-analyzer-accuracy` (with the label-join store) and
//! `mlwatch-analyzer-drift`. This crate is the service around them:
//!
//! - [`config`]: the configuration sections and their checks.
//! - [`partition`]: the owned partitions, each one clock and a latency,
//!   accuracy and drift part behind observe / advance / checkpoint /
//!   restore.
//! - [`consumer`]: the consume loop that owns partitions, restores and
//!   checkpoints them, dead-letters poison and publishes alerts to
//!   `mlwatch.alerts.v1` before the checkpoint that reflects them.
//! - [`checkpoint`]: partition checkpoints on a compacted topic.
//! - [`profiles`]: drift reference profiles on a compacted topic, read in
//!   full and followed by every instance.
//! - [`alerts`]: the alerts published, active (checkpointed) and recent.
//! - `api`: the JSON API (models, alerts, latency, accuracy, drift,
//!   profiles).
//! - [`metrics`]: every Prometheus gauge and counter.
//! - this file: start-up and shutdown.
//!
//! Where an alert fires: latency and traffic in
//! `mlwatch_analyzer_latency::part`, accuracy decay and early warning in
//! `mlwatch_analyzer_accuracy::tracker`, drift and quality in
//! `mlwatch_analyzer_drift::monitor` (decided per window by
//! `mlwatch_analyzer_drift::part`).

pub mod alerts;
mod api;
pub mod checkpoint;
pub mod config;
pub mod consumer;
pub mod metrics;
pub mod partition;
pub mod profiles;
pub mod watchdog;

pub use mlwatch_analyzer_accuracy as accuracy;
pub use mlwatch_analyzer_drift as drift;
pub use mlwatch_analyzer_latency as latency;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::kafka::DeadLetter;
use mlwatch_common::shutdown::CancellationToken;
use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::consumer::Consumer;
use tokio::task::JoinHandle;

use crate::checkpoint::CheckpointStore;
use crate::consumer::LoopConfig;
use crate::partition::{Partitions, Settings};
use crate::profiles::ProfileTopic;

pub use config::{AnalyzerConfig, Config, SECTIONS};
pub use metrics::Metrics;

pub use mlwatch_common::ServiceError as Error;

/// An analysis library's error as the service reports it: a bad value keeps
/// its key (exit code 64), the rest is a failed task.
pub fn analysis_error(e: mlwatch_analyzer_core::Error) -> Error {
    match e {
        mlwatch_analyzer_core::Error::Config { key, reason } => Error::Config { key, reason },
        other => Error::Task("analysis", other.to_string()),
    }
}

pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
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
    config.accuracy.validate().map_err(analysis_error)?;
    config.drift.validate().map_err(analysis_error)?;
    let admin = admin::starting(&config.admin, registry.clone(), shutdown.clone()).await?;
    config
        .kafka
        .await_topics(
            &[&topics.inference, &topics.labels, &topics.alerts, &topics.deadletter],
            &shutdown,
            |s| admin.status(s),
        )
        .await?;
    // Alerts and dead letters share a producer that replaces itself after
    // an unrecoverable error (broker trouble fences idempotent producers).
    let producer = Arc::new(mlwatch_common::kafka::ResilientProducer::from_config(
        &config.kafka,
        &[],
    )?);
    let store = CheckpointStore::open(&config.kafka, &a.state_topic)
        .await
        .map_err(|e| Error::Task("state topic", e.to_string()))?;
    let mut partitions = Partitions::new(Settings::from_config(&config));
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
        partitions.share_profiles(topic.registry(), captured);
        tokio::spawn(topic.clone().publish_captures(to_publish, shutdown.clone()));
        Some(topic)
    } else {
        None
    };
    let core = consumer::shared(partitions);
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

    let app = admin::router(registry.clone(), ready.clone()).merge(api::router(core, profiles));
    let (admin_addr, admin_task) = admin.serve(app);

    let timeout = Duration::from_millis(config.kafka.produce_timeout_ms);
    let dead_letter = DeadLetter::resilient(producer.clone(), topics.deadletter.clone(), timeout);
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
            stall_after: (a.stall_after_secs > 0).then(|| Duration::from_secs(a.stall_after_secs)),
            ready: ready.clone(),
            watch: consumer::WatchMetrics::register(&registry)?,
            watermarks: Arc::new(config.kafka.client_config().create()?),
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
