//! The alerts this instance published: the active ones of every signal per
//! owned partition (checkpointed with the partition, so a restart or a
//! partition move keeps them) and the most recent ones of this process
//! (not checkpointed; [`RECENT`] at most), as the alerts API serves them.

use std::collections::{BTreeMap, VecDeque};

use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use serde::{Deserialize, Serialize};

/// Most recent alert transitions kept per process.
pub const RECENT: usize = 1000;

/// One published alert transition, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub id: String,
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub alert_type: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub severity: String,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
    pub starts_at_ms: i64,
    #[serde(default)]
    pub ends_at_ms: i64,
    pub generated_at_ms: i64,
}

impl AlertRecord {
    pub fn of(alert: &Alert) -> Self {
        Self {
            id: alert.id.clone(),
            fingerprint: alert.fingerprint.clone(),
            alert_type: alert.r#type.clone(),
            status: AlertStatus::try_from(alert.status)
                .map(|s| s.name())
                .unwrap_or("unspecified")
                .to_string(),
            severity: Severity::try_from(alert.severity)
                .map(|s| s.name())
                .unwrap_or("unspecified")
                .to_string(),
            labels: alert.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            summary: alert.annotations.get("summary").cloned().unwrap_or_default(),
            value: alert.value,
            threshold: alert.threshold,
            starts_at_ms: alert.starts_at_ms,
            ends_at_ms: alert.ends_at_ms,
            generated_at_ms: alert.generated_at_ms,
        }
    }

    fn model(&self) -> &str {
        self.labels.get("model").map_or("", String::as_str)
    }

    /// Whether the alert is of `model` (all when `None`).
    pub fn is_of(&self, model: Option<&str>) -> bool {
        model.is_none_or(|m| self.model() == m)
    }

    /// Whether the alert concerns a series: same model and version, and the
    /// same segment when the alert names one.
    pub fn concerns(&self, model: &str, version: &str, segment: &str) -> bool {
        self.model() == model
            && self.labels.get("model_version").is_none_or(|v| v == version)
            && self.labels.get("segment").map_or(segment.is_empty(), |s| s == segment)
    }
}

/// Active alerts by owned partition and fingerprint, recent ones of the
/// process.
#[derive(Debug, Default)]
pub struct AlertBook {
    active: BTreeMap<i32, BTreeMap<String, AlertRecord>>,
    recent: VecDeque<AlertRecord>,
}

impl AlertBook {
    /// Records an alert of partition `p` once the broker acknowledged it.
    pub fn published(&mut self, p: i32, alert: &Alert) {
        let record = AlertRecord::of(alert);
        let active = self.active.entry(p).or_default();
        if alert.status == AlertStatus::Resolved as i32 {
            active.remove(&record.fingerprint);
        } else {
            active.insert(record.fingerprint.clone(), record.clone());
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(record);
    }

    /// Partition `p`'s active alerts (for its checkpoint).
    pub fn checkpoint(&self, p: i32) -> Vec<AlertRecord> {
        self.active
            .get(&p)
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Takes partition `p`'s active alerts from its checkpoint.
    pub fn restore(&mut self, p: i32, active: Vec<AlertRecord>) {
        self.active
            .insert(p, active.into_iter().map(|a| (a.fingerprint.clone(), a)).collect());
    }

    /// Forgets partition `p` (revoked: its next owner has them).
    pub fn remove(&mut self, p: i32) {
        self.active.remove(&p);
    }

    /// Active alerts of `model` (all when `None`), oldest first.
    pub fn active(&self, model: Option<&str>) -> Vec<&AlertRecord> {
        let mut out: Vec<&AlertRecord> = self
            .active
            .values()
            .flat_map(|a| a.values())
            .filter(|a| a.is_of(model))
            .collect();
        out.sort_by(|a, b| (a.starts_at_ms, &a.fingerprint).cmp(&(b.starts_at_ms, &b.fingerprint)));
        out
    }

    /// The most recent transitions of `model` (all when `None`), newest
    /// first, at most `limit`.
    pub fn recent(&self, model: Option<&str>, limit: usize) -> Vec<&AlertRecord> {
        self.recent
            .iter()
            .rev()
            .filter(|a| a.is_of(model))
            .take(limit)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(fp: &str, model: &str, status: AlertStatus, t: i64) -> Alert {
        Alert {
            id: format!("{fp}-{t}"),
            fingerprint: fp.into(),
            status: status as i32,
            r#type: "AccuracyDecay".into(),
            severity: Severity::High as i32,
            labels: [("model", model), ("model_version", "v1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at_ms: t,
            ..Default::default()
        }
    }

    #[test]
    fn firing_then_resolved_leaves_the_active_set_and_survives_a_checkpoint() {
        let mut book = AlertBook::default();
        book.published(0, &alert("a", "fraud", AlertStatus::Firing, 1));
        book.published(0, &alert("b", "recsys", AlertStatus::Firing, 2));
        assert_eq!(book.active(None).len(), 2);
        assert_eq!(book.active(Some("fraud"))[0].alert_type, "AccuracyDecay");
        book.published(0, &alert("a", "fraud", AlertStatus::Resolved, 1));
        assert!(book.active(Some("fraud")).is_empty());
        assert_eq!(book.recent(Some("fraud"), 10).len(), 2);
        assert_eq!(book.recent(Some("fraud"), 10)[0].status, "resolved");

        let saved = serde_json::to_string(&book.checkpoint(0)).unwrap();
        let mut moved = AlertBook::default();
        moved.restore(0, serde_json::from_str(&saved).unwrap());
        assert_eq!(moved.active(None), book.active(None));
        moved.remove(0);
        assert!(moved.active(None).is_empty());
    }

    #[test]
    fn recent_is_bounded_and_series_match_by_labels() {
        let mut book = AlertBook::default();
        for t in 0..(RECENT as i64 + 10) {
            book.published(1, &alert("x", "fraud", AlertStatus::Firing, t));
        }
        assert_eq!(book.recent(None, usize::MAX).len(), RECENT);
        let a = AlertRecord::of(&alert("x", "fraud", AlertStatus::Firing, 0));
        assert!(a.concerns("fraud", "v1", ""));
        assert!(!a.concerns("fraud", "v2", ""));
        assert!(!a.concerns("fraud", "v1", "region=eu"));
    }
}
