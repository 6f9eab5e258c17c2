//! The collector under connection abuse from other addresses (127.0.0.2,
//! 127.0.0.3, … on loopback), while a well-behaved client on 127.0.0.1
//! keeps sending: it is never refused, and every abusive connection ends by
//! a limit.
//!
//! - slow bodies: 32 requests that declare 8 MiB and trickle two bytes a
//!   second take at most their client's share of the body budget (the rest
//!   get 429) and end with 408 after the body read timeout;
//! - 2,000 idle connections: past the per-client cap they are closed on
//!   arrival, the admitted ones close after the idle timeout;
//! - slow headers: a request head never finished is closed after the header
//!   read timeout;
//! - TLS: a client that connects and never starts the handshake is closed
//!   after the handshake timeout.
//!
//! The well-behaved client's latencies are printed (p50, p99), not asserted.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mlwatch_collector::security::TlsConfig;
use serde_json::json;
use support::TestCollector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// Reads until the peer closes (or `secs` pass); returns what was read and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, secs: u64) -> (String, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into(), true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buf).into(), false),
        }
    }
}

/// Sends a small valid batch every 50 ms until `stop`; returns the
/// statuses and latencies.
async fn well_behaved(url: String, stop: tokio_util::sync::CancellationToken) -> Vec<(u16, Duration)> {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 1]))
        .build()
        .unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while !stop.is_cancelled() {
        let events: Vec<_> = (0..10)
            .map(|k| json!({"event_id": format!("good-{i}-{k}"), "model": "fraud", "latency_ms": 3.0}))
            .collect();
        let t = Instant::now();
        let status = match client.post(&url).json(&events).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        out.push((status, t.elapsed()));
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abusive_connections_end_by_a_limit_and_never_starve_a_well_behaved_client() {
    let c = TestCollector::start("collector-abuse", |c| {
        c.ingest.body_read_timeout_ms = 4_000;
        c.http.connections.header_read_timeout_ms = 2_000;
        c.http.connections.idle_timeout_ms = 3_000;
    })
    .await;
    let addr = c.running.http_addr;
    let stop = tokio_util::sync::CancellationToken::new();
    let good = tokio::spawn(well_behaved(c.url("/v1/inferences"), stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Slow bodies from 127.0.0.2: 32 × 8 MiB declared.
    let mut slow = Vec::new();
    for _ in 0..32 {
        let mut s = connect_from([127, 0, 0, 2], addr).await.unwrap();
        s.write_all(
            format!(
                "POST /v1/inferences HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n[",
                8 * 1024 * 1024
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        slow.push(s);
    }
    // Idle connections from 127.0.0.3.
    let mut idle = Vec::new();
    for _ in 0..2_000 {
        match connect_from([127, 0, 0, 3], addr).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    // A head never finished, from 127.0.0.4.
    let mut head = connect_from([127, 0, 0, 4], addr).await.unwrap();
    head.write_all(b"POST /v1/inferences HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();

    // Trickle two bytes a second into the slow bodies for a while.
    for _ in 0..3 {
        for s in &mut slow {
            let _ = s.write_all(b" ").await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The slow bodies: at most the client's share went in (64 MiB = 8 of
    // them), the rest were answered 429 at once; those admitted end with 408.
    let mut answers = Vec::new();
    for s in &mut slow {
        let (text, closed) = read_until_closed(s, 15).await;
        let status = text.split(' ').nth(1).unwrap_or("").to_string();
        answers.push((status, closed));
    }
    let throttled = answers.iter().filter(|(s, _)| s == "429").count();
    let timed_out = answers.iter().filter(|(s, _)| s == "408").count();
    assert_eq!(throttled + timed_out, 32, "{answers:?}");
    assert!(timed_out <= 8, "one client held more than its share: {answers:?}");
    eprintln!("slow bodies: {throttled} answered 429, {timed_out} answered 408");

    // Idle: all closed, most on arrival, the rest by the idle timeout.
    let mut open = 0;
    for s in &mut idle {
        let (_, closed) = read_until_closed(s, 10).await;
        if !closed {
            open += 1;
        }
    }
    assert_eq!(open, 0, "idle connections left open");
    let (_, closed) = read_until_closed(&mut head, 10).await;
    assert!(closed, "an unfinished request head stays open");

    stop.cancel();
    let results = good.await.unwrap();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(refused.is_empty(), "the well-behaved client was refused: {refused:?}");
    let mut lat: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    lat.sort();
    eprintln!(
        "well-behaved client under abuse: {} requests, p50 {:?}, p99 {:?}",
        lat.len(),
        quantile(&lat, 0.5),
        quantile(&lat, 0.99)
    );
    let metrics = reqwest::get(c.admin("/metrics")).await.unwrap().text().await.unwrap();
    for line in [
        "mlwatch_http_connections_refused_total{listener=\"ingest\",reason=\"max_connections_per_client\"}",
        "mlwatch_http_connections_closed_total{listener=\"ingest\",reason=\"idle\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    c.assert_healthy().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_shakes_hands_is_closed() {
    let fixture = |name: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    };
    let c = TestCollector::start("collector-abuse-tls", |c| {
        c.http.tls = Some(TlsConfig {
            cert_path: fixture("server.pem"),
            key_path: fixture("server.key"),
        });
        c.http.connections.tls_handshake_timeout_ms = 2_000;
    })
    .await;
    let mut s = connect_from([127, 0, 0, 5], c.running.http_addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut s, 10).await;
    assert!(closed, "a connection without a handshake stays open");
    let metrics = reqwest::get(c.admin("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("mlwatch_http_connections_closed_total{listener=\"ingest\",reason=\"tls_handshake\"} 1"),
        "{metrics}"
    );
    c.stop().await;
}
