//! Alert rules and their state machines (pure, no I/O).
//!
//! A rule instance (rule × model × version) is inactive, pending (the
//! condition holds but not yet for `for_secs`), or firing. A firing
//! instance resolves only after the value stayed on the good side of the
//! threshold by the hysteresis margin for `resolve_for_secs`. Transitions
//! produce alerts with a stable fingerprint (hash of type and labels) and a
//! deterministic id (hash of fingerprint, status and start time), so a
//! replayed input yields the same alerts and downstream can deduplicate.

use std::collections::BTreeMap;

use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
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

/// Severity as written in configuration.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeverityName {
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityName> for Severity {
    fn from(s: SeverityName) -> Self {
        match s {
            SeverityName::Low => Severity::Low,
            SeverityName::Medium => Severity::Medium,
            SeverityName::High => Severity::High,
            SeverityName::Critical => Severity::Critical,
        }
    }
}

pub use mlwatch_proto::identity::{alert_id, fingerprint};

/// Where one rule instance stands.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Inactive,
    Pending {
        since_ms: i64,
    },
    Firing {
        since_ms: i64,
        good_since_ms: Option<i64>,
    },
}

impl Phase {
    pub fn is_firing(&self) -> bool {
        matches!(self, Phase::Firing { .. })
    }
}

/// What an evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    None,
    Fire { starts_at_ms: i64 },
    Resolve { starts_at_ms: i64, ends_at_ms: i64 },
}

/// Advances a rule instance. `breach` says whether the value is past the
/// threshold, `clear` whether it is back on the good side by the hysteresis
/// margin (both false while there are too few samples to decide: a pending
/// instance then returns to inactive, a firing one keeps firing).
pub fn step(phase: &mut Phase, now_ms: i64, breach: bool, clear: bool, for_ms: i64, resolve_for_ms: i64) -> Transition {
    match phase.clone() {
        Phase::Inactive => {
            if breach {
                if for_ms <= 0 {
                    *phase = Phase::Firing {
                        since_ms: now_ms,
                        good_since_ms: None,
                    };
                    return Transition::Fire { starts_at_ms: now_ms };
                }
                *phase = Phase::Pending { since_ms: now_ms };
            }
            Transition::None
        }
        Phase::Pending { since_ms } => {
            if !breach {
                *phase = Phase::Inactive;
                Transition::None
            } else if now_ms - since_ms >= for_ms {
                *phase = Phase::Firing {
                    since_ms,
                    good_since_ms: None,
                };
                Transition::Fire { starts_at_ms: since_ms }
            } else {
                Transition::None
            }
        }
        Phase::Firing {
            since_ms,
            good_since_ms,
        } => {
            if !clear {
                *phase = Phase::Firing {
                    since_ms,
                    good_since_ms: None,
                };
                return Transition::None;
            }
            let good = good_since_ms.unwrap_or(now_ms);
            if now_ms - good >= resolve_for_ms {
                *phase = Phase::Inactive;
                Transition::Resolve {
                    starts_at_ms: since_ms,
                    ends_at_ms: now_ms,
                }
            } else {
                *phase = Phase::Firing {
                    since_ms,
                    good_since_ms: Some(good),
                };
                Transition::None
            }
        }
    }
}

/// Everything needed to build an alert message.
pub struct AlertSpec<'a> {
    pub alert_type: &'a str,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub description: String,
    pub value: f64,
    pub threshold: f64,
    pub recommendations: Vec<String>,
}

/// Builds the alert for a transition (`None` for no transition).
pub fn alert_for(spec: AlertSpec<'_>, transition: &Transition, now_ms: i64) -> Option<Alert> {
    let (status, starts_at_ms, ends_at_ms) = match *transition {
        Transition::None => return None,
        Transition::Fire { starts_at_ms } => (AlertStatus::Firing, starts_at_ms, 0),
        Transition::Resolve {
            starts_at_ms,
            ends_at_ms,
        } => (AlertStatus::Resolved, starts_at_ms, ends_at_ms),
    };
    let fp = fingerprint(spec.alert_type, &spec.labels);
    let mut annotations = std::collections::HashMap::new();
    annotations.insert("summary".to_string(), spec.summary);
    annotations.insert("description".to_string(), spec.description);
    Some(Alert {
        id: alert_id(&fp, status, starts_at_ms),
        fingerprint: fp,
        status: status as i32,
        r#type: spec.alert_type.to_string(),
        severity: spec.severity as i32,
        labels: spec.labels.into_iter().collect(),
        annotations,
        value: spec.value,
        threshold: spec.threshold,
        starts_at_ms,
        ends_at_ms,
        recommendations: spec.recommendations,
        source: "analyzer".into(),
        generated_at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_after_for_and_resolves_after_hysteresis() {
        let mut p = Phase::Inactive;
        assert_eq!(step(&mut p, 0, true, false, 2000, 3000), Transition::None);
        assert_eq!(step(&mut p, 1000, true, false, 2000, 3000), Transition::None);
        assert_eq!(
            step(&mut p, 2000, true, false, 2000, 3000),
            Transition::Fire { starts_at_ms: 0 }
        );
        assert_eq!(step(&mut p, 3000, false, true, 2000, 3000), Transition::None);
        // A relapse restarts the resolve clock.
        assert_eq!(step(&mut p, 4000, true, false, 2000, 3000), Transition::None);
        assert_eq!(step(&mut p, 5000, false, true, 2000, 3000), Transition::None);
        assert_eq!(step(&mut p, 7000, false, true, 2000, 3000), Transition::None);
        assert_eq!(
            step(&mut p, 8000, false, true, 2000, 3000),
            Transition::Resolve {
                starts_at_ms: 0,
                ends_at_ms: 8000
            }
        );
        assert_eq!(p, Phase::Inactive);
    }

    #[test]
    fn pending_clears_when_condition_stops() {
        let mut p = Phase::Inactive;
        step(&mut p, 0, true, false, 5000, 0);
        step(&mut p, 1000, false, false, 5000, 0);
        assert_eq!(p, Phase::Inactive);
    }

    #[test]
    fn fingerprint_is_stable_and_label_order_free() {
        let mut a = BTreeMap::new();
        a.insert("model".to_string(), "fraud".to_string());
        a.insert("model_version".to_string(), "v3".to_string());
        let f1 = fingerprint("HighP99Latency", &a);
        let f2 = fingerprint("HighP99Latency", &a.clone());
        assert_eq!(f1, f2);
        assert_eq!(f1.len(), 32);
        assert_ne!(f1, fingerprint("FeatureDrift", &a));
        assert_ne!(
            alert_id(&f1, AlertStatus::Firing, 1),
            alert_id(&f1, AlertStatus::Resolved, 1)
        );
    }
}
