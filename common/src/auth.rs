//! Secrets and bearer-token authentication, shared by every service that
//! takes requests: the collector's ingest listeners and the admin APIs of
//! the alerter and the remediator.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time
//! (`subtle`), every configured token being checked on every request, so
//! neither the position nor the length of a match leaks through timing.
//! A [`Secret`] never prints: its `Debug` and `Serialize` forms are
//! `<redacted>`, so a logged or dumped configuration shows no token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret string (a token, a password, a URL with a key in it): never
/// logged, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The `[auth]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted bearer tokens (e.g. one per team). Empty: no authentication.
    /// A list, or one string holding a token or several separated by
    /// commas (`MLWATCH_AUTH__BEARER_TOKENS=team-a-token,team-b-token`).
    /// Clients send `Authorization: Bearer <token>` (HTTP) or the
    /// `authorization` metadata (gRPC).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub bearer_tokens: Vec<Secret>,
}

/// Tokens from a list, or from one comma-separated string (bearer tokens
/// hold no commas).
fn list_or_comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    struct Tokens;
    impl<'de> serde::de::Visitor<'de> for Tokens {
        type Value = Vec<Secret>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of tokens or a comma-separated string of tokens")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Secret::new)
                .collect())
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut tokens = Vec::new();
            while let Some(token) = seq.next_element()? {
                tokens.push(token);
            }
            Ok(tokens)
        }
    }
    d.deserialize_any(Tokens)
}

/// The configured tokens as digests; cheap to clone.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<[u8; 32]>>);

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    pub fn new(config: &AuthConfig) -> Self {
        Self(Arc::new(
            config
                .bearer_tokens
                .iter()
                .map(|t| digest(t.expose().as_bytes()))
                .collect(),
        ))
    }

    /// Whether authentication is on.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    /// Checks an `Authorization` header value. Always true when no token is
    /// configured.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        if !self.required() {
            return true;
        }
        let Some(token) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let d = digest(token);
        // Fold over every token: no early exit.
        let mut ok = subtle::Choice::from(0u8);
        for known in self.0.iter() {
            ok |= known.ct_eq(&d);
        }
        ok.into()
    }
}

/// Axum middleware: lets a request through when [`Tokens::allows`] its
/// `Authorization` header, else answers 401 with `WWW-Authenticate: Bearer`
/// and a problem (RFC 9457). Use with
/// `axum::middleware::from_fn_with_state(tokens, require_bearer)`.
pub async fn require_bearer(State(tokens): State<Tokens>, request: Request, next: Next) -> Response {
    let auth = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    if tokens.allows(auth) {
        return next.run(request).await;
    }
    let mut response = crate::problem::problem(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly_and_never_print() {
        let config = AuthConfig {
            bearer_tokens: vec![Secret::new("team-a-token"), Secret::new("team-b-token")],
        };
        let tokens = Tokens::new(&config);
        assert!(tokens.allows(Some(b"Bearer team-a-token")));
        assert!(tokens.allows(Some(b"Bearer team-b-token")));
        assert!(!tokens.allows(Some(b"Bearer team-c-token")));
        assert!(!tokens.allows(Some(b"Bearer team-a-toke")));
        assert!(!tokens.allows(Some(b"team-a-token")));
        assert!(!tokens.allows(Some(b"Basic team-a-token")));
        assert!(!tokens.allows(None));
        let shown = format!("{config:?} {}", serde_json::to_string(&config).unwrap());
        assert!(!shown.contains("team-a"), "{shown}");
        assert!(Tokens::default().allows(None));
    }
}
