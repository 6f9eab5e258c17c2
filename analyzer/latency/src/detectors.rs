//! Detectors beyond plain thresholds (pure, no I/O): latency spikes by
//! z-score and SLA-breach prediction from the trend of p99.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use mlwatch_analyzer_core::rules::SeverityName;

/// `[rules.latency_spike]`: the latest latency far above the window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeRule {
    /// Whether the detector runs.
    pub enabled: bool,
    /// Fires when the z-score exceeds this (medium severity).
    pub z_threshold: f64,
    /// Above this z-score the alert is of high severity.
    pub high_z: f64,
    /// The window the latest latency is compared against, in seconds.
    pub window_secs: u64,
    /// Fewer events in the window than this: no decision.
    pub min_samples: u64,
    /// How long the spike must last before firing (filters single
    /// outliers of a heavy-tailed latency distribution).
    pub for_secs: u64,
    /// How long the z-score must stay below the threshold before resolving.
    pub resolve_for_secs: u64,
}

impl Default for SpikeRule {
    fn default() -> Self {
        Self {
            enabled: true,
            z_threshold: 3.0,
            high_z: 4.0,
            window_secs: 300,
            min_samples: 30,
            for_secs: 3,
            resolve_for_secs: 30,
        }
    }
}

/// z-score of `latest` against a window's mean and standard deviation;
/// `None` when the window has no spread.
pub fn z_score(latest: f64, mean: f64, std: f64) -> Option<f64> {
    (std > 0.0 && std.is_finite()).then(|| (latest - mean) / std)
}

/// Severity of a spike with z-score `z` under `rule` (`None`: no spike).
pub fn spike_severity(rule: &SpikeRule, z: f64) -> Option<SeverityName> {
    if z > rule.high_z {
        Some(SeverityName::High)
    } else if z > rule.z_threshold {
        Some(SeverityName::Medium)
    } else {
        None
    }
}

/// `[rules.sla_prediction]`: p99 trend projected ahead against the SLA.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaRule {
    /// Whether the detector runs.
    pub enabled: bool,
    /// The p99 latency the service promises, in milliseconds.
    pub sla_ms: f64,
    /// The window whose p99 is sampled, in seconds.
    pub window_secs: u64,
    /// How much p99 history the trend is fitted on, in seconds.
    pub trend_window_secs: u64,
    /// How often p99 is sampled into the history, in seconds of event time.
    pub sample_every_secs: u64,
    /// Fewer events in the sampled window than this: no sample (the p99
    /// of a few events is their maximum, too noisy to trend).
    pub min_samples: u64,
    /// How far ahead the trend is projected, in minutes.
    pub horizon_mins: f64,
    /// Fires (`PredictedSlaBreach`) when the breach probability exceeds this.
    pub fire_probability: f64,
    /// How long the probability must stay at or below 0.2 before resolving.
    pub resolve_for_secs: u64,
}

impl Default for SlaRule {
    fn default() -> Self {
        Self {
            enabled: true,
            sla_ms: 200.0,
            window_secs: 60,
            trend_window_secs: 300,
            sample_every_secs: 10,
            min_samples: 100,
            horizon_mins: 30.0,
            fire_probability: 0.5,
            resolve_for_secs: 60,
        }
    }
}

/// Sampled p99 values `(event time ms, p99 ms)`, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct P99History {
    points: VecDeque<(i64, f64)>,
}

impl P99History {
    /// Adds a sample and forgets those older than `keep_ms` before it.
    pub fn push(&mut self, t_ms: i64, p99_ms: f64, keep_ms: i64) {
        self.points.push_back((t_ms, p99_ms));
        while let Some(&(t0, _)) = self.points.front() {
            if t0 < t_ms - keep_ms {
                self.points.pop_front();
            } else {
                break;
            }
        }
    }

    pub fn last_sample_ms(&self) -> Option<i64> {
        self.points.back().map(|p| p.0)
    }

    /// Event time between the oldest and the newest sample.
    pub fn span_ms(&self) -> i64 {
        match (self.points.front(), self.points.back()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0,
        }
    }

    /// Least-squares slope in ms per minute; `None` with fewer than three
    /// samples or no spread in time.
    pub fn slope_ms_per_min(&self) -> Option<f64> {
        if self.points.len() < 3 {
            return None;
        }
        let n = self.points.len() as f64;
        let t0 = self.points[0].0;
        let xs = self.points.iter().map(|(t, _)| (t - t0) as f64 / 60_000.0);
        let mx = xs.clone().sum::<f64>() / n;
        let my = self.points.iter().map(|p| p.1).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (x, (_, y)) in xs.zip(&self.points) {
            sxy += (x - mx) * (y - my);
            sxx += (x - mx) * (x - mx);
        }
        (sxx > 0.0).then(|| sxy / sxx)
    }
}

/// An SLA-breach forecast.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlaForecast {
    pub current_p99_ms: f64,
    pub trend_ms_per_min: f64,
    pub predicted_p99_ms: f64,
    pub sla_ms: f64,
    pub breach_probability: f64,
    pub recommendation: &'static str,
}

/// Projects `current_p99_ms` along `trend_ms_per_min` for `horizon_mins`;
/// breach probability = clamp((predicted − SLA) / SLA, 0, 1).
pub fn forecast(current_p99_ms: f64, trend_ms_per_min: f64, horizon_mins: f64, sla_ms: f64) -> SlaForecast {
    let predicted = current_p99_ms + trend_ms_per_min * horizon_mins;
    let p = if sla_ms > 0.0 {
        ((predicted - sla_ms) / sla_ms).clamp(0.0, 1.0)
    } else {
        0.0
    };
    SlaForecast {
        current_p99_ms,
        trend_ms_per_min,
        predicted_p99_ms: predicted,
        sla_ms,
        breach_probability: p,
        recommendation: recommendation(p),
    }
}

/// What to do at a given breach probability.
pub fn recommendation(p: f64) -> &'static str {
    if p > 0.8 {
        "critical: scale up now or roll back; the SLA will be breached within the horizon"
    } else if p > 0.5 {
        "warning: add capacity soon and look for the cause of the rising p99"
    } else if p > 0.2 {
        "watch: p99 is trending towards the SLA"
    } else {
        "OK"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_is_exact() {
        let mut h = P99History::default();
        for i in 0..31 {
            h.push(i * 10_000, 100.0 + 2.0 * (i as f64 / 6.0), 300_000);
        }
        assert!((h.slope_ms_per_min().unwrap() - 2.0).abs() < 1e-9);
        // Only the last 5 minutes are kept.
        h.push(31 * 10_000, 0.0, 300_000);
        assert_eq!(h.points.len(), 31);
    }

    #[test]
    fn forecast_probability_and_recommendations() {
        let f = forecast(150.0, 5.0, 30.0, 200.0);
        assert_eq!(f.predicted_p99_ms, 300.0);
        assert_eq!(f.breach_probability, 0.5);
        assert_eq!(f.recommendation, recommendation(0.5));
        assert!(recommendation(0.5).starts_with("watch"));
        assert!(recommendation(0.51).starts_with("warning"));
        assert!(recommendation(0.81).starts_with("critical"));
        assert_eq!(recommendation(0.2), "OK");
        assert_eq!(forecast(100.0, -1.0, 30.0, 200.0).breach_probability, 0.0);
        assert_eq!(forecast(100.0, 50.0, 30.0, 200.0).breach_probability, 1.0);
    }

    #[test]
    fn spike_severity_bands() {
        let r = SpikeRule::default();
        assert_eq!(spike_severity(&r, 2.9), None);
        assert_eq!(spike_severity(&r, 3.5), Some(SeverityName::Medium));
        assert_eq!(spike_severity(&r, 4.5), Some(SeverityName::High));
        assert_eq!(z_score(10.0, 5.0, 0.0), None);
        assert_eq!(z_score(11.0, 5.0, 2.0), Some(3.0));
    }
}
