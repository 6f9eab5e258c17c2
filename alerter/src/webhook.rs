//! Generic webhooks in Alertmanager's webhook v4 JSON, and alerts for an
//! Alertmanager's `POST /api/v2/alerts`. Pure.

use serde_json::{Map, Value, json};

use crate::alert::AlertRecord;
use crate::engine::Notification;
use crate::matcher::Labels;
use crate::pagerduty::rfc3339;

fn common(maps: &[Labels]) -> Labels {
    let Some((first, rest)) = maps.split_first() else {
        return Labels::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn annotations(a: &AlertRecord) -> Labels {
    let mut ann = a.annotations.clone();
    ann.insert("value".into(), format!("{}", a.value));
    ann.insert("threshold".into(), format!("{}", a.threshold));
    if !a.recommendations.is_empty() {
        ann.insert("recommendations".into(), a.recommendations.join("; "));
    }
    ann
}

/// The webhook v4 body; at most `max_alerts` alerts (0 = all), the rest
/// counted in `truncatedAlerts`.
pub fn v4(n: &Notification, receiver: &str, external_url: &str, max_alerts: usize) -> Value {
    let all: Vec<&AlertRecord> = n.alerts().collect();
    let labels: Vec<Labels> = all.iter().map(|a| a.match_labels()).collect();
    let anns: Vec<Labels> = all.iter().map(|a| annotations(a)).collect();
    let keep = if max_alerts == 0 {
        all.len()
    } else {
        max_alerts.min(all.len())
    };
    let alerts: Vec<Value> = all
        .iter()
        .take(keep)
        .map(|a| {
            json!({
                "status": a.status.as_str(),
                "labels": a.match_labels(),
                "annotations": annotations(a),
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": rfc3339(a.ends_at_ms),
                "generatorURL": "",
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": all.len() - keep,
        "status": n.status().as_str(),
        "receiver": receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(&labels),
        "commonAnnotations": common(&anns),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// The body of Alertmanager's `POST /api/v2/alerts`: resolved alerts carry
/// their end, firing ones an `endsAt` `ends_after_ms` after the message was
/// made, so they stay firing only while re-sent.
pub fn alertmanager(n: &Notification, ends_after_ms: u64) -> Value {
    let alerts: Vec<Value> = n
        .alerts()
        .map(|a| {
            let mut m = Map::new();
            m.insert("labels".into(), json!(a.match_labels()));
            m.insert("annotations".into(), json!(annotations(a)));
            m.insert("startsAt".into(), json!(rfc3339(a.starts_at_ms)));
            let ends = if a.is_firing() {
                n.created_at_ms + ends_after_ms as i64
            } else {
                a.ends_at_ms.max(a.starts_at_ms)
            };
            m.insert("endsAt".into(), json!(rfc3339(ends)));
            m.insert("generatorURL".into(), json!(""));
            Value::Object(m)
        })
        .collect();
    Value::Array(alerts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::test_alert;
    use crate::template::test_notification;

    #[test]
    fn v4_has_the_documented_fields() {
        let n = test_notification(vec![
            test_alert("a", "HighP99Latency", "high", "fraud"),
            test_alert("b", "FeatureDrift", "high", "fraud"),
        ]);
        let v = v4(&n, "hook", "http://alerter", 1);
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["receiver"], "hook");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["groupLabels"]["model"], "fraud");
        assert_eq!(v["commonLabels"], json!({"model": "fraud", "severity": "high"}));
        assert_eq!(v["alerts"][0]["labels"]["alertname"], "HighP99Latency");
        assert_eq!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(v["alerts"][0]["fingerprint"], "a");
    }

    #[test]
    fn alertmanager_alerts_end_ahead_while_firing_and_at_their_end_when_resolved() {
        let mut r = test_alert("b", "FeatureDrift", "medium", "fraud");
        r.status = crate::alert::Status::Resolved;
        r.ends_at_ms = 1_000;
        let mut n = test_notification(vec![test_alert("a", "HighP99Latency", "high", "fraud")]);
        n.resolved = vec![r];
        n.created_at_ms = 60_000;
        let v = alertmanager(&n, 240_000);
        assert_eq!(v[0]["labels"]["alertname"], "HighP99Latency");
        assert_eq!(v[0]["endsAt"], "1970-01-01T00:05:00Z");
        assert_eq!(v[1]["endsAt"], "1970-01-01T00:00:01Z");
    }
}
