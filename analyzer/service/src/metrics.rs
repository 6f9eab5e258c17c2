//! Every gauge and counter of the analyzer, registered on the service's
//! registry and set from the owned partitions once per evaluation tick
//! (the accuracy gauges' layout is in [`accuracy`]).

pub mod accuracy;

use std::sync::Arc;

use mlwatch_analyzer_accuracy::join::JoinCounts;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::partition::Partitions;
use accuracy::AccuracyMetrics;

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

impl Metrics {
    /// Sets every gauge from the owned partitions: latency (whole-version
    /// series only, to keep label cardinality low; segments are in the JSON
    /// API), accuracy and the join, drift and data quality.
    pub fn export(&self, partitions: &Partitions) {
        let metrics = self;
        for g in [
            &metrics.latency,
            &metrics.throughput,
            &metrics.error_rate,
            &metrics.slow_rate,
            &metrics.late,
        ] {
            g.reset();
        }
        for &w in partitions.windows_secs() {
            for r in partitions.latency_reports(None, w).unwrap_or_default() {
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
        let (bytes, series) = partitions.latency_size();
        metrics.state_bytes.set(bytes as i64);
        metrics.series.set(series as i64);
        metrics.partitions.set(partitions.iter().count() as i64);
        self.export_accuracy(partitions);
        self.export_drift(partitions);
    }

    /// `ml_model_accuracy` and the join's gauges, from every owned partition.
    fn export_accuracy(&self, partitions: &Partitions) {
        let mut metrics = self.accuracy.lock().unwrap_or_else(|p| p.into_inner());
        metrics.reset();
        let mut total = JoinCounts::default();
        for (tracker, counts, clock) in partitions.accuracy_parts() {
            metrics.export_series(tracker, clock);
            total.add(&counts);
        }
        metrics.export_join(&total, partitions.accuracy_parts().map(|(t, _, _)| t.counts()));
    }

    /// `ml_feature_drift_score` and `ml_data_quality_score` (labels
    /// `model_name`, `model_version`, and `feature_name` / `quality_check`).
    fn export_drift(&self, partitions: &Partitions) {
        self.drift_score.reset();
        self.quality_score.reset();
        for (model, version, v) in partitions.drift_values() {
            for (feature, score) in &v.drift {
                self.drift_score
                    .with_label_values(&[model, version, feature])
                    .set(*score);
            }
            for (check, score) in &v.quality {
                self.quality_score
                    .with_label_values(&[model, version, check])
                    .set(*score);
            }
        }
    }
}
