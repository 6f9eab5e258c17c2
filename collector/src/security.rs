//! Bearer tokens and TLS for the ingest listeners. The tokens and
//! [`Secret`] are `mlwatch_common::auth`'s, shared with the admin APIs of
//! the alerter and the remediator; [`TlsConfig`] is `mlwatch_common::tls`'s,
//! shared with every admin port.

pub use mlwatch_common::auth::{AuthConfig, Secret, Tokens};
pub use mlwatch_common::tls::{TlsConfig, TlsError};

/// The gRPC listener's TLS, from the same certificate and key.
pub trait TonicTls {
    /// The tonic server TLS configuration for the gRPC listener.
    fn tonic_server(&self) -> Result<tonic::transport::ServerTlsConfig, TlsError>;
}

impl TonicTls for TlsConfig {
    fn tonic_server(&self) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
        let (cert, key) = self.read()?;
        Ok(tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key)))
    }
}
