//! The label join: predictions wait on disk for their label, labels that
//! come first wait for their prediction, and every id is remembered for a
//! while after it is settled so duplicates and late labels are recognised.
//!
//! One [`JoinStore`] holds one input partition (inferences and labels are
//! both keyed by model, so partition `p` of the two topics holds the same
//! models). It is a redb file: RAM is bounded by the page cache
//! (`cache_bytes`), everything else is on disk and survives restarts. Each
//! [`JoinStore::apply`] is one write transaction that also records the
//! offsets it consumed, so after a crash the engine resumes exactly where
//! the store stands, and counters are never double-counted.
//!
//! Each prediction ends in exactly one way: joined (its label arrived
//! within `label_lag_secs` of the prediction), or expired (no label within
//! the lag; a label arriving after that counts as late). Every label ends
//! in exactly one way too: joined, duplicate, late, still waiting for its
//! prediction, or expired while waiting. [`JoinCounts::balanced`] checks
//! that bookkeeping.
//!
//! Time is whatever `now_ms` the caller passes: expiry is driven by the
//! caller's clock, never read here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mlwatch_proto::v1::{InferenceEvent, LabelEvent};
use prost::Message as _;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Key: model NUL event id. Value: an encoded [`PendingPrediction`].
const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");
/// Key: deadline (8 bytes big-endian) then the pending key.
const PENDING_TTL: TableDefinition<&[u8], ()> = TableDefinition::new("pending_ttl");
/// Key: model NUL event id. Value: deadline (8 bytes) then an encoded
/// [`TruthLabel`].
const WAITING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("waiting_labels");
const WAITING_TTL: TableDefinition<&[u8], ()> = TableDefinition::new("waiting_ttl");
/// Key: model NUL event id. Value: [state, deadline (8 bytes)].
const SETTLED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("settled");
const SETTLED_TTL: TableDefinition<&[u8], ()> = TableDefinition::new("settled_ttl");
/// Key: sequence number. Value: an encoded [`JournalRecord`]: what each
/// transaction produced, kept until the engine's checkpoint of the tracker
/// covers it.
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// Counters and applied offsets.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// The `[accuracy.join]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JoinConfig {
    /// Directory of the per-partition store files.
    pub dir: PathBuf,
    /// How long after its prediction a label still joins; later labels are
    /// counted as late. 24 h by default; 7 days (604800) and more work.
    pub label_lag_secs: u64,
    /// How long a label that arrived before its prediction waits for it.
    pub label_wait_secs: u64,
    /// How long an id is remembered after it was joined or expired, so a
    /// duplicate or late label is recognised as such.
    pub settled_retention_secs: u64,
    /// Page cache of each store file, in bytes (bounds its RAM).
    pub cache_bytes: u64,
    /// Most expired entries removed per [`JoinStore::expire`] call.
    pub expire_batch: usize,
    /// Most journal entries kept when the engine does not trim them (the
    /// oldest go first and are counted as `journal_dropped`).
    pub journal_max_entries: u64,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("data/accuracy"),
            label_lag_secs: 86_400,
            label_wait_secs: 86_400,
            settled_retention_secs: 86_400,
            cache_bytes: 64 << 20,
            expire_batch: 100_000,
            journal_max_entries: 2_000_000,
        }
    }
}

impl JoinConfig {
    /// Checks values the types cannot; names the offending key.
    pub fn validate(&self) -> Result<(), Error> {
        if self.label_lag_secs == 0 {
            return Err(Error::config("accuracy.join.label_lag_secs", "must be > 0"));
        }
        if self.cache_bytes < 1 << 20 {
            return Err(Error::config(
                "accuracy.join.cache_bytes",
                format!("{} is below the 1 MiB minimum", self.cache_bytes),
            ));
        }
        Ok(())
    }
}

/// A prediction as the join keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PendingPrediction {
    #[prost(string, tag = "1")]
    pub event_id: String,
    #[prost(string, tag = "2")]
    pub model: String,
    #[prost(string, tag = "3")]
    pub model_version: String,
    #[prost(int64, tag = "4")]
    pub timestamp_ms: i64,
    #[prost(double, optional, tag = "5")]
    pub score: Option<f64>,
    #[prost(string, optional, tag = "6")]
    pub label: Option<String>,
    #[prost(double, optional, tag = "7")]
    pub value: Option<f64>,
    #[prost(map = "string, double", tag = "8")]
    pub scores: HashMap<String, f64>,
    #[prost(map = "string, string", tag = "9")]
    pub tags: HashMap<String, String>,
}

impl From<&InferenceEvent> for PendingPrediction {
    fn from(e: &InferenceEvent) -> Self {
        let p = e.prediction.clone().unwrap_or_default();
        Self {
            event_id: e.event_id.clone(),
            model: e.model.clone(),
            model_version: e.model_version.clone(),
            timestamp_ms: e.timestamp_ms,
            score: p.score,
            label: p.label,
            value: p.value,
            scores: p.scores,
            tags: e.tags.clone(),
        }
    }
}

/// A ground-truth label as the join keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TruthLabel {
    #[prost(string, tag = "1")]
    pub event_id: String,
    #[prost(string, tag = "2")]
    pub model: String,
    /// When the label became known; 0 means "when it arrived".
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
    #[prost(string, optional, tag = "4")]
    pub label: Option<String>,
    #[prost(double, optional, tag = "5")]
    pub value: Option<f64>,
}

impl From<&LabelEvent> for TruthLabel {
    fn from(e: &LabelEvent) -> Self {
        Self {
            event_id: e.event_id.clone(),
            model: e.model.clone(),
            timestamp_ms: e.timestamp_ms,
            label: e.label.clone(),
            value: e.value,
        }
    }
}

/// One input to the join.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinInput {
    Prediction(PendingPrediction),
    Label(TruthLabel),
}

/// What one input produced, in order: a new (not duplicate) prediction,
/// or a pair joined within the lag.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinEvent {
    Predicted(PendingPrediction),
    Joined(Joined),
}

/// A [`JoinEvent`] with its place in the store's journal and the `now_ms`
/// of the transaction that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub seq: u64,
    pub now_ms: i64,
    pub event: JoinEvent,
}

/// The journal's encoding of one entry.
#[derive(Clone, PartialEq, prost::Message)]
struct JournalRecord {
    #[prost(int64, tag = "1")]
    now_ms: i64,
    #[prost(message, optional, tag = "2")]
    prediction: Option<PendingPrediction>,
    /// Present for a joined pair.
    #[prost(message, optional, tag = "3")]
    label: Option<TruthLabel>,
    #[prost(int64, tag = "4")]
    lag_ms: i64,
}

/// A prediction and its label, joined within the lag.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub prediction: PendingPrediction,
    pub label: TruthLabel,
    /// Label time − prediction time.
    pub lag_ms: i64,
}

/// Running totals of one store (persisted with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JoinCounts {
    /// Distinct predictions accepted.
    pub predictions: i64,
    pub duplicate_predictions: i64,
    /// Every label received, duplicates included.
    pub labels: i64,
    pub joined: i64,
    pub duplicate_labels: i64,
    /// Labels that came after their prediction's lag had run out.
    pub late_labels: i64,
    /// Predictions whose lag ran out without a label.
    pub expired_predictions: i64,
    /// Labels that waited `label_wait_secs` for a prediction in vain.
    pub expired_labels: i64,
    /// Predictions waiting for a label now.
    pub pending: i64,
    /// Labels waiting for a prediction now.
    pub waiting_labels: i64,
    /// Journal entries dropped untrimmed at `journal_max_entries`.
    pub journal_dropped: i64,
    /// Sequence number of the newest journal entry.
    pub journal_seq: i64,
}

impl JoinCounts {
    const KEYS: [&'static str; 12] = [
        "predictions",
        "duplicate_predictions",
        "labels",
        "joined",
        "duplicate_labels",
        "late_labels",
        "expired_predictions",
        "expired_labels",
        "pending",
        "waiting_labels",
        "journal_dropped",
        "journal_seq",
    ];

    fn fields(&mut self) -> [&mut i64; 12] {
        [
            &mut self.predictions,
            &mut self.duplicate_predictions,
            &mut self.labels,
            &mut self.joined,
            &mut self.duplicate_labels,
            &mut self.late_labels,
            &mut self.expired_predictions,
            &mut self.expired_labels,
            &mut self.pending,
            &mut self.waiting_labels,
            &mut self.journal_dropped,
            &mut self.journal_seq,
        ]
    }

    /// Adds another store's totals (several owned partitions).
    pub fn add(&mut self, other: &JoinCounts) {
        let mut o = *other;
        for (a, b) in self.fields().into_iter().zip(o.fields()) {
            *a += *b;
        }
    }

    /// Every prediction and every label is accounted for exactly once.
    /// (A late label's prediction counts as expired.)
    pub fn balanced(&self) -> bool {
        self.predictions == self.joined + self.expired_predictions + self.pending
            && self.labels
                == self.joined + self.duplicate_labels + self.late_labels + self.waiting_labels + self.expired_labels
    }
}

/// What one settled id became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Joined = 1,
    /// The prediction expired unlabelled; no label seen yet.
    Expired = 2,
    /// The prediction expired and a late label came.
    LateLabelled = 3,
}

impl Settled {
    fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::Joined,
            3 => Self::LateLabelled,
            _ => Self::Expired,
        }
    }
}

fn key(model: &str, event_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(model.len() + event_id.len() + 1);
    k.extend_from_slice(model.as_bytes());
    k.push(0);
    k.extend_from_slice(event_id.as_bytes());
    k
}

fn ttl_key(deadline_ms: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    // Offset so negative times still sort before positive ones.
    k.extend_from_slice(&(deadline_ms as u64 ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn ttl_bound(deadline_ms: i64) -> [u8; 8] {
    (deadline_ms as u64 ^ (1 << 63)).to_be_bytes()
}

fn storage(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Task("join store", format!("{what} {}: {e}", path.display()))
}

/// The on-disk join of one partition.
pub struct JoinStore {
    db: Database,
    path: PathBuf,
    lag_ms: i64,
    wait_ms: i64,
    retention_ms: i64,
    expire_batch: usize,
    journal_max: u64,
    counts: JoinCounts,
    /// When set, `apply` commits without fsync and [`JoinStore::sync`]
    /// makes everything durable (the service calls it before each
    /// checkpoint; see [`JoinStore::defer_durability`]).
    deferred: bool,
}

impl JoinStore {
    /// The file of partition `partition` under `config.dir`.
    pub fn path_for(config: &JoinConfig, partition: i32) -> PathBuf {
        config.dir.join(format!("join-p{partition}.redb"))
    }

    /// Opens (or creates) the store of one partition.
    pub fn open(config: &JoinConfig, partition: i32) -> Result<Self, Error> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(|e| storage(&config.dir, "cannot create", e))?;
        Self::open_path(config, &Self::path_for(config, partition))
    }

    /// Opens (or creates) a store at an explicit path.
    pub fn open_path(config: &JoinConfig, path: &Path) -> Result<Self, Error> {
        let db = Database::builder()
            .set_cache_size(config.cache_bytes as usize)
            .create(path)
            .map_err(|e| storage(path, "cannot open", e))?;
        let mut store = Self {
            db,
            path: path.to_path_buf(),
            lag_ms: (config.label_lag_secs as i64).saturating_mul(1000),
            wait_ms: (config.label_wait_secs as i64).saturating_mul(1000),
            retention_ms: (config.settled_retention_secs as i64).saturating_mul(1000),
            expire_batch: config.expire_batch.max(1),
            journal_max: config.journal_max_entries,
            counts: JoinCounts::default(),
            deferred: false,
        };
        store.counts = store.read_counts()?;
        Ok(store)
    }

    /// Commits of [`JoinStore::apply`] stop waiting for the disk; only
    /// [`JoinStore::sync`] does. A crash then loses the applies since the
    /// last sync, which is safe when the caller syncs before every
    /// checkpoint: the store is never behind a checkpoint, and the lost
    /// messages come again from the broker (the store records the offsets
    /// it applied and skips what it already has). One fsync per checkpoint
    /// instead of one per message.
    pub fn defer_durability(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    /// Makes every earlier commit durable (one fsync).
    pub fn sync(&mut self) -> Result<(), Error> {
        let mut tx = self.db.begin_write().map_err(|e| self.err("cannot write", e))?;
        tx.set_durability(redb::Durability::Immediate);
        tx.commit().map_err(|e| self.err("cannot commit", e))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        storage(&self.path, what, e)
    }

    fn read_counts(&self) -> Result<JoinCounts, Error> {
        let tx = self.db.begin_write().map_err(|e| self.err("cannot write", e))?;
        let mut counts = JoinCounts::default();
        {
            let meta = tx.open_table(META).map_err(|e| self.err("cannot open table in", e))?;
            for (name, field) in JoinCounts::KEYS.iter().zip(counts.fields()) {
                if let Some(v) = meta.get(*name).map_err(|e| self.err("cannot read", e))? {
                    *field = v.value();
                }
            }
        }
        tx.commit().map_err(|e| self.err("cannot commit", e))?;
        Ok(counts)
    }

    pub fn counts(&self) -> JoinCounts {
        self.counts
    }

    pub fn label_lag_ms(&self) -> i64 {
        self.lag_ms
    }

    /// The last offset of `topic` applied to this store, if any.
    pub fn applied_offset(&self, topic: &str) -> Result<Option<i64>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err("cannot read", e))?;
        let meta = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err("cannot open table in", e)),
        };
        let v = meta
            .get(format!("offset/{topic}").as_str())
            .map_err(|e| self.err("cannot read", e))?;
        Ok(v.map(|g| g.value()))
    }

    /// Applies a batch in one transaction, together with the offsets it
    /// consumed (`(topic, offset)`, the last offset of each topic in the
    /// batch), and journals what it produced: each new prediction and each
    /// joined pair, in input order, numbered after the previous batch's.
    pub fn apply(
        &mut self,
        inputs: &[JoinInput],
        now_ms: i64,
        offsets: &[(&str, i64)],
    ) -> Result<Vec<JournalEntry>, Error> {
        self.apply_each(inputs.iter().map(|i| (i, now_ms)), offsets)
    }

    /// [`JoinStore::apply`] with each input's own `now_ms` (a poll's worth
    /// of messages in one transaction, each at the clock it would have had
    /// alone: the same result as one transaction per input).
    pub fn apply_each<'i>(
        &mut self,
        inputs: impl IntoIterator<Item = (&'i JoinInput, i64)>,
        offsets: &[(&str, i64)],
    ) -> Result<Vec<JournalEntry>, Error> {
        let mut tx = self.db.begin_write().map_err(|e| self.err("cannot write", e))?;
        if self.deferred {
            tx.set_durability(redb::Durability::None);
        }
        let mut counts = self.counts;
        let mut events = Vec::new();
        let mut times = Vec::new();
        let result = Tx::new(&tx, self).and_then(|mut t| {
            for (input, now_ms) in inputs {
                match input {
                    JoinInput::Prediction(p) => t.prediction(p, now_ms, &mut counts, &mut events)?,
                    JoinInput::Label(l) => t.label(l, now_ms, &mut counts, &mut events)?,
                }
                times.resize(events.len(), now_ms);
            }
            Ok(())
        });
        result?;
        let entries: Vec<JournalEntry> = events
            .into_iter()
            .zip(times)
            .map(|(event, now_ms)| {
                counts.journal_seq += 1;
                JournalEntry {
                    seq: counts.journal_seq as u64,
                    now_ms,
                    event,
                }
            })
            .collect();
        self.journal(&tx, &entries, &mut counts)?;
        self.finish(tx, counts, offsets)?;
        Ok(entries)
    }

    fn journal(&self, tx: &WriteTransaction, entries: &[JournalEntry], counts: &mut JoinCounts) -> Result<(), Error> {
        let mut table = tx
            .open_table(JOURNAL)
            .map_err(|e| self.err("cannot open table in", e))?;
        for e in entries {
            let record = match &e.event {
                JoinEvent::Predicted(p) => JournalRecord {
                    now_ms: e.now_ms,
                    prediction: Some(p.clone()),
                    label: None,
                    lag_ms: 0,
                },
                JoinEvent::Joined(j) => JournalRecord {
                    now_ms: e.now_ms,
                    prediction: Some(j.prediction.clone()),
                    label: Some(j.label.clone()),
                    lag_ms: j.lag_ms,
                },
            };
            table
                .insert(e.seq, record.encode_to_vec().as_slice())
                .map_err(|e| self.err("cannot write", e))?;
        }
        let len = table.len().map_err(|e| self.err("cannot read", e))?;
        if len > self.journal_max {
            let excess = len - self.journal_max;
            let first = table
                .first()
                .map_err(|e| self.err("cannot read", e))?
                .map(|(k, _)| k.value())
                .unwrap_or(0);
            table
                .retain_in(first..first + excess, |_, _| false)
                .map_err(|e| self.err("cannot write", e))?;
            counts.journal_dropped += excess as i64;
        }
        Ok(())
    }

    /// Journal entries after `seq`, oldest first: what a tracker restored
    /// from a checkpoint taken at `seq` has not seen.
    pub fn journal_since(&self, seq: u64) -> Result<Vec<JournalEntry>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err("cannot read", e))?;
        let table = match tx.open_table(JOURNAL) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err("cannot open table in", e)),
        };
        let mut out = Vec::new();
        for entry in table
            .range(seq.saturating_add(1)..)
            .map_err(|e| self.err("cannot read", e))?
        {
            let (k, v) = entry.map_err(|e| self.err("cannot read", e))?;
            let r = JournalRecord::decode(v.value()).map_err(|e| self.err("corrupt journal in", e))?;
            let prediction = r.prediction.unwrap_or_default();
            let event = match r.label {
                Some(label) => JoinEvent::Joined(Joined {
                    prediction,
                    label,
                    lag_ms: r.lag_ms,
                }),
                None => JoinEvent::Predicted(prediction),
            };
            out.push(JournalEntry {
                seq: k.value(),
                now_ms: r.now_ms,
                event,
            });
        }
        Ok(out)
    }

    /// Forgets journal entries up to `seq` (a checkpoint now covers them).
    /// Usually that is nearly all of the journal: the table is then dropped
    /// whole and the few newer entries written back (far cheaper than
    /// removing entries one by one). Under deferred durability the trim is
    /// not fsynced: a trim lost in a crash leaves entries the next restore
    /// skips anyway.
    pub fn trim_journal(&mut self, seq: u64) -> Result<(), Error> {
        let mut tx = self.db.begin_write().map_err(|e| self.err("cannot write", e))?;
        if self.deferred {
            tx.set_durability(redb::Durability::None);
        }
        {
            let mut table = tx
                .open_table(JOURNAL)
                .map_err(|e| self.err("cannot open table in", e))?;
            let total = table.len().map_err(|e| self.err("cannot read", e))?;
            let last = table
                .last()
                .map_err(|e| self.err("cannot read", e))?
                .map_or(0, |(k, _)| k.value());
            // Sequence numbers are consecutive: this many entries stay.
            let kept = last.saturating_sub(seq).min(total);
            if kept.saturating_mul(4) < total {
                let mut newer = Vec::new();
                for entry in table
                    .range(seq.saturating_add(1)..)
                    .map_err(|e| self.err("cannot read", e))?
                {
                    let (k, v) = entry.map_err(|e| self.err("cannot read", e))?;
                    newer.push((k.value(), v.value().to_vec()));
                }
                drop(table);
                tx.delete_table(JOURNAL).map_err(|e| self.err("cannot write", e))?;
                let mut table = tx
                    .open_table(JOURNAL)
                    .map_err(|e| self.err("cannot open table in", e))?;
                for (k, v) in &newer {
                    table
                        .insert(*k, v.as_slice())
                        .map_err(|e| self.err("cannot write", e))?;
                }
            } else {
                loop {
                    let first = table
                        .first()
                        .map_err(|e| self.err("cannot read", e))?
                        .map(|(k, _)| k.value());
                    if first.is_none_or(|k| k > seq) {
                        break;
                    }
                    table.pop_first().map_err(|e| self.err("cannot write", e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err("cannot commit", e))
    }

    /// Expires predictions whose lag ran out by `now_ms`, labels that waited
    /// too long, and settled ids past retention; at most `expire_batch` of
    /// each per call. Returns how many predictions expired unlabelled.
    pub fn expire(&mut self, now_ms: i64) -> Result<u64, Error> {
        let tx = self.db.begin_write().map_err(|e| self.err("cannot write", e))?;
        let mut counts = self.counts;
        let mut expired = 0;
        {
            let mut t = Tx::new(&tx, self)?;
            let bound = ttl_bound(now_ms);
            for ttl_key in t.due(TtlKind::Pending, &bound, self.expire_batch)? {
                let k = &ttl_key[8..];
                t.pending_ttl
                    .remove(ttl_key.as_slice())
                    .map_err(|e| storage(t.path, "cannot write", e))?;
                if t.pending
                    .remove(k)
                    .map_err(|e| storage(t.path, "cannot write", e))?
                    .is_some()
                {
                    counts.pending -= 1;
                    counts.expired_predictions += 1;
                    expired += 1;
                    t.settle(k, Settled::Expired, now_ms)?;
                }
            }
            for ttl_key in t.due(TtlKind::Waiting, &bound, self.expire_batch)? {
                t.waiting_ttl
                    .remove(ttl_key.as_slice())
                    .map_err(|e| self.err("cannot write", e))?;
                if t.waiting
                    .remove(&ttl_key[8..])
                    .map_err(|e| self.err("cannot write", e))?
                    .is_some()
                {
                    counts.waiting_labels -= 1;
                    counts.expired_labels += 1;
                }
            }
            for ttl_key in t.due(TtlKind::Settled, &bound, self.expire_batch)? {
                t.settled_ttl
                    .remove(ttl_key.as_slice())
                    .map_err(|e| self.err("cannot write", e))?;
                let k = &ttl_key[8..];
                // Only the newest deadline of an id removes it.
                let current = t
                    .settled
                    .get(k)
                    .map_err(|e| self.err("cannot read", e))?
                    .map(|v| i64::from_be_bytes(v.value()[1..9].try_into().unwrap_or([0; 8])));
                if current.is_some_and(|d| d <= now_ms) {
                    t.settled.remove(k).map_err(|e| self.err("cannot write", e))?;
                }
            }
        }
        self.finish(tx, counts, &[])?;
        Ok(expired)
    }

    fn finish(&mut self, tx: WriteTransaction, mut counts: JoinCounts, offsets: &[(&str, i64)]) -> Result<(), Error> {
        {
            let mut meta = tx.open_table(META).map_err(|e| self.err("cannot open table in", e))?;
            for (name, field) in JoinCounts::KEYS.iter().zip(counts.fields()) {
                meta.insert(*name, *field).map_err(|e| self.err("cannot write", e))?;
            }
            for (topic, offset) in offsets {
                meta.insert(format!("offset/{topic}").as_str(), *offset)
                    .map_err(|e| self.err("cannot write", e))?;
            }
        }
        tx.commit().map_err(|e| self.err("cannot commit", e))?;
        self.counts = counts;
        Ok(())
    }

    /// (stored, fragmented, metadata) bytes inside the file, from redb.
    pub fn storage_bytes(&self) -> Result<(u64, u64, u64), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err("cannot write", e))?;
        let stats = tx.stats().map_err(|e| self.err("cannot read stats of", e))?;
        let out = (stats.stored_bytes(), stats.fragmented_bytes(), stats.metadata_bytes());
        tx.abort().map_err(|e| self.err("cannot abort", e))?;
        Ok(out)
    }

    /// Bytes of the store file on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Entries in the pending table (equals `counts().pending`).
    pub fn pending_len(&self) -> Result<u64, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err("cannot read", e))?;
        match tx.open_table(PENDING) {
            Ok(t) => t.len().map_err(|e| self.err("cannot read", e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(self.err("cannot open table in", e)),
        }
    }
}

enum TtlKind {
    Pending,
    Waiting,
    Settled,
}

/// The open tables of one write transaction.
struct Tx<'a> {
    pending: redb::Table<'a, &'static [u8], &'static [u8]>,
    pending_ttl: redb::Table<'a, &'static [u8], ()>,
    waiting: redb::Table<'a, &'static [u8], &'static [u8]>,
    waiting_ttl: redb::Table<'a, &'static [u8], ()>,
    settled: redb::Table<'a, &'static [u8], &'static [u8]>,
    settled_ttl: redb::Table<'a, &'static [u8], ()>,
    path: &'a Path,
    lag_ms: i64,
    wait_ms: i64,
    retention_ms: i64,
}

impl<'a> Tx<'a> {
    fn new(tx: &'a WriteTransaction, store: &'a JoinStore) -> Result<Self, Error> {
        let e = |e: redb::TableError| store.err("cannot open table in", e);
        Ok(Self {
            pending: tx.open_table(PENDING).map_err(e)?,
            pending_ttl: tx.open_table(PENDING_TTL).map_err(e)?,
            waiting: tx.open_table(WAITING).map_err(e)?,
            waiting_ttl: tx.open_table(WAITING_TTL).map_err(e)?,
            settled: tx.open_table(SETTLED).map_err(e)?,
            settled_ttl: tx.open_table(SETTLED_TTL).map_err(e)?,
            path: &store.path,
            lag_ms: store.lag_ms,
            wait_ms: store.wait_ms,
            retention_ms: store.retention_ms,
        })
    }

    fn settled_state(&self, k: &[u8]) -> Result<Option<Settled>, Error> {
        Ok(self
            .settled
            .get(k)
            .map_err(|e| storage(self.path, "cannot read", e))?
            .and_then(|v| v.value().first().copied())
            .map(Settled::from_byte))
    }

    fn settle(&mut self, k: &[u8], state: Settled, now_ms: i64) -> Result<(), Error> {
        let deadline = now_ms.saturating_add(self.retention_ms);
        let mut v = [0u8; 9];
        v[0] = state as u8;
        v[1..].copy_from_slice(&deadline.to_be_bytes());
        self.settled
            .insert(k, v.as_slice())
            .map_err(|e| storage(self.path, "cannot write", e))?;
        self.settled_ttl
            .insert(ttl_key(deadline, k).as_slice(), ())
            .map_err(|e| storage(self.path, "cannot write", e))?;
        Ok(())
    }

    /// Pairs a prediction with its label: joined within the lag, else late.
    fn pair(
        &mut self,
        k: &[u8],
        prediction: PendingPrediction,
        label: TruthLabel,
        now_ms: i64,
        counts: &mut JoinCounts,
        events: &mut Vec<JoinEvent>,
    ) -> Result<(), Error> {
        let label_ms = if label.timestamp_ms > 0 {
            label.timestamp_ms
        } else {
            now_ms
        };
        let lag_ms = label_ms - prediction.timestamp_ms;
        if lag_ms > self.lag_ms {
            counts.late_labels += 1;
            counts.expired_predictions += 1;
            self.settle(k, Settled::LateLabelled, now_ms)
        } else {
            counts.joined += 1;
            events.push(JoinEvent::Joined(Joined {
                prediction,
                label,
                lag_ms,
            }));
            self.settle(k, Settled::Joined, now_ms)
        }
    }

    fn prediction(
        &mut self,
        p: &PendingPrediction,
        now_ms: i64,
        counts: &mut JoinCounts,
        events: &mut Vec<JoinEvent>,
    ) -> Result<(), Error> {
        let k = key(&p.model, &p.event_id);
        if self.settled_state(&k)?.is_some()
            || self
                .pending
                .get(k.as_slice())
                .map_err(|e| storage(self.path, "cannot read", e))?
                .is_some()
        {
            counts.duplicate_predictions += 1;
            return Ok(());
        }
        counts.predictions += 1;
        events.push(JoinEvent::Predicted(p.clone()));
        let waiting = self
            .waiting
            .remove(k.as_slice())
            .map_err(|e| storage(self.path, "cannot write", e))?
            .map(|v| v.value().to_vec());
        if let Some(bytes) = waiting {
            counts.waiting_labels -= 1;
            let (deadline, encoded) = bytes.split_at(8.min(bytes.len()));
            let deadline = i64::from_be_bytes(deadline.try_into().unwrap_or([0; 8]));
            self.waiting_ttl
                .remove(ttl_key(deadline, &k).as_slice())
                .map_err(|e| storage(self.path, "cannot write", e))?;
            let label = TruthLabel::decode(encoded).map_err(|e| storage(self.path, "corrupt label in", e))?;
            return self.pair(&k, p.clone(), label, now_ms, counts, events);
        }
        let deadline = p.timestamp_ms.saturating_add(self.lag_ms);
        self.pending
            .insert(k.as_slice(), p.encode_to_vec().as_slice())
            .map_err(|e| storage(self.path, "cannot write", e))?;
        self.pending_ttl
            .insert(ttl_key(deadline, &k).as_slice(), ())
            .map_err(|e| storage(self.path, "cannot write", e))?;
        counts.pending += 1;
        Ok(())
    }

    fn label(
        &mut self,
        l: &TruthLabel,
        now_ms: i64,
        counts: &mut JoinCounts,
        events: &mut Vec<JoinEvent>,
    ) -> Result<(), Error> {
        let k = key(&l.model, &l.event_id);
        counts.labels += 1;
        match self.settled_state(&k)? {
            Some(Settled::Joined | Settled::LateLabelled) => {
                counts.duplicate_labels += 1;
                return Ok(());
            }
            Some(Settled::Expired) => {
                counts.late_labels += 1;
                return self.settle(&k, Settled::LateLabelled, now_ms);
            }
            None => {}
        }
        let pending = self
            .pending
            .remove(k.as_slice())
            .map_err(|e| storage(self.path, "cannot write", e))?
            .map(|v| v.value().to_vec());
        if let Some(bytes) = pending {
            counts.pending -= 1;
            let prediction = PendingPrediction::decode(bytes.as_slice())
                .map_err(|e| storage(self.path, "corrupt prediction in", e))?;
            let deadline = prediction.timestamp_ms.saturating_add(self.lag_ms);
            self.pending_ttl
                .remove(ttl_key(deadline, &k).as_slice())
                .map_err(|e| storage(self.path, "cannot write", e))?;
            return self.pair(&k, prediction, l.clone(), now_ms, counts, events);
        }
        if self
            .waiting
            .get(k.as_slice())
            .map_err(|e| storage(self.path, "cannot read", e))?
            .is_some()
        {
            counts.duplicate_labels += 1;
            return Ok(());
        }
        let deadline = now_ms.saturating_add(self.wait_ms);
        let mut value = deadline.to_be_bytes().to_vec();
        l.encode(&mut value)
            .map_err(|e| storage(self.path, "cannot encode label for", e))?;
        self.waiting
            .insert(k.as_slice(), value.as_slice())
            .map_err(|e| storage(self.path, "cannot write", e))?;
        self.waiting_ttl
            .insert(ttl_key(deadline, &k).as_slice(), ())
            .map_err(|e| storage(self.path, "cannot write", e))?;
        counts.waiting_labels += 1;
        Ok(())
    }

    /// TTL keys due at or before `bound`, oldest first, at most `max`.
    fn due(&self, kind: TtlKind, bound: &[u8; 8], max: usize) -> Result<Vec<Vec<u8>>, Error> {
        let table = match kind {
            TtlKind::Pending => &self.pending_ttl,
            TtlKind::Waiting => &self.waiting_ttl,
            TtlKind::Settled => &self.settled_ttl,
        };
        let mut out = Vec::new();
        // Keys start with the deadline; every key ≤ bound ∥ 0xFF… is due.
        let mut upper = bound.to_vec();
        upper.push(0xFF);
        for entry in table
            .range::<&[u8]>(..upper.as_slice())
            .map_err(|e| storage(self.path, "cannot read", e))?
        {
            let (k, _) = entry.map_err(|e| storage(self.path, "cannot read", e))?;
            let k = k.value();
            if k[..8] > bound[..] {
                break;
            }
            out.push(k.to_vec());
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    use super::*;

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_795_000_000_000;

    fn config(dir: &Path) -> JoinConfig {
        JoinConfig {
            dir: dir.to_path_buf(),
            label_lag_secs: 3600,
            label_wait_secs: 3600,
            settled_retention_secs: 7200,
            cache_bytes: 4 << 20,
            ..Default::default()
        }
    }

    fn pred(id: &str, t: i64) -> JoinInput {
        JoinInput::Prediction(PendingPrediction {
            event_id: id.into(),
            model: "fraud".into(),
            model_version: "v1".into(),
            timestamp_ms: t,
            score: Some(0.8),
            ..Default::default()
        })
    }

    fn label(id: &str, t: i64) -> JoinInput {
        JoinInput::Label(TruthLabel {
            event_id: id.into(),
            model: "fraud".into(),
            timestamp_ms: t,
            label: Some("1".into()),
            value: None,
        })
    }

    fn joined(entries: &[JournalEntry]) -> Vec<Joined> {
        entries
            .iter()
            .filter_map(|e| match &e.event {
                JoinEvent::Joined(j) => Some(j.clone()),
                JoinEvent::Predicted(_) => None,
            })
            .collect()
    }

    fn ids(entries: &[JournalEntry]) -> Vec<String> {
        joined(entries).iter().map(|j| j.prediction.event_id.clone()).collect()
    }

    #[test]
    fn out_of_order_duplicate_late_and_restart_count_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let mut s = JoinStore::open(&cfg, 0).unwrap();
        let m = 60_000;
        // p1 then its label; l2 before p2; p3 pending, label 2 h later (late);
        // p6 twice; p7 before the restart, l8 before the restart.
        let j = s
            .apply(
                &[
                    pred("p1", T0),
                    label("l-only", T0),
                    label("p2", T0 + 5 * m),
                    pred("p3", T0),
                    pred("p4", T0),
                    pred("p6", T0),
                    pred("p6", T0),
                    label("p1", T0 + 10 * m),
                    pred("p2", T0 + m),
                    label("p1", T0 + 11 * m),
                    label("p3", T0 + 2 * HOUR),
                    pred("p7", T0 + 2 * m),
                    label("p8", T0 + 4 * m),
                ],
                T0 + 10 * m,
                &[("inference", 41), ("labels", 17)],
            )
            .unwrap();
        assert_eq!(ids(&j), ["p1", "p2"]);
        assert_eq!(joined(&j)[0].lag_ms, 10 * m);
        assert_eq!(joined(&j)[1].lag_ms, 4 * m);
        // The journal holds each new prediction and each pair, in order.
        let seqs: Vec<u64> = j.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=j.len() as u64).collect::<Vec<_>>());
        drop(s);

        // Restart: everything, counters and offsets included, is back.
        let mut s = JoinStore::open(&cfg, 0).unwrap();
        assert_eq!(s.applied_offset("inference").unwrap(), Some(41));
        assert_eq!(s.applied_offset("labels").unwrap(), Some(17));
        assert_eq!(s.counts().pending, 3, "{:?}", s.counts());
        let j = s
            .apply(
                &[
                    label("p7", T0 + 20 * m),
                    pred("p8", T0 + 3 * m),
                    label("p2", T0 + 30 * m),
                ],
                T0 + 30 * m,
                &[],
            )
            .unwrap();
        assert_eq!(ids(&j), ["p7", "p8"]);
        // p4 and p6 run out of lag; the lonely label waits an hour in vain.
        assert_eq!(s.expire(T0 + HOUR + 10 * m).unwrap(), 2);
        s.expire(T0 + 2 * HOUR).unwrap();
        let j = s
            .apply(
                &[label("p4", T0 + 2 * HOUR), label("p4", T0 + 2 * HOUR)],
                T0 + 2 * HOUR,
                &[],
            )
            .unwrap();
        assert!(j.is_empty());
        let journal = s.journal_since(0).unwrap();
        assert_eq!(joined(&journal).len(), 4);
        s.trim_journal(journal[journal.len() - 3].seq).unwrap();
        assert_eq!(s.journal_since(0).unwrap().len(), 2);
        drop(s);

        let s = JoinStore::open(&cfg, 0).unwrap();
        let c = s.counts();
        assert_eq!(
            c,
            JoinCounts {
                predictions: 7, // p1 p2 p3 p4 p6 p7 p8
                duplicate_predictions: 1,
                labels: 10,
                joined: 4,              // p1 p2 p7 p8
                duplicate_labels: 3,    // p1 again, p2 after join, p4 again
                late_labels: 2,         // p3 (2 h after), p4 (after expiry)
                expired_predictions: 3, // p3 p4 p6
                expired_labels: 1,      // l-only
                pending: 0,
                waiting_labels: 0,
                journal_dropped: 0,
                journal_seq: 11, // 7 new predictions, 4 pairs
            }
        );
        assert!(c.balanced());
        assert_eq!(s.pending_len().unwrap(), 0);
    }

    #[test]
    fn trimming_keeps_exactly_the_newer_entries_whether_few_or_many() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = JoinStore::open(&config(dir.path()), 0).unwrap();
        s.defer_durability(true);
        let inputs: Vec<JoinInput> = (0..100).map(|i| pred(&format!("p{i}"), T0)).collect();
        s.apply(&inputs, T0, &[]).unwrap();
        let seqs = |s: &JoinStore| s.journal_since(0).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
        // Most entries stay: removed one by one.
        s.trim_journal(10).unwrap();
        assert_eq!(seqs(&s), (11..=100).collect::<Vec<u64>>());
        // Few stay: the table is rewritten with them.
        s.trim_journal(97).unwrap();
        assert_eq!(seqs(&s), vec![98, 99, 100]);
        // Later entries are numbered on, and a full trim empties it.
        s.apply(&[pred("q", T0)], T0, &[]).unwrap();
        assert_eq!(seqs(&s), vec![98, 99, 100, 101]);
        s.trim_journal(101).unwrap();
        assert!(seqs(&s).is_empty());
        s.sync().unwrap();
        drop(s);
        let s = JoinStore::open(&config(dir.path()), 0).unwrap();
        assert!(seqs(&s).is_empty());
        assert_eq!(s.counts().journal_seq, 101);
    }

    #[test]
    fn seven_day_lag_joins_and_expires_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.label_lag_secs = 7 * 86_400;
        let mut s = JoinStore::open(&cfg, 1).unwrap();
        s.apply(&[pred("a", T0), pred("b", T0)], T0, &[]).unwrap();
        let day = 24 * HOUR;
        assert_eq!(s.expire(T0 + 6 * day).unwrap(), 0);
        let j = s.apply(&[label("a", T0 + 6 * day)], T0 + 6 * day, &[]).unwrap();
        assert_eq!(joined(&j)[0].lag_ms, 6 * day);
        assert_eq!(s.expire(T0 + 7 * day).unwrap(), 1);
        assert_eq!(s.counts().expired_predictions, 1);
    }

    /// One message of a partition, as the engine sees it.
    #[derive(Clone)]
    struct Msg {
        topic: &'static str,
        offset: i64,
        input: JoinInput,
        /// Broker timestamp, used as `now` so a replay decides alike.
        at_ms: i64,
    }

    /// A shuffled stream: every prediction once, labels with a random lag
    /// (some beyond the 1 h lag), 20 % duplicated, some labels with no
    /// prediction. Returns the stream and (joined, late, duplicates, waiting).
    fn stream(seed: u64, n: usize) -> (Vec<Msg>, JoinCounts) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut events: Vec<(i64, JoinInput)> = Vec::new();
        let mut want = JoinCounts::default();
        for i in 0..n {
            let id = format!("e{i}");
            let t = T0 + rng.random_range(0..HOUR);
            events.push((t, pred(&id, t)));
            want.predictions += 1;
            if rng.random_bool(0.9) {
                let lag = rng.random_range(0..(3 * HOUR / 2));
                let copies = if rng.random_bool(0.2) { 2 } else { 1 };
                for _ in 0..copies {
                    // Arrival jitter puts some labels before their prediction.
                    let arrive = t + lag - rng.random_range(0..120_000);
                    events.push((arrive, label(&id, t + lag)));
                }
                want.labels += copies;
                want.duplicate_labels += copies - 1;
                if lag > HOUR {
                    want.late_labels += 1;
                    want.expired_predictions += 1;
                } else {
                    want.joined += 1;
                }
            } else {
                want.pending += 1;
            }
        }
        for i in 0..n / 20 {
            events.push((T0 + rng.random_range(0..HOUR), label(&format!("ghost{i}"), T0)));
            want.labels += 1;
            want.waiting_labels += 1;
        }
        want.journal_seq = want.predictions + want.joined;
        events.sort_by_key(|(t, _)| *t);
        // Local disorder on top of the time order.
        for chunk in events.chunks_mut(7) {
            chunk.shuffle(&mut rng);
        }
        let (mut inf, mut lab) = (0, 0);
        let msgs = events
            .into_iter()
            .map(|(t, input)| {
                let (topic, offset) = match input {
                    JoinInput::Prediction(_) => ("inference", {
                        inf += 1;
                        inf
                    }),
                    JoinInput::Label(_) => ("labels", {
                        lab += 1;
                        lab
                    }),
                };
                Msg {
                    topic,
                    offset,
                    input,
                    at_ms: t,
                }
            })
            .collect();
        (msgs, want)
    }

    /// Feeds messages in batches the way the engine does: skips what the
    /// store already applied, records the batch's offsets with it.
    fn feed(s: &mut JoinStore, msgs: &[Msg]) -> usize {
        let mut joined = 0;
        for batch in msgs.chunks(50) {
            let mut inputs = Vec::new();
            let mut offsets: Vec<(&str, i64)> = Vec::new();
            for m in batch {
                if s.applied_offset(m.topic).unwrap().is_some_and(|o| m.offset <= o) {
                    continue;
                }
                inputs.push(m.input.clone());
                offsets.retain(|(t, _)| *t != m.topic);
                offsets.push((m.topic, m.offset));
            }
            let now = batch.iter().map(|m| m.at_ms).max().unwrap_or(0);
            joined += self::joined(&s.apply(&inputs, now, &offsets).unwrap()).len();
        }
        joined
    }

    #[test]
    fn shuffled_stream_with_restarts_and_redelivery_joins_exactly() {
        let (msgs, want) = stream(7, 3000);
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let mut joined = 0;
        let mut from = 0;
        // Restart every 700 messages; after each restart the consumer
        // redelivers the last 120 messages (offsets committed late).
        while from < msgs.len() {
            let to = (from + 700).min(msgs.len());
            let mut s = JoinStore::open(&cfg, 2).unwrap();
            joined += feed(&mut s, &msgs[from.saturating_sub(120)..to]);
            from = to;
        }
        let s = JoinStore::open(&cfg, 2).unwrap();
        let got = s.counts();
        assert_eq!(joined as i64, want.joined);
        // The stream never runs expiry: unlabelled predictions stay pending.
        assert_eq!(got, want);
        assert!(got.balanced());
    }

    #[test]
    fn partition_moved_to_a_fresh_instance_rebuilds_the_same_state() {
        let (msgs, want) = stream(11, 2000);
        let half = msgs.len() / 2;
        // Instance A owns partition 5 for the first half.
        let a = tempfile::tempdir().unwrap();
        let mut sa = JoinStore::open(&config(a.path()), 5).unwrap();
        let joined_a = feed(&mut sa, &msgs[..half]);
        // The partition moves to instance B, whose disk has no store for it:
        // B replays both topics of the partition from the retention horizon
        // (here the start), then goes on with the live messages.
        let b = tempfile::tempdir().unwrap();
        let mut sb = JoinStore::open(&config(b.path()), 5).unwrap();
        let joined_replay = feed(&mut sb, &msgs[..half]);
        assert_eq!(joined_replay, joined_a);
        assert_eq!(sb.counts(), sa.counts());
        feed(&mut sb, &msgs[half..]);
        // A store file copied with the partition (shared volume) resumes
        // from its recorded offsets and ends in the same state.
        drop(sa);
        let moved = tempfile::tempdir().unwrap();
        std::fs::copy(
            JoinStore::path_for(&config(a.path()), 5),
            JoinStore::path_for(&config(moved.path()), 5),
        )
        .unwrap();
        let mut sc = JoinStore::open(&config(moved.path()), 5).unwrap();
        feed(&mut sc, &msgs);
        assert_eq!(sb.counts(), want);
        assert_eq!(sc.counts(), want);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Any mix of predictions, labels (repeated ids, any times), expiry
        /// and reopening keeps every prediction and label accounted for
        /// once, and never joins an id twice while the id is remembered
        /// (`settled_retention_secs`; an id reused after that is a new
        /// prediction).
        #[test]
        fn bookkeeping_balances_under_any_sequence(
            ops in proptest::collection::vec((0u8..4, 0u8..12, 0i64..3 * HOUR), 1..60)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let cfg = config(dir.path());
            let mut s = JoinStore::open(&cfg, 0).unwrap();
            let mut now = T0;
            let retention_ms = cfg.settled_retention_secs as i64 * 1000;
            // Id -> when it was joined, and how many joins in all.
            let mut joined_at = std::collections::HashMap::new();
            let mut joins = 0usize;
            for (kind, id, dt) in ops {
                now += dt / 10;
                let id = format!("x{id}");
                let input = match kind {
                    0 => Some(pred(&id, T0 + dt)),
                    1 => Some(label(&id, T0 + dt)),
                    _ => None,
                };
                match input {
                    Some(input) => {
                        for j in joined(&s.apply(&[input], now, &[]).unwrap()) {
                            if let Some(before) = joined_at.insert(j.prediction.event_id.clone(), now) {
                                proptest::prop_assert!(
                                    now - before > retention_ms,
                                    "{} joined twice within retention", j.prediction.event_id
                                );
                            }
                            joins += 1;
                        }
                    }
                    None if kind == 2 => {
                        s.expire(now).unwrap();
                    }
                    None => {
                        drop(s);
                        s = JoinStore::open(&cfg, 0).unwrap();
                    }
                }
                let c = s.counts();
                proptest::prop_assert!(c.balanced(), "{:?}", c);
                proptest::prop_assert_eq!(c.pending as u64, s.pending_len().unwrap());
                proptest::prop_assert_eq!(c.joined as usize, joins);
            }
        }
    }

    #[test]
    fn bad_config_names_the_key() {
        let mut cfg = JoinConfig::default();
        cfg.label_lag_secs = 0;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("accuracy.join.label_lag_secs")
        );
    }
}
