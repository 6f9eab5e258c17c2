//! Bench binary: how fast the alerter files alerts, in the pure engine and
//! with the durable commit the service does per alert (a redb transaction,
//! fsynced). Prints one line per figure.
//!
//! `cargo bench -p mlwatch-alerter --bench engine`

#![allow(clippy::print_stdout)]

use std::time::Instant;

use mlwatch_alerter::alert::{AlertRecord, Status};
use mlwatch_alerter::engine::{Engine, EngineConfig, State};
use mlwatch_alerter::route::{Route, RouteConfig};
use mlwatch_alerter::store::Store;

fn alert(i: usize, at: i64) -> AlertRecord {
    AlertRecord {
        id: format!("a{i}-{at}"),
        fingerprint: format!("fp{i:06}"),
        status: Status::Firing,
        kind: ["HighP99Latency", "FeatureDrift", "AccuracyDecay"][i % 3].into(),
        severity: ["critical", "high", "medium", "low"][i % 4].into(),
        labels: [
            ("model".to_string(), format!("model{}", i % 200)),
            ("model_version".to_string(), "v3".to_string()),
        ]
        .into(),
        annotations: [("summary".to_string(), "p99 latency 431 ms > 200 ms".to_string())].into(),
        value: 431.0,
        threshold: 200.0,
        starts_at_ms: at,
        ends_at_ms: 0,
        recommendations: vec!["scale up".into()],
        source: "analyzer".into(),
        generated_at_ms: at,
        expires_at_ms: 0,
    }
}

fn engine() -> Engine {
    let config = EngineConfig {
        route: Route::compile(&RouteConfig::design_defaults()).unwrap(),
        inhibit: vec![],
        policies: Default::default(),
    };
    Engine::new(config, State::default())
}

fn main() {
    // Pure engine: ingest + tick per alert, 5 000 alerts into 600 groups
    // per receiver (DESIGN.md routes: up to 3 receivers per alert).
    let n = 5_000;
    let mut e = engine();
    let start = Instant::now();
    let mut sent = 0;
    for i in 0..n {
        let now = i as i64 * 10;
        e.ingest(alert(i, now), now);
        sent += e.tick(now).len();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "engine: {n} alerts filed in {:.3} s = {:.0} alerts/s ({} groups, {sent} notifications)",
        secs,
        n as f64 / secs,
        e.state.groups.len()
    );

    // Durable: the service's per-alert path (ingest, tick, one transaction
    // with the changed rows and the pending log entries, fsync, and the
    // store's copy of the committed state for rollback).
    let dir = std::env::temp_dir().join(format!("mlwatch-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = Store::open(Some(&dir.join("state.redb"))).unwrap();
    store.load().unwrap();
    let mut e = engine();
    let n = 1_000;
    let start = Instant::now();
    for i in 0..n {
        let now = i as i64 * 10;
        e.ingest(alert(i, now), now);
        let made = e.tick(now);
        store.commit(&e.state, &made, now).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let size = std::fs::metadata(dir.join("state.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "durable: {n} alerts filed and committed in {:.3} s = {:.0} alerts/s, {:.2} ms/alert; state file {:.1} MiB",
        secs,
        n as f64 / secs,
        secs * 1000.0 / n as f64,
        size as f64 / (1024.0 * 1024.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
