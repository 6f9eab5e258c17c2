//! Message templates: text with `{{placeholder}}`s filled from a
//! notification. Unknown placeholders are refused when the configuration
//! is loaded, so a typo never reaches a pager. Pure.
//!
//! Placeholders: `status` (FIRING/RESOLVED), `severity` (highest,
//! uppercase), `severity_lower`, `type` (of the first alert; `N types`
//! when they differ), `model`, `count`, `firing_count`, `resolved_count`,
//! `summary` (first alert), `receiver`, `kind` (notify, escalation,
//! acknowledged), `group` (the group labels), `labels.NAME` (first alert).

use crate::alert::AlertRecord;
use crate::engine::Notification;
use crate::error::AlerterError;

const NAMES: &[&str] = &[
    "status",
    "severity",
    "severity_lower",
    "type",
    "model",
    "count",
    "firing_count",
    "resolved_count",
    "summary",
    "receiver",
    "kind",
    "group",
];

fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        _ => 1,
    }
}

/// The highest severity among the notification's alerts.
pub fn highest_severity(n: &Notification) -> &str {
    n.alerts()
        .map(|a| a.severity.as_str())
        .max_by_key(|s| rank(s))
        .unwrap_or("low")
}

/// The alert type, or `N types` when they differ.
pub fn alert_type(n: &Notification) -> String {
    let mut types: Vec<&str> = n.alerts().map(|a| a.kind.as_str()).collect();
    types.sort();
    types.dedup();
    match types.as_slice() {
        [] => "-".into(),
        [one] => (*one).to_string(),
        many => format!("{} types", many.len()),
    }
}

fn first(n: &Notification) -> Option<&AlertRecord> {
    n.alerts().next()
}

/// Checks that every placeholder is known; names the first unknown one.
pub fn validate(template: &str) -> Result<(), AlerterError> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| AlerterError::Invalid(format!("template {template:?}: unclosed {{{{")))?;
        let name = after[..end].trim();
        if !NAMES.contains(&name) && !name.starts_with("labels.") {
            return Err(AlerterError::Invalid(format!(
                "template {template:?}: unknown placeholder {name:?}"
            )));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

fn value(name: &str, n: &Notification) -> String {
    let status = n.status().as_str();
    match name {
        "status" => status.to_uppercase(),
        "severity" => highest_severity(n).to_uppercase(),
        "severity_lower" => highest_severity(n).to_string(),
        "type" => alert_type(n),
        "model" => first(n).map(|a| a.label("model").to_string()).unwrap_or_default(),
        "count" => n.alerts().count().to_string(),
        "firing_count" => n.firing.len().to_string(),
        "resolved_count" => n.resolved.len().to_string(),
        "summary" => first(n).map(|a| a.summary().to_string()).unwrap_or_default(),
        "receiver" => n.receiver.clone(),
        "kind" => n.kind.name().into(),
        "group" => n
            .group_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        other => other
            .strip_prefix("labels.")
            .and_then(|l| first(n).and_then(|a| a.labels.get(l).cloned()))
            .unwrap_or_default(),
    }
}

/// Fills a (validated) template.
pub fn render(template: &str, n: &Notification) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&value(after[..end].trim(), n));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
use crate::engine::Kind;

#[cfg(test)]
pub(crate) fn test_notification(alerts: Vec<AlertRecord>) -> Notification {
    Notification {
        id: "000000000001-abc".into(),
        receiver: "email".into(),
        kind: Kind::Notify,
        group_id: "abc".into(),
        group_key: "0|email|{model=\"fraud\"}".into(),
        group_labels: [("model".to_string(), "fraud".to_string())].into(),
        group_created_ms: 1_700_000_000_000,
        thread_seq: 1,
        firing: alerts,
        resolved: vec![],
        ack: None,
        created_at_ms: 1_700_000_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::test_alert;

    #[test]
    fn renders_the_design_subject() {
        let n = test_notification(vec![
            test_alert("a", "HighP99Latency", "high", "fraud"),
            test_alert("b", "HighP99Latency", "critical", "fraud"),
        ]);
        assert_eq!(
            render("[ML Alert - {{severity}}] {{type}}", &n),
            "[ML Alert - CRITICAL] HighP99Latency"
        );
        assert_eq!(
            render("{{status}} {{count}} {{ labels.model }} {{group}}", &n),
            "FIRING 2 fraud model=fraud"
        );
    }

    #[test]
    fn unknown_placeholders_are_refused_by_name() {
        assert!(validate("[{{severity}}] {{type}} {{labels.x}}").is_ok());
        let e = validate("{{sevrity}}").unwrap_err().to_string();
        assert!(e.contains("unknown placeholder \"sevrity\""), "{e}");
        assert!(validate("{{type").is_err());
    }
}
