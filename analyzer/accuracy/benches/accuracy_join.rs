//! Label-join benchmark: fills one partition's join store with pending
//! predictions, then joins labels against it, and prints one line of
//! figures (insert and join throughput, peak RSS, file size).
//!
//! ```sh
//! cargo bench -p mlwatch-analyzer --bench accuracy_join
//! ACCURACY_BENCH_PENDING=1000000 cargo bench -p mlwatch-analyzer --bench accuracy_join
//! ACCURACY_BENCH_BACKEND=memory ACCURACY_BENCH_PENDING=1000000 cargo bench -p mlwatch-analyzer --bench accuracy_join
//! ```
//!
//! Environment: `ACCURACY_BENCH_PENDING` (default 10,000,000),
//! `ACCURACY_BENCH_LABELS` (default 1,000,000, 10 % of them duplicates),
//! `ACCURACY_BENCH_BATCH` (events per transaction, default 10,000),
//! `ACCURACY_BENCH_DIR` (store directory, default a temporary one under
//! `target/`), `ACCURACY_BENCH_CACHE_MIB` (page cache, default 64),
//! `ACCURACY_BENCH_BACKEND` (`redb`, the default, or `memory`). For the
//! memory backend it also prints the bytes per tracked id: the index's own
//! estimate (capacities) and the resident-memory growth while inserting.
//! The journal is trimmed every 10 batches, as the engine does after each
//! acknowledged checkpoint.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use mlwatch_analyzer_accuracy::join::{
    JoinBackend, JoinConfig, JoinEvent, JoinInput, JoinStore, PendingPrediction, TruthLabel,
};

const MIB: f64 = (1 << 20) as f64;
/// Batches between journal trims (a checkpoint every ~100,000 events).
const TRIM_EVERY: u64 = 10;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A random-looking 64-bit id (splitmix64), like a UUID's randomness.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let pending = env("ACCURACY_BENCH_PENDING", 10_000_000);
    let labels = env("ACCURACY_BENCH_LABELS", 1_000_000).min(pending);
    let batch = env("ACCURACY_BENCH_BATCH", 10_000).max(1) as usize;
    let cache = env("ACCURACY_BENCH_CACHE_MIB", 64) << 20;
    let dir = std::env::var("ACCURACY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/accuracy-bench"));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = match std::env::var("ACCURACY_BENCH_BACKEND").as_deref() {
        Ok("memory") => JoinBackend::Memory,
        Ok("redb") | Err(_) => JoinBackend::Redb,
        Ok(other) => panic!("ACCURACY_BENCH_BACKEND={other}: expected redb or memory"),
    };
    let config = JoinConfig {
        backend,
        dir: dir.clone(),
        cache_bytes: cache,
        ..Default::default()
    };
    let rss_before = status_mib("VmRSS:");
    let mut store = JoinStore::open(&config, 0).expect("open store");
    let t0: i64 = 1_795_000_000_000;
    // 1,000 predictions/s: 10 M pending span 2.8 hours of a 24 h lag.
    let at = |i: u64| t0 + i as i64;
    let prediction = |i: u64| {
        JoinInput::Prediction(PendingPrediction {
            event_id: format!("{:016x}", mix(i)),
            model: "fraud".into(),
            model_version: "v3".into(),
            timestamp_ms: at(i),
            score: Some((mix(i ^ 7) % 1000) as f64 / 1000.0),
            label: Some("1".into()),
            tags: [("region".to_string(), "eu".to_string())].into_iter().collect(),
            ..Default::default()
        })
    };
    let started = Instant::now();
    let mut batches = 0u64;
    let mut inputs = Vec::with_capacity(batch);
    for i in 0..pending {
        inputs.push(prediction(i));
        if inputs.len() == batch || i + 1 == pending {
            store.apply(&inputs, at(i), &[("inference", i as i64)]).expect("apply");
            inputs.clear();
            batches += 1;
            if batches.is_multiple_of(TRIM_EVERY) {
                // The engine trims after each acknowledged checkpoint.
                store.trim_journal(store.counts().journal_seq as u64).expect("trim");
            }
        }
    }
    let insert_secs = started.elapsed().as_secs_f64();
    match &store {
        JoinStore::Redb(redb) => {
            let (stored, fragmented, metadata) = redb.storage_bytes().expect("stats");
            println!(
                "after insert: file_mib={:.0} stored_mib={:.0} fragmented_mib={:.0} metadata_mib={:.0}",
                store.file_bytes() as f64 / MIB,
                stored as f64 / MIB,
                fragmented as f64 / MIB,
                metadata as f64 / MIB
            );
        }
        JoinStore::Memory(log) => {
            let ids = log.tracked_ids().max(1) as f64;
            println!(
                "after insert: file_mib={:.0} segments={} tracked_ids={} index_bytes_per_id={:.1} \
                 rss_growth_bytes_per_id={:.1}",
                store.file_bytes() as f64 / MIB,
                log.segment_count(),
                log.tracked_ids(),
                log.index_bytes() as f64 / ids,
                (status_mib("VmRSS:") - rss_before) * MIB / ids,
            );
        }
    }
    let rss_after_insert = peak_rss_mib();

    // Labels for random pending predictions, in random order, 10 % sent twice.
    let started = Instant::now();
    let now = at(pending);
    let mut sent = 0u64;
    let mut joined = 0usize;
    let stride = (pending / labels.max(1)).max(1);
    for k in 0..labels {
        let i = (mix(k ^ 0xABCD) % stride) + k * stride;
        let i = i.min(pending - 1);
        let label = JoinInput::Label(TruthLabel {
            event_id: format!("{:016x}", mix(i)),
            model: "fraud".into(),
            timestamp_ms: now,
            label: Some("1".into()),
            value: None,
        });
        if k % 10 == 0 {
            inputs.push(label.clone());
            sent += 1;
        }
        inputs.push(label);
        sent += 1;
        if inputs.len() >= batch || k + 1 == labels {
            let entries = store.apply(&inputs, now, &[("labels", k as i64)]).expect("apply");
            joined += entries
                .iter()
                .filter(|e| matches!(e.event, JoinEvent::Joined(_)))
                .count();
            inputs.clear();
            batches += 1;
            if batches.is_multiple_of(TRIM_EVERY) {
                store.trim_journal(store.counts().journal_seq as u64).expect("trim");
            }
        }
    }
    let join_secs = started.elapsed().as_secs_f64();
    let counts = store.counts();
    assert!(counts.balanced(), "{counts:?}");
    println!(
        "backend={backend:?} pending={pending} insert_per_s={:.0} labels_sent={sent} joined={joined} duplicates={} \
         labels_per_s={:.0} peak_rss_mib={:.0} rss_after_insert_mib={:.0} file_mib={:.0} cache_mib={} batch={batch}",
        pending as f64 / insert_secs,
        counts.duplicate_labels,
        sent as f64 / join_secs,
        peak_rss_mib(),
        rss_after_insert,
        store.file_bytes() as f64 / (1 << 20) as f64,
        cache >> 20,
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
