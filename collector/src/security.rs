//! Bearer tokens and TLS for the ingest listeners.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time
//! (`subtle`), every configured token being checked on every request, so
//! neither the position nor the length of a match leaks through timing.
//! A [`Secret`] never prints: its `Debug` and `Serialize` forms are
//! `<redacted>`, so a logged or dumped configuration shows no token.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret string (a bearer token): never logged, never serialized.
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accepted bearer tokens (e.g. one per team). Empty: no authentication.
    /// Clients send `Authorization: Bearer <token>` (HTTP) or the
    /// `authorization` metadata (gRPC).
    pub bearer_tokens: Vec<Secret>,
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

/// TLS for one listener: PEM certificate chain and private key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// Why TLS material could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("invalid tls setup: {0}")]
    Setup(String),
}

impl TlsConfig {
    /// The PEM contents `(cert, key)`.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| TlsError::Read {
                path: path.clone(),
                reason: e.to_string(),
            })
        };
        Ok((read(&self.cert_path)?, read(&self.key_path)?))
    }

    /// A rustls server configuration (aws-lc-rs provider, ALPN h2 and
    /// http/1.1) for the HTTP listener.
    pub fn rustls_server(&self) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, TlsError> {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = self.read()?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Read {
                path: self.cert_path.clone(),
                reason: e.to_string(),
            })?;
        let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| TlsError::Read {
            path: self.key_path.clone(),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The tonic server TLS configuration for the gRPC listener.
    pub fn tonic_server(&self) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
        let (cert, key) = self.read()?;
        Ok(tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key)))
    }
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
