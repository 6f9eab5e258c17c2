//! Which configuration keys hold secrets: one rule, used by the config
//! errors ([`crate::config`]) and by the redaction of logged settings
//! ([`crate::kafka::KafkaConfig`]'s `Debug`).
//!
//! A key is secret-bearing when a segment of its path is a secret name
//! ([`is_secret_name`]: `password`, `token`, `routing_key`, `webhook_url`,
//! librdkafka's `sasl.password`, `ssl.key.pem` ...), or when it lies in,
//! or contains, a section whose values are all treated as secret
//! ([`SECRET_SECTIONS`]). Docs: `docs/decisions/0008-secrets-in-config-errors.md`.

/// Last words of a key that make it a secret, wherever it sits. A key
/// matches when its name is one of these or ends with one after a `.`,
/// `_` or `-` (`sasl.password`, `smtp_password`, `bearer_tokens`); a key
/// naming a file that holds a secret (`password_file`) is not itself one.
pub const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "tokens",
    "credentials",
    "api_key",
    "apikey",
    "private_key",
    "routing_key",
    "webhook_url",
    // librdkafka: the PEM private key given inline, and the OAUTHBEARER
    // settings, which may hold a client secret.
    "key.pem",
    "ssl_key",
    "sasl.oauthbearer.config",
];

/// Sections whose every value is treated as a secret: receivers (URLs,
/// routing keys, passwords, tokens, and a tagged layout whose errors
/// cannot always name the field), bearer tokens, the retraining webhook
/// and the librdkafka pass-through settings.
pub const SECRET_SECTIONS: &[&[&str]] = &[&["auth"], &["receivers"], &["retrain"], &["kafka", "client"]];

/// Whether a key name (one path segment, e.g. `routing_key` or the
/// librdkafka key `sasl.password`) is a secret by its name.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|secret| match name.strip_suffix(secret) {
        Some("") => true,
        Some(rest) => rest.ends_with(['.', '_', '-']),
        None => false,
    })
}

/// Whether the value at a key path may hold a secret: a segment is a
/// secret name, or the path is in, or contains, a [`SECRET_SECTIONS`]
/// section (so `kafka` as a whole, `receivers.pager` and
/// `auth.bearer_tokens.0` all count).
pub fn is_secret_path<S: AsRef<str>>(path: &[S]) -> bool {
    if path.iter().any(|segment| is_secret_name(segment.as_ref())) {
        return true;
    }
    SECRET_SECTIONS.iter().any(|section| {
        section
            .iter()
            .zip(path)
            .all(|(a, b)| a.eq_ignore_ascii_case(b.as_ref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_match_whole_words_at_the_end() {
        for name in [
            "password",
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
            "bearer_tokens",
            "bearer_token",
            "routing_key",
            "webhook_url",
            "SMTP_PASSWORD",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "password_file",
            "routing_key_file",
            "key_path",
            "key_file",
            "ssl.certificate.pem",
            "security.protocol",
            "sasl.username",
            "external_url",
            "max_tokens_per_second_not_a_secret_file",
            "mytoken",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn paths_in_or_around_secret_sections_count() {
        let secret: &[&[&str]] = &[
            &["auth", "bearer_tokens"],
            &["auth", "bearer_tokens", "0"],
            &["auth"],
            &[],
            &["kafka"],
            &["kafka", "client"],
            &["kafka", "client", "security.protocol"],
            &["receivers"],
            &["receivers", "pager"],
            &["receivers", "mail", "to"],
            &["retrain", "webhook_url"],
            &["serving", "tls", "client_password"],
        ];
        for path in secret {
            assert!(is_secret_path(path), "{path:?}");
        }
        let open: &[&[&str]] = &[
            &["kafka", "partitions"],
            &["kafka", "topics", "alerts"],
            &["admin", "listen"],
            &["alerter", "external_url"],
            &["serving", "tls", "key_file"],
            &["http", "tls", "key_path"],
        ];
        for path in open {
            assert!(!is_secret_path(path), "{path:?}");
        }
    }
}
