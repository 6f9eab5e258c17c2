//! Version comparison, automated canary analysis (pure, no I/O): when a
//! model version appears, it is compared with the previous version of the
//! same model (the one that served last), or with a configured baseline
//! version, on p50, p90, p99, the error rate and the distribution of the
//! prediction score (alert `VersionRegression`, labels `model`,
//! `model_version`, `baseline_version`, `metric`).
//!
//! - Canary (both versions live, traffic split): both are judged over the
//!   same event-time window, as long as the baseline still has
//!   `min_samples` events in it.
//! - Full rollout (the baseline stops when the new version starts): the new
//!   version is judged against the baseline's last stable period, the
//!   snapshot of its window taken when the new version's first event
//!   arrived.
//!
//! Latency and error rate use the tests of [`crate::relative`]; the score
//! distribution the population stability index over ten bins of [0, 1]
//! together with a chi-square test of homogeneity ([`psi`], [`chi2_homogeneity`],
//! the drift crate's statistics on the version's counts).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::relative::Metric;
use crate::window::Stats;
use mlwatch_analyzer_core::rules::SeverityName;
use mlwatch_analyzer_drift::stats as drift;

/// Bins of the prediction score histogram (equal width on [0, 1]).
pub const SCORE_BINS: usize = 10;

/// `[rules.versions]`: compare a new model version with its baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionRule {
    /// Whether versions are compared.
    pub enabled: bool,
    /// The window both versions are judged over, in seconds.
    pub window_secs: u64,
    /// Confidence of each interval and test (the per-decision false-alarm
    /// rate is at most 1 − confidence).
    pub confidence: f64,
    /// Fewer events than this on either side: no decision.
    pub min_samples: u64,
    /// Minimum effects: the new version's quantile must exceed the
    /// baseline's upper bound times these.
    pub p50_factor: f64,
    pub p90_factor: f64,
    pub p99_factor: f64,
    /// Minimum effect on the error rate (relative, and `error_min_delta`
    /// absolute above the baseline's upper bound).
    pub error_factor: f64,
    pub error_min_delta: f64,
    /// Population stability index of the score above which the score
    /// distribution has moved (0 = off); the chi-square test must agree.
    pub score_psi: f64,
    /// How long a regression must hold before firing.
    pub for_secs: u64,
    /// How long a regression must stay clear before resolving.
    pub resolve_for_secs: u64,
    /// Severity of the alert.
    pub severity: SeverityName,
    /// A fixed baseline version per model (else the previous version).
    pub baseline_versions: BTreeMap<String, String>,
}

impl Default for VersionRule {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 120,
            confidence: 0.999,
            min_samples: 200,
            p50_factor: 1.1,
            p90_factor: 1.15,
            p99_factor: 1.2,
            error_factor: 1.5,
            error_min_delta: 0.005,
            score_psi: 0.1,
            for_secs: 10,
            resolve_for_secs: 60,
            severity: SeverityName::High,
            baseline_versions: BTreeMap::new(),
        }
    }
}

impl VersionRule {
    /// The minimum effect of a latency or error metric.
    pub fn factor(&self, metric: Metric) -> f64 {
        match metric {
            Metric::P50 => self.p50_factor,
            Metric::P90 => self.p90_factor,
            Metric::P99 => self.p99_factor,
            Metric::ErrorRate => self.error_factor,
        }
    }
}

/// A histogram of prediction scores in [0, 1] (cumulative per version).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreBins(pub Vec<u64>);

impl ScoreBins {
    /// Counts a score; scores outside [0, 1] or not finite are not binned.
    pub fn add(&mut self, score: f64) {
        if !(0.0..=1.0).contains(&score) {
            return;
        }
        if self.0.len() != SCORE_BINS {
            self.0.resize(SCORE_BINS, 0);
        }
        let i = ((score * SCORE_BINS as f64) as usize).min(SCORE_BINS - 1);
        self.0[i] += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `self − earlier` (bins of a later cumulative histogram minus an
    /// earlier one's).
    pub fn since(&self, earlier: &ScoreBins) -> ScoreBins {
        ScoreBins(
            (0..self.0.len())
                .map(|i| self.0[i].saturating_sub(earlier.0.get(i).copied().unwrap_or(0)))
                .collect(),
        )
    }
}

/// The comparison state of a new version: its baseline and the baseline's
/// last period before it appeared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Canary {
    pub baseline_version: String,
    /// Event time of the new version's first event.
    pub since_ms: i64,
    /// The baseline's window at `since_ms`.
    pub snapshot: Stats,
    /// The baseline's cumulative scores at `since_ms`.
    pub snapshot_scores: ScoreBins,
}

/// Population stability index of `current` against `baseline` (bin
/// counts; empty bins get a share of 1e-4): the drift crate's PSI.
pub fn psi(current: &[u64], baseline: &[u64]) -> f64 {
    drift::psi(&floats(baseline), &floats(current))
}

/// The p-value of Pearson's chi-square test of homogeneity of two
/// histograms (`scipy.stats.chi2_contingency(..., correction=False)`, bins
/// empty in both dropped): the drift crate's test.
pub fn chi2_homogeneity(a: &[u64], b: &[u64]) -> f64 {
    drift::chi2_two_sample(&floats(a), &floats(b)).p_value
}

fn floats(counts: &[u64]) -> Vec<f64> {
    counts.iter().map(|c| *c as f64).collect()
}

/// The score comparison: (psi, p-value, significant).
pub fn score_shift(current: &ScoreBins, baseline: &ScoreBins, rule: &VersionRule) -> Option<(f64, f64, bool)> {
    if rule.score_psi <= 0.0 || current.total() < rule.min_samples || baseline.total() < rule.min_samples {
        return None;
    }
    let p = psi(&current.0, &baseline.0);
    let pv = chi2_homogeneity(&current.0, &baseline.0);
    Some((p, pv, p > rule.score_psi && pv < 1.0 - rule.confidence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_binned_and_degenerate_tables_pass() {
        assert_eq!(chi2_homogeneity(&[5, 0], &[5, 0]), 1.0);
        let mut s = ScoreBins::default();
        s.add(1.0);
        s.add(0.05);
        s.add(f64::NAN);
        s.add(2.0);
        assert_eq!(s.total(), 2);
        assert_eq!(s.0[9], 1);
    }
}
