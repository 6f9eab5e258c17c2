//! `mlwatch-profile`: builds and inspects drift reference profiles.
//!
//! ```text
//! mlwatch-profile build --input train.csv --model fraud --version 3 --out fraud-v3.json \
//!     [--exclude id] [--prediction-column score=score] [--categorical zip]
//! mlwatch-profile inspect fraud-v3.json
//! ```

use std::fs::File;
use std::io::{BufReader, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use mlwatch_analyzer_drift::ingest::{self, Columns, Format};
use mlwatch_analyzer_drift::{BuildOptions, FeatureProfile, Profile, ProfileBuilder};

#[derive(Parser)]
#[command(version)]
#[command(
    name = "mlwatch-profile",
    about = "Build and inspect mlwatch drift reference profiles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise a training data set (CSV, JSON Lines or Parquet) into a profile.
    Build(Build),
    /// Print a profile's features and sizes.
    Inspect {
        /// Profile JSON file.
        profile: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
    Parquet,
}

#[derive(Parser)]
struct Build {
    /// Training data: .csv (header row), .jsonl (flat rows or the event
    /// shape) or .parquet (flat columns; snappy, zstd, lz4 or uncompressed).
    #[arg(long)]
    input: String,
    /// Input format; by default taken from the extension.
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Model the profile belongs to.
    #[arg(long)]
    model: String,
    /// Profile version.
    #[arg(long)]
    version: u32,
    /// Output file; standard output when absent.
    #[arg(long)]
    out: Option<String>,
    /// Column to ignore (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// COLUMN=OUTPUT: a flat column holding a prediction output (score,
    /// label or value), e.g. `--prediction-column proba=score` (repeatable).
    #[arg(long = "prediction-column")]
    prediction_column: Vec<String>,
    /// Column to treat as categorical even when all values are numbers.
    #[arg(long)]
    categorical: Vec<String>,
    /// Fine bins (KS, JS, Wasserstein, plots).
    #[arg(long, default_value_t = 100)]
    fine_bins: usize,
    /// Coarse bins (PSI, chi-square drift test); must divide fine bins.
    #[arg(long, default_value_t = 10)]
    coarse_bins: usize,
    /// Categories kept per categorical feature.
    #[arg(long, default_value_t = 200)]
    max_categories: usize,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mlwatch-profile: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Build(b) => build(b),
        Command::Inspect { profile } => {
            let text = std::fs::read_to_string(&profile).with_context(|| format!("cannot read {profile}"))?;
            let p = Profile::from_json(&text).with_context(|| profile.clone())?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "model {} version {} from {:?}: {} rows, {} features, {} prediction outputs, {} bytes of JSON",
                p.model,
                p.version,
                p.source,
                p.rows,
                p.features.len(),
                p.predictions.len(),
                text.len()
            )?;
            for (name, f) in p.features.iter().chain(&p.predictions) {
                match f {
                    FeatureProfile::Numeric(n) => writeln!(
                        out,
                        "  {name}: numeric, {} values, {} missing, mean {:.4}, std {:.4}, range [{}, {}], {} bins",
                        n.count,
                        n.missing,
                        n.mean,
                        n.std,
                        n.min,
                        n.max,
                        n.counts.len()
                    )?,
                    FeatureProfile::Categorical(c) => writeln!(
                        out,
                        "  {name}: categorical, {} values, {} missing, {} categories{}",
                        c.count,
                        c.missing,
                        c.categories.len(),
                        if c.other > 0 {
                            format!(" (+{} values in others)", c.other)
                        } else {
                            String::new()
                        }
                    )?,
                }
            }
            Ok(())
        }
    }
}

fn build(b: Build) -> anyhow::Result<()> {
    let format = match b.format {
        Some(FormatArg::Csv) => Format::Csv,
        Some(FormatArg::Jsonl) => Format::JsonLines,
        Some(FormatArg::Parquet) => Format::Parquet,
        None => Format::from_path(&b.input)?,
    };
    let mut columns = Columns {
        exclude: b.exclude.into_iter().collect(),
        ..Columns::default()
    };
    for spec in &b.prediction_column {
        let (column, output) = spec
            .split_once('=')
            .with_context(|| format!("--prediction-column {spec:?}: expected COLUMN=OUTPUT"))?;
        anyhow::ensure!(
            matches!(output, "score" | "label" | "value"),
            "--prediction-column {spec:?}: output must be score, label or value"
        );
        columns.prediction.insert(column.to_string(), output.to_string());
    }
    let mut options = BuildOptions::new(b.model, b.version);
    options.source = b.input.clone();
    options.created_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    options.fine_bins = b.fine_bins;
    options.coarse_bins = b.coarse_bins;
    options.max_categories = b.max_categories;
    options.categorical = b.categorical.into_iter().collect();
    let mut builder = ProfileBuilder::new(options)?;
    let file = File::open(&b.input).with_context(|| format!("cannot open {}", b.input))?;
    let profile = if format == Format::Parquet {
        // Random access to the file (footer first), no copy into memory.
        ingest::read_parquet(file, &columns, &mut builder).context(b.input.clone())?;
        builder.finish().context(b.input.clone())?
    } else {
        ingest::build(BufReader::new(file), format, &columns, builder).context(b.input.clone())?
    };
    let json = profile.to_json();
    match &b.out {
        Some(path) => std::fs::write(path, &json).with_context(|| format!("cannot write {path}"))?,
        None => std::io::stdout().lock().write_all(json.as_bytes())?,
    }
    eprintln!(
        "profile {} v{}: {} rows, {} features, {} prediction outputs, {} bytes",
        profile.model,
        profile.version,
        profile.rows,
        profile.features.len(),
        profile.predictions.len(),
        json.len()
    );
    Ok(())
}
