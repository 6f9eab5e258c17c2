//! Email messages: subject from a template (default
//! `[ML Alert - SEVERITY] type`), a plain-text body, and one thread per
//! group: the first message of a group to a receiver has Message-ID
//! `<group.created@mlwatch>`; later ones get their own id and point to the
//! first with In-Reply-To and References. Message ids derive from the
//! notification id, so a message resent after a crash carries the same
//! Message-ID. Pure.

use std::time::{Duration, UNIX_EPOCH};

use lettre::Message;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;

use crate::engine::{Kind, Notification};
use crate::error::AlerterError;
use crate::slack::headline;
use crate::template;

pub const DEFAULT_SUBJECT: &str = "[ML Alert - {{severity}}] {{type}}";

/// The Message-ID of the first message of the notification's thread.
pub fn thread_root(n: &Notification) -> String {
    format!("<{}.{}.{}@mlwatch>", n.group_id, n.group_created_ms, n.receiver)
}

/// The Message-ID of this notification's message.
pub fn message_id(n: &Notification) -> String {
    if n.thread_seq <= 1 {
        thread_root(n)
    } else {
        format!("<{}@mlwatch>", n.id)
    }
}

/// The plain-text body.
pub fn body(n: &Notification) -> String {
    let mut out = String::new();
    match (&n.kind, &n.ack) {
        (Kind::Escalation { level }, _) => out.push_str(&format!(
            "ESCALATION level {level}: these alerts are not acknowledged.\n\n"
        )),
        (Kind::Acknowledged, Some(ack)) => out.push_str(&format!("Acknowledged by {}: {}\n\n", ack.by, ack.comment)),
        _ => {}
    }
    for a in n.alerts() {
        out.push_str(&headline(a));
        out.push('\n');
        out.push_str(&format!(
            "  value {:.2} (threshold {:.2}), severity {}, fingerprint {}\n",
            a.value, a.threshold, a.severity, a.fingerprint
        ));
        for (k, v) in &a.labels {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        if a.is_firing() {
            for r in &a.recommendations {
                out.push_str(&format!("  recommendation: {r}\n"));
            }
        }
        out.push('\n');
    }
    out
}

/// Builds the message.
pub fn build(
    n: &Notification,
    from: &Mailbox,
    to: &[Mailbox],
    subject_template: &str,
) -> Result<Message, AlerterError> {
    let bad = |reason: String| AlerterError::Render {
        channel: "email",
        reason,
    };
    let mut b = Message::builder()
        .from(from.clone())
        .subject(template::render(subject_template, n))
        .message_id(Some(message_id(n)))
        .date(UNIX_EPOCH + Duration::from_millis(n.created_at_ms.max(0) as u64))
        .header(ContentType::TEXT_PLAIN);
    for rcpt in to {
        b = b.to(rcpt.clone());
    }
    if n.thread_seq > 1 {
        b = b.in_reply_to(thread_root(n)).references(thread_root(n));
    }
    b.body(body(n)).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::test_alert;
    use crate::template::test_notification;

    #[test]
    fn threads_per_group_and_uses_the_design_subject() {
        let from: Mailbox = "mlwatch <alerts@example.org>".parse().unwrap();
        let to: Vec<Mailbox> = vec!["oncall@example.org".parse().unwrap()];
        let mut n = test_notification(vec![test_alert("a", "HighP99Latency", "high", "fraud")]);
        let first = String::from_utf8(build(&n, &from, &to, DEFAULT_SUBJECT).unwrap().formatted()).unwrap();
        assert!(
            first.contains("Subject: [ML Alert - HIGH] HighP99Latency\r\n"),
            "{first}"
        );
        assert!(
            first.contains(&format!("Message-ID: {}\r\n", thread_root(&n))),
            "{first}"
        );
        assert!(!first.contains("In-Reply-To"));
        n.thread_seq = 2;
        n.id = "000000000009-abc".into();
        let second = String::from_utf8(build(&n, &from, &to, DEFAULT_SUBJECT).unwrap().formatted()).unwrap();
        assert!(
            second.contains("Message-ID: <000000000009-abc@mlwatch>\r\n"),
            "{second}"
        );
        assert!(
            second.contains(&format!("In-Reply-To: {}\r\n", thread_root(&n))),
            "{second}"
        );
        assert!(
            second.contains(&format!("References: {}\r\n", thread_root(&n))),
            "{second}"
        );
    }
}
