//! The analyzer's state survives `kill -9` and moves with its partitions:
//! the real `mlwatch-analyzer` binary runs as a child process against the
//! real broker while a known stream flows; it is killed with SIGKILL
//! several times (and, in the second test, a second instance joins and the
//! first is killed). At the end the counts per model and window that the
//! surviving instance serves equal what was sent: nothing lost, nothing
//! counted twice. The kill -9 test runs with each backend of the label join
//! (`redb`, `memory`) and also checks that the join holds every prediction
//! exactly once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_proto::v1::{InferenceEvent, Prediction};
use prost::Message as _;
use rdkafka::producer::FutureRecord;
use tokio::process::{Child, Command};

const MODELS: usize = 6;
const EVENTS_PER_MODEL: u64 = 2000;
/// Event-time spacing of consecutive events: the whole stream spans 48 s of
/// event time, so every window (1 m, 5 m, 1 h) holds all of it.
const EVENT_SPACING_MS: i64 = 4;
const WINDOWS: [&str; 3] = ["1m", "5m", "1h"];

struct Setup {
    kafka: KafkaConfig,
    group: String,
    state_topic: String,
    dir: PathBuf,
    /// `[accuracy.join] backend`.
    backend: &'static str,
}

/// The state directory (join stores, configs, logs) goes when the test
/// passes and stays for reading when it fails.
impl Drop for Setup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Setup {
    fn new(name: &str, backend: &'static str) -> Self {
        let (kafka, suffix) = mlwatch_testkit::kafka_for_test(name);
        let dir = std::env::temp_dir().join(format!("mlwatch-analyzer-{suffix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            kafka,
            group: format!("analyzer-{suffix}"),
            state_topic: format!("mlwatch.analyzer.state.v1.{suffix}"),
            dir,
            backend,
        }
    }

    /// Starts the analyzer binary on a free admin port; returns the child
    /// and its admin address.
    fn spawn(&self, instance: &str) -> (Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config = format!(
            r#"{kafka}
[admin]
listen = "127.0.0.1:{port}"
[log]
filter = "info"
[analyzer]
group_id = "{group}"
state_topic = "{state}"
checkpoint_interval_secs = 1
idle_advance_after_secs = 0
[accuracy.join]
dir = "{join}"
backend = "{backend}"
"#,
            backend = self.backend,
            join = self.dir.join("join").display(),
            kafka = mlwatch_testkit::kafka_toml(&self.kafka),
            group = self.group,
            state = self.state_topic,
        );
        let path = self.dir.join(format!("{instance}.toml"));
        std::fs::write(&path, config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{instance}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mlwatch-analyzer"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn analyzer");
        (child, format!("127.0.0.1:{port}"))
    }
}

fn model(i: usize) -> String {
    format!("model-{i}")
}

/// Sends `EVENTS_PER_MODEL` events per model, round robin, `per_sec` per
/// second; `sent` counts acknowledged events.
fn start_stream(kafka: &KafkaConfig, per_sec: u64, sent: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let producer = kafka.producer().expect("producer");
    let topic = kafka.topics.inference.clone();
    tokio::spawn(async move {
        let base = 1_790_000_000_000i64;
        let total = EVENTS_PER_MODEL * MODELS as u64;
        // Ten events every 10 000 / per_sec ms, sent concurrently.
        let mut tick = tokio::time::interval(Duration::from_millis(10_000 / per_sec));
        let mut n = 0;
        while n < total {
            tick.tick().await;
            let batch: Vec<u64> = (n..(n + 10).min(total)).collect();
            n += batch.len() as u64;
            let sends = batch.into_iter().map(|n| {
                let producer = producer.clone();
                let topic = topic.clone();
                let sent = sent.clone();
                async move {
                    let m = model(n as usize % MODELS);
                    let event = InferenceEvent {
                        event_id: format!("e{n}"),
                        model: m.clone(),
                        model_version: "v1".into(),
                        timestamp_ms: base + n as i64 * EVENT_SPACING_MS,
                        latency_ms: 5.0 + (n % 97) as f64,
                        status: if n % 50 == 0 { 2 } else { 1 },
                        // Joinable (status ok): the label join keeps it pending.
                        prediction: Some(Prediction {
                            score: Some(0.5),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let payload = event.encode_to_vec();
                    loop {
                        let record = FutureRecord::to(&topic).key(&m).payload(&payload);
                        match producer.send(record, Duration::from_secs(10)).await {
                            Ok(_) => break,
                            Err((e, _)) => {
                                eprintln!("produce failed, retrying: {e}");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            });
            futures::future::join_all(sends).await;
        }
    })
}

/// Events per model served by the instances at `addrs` (`None` while an
/// instance does not answer).
async fn counts(client: &reqwest::Client, addrs: &[String]) -> Option<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for addr in addrs {
        let v: serde_json::Value = client
            .get(format!("http://{addr}/v1/models"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        for s in v["models"].as_array()? {
            *out.entry(s["model"].as_str()?.to_string()).or_default() += s["events"].as_u64()?;
        }
    }
    Some(out)
}

async fn total(client: &reqwest::Client, addrs: &[String]) -> u64 {
    counts(client, addrs).await.map(|c| c.values().sum()).unwrap_or(0)
}

/// Waits until the instances together have applied more than `above`
/// events; returns the new total.
async fn wait_progress(client: &reqwest::Client, addrs: &[String], above: u64, secs: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let t = total(client, addrs).await;
        if t > above {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress beyond {above} events within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every model has exactly `EVENTS_PER_MODEL` events, then
/// checks every window's count, error count and lateness, and that the
/// counts stay put (no late double counting).
async fn assert_final_counts(client: &reqwest::Client, addrs: &[String]) {
    let want: BTreeMap<String, u64> = (0..MODELS).map(|i| (model(i), EVENTS_PER_MODEL)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = counts(client, addrs).await;
        if last.as_ref() == Some(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(last.as_ref(), Some(&want), "events per model");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        counts(client, addrs).await.as_ref(),
        Some(&want),
        "counts moved after settling"
    );
    for i in 0..MODELS {
        let m = model(i);
        // Errors: event n is an error when n % 50 == 0; model i gets n ≡ i (mod 6).
        let errors = (0..EVENTS_PER_MODEL * MODELS as u64)
            .filter(|n| *n as usize % MODELS == i && n % 50 == 0)
            .count() as f64;
        for w in WINDOWS {
            let mut found = false;
            for addr in addrs {
                let r = client
                    .get(format!("http://{addr}/v1/models/{m}/latency?window={w}"))
                    .send()
                    .await
                    .expect("latency request");
                if r.status() == 404 {
                    continue;
                }
                let v: serde_json::Value = r.json().await.expect("json");
                let s = &v["versions"][0];
                assert_eq!(s["count"], EVENTS_PER_MODEL, "{m} {w}: {v}");
                assert_eq!(s["late_events"], 0, "{m} {w}: {v}");
                let error_rate = s["error_rate"].as_f64().unwrap();
                assert!(
                    (error_rate - errors / EVENTS_PER_MODEL as f64).abs() < 1e-12,
                    "{m} {w}: {v}"
                );
                assert!(!found, "{m} served by two instances");
                found = true;
            }
            assert!(found, "{m} {w} served by no instance");
        }
    }
}

/// Waits until the join of the instance at `addr` holds every prediction of
/// an ok event exactly once (no labels are sent: all stay pending), and
/// checks no prediction was counted as a duplicate.
async fn assert_join_exact(client: &reqwest::Client, addr: &str) {
    let want = (0..EVENTS_PER_MODEL * MODELS as u64).filter(|n| n % 50 != 0).count() as f64;
    let metric = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let pending = r#"mlwatch_analyzer_label_join_pending{state="predictions"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while tokio::time::Instant::now() < deadline {
        text = match client.get(format!("http://{addr}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if metric(&text, pending) == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(metric(&text, pending), Some(want), "pending predictions in\n{text}");
    let duplicates = r#"mlwatch_analyzer_label_join_total{outcome="duplicate_prediction"}"#;
    assert_eq!(metric(&text, duplicates).unwrap_or(0.0), 0.0, "{text}");
}

fn kill9(child: &mut Child) {
    child.start_kill().expect("SIGKILL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_repeatedly_loses_and_duplicates_nothing() {
    kill_dash_nine_with("kill9", "redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_with_the_memory_join_backend() {
    kill_dash_nine_with("kill9mem", "memory").await;
}

async fn kill_dash_nine_with(name: &str, backend: &'static str) {
    let setup = Setup::new(name, backend);
    setup
        .kafka
        .ensure_topics(&[&setup.kafka.topics.inference])
        .await
        .expect("topics");
    let client = reqwest::Client::new();
    let sent = Arc::new(AtomicU64::new(0));
    let stream = start_stream(&setup.kafka, 120, sent.clone());
    let mut seen = 0;
    let mut killed_mid_stream = 0;
    for round in 0..4 {
        let (mut child, addr) = setup.spawn(&format!("a{round}"));
        seen = wait_progress(&client, std::slice::from_ref(&addr), seen, 90).await;
        // Kill at different points relative to the 1 s checkpoints.
        tokio::time::sleep(Duration::from_millis(700 + 450 * round)).await;
        kill9(&mut child);
        child.wait().await.expect("reaped");
        if sent.load(Ordering::SeqCst) < EVENTS_PER_MODEL * MODELS as u64 {
            killed_mid_stream += 1;
        }
        eprintln!(
            "round {round}: killed after it served {seen} events; {} sent",
            sent.load(Ordering::SeqCst)
        );
        // A restarted instance restores at least what was checkpointed.
        seen = seen.saturating_sub(2000);
    }
    assert!(
        killed_mid_stream >= 2,
        "only {killed_mid_stream} kills while the stream flowed"
    );
    let (mut child, addr) = setup.spawn("final");
    stream.await.expect("stream");
    assert_eq!(sent.load(Ordering::SeqCst), EVENTS_PER_MODEL * MODELS as u64);
    assert_final_counts(&client, std::slice::from_ref(&addr)).await;
    assert_join_exact(&client, &addr).await;
    kill9(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_rebalance_and_a_killed_one_is_taken_over() {
    let setup = Setup::new("rebalance", "redb");
    setup
        .kafka
        .ensure_topics(&[&setup.kafka.topics.inference])
        .await
        .expect("topics");
    let client = reqwest::Client::new();
    let sent = Arc::new(AtomicU64::new(0));
    let stream = start_stream(&setup.kafka, 300, sent.clone());
    let (mut a, addr_a) = setup.spawn("a");
    let seen = wait_progress(&client, std::slice::from_ref(&addr_a), 0, 90).await;
    // B joins: the group rebalances, A checkpoints what it gives up and B
    // restores it.
    let (mut b, addr_b) = setup.spawn("b");
    let both = [addr_a.clone(), addr_b.clone()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let on_b = counts(&client, std::slice::from_ref(&addr_b)).await.unwrap_or_default();
        if !on_b.is_empty() && total(&client, &both).await > seen {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "B never got a partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_a = counts(&client, std::slice::from_ref(&addr_a)).await.unwrap_or_default();
    let on_b = counts(&client, std::slice::from_ref(&addr_b)).await.unwrap_or_default();
    eprintln!("split: A has {:?}, B has {:?}", on_a.keys(), on_b.keys());
    assert!(
        on_a.keys().all(|m| !on_b.contains_key(m)),
        "a model on two instances: {on_a:?} {on_b:?}"
    );
    // A dies mid-stream; B takes its partitions over with their state.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kill9(&mut a);
    a.wait().await.expect("reaped");
    stream.await.expect("stream");
    assert_final_counts(&client, std::slice::from_ref(&addr_b)).await;
    kill9(&mut b);
}
