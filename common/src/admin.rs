//! The admin HTTP server every service runs: `/metrics` (Prometheus text
//! from the registry passed in, plus the `process_*` and build lines), `/healthz` (the process is alive),
//! `/readyz` (the service is ready for traffic), plus the service's own
//! routes merged in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A flag a service raises once it can take traffic (topics exist, consumer
/// subscribed, listeners bound) and lowers while draining.
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(error) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::warn!(%error, "cannot encode metrics");
    }
    let mut text = String::from_utf8(buf).unwrap_or_default();
    text.push_str(&crate::process::render());
    text
}

/// The admin routes, to be merged with the service's own.
pub fn router(registry: Registry, ready: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(&registry)) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.is_ready() {
                        (StatusCode::OK, "ready").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
                    }
                }
            }),
        )
}

/// Binds `listen` and serves `app` until `shutdown` fires. Returns the bound
/// address (useful with port 0) and the server task.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), crate::ServiceError> {
    let listener = bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| crate::ServiceError::Bind { addr: listen, source })?;
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "http server failed");
        }
    });
    Ok((addr, task))
}

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::ServiceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::ServiceError::Bind { addr, source })
}
