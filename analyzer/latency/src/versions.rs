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
//! together with a chi-square test of homogeneity ([`psi`], [`chi2_homogeneity`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::relative::Metric;
use crate::window::Stats;
use mlwatch_analyzer_core::rules::SeverityName;

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

/// Population stability index of `current` against `baseline` (both
/// histograms over the same bins; empty bins get a share of 1e-4).
pub fn psi(current: &[u64], baseline: &[u64]) -> f64 {
    let (n, m) = (current.iter().sum::<u64>() as f64, baseline.iter().sum::<u64>() as f64);
    if n == 0.0 || m == 0.0 {
        return 0.0;
    }
    current
        .iter()
        .zip(baseline)
        .map(|(a, b)| {
            let p = (*a as f64 / n).max(1e-4);
            let q = (*b as f64 / m).max(1e-4);
            (p - q) * (p / q).ln()
        })
        .sum()
}

/// The p-value of Pearson's chi-square test of homogeneity of two
/// histograms (`scipy.stats.chi2_contingency(..., correction=False)`; bins
/// empty in both are dropped). 1 when fewer than two bins are used.
pub fn chi2_homogeneity(a: &[u64], b: &[u64]) -> f64 {
    let cols: Vec<(f64, f64)> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x + **y > 0)
        .map(|(x, y)| (*x as f64, *y as f64))
        .collect();
    if cols.len() < 2 {
        return 1.0;
    }
    let (na, nb) = cols.iter().fold((0.0, 0.0), |(s, t), (x, y)| (s + x, t + y));
    if na == 0.0 || nb == 0.0 {
        return 1.0;
    }
    let total = na + nb;
    let stat: f64 = cols
        .iter()
        .map(|(x, y)| {
            let col = x + y;
            let (ea, eb) = (na * col / total, nb * col / total);
            (x - ea).powi(2) / ea + (y - eb).powi(2) / eb
        })
        .sum();
    chi2_sf(stat, (cols.len() - 1) as f64)
}

/// `P(X > x)` for a chi-square variable with `df` degrees of freedom: the
/// regularised upper incomplete gamma `Q(df/2, x/2)`.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(df / 2.0, x / 2.0)
}

/// The regularised upper incomplete gamma function (series below `a + 1`,
/// continued fraction above; Numerical Recipes 6.2).
fn gamma_q(a: f64, x: f64) -> f64 {
    let ln_front = -x + a * x.ln() - crate::stats::ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut del, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        (1.0 - sum * ln_front.exp()).clamp(0.0, 1.0)
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (ln_front.exp() * h).clamp(0.0, 1.0)
    }
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
    fn chi2_small_values() {
        // df 2: sf(x) = exp(-x/2).
        assert!((chi2_sf(3.0, 2.0) - (-1.5f64).exp()).abs() < 1e-12);
        assert!((chi2_sf(0.5, 2.0) - (-0.25f64).exp()).abs() < 1e-12);
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
