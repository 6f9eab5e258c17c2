//! The thin `main` every service binary shares: parse `--config`, load the
//! layered configuration (exit 64 naming the key when it is bad), set up
//! tracing, install the signal handler and call the service's `run`.

use std::future::Future;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{self, EXIT_BAD_CONFIG};
use crate::telemetry::{self, LogConfig};

#[derive(Debug, clap::Parser)]
struct Args {
    /// TOML configuration file; `MLWATCH_<SECTION>__<KEY>` variables override it.
    #[arg(long, short, env = "MLWATCH_CONFIG")]
    config: Option<PathBuf>,
}

/// A service configuration that carries a `[log]` section.
pub trait HasLog {
    fn log(&self) -> &LogConfig;
}

/// Runs a service binary. `sections` are the config's top-level sections.
pub fn main<C, F, Fut>(name: &'static str, sections: &[&str], run: F) -> !
where
    C: DeserializeOwned + Serialize + Default + HasLog,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), crate::ServiceError>>,
{
    // `--version` names the service and the release it was built from.
    let matches = Args::command()
        .name(name)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches();
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config: C = match config::load(args.config.as_deref(), sections) {
        Ok(c) => c,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    };
    telemetry::init(config.log());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        let shutdown = crate::shutdown::on_signals();
        match run(config, shutdown).await {
            Ok(()) => {
                tracing::info!(service = name, "stopped");
                0
            }
            Err(error) if error.exit_code() == 0 => {
                tracing::info!(service = name, %error, "stopped");
                0
            }
            Err(error) => {
                tracing::error!(service = name, %error, "failed");
                error.exit_code()
            }
        }
    });
    std::process::exit(code)
}
