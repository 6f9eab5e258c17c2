//! The analyzer's own consume loop: partition ownership, checkpoints and
//! alert publication (the I/O around [`Engine`]).
//!
//! Ordering that makes `kill -9` and rebalances exact:
//! 1. On assignment, a partition's newest checkpoint is loaded before any of
//!    its messages is applied; messages below the checkpoint's next offset
//!    are skipped as already counted (the committed offset may lag it).
//! 2. Each message is applied, then the alerts it caused are published and
//!    acknowledged before the next message is read.
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

use mlwatch_common::kafka::{DeadLetter, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_proto::v1::{Alert, AlertStatus, InferenceEvent, LabelEvent};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::Metrics;
use crate::checkpoint::{self, Checkpoint, CheckpointStore};
use crate::engine::{Engine, Observed};
use crate::trackers::Trackers;

/// The engine and the alerts it produced that are not yet acknowledged.
pub struct Core {
    pub engine: Engine,
    /// Accuracy (and drift) trackers of the owned partitions.
    pub trackers: Trackers,
    outbox: Vec<(i32, Alert)>,
}

pub type Shared = Arc<Mutex<Core>>;

pub fn shared(engine: Engine, trackers: Trackers) -> Shared {
    Arc::new(Mutex::new(Core {
        engine,
        trackers,
        outbox: Vec::new(),
    }))
}

/// An encoded checkpoint and the positions it reflects.
struct Snapshot {
    bytes: Vec<u8>,
    next_offset: i64,
    label_next_offset: i64,
    journal_seq: Option<u64>,
}

pub fn lock(core: &Shared) -> MutexGuard<'_, Core> {
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
        if core.outbox.iter().any(|(p, _)| *p == partition) {
            return None;
        }
        let state = core.engine.partition(partition)?.clone();
        if state.next_offset == 0 && state.label_next_offset == 0 {
            return None;
        }
        let accuracy = match core.trackers.checkpoint(partition) {
            Ok(a) => a,
            Err(error) => {
                tracing::error!(%error, partition, "join store not durable; checkpoint postponed");
                return None;
            }
        };
        let journal_seq = accuracy.as_ref().map(|a| a.tracker.journal_seq);
        let drift = core.trackers.drift_checkpoint(partition);
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
            lock(&self.core).trackers.checkpointed(partition, seq);
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
            let mut core = lock(&self.core);
            core.engine.remove_partition(p);
            core.trackers.remove(p);
            core.outbox.retain(|(q, _)| *q != p);
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
}

type Position = (i64, i64, i64, Option<i64>);

/// The consume loop; returns at shutdown after a final checkpoint.
pub struct Loop {
    pub owner: Arc<Owner>,
    pub consumer: StreamConsumer<Context>,
    pub producer: FutureProducer,
    pub dead_letter: DeadLetter,
    pub config: LoopConfig,
    /// `(next offset, next label offset, clock, accuracy clock)` of each
    /// partition's last checkpoint.
    saved: HashMap<i32, Position>,
    last_message: HashMap<i32, Instant>,
}

impl Loop {
    pub fn new(
        owner: Arc<Owner>,
        consumer: StreamConsumer<Context>,
        producer: FutureProducer,
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
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut eval = tokio::time::interval(self.config.eval_interval);
        eval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut checkpoint = tokio::time::interval(self.config.checkpoint_interval);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = self.consumer.recv() => match m {
                    Ok(m) => {
                        let m = m.detach();
                        self.load_assigned(&shutdown).await;
                        self.handle(&m, &shutdown).await;
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
                    let core = lock(&self.owner.core);
                    crate::export(&self.owner.metrics, &core.engine);
                    core.trackers.export(&mut self.owner.metrics.accuracy.lock().unwrap_or_else(|p| p.into_inner()));
                    core.trackers.export_drift(&self.owner.metrics.drift_score, &self.owner.metrics.quality_score);
                }
                _ = checkpoint.tick() => self.checkpoint_all(false).await,
            }
        }
        self.publish(&shutdown).await;
        self.checkpoint_all(true).await;
        let owned: Vec<i32> = lock(&self.owner.core).engine.partitions().map(|(p, _)| p).collect();
        let mut core = lock(&self.owner.core);
        for p in owned {
            core.engine.remove_partition(p);
            core.trackers.remove(p);
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
                .filter(|p| !core.engine.owns(*p) && self.owner.is_assigned(*p))
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
                        let (state, accuracy, drift) = found
                            .remove(p)
                            .map(|c| (c.state, c.accuracy, c.drift))
                            .unwrap_or_default();
                        core.trackers.restore_drift(*p, drift);
                        if let Err(error) = core.trackers.restore(*p, accuracy) {
                            failed = Some(error);
                            break;
                        }
                        tracing::info!(
                            partition = p,
                            next_offset = state.next_offset,
                            events = state.events,
                            "partition state restored"
                        );
                        let position = (
                            state.next_offset,
                            state.label_next_offset,
                            state.clock_ms,
                            core.trackers.clock_ms(*p),
                        );
                        self.saved.insert(*p, position);
                        self.last_message.insert(*p, Instant::now());
                        core.engine.insert_partition(*p, state);
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

    async fn handle(&mut self, m: &OwnedMessage, shutdown: &CancellationToken) {
        let p = m.partition();
        if !self.owner.is_assigned(p) {
            tracing::debug!(
                partition = p,
                offset = m.offset(),
                "message of a partition no longer assigned, skipped"
            );
            return;
        }
        if !lock(&self.owner.core).engine.owns(p) {
            self.load(vec![p], shutdown).await;
            if !lock(&self.owner.core).engine.owns(p) {
                return; // shutting down
            }
        }
        self.last_message.insert(p, Instant::now());
        let is_label = m.topic() == self.owner.labels_topic;
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = {
                let mut core = lock(&self.owner.core);
                let core = &mut *core;
                if is_label {
                    self.apply_label(core, m)
                } else {
                    self.apply_inference(core, m)
                }
            };
            match result {
                Ok(Some(None)) => return self.publish(shutdown).await,
                Ok(Some(Some(reason))) => return self.dead_letter(m, &reason, shutdown).await,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, partition = p, offset = m.offset(), "cannot apply message, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Applies an inference message: `None` when already applied, else
    /// `Some(poison reason)`; an error when the join store failed (the
    /// latency engine then has it, the store not: a retry completes it).
    fn apply_inference(&self, core: &mut Core, m: &OwnedMessage) -> Result<Option<Option<String>>, crate::Error> {
        let p = m.partition();
        let event = match decode(m.payload()) {
            Ok(event) => event,
            Err(_) if core.engine.is_applied(p, m.offset()) => {
                self.owner.metrics.duplicates.inc();
                return Ok(None);
            }
            Err(reason) => return Ok(Some(Some(reason))),
        };
        let fresh = match core.engine.observe(p, m.offset(), &event) {
            Observed::Applied(alerts) => {
                core.outbox.extend(alerts.into_iter().map(|a| (p, a)));
                // Drift state is checkpointed with the engine's offset, so
                // it sees exactly the events the engine applies.
                match core.trackers.observe_drift(p, &event) {
                    Ok(alerts) => core.outbox.extend(alerts.into_iter().map(|a| (p, a))),
                    Err(error) => tracing::warn!(%error, partition = p, "drift monitor skipped an event"),
                }
                self.owner.metrics.events.with_label_values(&["inference"]).inc();
                true
            }
            Observed::Duplicate => false,
        };
        let alerts = core.trackers.on_inference(p, m.offset(), &event)?;
        core.outbox.extend(alerts.into_iter().map(|a| (p, a)));
        if fresh {
            Ok(Some(None))
        } else {
            self.owner.metrics.duplicates.inc();
            Ok(None)
        }
    }

    /// Applies a label message (same answers as [`Self::apply_inference`]).
    fn apply_label(&self, core: &mut Core, m: &OwnedMessage) -> Result<Option<Option<String>>, crate::Error> {
        let p = m.partition();
        if core.engine.is_label_applied(p, m.offset()) {
            self.owner.metrics.duplicates.inc();
            return Ok(None);
        }
        let event = match decode_label(m.payload()) {
            Ok(event) => event,
            Err(reason) => return Ok(Some(Some(reason))),
        };
        let alerts = core.trackers.on_label(p, m.offset(), &event)?;
        core.outbox.extend(alerts.into_iter().map(|a| (p, a)));
        core.engine.mark_label_applied(p, m.offset());
        self.owner.metrics.events.with_label_values(&["label"]).inc();
        Ok(Some(None))
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
        let mut core = lock(&self.owner.core);
        if m.topic() == self.owner.labels_topic {
            core.engine.mark_label_applied(p, m.offset());
        } else {
            core.engine.mark_applied(p, m.offset());
        }
    }

    /// Moves the clocks of partitions without messages for `idle_after`.
    fn advance_idle(&mut self, elapsed: Duration) {
        let Some(idle_after) = self.config.idle_after else {
            return;
        };
        let mut core = lock(&self.owner.core);
        let owned: Vec<(i32, i64)> = core.engine.partitions().map(|(p, s)| (p, s.clock_ms)).collect();
        let step = elapsed.as_millis() as i64;
        for (p, clock) in owned {
            if self.last_message.get(&p).is_some_and(|t| t.elapsed() >= idle_after) {
                let alerts = core.engine.advance(p, clock + step);
                core.outbox.extend(alerts.into_iter().map(|a| (p, a)));
                let alerts = core.trackers.advance_drift(p, clock + step);
                core.outbox.extend(alerts.into_iter().map(|a| (p, a)));
                if let Some(acc_clock) = core.trackers.clock_ms(p) {
                    match core.trackers.advance(p, acc_clock + step) {
                        Ok(alerts) => core.outbox.extend(alerts.into_iter().map(|a| (p, a))),
                        Err(error) => tracing::warn!(%error, partition = p, "accuracy evaluation failed"),
                    }
                }
            }
        }
    }

    /// Publishes the outbox in order, retrying until acknowledged or
    /// shutdown.
    async fn publish(&mut self, shutdown: &CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let next = lock(&self.owner.core).outbox.first().cloned();
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
                    let mut core = lock(&self.owner.core);
                    if core.outbox.first().is_some_and(|(_, a)| a.id == alert.id) {
                        core.outbox.remove(0);
                    }
                    backoff = Duration::from_millis(100);
                }
                Err((error, _)) => {
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
        let owned: Vec<(i32, Position)> = {
            let core = lock(&self.owner.core);
            core.engine
                .partitions()
                .map(|(p, s)| {
                    (
                        p,
                        (
                            s.next_offset,
                            s.label_next_offset,
                            s.clock_ms,
                            core.trackers.clock_ms(p),
                        ),
                    )
                })
                .collect()
        };
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
pub fn decode_label(payload: Option<&[u8]>) -> Result<LabelEvent, String> {
    let payload = payload.ok_or("empty payload")?;
    let event = LabelEvent::decode(payload).map_err(|e| format!("undecodable protobuf: {e}"))?;
    if event.model.is_empty() {
        return Err("label event without a model".into());
    }
    if event.event_id.is_empty() {
        return Err(format!("label event of model {:?} without an event_id", event.model));
    }
    Ok(event)
}

/// Decodes an inference event; the reason when it is poison.
pub fn decode(payload: Option<&[u8]>) -> Result<InferenceEvent, String> {
    let payload = payload.ok_or("empty payload")?;
    let event = InferenceEvent::decode(payload).map_err(|e| format!("undecodable protobuf: {e}"))?;
    if event.model.is_empty() {
        return Err("inference event without a model".into());
    }
    Ok(event)
}
