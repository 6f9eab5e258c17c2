//! The analyzer alone, in-process, with every computation on: events in
//! the public JSON shape are written to a JSON Lines file, read back and
//! converted by the collector's own validation (JSON parsing is not timed),
//! encoded as protobuf exactly as they arrive from Kafka, then handed to the
//! service's own apply path ([`mlwatch_analyzer::partition::Partitions::apply`])
//! in poll-sized batches: protobuf decoding, the latency part, the drift
//! monitors (a reference profile per model) and the accuracy join (with the
//! join backend asked for, labels for half of the events), with a
//! checkpoint of the join every 5 s of event time as the service does.
//!
//! Runs in its own process (`--measure-alone`) so that its peak memory is
//! its own; prints one JSON line of figures.

use std::io::{BufRead as _, Write as _};
use std::time::Instant;

use mlwatch_analyzer::accuracy::join::JoinBackend;
use mlwatch_analyzer::consumer::{self, Decoding};
use mlwatch_analyzer::partition::{Decoded, Partitions, Settings};
use mlwatch_collector::validate::{self, Limits};
use prost::Message as _;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;

use crate::events;

/// Models in the stream (keys of the partitioner).
const MODELS: u64 = 10;
/// Partitions the models spread over.
const PARTITIONS: i32 = 6;
/// Messages per batch: what the service takes from one poll at most.
const BATCH: usize = 1000;
/// Event time between two inference events (1,000 events/s of event time,
/// the design's load per model group).
const SPACING_MS: i64 = 1;
/// Labels arrive this many events after their prediction.
const LABEL_DELAY_EVENTS: u64 = 2000;
/// The service checkpoints every 5 s; here every 5 s of event time.
const CHECKPOINT_EVERY_MS: i64 = 5000;

/// What `--measure-alone` prints.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Figures {
    pub inferences: u64,
    pub labels: u64,
    /// Seconds on the measuring thread's CPU (decode + apply).
    pub cpu_secs: f64,
    pub wall_secs: f64,
    /// CPU seconds of the protobuf decoding alone (measured in a pass of
    /// its own over the same messages).
    pub decode_cpu_secs: f64,
    /// Inference events per second of CPU (labels processed on top).
    pub events_per_cpu_sec: f64,
    /// Peak resident memory while processing (the process's high-water
    /// mark, reset after loading the input).
    pub peak_rss_mib: f64,
    /// Resident memory once the input was loaded (the encoded messages).
    pub input_rss_mib: f64,
    pub joined: i64,
    pub drift_monitored: bool,
    pub alerts: usize,
    /// `[accuracy.join] backend` of the measured analyzer.
    pub join_backend: String,
}

/// CPU time of the calling thread, in seconds (`/proc/thread-self/schedstat`).
pub fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()))
        .map(|ns| ns as f64 / 1e9)
        .unwrap_or(0.0)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn model_name(i: u64) -> String {
    format!("model-{}", i % MODELS)
}

fn partition_of(model: &str) -> i32 {
    // Stable, like a key partitioner: models spread over the partitions.
    let h = model
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (h % PARTITIONS as u32) as i32
}

/// Writes `n` standard inference events (and labels for half of them) as
/// JSON Lines, in the order a collector would receive them.
fn write_jsonl(path: &std::path::Path, n: u64, t0: i64) -> anyhow::Result<()> {
    let names = events::Names::default();
    let mut rng = SmallRng::seed_from_u64(17);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for i in 0..n + LABEL_DELAY_EVENTS {
        let t = t0 + i as i64 * SPACING_MS;
        if i < n {
            let e = events::inference(&names, &mut rng, &model_name(i), i, t, 10.0 + (i % 40) as f64);
            serde_json::to_writer(&mut out, &events::to_json(&e))?;
            out.write_all(b"\n")?;
        }
        if let Some(j) = i.checked_sub(LABEL_DELAY_EVENTS)
            && j.is_multiple_of(2)
        {
            let l = events::label(&model_name(j), j, t, &mut rng);
            serde_json::to_writer(&mut out, &events::label_to_json(&l))?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One message as it sits on a topic: partition, offset, topic, bytes.
struct Message {
    partition: i32,
    offset: i64,
    is_label: bool,
    payload: Vec<u8>,
}

/// Reads the JSON Lines file back through the collector's validation and
/// encodes each event as the collector publishes it.
fn load(path: &std::path::Path, now_ms: i64) -> anyhow::Result<Vec<Message>> {
    let limits = Limits::default();
    let mut next = std::collections::HashMap::<(i32, bool), i64>::new();
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(std::fs::File::open(path)?).lines().enumerate() {
        let value: serde_json::Value = serde_json::from_str(&line?)?;
        let is_label = value.get("label").is_some();
        let (model, payload) = if is_label {
            let l = validate::label_from_json(i, &value, &limits, now_ms).map_err(|r| anyhow::anyhow!("{r:?}"))?;
            (l.model.clone(), l.encode_to_vec())
        } else {
            let e = validate::inference_from_json(i, &value, &limits, now_ms).map_err(|r| anyhow::anyhow!("{r:?}"))?;
            // As the collector publishes an event it read from JSON.
            let mut bytes = Vec::new();
            mlwatch_proto::view::encode_sorted(&e, &mut bytes);
            (e.model.clone(), bytes)
        };
        let partition = partition_of(&model);
        let offset = next.entry((partition, is_label)).or_default();
        out.push(Message {
            partition,
            offset: *offset,
            is_label,
            payload,
        });
        *offset += 1;
    }
    Ok(out)
}

/// The measurement (child process side).
pub fn measure(n: u64, backend: JoinBackend) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let now = mlwatch_common::now_ms();
    let t0 = now - 3_600_000;
    let jsonl = dir.path().join("events.jsonl");
    write_jsonl(&jsonl, n, t0)?;
    let messages = load(&jsonl, now)?;
    let input_rss_mib = status_kib("VmRSS:") as f64 / 1024.0;

    let mut config = mlwatch_analyzer::Config::default();
    config.accuracy.join.dir = dir.path().join("accuracy");
    config.accuracy.join.backend = backend;
    config.drift.profile_dir = dir.path().join("profiles");
    config.analyzer.group_id = "bench".into();
    let mut partitions = Partitions::new(Settings::from_config(&config));
    for m in 0..MODELS {
        partitions.put_profile(events::profile(&model_name(m))?)?;
    }
    let shared = consumer::shared(partitions);
    let mut core = consumer::lock(&shared);
    for p in 0..PARTITIONS {
        core.own(p)?;
    }
    // Peak memory from here on.
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    // Decoding alone first, to tell its share.
    let mut decoding = Decoding::default();
    let d0 = thread_cpu_secs();
    let mut poison = 0;
    for m in &messages {
        let d = decoding.decode(m.is_label, Some(&m.payload));
        if let Decoded::Inference(Err(_)) | Decoded::Label(Err(_)) = d {
            poison += 1;
        }
        decoding.recycle([d]);
    }
    let decode_cpu = thread_cpu_secs() - d0;
    anyhow::ensure!(poison == 0, "{poison} messages do not decode");

    let (mut inferences, mut labels, mut alerts) = (0u64, 0u64, 0usize);
    let mut next_checkpoint = t0 + CHECKPOINT_EVERY_MS;
    let mut decoded = Vec::with_capacity(BATCH);
    let wall = Instant::now();
    let cpu0 = thread_cpu_secs();
    for batch in messages.chunks(BATCH) {
        decoding.recycle(decoded.drain(..));
        decoded.extend(batch.iter().map(|m| decoding.decode(m.is_label, Some(&m.payload))));
        let applied = core.apply(batch.iter().zip(&decoded).map(|(m, d)| (m.partition, m.offset, d)));
        if let Some(error) = applied.error {
            anyhow::bail!("join store failed: {error}");
        }
        if let Some((i, reason)) = applied.poison {
            anyhow::bail!("message {i} of a batch is poison: {reason}");
        }
        inferences += applied.inferences;
        labels += applied.labels;
        alerts += core.take_outbox().len();
        let clock = core.iter().map(|(_, s)| s.clock_ms()).max().unwrap_or(0);
        if clock >= next_checkpoint {
            next_checkpoint = clock + CHECKPOINT_EVERY_MS;
            for p in 0..PARTITIONS {
                if let Some((_, Some(accuracy), _)) = core.checkpoint(p) {
                    core.checkpointed(p, accuracy.tracker.journal_seq);
                }
            }
        }
    }
    let cpu_secs = thread_cpu_secs() - cpu0;
    let wall_secs = wall.elapsed().as_secs_f64();
    let joined = core.accuracy_parts().map(|(_, c, _)| c.joined).sum();
    let drift_monitored = !core.drift_report(&model_name(0), None).is_empty();
    Ok(Figures {
        inferences,
        labels,
        cpu_secs,
        wall_secs,
        decode_cpu_secs: decode_cpu,
        events_per_cpu_sec: inferences as f64 / cpu_secs.max(1e-9),
        peak_rss_mib: status_kib("VmHWM:") as f64 / 1024.0,
        input_rss_mib,
        joined,
        drift_monitored,
        alerts,
        join_backend: format!("{:?}", config.accuracy.join.backend).to_lowercase(),
    })
}
