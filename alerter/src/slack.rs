//! Slack incoming-webhook messages: blocks with a plain-text fallback,
//! coloured by severity (DESIGN.md), with summary, value against threshold
//! and recommendations. Pure: builds JSON, sends nothing.

use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use serde_json::{Value, json};

/// Attachment colour per severity (resolved alerts are green).
pub fn colour(severity: Severity, status: AlertStatus) -> &'static str {
    if status == AlertStatus::Resolved {
        return "#00CC00";
    }
    match severity {
        Severity::Critical => "#FF0000",
        Severity::High => "#FF6600",
        Severity::Medium => "#FFCC00",
        Severity::Low | Severity::Unspecified => "#00CC00",
    }
}

fn label<'a>(alert: &'a Alert, key: &str) -> &'a str {
    alert.labels.get(key).map(String::as_str).unwrap_or("-")
}

/// One-line plain-text description of an alert, used as the fallback.
pub fn headline(alert: &Alert) -> String {
    let status = AlertStatus::try_from(alert.status).unwrap_or(AlertStatus::Unspecified);
    let severity = Severity::try_from(alert.severity).unwrap_or(Severity::Unspecified);
    let summary = alert.annotations.get("summary").cloned().unwrap_or_default();
    format!(
        "[{}] {} ({}) {} {}: {}",
        status.name().to_uppercase(),
        alert.r#type,
        severity.name(),
        label(alert, "model"),
        label(alert, "model_version"),
        summary
    )
}

/// The webhook payload for an alert.
pub fn message(alert: &Alert, channel: Option<&str>) -> Value {
    let status = AlertStatus::try_from(alert.status).unwrap_or(AlertStatus::Unspecified);
    let severity = Severity::try_from(alert.severity).unwrap_or(Severity::Unspecified);
    let title = match status {
        AlertStatus::Resolved => format!("Resolved: {}", alert.r#type),
        _ => format!("{} ({})", alert.r#type, severity.name()),
    };
    let summary = alert.annotations.get("summary").cloned().unwrap_or_default();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": title}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": summary}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Model*\n{} {}", label(alert, "model"), label(alert, "model_version"))},
            {"type": "mrkdwn", "text": format!("*Value*\n{:.2} (threshold {:.2})", alert.value, alert.threshold)},
            {"type": "mrkdwn", "text": format!("*Severity*\n{}", severity.name())},
            {"type": "mrkdwn", "text": format!("*Status*\n{}", status.name())},
        ]}),
    ];
    if !alert.recommendations.is_empty() && status != AlertStatus::Resolved {
        let recs: Vec<String> = alert.recommendations.iter().map(|r| format!("• {r}")).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Recommendations*\n{}", recs.join("\n"))}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("fingerprint `{}` · started {} ms", alert.fingerprint, alert.starts_at_ms)}
    ]}));
    let fallback = headline(alert);
    let mut msg = json!({
        "text": fallback,
        "attachments": [{
            "color": colour(severity, status),
            "fallback": fallback,
            "blocks": blocks,
        }],
    });
    if let Some(ch) = channel {
        msg["channel"] = json!(ch);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_follow_design() {
        assert_eq!(colour(Severity::Critical, AlertStatus::Firing), "#FF0000");
        assert_eq!(colour(Severity::High, AlertStatus::Firing), "#FF6600");
        assert_eq!(colour(Severity::Medium, AlertStatus::Firing), "#FFCC00");
        assert_eq!(colour(Severity::Low, AlertStatus::Firing), "#00CC00");
    }

    #[test]
    fn message_has_fallback_and_blocks() {
        let mut a = Alert {
            r#type: "HighP99Latency".into(),
            severity: Severity::High as i32,
            status: AlertStatus::Firing as i32,
            value: 431.0,
            threshold: 200.0,
            recommendations: vec!["scale up".into()],
            ..Default::default()
        };
        a.labels.insert("model".into(), "fraud".into());
        let m = message(&a, None);
        assert!(
            m["text"]
                .as_str()
                .unwrap()
                .contains("[FIRING] HighP99Latency (high) fraud")
        );
        assert_eq!(m["attachments"][0]["color"], "#FF6600");
        let blocks = m["attachments"][0]["blocks"].as_array().unwrap();
        assert!(
            blocks
                .iter()
                .any(|b| b.to_string().contains("431.00 (threshold 200.00)"))
        );
    }
}
