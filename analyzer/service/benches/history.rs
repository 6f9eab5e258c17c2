//! Memory and checkpoint size of one series' history at the defaults (a
//! day at one minute, a week at ten minutes) when both rings are full, for
//! a typical column set: latency (5 columns), throughput, accuracy with
//! baseline, alert line, estimate and label coverage (5), and drift
//! scores for 3 features and 2 prediction outputs (5 each, plus 2 means).
//! Also times one sample (the row appended to every series per step).
//! Prints one line of figures.
//!
//! `cargo bench -p mlwatch-analyzer --bench history`
#![allow(clippy::print_stdout)]

use std::time::Instant;

use mlwatch_analyzer::history::{HistoryConfig, PartitionHistory, Sample};

fn sample(k: usize) -> Sample {
    let x = k as f64;
    let mut s = Sample::new("fraud", "v4", "");
    for (i, name) in [
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "error_rate",
        "slow_request_rate",
        "throughput_rps",
    ]
    .iter()
    .enumerate()
    {
        s.put(*name, Some(10.0 + i as f64 * 7.3 + (x * 0.37).sin() * 3.1));
    }
    for name in [
        "accuracy",
        "accuracy_baseline",
        "accuracy_alert_below",
        "accuracy_estimated",
        "label_coverage",
    ] {
        s.put(name, Some(0.9 + (x * 0.11).cos() * 0.03));
    }
    for f in [
        "drift.amount",
        "drift.country",
        "drift.is_new",
        "prediction.score",
        "prediction.label",
    ] {
        for score in ["psi", "js", "ks", "wasserstein", "z"] {
            s.put(format!("{f}.{score}"), Some(0.01 + (x * 0.07).sin().abs() * 0.2));
        }
    }
    s.put("prediction.score.mean", Some(0.5 + (x * 0.05).sin() * 0.02));
    s.put("prediction.label.mean", Some(0.5));
    s
}

fn main() {
    let config = HistoryConfig::default();
    let steps = config.coarse_every * config.coarse_points + config.fine_points;
    let mut h = PartitionHistory::default();
    let step_ms = config.step_secs as i64 * 1000;
    let t0 = 1_800_000_000_000i64;
    let started = Instant::now();
    for k in 0..steps {
        let s = sample(k);
        h.record(&config, t0 + k as i64 * step_ms, std::slice::from_ref(&s));
    }
    let per_row = started.elapsed().as_secs_f64() / steps as f64;
    let (heap, series) = h.size();
    let json = serde_json::to_vec(&h).expect("json").len();
    let columns = sample(0).values.len();
    println!(
        "history: 1 series, {columns} columns, {} fine rows ({} s) + {} coarse rows: {:.0} KiB in memory, {:.0} KiB of checkpoint JSON; {:.1} µs per row (sample and append, {series} series)",
        config.fine_points,
        config.step_secs,
        config.coarse_points,
        heap as f64 / 1024.0,
        json as f64 / 1024.0,
        per_row * 1e6,
    );
}
