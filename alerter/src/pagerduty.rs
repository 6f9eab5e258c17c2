//! PagerDuty Events API v2 events: `trigger` for firing alerts,
//! `acknowledge` for acknowledged ones, `resolve` for resolved ones, each
//! with `dedup_key` = the alert fingerprint, so a resolve closes the same
//! incident and a resent event is absorbed by PagerDuty. Severity mapping
//! (DESIGN.md): critical→critical, high→error, medium→warning, low→info.
//! Pure.

use serde_json::{Value, json};

use crate::alert::AlertRecord;
use crate::engine::{Kind, Notification};

/// PagerDuty's severity for an mlwatch severity.
pub fn severity(s: &str) -> &'static str {
    match s {
        "critical" => "critical",
        "high" => "error",
        "medium" => "warning",
        _ => "info",
    }
}

/// RFC 3339 text of epoch milliseconds (Alertmanager's zero time for 0).
pub fn rfc3339(ms: i64) -> String {
    if ms <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

fn summary(a: &AlertRecord) -> String {
    let s = format!(
        "[{}] {} on {} {}: {}",
        a.severity.to_uppercase(),
        a.kind,
        a.label("model"),
        a.label("model_version"),
        if a.summary().is_empty() {
            format!("value {:.2}, threshold {:.2}", a.value, a.threshold)
        } else {
            a.summary().to_string()
        }
    );
    // PagerDuty truncates summaries at 1024 characters.
    s.chars().take(1024).collect()
}

fn trigger(a: &AlertRecord, routing_key: &str) -> Value {
    let model = a.label("model");
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": a.fingerprint,
        "payload": {
            "summary": summary(a),
            "source": if a.source.is_empty() { "mlwatch" } else { a.source.as_str() },
            "severity": severity(&a.severity),
            "timestamp": rfc3339(a.starts_at_ms),
            "component": model,
            "group": a.label("model_version"),
            "class": a.kind,
            "custom_details": {
                "labels": a.labels,
                "annotations": a.annotations,
                "value": a.value,
                "threshold": a.threshold,
                "recommendations": a.recommendations,
                "fingerprint": a.fingerprint,
            },
        },
        "client": "mlwatch",
    })
}

fn bare(action: &str, a: &AlertRecord, routing_key: &str) -> Value {
    json!({"routing_key": routing_key, "event_action": action, "dedup_key": a.fingerprint})
}

/// The events a notification makes, in order.
pub fn events(n: &Notification, routing_key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for a in &n.firing {
        out.push(match n.kind {
            Kind::Acknowledged => bare("acknowledge", a, routing_key),
            Kind::Notify | Kind::Escalation { .. } => trigger(a, routing_key),
        });
    }
    for a in &n.resolved {
        out.push(bare("resolve", a, routing_key));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Status, test_alert};
    use crate::template::test_notification;

    #[test]
    fn maps_severities_as_designed() {
        assert_eq!(
            ["critical", "high", "medium", "low"].map(severity),
            ["critical", "error", "warning", "info"]
        );
    }

    #[test]
    fn trigger_and_resolve_share_the_dedup_key() {
        let mut a = test_alert("fp1", "HighP99Latency", "high", "fraud");
        a.starts_at_ms = 1_795_723_079_957;
        let mut n = test_notification(vec![a.clone()]);
        let t = &events(&n, "key")[0];
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["dedup_key"], "fp1");
        assert_eq!(t["payload"]["severity"], "error");
        assert_eq!(t["payload"]["timestamp"], "2026-11-26T19:57:59.957Z");
        assert_eq!(t["payload"]["class"], "HighP99Latency");
        let mut r = a;
        r.status = Status::Resolved;
        n.firing = vec![];
        n.resolved = vec![r];
        let e = &events(&n, "key")[0];
        assert_eq!(
            e,
            &json!({"routing_key": "key", "event_action": "resolve", "dedup_key": "fp1"})
        );
    }
}
