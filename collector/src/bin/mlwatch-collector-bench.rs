//! `mlwatch-collector-bench`: in one run against one broker,
//! 1. a raw rdkafka producer's throughput (same producer settings as the
//!    collector: idempotent, acks=all, lz4, linger 5 ms) publishing
//!    inference events encoded before the clock starts;
//! 2. the collector's ingest throughput over gRPC batches encoded before the
//!    clock starts (the collector finds, validates and publishes the events,
//!    waits for the broker's acknowledgement, answers), as a ratio of (1);
//! 3. HTTP single-event latency at a fixed rate, measured open loop from
//!    each request's scheduled send time (no coordinated omission).
//!
//! `mlwatch-collector-bench replay` instead measures `mlwatch-replay`: a
//! merged file of inferences and labels in arrival order against a file of
//! inferences alone of the same length, each through the in-process
//! collector over HTTP, in messages per second.
//!
//! Prints the figures, last a single summary line. Broker:
//! `KAFKA_BOOTSTRAP_SERVERS` or 127.0.0.1:9092. See docs/benchmarks-collector.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::future::join_all;
use mlwatch_collector::client::{Client, ClientConfig};
use mlwatch_collector::grpc_client::{EncodedClient, INFERENCES};
use mlwatch_collector::replay::{self, Options};
use mlwatch_collector::{Config, Running};
use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_proto::v1::{FeatureValue, InferenceEvent, IngestInferencesRequest, Prediction, feature_value};
use prost::Message as _;
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version)]
#[command(name = "mlwatch-collector-bench")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Events per throughput phase.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per gRPC batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent gRPC batch senders. Each waits for its batch's
    /// acknowledgement, so senders x batch is the events in flight: 32 x 1000
    /// stays below the 50,000 the raw producer keeps in flight, so the
    /// comparison does not favour the collector.
    #[arg(long, default_value_t = 32)]
    senders: usize,
    /// Alternating raw / gRPC rounds; the medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// HTTP single-event rate, events per second.
    #[arg(long, default_value_t = 500)]
    http_rate: u64,
    /// HTTP phase duration, seconds.
    #[arg(long, default_value_t = 10)]
    http_secs: u64,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Replay throughput: a merged file of inferences and labels in arrival
    /// order against a file of inferences alone with as many lines.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Inference lines of the merged file.
    #[arg(long, default_value_t = 200_000)]
    inferences: usize,
    /// Label lines of the merged file (one per inference at most), each
    /// 1 to 2000 inferences after its prediction.
    #[arg(long, default_value_t = 100_000)]
    labels: usize,
    /// Events per request (`mlwatch-replay --batch-size`).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Alternating merged / one-kind rounds; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn event(i: usize) -> InferenceEvent {
    let features = (0..10)
        .map(|f| {
            let kind = if f % 3 == 0 {
                feature_value::Kind::Text(format!("c{}", i % 7))
            } else {
                feature_value::Kind::Number((i * 31 + f) as f64 / 7.0)
            };
            (format!("feature_{f}"), FeatureValue { kind: Some(kind) })
        })
        .collect();
    InferenceEvent {
        event_id: format!("bench-{i}"),
        model: format!("model-{}", i % 8),
        model_version: "v1".into(),
        endpoint: "predict".into(),
        latency_ms: (i % 100) as f64 + 0.5,
        batch_size: 1,
        prediction: Some(Prediction {
            score: Some((i % 1000) as f64 / 1000.0),
            label: Some(((i % 2) as u8).to_string()),
            ..Prediction::default()
        }),
        features,
        tags: HashMap::from([("region".to_string(), "eu".to_string())]),
        ..InferenceEvent::default()
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The raw producer: every pre-encoded event enqueued (50 000 at a time),
/// every acknowledgement awaited. Events per second acknowledged.
async fn raw_round(producer: &rdkafka::producer::FutureProducer, topic: &str, records: &[(String, Vec<u8>)]) -> f64 {
    let started = Instant::now();
    let mut acked = 0usize;
    for chunk in records.chunks(50_000) {
        let sends = chunk.iter().map(|(key, payload)| async move {
            producer
                .send(
                    FutureRecord::to(topic).key(key.as_str()).payload(payload),
                    Duration::from_secs(30),
                )
                .await
        });
        acked += join_all(sends).await.into_iter().filter(Result::is_ok).count();
    }
    acked as f64 / started.elapsed().as_secs_f64()
}

/// The collector over gRPC: `senders` concurrent clients, each sending its
/// share of the batches, encoded before the clock starts (as the raw
/// producer's events are). Events per second accepted (= broker
/// acknowledged).
async fn grpc_round(url: &str, batches: &[bytes::Bytes], senders: usize) -> anyhow::Result<f64> {
    let batches = batches.to_vec();
    let per_sender = batches.len().div_ceil(senders.max(1));
    let mut work: Vec<Vec<bytes::Bytes>> = Vec::new();
    let mut it = batches.into_iter();
    for _ in 0..senders.max(1) {
        work.push(it.by_ref().take(per_sender).collect());
    }
    let mut clients = Vec::new();
    for _ in 0..work.len() {
        clients.push(EncodedClient::connect(url).await?);
    }
    let started = Instant::now();
    let tasks = work.into_iter().zip(clients).map(|(mine, mut client)| {
        tokio::spawn(async move {
            let mut accepted = 0usize;
            for body in mine {
                let answer = client
                    .send(INFERENCES, body)
                    .await
                    .map_err(|s| anyhow::anyhow!("grpc ingest failed: {s}"))?;
                accepted += answer.accepted as usize;
            }
            anyhow::Ok(accepted)
        })
    });
    let mut accepted = 0;
    for t in join_all(tasks).await {
        accepted += t??;
    }
    Ok(accepted as f64 / started.elapsed().as_secs_f64())
}

/// The 1, 5 and 15 minute load averages of the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds (user + system) this process has used so far: the bench
/// clients, the in-process collector and librdkafka; not the broker.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Topics of this run on the broker under test, and a collector in
/// process publishing to them.
async fn start_collector(suffix: &str, shutdown: &CancellationToken) -> anyhow::Result<(KafkaConfig, Running)> {
    let kafka = KafkaConfig {
        bootstrap_servers: std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topics: Topics::with_suffix(suffix),
        ..KafkaConfig::default()
    };
    let mut config = Config::for_test(&kafka);
    config.log.filter = "warn".into();
    mlwatch_common::telemetry::init(&config.log);
    let running = mlwatch_collector::start(config, shutdown.clone()).await?;
    Ok((kafka, running))
}

/// A JSON Lines file: `inferences` inference events over 8 models and, in
/// arrival order, `labels` labels (one per inference from the first,
/// spread evenly), each 1 to 2000 inferences after its prediction (a
/// fixed pseudo-random lag), so that labels are strewn among the
/// inferences one or two at a time, as in a real arrival-order backfill.
fn replay_file(inferences: usize, labels: usize) -> Vec<u8> {
    let labels = labels.min(inferences);
    let every = inferences.checked_div(labels).unwrap_or(usize::MAX);
    let mut due = std::collections::BTreeMap::<usize, Vec<usize>>::new();
    let mut out = Vec::with_capacity((inferences + labels) * 200);
    let label = |out: &mut Vec<u8>, i: usize| {
        let line = serde_json::json!({"event_id": format!("replay-{i}"), "model": format!("model-{}", i % 8), "label": ((i % 2) as u8).to_string()});
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    };
    let mut labelled = 0;
    for i in 0..inferences {
        let line = serde_json::json!({"event_id": format!("replay-{i}"), "model": format!("model-{}", i % 8),
            "model_version": "v1", "latency_ms": (i % 100) as f64 + 0.5,
            "prediction": {"score": (i % 1000) as f64 / 1000.0, "label": ((i % 2) as u8).to_string()},
            "features": {"amount": (i * 31 % 997) as f64 / 7.0, "country": format!("c{}", i % 7), "is_new": i % 3 == 0}});
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
        if labelled < labels && i % every == 0 {
            due.entry(i + 1 + lag(i as u64) as usize).or_default().push(i);
            labelled += 1;
        }
        for p in due.remove(&i).unwrap_or_default() {
            label(&mut out, p);
        }
    }
    for p in due.into_values().flatten() {
        label(&mut out, p);
    }
    out
}

/// A label's lag behind its prediction, in inferences: 0 to 1999, mixed
/// by a multiplicative hash so that neighbouring labels do not bunch.
fn lag(i: u64) -> u64 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x ^ (x >> 31)) % 2000
}

/// One replay of `file` through the collector: messages per second
/// accepted.
async fn replay_round(client: &Client, file: &[u8], batch_size: usize) -> anyhow::Result<(f64, u64)> {
    let options = Options {
        rate_per_sec: None,
        batch_size,
    };
    let report = replay::replay(std::io::Cursor::new(file), client, &options, |_| {}).await?;
    anyhow::ensure!(report.rejected.is_empty(), "rejected: {:?}", &report.rejected[..1]);
    Ok((report.accepted as f64 / report.elapsed.as_secs_f64(), report.sent))
}

/// `replay`: merged and one-kind files alternated for `rounds` rounds
/// (which goes first alternates too), medians and their ratio.
async fn replay_bench(args: ReplayArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (_kafka, running) = start_collector(&format!("bench-replay-{}", mlwatch_common::now_ms()), &shutdown).await?;
    let merged = replay_file(args.inferences, args.labels);
    let lines = args.inferences + args.labels.min(args.inferences);
    let single = replay_file(lines, 0);
    let mut config = ClientConfig::new(format!("http://{}", running.http_addr));
    config.batch_size = args.batch_size;
    let client = Client::new(config)?;
    let (mut merged_rates, mut single_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let load_before = load_average();
        let (mut m, mut o) = ((0.0, 0), (0.0, 0));
        for phase in 0..2 {
            if (phase == 0) == (round % 2 == 0) {
                m = replay_round(&client, &merged, args.batch_size).await?;
            } else {
                o = replay_round(&client, &single, args.batch_size).await?;
            }
        }
        eprintln!(
            "round {round}: merged {:.0} messages/s ({} messages); one kind {:.0} messages/s ({} messages); ratio {:.2}; load average {load_before} -> {}",
            m.0,
            m.1,
            o.0,
            o.1,
            m.0 / o.0,
            load_average()
        );
        merged_rates.push(m.0);
        single_rates.push(o.0);
        ratios.push(m.0 / o.0);
    }
    shutdown.cancel();
    let _ = running.task.await;
    eprintln!(
        "SUMMARY replay rounds={} inferences={} labels={} batch_size={} merged_messages_per_s={:.0} one_kind_messages_per_s={:.0} median_ratio={:.2} load_average={}",
        args.rounds.max(1),
        args.inferences,
        args.labels.min(args.inferences),
        args.batch_size,
        median(&mut merged_rates),
        median(&mut single_rates),
        median(&mut ratios),
        load_average()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Replay(replay)) = args.command {
        return replay_bench(replay).await;
    }
    let suffix = format!("bench-{}", mlwatch_common::now_ms());
    let shutdown = CancellationToken::new();
    let (kafka, running) = start_collector(&suffix, &shutdown).await?;
    let raw_topic = format!("mlwatch.bench.raw.{suffix}");
    kafka.ensure_topics(&[&raw_topic]).await?;
    let now = mlwatch_common::now_ms();
    let events: Vec<InferenceEvent> = (0..args.events)
        .map(|i| {
            let mut e = event(i);
            e.timestamp_ms = now;
            e
        })
        .collect();
    let avg_bytes = events.iter().map(|e| e.encoded_len()).sum::<usize>() / events.len().max(1);
    // Both sides get their input encoded before any clock starts.
    let records: Vec<(String, Vec<u8>)> = events.iter().map(|e| (e.model.clone(), e.encode_to_vec())).collect();
    let batches: Vec<bytes::Bytes> = events
        .chunks(args.batch.max(1))
        .map(|c| IngestInferencesRequest { events: c.to_vec() }.encode_to_vec().into())
        .collect();
    drop(events);

    let grpc_url = format!("http://{}", running.grpc_addr);

    // 1 and 2, alternated for `rounds` rounds (which goes first alternates
    // too) so that a broker slowing down as it fills, or a busy neighbour,
    // weighs on both alike; the median ratio is kept. The load average and
    // this process's CPU time per event are printed with each phase.
    let producer = kafka.producer()?;
    let (mut raw_rates, mut grpc_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut raw_cpu, mut grpc_cpu) = (Vec::new(), Vec::new());
    let n = records.len() as f64;
    for round in 0..args.rounds.max(1) {
        let load_before = load_average();
        let mut raw = (0.0, 0.0);
        let mut grpc = (0.0, 0.0);
        for phase in 0..2 {
            let cpu = cpu_secs();
            if (phase == 0) == (round % 2 == 0) {
                raw.0 = raw_round(&producer, &raw_topic, &records).await;
                raw.1 = (cpu_secs() - cpu) / n * 1e6;
            } else {
                grpc.0 = grpc_round(&grpc_url, &batches, args.senders).await?;
                grpc.1 = (cpu_secs() - cpu) / n * 1e6;
            }
        }
        let ratio = grpc.0 / raw.0;
        eprintln!(
            "round {round}: raw {:.0} events/s ({:.2} us CPU/event in process); gRPC ({} x {} senders) {:.0} events/s ({:.2} us CPU/event); ratio {ratio:.2}; load average {load_before} -> {}",
            raw.0,
            raw.1,
            args.batch,
            args.senders,
            grpc.0,
            grpc.1,
            load_average()
        );
        raw_rates.push(raw.0);
        grpc_rates.push(grpc.0);
        ratios.push(ratio);
        raw_cpu.push(raw.1);
        grpc_cpu.push(grpc.1);
    }
    drop(producer);
    let raw_rate = median(&mut raw_rates);
    let grpc_rate = median(&mut grpc_rates);
    let ratio = median(&mut ratios);
    let (raw_cpu, grpc_cpu) = (median(&mut raw_cpu), median(&mut grpc_cpu));
    eprintln!(
        "{} events of {avg_bytes} B per phase; medians: raw {raw_rate:.0} events/s, gRPC {grpc_rate:.0} events/s, ratio {ratio:.2}; in-process CPU per event: raw {raw_cpu:.2} us, gRPC {grpc_cpu:.2} us",
        records.len()
    );

    // 3. HTTP single events at a fixed rate, open loop.
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/inferences", running.http_addr);
    let total = (args.http_rate * args.http_secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.http_rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let requests = (0..total).map(|i| {
        let http = http.clone();
        let url = url.clone();
        let scheduled = start + interval * i as u32;
        let body = serde_json::json!({"event_id": format!("http-{i}"), "model": "model-0", "latency_ms": 4.2,
            "prediction": {"score": 0.3}, "features": {"amount": 12.5, "country": "DE"}});
        tokio::spawn(async move {
            tokio::time::sleep_until(scheduled).await;
            let ok = http
                .post(&url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            (ok, scheduled.elapsed().as_secs_f64() * 1000.0)
        })
    });
    let results: Vec<(bool, f64)> = join_all(requests).await.into_iter().filter_map(Result::ok).collect();
    let failed = results.iter().filter(|(ok, _)| !ok).count();
    let mut lat: Vec<f64> = results.iter().map(|(_, ms)| *ms).collect();
    lat.sort_by(f64::total_cmp);
    let (p50, p99, max) = (percentile(&lat, 0.50), percentile(&lat, 0.99), percentile(&lat, 1.0));
    eprintln!(
        "http single events at {} /s for {} s: {} requests, {failed} failed; p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        args.http_rate,
        args.http_secs,
        results.len()
    );
    shutdown.cancel();
    let _ = running.task.await;
    eprintln!(
        "SUMMARY rounds={} raw_events_per_s={raw_rate:.0} grpc_events_per_s={grpc_rate:.0} median_ratio={ratio:.2} raw_cpu_us_per_event={raw_cpu:.2} grpc_cpu_us_per_event={grpc_cpu:.2} http_rate={} http_p50_ms={p50:.2} http_p99_ms={p99:.2} http_failed={failed} load_average={}",
        args.rounds.max(1),
        args.http_rate,
        load_average()
    );
    Ok(())
}
