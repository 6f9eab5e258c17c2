//! The analyzer's own consume loop: partition ownership, checkpoints and
//! alert publication (the I/O around [`Partitions`]).
//!
//! Ordering that makes `kill -9` and rebalances exact:
//! 1. On assignment, a partition's newest checkpoint is loaded before any of
//!    its messages is applied; messages below the checkpoint's next offset
//!    are skipped as already counted (the committed offset may lag it).
//! 2. Messages are handled a poll at a time (everything the client has
//!    fetched, up to `MAX_BATCH`): applied under one lock, with one
//!    join-store transaction per partition; the alerts they caused are
//!    published and acknowledged, and a poison message is dead-lettered
//!    (messages after it wait until it is), before the next poll.
//! 3. Every `checkpoint_interval_secs`, on revoke (inside the rebalance
//!    callback, synchronously) and at shutdown, the state of each owned
//!    partition is written to the state topic; only after the broker
//!    acknowledged it is the consumer offset committed, to the same offset.
//!    A partition whose alerts are not yet acknowledged is not checkpointed.
//!
//! After a crash the next owner restores the last checkpoint and replays
//! from its offset: each event is applied exactly once to the state, and
//! the replayed evaluations publish alerts with the same ids as before.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use mlwatch_common::admin::Readiness;
use mlwatch_common::kafka::ResilientProducer;
use mlwatch_common::kafka::{DeadLetter, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::AlertStatus;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::checkpoint::{self, Checkpoint, CheckpointStore};
use crate::metrics::Metrics;
use crate::partition::{Decoded, Partitions, Position};
use crate::watchdog::{Verdict, Watchdog};
use mlwatch_analyzer_core::wire;
use mlwatch_proto::view::{self, InferenceRef, LabelRef};

pub type Shared = Arc<Mutex<Partitions>>;

/// Decodes messages with lists reused from earlier batches (one per
/// consume loop): inference events are [`wire::Decoder`] views, whose
/// lists come back with [`Decoding::recycle`].
#[derive(Debug, Default)]
pub struct Decoding {
    decoder: wire::Decoder,
}

impl Decoding {
    /// Decodes a message of the labels topic (`is_label`) or the inference
    /// topic.
    pub fn decode<'m>(&mut self, is_label: bool, payload: Option<&'m [u8]>) -> Decoded<'m> {
        if is_label {
            return Decoded::Label(decode_label(payload));
        }
        Decoded::Inference(decode_with(&mut self.decoder, payload))
    }

    /// Takes back the lists of handled messages, for the next batch.
    pub fn recycle<'m>(&mut self, decoded: impl IntoIterator<Item = Decoded<'m>>) {
        for d in decoded {
            if let Decoded::Inference(Ok(view)) = d {
                self.decoder.recycle(view);
            }
        }
    }
}

pub fn shared(partitions: Partitions) -> Shared {
    Arc::new(Mutex::new(partitions))
}

/// An encoded checkpoint and the positions it reflects.
struct Snapshot {
    bytes: Vec<u8>,
    next_offset: i64,
    label_next_offset: i64,
    journal_seq: Option<u64>,
}

pub fn lock(core: &Shared) -> MutexGuard<'_, Partitions> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the loop and the rebalance callback share.
pub struct Owner {
    pub core: Shared,
    pub store: Arc<CheckpointStore>,
    pub group: String,
    pub topic: String,
    /// The labels topic, consumed in the same group; its partition p is
    /// part of source partition p's state.
    pub labels_topic: String,
    pub metrics: Metrics,
    /// Partitions assigned by the last rebalance, to be loaded by the loop.
    assigned: Mutex<Vec<i32>>,
    /// The current assignment: messages of other partitions (prefetched
    /// before a revoke) are never applied.
    assignment: Mutex<BTreeSet<i32>>,
}

impl Owner {
    pub fn new(
        core: Shared,
        store: Arc<CheckpointStore>,
        group: String,
        topic: String,
        labels_topic: String,
        metrics: Metrics,
    ) -> Self {
        Self {
            core,
            store,
            group,
            topic,
            labels_topic,
            metrics,
            assigned: Mutex::new(Vec::new()),
            assignment: Mutex::new(BTreeSet::new()),
        }
    }

    /// The encoded checkpoint of `partition` and its next offset, unless
    /// it has alerts not yet acknowledged or nothing to save.
    fn snapshot(&self, partition: i32) -> Option<Snapshot> {
        let mut core = lock(&self.core);
        let (state, accuracy, drift) = core.checkpoint(partition)?;
        let journal_seq = accuracy.as_ref().map(|a| a.tracker.journal_seq);
        let checkpoint = Checkpoint {
            format: checkpoint::FORMAT_VERSION,
            group: self.group.clone(),
            topic: self.topic.clone(),
            partition,
            written_at_ms: mlwatch_common::now_ms(),
            state,
            accuracy,
            drift,
        };
        drop(core);
        match CheckpointStore::encode(&checkpoint) {
            Ok(bytes) => Some(Snapshot {
                bytes,
                next_offset: checkpoint.state.next_offset,
                label_next_offset: checkpoint.state.label_next_offset,
                journal_seq,
            }),
            Err(error) => {
                tracing::error!(%error, partition, "cannot encode checkpoint");
                None
            }
        }
    }

    fn key(&self, partition: i32) -> String {
        checkpoint::key(&self.group, &self.topic, partition)
    }

    /// Adds the positions a checkpoint reflects (both topics) to `tpl`.
    fn add_offsets(&self, tpl: &mut TopicPartitionList, partition: i32, snap: &Snapshot) -> KafkaResult<()> {
        if snap.next_offset > 0 {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(snap.next_offset))?;
        }
        if snap.label_next_offset > 0 {
            tpl.add_partition_offset(&self.labels_topic, partition, Offset::Offset(snap.label_next_offset))?;
        }
        Ok(())
    }

    /// After partition `p`'s checkpoint was acknowledged.
    fn checkpointed(&self, partition: i32, snap: &Snapshot) {
        if let Some(seq) = snap.journal_seq {
            lock(&self.core).checkpointed(partition, seq);
        }
    }

    fn is_assigned(&self, partition: i32) -> bool {
        self.assignment
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&partition)
    }

    /// Checkpoints then forgets revoked partitions (rebalance callback).
    fn revoke_blocking<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        {
            let mut assignment = self.assignment.lock().unwrap_or_else(|p| p.into_inner());
            for p in partitions {
                assignment.remove(p);
            }
        }
        for &p in partitions {
            if let Some(snap) = self.snapshot(p) {
                match self.store.save_blocking(&self.key(p), p, &snap.bytes) {
                    Ok(()) => {
                        self.metrics.checkpoints.with_label_values(&["ok"]).inc();
                        self.checkpointed(p, &snap);
                        let mut tpl = TopicPartitionList::new();
                        if let Err(error) = self
                            .add_offsets(&mut tpl, p, &snap)
                            .and_then(|()| consumer.commit(&tpl, CommitMode::Sync))
                        {
                            tracing::warn!(%error, partition = p, "commit on revoke failed");
                        }
                    }
                    Err(error) => {
                        self.metrics.checkpoints.with_label_values(&["failed"]).inc();
                        tracing::warn!(%error, partition = p, "checkpoint on revoke failed; the next owner replays");
                    }
                }
            }
            lock(&self.core).remove(p);
        }
        tracing::info!(?partitions, "partitions revoked");
    }
}

/// Consumer context: checkpoints revoked partitions synchronously and hands
/// assigned ones to the loop.
pub struct Context(pub Arc<Owner>);

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = partitions_of(tpl, &self.0.topic);
            self.0.revoke_blocking(consumer, &ps);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let ps = partitions_of(tpl, &self.0.topic);
                tracing::info!(partitions = ?ps, "partitions assigned");
                self.0
                    .assignment
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(ps.iter().copied());
                self.0.assigned.lock().unwrap_or_else(|p| p.into_inner()).extend(ps);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

/// How the analyzer's consumer fetches (also the broker ceiling's consumer
/// in the bench, so that both are measured alike):
/// - `fetch.wait.max.ms`: a fetch that finds nothing new waits at most this
///   long for more; a broker that does not answer a waiting fetch as soon
///   as data arrives (the local one) would otherwise hold a caught-up
///   analyzer for the default 500 ms.
/// - `fetch.queue.backoff.ms`: when the prefetch queue is over its
///   threshold the client postpones the next fetch by this much (default
///   1 s); with a backlog the analyzer drains the queue well within that
///   and would then sit idle for the rest of the second.
pub const FETCH_SETTINGS: [(&str, &str); 2] = [("fetch.wait.max.ms", "50"), ("fetch.queue.backoff.ms", "20")];

/// An analyzer consumer: at-least-once settings, no auto-commit (offsets
/// are committed only with checkpoints).
pub fn consumer(kafka: &KafkaConfig, group: &str, owner: Arc<Owner>) -> KafkaResult<StreamConsumer<Context>> {
    let mut cfg = kafka.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.partition.eof", "false")
        // Partition p of the inference and labels topics must go to the
        // same instance (one state covers both): range assignment does that
        // for topics with equal partition counts.
        .set("partition.assignment.strategy", "range");
    for (k, v) in FETCH_SETTINGS {
        cfg.set(k, v);
    }
    for (k, v) in &kafka.client {
        cfg.set(k, v);
    }
    cfg.create_with_context(Context(owner))
}

/// Loop settings.
pub struct LoopConfig {
    pub eval_interval: Duration,
    pub checkpoint_interval: Duration,
    /// After this long without a message, a partition's clock follows wall
    /// time (`None`: never).
    pub idle_after: Option<Duration>,
    pub alerts_topic: String,
    pub produce_timeout: Duration,
    /// A partition with messages waiting and no progress for this long is
    /// stalled (`None`: not watched).
    pub stall_after: Option<Duration>,
    /// Where a stall shows (`/readyz`).
    pub ready: Readiness,
    pub watch: WatchMetrics,
    /// A group-less client that asks the broker for each partition's end.
    pub watermarks: Arc<BaseConsumer>,
}

/// A partition being looked at.
struct Elem<'a> {
    topic: &'a str,
    partition: i32,
}

/// Progress per assigned partition, exported.
#[derive(Clone)]
pub struct WatchMetrics {
    lag: IntGaugeVec,
    quiet: GaugeVec,
    stalls: IntCounterVec,
}

impl WatchMetrics {
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let lag = IntGaugeVec::new(
            Opts::new(
                "mlwatch_analyzer_partition_lag",
                "Messages between the consumer's position and the end of the partition",
            ),
            &["topic", "partition"],
        )?;
        let quiet = GaugeVec::new(
            Opts::new(
                "mlwatch_analyzer_partition_quiet_seconds",
                "Seconds since the consumer's position in the partition last moved (0 while caught up)",
            ),
            &["topic", "partition"],
        )?;
        let stalls = IntCounterVec::new(
            Opts::new(
                "mlwatch_analyzer_partition_stalls_total",
                "Times a partition with messages waiting made no progress for stall_after_secs (each re-seeked)",
            ),
            &["topic"],
        )?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(quiet.clone()))?;
        registry.register(Box::new(stalls.clone()))?;
        Ok(Self { lag, quiet, stalls })
    }
}

/// Most messages handled as one batch (one lock of the shared state, one
/// join-store transaction per partition).
const MAX_BATCH: usize = 1000;

/// The consume loop; returns at shutdown after a final checkpoint.
pub struct Loop {
    pub owner: Arc<Owner>,
    pub consumer: StreamConsumer<Context>,
    /// Alerts go out on it; replaced after an unrecoverable error.
    pub producer: Arc<ResilientProducer>,
    pub dead_letter: DeadLetter,
    pub config: LoopConfig,
    /// `(next offset, next label offset, clock)` of each partition's last
    /// checkpoint.
    saved: HashMap<i32, Position>,
    last_message: HashMap<i32, Instant>,
    decoding: Decoding,
    watchdog: Watchdog,
}

impl Loop {
    pub fn new(
        owner: Arc<Owner>,
        consumer: StreamConsumer<Context>,
        producer: Arc<ResilientProducer>,
        dead_letter: DeadLetter,
        config: LoopConfig,
    ) -> Self {
        Self {
            owner,
            consumer,
            producer,
            dead_letter,
            config,
            saved: HashMap::new(),
            last_message: HashMap::new(),
            decoding: Decoding::default(),
            watchdog: Watchdog::default(),
        }
    }

    /// Looks at every assigned partition's progress; re-seeks a stalled
    /// one and says so in `/readyz` until it moves again.
    async fn watch(&mut self) {
        let Some(stall_after) = self.config.stall_after else {
            return;
        };
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let positions: Vec<(String, i32, i64)> = positions
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
                _ => None,
            })
            .collect();
        // The ends of the partitions, asked off the async threads.
        let client = self.config.watermarks.clone();
        let wanted: Vec<(String, i32)> = positions.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let Ok(highs) = tokio::task::spawn_blocking(move || {
            wanted
                .iter()
                .map(|(t, p)| {
                    client
                        .fetch_watermarks(t, *p, Duration::from_secs(2))
                        .ok()
                        .map(|(_, h)| h)
                })
                .collect::<Vec<_>>()
        })
        .await
        else {
            return;
        };
        let now = Instant::now();
        let inference: &'static str = "inference";
        let labels: &'static str = "labels";
        let mut assigned = Vec::new();
        for ((topic, partition, position), high) in positions.into_iter().zip(highs) {
            let Some(high) = high else {
                continue;
            };
            let e = Elem {
                topic: &topic,
                partition,
            };
            let kind = if e.topic == self.owner.labels_topic {
                labels
            } else {
                inference
            };
            let key = (kind, e.partition);
            assigned.push(key);
            let look = self.watchdog.look(key, position, high, now, stall_after);
            let p = e.partition.to_string();
            self.config.watch.lag.with_label_values(&[kind, &p]).set(look.lag);
            self.config
                .watch
                .quiet
                .with_label_values(&[kind, &p])
                .set(look.quiet.as_secs_f64());
            match look.verdict {
                Verdict::Stalled => {
                    self.config.watch.stalls.with_label_values(&[kind]).inc();
                    tracing::warn!(
                        topic = e.topic,
                        partition = e.partition,
                        position,
                        lag = look.lag,
                        quiet_secs = look.quiet.as_secs(),
                        "no progress on a partition with messages waiting; re-seeking it"
                    );
                    if let Err(error) =
                        self.consumer
                            .seek(e.topic, e.partition, Offset::Offset(position), Duration::from_secs(1))
                    {
                        tracing::warn!(%error, partition = e.partition, "re-seek failed");
                    }
                }
                Verdict::Recovered => {
                    tracing::info!(topic = e.topic, partition = e.partition, "partition moving again")
                }
                Verdict::Fine | Verdict::StillStalled => {}
            }
        }
        self.watchdog.retain(|k| assigned.contains(k));
        let stalled = self.watchdog.stalled();
        self.config.ready.set_reason((!stalled.is_empty()).then(|| {
            let list: Vec<String> = stalled.iter().map(|(t, p)| format!("{t}/{p}")).collect();
            format!("no progress on partitions {} with messages waiting", list.join(", "))
        }));
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut eval = tokio::time::interval(self.config.eval_interval);
        eval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpoint = tokio::time::interval(self.config.checkpoint_interval);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = tokio::time::interval(Duration::from_secs(5));
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        // Everything the client has already fetched, up to
                        // a bound: one batch, one lock, one transaction.
                        let mut batch = vec![m.detach()];
                        while batch.len() < MAX_BATCH {
                            match self.consumer.recv().now_or_never() {
                                Some(Ok(m)) => batch.push(m.detach()),
                                Some(Err(error)) => {
                                    tracing::warn!(%error, "kafka receive error");
                                    break;
                                }
                                None => break,
                            }
                        }
                        self.load_assigned(&shutdown).await;
                        self.handle_batch(batch, &shutdown).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "kafka receive error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                _ = eval.tick() => {
                    self.load_assigned(&shutdown).await;
                    let elapsed = last_tick.elapsed();
                    last_tick = Instant::now();
                    self.advance_idle(elapsed);
                    self.publish(&shutdown).await;
                    self.owner.metrics.export(&lock(&self.owner.core));
                }
                _ = checkpoint.tick() => self.checkpoint_all(false).await,
                _ = watch.tick() => self.watch().await,
            }
        }
        self.publish(&shutdown).await;
        self.checkpoint_all(true).await;
        let mut core = lock(&self.owner.core);
        let owned: Vec<i32> = core.iter().map(|(p, _)| p).collect();
        for p in owned {
            core.remove(p);
        }
    }

    /// Loads the checkpoints of newly assigned partitions, retrying until
    /// it succeeds or shutdown: no message of a partition is applied before
    /// its state is restored.
    async fn load_assigned(&mut self, shutdown: &CancellationToken) {
        let pending: Vec<i32> = std::mem::take(&mut *self.owner.assigned.lock().unwrap_or_else(|p| p.into_inner()));
        self.load(pending, shutdown).await;
    }

    async fn load(&mut self, partitions: Vec<i32>, shutdown: &CancellationToken) {
        let missing: Vec<(i32, String)> = {
            let core = lock(&self.owner.core);
            partitions
                .into_iter()
                .filter(|p| !core.owns(*p) && self.owner.is_assigned(*p))
                .map(|p| (p, self.owner.key(p)))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            let store = self.owner.store.clone();
            let wanted = missing.clone();
            let result = tokio::task::spawn_blocking(move || store.load_blocking(&wanted)).await;
            match result {
                Ok(Ok(mut found)) => {
                    let mut core = lock(&self.owner.core);
                    let mut failed = None;
                    for (p, _) in &missing {
                        let c = found.remove(p);
                        let events = c.as_ref().map_or(0, |c| c.state.events);
                        let next_offset = c.as_ref().map_or(0, |c| c.state.next_offset);
                        let (state, accuracy, drift) = c.map(|c| (c.state, c.accuracy, c.drift)).unwrap_or_default();
                        if let Err(error) = core.restore(*p, state, accuracy, drift) {
                            failed = Some(error);
                            break;
                        }
                        tracing::info!(partition = p, next_offset, events, "partition state restored");
                        if let Some((_, part)) = core.iter().find(|(q, _)| q == p) {
                            self.saved.insert(*p, part.position());
                        }
                        self.last_message.insert(*p, Instant::now());
                    }
                    match failed {
                        None => return,
                        Some(error) => tracing::warn!(%error, "cannot open the join store, retrying"),
                    }
                }
                Ok(Err(error)) => tracing::warn!(%error, "cannot load checkpoints, retrying"),
                Err(error) => tracing::warn!(%error, "checkpoint loader failed, retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Handles one poll's worth of messages: decoded outside the lock, then
    /// applied in runs (one lock and one join-store transaction per
    /// partition each), a run ending before each poison message, which goes
    /// to the dead-letter topic before anything after it is applied. The
    /// alerts a run caused are published and acknowledged before the next
    /// run, and nothing is checkpointed while a batch is in hand, so the
    /// positions a checkpoint records are always of fully handled messages.
    async fn handle_batch(&mut self, batch: Vec<OwnedMessage>, shutdown: &CancellationToken) {
        let mut batch: Vec<OwnedMessage> = batch
            .into_iter()
            .filter(|m| {
                let assigned = self.owner.is_assigned(m.partition());
                if !assigned {
                    tracing::debug!(
                        partition = m.partition(),
                        offset = m.offset(),
                        "message of a partition no longer assigned, skipped"
                    );
                }
                assigned
            })
            .collect();
        let unowned: BTreeSet<i32> = {
            let core = lock(&self.owner.core);
            batch.iter().map(|m| m.partition()).filter(|p| !core.owns(*p)).collect()
        };
        if !unowned.is_empty() {
            self.load(unowned.into_iter().collect(), shutdown).await;
            let core = lock(&self.owner.core);
            batch.retain(|m| core.owns(m.partition())); // else shutting down
        }
        let now = Instant::now();
        for m in &batch {
            self.last_message.insert(m.partition(), now);
        }
        let decoded: Vec<Decoded<'_>> = batch
            .iter()
            .map(|m| self.decoding.decode(m.topic() == self.owner.labels_topic, m.payload()))
            .collect();
        self.handle_decoded(&batch, &decoded, shutdown).await;
        self.decoding.recycle(decoded);
    }

    async fn handle_decoded(&mut self, batch: &[OwnedMessage], decoded: &[Decoded<'_>], shutdown: &CancellationToken) {
        let mut start = 0;
        while start < batch.len() {
            let Some(poison) = self.apply_run(&batch[start..], &decoded[start..], shutdown).await else {
                return; // shutting down
            };
            self.publish(shutdown).await;
            match poison {
                Some((i, reason)) => {
                    self.dead_letter(&batch[start + i], reason, shutdown).await;
                    start += i + 1;
                }
                None => return,
            }
        }
    }

    /// Applies `batch` up to its first poison message, retrying while the
    /// join store fails. `Some(Some((index, reason)))` names the poison
    /// message that ended the run; `None` means shutdown came first.
    async fn apply_run<'d>(
        &self,
        batch: &[OwnedMessage],
        decoded: &'d [Decoded<'_>],
        shutdown: &CancellationToken,
    ) -> Option<Option<(usize, &'d str)>> {
        let mut backoff = Duration::from_millis(100);
        let metrics = &self.owner.metrics;
        loop {
            let applied =
                lock(&self.owner.core).apply(batch.iter().zip(decoded).map(|(m, d)| (m.partition(), m.offset(), d)));
            metrics
                .events
                .with_label_values(&["inference"])
                .inc_by(applied.inferences);
            metrics.events.with_label_values(&["label"]).inc_by(applied.labels);
            metrics.duplicates.inc_by(applied.duplicates);
            match applied.error {
                None => return Some(applied.poison),
                Some(error) => {
                    tracing::warn!(%error, "cannot apply messages to the join store, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Sends a poison message to the dead-letter topic (retrying until
    /// acknowledged), then marks it handled.
    async fn dead_letter(&mut self, m: &OwnedMessage, reason: &str, shutdown: &CancellationToken) {
        let p = m.partition();
        self.owner.metrics.poison.inc();
        tracing::warn!(partition = p, offset = m.offset(), %reason, "moving poison message to the dead-letter topic");
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.dead_letter.send_message(m, reason).await {
                Ok(()) => break,
                Err(error) => tracing::warn!(%error, "dead-letter produce failed, retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        lock(&self.owner.core).mark_applied(p, m.topic() == self.owner.labels_topic, m.offset());
    }

    /// Moves the clocks of partitions without messages for `idle_after`.
    fn advance_idle(&mut self, elapsed: Duration) {
        let Some(idle_after) = self.config.idle_after else {
            return;
        };
        let mut core = lock(&self.owner.core);
        let idle: Vec<i32> = core
            .iter()
            .map(|(p, _)| p)
            .filter(|p| self.last_message.get(p).is_some_and(|t| t.elapsed() >= idle_after))
            .collect();
        core.advance_idle(&idle, elapsed.as_millis() as i64);
    }

    /// Publishes the outbox in order, retrying until acknowledged or
    /// shutdown.
    async fn publish(&mut self, shutdown: &CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let next = lock(&self.owner.core).outbox().first().cloned();
            let Some((_, alert)) = next else { return };
            let payload = alert.encode_to_vec();
            let record = FutureRecord::to(&self.config.alerts_topic)
                .key(&alert.fingerprint)
                .payload(&payload);
            match self.producer.send(record, self.config.produce_timeout).await {
                Ok(_) => {
                    let status = AlertStatus::try_from(alert.status)
                        .map(|s| s.name())
                        .unwrap_or("unknown");
                    tracing::info!(
                        alert_type = %alert.r#type,
                        status,
                        fingerprint = %alert.fingerprint,
                        id = %alert.id,
                        value = alert.value,
                        "alert published"
                    );
                    self.owner
                        .metrics
                        .alerts
                        .with_label_values(&[&alert.r#type, status])
                        .inc();
                    lock(&self.owner.core).published(&alert.id);
                    backoff = Duration::from_millis(100);
                }
                Err(error) => {
                    tracing::warn!(%error, "alert publish failed, will retry");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Checkpoints every owned partition that changed since its last
    /// checkpoint (all of them when `all`), then commits their offsets.
    async fn checkpoint_all(&mut self, all: bool) {
        let owned: Vec<(i32, Position)> = lock(&self.owner.core).iter().map(|(p, s)| (p, s.position())).collect();
        let mut commit = TopicPartitionList::new();
        for (p, position) in owned {
            if !all && self.saved.get(&p) == Some(&position) {
                continue;
            }
            let Some(snap) = self.owner.snapshot(p) else {
                continue;
            };
            match self.owner.store.save(&self.owner.key(p), p, &snap.bytes).await {
                Ok(()) => {
                    self.owner.metrics.checkpoints.with_label_values(&["ok"]).inc();
                    self.owner.checkpointed(p, &snap);
                    self.saved.insert(p, position);
                    if let Err(error) = self.owner.add_offsets(&mut commit, p, &snap) {
                        tracing::warn!(%error, "cannot list offset to commit");
                    }
                }
                Err(error) => {
                    self.owner.metrics.checkpoints.with_label_values(&["failed"]).inc();
                    tracing::warn!(%error, partition = p, "checkpoint failed, will retry");
                }
            }
        }
        if commit.count() > 0
            && let Err(error) = self.consumer.commit(&commit, CommitMode::Sync)
        {
            tracing::warn!(%error, "offset commit failed; the checkpoint is ahead, duplicates will be skipped");
        }
    }
}

/// Decodes a label event; the reason when it is poison.
pub fn decode_label(payload: Option<&[u8]>) -> Result<LabelRef<'_>, String> {
    let payload = payload.ok_or("empty payload")?;
    let event = view::label(payload).map_err(undecodable)?;
    if event.model.is_empty() {
        return Err("label event without a model".into());
    }
    if event.event_id.is_empty() {
        return Err(format!("label event of model {:?} without an event_id", event.model));
    }
    Ok(event)
}

/// Reads an inference message; the reason when it is poison.
pub fn decode_with<'m>(decoder: &mut wire::Decoder, payload: Option<&'m [u8]>) -> Result<InferenceRef<'m>, String> {
    let payload = payload.ok_or("empty payload")?;
    let view = decoder.view(payload).map_err(undecodable)?;
    if view.model.is_empty() {
        decoder.recycle(view);
        return Err("inference event without a model".into());
    }
    Ok(view)
}

/// The poison reason of a message the view reader rejects.
fn undecodable((field, reason): (String, String)) -> String {
    if field.is_empty() {
        format!("undecodable protobuf: {reason}")
    } else {
        format!("undecodable protobuf: {field}: {reason}")
    }
}
