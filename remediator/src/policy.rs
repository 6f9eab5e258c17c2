//! Remediation policy (pure): rules that map an alert (type, severity,
//! labels) to an action, and the arithmetic of each action's target
//! (replicas within bounds, the version to roll back to, the traffic split).

use std::collections::{BTreeMap, HashMap};

use mlwatch_proto::v1::{ActionKind, Alert, AlertStatus, Deployment, Severity};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Alert type the remediator raises when an action did not help; it never
/// acts on it.
pub const REMEDIATION_FAILED: &str = "RemediationFailed";

/// Severity in configuration (`low` … `critical`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MinSeverity {
    #[default]
    Low,
    Medium,
    High,
    Critical,
}

impl MinSeverity {
    fn admits(self, severity: i32) -> bool {
        let s = match Severity::try_from(severity).unwrap_or_default() {
            Severity::Unspecified => return false,
            Severity::Low => Self::Low,
            Severity::Medium => Self::Medium,
            Severity::High => Self::High,
            Severity::Critical => Self::Critical,
        };
        s >= self
    }
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ActionSpec {
    /// Add replicas: the larger of `+step` and `×factor`, within the
    /// replica bounds of `[guards]` and of the platform.
    ScaleUp {
        /// Add at least this many replicas.
        #[serde(default = "default_step")]
        step: u32,
        /// Multiply the replica count by at least this factor.
        #[serde(default = "default_factor")]
        factor: f64,
    },
    /// Make a former version active again: `to_version`, or the previous
    /// version when absent.
    Rollback {
        /// A named known-good version.
        #[serde(default)]
        to_version: Option<String>,
    },
    /// Send `percent` of the traffic to `to_version` (the previous version
    /// when absent) and the rest to the active one.
    ShiftTraffic {
        /// Version that receives `percent`.
        #[serde(default)]
        to_version: Option<String>,
        /// Share for `to_version`, 0 to 100.
        percent: f64,
    },
    /// POST the alert to the retraining webhook of `[retrain]`.
    Retrain,
    /// Only record that people were told (the alerter pages them).
    Notify,
}

fn default_step() -> u32 {
    1
}
fn default_factor() -> f64 {
    1.5
}

impl ActionSpec {
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::ScaleUp { .. } => ActionKind::Scale,
            Self::Rollback { .. } => ActionKind::Rollback,
            Self::ShiftTraffic { .. } => ActionKind::SetTraffic,
            Self::Retrain => ActionKind::Retrain,
            Self::Notify => ActionKind::Notify,
        }
    }
}

/// Short lowercase name of an action kind, used in config, ids and APIs.
pub fn kind_name(kind: ActionKind) -> &'static str {
    match kind {
        ActionKind::Unspecified => "unspecified",
        ActionKind::Scale => "scale",
        ActionKind::Rollback => "rollback",
        ActionKind::SetTraffic => "shift_traffic",
        ActionKind::Retrain => "retrain",
        ActionKind::Notify => "notify",
        ActionKind::KillSwitch => "kill_switch",
    }
}

/// One `[[policy.rules]]` entry. The first matching rule wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name, quoted in action records.
    pub name: String,
    /// Alert types the rule matches (exact names).
    pub alert_types: Vec<String>,
    /// Lowest alert severity the rule matches.
    #[serde(default)]
    pub min_severity: MinSeverity,
    /// Labels the alert must carry with these exact values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What to do.
    pub action: ActionSpec,
}

impl Rule {
    pub fn matches(&self, alert: &Alert) -> bool {
        self.alert_types.iter().any(|t| t == &alert.r#type)
            && self.min_severity.admits(alert.severity)
            && self.labels.iter().all(|(k, v)| alert.labels.get(k) == Some(v))
    }
}

/// The default rules: latency and throughput alerts scale up, high-severity
/// accuracy decay rolls back to the previous version, a high-severity
/// `VersionRegression` rolls back to the version it was compared with (its
/// `baseline_version` label); drift, data quality,
/// lesser accuracy decay, its early warning and error rates only notify
/// (scaling does not fix errors, and a rollback for them is a person's
/// call).
pub fn default_rules() -> Vec<Rule> {
    let types = |ts: &[&str]| ts.iter().map(|t| t.to_string()).collect();
    vec![
        Rule {
            name: "scale-up-on-latency".into(),
            alert_types: types(&[
                "HighP99Latency",
                "HighSlowRequestRate",
                "LatencySpike",
                "PredictedSlaBreach",
                "LowThroughput",
                "LatencyRegression",
            ]),
            min_severity: MinSeverity::Low,
            labels: BTreeMap::new(),
            action: ActionSpec::ScaleUp {
                step: default_step(),
                factor: default_factor(),
            },
        },
        Rule {
            name: "rollback-on-accuracy-decay".into(),
            alert_types: types(&["AccuracyDecay"]),
            min_severity: MinSeverity::High,
            labels: BTreeMap::new(),
            action: ActionSpec::Rollback { to_version: None },
        },
        Rule {
            name: "rollback-on-version-regression".into(),
            alert_types: types(&["VersionRegression"]),
            min_severity: MinSeverity::High,
            labels: BTreeMap::new(),
            action: ActionSpec::Rollback { to_version: None },
        },
        Rule {
            name: "notify-on-drift".into(),
            alert_types: types(&[
                "FeatureDrift",
                "PredictionDrift",
                "DataQuality",
                "AccuracyDecay",
                "AccuracyDecayEarlyWarning",
                "HighErrorRate",
                "ErrorRateRegression",
                "VersionRegression",
            ]),
            min_severity: MinSeverity::Low,
            labels: BTreeMap::new(),
            action: ActionSpec::Notify,
        },
    ]
}

/// The rule that applies to `alert`, if any. Resolved alerts, alerts from
/// the remediator itself and `RemediationFailed` never match.
pub fn select<'a>(rules: &'a [Rule], alert: &Alert) -> Option<&'a Rule> {
    if alert.status != AlertStatus::Firing as i32 || is_own(alert) {
        return None;
    }
    rules.iter().find(|r| r.matches(alert))
}

/// Whether a firing alert is older than `horizon_ms` (by when it was
/// produced, or started when that is unknown).
pub fn is_stale(alert: &Alert, now_ms: i64, horizon_ms: i64) -> bool {
    let at = if alert.generated_at_ms > 0 {
        alert.generated_at_ms
    } else {
        alert.starts_at_ms
    };
    at > 0 && now_ms - at > horizon_ms
}

/// Whether the remediator raised this alert (it never acts on those).
pub fn is_own(alert: &Alert) -> bool {
    alert.r#type == REMEDIATION_FAILED || alert.source == "remediator"
}

/// A refused or impossible target, with the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    #[error("already at the replica limit: {current} of max {max}")]
    AtMaxReplicas { current: u32, max: u32 },
    #[error("no previous version of {model} to roll back to")]
    NoPreviousVersion { model: String },
    #[error("version {version} is already active")]
    AlreadyActive { version: String },
    #[error("traffic percent {0} is outside 0..=100")]
    BadPercent(f64),
}

/// What an action will change, from what to what.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Replicas { from: u32, to: u32 },
    Version { from: String, to: String },
    Traffic { split: BTreeMap<String, f64> },
    Webhook,
    Notify,
}

/// Target replicas for a scale-up from `current`, within `max` (the
/// tighter of the guards' and the platform's). `None` when already at max.
pub fn scale_target(step: u32, factor: f64, current: u32, max: u32) -> Option<u32> {
    if current >= max {
        return None;
    }
    let by_factor = (f64::from(current.max(1)) * factor.max(1.0))
        .ceil()
        .min(f64::from(u32::MAX)) as u32;
    let by_step = current.saturating_add(step.max(1));
    Some(by_factor.max(by_step).min(max))
}

/// The label of a `VersionRegression` naming the version it was compared
/// with.
pub const BASELINE_VERSION_LABEL: &str = "baseline_version";

/// The action `spec` for `alert`: a rollback or traffic shift that names no
/// version goes to the alert's `baseline_version` when it carries one (a
/// version regression names the known-good version it was compared with),
/// else it stays as configured (the previous version).
pub fn for_alert<'a>(spec: &'a ActionSpec, alert: &Alert) -> std::borrow::Cow<'a, ActionSpec> {
    use std::borrow::Cow;
    let baseline = alert
        .labels
        .get(BASELINE_VERSION_LABEL)
        .filter(|v| !v.is_empty())
        .cloned();
    match (spec, baseline) {
        (ActionSpec::Rollback { to_version: None }, Some(v)) => {
            Cow::Owned(ActionSpec::Rollback { to_version: Some(v) })
        }
        (
            ActionSpec::ShiftTraffic {
                to_version: None,
                percent,
            },
            Some(v),
        ) => Cow::Owned(ActionSpec::ShiftTraffic {
            to_version: Some(v),
            percent: *percent,
        }),
        _ => Cow::Borrowed(spec),
    }
}

/// Computes the target of `spec` on `deployment`. `max_replicas` is the
/// guards' bound; the platform's own maximum applies too.
pub fn target(spec: &ActionSpec, deployment: &Deployment, max_replicas: u32) -> Result<Target, TargetError> {
    match spec {
        ActionSpec::ScaleUp { step, factor } => {
            let max = if deployment.max_replicas > 0 {
                deployment.max_replicas.min(max_replicas)
            } else {
                max_replicas
            };
            let current = deployment.replicas;
            scale_target(*step, *factor, current, max)
                .map(|to| Target::Replicas { from: current, to })
                .ok_or(TargetError::AtMaxReplicas { current, max })
        }
        ActionSpec::Rollback { to_version } => {
            let to = version_or_previous(to_version.as_deref(), deployment)?;
            Ok(Target::Version {
                from: deployment.active_version.clone(),
                to,
            })
        }
        ActionSpec::ShiftTraffic { to_version, percent } => {
            if !(0.0..=100.0).contains(percent) {
                return Err(TargetError::BadPercent(*percent));
            }
            let to = version_or_previous(to_version.as_deref(), deployment)?;
            let mut split = BTreeMap::new();
            split.insert(to, *percent);
            split.insert(deployment.active_version.clone(), 100.0 - percent);
            split.retain(|_, p| *p > 0.0);
            Ok(Target::Traffic { split })
        }
        ActionSpec::Retrain => Ok(Target::Webhook),
        ActionSpec::Notify => Ok(Target::Notify),
    }
}

fn version_or_previous(named: Option<&str>, d: &Deployment) -> Result<String, TargetError> {
    let to = match named {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => d
            .previous_versions
            .last()
            .cloned()
            .ok_or_else(|| TargetError::NoPreviousVersion { model: d.model.clone() })?,
    };
    if to == d.active_version {
        return Err(TargetError::AlreadyActive { version: to });
    }
    Ok(to)
}

const TRAFFIC_PREFIX: &str = "traffic.";

impl Target {
    /// The target as action-record parameters (what a restarted
    /// remediator reads back to carry out a planned action).
    pub fn to_params(&self) -> HashMap<String, String> {
        let mut p = HashMap::new();
        match self {
            Self::Replicas { from, to } => {
                p.insert("from_replicas".into(), from.to_string());
                p.insert("to_replicas".into(), to.to_string());
            }
            Self::Version { from, to } => {
                p.insert("from_version".into(), from.clone());
                p.insert("to_version".into(), to.clone());
            }
            Self::Traffic { split } => {
                for (v, pct) in split {
                    p.insert(format!("{TRAFFIC_PREFIX}{v}"), pct.to_string());
                }
            }
            Self::Webhook | Self::Notify => {}
        }
        p
    }

    /// Reads a target back from an action record's parameters.
    pub fn from_params(kind: ActionKind, p: &HashMap<String, String>) -> Option<Self> {
        let num = |k: &str| p.get(k).and_then(|v| v.parse::<u32>().ok());
        match kind {
            ActionKind::Scale => Some(Self::Replicas {
                from: num("from_replicas")?,
                to: num("to_replicas")?,
            }),
            ActionKind::Rollback => Some(Self::Version {
                from: p.get("from_version")?.clone(),
                to: p.get("to_version")?.clone(),
            }),
            ActionKind::SetTraffic => {
                let split: BTreeMap<String, f64> = p
                    .iter()
                    .filter_map(|(k, v)| Some((k.strip_prefix(TRAFFIC_PREFIX)?.to_string(), v.parse().ok()?)))
                    .collect();
                (!split.is_empty()).then_some(Self::Traffic { split })
            }
            ActionKind::Retrain => Some(Self::Webhook),
            ActionKind::Notify => Some(Self::Notify),
            ActionKind::Unspecified | ActionKind::KillSwitch => None,
        }
    }

    /// One line for reasons and logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Replicas { from, to } => format!("scale from {from} to {to} replicas"),
            Self::Version { from, to } => format!("roll back from {from} to {to}"),
            Self::Traffic { split } => {
                let parts: Vec<String> = split.iter().map(|(v, p)| format!("{v} {p}%")).collect();
                format!("shift traffic to {}", parts.join(", "))
            }
            Self::Webhook => "call the retraining webhook".into(),
            Self::Notify => "notify only".into(),
        }
    }
}

/// Stable id of the action taken for one alert firing: the same alert
/// (however often redelivered) always yields the same id, which is also the
/// request id sent to the serving platform.
pub fn action_id(alert_id: &str, kind: &str) -> String {
    let mut h = Sha256::new();
    h.update(alert_id.as_bytes());
    h.update([0]);
    h.update(kind.as_bytes());
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn deployment(replicas: u32, max: u32) -> Deployment {
        Deployment {
            model: "fraud".into(),
            active_version: "v3".into(),
            replicas,
            min_replicas: 1,
            max_replicas: max,
            previous_versions: vec!["v1".into(), "v2".into()],
            traffic_percent: Default::default(),
        }
    }

    fn alert(t: &str, severity: Severity) -> Alert {
        Alert {
            id: "a1".into(),
            r#type: t.into(),
            severity: severity as i32,
            status: AlertStatus::Firing as i32,
            labels: [("model".to_string(), "fraud".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn scale_target_respects_bounds() {
        assert_eq!(scale_target(1, 1.5, 2, 10), Some(3));
        assert_eq!(scale_target(1, 1.5, 4, 10), Some(6));
        assert_eq!(scale_target(1, 1.5, 9, 10), Some(10));
        assert_eq!(scale_target(1, 1.5, 10, 10), None);
        assert_eq!(scale_target(1, 1.5, 0, 20), Some(2));
        assert_eq!(scale_target(3, 1.0, 2, 20), Some(5));
    }

    #[test]
    fn default_rules_follow_the_design() {
        let rules = default_rules();
        let pick = |t, s| select(&rules, &alert(t, s)).map(|r| r.action.kind());
        assert_eq!(pick("HighP99Latency", Severity::High), Some(ActionKind::Scale));
        assert_eq!(pick("LowThroughput", Severity::Medium), Some(ActionKind::Scale));
        assert_eq!(pick("AccuracyDecay", Severity::High), Some(ActionKind::Rollback));
        assert_eq!(pick("AccuracyDecay", Severity::Medium), Some(ActionKind::Notify));
        assert_eq!(pick("FeatureDrift", Severity::Medium), Some(ActionKind::Notify));
        assert_eq!(pick("VersionRegression", Severity::High), Some(ActionKind::Rollback));
        assert_eq!(pick("VersionRegression", Severity::Medium), Some(ActionKind::Notify));
        assert_eq!(pick("LatencyRegression", Severity::High), Some(ActionKind::Scale));
        assert_eq!(pick("ErrorRateRegression", Severity::High), Some(ActionKind::Notify));
        assert_eq!(pick("Unknown", Severity::Critical), None);
        assert_eq!(pick(REMEDIATION_FAILED, Severity::High), None);
        let mut resolved = alert("HighP99Latency", Severity::High);
        resolved.status = AlertStatus::Resolved as i32;
        assert!(select(&rules, &resolved).is_none());
        let mut own = alert("HighP99Latency", Severity::High);
        own.source = "remediator".into();
        assert!(select(&rules, &own).is_none());
    }

    #[test]
    fn own_alerts_never_match_even_when_a_rule_names_them() {
        let rules = vec![Rule {
            name: "loop".into(),
            alert_types: vec![REMEDIATION_FAILED.into(), "HighP99Latency".into()],
            min_severity: MinSeverity::Low,
            labels: BTreeMap::new(),
            action: ActionSpec::ScaleUp { step: 1, factor: 1.5 },
        }];
        assert!(select(&rules, &alert(REMEDIATION_FAILED, Severity::Critical)).is_none());
        let mut own = alert("HighP99Latency", Severity::High);
        own.source = "remediator".into();
        assert!(select(&rules, &own).is_none());
        assert!(select(&rules, &alert("HighP99Latency", Severity::High)).is_some());
    }

    #[test]
    fn stale_alerts_are_recognised() {
        let mut a = alert("HighP99Latency", Severity::High);
        a.generated_at_ms = 1_000;
        assert!(!is_stale(&a, 1_000 + 3_600_000, 3_600_000));
        assert!(is_stale(&a, 1_001 + 3_600_000, 3_600_000));
        a.generated_at_ms = 0;
        a.starts_at_ms = 1_000;
        assert!(is_stale(&a, 1_001 + 3_600_000, 3_600_000));
        a.starts_at_ms = 0;
        assert!(!is_stale(&a, i64::MAX, 3_600_000));
    }

    #[test]
    fn label_matchers_must_all_hold() {
        let rule = Rule {
            name: "eu".into(),
            alert_types: vec!["HighP99Latency".into()],
            min_severity: MinSeverity::Low,
            labels: [("model".to_string(), "recsys".to_string())].into(),
            action: ActionSpec::Notify,
        };
        assert!(!rule.matches(&alert("HighP99Latency", Severity::High)));
    }

    #[test]
    fn rollback_and_traffic_targets() {
        let d = deployment(2, 10);
        let prev = ActionSpec::Rollback { to_version: None };
        assert_eq!(
            target(&prev, &d, 20),
            Ok(Target::Version {
                from: "v3".into(),
                to: "v2".into()
            })
        );
        let named = ActionSpec::Rollback {
            to_version: Some("v1".into()),
        };
        assert!(matches!(target(&named, &d, 20), Ok(Target::Version { to, .. }) if to == "v1"));
        let same = ActionSpec::Rollback {
            to_version: Some("v3".into()),
        };
        assert!(matches!(target(&same, &d, 20), Err(TargetError::AlreadyActive { .. })));
        let mut fresh = d.clone();
        fresh.previous_versions.clear();
        assert!(matches!(
            target(&prev, &fresh, 20),
            Err(TargetError::NoPreviousVersion { .. })
        ));
        let shift = ActionSpec::ShiftTraffic {
            to_version: None,
            percent: 90.0,
        };
        let t = target(&shift, &d, 20).unwrap();
        assert_eq!(t.to_params().get("traffic.v2").map(String::as_str), Some("90"));
        assert_eq!(Target::from_params(ActionKind::SetTraffic, &t.to_params()), Some(t));
        assert!(target(&ActionSpec::ScaleUp { step: 1, factor: 1.5 }, &deployment(5, 5), 20).is_err());
        // The tighter of the guard's and the platform's bound applies.
        assert_eq!(
            target(&ActionSpec::ScaleUp { step: 1, factor: 1.5 }, &deployment(4, 16), 5),
            Ok(Target::Replicas { from: 4, to: 5 })
        );
    }

    #[test]
    fn rules_parse_from_json() {
        #[derive(Deserialize)]
        struct P {
            rules: Vec<Rule>,
        }
        let p: P = toml_like(
            r#"{"rules":[{"name":"r","alert_types":["AccuracyDecay"],"min_severity":"high",
                "action":{"kind":"rollback","to_version":"v1"}}]}"#,
        );
        assert_eq!(
            p.rules[0].action,
            ActionSpec::Rollback {
                to_version: Some("v1".into())
            }
        );
        let bad = serde_json::from_str::<ActionSpec>(r#"{"kind":"scale_up","stpe":2}"#);
        assert!(bad.is_err());
    }

    fn toml_like<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).expect("parses")
    }

    proptest! {
        #[test]
        fn scale_target_grows_within_bounds(step in 0u32..10, factor in 0.5f64..4.0, current in 0u32..100, max in 1u32..100) {
            match scale_target(step, factor, current, max) {
                None => prop_assert!(current >= max),
                Some(to) => {
                    prop_assert!(to > current);
                    prop_assert!(to <= max);
                }
            }
        }

        #[test]
        fn action_ids_are_stable_and_distinct(a in "[a-f0-9]{8}", b in "[a-f0-9]{8}") {
            prop_assert_eq!(action_id(&a, "scale"), action_id(&a, "scale"));
            prop_assert_ne!(action_id(&a, "scale"), action_id(&a, "rollback"));
            if a != b {
                prop_assert_ne!(action_id(&a, "scale"), action_id(&b, "scale"));
            }
        }
    }
}
