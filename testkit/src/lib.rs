//! What mlwatch's tests share, so that a service's tests build that service
//! and this crate, not the whole workspace. It depends on `mlwatch-proto`
//! and `mlwatch-common` only; each service offers `Config::for_test` for
//! its own loopback configuration. `docs/testing.md` says where tests live.
//!
//! - Real peers, each serving until a `CancellationToken` fires (`start`
//!   on a loopback port the OS picks, `serve` on a given address, both
//!   answering [`Served`]): [`receiver::HttpReceiver`] (Slack, PagerDuty,
//!   any webhook: records requests, answers scripted statuses),
//!   [`smtp::SmtpServer`] (a mail catcher with STARTTLS, SMTPS, `AUTH
//!   PLAIN` and scripted refusals) and [`sim::SimPlatform`] (the serving
//!   platform: a real tonic `ServingControl` server over simulated models;
//!   the demo and `mlwatch-sim` use it too).
//! - Kafka ([`kafka`]): the broker under test, a private one to freeze or
//!   kill ([`broker::PrivateBroker`]), private topics and groups
//!   per test ([`kafka_for_test`], [`run_suffix`]), the TOML file of a
//!   service started as a child process ([`config_file`], [`kafka_toml`]),
//!   topics read back and decoded ([`read_topic`], [`read_decoded`],
//!   [`read_inferences`], [`header`], [`kafka::reader_config`]), alerts
//!   built and published as the analyzer does ([`kafka::analyzer_alert`],
//!   [`Publisher`]).
//! - Waiting ([`wait`]): a future with a deadline ([`within`]), a condition
//!   polled until it holds ([`eventually`]), a `/metrics` endpoint scraped
//!   until it shows something ([`scrape_until`]).
//! - HTTP ([`http`]): GET (JSON, text, status; [`http::poll_json`] until an
//!   answer satisfies a test) and POST of JSON against a service's API.
//! - Secrets in configuration errors ([`secrets`]): each secret-bearing
//!   key given a wrong type, from a TOML file and from the environment,
//!   must fail naming the key, never the value, in-process
//!   ([`secrets::assert_hidden`]) and from the binary (exit 64,
//!   [`secrets::assert_binary_hides`]).
//! - Start-up without a broker ([`startup::assert_waits_for_broker`]): a
//!   service binary's admin port answers at once, `/readyz` says what it
//!   waits for, SIGTERM stops it, a broker appearing makes it ready.
//! - The rest: [`setup`] (logs, private topics, a shutdown token: the
//!   first line of most tests), [`loopback`] (port 0), [`temp_dir`]
//!   (removed when dropped), [`init_logs`].

pub mod broker;
pub mod http;
pub mod kafka;
pub mod receiver;
pub mod secrets;
pub mod sim;
pub mod smtp;
pub mod startup;
pub mod wait;

use std::net::SocketAddr;

pub use http::{get_json, get_json_blocking, post_json};
pub use kafka::{
    Publisher, bootstrap, config_file, header, kafka_for_test, kafka_toml, read_decoded, read_inferences, read_topic,
};
pub use mlwatch_common::kafka::KafkaConfig;
pub use tokio_util::sync::CancellationToken;
pub use wait::{eventually, scrape_until, within};

/// What a peer's `serve` gives: the address it listens on (the port the
/// OS picked for port 0) and its task, which ends once the shutdown token
/// fires.
pub type Served = std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>;

/// The address of a peer just started on [`loopback`]; a peer that cannot
/// listen fails the test.
fn started(served: Served) -> SocketAddr {
    served.expect("a test peer listens on loopback").0
}

/// Binds `listen`; returns the listener and the address it got.
async fn bind(listen: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Loopback with port 0: the OS picks a free port.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A fresh suffix for topic and group names, unique per run.
pub fn run_suffix() -> String {
    use rand::Rng;
    format!(
        "{}-{:06x}",
        mlwatch_common::now_ms(),
        rand::rng().random_range(0..0xFF_FFFFu32)
    )
}

/// What most tests start with: logs on, a Kafka configuration whose topics
/// are private to this test (and their suffix, for group names), and a
/// shutdown token for the peers and services the test starts.
pub fn setup(name: &str) -> (KafkaConfig, String, CancellationToken) {
    init_logs();
    let (kafka, suffix) = kafka_for_test(name);
    (kafka, suffix, CancellationToken::new())
}

/// A new temporary directory, removed with everything in it when the
/// value is dropped (also when the test fails).
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("mlwatch-{prefix}-"))
        .tempdir()
        .expect("a temporary directory")
}

/// Installs a test log subscriber once (`RUST_LOG` controls it, else
/// warnings only).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        mlwatch_common::telemetry::init(&mlwatch_common::telemetry::LogConfig {
            filter: "warn".into(),
            json: false,
        });
    });
}
