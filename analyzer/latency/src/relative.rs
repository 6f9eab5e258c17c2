//! Baseline-relative, multi-window rules (pure, no I/O): each check compares
//! one metric (p50, p90, p99 or the error rate) over one window with the
//! series' own baseline, in the style of the multiwindow, multi-burn-rate
//! SLO alerts of Google's SRE workbook: a short window with a large factor
//! catches bursts, a long window with a small factor catches sustained
//! change, and a long-window check is confirmed by a short window so that
//! it stops as soon as the change does.
//!
//! The baseline is a reference period: the `baseline_secs` that end
//! `lag` before the evaluation (`lag` = the longest check window, so the
//! baseline never overlaps what it judges), refreshed once per slot of the
//! baseline window and frozen while any check of the series is pending or
//! firing (an incident never becomes its own baseline).
//!
//! Every decision is a test with a stated false-alarm rate and a minimum
//! effect (see [`crate::stats`] and docs/detection.md).

use serde::{Deserialize, Serialize};

use crate::stats::{self, QuantileTest, RateTest};
use crate::window::Stats;
use mlwatch_analyzer_core::rules::SeverityName;

/// The metric a check compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    P50,
    P90,
    P99,
    ErrorRate,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P99 => "p99",
            Self::ErrorRate => "error_rate",
        }
    }

    fn quantile(self) -> Option<f64> {
        match self {
            Self::P50 => Some(0.5),
            Self::P90 => Some(0.9),
            Self::P99 => Some(0.99),
            Self::ErrorRate => None,
        }
    }

    /// A value as people read it: milliseconds or percent.
    pub fn show(self, v: f64) -> String {
        match self {
            Self::ErrorRate => format!("{:.2} %", v * 100.0),
            _ => format!("{v:.1} ms"),
        }
    }
}

/// One check of `[rules.relative]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// `p50`, `p90`, `p99` or `error_rate`.
    pub metric: Metric,
    /// The window judged, in seconds.
    pub window_secs: u64,
    /// Minimum effect: the metric must be above this many times the
    /// baseline's (its upper confidence bound) beyond doubt.
    pub factor: f64,
    /// A shorter window whose point estimate must also be above the
    /// baseline × factor to fire, and whose return to the baseline resolves
    /// (0 = none).
    #[serde(default)]
    pub confirm_window_secs: u64,
}

/// `[rules.relative]`: latency and error rules relative to the series' own
/// baseline (alerts `LatencyRegression` and `ErrorRateRegression`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelativeRule {
    /// Whether the checks run.
    pub enabled: bool,
    /// Length of the reference period, in seconds.
    pub baseline_secs: u64,
    /// Confidence of each interval and test (the per-decision false-alarm
    /// rate is at most 1 − confidence).
    pub confidence: f64,
    /// Fewer events than this in the window or the baseline: no decision.
    pub min_samples: u64,
    /// Error-rate checks also need the rate to exceed the baseline's upper
    /// bound by this much (absolute, 0.005 = half a point).
    pub error_min_delta: f64,
    /// How long a check must hold before firing.
    pub for_secs: u64,
    /// How long a check must stay clear before resolving.
    pub resolve_for_secs: u64,
    /// Severity of the alerts.
    pub severity: SeverityName,
    /// The checks (replacing this list replaces every default check).
    pub checks: Vec<Check>,
}

impl Default for RelativeRule {
    fn default() -> Self {
        let check = |metric, window_secs, factor, confirm_window_secs| Check {
            metric,
            window_secs,
            factor,
            confirm_window_secs,
        };
        Self {
            enabled: true,
            baseline_secs: 600,
            confidence: 0.999,
            min_samples: 200,
            error_min_delta: 0.005,
            for_secs: 0,
            resolve_for_secs: 30,
            severity: SeverityName::High,
            checks: vec![
                // Bursts: tens of seconds, large effects.
                check(Metric::ErrorRate, 10, 2.0, 0),
                check(Metric::P99, 30, 1.5, 0),
                // Sustained change: minutes, small effects, confirmed by a
                // short window.
                check(Metric::P50, 120, 1.1, 30),
                check(Metric::P99, 300, 1.2, 60),
                check(Metric::ErrorRate, 300, 1.5, 30),
            ],
        }
    }
}

impl RelativeRule {
    /// The windows the checks read, in seconds.
    pub fn windows(&self) -> Vec<u64> {
        self.checks
            .iter()
            .flat_map(|c| [c.window_secs, c.confirm_window_secs])
            .filter(|w| *w > 0)
            .collect()
    }

    /// How far behind the evaluation the baseline ends: the longest check
    /// window.
    pub fn lag_secs(&self) -> u64 {
        self.windows().into_iter().max().unwrap_or(0)
    }
}

/// The test of one metric of `current` against `baseline`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    Quantile(QuantileTest),
    Rate(RateTest),
}

impl Test {
    pub fn significant(&self) -> bool {
        match self {
            Self::Quantile(t) => t.significant,
            Self::Rate(t) => t.significant,
        }
    }

    /// The point estimates: (current, baseline).
    pub fn values(&self) -> (f64, f64) {
        match self {
            Self::Quantile(t) => (t.value, t.baseline_value),
            Self::Rate(t) => (t.rate, t.baseline_rate),
        }
    }

    /// The evidence, as a sentence for the alert's description.
    pub fn evidence(&self, metric: Metric, confidence: f64, factor: f64) -> String {
        let pct = confidence * 100.0;
        match self {
            Self::Quantile(t) => format!(
                "{pct} % lower bound of the {m} {lo} > {factor} × its {pct} % upper bound in the baseline {hi} \
                 (order-statistic intervals from the sketch, widened by its relative accuracy)",
                m = metric.name(),
                lo = metric.show(t.lower),
                hi = metric.show(t.baseline_upper),
            ),
            Self::Rate(t) => format!(
                "one-sided exact binomial test against {} (the baseline's {pct} % Wilson upper bound × {factor}): p = {:.3e}",
                metric.show(t.null_rate),
                t.p_value
            ),
        }
    }
}

/// Tests `metric` of `current` against `baseline`: `None` with fewer than
/// `min_samples` events on either side.
pub fn test(
    metric: Metric,
    current: &Stats,
    baseline: &Stats,
    factor: f64,
    min_delta: f64,
    confidence: f64,
    min_samples: u64,
) -> Option<Test> {
    match metric.quantile() {
        Some(q) => stats::quantile_increase(&current.sketch, &baseline.sketch, q, factor, confidence, min_samples)
            .map(Test::Quantile),
        None => stats::rate_increase(
            (current.errors, current.count),
            (baseline.errors, baseline.count),
            factor,
            min_delta,
            confidence,
            min_samples,
        )
        .map(Test::Rate),
    }
}

/// The point estimate of `metric` in `stats` (`None` when empty).
pub fn point(metric: Metric, stats: &Stats) -> Option<f64> {
    if stats.count == 0 {
        return None;
    }
    match metric.quantile() {
        Some(q) => stats.sketch.quantile(q),
        None => Some(stats.errors as f64 / stats.count as f64),
    }
}

/// What one check decided: `breach` (fire), `clear` (may resolve).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub breach: bool,
    pub clear: bool,
    pub test: Option<Test>,
}

/// Decides one check: the long window must be significantly above
/// `factor` × the baseline and the confirming window's point estimate
/// above it too; it clears when the window is empty, its point estimate is
/// back at or below `factor` × the baseline's, or the confirming window is
/// back at or below the baseline.
pub fn decide(
    check: &Check,
    window: &Stats,
    confirm: Option<&Stats>,
    baseline: &Stats,
    min_delta: f64,
    confidence: f64,
    min_samples: u64,
) -> Decision {
    let t = test(
        check.metric,
        window,
        baseline,
        check.factor,
        min_delta,
        confidence,
        min_samples,
    );
    let base = point(check.metric, baseline);
    let confirm_value = confirm.and_then(|c| point(check.metric, c));
    let confirmed = match (confirm, confirm_value, base) {
        (None, _, _) => true,
        (Some(_), Some(c), Some(b)) => c > check.factor * b,
        _ => false,
    };
    let back = match (point(check.metric, window), base) {
        (None, _) => true,
        (Some(v), Some(b)) => v <= check.factor * b || confirm_value.is_some_and(|c| c <= b),
        (Some(_), None) => false,
    };
    Decision {
        breach: t.as_ref().is_some_and(Test::significant) && confirmed,
        clear: back,
        test: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(values: impl Iterator<Item = (f64, bool)>) -> Stats {
        let mut s = Stats::default();
        for (v, e) in values {
            s.add(v, e, false);
        }
        s
    }

    #[test]
    fn a_confirmed_shift_breaches_and_an_unconfirmed_one_does_not() {
        let base = stats_of((0..6000).map(|i| (20.0 + (i % 50) as f64, false)));
        let slow = stats_of((0..2000).map(|i| (1.3 * (20.0 + (i % 50) as f64), false)));
        let check = Check {
            metric: Metric::P50,
            window_secs: 120,
            factor: 1.1,
            confirm_window_secs: 30,
        };
        let d = decide(&check, &slow, Some(&slow), &base, 0.0, 0.999, 200);
        assert!(d.breach && !d.clear, "{d:?}");
        let d = decide(&check, &slow, Some(&base), &base, 0.0, 0.999, 200);
        assert!(!d.breach && d.clear, "{d:?}");
        let d = decide(&check, &Stats::default(), None, &base, 0.0, 0.999, 200);
        assert!(!d.breach && d.clear && d.test.is_none());
    }
}
