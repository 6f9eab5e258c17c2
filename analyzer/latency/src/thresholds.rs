//! The four threshold rules of latency and traffic (`[rules.p99_latency]`,
//! `[rules.throughput]`, `[rules.slow_rate]`, `[rules.error_rate]`), their
//! per-model overrides and the parameters they resolve to.

use mlwatch_analyzer_core::rules::SeverityName;
use serde::{Deserialize, Serialize};

/// Resolved parameters of one threshold rule instance (global rule, then
/// the model's overrides applied), in the units the engine uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleParams {
    pub enabled: bool,
    pub threshold: f64,
    pub window_secs: u64,
    pub for_ms: i64,
    pub resolve_for_ms: i64,
    pub hysteresis: f64,
    pub min_samples: u64,
    pub severity: SeverityName,
}

impl RuleParams {
    /// Applies a per-model override on top of these parameters.
    pub fn with(mut self, o: Option<&RuleOverride>) -> Self {
        let Some(o) = o else { return self };
        self.enabled = o.enabled.unwrap_or(self.enabled);
        self.threshold = o.threshold.unwrap_or(self.threshold);
        self.for_ms = o.for_secs.map_or(self.for_ms, secs_to_ms);
        self.resolve_for_ms = o.resolve_for_secs.map_or(self.resolve_for_ms, secs_to_ms);
        self.hysteresis = o.hysteresis.unwrap_or(self.hysteresis);
        self.min_samples = o.min_samples.unwrap_or(self.min_samples);
        self.severity = o.severity.unwrap_or(self.severity);
        self
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Generates one threshold rule's configuration struct: the same shape for
/// every rule, with the threshold named in its unit and its own defaults.
macro_rules! threshold_rule {
    (
        $(#[$doc:meta])* $name:ident, $field:ident: $field_doc:literal,
        threshold = $t:expr, window_secs = $w:expr, for_secs = $f:expr,
        resolve_for_secs = $r:expr, min_samples = $m:expr, severity = $s:expr
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Whether the rule is evaluated.
            pub enabled: bool,
            #[doc = $field_doc]
            pub $field: f64,
            /// Which configured window the rule reads, in seconds (added to
            /// the analyzer's windows when missing).
            pub window_secs: u64,
            /// How long the condition must hold before firing.
            pub for_secs: u64,
            /// How long the value must stay on the good side of the
            /// threshold by the hysteresis margin before resolving.
            pub resolve_for_secs: u64,
            /// Relative margin past the threshold required to resolve.
            pub hysteresis: f64,
            /// Fewer events in the window than this: no decision.
            pub min_samples: u64,
            /// Severity of the alert.
            pub severity: SeverityName,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    enabled: true,
                    $field: $t,
                    window_secs: $w,
                    for_secs: $f,
                    resolve_for_secs: $r,
                    hysteresis: 0.1,
                    min_samples: $m,
                    severity: $s,
                }
            }
        }

        impl $name {
            /// The rule's parameters before per-model overrides.
            pub fn params(&self) -> RuleParams {
                RuleParams {
                    enabled: self.enabled,
                    threshold: self.$field,
                    window_secs: self.window_secs,
                    for_ms: secs_to_ms(self.for_secs),
                    resolve_for_ms: secs_to_ms(self.resolve_for_secs),
                    hysteresis: self.hysteresis,
                    min_samples: self.min_samples,
                    severity: self.severity,
                }
            }
        }
    };
}

threshold_rule!(
    /// `[rules.p99_latency]`: p99 latency above a threshold (`HighP99Latency`).
    LatencyRule, threshold_ms: "Fires when the window's p99 exceeds this many milliseconds.",
    threshold = 200.0, window_secs = 300, for_secs = 0, resolve_for_secs = 30,
    min_samples = 20, severity = SeverityName::High
);

threshold_rule!(
    /// `[rules.throughput]`: throughput below a minimum (`LowThroughput`).
    /// Off while `min_rps` is 0; judged only once the series is older than
    /// the window.
    ThroughputRule, min_rps: "Fires when requests per second over the window fall below this (0 = off).",
    threshold = 0.0, window_secs = 300, for_secs = 60, resolve_for_secs = 60,
    min_samples = 0, severity = SeverityName::Medium
);

threshold_rule!(
    /// `[rules.slow_rate]`: share of slow requests above a maximum
    /// (`HighSlowRequestRate`).
    SlowRateRule, max_ratio: "Fires when the share of requests slower than `slow_threshold_ms` exceeds this (0.01 = 1 %).",
    threshold = 0.01, window_secs = 300, for_secs = 0, resolve_for_secs = 30,
    min_samples = 100, severity = SeverityName::Medium
);

threshold_rule!(
    /// `[rules.error_rate]`: share of failed requests above a maximum
    /// (`HighErrorRate`).
    ErrorRateRule, max_ratio: "Fires when the share of failed requests exceeds this (0.05 = 5 %).",
    threshold = 0.05, window_secs = 300, for_secs = 0, resolve_for_secs = 30,
    min_samples = 20, severity = SeverityName::High
);

/// A per-model override of one threshold rule; unset fields keep the
/// global rule's value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleOverride {
    /// Turns the rule on or off for this model.
    pub enabled: Option<bool>,
    /// The threshold, in the rule's unit (ms, requests/s or ratio).
    pub threshold: Option<f64>,
    /// How long the condition must hold before firing.
    pub for_secs: Option<u64>,
    /// How long the value must stay good before resolving.
    pub resolve_for_secs: Option<u64>,
    /// Relative margin past the threshold required to resolve.
    pub hysteresis: Option<f64>,
    /// Fewer events in the window than this: no decision.
    pub min_samples: Option<u64>,
    /// Severity of the alert.
    pub severity: Option<SeverityName>,
}

/// `[rules.models.<model>]`: overrides for one model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelOverrides {
    /// Override of `[rules.p99_latency]`.
    pub p99_latency: Option<RuleOverride>,
    /// Override of `[rules.throughput]`.
    pub throughput: Option<RuleOverride>,
    /// Override of `[rules.slow_rate]`.
    pub slow_rate: Option<RuleOverride>,
    /// Override of `[rules.error_rate]`.
    pub error_rate: Option<RuleOverride>,
}
