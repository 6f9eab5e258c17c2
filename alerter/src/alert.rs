//! The alerter's own view of an alert: the protobuf `Alert` flattened into a
//! serde record that the engine keeps, the store persists and the channels
//! render. Pure.

use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use serde::{Deserialize, Serialize};

use crate::matcher::Labels;

/// An alert as the alerter keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub fingerprint: String,
    /// `firing` or `resolved`.
    pub status: Status,
    /// Alert type, e.g. `HighP99Latency`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `critical`, `high`, `medium`, `low`.
    pub severity: String,
    pub labels: Labels,
    pub annotations: Labels,
    pub value: f64,
    pub threshold: f64,
    pub starts_at_ms: i64,
    /// 0 while firing.
    pub ends_at_ms: i64,
    pub recommendations: Vec<String>,
    pub source: String,
    pub generated_at_ms: i64,
    /// For alerts whose sender renews them (a Prometheus): when the alert
    /// resolves unless renewed before; 0 = only an explicit resolve ends it.
    #[serde(default)]
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

use crate::error::AlerterError;

/// The lowercase name of a severity (`unspecified` maps to `low`).
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low | Severity::Unspecified => "low",
    }
}

impl AlertRecord {
    /// Validates and converts a protobuf alert.
    pub fn from_proto(a: &Alert) -> Result<Self, AlerterError> {
        if a.fingerprint.is_empty() {
            return Err(AlerterError::InvalidAlert("alert without fingerprint".into()));
        }
        if a.id.is_empty() {
            return Err(AlerterError::InvalidAlert("alert without id".into()));
        }
        if a.r#type.is_empty() {
            return Err(AlerterError::InvalidAlert("alert without type".into()));
        }
        let status = match AlertStatus::try_from(a.status) {
            Ok(AlertStatus::Firing) => Status::Firing,
            Ok(AlertStatus::Resolved) => Status::Resolved,
            _ => {
                return Err(AlerterError::InvalidAlert(format!(
                    "alert {} has unknown status {}",
                    a.fingerprint, a.status
                )));
            }
        };
        let severity = Severity::try_from(a.severity).unwrap_or(Severity::Unspecified);
        Ok(Self {
            id: a.id.clone(),
            fingerprint: a.fingerprint.clone(),
            status,
            kind: a.r#type.clone(),
            severity: severity_name(severity).to_string(),
            labels: a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            annotations: a.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            value: a.value,
            threshold: a.threshold,
            starts_at_ms: a.starts_at_ms,
            ends_at_ms: a.ends_at_ms,
            recommendations: a.recommendations.clone(),
            source: a.source.clone(),
            generated_at_ms: a.generated_at_ms,
            expires_at_ms: 0,
        })
    }

    /// The labels routes, silences and inhibition rules match on: the
    /// alert's labels plus `severity`, `type` and `alertname` (= type).
    pub fn match_labels(&self) -> Labels {
        let mut l = self.labels.clone();
        l.insert("severity".into(), self.severity.clone());
        l.insert("type".into(), self.kind.clone());
        l.insert("alertname".into(), self.kind.clone());
        l
    }

    /// A label's value or `-`.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("-")
    }

    pub fn summary(&self) -> &str {
        self.annotations.get("summary").map(String::as_str).unwrap_or("")
    }

    pub fn is_firing(&self) -> bool {
        self.status == Status::Firing
    }
}

#[cfg(test)]
pub(crate) fn test_alert(fingerprint: &str, kind: &str, severity: &str, model: &str) -> AlertRecord {
    let mut labels = Labels::new();
    labels.insert("model".into(), model.into());
    AlertRecord {
        id: format!("{fingerprint}-firing"),
        fingerprint: fingerprint.into(),
        status: Status::Firing,
        kind: kind.into(),
        severity: severity.into(),
        labels,
        annotations: Labels::new(),
        value: 1.0,
        threshold: 0.5,
        starts_at_ms: 0,
        ends_at_ms: 0,
        recommendations: vec![],
        source: "test".into(),
        generated_at_ms: 0,
        expires_at_ms: 0,
    }
}
