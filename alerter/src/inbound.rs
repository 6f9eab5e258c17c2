//! Alerts from a Prometheus, taken as an Alertmanager takes them
//! (`POST /api/v2/alerts`, a JSON array of postable alerts), so the rules a
//! Prometheus evaluates page through the alerter's routes, silences and
//! receivers. Pure.
//!
//! - The fingerprint is a hash of the label set, as in Alertmanager: the same
//!   labels are the same alert, whatever else changes.
//! - `alertname` becomes the alert type; a `severity` label of `critical`,
//!   `high`, `medium` or `low` its severity, anything else `medium`.
//! - `model_name` (the metrics' label) is filed as `model` (the alerts'
//!   label) when `model` is absent, so one route matches both.
//! - An alert whose `endsAt` is in the past is resolved. A firing one expires
//!   at its `endsAt`, or `resolve_timeout` after it was received when it has
//!   none; a Prometheus re-sends firing alerts, which renews them.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::alert::{AlertRecord, Status};
use crate::error::AlerterError;
use crate::matcher::Labels;

/// The `source` of alerts taken from a Prometheus.
pub const SOURCE: &str = "prometheus";

/// Most alerts one request may carry.
pub const MAX_ALERTS: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Postable {
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: Option<String>,
}

/// The id of one incident of an alert taken from a Prometheus.
pub fn alert_id(fingerprint: &str, starts_at_ms: i64, status: Status) -> String {
    format!("{fingerprint}-{starts_at_ms}-{}", status.as_str())
}

fn fingerprint(labels: &Labels) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Epoch milliseconds of an RFC 3339 time; `None` for Alertmanager's zero
/// time (`0001-01-01T00:00:00Z`) and an empty string.
fn parse_time(text: &str, field: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| format!("{field}: {text:?} is not RFC 3339: {e}"))?;
    if t.year() <= 1 {
        return Ok(None);
    }
    Ok(Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
}

fn record(p: Postable, now_ms: i64, resolve_timeout_ms: u64) -> Result<AlertRecord, String> {
    let mut labels = p.labels;
    if let Some(bad) = labels.keys().find(|k| !valid_label_name(k)) {
        return Err(format!("labels: {bad:?} is not a valid label name"));
    }
    let Some(kind) = labels.get("alertname").filter(|v| !v.is_empty()).cloned() else {
        return Err("labels: alertname is missing or empty".into());
    };
    let starts = parse_time(p.starts_at.as_deref().unwrap_or(""), "startsAt")?;
    let ends = parse_time(p.ends_at.as_deref().unwrap_or(""), "endsAt")?;
    if let (Some(s), Some(e)) = (starts, ends)
        && e < s
    {
        return Err("endsAt: before startsAt".into());
    }
    let fingerprint = fingerprint(&labels);
    let severity = match labels.get("severity").map(String::as_str) {
        Some(s @ ("critical" | "high" | "medium" | "low")) => s.to_string(),
        _ => "medium".to_string(),
    };
    if !labels.contains_key("model")
        && let Some(model) = labels.get("model_name").cloned()
    {
        labels.insert("model".into(), model);
    }
    // Routes match `severity`, `type` and `alertname` from the record's own fields.
    for derived in ["alertname", "severity", "type"] {
        labels.remove(derived);
    }
    let mut annotations = p.annotations;
    if let Some(url) = p.generator_url.filter(|u| !u.is_empty()) {
        annotations.insert("generator_url".into(), url);
    }
    let starts_at_ms = starts.unwrap_or(now_ms);
    let resolved = ends.is_some_and(|e| e <= now_ms);
    let status = if resolved { Status::Resolved } else { Status::Firing };
    Ok(AlertRecord {
        id: alert_id(&fingerprint, starts_at_ms, status),
        fingerprint,
        status,
        kind,
        severity,
        labels,
        annotations,
        value: 0.0,
        threshold: 0.0,
        starts_at_ms,
        ends_at_ms: if resolved { ends.unwrap_or(now_ms) } else { 0 },
        recommendations: vec![],
        source: SOURCE.into(),
        generated_at_ms: now_ms,
        expires_at_ms: if resolved {
            0
        } else {
            ends.unwrap_or(now_ms + resolve_timeout_ms as i64)
        },
    })
}

/// Parses a `POST /api/v2/alerts` body. Any invalid alert rejects the whole
/// request (as Alertmanager does), naming its index and field.
pub fn parse(body: &[u8], now_ms: i64, resolve_timeout_ms: u64) -> Result<Vec<AlertRecord>, AlerterError> {
    let invalid = |msg: String| AlerterError::Invalid(msg);
    let items: Vec<Value> = serde_json::from_slice(body).map_err(|e| invalid(format!("body: {e}")))?;
    if items.len() > MAX_ALERTS {
        return Err(invalid(format!(
            "body: {} alerts in one request, at most {MAX_ALERTS}",
            items.len()
        )));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let p: Postable = serde_json::from_value(v).map_err(|e| invalid(format!("alerts[{i}]: {e}")))?;
            record(p, now_ms, resolve_timeout_ms).map_err(|e| invalid(format!("alerts[{i}].{e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn one(body: &str) -> Result<AlertRecord, AlerterError> {
        parse(body.as_bytes(), NOW, 300_000).map(|mut v| v.remove(0))
    }

    #[test]
    fn a_firing_alert_without_end_expires_after_the_resolve_timeout() {
        let a = one(
            r#"[{"labels":{"alertname":"MlwatchServiceDown","severity":"critical","job":"mlwatch-analyzer"},
                "annotations":{"summary":"down"},"startsAt":"2023-11-14T22:13:00Z",
                "generatorURL":"http://prometheus/graph"}]"#,
        )
        .unwrap();
        assert_eq!(a.kind, "MlwatchServiceDown");
        assert_eq!(a.severity, "critical");
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.starts_at_ms, 1_699_999_980_000);
        assert_eq!(a.expires_at_ms, NOW + 300_000);
        assert_eq!(a.ends_at_ms, 0);
        assert_eq!(a.labels.get("job").unwrap(), "mlwatch-analyzer");
        assert!(!a.labels.contains_key("alertname"));
        assert_eq!(a.match_labels().get("alertname").unwrap(), "MlwatchServiceDown");
        assert_eq!(a.annotations.get("generator_url").unwrap(), "http://prometheus/graph");
        assert_eq!(a.source, SOURCE);
    }

    #[test]
    fn the_fingerprint_depends_on_the_labels_only() {
        let a = one(r#"[{"labels":{"alertname":"X","a":"1"},"startsAt":"2023-11-14T22:13:00Z"}]"#).unwrap();
        let b = one(r#"[{"labels":{"a":"1","alertname":"X"},"annotations":{"s":"other"}}]"#).unwrap();
        let c = one(r#"[{"labels":{"alertname":"X","a":"2"}}]"#).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, c.fingerprint);
        assert_eq!(a.fingerprint.len(), 16);
    }

    #[test]
    fn an_end_in_the_past_resolves_and_one_in_the_future_expires_then() {
        let past = one(r#"[{"labels":{"alertname":"X"},"endsAt":"2023-11-14T22:13:00Z"}]"#).unwrap();
        assert_eq!(past.status, Status::Resolved);
        assert_eq!(past.ends_at_ms, 1_699_999_980_000);
        assert!(past.id.ends_with("-resolved"));
        let future = one(r#"[{"labels":{"alertname":"X"},"endsAt":"2023-11-14T22:20:00.5Z"}]"#).unwrap();
        assert_eq!(future.status, Status::Firing);
        assert_eq!(future.expires_at_ms, 1_700_000_400_500);
        let zero = one(r#"[{"labels":{"alertname":"X"},"endsAt":"0001-01-01T00:00:00Z"}]"#).unwrap();
        assert_eq!(zero.expires_at_ms, NOW + 300_000);
    }

    #[test]
    fn model_name_is_filed_as_model_and_unknown_severity_is_medium() {
        let a = one(r#"[{"labels":{"alertname":"X","model_name":"fraud","severity":"page"}}]"#).unwrap();
        assert_eq!(a.labels.get("model").unwrap(), "fraud");
        assert_eq!(a.severity, "medium");
    }

    #[test]
    fn invalid_alerts_name_their_index_and_field() {
        let cases = [
            (r#"{"labels":{}}"#, "body:"),
            (
                r#"[{"labels":{"alertname":"X"}},{"labels":{"job":"a"}}]"#,
                "alerts[1].labels: alertname",
            ),
            (
                r#"[{"labels":{"alertname":"X","bad-name":"1"}}]"#,
                "alerts[0].labels: \"bad-name\"",
            ),
            (
                r#"[{"labels":{"alertname":"X"},"startsAt":"yesterday"}]"#,
                "alerts[0].startsAt",
            ),
            (
                r#"[{"labels":{"alertname":"X"},"startsAt":"2023-11-14T22:13:00Z","endsAt":"2023-11-14T22:12:00Z"}]"#,
                "alerts[0].endsAt: before startsAt",
            ),
            (
                r#"[{"labels":{"alertname":"X"},"extra":1}]"#,
                "alerts[0]: unknown field `extra`",
            ),
            (r#"[{"annotations":{}}]"#, "alerts[0]: missing field `labels`"),
        ];
        for (body, want) in cases {
            let err = parse(body.as_bytes(), NOW, 1).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err} lacks {want}");
        }
    }
}
