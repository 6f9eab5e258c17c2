//! The admin HTTP server every service runs: `/metrics` (Prometheus text
//! from the registry passed in, plus the `process_*` and build lines), `/healthz` (the process is alive),
//! `/readyz` (the service is ready for traffic), plus the service's own
//! routes merged in. [`starting`] binds it before anything else, so the
//! port answers while a service waits for its broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::AdminConfig;
use crate::listener::ListenerMetrics;

/// A flag a service raises once it can take traffic (topics exist, consumer
/// subscribed, listeners bound) and lowers while draining, and a reason
/// that holds it not ready while set (work the service cannot do now).
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>, Arc<Mutex<Option<String>>>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    /// Sets (or clears) why the service is not ready although it runs.
    pub fn set_reason(&self, reason: Option<String>) {
        *self.1.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) && self.reason().is_none()
    }
    /// Why the service is not ready, if it says.
    pub fn reason(&self) -> Option<String> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
                        (StatusCode::OK, "ready".to_string()).into_response()
                    } else {
                        let why = ready.reason().map(|r| format!(": {r}")).unwrap_or_default();
                        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready{why}")).into_response()
                    }
                }
            }),
        )
}

/// The admin server of a service that is still starting.
pub struct Starting {
    addr: SocketAddr,
    task: JoinHandle<()>,
    state: Arc<StartState>,
    metrics: ListenerMetrics,
}

struct StartState {
    app: OnceLock<Router>,
    status: Mutex<String>,
}

/// Binds `listen` and serves, until the service hands over its own admin
/// app with [`Starting::serve`]: `/healthz` (alive), `/metrics` (the
/// registry and process lines) and, for every other path, 503 with what
/// start-up is waiting for (`not ready: waiting for the broker: …`), so
/// probes and operators see why a service is not ready.
pub async fn starting(
    config: &AdminConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<Starting, crate::ServiceError> {
    let state = Arc::new(StartState {
        app: OnceLock::new(),
        status: Mutex::new("starting".into()),
    });
    let shared = state.clone();
    let registry_for_listener = registry.clone();
    let app = Router::new().fallback(move |req: Request| {
        let state = shared.clone();
        let registry = registry.clone();
        async move { state.answer(req, &registry).await }
    });
    let metrics = ListenerMetrics::register(&registry_for_listener)?;
    let (addr, task) = serve_counted(config, app, metrics.clone(), shutdown).await?;
    Ok(Starting {
        addr,
        task,
        state,
        metrics,
    })
}

impl StartState {
    async fn answer(&self, req: Request, registry: &Registry) -> Response {
        if let Some(app) = self.app.get() {
            let mut app = app.clone();
            return match tower_service::Service::call(&mut app, req).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
        }
        match req.uri().path() {
            "/healthz" => "ok".into_response(),
            "/metrics" => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], render(registry)).into_response(),
            _ => {
                let status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {status}")).into_response()
            }
        }
    }
}

impl Starting {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connection counters registered with the service's registry,
    /// for its other listeners.
    pub fn listener_metrics(&self) -> ListenerMetrics {
        self.metrics.clone()
    }

    /// Says what start-up is doing or waiting for (shown by `/readyz`).
    pub fn status(&self, status: impl Into<String>) {
        *self.state.status.lock().unwrap_or_else(|p| p.into_inner()) = status.into();
    }

    /// Serves the service's own admin app from now on; returns the address
    /// and the server task.
    pub fn serve(self, app: Router) -> (SocketAddr, JoinHandle<()>) {
        let _ = self.state.app.set(app);
        (self.addr, self.task)
    }
}

/// Binds `listen` and serves `app` until `shutdown` fires, within the
/// default [`ConnectionLimits`](crate::listener::ConnectionLimits). Returns the bound address (useful with port
/// 0) and the server task.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), crate::ServiceError> {
    serve_counted(&AdminConfig::on(listen), app, ListenerMetrics::unregistered(), shutdown).await
}

async fn serve_counted(
    config: &AdminConfig,
    app: Router,
    metrics: ListenerMetrics,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), crate::ServiceError> {
    let tls = match &config.tls {
        None => None,
        Some(tls) => Some(
            tls.rustls_server()
                .map_err(|e| crate::ServiceError::config("admin.tls", e))?,
        ),
    };
    let listener = bind(config.listen).await?;
    let addr = listener.local_addr().map_err(|source| crate::ServiceError::Bind {
        addr: config.listen,
        source,
    })?;
    let task = tokio::spawn(crate::listener::serve(
        "admin",
        listener,
        app,
        tls,
        config.connections.clone(),
        metrics,
        shutdown,
    ));
    Ok((addr, task))
}

/// Binds a TCP listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::ServiceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::ServiceError::Bind { addr, source })
}
