//! `mlwatch-replay`: streams a JSON Lines file of inference and label
//! events through the collector, at a rate or as fast as possible, with a
//! progress bar. Exit code 0 when every event was accepted, 2 when some
//! were rejected (listed on stderr), 1 on failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mlwatch_collector::client::{Client, ClientConfig};
use mlwatch_collector::replay::{self, Options};
use mlwatch_collector::security::Secret;

#[derive(Parser)]
#[command(version)]
#[command(
    name = "mlwatch-replay",
    about = "Replay a JSON Lines file of events through the collector"
)]
struct Args {
    /// JSON Lines file of inference and label events (`-` for stdin).
    file: PathBuf,
    /// Base URL of the collector's HTTP listener.
    #[arg(long, env = "MLWATCH_COLLECTOR_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Events per second (0: as fast as the collector takes them).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Bearer token (prefer the environment variable; it is never printed).
    #[arg(long, env = "MLWATCH_COLLECTOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file of a private CA to trust for https URLs.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Retries per batch on 429 / 503.
    #[arg(long, default_value_t = 8)]
    max_retries: u32,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mlwatch-replay: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut config = ClientConfig::new(&args.url);
    config.batch_size = args.batch_size;
    config.max_retries = args.max_retries;
    config.token = args.token.map(Secret::new);
    if let Some(ca) = &args.ca {
        config.root_ca_pem = Some(std::fs::read(ca).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", ca.display()))?);
    }
    let client = Client::new(config)?;
    let options = Options {
        rate_per_sec: (args.rate > 0.0).then_some(args.rate),
        batch_size: args.batch_size,
    };
    let (input, total): (Box<dyn tokio::io::AsyncBufRead + Unpin>, Option<u64>) = if args.file.as_os_str() == "-" {
        // Standard input is read whole (pipes are for modest files).
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)?;
        let lines = text.iter().filter(|b| **b == b'\n').count() as u64;
        (Box::new(std::io::Cursor::new(text)), Some(lines))
    } else {
        let lines = count_lines(&args.file)?;
        let file = tokio::fs::File::open(&args.file).await?;
        (Box::new(tokio::io::BufReader::new(file)), Some(lines))
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = total.map_or_else(indicatif::ProgressBar::no_length, indicatif::ProgressBar::new);
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} lines ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar
    };
    let report = replay::replay(input, &client, &options, |n| bar.set_position(n)).await?;
    bar.finish();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "sent {} events, accepted {}, rejected {}, retries {}, in {:.1} s ({:.0} events/s)",
        report.sent,
        report.accepted,
        report.rejected.len(),
        report.retries,
        secs,
        report.accepted as f64 / secs
    );
    for r in report.rejected.iter().take(50) {
        eprintln!(
            "line {}: {}: {}",
            r.line,
            if r.field.is_empty() { "-" } else { &r.field },
            r.reason
        );
    }
    if report.rejected.len() > 50 {
        eprintln!("... and {} more rejected lines", report.rejected.len() - 50);
    }
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn count_lines(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(std::io::BufReader::new(file).split(b'\n').count() as u64)
}
