//! The mlwatch collector: the front door for inference and label events.
//!
//! Model servers and label sources send events over HTTP/JSON ([`http`]) or
//! gRPC ([`grpc`]). Both front ends share one ingest core ([`ingest`]):
//! events are validated ([`validate`], pure, no I/O), the valid ones are
//! published to Kafka keyed by model (so a model's inferences and labels
//! share a partition) by an idempotent `acks=all` producer, and the answer
//! is given only once the broker acknowledged them. Bad events get a precise
//! rejection; a full collector answers 429 / `RESOURCE_EXHAUSTED`, an
//! unreachable broker 503 / `UNAVAILABLE`. [`metrics`] exposes the
//! per-request metrics dashboards expect.
//!
//! Around that core: [`kserve`] joins KServe inference-logger CloudEvents
//! (pure), [`security`] holds bearer tokens (constant-time) and TLS
//! (rustls), [`client`] is a small batching, retrying HTTP client and
//! [`replay`] streams a JSON Lines file through it (`mlwatch-replay`).
//! docs/collector.md is the user's guide.

pub mod client;
pub mod grpc;
pub mod grpc_client;
pub mod http;
pub mod ingest;
pub mod kserve;
pub mod metrics;
pub mod replay;
pub mod security;
pub mod validate;
pub mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_common::listener::ConnectionLimits;
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_common::telemetry::LogConfig;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::ingest::Ingestor;
use crate::kserve::CloudEventsConfig;
use crate::security::{AuthConfig, TlsConfig, Tokens, TonicTls};
use crate::validate::Limits;

/// Top-level sections of the collector's configuration.
pub const SECTIONS: &[&str] = &[
    "kafka",
    "admin",
    "log",
    "http",
    "grpc",
    "limits",
    "ingest",
    "auth",
    "cloudevents",
];

/// The collector's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Admin port: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// HTTP ingest listener.
    #[serde(default = "default_http")]
    pub http: HttpListenConfig,
    /// gRPC ingest listener.
    #[serde(default = "default_grpc")]
    pub grpc: ListenConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Bearer tokens for HTTP and gRPC ingest.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Joining of KServe inference-logger CloudEvents.
    #[serde(default)]
    pub cloudevents: CloudEventsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            admin: default_admin(),
            log: LogConfig::default(),
            http: default_http(),
            grpc: default_grpc(),
            limits: Limits::default(),
            ingest: IngestConfig::default(),
            auth: AuthConfig::default(),
            cloudevents: CloudEventsConfig::default(),
        }
    }
}

impl Config {
    /// A collector for a test: `kafka`'s broker and topics, the admin, HTTP
    /// and gRPC listeners on loopback ports the OS picks (read them from
    /// [`Running`]); the rest default. Tests adjust fields from there.
    pub fn for_test(kafka: &KafkaConfig) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = Self {
            kafka: kafka.clone(),
            admin: AdminConfig::on(loopback),
            ..Self::default()
        };
        config.http.listen = loopback;
        config.grpc.listen = loopback;
        config
    }
}

/// A listener: its address and optional TLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to bind, e.g. `0.0.0.0:8080` (port 0: any free port).
    pub listen: SocketAddr,
    /// Serve TLS (rustls) with this certificate and key; plain text when
    /// absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// The HTTP ingest listener: address, TLS, and the limits every
/// connection is held to (`[http.connections]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpListenConfig {
    /// Address to bind, e.g. `0.0.0.0:8080` (port 0: any free port).
    pub listen: SocketAddr,
    /// Serve TLS (rustls) with this certificate and key; plain text when
    /// absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Connection caps and timeouts (docs/collector.md, "Abuse").
    #[serde(default)]
    pub connections: ConnectionLimits,
}

fn default_admin() -> AdminConfig {
    AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 9101)))
}

fn default_http() -> HttpListenConfig {
    HttpListenConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        tls: None,
        connections: ConnectionLimits::default(),
    }
}

fn default_grpc() -> ListenConfig {
    ListenConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 50061)),
        tls: None,
    }
}

/// The `[ingest]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Most events waiting for the broker at once; beyond it requests get
    /// 429 / RESOURCE_EXHAUSTED.
    pub max_in_flight_events: usize,
    /// Grace period for in-flight requests at shutdown.
    pub drain_timeout_ms: u64,
    /// Most HTTP request-body bytes buffered at once across all requests
    /// (a body without `Content-Length` counts as `limits.max_body_bytes`);
    /// beyond it requests get 429 before their body is read.
    pub max_in_flight_body_bytes: usize,
    /// Most concurrent gRPC calls per connection.
    pub grpc_concurrency_per_connection: usize,
    /// Most request-body bytes one client IP may have in flight (its share
    /// of `max_in_flight_body_bytes`); beyond it that client gets 429.
    pub max_in_flight_body_bytes_per_client: usize,
    /// A request body must arrive whole within this time (408 otherwise).
    pub body_read_timeout_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_in_flight_events: 100_000,
            drain_timeout_ms: 10_000,
            max_in_flight_body_bytes: 256 * 1024 * 1024,
            grpc_concurrency_per_connection: 256,
            max_in_flight_body_bytes_per_client: 64 * 1024 * 1024,
            body_read_timeout_ms: 30_000,
        }
    }
}

impl HasLog for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

/// Why the collector could not start or stopped.
pub use mlwatch_common::ServiceError as Error;

/// A started collector: its bound addresses and its task.
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub registry: prometheus::Registry,
    pub task: JoinHandle<Result<(), Error>>,
}

/// Runs the collector until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    mlwatch_common::join(start(config, shutdown).await?.task).await
}

/// Starts the collector: creates the topics, binds the listeners, and
/// returns once it is ready for traffic.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let registry = prometheus::Registry::new();
    let metrics = metrics::Metrics::register(&registry, &config.limits)?;
    tokio::spawn({
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(15));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => metrics.refresh_staleness(mlwatch_common::now_ms()),
                }
            }
        }
    });
    let ready = Readiness::default();
    let topics = &config.kafka.topics;
    let admin = admin::starting(&config.admin, registry.clone(), shutdown.clone()).await?;
    config
        .kafka
        .await_topics(&[&topics.inference, &topics.labels], &shutdown, |s| admin.status(s))
        .await?;
    let producer = config.kafka.producer()?;
    let ingestor = Ingestor::new(
        producer,
        &topics.inference,
        &topics.labels,
        config.ingest.max_in_flight_events,
        config.limits.clone(),
        metrics,
    )
    .with_rebuild({
        let kafka = config.kafka.clone();
        move || kafka.producer()
    });

    let http_listener = admin::bind(config.http.listen).await?;
    let http_addr = http_listener.local_addr().map_err(|source| Error::Bind {
        addr: config.http.listen,
        source,
    })?;
    let grpc_listener = admin::bind(config.grpc.listen).await?;
    let grpc_addr = grpc_listener.local_addr().map_err(|source| Error::Bind {
        addr: config.grpc.listen,
        source,
    })?;

    let listener_metrics = admin.listener_metrics();
    let (admin_addr, admin_task) = admin.serve(admin::router(registry.clone(), ready.clone()));

    let tokens = Tokens::new(&config.auth);
    let flusher = ingestor.clone();
    let joiner = http::joiner(config.cloudevents.clone());
    let http_app =
        http::router(ingestor.clone(), tokens.clone(), joiner.clone()).layer(axum::middleware::from_fn_with_state(
            http::BodyBudget::new(
                config.ingest.max_in_flight_body_bytes,
                config.limits.max_body_bytes,
                config.ingest.max_in_flight_body_bytes_per_client,
                Duration::from_millis(config.ingest.body_read_timeout_ms),
            ),
            http::admit,
        ));
    let tls = match &config.http.tls {
        None => None,
        Some(tls) => Some(tls.rustls_server().map_err(|e| Error::config("http.tls", e))?),
    };
    let http_task = tokio::spawn(mlwatch_common::listener::serve(
        "ingest",
        http_listener,
        http_app,
        tls,
        config.http.connections.clone(),
        listener_metrics,
        shutdown.clone(),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<grpc::CollectorServer>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(mlwatch_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Task("grpc reflection", e.to_string()))?;
    let max_msg = config.limits.max_body_bytes;
    let collector = tonic::service::interceptor::InterceptedService::new(
        grpc::CollectorServer::new(grpc::CollectorService::new(ingestor), max_msg),
        grpc::authenticator(tokens),
    );
    let grpc_shutdown = shutdown.clone();
    let incoming = tokio_stream_listener(grpc_listener);
    // Batches are large messages: HTTP/2 windows of 1 MiB per stream and
    // 8 MiB per connection keep them from waiting on window updates.
    let mut builder = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(config.ingest.grpc_concurrency_per_connection)
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(8 << 20));
    if let Some(tls) = &config.grpc.tls {
        let tls = tls.tonic_server().map_err(|e| Error::config("grpc.tls", e))?;
        builder = builder.tls_config(tls).map_err(|e| Error::config("grpc.tls", e))?;
    }
    let grpc_task = tokio::spawn(async move {
        builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(collector)
            .serve_with_incoming_shutdown(incoming, async move { grpc_shutdown.cancelled().await })
            .await
            .map_err(|e| Error::Task("grpc server", e.to_string()))
    });

    ready.set(true);
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, "collector ready");
    let drain = Duration::from_millis(config.ingest.drain_timeout_ms);
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        ready.set(false);
        let _ = tokio::time::timeout(drain, http_task).await;
        // KServe halves live only in memory: the ones still waiting for
        // their other half are lost, and counted.
        http::drop_pending(&joiner, &flusher.metrics);
        let grpc = tokio::time::timeout(drain, grpc_task).await;
        let _ = admin_task.await;
        // Everything acknowledged was flushed by the awaited sends; flush
        // stragglers (none expected) before exiting.
        flusher.flush(drain);
        match grpc {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::Task("grpc server", e.to_string())),
            Err(_) => Ok(()),
        }
    });
    Ok(Running {
        http_addr,
        grpc_addr,
        admin_addr,
        registry,
        task,
    })
}

fn tokio_stream_listener(listener: tokio::net::TcpListener) -> tokio_stream::wrappers::TcpListenerStream {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
