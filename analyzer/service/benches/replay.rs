//! Bench binary: processes a JSON Lines file of inference events in-process
//! (read, parse and validate with the collector's own code, apply to the
//! partition's latency part) on one thread, then prints events/s per core, peak memory and
//! memory per tracked model version.
//!
//! `cargo bench -p mlwatch-analyzer --bench replay [-- FILE]`
//!
//! Without FILE it writes `target/analyzer-replay.jsonl` first: 600,000
//! events over one hour of event time for 200 model versions (log-normal
//! latencies, 1 % errors, a prediction and three features each), so every
//! window of every series is populated.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use mlwatch_analyzer::partition::{Decoded, Partitions, Settings};
use mlwatch_collector::validate::{Limits, inference_from_json};
use mlwatch_proto::view::InferenceRef;

const EVENTS: u64 = 600_000;
const SERIES: u64 = 200;
const SPAN_MS: u64 = 3_600_000;
const BASE_MS: i64 = 1_790_000_000_000;

/// A deterministic pseudo-random stream (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn generate(path: &PathBuf) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    let mut rng = Rng(42);
    for i in 0..EVENTS {
        let series = i % SERIES;
        let t = BASE_MS + (i * SPAN_MS / EVENTS) as i64;
        let latency = (3.5 + 0.6 * rng.normal()).exp();
        let status = if rng.unit() < 0.01 { "error" } else { "ok" };
        writeln!(
            out,
            r#"{{"event_id":"e{i}","model":"model-{m}","model_version":"v{v}","endpoint":"predict","timestamp":{t},"latency_ms":{latency:.3},"status":"{status}","batch_size":1,"prediction":{{"score":{s:.4},"label":"1"}},"features":{{"amount":{a:.2},"country":"DE","is_new":true}},"tags":{{"region":"eu"}}}}"#,
            m = series / 2,
            v = series % 2,
            s = rng.unit(),
            a = rng.unit() * 1000.0,
        )?;
    }
    out.flush()
}

/// Peak resident set size of this process, in bytes (Linux `VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    let path = match std::env::args().skip(1).find(|a| !a.starts_with("--")) {
        Some(p) => PathBuf::from(p),
        None => {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/analyzer-replay.jsonl");
            if !p.exists() {
                generate(&p)?;
            }
            p
        }
    };
    let limits = Limits {
        max_past_secs: i64::MAX / 2000,
        max_future_secs: i64::MAX / 2000,
        ..Limits::default()
    };
    let rss_before = current_rss_bytes().unwrap_or(0);
    let mut config = mlwatch_analyzer::Config::default();
    config.accuracy.enabled = false;
    config.drift.enabled = false;
    let mut engine = Partitions::new(Settings::from_config(&config));
    engine.own(0)?;
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path)?);
    let start = Instant::now();
    let cpu_start = cpu_time();
    let (mut events, mut rejected, mut alerts, mut parse_ns, mut apply_ns) = (0u64, 0u64, 0usize, 0u128, 0u128);
    let mut by_type: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for (i, line) in file.lines().enumerate() {
        let line = line?;
        let t0 = Instant::now();
        let parsed = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| inference_from_json(i, &v, &limits, BASE_MS).ok());
        let t1 = Instant::now();
        parse_ns += (t1 - t0).as_nanos();
        let Some(event) = parsed else {
            rejected += 1;
            continue;
        };
        let decoded = Decoded::Inference(Ok(InferenceRef::of(&event)));
        engine.apply([(0, i as i64, &decoded)]);
        apply_ns += t1.elapsed().as_nanos();
        for (_, a) in engine.take_outbox() {
            alerts += 1;
            *by_type.entry(a.r#type).or_default() += 1;
        }
        events += 1;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_time().zip(cpu_start).map(|(b, a)| b - a).unwrap_or(wall);
    let series = engine.series();
    let whole: Vec<_> = series.iter().filter(|s| s.segment.is_empty()).collect();
    let state_bytes: usize = engine.latency_size().0;
    let checkpoint_bytes: usize = engine
        .checkpoint(0)
        .map(|(record, _, _)| serde_json::to_vec(&record).map(|v| v.len()).unwrap_or(0))
        .unwrap_or(0);
    let rss_after = current_rss_bytes().unwrap_or(0);
    let peak = peak_rss_bytes().unwrap_or(0);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "replay {}: {events} events ({rejected} rejected), {} series, {alerts} alert transitions {by_type:?}; \
         {:.0} events/s per core end to end ({:.0} events/s wall), parse+validate {:.0} ns/event, \
         engine update {:.0} ns/event ({:.0} events/s per core); peak RSS {:.1} MiB; \
         state {:.1} KiB per model version by structure, {:.1} KiB per model version by RSS growth, \
         checkpoint JSON {:.1} KiB per model version",
        path.display(),
        whole.len(),
        events as f64 / cpu,
        events as f64 / wall,
        parse_ns as f64 / events.max(1) as f64,
        apply_ns as f64 / events.max(1) as f64,
        1e9 / (apply_ns as f64 / events.max(1) as f64),
        mib(peak),
        state_bytes as f64 / whole.len().max(1) as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / whole.len().max(1) as f64 / 1024.0,
        checkpoint_bytes as f64 / whole.len().max(1) as f64 / 1024.0,
    );
    Ok(())
}

/// CPU time of this process, in seconds (user + system, Linux).
fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
