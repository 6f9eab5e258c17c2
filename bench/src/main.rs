//! `mlwatch-bench`: the performance record, in one run against one broker.
//!
//! 1. the broker's own ceiling: raw rdkafka produce, consume, and
//!    produce+consume at once, for standard events (20 numeric + 5
//!    categorical features, labels for half of them);
//! 2. mlwatch end to end: events sent to the collector in gRPC batches and
//!    processed by the analyzer (its consumed count reaches what was sent);
//! 3. the analyzer alone, in-process: protobuf decoding plus the per-event
//!    update, events/s on one core, and peak memory;
//! 4. detection time: first slow event to the Slack page at a real HTTP
//!    receiver, at 1,000 events/s with default rule settings;
//! 5. memory per tracked model version.
//!
//! Prints one table and writes `docs/benchmarks.md`.
#![allow(clippy::print_stdout)]

mod alone;
mod detect;
mod events;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use mlwatch_analyzer::accuracy::join::JoinBackend;
use mlwatch_analyzer::consumer::FETCH_SETTINGS;
use mlwatch_collector::grpc_client::{EncodedClient, INFERENCES, LABELS};
use mlwatch_common::kafka::{KafkaConfig, Topics};
use mlwatch_proto::v1::collector_client::CollectorClient;
use mlwatch_proto::v1::{IngestInferencesRequest, IngestLabelsRequest};
use prost::Message as _;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[derive(Parser, Debug)]
#[command(version)]
#[command(about = "Measure mlwatch against the broker's own ceiling")]
struct Args {
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// Inference events per throughput measurement (labels add half again).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Concurrent gRPC clients in the end-to-end measurement (each waits for
    /// its batch's acknowledgement before sending the next, so this sets the
    /// events in flight: clients x 1,000).
    #[arg(long, default_value_t = 16)]
    senders: usize,
    /// Where to write the report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: std::path::PathBuf,
    /// Skip the detection-time measurements (they take a few minutes).
    #[arg(long)]
    skip_detection: bool,
    /// Run only these measurements (comma-separated: ceiling, e2e, alone,
    /// memory, detection); all when not given.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,
    /// Internal: measure memory per model version and print it.
    #[arg(long, hide = true)]
    measure_memory: bool,
    /// Internal: measure the analyzer alone and print its figures as JSON.
    #[arg(long, hide = true)]
    measure_alone: bool,
    /// Internal: the join backend of the analyzer-alone measurement.
    #[arg(long, hide = true, default_value = "memory")]
    join_backend: String,
}

/// The measurements, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Ceiling,
    E2e,
    Alone,
    Memory,
    Detection,
}

impl Args {
    fn runs(&self, part: Part) -> bool {
        (self.only.is_empty() || self.only.contains(&part)) && !(part == Part::Detection && self.skip_detection)
    }
}

struct Row {
    what: &'static str,
    figure: String,
    target: &'static str,
    met: Option<bool>,
}

fn kafka(args: &Args, name: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: args.bootstrap_servers.clone(),
        topics: Topics::with_suffix(&format!("bench-{name}-{}", mlwatch_testkit::run_suffix())),
        partitions: 6,
        ..KafkaConfig::default()
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Pre-encoded standard events: (topic kind, key, payload).
fn encoded(n: u64, with_labels: bool) -> Vec<(bool, String, Vec<u8>)> {
    let names = events::Names::default();
    let mut rng = SmallRng::seed_from_u64(7);
    let now = mlwatch_common::now_ms();
    let mut out = Vec::with_capacity((n + n / 2) as usize);
    for i in 0..n {
        let model = format!("model-{}", i % 10);
        let e = events::inference(&names, &mut rng, &model, i, now, 20.0);
        out.push((true, model.clone(), e.encode_to_vec()));
        if with_labels && i % 2 == 0 {
            out.push((
                false,
                model.clone(),
                events::label(&model, i, now, &mut rng).encode_to_vec(),
            ));
        }
    }
    out
}

/// Consumes `want` messages; `joined` is told once the group has assigned
/// partitions, so that a measurement can leave the join out.
async fn consume_count(
    kafka: &KafkaConfig,
    topics: &[&str],
    want: u64,
    joined: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<Duration> {
    let consumer: StreamConsumer = mlwatch_testkit::kafka::reader_config(kafka, "bench")
        .set("fetch.max.bytes", "52428800")
        // Fetched as the analyzer fetches.
        .set(FETCH_SETTINGS[0].0, FETCH_SETTINGS[0].1)
        .set(FETCH_SETTINGS[1].0, FETCH_SETTINGS[1].1)
        .create()?;
    consumer.subscribe(topics)?;
    let mut joined = joined;
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        let _ = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await;
    }
    if let Some(j) = joined.take() {
        let _ = j.send(());
    }
    let mut started: Option<Instant> = None;
    let mut got = 0u64;
    while got < want {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .context("consumer stalled for 60 s")??;
        drop(m);
        started.get_or_insert_with(Instant::now);
        got += 1;
    }
    Ok(started.map(|s| s.elapsed()).unwrap_or_default())
}

fn produce_all(kafka: &KafkaConfig, msgs: &[(bool, String, Vec<u8>)]) -> anyhow::Result<Duration> {
    let producer: ThreadedProducer<DefaultProducerContext> = {
        let mut cfg = kafka.client_config();
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000");
        cfg.create()?
    };
    let t = Instant::now();
    for (inference, key, payload) in msgs {
        let topic = if *inference {
            &kafka.topics.inference
        } else {
            &kafka.topics.labels
        };
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(t.elapsed())
}

async fn broker_ceiling(args: &Args, rows: &mut Vec<Row>) -> anyhow::Result<f64> {
    let msgs = encoded(args.events, true);
    let total = msgs.len() as u64;
    let avg = msgs.iter().map(|m| m.2.len()).sum::<usize>() / msgs.len().max(1);
    // Produce alone, then consume alone.
    let k = kafka(args, "ceiling");
    k.ensure_topics(&[&k.topics.inference, &k.topics.labels]).await?;
    let tp = tokio::task::block_in_place(|| produce_all(&k, &msgs))?;
    let tc = consume_count(&k, &[&k.topics.inference, &k.topics.labels], total, None).await?;
    // Both at once, as a pipeline does.
    let k2 = kafka(args, "ceiling2");
    k2.ensure_topics(&[&k2.topics.inference, &k2.topics.labels]).await?;
    let k2c = k2.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let consumer = tokio::spawn(async move {
        consume_count(&k2c, &[&k2c.topics.inference, &k2c.topics.labels], total, Some(tx)).await
    });
    rx.await.context("consumer never joined")?;
    let t = Instant::now();
    tokio::task::block_in_place(|| produce_all(&k2, &msgs))?;
    consumer.await??;
    let tpc = t.elapsed();
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    rows.push(Row {
        what: "broker: raw produce (idempotent, acks=all, lz4)",
        figure: format!("{:.0} msg/s ({total} msgs, {avg} B avg)", rate(tp)),
        target: "",
        met: None,
    });
    rows.push(Row {
        what: "broker: raw consume (consumer group)",
        figure: format!("{:.0} msg/s", rate(tc)),
        target: "",
        met: None,
    });
    rows.push(Row {
        what: "broker: produce+consume at once (the ceiling)",
        figure: format!("{:.0} msg/s", rate(tpc)),
        target: "",
        met: None,
    });
    Ok(rate(tpc))
}

fn metric_value(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn end_to_end(args: &Args, ceiling: Option<f64>, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let k = kafka(args, "e2e");
    let shutdown = mlwatch_common::shutdown::CancellationToken::new();
    let mut cc = mlwatch_collector::Config::for_test(&k);
    cc.ingest.max_in_flight_events = 200_000;
    let collector = mlwatch_collector::start(cc, shutdown.clone()).await?;
    // The join store and profiles in a temporary directory, out of the
    // working tree.
    let state_dir = tempfile::tempdir()?;
    let group = format!("bench-{}", mlwatch_testkit::run_suffix());
    let mut ac = mlwatch_analyzer::Config::for_test(&k, &group, state_dir.path());
    ac.accuracy.join.backend = JoinBackend::Memory;
    let analyzer = mlwatch_analyzer::start(ac, shutdown.clone()).await?;

    let names = events::Names::default();
    let mut rng = SmallRng::seed_from_u64(11);
    let now = mlwatch_common::now_ms();
    let batch = 1000u64;
    // Each request of 1,000 inferences is followed by the labels of half
    // of them (the broker ceiling carries the same mix).
    let batches: Vec<(IngestInferencesRequest, IngestLabelsRequest)> = (0..args.events / batch)
        .map(|b| {
            let seqs = b * batch..(b + 1) * batch;
            let model = |seq: u64| format!("model-{}", seq % 10);
            let inferences = seqs
                .clone()
                .map(|seq| events::inference(&names, &mut rng, &model(seq), seq, now, 20.0))
                .collect();
            let labels = seqs
                .filter(|seq| seq.is_multiple_of(2))
                .map(|seq| events::label(&model(seq), seq, now, &mut rng))
                .collect();
            (
                IngestInferencesRequest { events: inferences },
                IngestLabelsRequest { events: labels },
            )
        })
        .collect();
    let sent = batches.len() as u64 * batch;
    let sent_labels = batches.iter().map(|(_, l)| l.events.len() as u64).sum::<u64>();
    // Drift on: a reference profile per model.
    let api = format!("http://{}", analyzer.admin_addr);
    for m in 0..10 {
        events::upload_profile(&api, &format!("model-{m}")).await?;
    }
    let endpoint = format!("http://{}", collector.grpc_addr);
    let http = reqwest::Client::new();
    let metrics_url = format!("http://{}/metrics", analyzer.admin_addr);
    // Warm up: one event through, so the analyzer's group has formed
    // before the clock starts.
    let mut warm = CollectorClient::connect(endpoint.clone()).await?;
    let warm_event = events::inference(&names, &mut rng, "warm-up", u64::MAX, now, 1.0);
    warm.ingest_inferences(IngestInferencesRequest {
        events: vec![warm_event],
    })
    .await?;
    while metric_value(
        &http.get(&metrics_url).send().await?.text().await?,
        "mlwatch_analyzer_events_total",
        "inference",
    ) < 1.0
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The requests are encoded before the clock starts, as the ceiling's
    // raw producer gets its events (the model servers' encoding is theirs).
    let chunks: Vec<Vec<(bytes::Bytes, bytes::Bytes)>> = {
        let n = args.senders.max(1);
        let mut v: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        for (i, (inferences, labels)) in batches.into_iter().enumerate() {
            v[i % n].push((inferences.encode_to_vec().into(), labels.encode_to_vec().into()));
        }
        v
    };
    let mut clients = Vec::new();
    for _ in 0..chunks.len() {
        clients.push(EncodedClient::connect(&endpoint).await?);
    }
    let t = Instant::now();
    let mut senders = Vec::new();
    for (chunk, mut client) in chunks.into_iter().zip(clients) {
        senders.push(tokio::spawn(async move {
            for (inferences, labels) in chunk {
                for (path, body) in [(INFERENCES, inferences), (LABELS, labels)] {
                    loop {
                        match client.send(path, body.clone()).await {
                            Ok(_) => break,
                            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                                tokio::time::sleep(Duration::from_millis(20)).await
                            }
                            Err(s) => anyhow::bail!("ingest failed: {s}"),
                        }
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let ingest = t.elapsed();
    loop {
        let text = http.get(&metrics_url).send().await?.text().await?;
        if metric_value(&text, "mlwatch_analyzer_events_total", "inference") as u64 > sent
            && metric_value(&text, "mlwatch_analyzer_events_total", "label") as u64 >= sent_labels
        {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the analyzer did not catch up within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = t.elapsed();
    let rate = (sent + sent_labels) as f64 / total.as_secs_f64();
    rows.push(Row {
        what: "end to end: collector gRPC -> analyzer (lag 0)",
        figure: format!(
            "{rate:.0} msg/s ({sent} inferences + {sent_labels} labels, drift and accuracy on; \
             ingest acknowledged in {:.1} s, analyzed in {:.1} s)",
            ingest.as_secs_f64(),
            total.as_secs_f64()
        ),
        target: ">= 70 % of the ceiling",
        met: None,
    });
    if let Some(ceiling) = ceiling {
        let ratio = rate / ceiling;
        rows.push(Row {
            what: "end to end / broker ceiling",
            figure: format!("{:.0} %", ratio * 100.0),
            target: ">= 70 %",
            met: Some(ratio >= 0.7),
        });
    }
    shutdown.cancel();
    let _ = collector.task.await;
    let _ = analyzer.task.await;
    Ok(())
}

/// Runs the analyzer-alone measurement in a fresh process (its peak memory
/// is then its own) and reads its figures.
fn alone_probe(args: &Args, backend: &str) -> anyhow::Result<alone::Figures> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["--measure-alone", "--events", &args.events.to_string()])
        .args(["--join-backend", backend])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "analyzer-alone probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("analyzer-alone probe output")
}

/// The analyzer alone with the memory join backend (the one for high
/// rates), then with redb (the default, RAM bounded whatever the lag).
fn analyzer_alone(args: &Args, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    for (backend, what) in [
        (
            "memory",
            "analyzer alone: decode + latency + drift + accuracy join (memory backend), one core",
        ),
        (
            "redb",
            "analyzer alone: the same with the redb join backend (the default)",
        ),
    ] {
        let f = alone_probe(args, backend)?;
        let rate = f.events_per_cpu_sec;
        rows.push(Row {
            what,
            figure: format!(
                "{rate:.0} events/s per CPU-second ({} inferences + {} labels, {} joined, drift monitored: {}; \
                 decoding {:.0} % of the CPU; {:.0} events/s wall)",
                f.inferences,
                f.labels,
                f.joined,
                if f.drift_monitored { "yes" } else { "no" },
                100.0 * f.decode_cpu_secs / f.cpu_secs.max(1e-9),
                f.inferences as f64 / f.wall_secs.max(1e-9),
            ),
            target: ">= 500,000 events/s/core",
            met: Some(rate >= 500_000.0),
        });
        if backend == "memory" {
            rows.push(Row {
                what: "analyzer alone: peak memory",
                figure: format!(
                    "{:.0} MiB resident at peak ({:.0} MiB of it the encoded input held by the bench)",
                    f.peak_rss_mib, f.input_rss_mib
                ),
                target: "",
                met: None,
            });
        }
    }
    Ok(())
}

/// Runs the memory measurement in a fresh process (so that memory freed by
/// earlier measurements cannot hide growth) and reads its answer.
fn memory_per_version(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe).arg("--measure-memory").output()?;
    let per: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("memory probe output")?;
    rows.push(Row {
        what: "memory per tracked model version",
        figure: format!(
            "{:.1} KiB (latency windows; drift state for 25 features adds about 176 KiB per model version, docs/benchmarks-drift.md)",
            per / 1024.0
        ),
        target: "<= 1 MB with 25 features",
        met: Some(per <= 1_000_000.0),
    });
    Ok(())
}

/// The child side: bytes of resident memory per tracked model version.
fn measure_memory() -> f64 {
    use mlwatch_analyzer::partition::{Decoded, Partitions, Settings};
    use mlwatch_proto::view::InferenceRef;
    let names = events::Names::default();
    let mut rng = SmallRng::seed_from_u64(3);
    let before = rss_bytes();
    let mut config = mlwatch_analyzer::Config::default();
    config.accuracy.enabled = false;
    config.drift.enabled = false;
    let mut engine = Partitions::new(Settings::from_config(&config));
    for p in 0..6 {
        engine.own(p).expect("partition");
    }
    let now = mlwatch_common::now_ms();
    // 1,000 model versions, each with a minute of events spread over the
    // windows' slots so that every slot holds a sketch.
    let mut offset = 0i64;
    for v in 0..1000u64 {
        for i in 0..60 {
            let mut e = events::inference(
                &names,
                &mut rng,
                &format!("m{v}"),
                i,
                now - i as i64 * 1000,
                10.0 + i as f64,
            );
            e.model_version = format!("v{v}");
            let decoded = Decoded::Inference(Ok(InferenceRef::of(&e)));
            engine.apply([((v % 6) as i32, offset, &decoded)]);
            offset += 1;
        }
    }
    let per = (rss_bytes().saturating_sub(before)) as f64 / 1000.0;
    drop(engine);
    per
}

async fn detection(args: &Args, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    use detect::{DRIFT_WINDOW_SECS, Fault, Stack};
    let stack = Stack::start(kafka(args, "detect"), &mlwatch_testkit::run_suffix()).await?;
    let scenarios = [
        (
            Fault::Latency,
            "detection: latency regression -> Slack page",
            "every request at 450 ms",
            "<= 5 s",
            Duration::from_secs(5),
        ),
        (
            Fault::Drift,
            "detection: drift -> Slack page",
            "num_00 shifted by 1.15 sd from a window start; default 60 s drift window",
            "paged at the close of the window it began in (60 s + 2 s delivery)",
            Duration::from_secs(DRIFT_WINDOW_SECS + 2),
        ),
        (
            Fault::Accuracy,
            "detection: accuracy decay -> Slack page",
            "labels for half the events, 100 ms after them; accuracy 0.95 -> 0.70",
            "",
            Duration::from_secs(60),
        ),
    ];
    let mut result = Ok(());
    for (fault, what, how, target, limit) in scenarios {
        match detect::measure(&stack, fault, Duration::from_secs(150)).await {
            Ok(d) => rows.push(Row {
                what,
                figure: format!(
                    "{:.2} s at 1,000 events/s ({how}; paged by {})",
                    d.after.as_secs_f64(),
                    d.alert_type
                ),
                target,
                met: (!target.is_empty()).then_some(d.after <= limit),
            }),
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    stack.stop().await;
    result
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.measure_memory {
        println!("{}", measure_memory());
        return Ok(());
    }
    if args.measure_alone {
        let backend = serde_json::from_value(serde_json::Value::String(args.join_backend.clone()))
            .with_context(|| format!("join backend {:?}", args.join_backend))?;
        println!("{}", serde_json::to_string(&alone::measure(args.events, backend)?)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    println!(
        "mlwatch-bench: broker {}, {} events per run",
        args.bootstrap_servers, args.events
    );
    let ceiling = if args.runs(Part::Ceiling) {
        Some(broker_ceiling(&args, &mut rows).await.context("broker ceiling")?)
    } else {
        None
    };
    if args.runs(Part::E2e) {
        end_to_end(&args, ceiling, &mut rows).await.context("end to end")?;
    }
    if args.runs(Part::Alone) {
        analyzer_alone(&args, &mut rows).context("analyzer alone")?;
    }
    if args.runs(Part::Memory) {
        memory_per_version(&mut rows)?;
    }
    if args.runs(Part::Detection) {
        detection(&args, &mut rows).await.context("detection time")?;
    }
    let mut table = String::new();
    let _ = writeln!(table, "| measurement | figure | target | met |");
    let _ = writeln!(table, "|---|---|---|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "",
        };
        let _ = writeln!(table, "| {} | {} | {} | {} |", r.what, r.figure, r.target, met);
    }
    println!("\n{table}");
    let doc = format!(
        "# Benchmarks\n\nWritten by `mlwatch-bench` (`cargo run --release -p mlwatch-bench`); \
         the broker is the one in `KAFKA_BOOTSTRAP_SERVERS` (default: the local Tansu broker, in memory, \
         started by `scripts/broker.sh start`). Everything runs on one machine: the broker, the services \
         and the load share its cores.\n\n- machine: {}\n- date: run at epoch ms {}\n- events per run: {} \
         (standard shape: 20 numeric + 5 categorical features, labels for half)\n\n{table}\n\
         ## Method\n\n- **Broker ceiling**: a raw rdkafka producer with the collector's settings \
         (idempotent, acks=all, lz4, linger 5 ms) sends the pre-encoded events; a raw consumer group reads them \
         back; then both run at once on fresh topics (the ceiling a pipeline can reach).\n\
         - **End to end**: the collector and the analyzer run in this process (drift profiles uploaded \
         for the ten models, so drift and the accuracy join are on, with `[accuracy.join] backend = \"memory\"`); {senders} gRPC clients (`--senders`) send batches of \
         1,000 inferences, each followed by the labels of half of them, encoded before the clock starts (as the \
         ceiling's events are); the clock stops when the analyzer's \
         `mlwatch_analyzer_events_total` reaches the inferences and labels sent. The figure counts both, \
         like the ceiling.\n- **Analyzer alone**: a child process writes the standard events (and labels) \
         as JSON Lines, reads them back through the collector's validation and encodes them as the \
         collector publishes them (not timed); then, on one thread, in batches of 1,000 as the service \
         takes a poll, it runs the service's own apply path: protobuf decoding, the latency engine, the \
         drift monitors (a reference profile per model) and the accuracy join (labels 2,000 \
         events after their prediction; measured with each join backend, docs/decisions/0006), with a join checkpoint every 5 s of event time (events are 1 ms \
         apart). The rate is inference events per second of the thread's CPU time; the decoding share is \
         from a decode-only pass over the same messages. Peak memory is the child's high-water mark from \
         after loading the input.\n- **Memory per model version**: resident-set growth after tracking \
         1,000 model versions.\n- **Detection**: one stack (collector, analyzer with default settings, \
         alerter routing everything to a real HTTP receiver at once: group_wait 0), 1,000 events/s over \
         gRPC with labels for half of them 100 ms later; 15 s healthy, then the fault; the figure is from \
         the first bad event sent to the Slack page received. Latency: every request at 450 ms. Drift: \
         feature num_00 (uniform on [-3, 3]) moves by 2, starting right after a drift-window boundary. \
         Accuracy: labels agree with the prediction 70 % of the time instead of 95 %.\n\n\
         ## Reproduce\n\n```sh\nscripts/broker.sh start\ncargo run --release -p mlwatch-bench\n```\n\n\
         The collector's own ingest figures (gRPC batches as a ratio of a raw producer, HTTP \
         single-event p99 at a fixed rate) come from `mlwatch-collector-bench` in one run against the \
         same broker: `cargo build --release -p mlwatch-collector --bin mlwatch-collector-bench && \
         target/release/mlwatch-collector-bench`; figures and method in docs/benchmarks-collector.md \
         (latest: ratio 0.86, HTTP p99 7.7 ms at 500 events/s).\n",
        machine(),
        mlwatch_common::now_ms(),
        args.events,
        senders = args.senders,
    );
    std::fs::write(&args.out, doc).with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}
