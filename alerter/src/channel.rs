//! Receivers: their configuration (`[receivers.NAME]`), secrets resolved
//! from the config or from files, and sending a notification through each
//! kind of channel (Slack, PagerDuty, email, webhook, Alertmanager).
//! Secrets live in [`Secret`], whose `Debug` and serialisation are
//! redacted; error texts never contain URLs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::deliver::{self, Attempt, RetryPolicy};
use crate::engine::{Notification, ReceiverPolicy};
use crate::error::AlerterError;
use crate::{email, pagerduty, slack, template, webhook};

pub use mlwatch_common::auth::Secret;

/// How the email channel secures its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required); port 587.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS); port 465.
    Tls,
    /// No encryption: only for a local relay or mail catcher.
    None,
}

/// A receiver as configured. Secrets (webhook URLs, routing keys,
/// passwords, tokens) come inline or, better, from a file (`*_file`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum Receiver {
    /// A Slack incoming webhook.
    Slack {
        #[serde(default)]
        webhook_url: Option<Secret>,
        #[serde(default)]
        webhook_url_file: Option<PathBuf>,
        /// Channel override (`#ml-alerts`).
        #[serde(default)]
        channel: Option<String>,
        /// Send resolve notifications (default true).
        #[serde(default)]
        send_resolved: Option<bool>,
        /// Minimum time between two messages (default 1000: Slack allows
        /// one message per second per webhook).
        #[serde(default)]
        rate_limit_ms: Option<u64>,
        /// Template of the message text (default: the alert headline).
        #[serde(default)]
        text_template: Option<String>,
    },
    /// PagerDuty Events API v2.
    Pagerduty {
        #[serde(default)]
        routing_key: Option<Secret>,
        #[serde(default)]
        routing_key_file: Option<PathBuf>,
        /// Events endpoint (default `https://events.pagerduty.com/v2/enqueue`).
        #[serde(default)]
        url: Option<String>,
        /// Send `resolve` events (default true).
        #[serde(default)]
        send_resolved: Option<bool>,
        /// Send `acknowledge` events (default true).
        #[serde(default)]
        send_acknowledged: Option<bool>,
        #[serde(default)]
        rate_limit_ms: Option<u64>,
    },
    /// Email over SMTP.
    Email {
        /// SMTP server host name (also the TLS server name).
        host: String,
        /// Port (default 587 for starttls, 465 for tls, 25 for none).
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        tls: SmtpTls,
        /// Extra PEM root certificate (a private CA).
        #[serde(default)]
        ca_file: Option<PathBuf>,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// Sender, e.g. `mlwatch <alerts@example.org>`.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// Subject template (default `[ML Alert - {{severity}}] {{type}}`).
        #[serde(default)]
        subject_template: Option<String>,
        #[serde(default)]
        send_resolved: Option<bool>,
        #[serde(default)]
        rate_limit_ms: Option<u64>,
    },
    /// A generic webhook receiving Alertmanager's webhook v4 JSON.
    Webhook {
        #[serde(default)]
        url: Option<Secret>,
        #[serde(default)]
        url_file: Option<PathBuf>,
        /// Sent as `Authorization: Bearer …`.
        #[serde(default)]
        bearer_token: Option<Secret>,
        #[serde(default)]
        bearer_token_file: Option<PathBuf>,
        /// Most alerts per message (0 = all).
        #[serde(default)]
        max_alerts: usize,
        #[serde(default)]
        send_resolved: Option<bool>,
        #[serde(default)]
        rate_limit_ms: Option<u64>,
    },
    /// Forwarding to an Alertmanager (`POST <url>/api/v2/alerts`). Firing
    /// alerts are re-sent every `resend_interval_ms` with `endsAt` four
    /// intervals ahead (as a Prometheus does), and resolved ones with their
    /// end, so the Alertmanager neither resolves a firing alert by its
    /// `resolve_timeout` nor keeps a resolved one.
    Alertmanager {
        /// Base URL, e.g. `http://alertmanager:9093`.
        url: String,
        /// Default 60000 (a Prometheus's `resend_delay`).
        #[serde(default)]
        resend_interval_ms: Option<u64>,
        #[serde(default)]
        send_resolved: Option<bool>,
        #[serde(default)]
        rate_limit_ms: Option<u64>,
    },
}

impl Receiver {
    /// A Slack receiver with defaults.
    pub fn slack(webhook_url: impl Into<String>, channel: Option<String>) -> Self {
        Self::Slack {
            webhook_url: Some(Secret::new(webhook_url)),
            webhook_url_file: None,
            channel,
            send_resolved: None,
            rate_limit_ms: None,
            text_template: None,
        }
    }
}

/// A channel ready to send, its secrets resolved.
pub enum Channel {
    Slack {
        url: Secret,
        channel: Option<String>,
        text_template: Option<String>,
    },
    Pagerduty {
        url: String,
        routing_key: Secret,
    },
    Email {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
        to: Vec<Mailbox>,
        subject_template: String,
    },
    Webhook {
        url: Secret,
        bearer: Option<Secret>,
        max_alerts: usize,
        external_url: String,
    },
    Alertmanager {
        url: String,
        /// How far ahead of a message firing alerts end unless re-sent.
        ends_after_ms: u64,
    },
}

/// How often firing alerts are re-sent to an Alertmanager by default.
pub const DEFAULT_RESEND_MS: u64 = 60_000;

/// A resolved receiver: its channel, policy and rate limit.
pub struct Resolved {
    pub channel: Channel,
    pub policy: ReceiverPolicy,
    pub rate_limit: Duration,
}

fn secret(name: &str, key: &str, inline: &Option<Secret>, file: &Option<PathBuf>) -> Result<Secret, AlerterError> {
    match (inline, file) {
        (Some(s), None) => Ok(s.clone()),
        (None, Some(p)) => read_secret(p).map_err(|e| invalid(name, format!("{key}_file {}: {e}", p.display()))),
        _ => Err(invalid(name, format!("give exactly one of {key}, {key}_file"))),
    }
}

fn optional_secret(
    name: &str,
    key: &str,
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, AlerterError> {
    if inline.is_none() && file.is_none() {
        Ok(None)
    } else {
        secret(name, key, inline, file).map(Some)
    }
}

fn read_secret(p: &Path) -> std::io::Result<Secret> {
    Ok(Secret::new(std::fs::read_to_string(p)?.trim()))
}

fn invalid(name: &str, reason: String) -> AlerterError {
    AlerterError::BadConfig {
        key: format!("receivers.{name}"),
        reason,
    }
}

fn http_url(name: &str, key: &str, url: &str) -> Result<(), AlerterError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        // The value may be a secret: name the key, not the value.
        Err(invalid(name, format!("{key} must be an http(s) URL")))
    }
}

fn mailbox(name: &str, key: &str, text: &str) -> Result<Mailbox, AlerterError> {
    text.parse().map_err(|e| invalid(name, format!("{key} {text:?}: {e}")))
}

/// Resolves a receiver: reads secret files, validates URLs, addresses and
/// templates, builds the SMTP transport.
pub fn resolve(
    name: &str,
    receiver: &Receiver,
    timeout: Duration,
    external_url: &str,
) -> Result<Resolved, AlerterError> {
    let policy = |resolved: &Option<bool>, acked: Option<bool>| ReceiverPolicy {
        send_resolved: resolved.unwrap_or(true),
        send_acknowledged: acked.unwrap_or(false),
        resend_ms: None,
    };
    let rate = |ms: &Option<u64>, default: u64| Duration::from_millis(ms.unwrap_or(default));
    Ok(match receiver {
        Receiver::Slack {
            webhook_url,
            webhook_url_file,
            channel,
            send_resolved,
            rate_limit_ms,
            text_template,
        } => {
            let url = secret(name, "webhook_url", webhook_url, webhook_url_file)?;
            http_url(name, "webhook_url", url.expose())?;
            if let Some(t) = text_template {
                template::validate(t).map_err(|e| invalid(name, format!("text_template: {e}")))?;
            }
            Resolved {
                channel: Channel::Slack {
                    url,
                    channel: channel.clone(),
                    text_template: text_template.clone(),
                },
                policy: policy(send_resolved, Some(false)),
                rate_limit: rate(rate_limit_ms, 1000),
            }
        }
        Receiver::Pagerduty {
            routing_key,
            routing_key_file,
            url,
            send_resolved,
            send_acknowledged,
            rate_limit_ms,
        } => {
            let routing_key = secret(name, "routing_key", routing_key, routing_key_file)?;
            let url = url
                .clone()
                .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into());
            http_url(name, "url", &url)?;
            Resolved {
                channel: Channel::Pagerduty { url, routing_key },
                policy: policy(send_resolved, Some(send_acknowledged.unwrap_or(true))),
                rate_limit: rate(rate_limit_ms, 0),
            }
        }
        Receiver::Email {
            host,
            port,
            tls,
            ca_file,
            username,
            password,
            password_file,
            from,
            to,
            subject_template,
            send_resolved,
            rate_limit_ms,
        } => {
            let subject = subject_template
                .clone()
                .unwrap_or_else(|| email::DEFAULT_SUBJECT.into());
            template::validate(&subject).map_err(|e| invalid(name, format!("subject_template: {e}")))?;
            if to.is_empty() {
                return Err(invalid(name, "to needs at least one address".into()));
            }
            let from = mailbox(name, "from", from)?;
            let to = to
                .iter()
                .map(|t| mailbox(name, "to", t))
                .collect::<Result<Vec<_>, _>>()?;
            let params = || -> Result<TlsParameters, AlerterError> {
                let mut b = TlsParameters::builder(host.clone());
                if let Some(p) = ca_file {
                    let pem = std::fs::read(p).map_err(|e| invalid(name, format!("ca_file {}: {e}", p.display())))?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| invalid(name, format!("ca_file: {e}")))?;
                    b = b.add_root_certificate(cert);
                }
                b.build().map_err(|e| invalid(name, format!("tls: {e}")))
            };
            let (tls, default_port) = match tls {
                SmtpTls::Starttls => (Tls::Required(params()?), 587),
                SmtpTls::Tls => (Tls::Wrapper(params()?), 465),
                SmtpTls::None => (Tls::None, 25),
            };
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
                .port(port.unwrap_or(default_port))
                .tls(tls)
                .timeout(Some(timeout));
            let password = optional_secret(name, "password", password, password_file)?;
            match (username, password) {
                (Some(u), Some(p)) => {
                    builder = builder.credentials(Credentials::new(u.clone(), p.expose().to_string()));
                }
                (None, None) => {}
                _ => return Err(invalid(name, "give both username and password, or neither".into())),
            }
            Resolved {
                channel: Channel::Email {
                    transport: Box::new(builder.build()),
                    from,
                    to,
                    subject_template: subject,
                },
                policy: policy(send_resolved, Some(false)),
                rate_limit: rate(rate_limit_ms, 0),
            }
        }
        Receiver::Webhook {
            url,
            url_file,
            bearer_token,
            bearer_token_file,
            max_alerts,
            send_resolved,
            rate_limit_ms,
        } => {
            let url = secret(name, "url", url, url_file)?;
            http_url(name, "url", url.expose())?;
            Resolved {
                channel: Channel::Webhook {
                    url,
                    bearer: optional_secret(name, "bearer_token", bearer_token, bearer_token_file)?,
                    max_alerts: *max_alerts,
                    external_url: external_url.to_string(),
                },
                policy: policy(send_resolved, Some(false)),
                rate_limit: rate(rate_limit_ms, 0),
            }
        }
        Receiver::Alertmanager {
            url,
            resend_interval_ms,
            send_resolved,
            rate_limit_ms,
        } => {
            http_url(name, "url", url)?;
            let resend = resend_interval_ms.unwrap_or(DEFAULT_RESEND_MS);
            if resend == 0 {
                return Err(invalid(name, "resend_interval_ms must be above 0".into()));
            }
            Resolved {
                channel: Channel::Alertmanager {
                    url: format!("{}/api/v2/alerts", url.trim_end_matches('/')),
                    ends_after_ms: resend.saturating_mul(4),
                },
                policy: ReceiverPolicy {
                    resend_ms: Some(resend),
                    ..policy(send_resolved, Some(false))
                },
                rate_limit: rate(rate_limit_ms, 0),
            }
        }
    })
}

/// Classifies an SMTP failure: 4xx replies and connection trouble are
/// transient, 5xx replies permanent.
fn smtp_attempt(
    result: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> Attempt {
    match result {
        Ok(_) => Attempt::Done,
        Err(e) if e.is_permanent() => Attempt::Fail(AlerterError::Refused {
            status: e.status().map(u16::from).unwrap_or(500),
            body: e.to_string(),
        }),
        Err(e) => Attempt::Retry {
            error: e.to_string(),
            wait: None,
        },
    }
}

impl Channel {
    /// Where messages go (URL, or SMTP host and port): receivers sharing
    /// an endpoint share its rate limit.
    pub fn endpoint(&self) -> String {
        match self {
            Channel::Slack { url, .. } | Channel::Webhook { url, .. } => url.expose().to_string(),
            Channel::Pagerduty { url, .. } | Channel::Alertmanager { url, .. } => url.clone(),
            Channel::Email { from, to, .. } => format!("smtp {from} {to:?}"),
        }
    }

    /// Sends one notification, with retries.
    pub async fn send(
        &self,
        receiver: &str,
        n: &Notification,
        client: &reqwest::Client,
        policy: RetryPolicy,
    ) -> Result<(), AlerterError> {
        let idem = [("idempotency-key", n.id.clone())];
        match self {
            Channel::Slack {
                url,
                channel,
                text_template,
            } => {
                let body = slack::message(n, channel.as_deref(), text_template.as_deref());
                deliver::post_json(client, url.expose(), &body, &[], policy).await
            }
            Channel::Pagerduty { url, routing_key } => {
                for event in pagerduty::events(n, routing_key.expose()) {
                    deliver::post_json(client, url, &event, &[], policy).await?;
                }
                Ok(())
            }
            Channel::Email {
                transport,
                from,
                to,
                subject_template,
            } => {
                let message = email::build(n, from, to, subject_template)?;
                deliver::with_retries(policy, || async { smtp_attempt(transport.send(message.clone()).await) }).await
            }
            Channel::Webhook {
                url,
                bearer,
                max_alerts,
                external_url,
            } => {
                let body = webhook::v4(n, receiver, external_url, *max_alerts);
                let mut headers = idem.to_vec();
                if let Some(token) = bearer {
                    headers.push(("authorization", format!("Bearer {}", token.expose())));
                }
                deliver::post_json(client, url.expose(), &body, &headers, policy).await
            }
            Channel::Alertmanager { url, ends_after_ms } => {
                let body = webhook::alertmanager(n, *ends_after_ms);
                deliver::post_json(client, url, &body, &idem, policy).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug_and_serialisation() {
        let r = Receiver::slack("https://hooks.slack.com/services/T/B/SECRET", None);
        assert!(!format!("{r:?}").contains("SECRET"));
        assert!(!serde_json::to_string(&r).unwrap().contains("SECRET"));
    }

    #[test]
    fn bad_receivers_name_the_key_but_not_the_secret() {
        let r = Receiver::slack("ftp://SECRET", None);
        let e = resolve("slack", &r, Duration::from_secs(1), "")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("receivers.slack: webhook_url must be an http(s) URL"), "{e}");
        assert!(!e.contains("SECRET"));
        let r = Receiver::Pagerduty {
            routing_key: None,
            routing_key_file: Some("/nonexistent/key".into()),
            url: None,
            send_resolved: None,
            send_acknowledged: None,
            rate_limit_ms: None,
        };
        let e = resolve("pd", &r, Duration::from_secs(1), "").err().unwrap().to_string();
        assert!(e.starts_with("receivers.pd: routing_key_file /nonexistent/key"), "{e}");
    }
}
