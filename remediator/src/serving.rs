//! The gRPC client of the serving platform's `ServingControl` service:
//! a deadline on every call, retries only on `UNAVAILABLE` with backoff
//! within that deadline, the request id on every mutating call (in the
//! message and as `x-request-id` metadata), and optional TLS / mTLS
//! (rustls).

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mlwatch_proto::v1::serving_control_client::ServingControlClient;
use mlwatch_proto::v1::{
    Deployment, GetDeploymentRequest, RollbackRequest, RollbackResponse, ScaleRequest, ScaleResponse,
    SetTrafficRequest, SetTrafficResponse,
};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// The `[serving.tls]` section. TLS is on when the endpoint is `https://`;
/// a client certificate and key turn on mutual TLS.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the platform's certificate; without
    /// it the system roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify in the platform's certificate, when it differs from
    /// the endpoint's host.
    pub domain_name: Option<String>,
}

/// Why a client could not be built; names the key.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("serving.endpoint: invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("serving.tls.{key}: cannot read {path}: {reason}")]
    File {
        key: &'static str,
        path: String,
        reason: String,
    },
    #[error("serving.tls: {0}")]
    Tls(String),
}

fn read(key: &'static str, path: &PathBuf) -> Result<Vec<u8>, ClientSetupError> {
    std::fs::read(path).map_err(|e| ClientSetupError::File {
        key,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The rustls client configuration for `tls`.
pub fn client_tls(tls: &TlsConfig) -> Result<ClientTlsConfig, ClientSetupError> {
    let mut cfg = ClientTlsConfig::new();
    cfg = match &tls.ca_file {
        Some(ca) => cfg.ca_certificate(Certificate::from_pem(read("ca_file", ca)?)),
        None => cfg.with_native_roots(),
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            cfg = cfg.identity(Identity::from_pem(read("cert_file", cert)?, read("key_file", key)?));
        }
        (None, None) => {}
        _ => {
            return Err(ClientSetupError::Tls(
                "cert_file and key_file must be given together for mutual tls".into(),
            ));
        }
    }
    if let Some(name) = &tls.domain_name {
        cfg = cfg.domain_name(name.clone());
    }
    Ok(cfg)
}

#[derive(Clone)]
pub struct Serving {
    client: ServingControlClient<Channel>,
    deadline: Duration,
}

impl Serving {
    /// A lazily connecting client of `endpoint` (e.g. `http://host:50051`,
    /// or `https://…` with `tls`).
    pub fn connect_lazy(endpoint: &str, deadline: Duration, tls: &TlsConfig) -> Result<Self, ClientSetupError> {
        let bad = |reason: String| ClientSetupError::Endpoint {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| bad(e.to_string()))?
            // The deadline is enforced per call in `retrying` (as
            // DEADLINE_EXCEEDED); a channel-wide timeout would surface as
            // CANCELLED, which reads as a failure, not a retryable one.
            .connect_timeout(deadline);
        let wants_tls = endpoint.starts_with("https://");
        let has_tls_settings = *tls != TlsConfig::default();
        if has_tls_settings && !wants_tls {
            return Err(bad("tls settings need an https:// endpoint".into()));
        }
        if wants_tls {
            ep = ep.tls_config(client_tls(tls)?).map_err(|e| bad(e.to_string()))?;
        }
        Ok(Self {
            client: ServingControlClient::new(ep.connect_lazy()),
            deadline,
        })
    }

    async fn retrying<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(ServingControlClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            // Every attempt gets what is left of the one deadline.
            let left = self.deadline.saturating_sub(started.elapsed());
            let answer = match tokio::time::timeout(left, call(self.client.clone(), left)).await {
                Ok(answer) => answer.map_err(deadline_as_such),
                // The platform may have applied the call: the request id
                // makes trying it again act once.
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within the {} ms deadline",
                    self.deadline.as_millis()
                ))),
            };
            match answer {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) if status.code() == Code::Unavailable && started.elapsed() + backoff < self.deadline => {
                    tracing::debug!(%status, ?backoff, "serving platform unavailable, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(status) => return Err(status),
            }
        }
    }

    pub async fn get_deployment(&self, model: &str) -> Result<Deployment, Status> {
        self.retrying(|mut c, left| {
            let mut req = tonic::Request::new(GetDeploymentRequest {
                model: model.to_string(),
            });
            req.set_timeout(left);
            async move { c.get_deployment(req).await }
        })
        .await
    }

    pub async fn scale(&self, request: ScaleRequest) -> Result<ScaleResponse, Status> {
        let id = request.request_id.clone();
        self.retrying(|mut c, left| {
            let req = mutating(request.clone(), &id, left);
            async move { c.scale(req).await }
        })
        .await
    }

    pub async fn rollback(&self, request: RollbackRequest) -> Result<RollbackResponse, Status> {
        let id = request.request_id.clone();
        self.retrying(|mut c, left| {
            let req = mutating(request.clone(), &id, left);
            async move { c.rollback(req).await }
        })
        .await
    }

    pub async fn set_traffic(&self, request: SetTrafficRequest) -> Result<SetTrafficResponse, Status> {
        let id = request.request_id.clone();
        self.retrying(|mut c, left| {
            let req = mutating(request.clone(), &id, left);
            async move { c.set_traffic(req).await }
        })
        .await
    }
}

/// A mutating request: deadline, and the request id also as metadata.
fn mutating<T>(message: T, request_id: &str, left: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(left);
    if let Ok(v) = request_id.parse() {
        req.metadata_mut().insert("x-request-id", v);
    }
    req
}

/// A call cut by its own deadline is DEADLINE_EXCEEDED, whatever layer
/// noticed (tonic reports a client-side timeout as CANCELLED).
fn deadline_as_such(status: Status) -> Status {
    let timed_out = status.code() == Code::Cancelled && status.message().to_ascii_lowercase().contains("timeout");
    if timed_out {
        Status::deadline_exceeded(status.message().to_string())
    } else {
        status
    }
}

/// Whether a failed call may succeed when tried again later.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_a_deadline_and_transient() {
        let cut = deadline_as_such(Status::cancelled("Timeout expired"));
        assert_eq!(cut.code(), Code::DeadlineExceeded);
        assert!(is_transient(&cut));
        assert_eq!(
            deadline_as_such(Status::cancelled("operator cancelled")).code(),
            Code::Cancelled
        );
        assert!(!is_transient(&Status::invalid_argument("x")));
    }

    #[test]
    fn tls_settings_need_https() {
        let tls = TlsConfig {
            domain_name: Some("platform".into()),
            ..Default::default()
        };
        let err = Serving::connect_lazy("http://127.0.0.1:1", Duration::from_secs(1), &tls)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("https"), "{err}");
    }

    #[test]
    fn half_an_identity_is_refused() {
        let tls = TlsConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            ..Default::default()
        };
        let Err(err) = client_tls(&tls) else { panic!("accepted") };
        assert!(err.to_string().contains("key_file"), "{err}");
        let tls = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let Err(err) = client_tls(&tls) else { panic!("accepted") };
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
