//! Prometheus export of the accuracy state, on a registry passed in.
//!
//! `ml_model_accuracy{model_name,model_version,metric_type}` carries every
//! metric of [`AccuracyTracker::gauges`] (realised, and `*_estimated` for
//! CBPE); the rest are the join's and tracker's health.

use std::collections::HashMap;

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

use mlwatch_analyzer_accuracy::join::JoinCounts;
use mlwatch_analyzer_accuracy::tracker::{AccuracyTracker, TrackerCounts};

/// The accuracy metrics of one analyzer.
#[derive(Clone)]
pub struct AccuracyMetrics {
    accuracy: GaugeVec,
    lag: GaugeVec,
    join: IntCounterVec,
    pending: GaugeVec,
    unjoinable: IntCounterVec,
    /// Last totals exported, so persisted totals become counter increments.
    seen: HashMap<&'static str, i64>,
}

impl AccuracyMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            accuracy: GaugeVec::new(
                Opts::new(
                    "ml_model_accuracy",
                    "Model quality over the decay window from joined labels (metric_type *_estimated: confidence-based estimate)",
                ),
                &["model_name", "model_version", "metric_type"],
            )?,
            lag: GaugeVec::new(
                Opts::new(
                    "ml_model_label_lag_seconds",
                    "Label lag (label time - prediction time) percentiles over the decay window (label percentile: p50, p90, p99; a gauge, so not named quantile)",
                ),
                &["model_name", "model_version", "percentile"],
            )?,
            join: IntCounterVec::new(
                Opts::new("mlwatch_analyzer_label_join_total", "Label join outcomes"),
                &["outcome"],
            )?,
            pending: GaugeVec::new(
                Opts::new(
                    "mlwatch_analyzer_label_join_pending",
                    "Entries waiting in the label join",
                ),
                &["state"],
            )?,
            unjoinable: IntCounterVec::new(
                Opts::new(
                    "mlwatch_analyzer_accuracy_unjoinable_total",
                    "Joined pairs not counted in metrics, by reason",
                ),
                &["reason"],
            )?,
            seen: HashMap::new(),
        };
        r.register(Box::new(m.accuracy.clone()))?;
        r.register(Box::new(m.lag.clone()))?;
        r.register(Box::new(m.join.clone()))?;
        r.register(Box::new(m.pending.clone()))?;
        r.register(Box::new(m.unjoinable.clone()))?;
        Ok(m)
    }

    fn advance(&mut self, vec: &IntCounterVec, label: &'static str, key: &'static str, total: i64) {
        let last = self.seen.entry(key).or_insert(0);
        // A partition moving away lowers the sum: the counter just waits.
        if total > *last {
            vec.with_label_values(&[label]).inc_by((total - *last) as u64);
            *last = total;
        } else if total < *last {
            *last = total;
        }
    }

    /// Sets every gauge from one tracker and its join counts.
    pub fn export(&mut self, tracker: &AccuracyTracker, join: &JoinCounts, now_ms: i64) {
        self.reset();
        self.export_series(tracker, now_ms);
        self.export_join(join, std::iter::once(tracker.counts()));
    }

    /// Clears the per-series gauges (before exporting every partition).
    pub fn reset(&self) {
        self.accuracy.reset();
        self.lag.reset();
    }

    /// Sets the per-series gauges of one tracker as of `now_ms`.
    pub fn export_series(&mut self, tracker: &AccuracyTracker, now_ms: i64) {
        for g in tracker.gauges(now_ms) {
            self.accuracy
                .with_label_values(&[&g.model, &g.model_version, &g.metric_type])
                .set(g.value);
        }
        let window = tracker.config().decay_window_secs;
        for w in tracker.window_metrics(None, window, now_ms) {
            if !w.series.segment.is_empty() {
                continue;
            }
            if let Some(l) = &w.label_lag {
                for (q, v) in [("p50", l.p50_secs), ("p90", l.p90_secs), ("p99", l.p99_secs)] {
                    self.lag
                        .with_label_values(&[&w.series.model, &w.series.model_version, q])
                        .set(v);
                }
            }
        }
    }

    /// Sets the join's counters and gauges from the summed counts of the
    /// owned partitions, and the trackers' unjoinable counters.
    pub fn export_join(&mut self, join: &JoinCounts, trackers: impl IntoIterator<Item = TrackerCounts>) {
        let join_vec = self.join.clone();
        for (label, total) in [
            ("joined", join.joined),
            ("duplicate_label", join.duplicate_labels),
            ("late_label", join.late_labels),
            ("expired_prediction", join.expired_predictions),
            ("expired_label", join.expired_labels),
            ("duplicate_prediction", join.duplicate_predictions),
        ] {
            self.advance(&join_vec, label, label, total);
        }
        self.pending
            .with_label_values(&["predictions"])
            .set(join.pending as f64);
        self.pending
            .with_label_values(&["labels"])
            .set(join.waiting_labels as f64);
        let (mut mismatched, mut too_old) = (0, 0);
        for c in trackers {
            mismatched += c.mismatched as i64;
            too_old += c.too_old as i64;
        }
        let unjoinable = self.unjoinable.clone();
        self.advance(&unjoinable, "mismatched", "unjoinable_mismatched", mismatched);
        self.advance(&unjoinable, "too_old", "unjoinable_too_old", too_old);
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, TextEncoder};

    use super::*;
    use crate::accuracy::join::{Joined, PendingPrediction, TruthLabel};
    use crate::accuracy::tracker::AccuracyConfig;

    #[test]
    fn exports_accuracy_and_join_counters() {
        let t0 = 1_795_000_000_000;
        let mut tracker = AccuracyTracker::new(AccuracyConfig::default());
        for i in 0..10 {
            let p = PendingPrediction {
                event_id: format!("e{i}"),
                model: "fraud".into(),
                model_version: "v3".into(),
                timestamp_ms: t0 + i,
                score: Some(0.9),
                ..Default::default()
            };
            tracker.on_prediction(&p);
            let label = TruthLabel {
                event_id: p.event_id.clone(),
                model: p.model.clone(),
                timestamp_ms: t0 + 60_000,
                label: Some(if i < 8 { "1" } else { "0" }.into()),
                value: None,
            };
            tracker.on_joined(
                &Joined {
                    prediction: p,
                    label,
                    lag_ms: 60_000,
                },
                t0 + 60_000,
            );
        }
        let registry = Registry::new();
        let mut m = AccuracyMetrics::register(&registry).unwrap();
        let mut counts = JoinCounts {
            joined: 10,
            duplicate_labels: 2,
            pending: 5,
            ..Default::default()
        };
        m.export(&tracker, &counts, t0 + 60_000);
        counts.joined = 12;
        m.export(&tracker, &counts, t0 + 60_000);
        let mut buf = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        for line in [
            r#"ml_model_accuracy{metric_type="accuracy",model_name="fraud",model_version="v3"} 0.8"#,
            r#"ml_model_accuracy{metric_type="label_coverage",model_name="fraud",model_version="v3"} 1"#,
            r#"ml_model_accuracy{metric_type="accuracy_estimated",model_name="fraud",model_version="v3"} 0.9"#,
            r#"mlwatch_analyzer_label_join_total{outcome="joined"} 12"#,
            r#"mlwatch_analyzer_label_join_total{outcome="duplicate_label"} 2"#,
            r#"mlwatch_analyzer_label_join_pending{state="predictions"} 5"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        let lag: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"ml_model_label_lag_seconds{model_name="fraud",model_version="v3",percentile="p50"} "#)
            })
            .expect("lag gauge")
            .parse()
            .unwrap();
        assert!((lag - 60.0).abs() <= 0.3, "{lag}");
    }
}
