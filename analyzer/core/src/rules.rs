//! Alert rule state machines and alert building, shared by every signal
//! (pure, no I/O).
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
}
