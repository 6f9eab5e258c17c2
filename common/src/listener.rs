//! One accept loop for every HTTP listener (the collector's ingest, with or
//! without TLS, and every admin port), with the limits a server facing
//! unknown clients needs:
//!
//! - a cap on open connections and a smaller one per client address, so
//!   idle or slow connections from one source cannot take every file
//!   handle (a connection over either cap is closed at once and counted);
//! - a TLS handshake timeout, a timeout on reading a request's headers
//!   (slowloris), and an idle timeout (no byte either way) on every
//!   connection, keep-alive included;
//! - the client's address on every request ([`ClientAddr`]), so handlers
//!   can share budgets fairly between clients.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::{Extension, Router};
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The address a request came from (set by [`serve`] on every request).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Connection limits of a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Open connections per client IP address at most.
    pub max_connections_per_client: usize,
    /// A request's headers must arrive within this time.
    pub header_read_timeout_ms: u64,
    /// A TLS handshake must finish within this time.
    pub tls_handshake_timeout_ms: u64,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout_ms: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4_096,
            max_connections_per_client: 256,
            header_read_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
        }
    }
}

/// `mlwatch_http_connections_refused_total{listener,reason}` and
/// `mlwatch_http_connections_closed_total{listener,reason}`.
#[derive(Clone)]
pub struct ListenerMetrics {
    refused: IntCounterVec,
    closed: IntCounterVec,
}

impl ListenerMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let refused = IntCounterVec::new(
            prometheus::Opts::new(
                "mlwatch_http_connections_refused_total",
                "Connections closed on arrival, by listener and reason (max_connections, max_connections_per_client)",
            ),
            &["listener", "reason"],
        )?;
        let closed = IntCounterVec::new(
            prometheus::Opts::new(
                "mlwatch_http_connections_closed_total",
                "Connections closed by a limit, by listener and reason (idle, tls_handshake)",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        Ok(Self { refused, closed })
    }

    /// Counters that go nowhere (tests, tools).
    pub fn unregistered() -> Self {
        Self::register(&prometheus::Registry::new()).expect("fresh registry")
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerClient(Mutex<HashMap<IpAddr, usize>>);

/// Holds one connection's place in the caps; gives it back when dropped.
struct Slot {
    per_client: Arc<PerClient>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.per_client.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until
/// `shutdown` fires, within `limits`. `name` labels the metrics.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    shutdown: CancellationToken,
) {
    let total = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let per_client = Arc::new(PerClient::default());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file handles, typically: wait a little rather
                    // than spin.
                    tracing::warn!(%error, listener = name, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            metrics.refused.with_label_values(&[name, "max_connections"]).inc();
            continue;
        };
        {
            let mut map = per_client.0.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(peer.ip()).or_default();
            if *n >= limits.max_connections_per_client {
                drop(map);
                metrics
                    .refused
                    .with_label_values(&[name, "max_connections_per_client"])
                    .inc();
                continue;
            }
            *n += 1;
        }
        let slot = Slot {
            per_client: per_client.clone(),
            ip: peer.ip(),
            _permit: permit,
        };
        let app = app.clone().layer(Extension(ClientAddr(peer)));
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection(name, tcp, app, &limits, &metrics, shutdown).await,
                Some(acceptor) => {
                    let handshake = Duration::from_millis(limits.tls_handshake_timeout_ms);
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(name, stream, app, &limits, &metrics, shutdown).await,
                        Ok(Err(error)) => tracing::debug!(%error, %peer, "tls handshake failed"),
                        Err(_) => {
                            metrics.closed.with_label_values(&[name, "tls_handshake"]).inc();
                            tracing::debug!(%peer, "tls handshake timed out");
                        }
                    }
                }
            }
        });
    }
}

/// Serves one connection until it ends, idles too long, or shutdown.
async fn connection<S>(
    name: &'static str,
    stream: S,
    app: Router,
    limits: &ConnectionLimits,
    metrics: &ListenerMetrics,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let io = Watched {
        inner: stream,
        start,
        last: last.clone(),
    };
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    let mut check = tokio::time::interval(Duration::from_millis(limits.idle_timeout_ms.clamp(100, 1_000)));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, listener = name, "connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
                return;
            }
            _ = check.tick() => {
                let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if quiet >= idle {
                    metrics.closed.with_label_values(&[name, "idle"]).inc();
                    return;
                }
            }
        }
    }
}

/// An I/O stream that notes when a byte last went either way.
struct Watched<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Watched<S> {
    fn touch(&self) {
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
