//! TLS for a listener: the PEM certificate and key of `[http.tls]`,
//! `[admin.tls]`, as a rustls server configuration.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
}
