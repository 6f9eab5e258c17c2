//! Remediation policy (pure): which alert leads to which action, and the
//! replica arithmetic of a scale-up within bounds.

use mlwatch_proto::v1::{Alert, AlertStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `[policy.scale_up]` section: alert types that call for more replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleUpPolicy {
    pub enabled: bool,
    /// Alert types that trigger a scale-up.
    pub alert_types: Vec<String>,
    /// Add at least this many replicas.
    pub step: u32,
    /// Multiply the replica count by at least this factor.
    pub factor: f64,
    /// Never go above this many replicas (the platform's own maximum also
    /// applies).
    pub max_replicas: u32,
}

impl Default for ScaleUpPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            alert_types: vec![
                "HighP99Latency".into(),
                "LowThroughput".into(),
                "HighSlowRequestRate".into(),
            ],
            step: 1,
            factor: 1.5,
            max_replicas: 20,
        }
    }
}

/// What the policy wants done about an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing: not firing, or no rule matches.
    Nothing,
    ScaleUp,
}

/// Decides the action for an alert.
pub fn plan(policy: &ScaleUpPolicy, alert: &Alert) -> Plan {
    if alert.status != AlertStatus::Firing as i32 {
        return Plan::Nothing;
    }
    if policy.enabled && policy.alert_types.iter().any(|t| t == &alert.r#type) {
        return Plan::ScaleUp;
    }
    Plan::Nothing
}

/// Target replicas for a scale-up from `current`, within `max` (the
/// tighter of the policy's and the platform's). `None` when already at max.
pub fn scale_target(policy: &ScaleUpPolicy, current: u32, platform_max: u32) -> Option<u32> {
    let max = if platform_max > 0 {
        platform_max.min(policy.max_replicas)
    } else {
        policy.max_replicas
    };
    if current >= max {
        return None;
    }
    let by_factor = (f64::from(current.max(1)) * policy.factor).ceil() as u32;
    let by_step = current.saturating_add(policy.step.max(1));
    Some(by_factor.max(by_step).min(max))
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

    #[test]
    fn scale_target_respects_bounds() {
        let p = ScaleUpPolicy::default();
        assert_eq!(scale_target(&p, 2, 10), Some(3));
        assert_eq!(scale_target(&p, 4, 10), Some(6));
        assert_eq!(scale_target(&p, 9, 10), Some(10));
        assert_eq!(scale_target(&p, 10, 10), None);
        assert_eq!(scale_target(&p, 19, 0), Some(20));
        assert_eq!(scale_target(&p, 0, 0), Some(2));
    }

    #[test]
    fn only_firing_matching_alerts_plan() {
        let p = ScaleUpPolicy::default();
        let mut a = Alert {
            r#type: "HighP99Latency".into(),
            status: AlertStatus::Firing as i32,
            ..Default::default()
        };
        assert_eq!(plan(&p, &a), Plan::ScaleUp);
        a.status = AlertStatus::Resolved as i32;
        assert_eq!(plan(&p, &a), Plan::Nothing);
        a.status = AlertStatus::Firing as i32;
        a.r#type = "FeatureDrift".into();
        assert_eq!(plan(&p, &a), Plan::Nothing);
        assert_eq!(action_id("x", "scale"), action_id("x", "scale"));
        assert_ne!(action_id("x", "scale"), action_id("y", "scale"));
    }
}
