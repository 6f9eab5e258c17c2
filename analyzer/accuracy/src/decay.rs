//! Decay against a baseline: a metric has decayed when its drop exceeds
//! the metric's threshold, the drop is statistically significant with a
//! test that fits the metric, and the current window holds at least
//! `min_samples` labelled outcomes (pure, no I/O).
//!
//! | metric | test |
//! |---|---|
//! | accuracy, precision, recall, multiclass accuracy | two-proportion z-test (pooled), one-sided |
//! | f1 | z-test with the delta-method variance of F1 under the multinomial confusion matrix |
//! | auc_roc | DeLong: z = ΔAUC / √(var₀ + var₁) with DeLong variances |
//!
//! Against a configured baseline value (no sample) the same statistics are
//! used with the baseline's variance taken as 0 (a one-sample test).

use serde::{Deserialize, Serialize};

use super::metrics::{BinaryStats, normal_sf};

/// A metric that decay is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    Accuracy,
    Precision,
    Recall,
    F1,
    AucRoc,
    /// Share of correct predictions of a multiclass model.
    MulticlassAccuracy,
}

impl MetricType {
    pub const ALL: [MetricType; 6] = [
        MetricType::Accuracy,
        MetricType::Precision,
        MetricType::Recall,
        MetricType::F1,
        MetricType::AucRoc,
        MetricType::MulticlassAccuracy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MetricType::Accuracy => "accuracy",
            MetricType::Precision => "precision",
            MetricType::Recall => "recall",
            MetricType::F1 => "f1",
            MetricType::AucRoc => "auc_roc",
            MetricType::MulticlassAccuracy => "multiclass_accuracy",
        }
    }

    /// The metric's value on an accumulator (`None` when undefined); for
    /// multiclass accuracy, on [`super::metrics::MulticlassStats::correctness`].
    pub fn value(self, s: &BinaryStats) -> Option<f64> {
        if s.count() <= 0.0 {
            return None;
        }
        match self {
            MetricType::Accuracy | MetricType::MulticlassAccuracy => Some(s.accuracy()),
            MetricType::Precision => (s.tp + s.fp > 0.0).then(|| s.precision()),
            MetricType::Recall => (s.tp + s.fn_ > 0.0).then(|| s.recall()),
            MetricType::F1 => (s.tp + s.fp + s.fn_ > 0.0).then(|| s.f1()),
            MetricType::AucRoc => s.auc().map(|a| a.auc),
        }
    }
}

/// Drop thresholds per metric (absolute, in metric units).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Accuracy drop that counts as decay.
    pub accuracy: f64,
    /// Precision drop that counts as decay.
    pub precision: f64,
    /// Recall drop that counts as decay.
    pub recall: f64,
    /// F1 drop that counts as decay.
    pub f1: f64,
    /// AUC-ROC drop that counts as decay.
    pub auc_roc: f64,
    /// Multiclass accuracy drop that counts as decay.
    pub multiclass_accuracy: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            accuracy: 0.05,
            precision: 0.10,
            recall: 0.10,
            f1: 0.10,
            auc_roc: 0.05,
            multiclass_accuracy: 0.05,
        }
    }
}

impl Thresholds {
    pub fn get(&self, m: MetricType) -> f64 {
        match m {
            MetricType::Accuracy => self.accuracy,
            MetricType::Precision => self.precision,
            MetricType::Recall => self.recall,
            MetricType::F1 => self.f1,
            MetricType::AucRoc => self.auc_roc,
            MetricType::MulticlassAccuracy => self.multiclass_accuracy,
        }
    }
}

/// The `[accuracy.decay]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecayConfig {
    pub thresholds: Thresholds,
    /// One-sided significance level of the tests.
    pub significance: f64,
    /// Fewer labelled outcomes in the current window (or the measured
    /// baseline) than this: no decision.
    pub min_samples: u64,
}

impl Default for DecayConfig {
    fn default() -> Self {
        Self {
            thresholds: Thresholds::default(),
            significance: 0.01,
            min_samples: 200,
        }
    }
}

/// What decay is measured against.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline<'a> {
    /// Measured over a reference window: the sample itself.
    Measured(&'a BinaryStats),
    /// A configured value (no sample behind it).
    Configured(f64),
}

/// The verdict on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub metric: MetricType,
    pub baseline: f64,
    pub current: f64,
    /// baseline − current (positive when worse).
    pub drop: f64,
    pub threshold: f64,
    pub z: f64,
    pub p_value: f64,
    pub samples: u64,
    pub decayed: bool,
    /// Drop above twice the threshold.
    pub high: bool,
}

/// Variance-free one-sided test of "current is below baseline".
fn z_test(drop: f64, variance: f64) -> (f64, f64) {
    if variance <= 0.0 {
        let z = if drop > 0.0 { f64::INFINITY } else { 0.0 };
        return (z, if drop > 0.0 { 0.0 } else { 0.5 });
    }
    let z = drop / variance.sqrt();
    (z, normal_sf(z))
}

/// (successes, trials) of a proportion metric.
fn proportion(m: MetricType, s: &BinaryStats) -> (f64, f64) {
    match m {
        MetricType::Accuracy | MetricType::MulticlassAccuracy => (s.correct(), s.count()),
        MetricType::Precision => (s.tp, s.tp + s.fp),
        MetricType::Recall => (s.tp, s.tp + s.fn_),
        _ => (0.0, 0.0),
    }
}

/// Delta-method variance of F1 = 2a / (2a + b + c) with (a, b, c) the TP,
/// FP, FN shares of a multinomial sample of size n.
pub fn f1_variance(s: &BinaryStats) -> f64 {
    let n = s.count();
    if n <= 0.0 {
        return 0.0;
    }
    let (a, b, c) = (s.tp / n, s.fp / n, s.fn_ / n);
    let d = 2.0 * a + b + c;
    if d <= 0.0 {
        return 0.0;
    }
    let g = [2.0 * (b + c) / (d * d), -2.0 * a / (d * d), -2.0 * a / (d * d)];
    let p = [a, b, c];
    let mut var = 0.0;
    for i in 0..3 {
        for j in 0..3 {
            let cov = if i == j { p[i] * (1.0 - p[i]) } else { -p[i] * p[j] };
            var += g[i] * g[j] * cov;
        }
    }
    var / n
}

/// Judges one metric of `current` against `baseline`. `None` when the
/// metric is undefined on either side.
pub fn assess(
    metric: MetricType,
    baseline: &Baseline<'_>,
    current: &BinaryStats,
    config: &DecayConfig,
) -> Option<Assessment> {
    let cur = metric.value(current)?;
    let (base, base_n) = match baseline {
        Baseline::Measured(b) => (metric.value(b)?, b.count()),
        Baseline::Configured(v) => (*v, f64::INFINITY),
    };
    let drop = base - cur;
    let (z, p_value) = match metric {
        MetricType::Accuracy | MetricType::MulticlassAccuracy | MetricType::Precision | MetricType::Recall => {
            let (k1, n1) = proportion(metric, current);
            match baseline {
                Baseline::Measured(b) => {
                    let (k0, n0) = proportion(metric, b);
                    let pooled = (k0 + k1) / (n0 + n1);
                    z_test(drop, pooled * (1.0 - pooled) * (1.0 / n0 + 1.0 / n1))
                }
                Baseline::Configured(p0) => z_test(drop, p0 * (1.0 - p0) / n1.max(1.0)),
            }
        }
        MetricType::F1 => {
            let var0 = match baseline {
                Baseline::Measured(b) => f1_variance(b),
                Baseline::Configured(_) => 0.0,
            };
            z_test(drop, var0 + f1_variance(current))
        }
        MetricType::AucRoc => {
            let var0 = match baseline {
                Baseline::Measured(b) => b.auc()?.variance,
                Baseline::Configured(_) => 0.0,
            };
            z_test(drop, var0 + current.auc()?.variance)
        }
    };
    let threshold = config.thresholds.get(metric);
    let samples = current.count() as u64;
    let enough = samples >= config.min_samples && base_n >= config.min_samples as f64;
    let decayed = enough && drop > threshold && p_value < config.significance;
    Some(Assessment {
        metric,
        baseline: base,
        current: cur,
        drop,
        threshold,
        z,
        p_value,
        samples,
        decayed,
        high: decayed && drop > 2.0 * threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{binary_from, fixture};

    #[test]
    fn tests_equal_scipy_on_the_fixture() {
        let f = fixture("binary.json");
        let base = binary_from(&f["baseline"]);
        let cur = binary_from(&f["current"]);
        let config = DecayConfig::default();
        for (metric, key, tol) in [
            (MetricType::Accuracy, "accuracy", 1e-9),
            (MetricType::Precision, "precision", 1e-9),
            (MetricType::Recall, "recall", 1e-9),
            // DeLong from the 1000-bin histogram: z within 1 %.
            (MetricType::AucRoc, "auc_roc", 1e-2),
        ] {
            let a = assess(metric, &Baseline::Measured(&base), &cur, &config).unwrap();
            let want_z = f["tests"][key]["z"].as_f64().unwrap();
            assert!(
                (a.z - want_z).abs() <= tol * want_z.abs(),
                "{key}: z {} vs {want_z}",
                a.z
            );
            if tol < 1e-6 {
                let want_p = f["tests"][key]["p_value"].as_f64().unwrap();
                assert!(
                    (a.p_value - want_p).abs() <= 1e-6 * want_p,
                    "{key}: p {} vs {want_p}",
                    a.p_value
                );
            }
            assert!(a.decayed, "{key} {a:?}");
        }
    }

    #[test]
    fn decay_needs_size_significance_and_samples() {
        let f = fixture("binary.json");
        let base = binary_from(&f["baseline"]);
        let cur = binary_from(&f["current"]);
        let strict = DecayConfig {
            min_samples: 10_000,
            ..Default::default()
        };
        let a = assess(MetricType::Accuracy, &Baseline::Measured(&base), &cur, &strict).unwrap();
        assert!(!a.decayed, "too few samples");
        // Same data against itself: no drop, no decay.
        let a = assess(
            MetricType::F1,
            &Baseline::Measured(&base),
            &base,
            &DecayConfig::default(),
        )
        .unwrap();
        assert!(!a.decayed && a.drop.abs() < 1e-12);
        // A configured baseline: accuracy 0.9436 → 0.8172 is a drop of
        // 0.126 > 2 × 0.05, so high severity.
        let a = assess(
            MetricType::Accuracy,
            &Baseline::Configured(0.9436),
            &cur,
            &DecayConfig::default(),
        )
        .unwrap();
        assert!(a.decayed && a.high, "{a:?}");
        // A small drop is significant on a large sample but below threshold.
        let mut big = BinaryStats::default();
        let mut small_drop = BinaryStats::default();
        for i in 0..100_000 {
            big.add(None, true, i % 100 < 90);
            small_drop.add(None, true, i % 100 < 88);
        }
        let a = assess(
            MetricType::Accuracy,
            &Baseline::Measured(&big),
            &small_drop,
            &DecayConfig::default(),
        )
        .unwrap();
        assert!(a.p_value < 1e-6 && !a.decayed, "{a:?}");
    }
}
