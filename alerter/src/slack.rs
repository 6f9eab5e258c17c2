//! Slack incoming-webhook messages: a plain-text fallback (`text`) and one
//! attachment per alert, coloured by severity (DESIGN.md), with blocks for
//! the summary, the value against its threshold and the recommendations.
//! Pure: builds JSON, sends nothing.

use serde_json::{Value, json};

use crate::alert::{AlertRecord, Status};
use crate::engine::{Kind, Notification};
use crate::template;

/// Attachment colour per severity (resolved alerts are green).
pub fn colour(severity: &str, status: Status) -> &'static str {
    if status == Status::Resolved {
        return "#00CC00";
    }
    match severity {
        "critical" => "#FF0000",
        "high" => "#FF6600",
        "medium" => "#FFCC00",
        _ => "#00CC00",
    }
}

/// One-line plain-text description of an alert.
pub fn headline(alert: &AlertRecord) -> String {
    format!(
        "[{}] {} ({}) {} {}: {}",
        alert.status.as_str().to_uppercase(),
        alert.kind,
        alert.severity,
        alert.label("model"),
        alert.label("model_version"),
        alert.summary()
    )
}

fn blocks(alert: &AlertRecord) -> Vec<Value> {
    let title = match alert.status {
        Status::Resolved => format!("Resolved: {}", alert.kind),
        Status::Firing => format!("{} ({})", alert.kind, alert.severity),
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": title}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": if alert.summary().is_empty() { "-" } else { alert.summary() }}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Model*\n{} {}", alert.label("model"), alert.label("model_version"))},
            {"type": "mrkdwn", "text": format!("*Value*\n{:.2} (threshold {:.2})", alert.value, alert.threshold)},
            {"type": "mrkdwn", "text": format!("*Severity*\n{}", alert.severity)},
            {"type": "mrkdwn", "text": format!("*Status*\n{}", alert.status.as_str())},
        ]}),
    ];
    if !alert.recommendations.is_empty() && alert.is_firing() {
        let recs: Vec<String> = alert.recommendations.iter().map(|r| format!("• {r}")).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Recommendations*\n{}", recs.join("\n"))}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("fingerprint `{}` · started {} ms", alert.fingerprint, alert.starts_at_ms)}
    ]}));
    blocks
}

/// The plain-text fallback of a whole notification.
pub fn fallback(n: &Notification) -> String {
    let alerts: Vec<&AlertRecord> = n.alerts().collect();
    let base = match alerts.as_slice() {
        [one] => headline(one),
        _ => format!(
            "[{}:{}] {} ({}) {}",
            n.status().as_str().to_uppercase(),
            alerts.len(),
            template::alert_type(n),
            template::highest_severity(n),
            template::render("{{group}}", n),
        ),
    };
    match (&n.kind, &n.ack) {
        (Kind::Escalation { level }, _) => format!("[ESCALATED {level}] {base}"),
        (Kind::Acknowledged, Some(ack)) => format!("[ACKNOWLEDGED by {}] {base}", ack.by),
        _ => base,
    }
}

/// The webhook payload; `text_template` replaces the fallback text.
pub fn message(n: &Notification, channel: Option<&str>, text_template: Option<&str>) -> Value {
    let text = match text_template {
        Some(t) => template::render(t, n),
        None => fallback(n),
    };
    let attachments: Vec<Value> = n
        .alerts()
        .map(|a| {
            json!({
                "color": colour(&a.severity, a.status),
                "fallback": headline(a),
                "blocks": blocks(a),
            })
        })
        .collect();
    let mut msg = json!({"text": text, "attachments": attachments});
    if let Some(ch) = channel {
        msg["channel"] = json!(ch);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::test_alert;
    use crate::template::test_notification;

    #[test]
    fn colours_follow_design() {
        assert_eq!(colour("critical", Status::Firing), "#FF0000");
        assert_eq!(colour("high", Status::Firing), "#FF6600");
        assert_eq!(colour("medium", Status::Firing), "#FFCC00");
        assert_eq!(colour("low", Status::Firing), "#00CC00");
        assert_eq!(colour("critical", Status::Resolved), "#00CC00");
    }

    #[test]
    fn message_has_fallback_and_blocks() {
        let mut a = test_alert("fp", "HighP99Latency", "high", "fraud");
        a.value = 431.0;
        a.threshold = 200.0;
        a.recommendations = vec!["scale up".into()];
        let m = message(&test_notification(vec![a]), Some("#ml"), None);
        let text = m["text"].as_str().unwrap();
        assert!(text.starts_with("[FIRING] HighP99Latency (high) fraud"), "{text}");
        assert_eq!(m["channel"], "#ml");
        assert_eq!(m["attachments"][0]["color"], "#FF6600");
        let blocks = m["attachments"][0]["blocks"].to_string();
        assert!(blocks.contains("431.00 (threshold 200.00)"), "{blocks}");
        assert!(blocks.contains("scale up"), "{blocks}");
    }

    #[test]
    fn group_message_counts_and_colours_each_alert() {
        let n = test_notification(vec![
            test_alert("a", "HighP99Latency", "critical", "fraud"),
            test_alert("b", "FeatureDrift", "medium", "fraud"),
        ]);
        let m = message(&n, None, None);
        assert_eq!(m["text"], "[FIRING:2] 2 types (critical) model=fraud");
        assert_eq!(m["attachments"][0]["color"], "#FF0000");
        assert_eq!(m["attachments"][1]["color"], "#FFCC00");
        let custom = message(&n, None, Some("{{severity}} on {{model}}"));
        assert_eq!(custom["text"], "CRITICAL on fraud");
    }
}
