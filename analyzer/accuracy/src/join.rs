//! The label join: predictions wait for their label, labels that come
//! first wait for their prediction, and every id is remembered for a while
//! after it is settled so duplicates and late labels are recognised.
//!
//! One [`JoinStore`] holds one input partition (inferences and labels are
//! both keyed by model, so partition `p` of the two topics holds the same
//! models). Two backends keep it, chosen by `[accuracy.join] backend`:
//!
//! - [`redb_store`] (`redb`, the default): a redb file. RAM is bounded by
//!   the page cache (`cache_bytes`), everything else is on disk. About a
//!   dozen B-tree operations per event.
//! - [`log_store`] (`memory`): an in-memory index (a hash of the id to a
//!   16-byte slot) over an append-only log of state changes; payloads stay
//!   in the log. RAM grows with the ids tracked (~tens of bytes each), the
//!   cost per event is a hash lookup and an append.
//!
//! Both apply the same rules (`rules`): each backend only finds what it
//! knows of an id and stores what the rules decide, so they cannot drift
//! apart (a differential proptest feeds both the same inputs). Each
//! [`JoinStore::apply`] is atomic and records the offsets it consumed, so
//! after a crash the engine resumes exactly where the store stands, and
//! counters are never double-counted.
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
use serde::{Deserialize, Serialize};

use mlwatch_analyzer_core::Error;

pub mod log_store;
pub mod redb_store;

/// Which store keeps the join (`[accuracy.join] backend`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JoinBackend {
    /// A redb B-tree file per partition: RAM bounded by its page cache.
    #[default]
    Redb,
    /// An in-memory index over an append-only log per partition: faster,
    /// RAM grows with the number of ids tracked.
    Memory,
}

/// The `[accuracy.join]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JoinConfig {
    /// Which store keeps the join: `redb` (default: a B-tree file per
    /// partition, RAM bounded by `cache_bytes` whatever the label lag) or
    /// `memory` (an in-memory index over an append-only log per partition:
    /// ~15x cheaper per event, RAM grows with the ids tracked; see
    /// docs/decisions/0006-join-store-backends.md).
    pub backend: JoinBackend,
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
    /// Page cache of each store file, in bytes (bounds its RAM; `redb`
    /// backend only).
    pub cache_bytes: u64,
    /// Size at which the `memory` backend starts a new log segment, in
    /// bytes (1 MiB to 128 MiB). Whole segments are deleted once nothing
    /// live refers to them.
    pub segment_bytes: u64,
    /// Most expired entries removed per [`JoinStore::expire`] call.
    pub expire_batch: usize,
    /// Most journal entries kept when the engine does not trim them (the
    /// oldest go first and are counted as `journal_dropped`).
    pub journal_max_entries: u64,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            backend: JoinBackend::Redb,
            dir: PathBuf::from("data/accuracy"),
            label_lag_secs: 86_400,
            label_wait_secs: 86_400,
            settled_retention_secs: 86_400,
            cache_bytes: 64 << 20,
            segment_bytes: 64 << 20,
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
        if !(1 << 20..=128 << 20).contains(&self.segment_bytes) {
            return Err(Error::config(
                "accuracy.join.segment_bytes",
                format!("{} is outside 1 MiB..=128 MiB", self.segment_bytes),
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
pub(crate) struct JournalRecord {
    #[prost(int64, tag = "1")]
    pub now_ms: i64,
    #[prost(message, optional, tag = "2")]
    pub prediction: Option<PendingPrediction>,
    /// Present for a joined pair.
    #[prost(message, optional, tag = "3")]
    pub label: Option<TruthLabel>,
    #[prost(int64, tag = "4")]
    pub lag_ms: i64,
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
    pub(crate) const KEYS: [&'static str; 12] = [
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

    pub(crate) fn fields(&mut self) -> [&mut i64; 12] {
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
pub(crate) enum Settled {
    Joined = 1,
    /// The prediction expired unlabelled; no label seen yet.
    Expired = 2,
    /// The prediction expired and a late label came.
    LateLabelled = 3,
}

impl Settled {
    pub(crate) fn from_byte(b: u8) -> Self {
        match b {
            1 => Self::Joined,
            3 => Self::LateLabelled,
            _ => Self::Expired,
        }
    }
}

/// What a store knows of one id when an input for it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdState {
    Unknown,
    /// A prediction waits for its label.
    Pending,
    /// A label waits for its prediction.
    Waiting,
    Settled(Settled),
}

/// The join's rules, shared by both backends: what an input does given
/// what the store knows of its id, with the counts it moves. The backends
/// only look up the state and store the outcome.
pub(crate) mod rules {
    use super::{IdState, JoinCounts, Joined, PendingPrediction, Settled, TruthLabel};

    /// What a prediction does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum OnPrediction {
        /// Already pending or settled: counted, nothing stored.
        Duplicate,
        /// New: journal it and keep it pending until `p.timestamp_ms + lag`.
        Pend,
        /// New, and its label was waiting: journal it, then [`pair`] them.
        PairWithWaiting,
    }

    pub(crate) fn on_prediction(state: IdState, counts: &mut JoinCounts) -> OnPrediction {
        match state {
            IdState::Pending | IdState::Settled(_) => {
                counts.duplicate_predictions += 1;
                OnPrediction::Duplicate
            }
            IdState::Waiting => {
                counts.predictions += 1;
                counts.waiting_labels -= 1;
                OnPrediction::PairWithWaiting
            }
            IdState::Unknown => {
                counts.predictions += 1;
                counts.pending += 1;
                OnPrediction::Pend
            }
        }
    }

    /// What a label does.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum OnLabel {
        /// Already joined, late-labelled, or waiting: counted, nothing stored.
        Duplicate,
        /// Its prediction expired unlabelled: settle the id as
        /// [`Settled::LateLabelled`].
        Late,
        /// Its prediction is pending: take it and [`pair`] them.
        PairWithPending,
        /// Unknown id: keep the label waiting until `now + label_wait`.
        Wait,
    }

    pub(crate) fn on_label(state: IdState, counts: &mut JoinCounts) -> OnLabel {
        counts.labels += 1;
        match state {
            IdState::Settled(Settled::Joined | Settled::LateLabelled) | IdState::Waiting => {
                counts.duplicate_labels += 1;
                OnLabel::Duplicate
            }
            IdState::Settled(Settled::Expired) => {
                counts.late_labels += 1;
                OnLabel::Late
            }
            IdState::Pending => {
                counts.pending -= 1;
                OnLabel::PairWithPending
            }
            IdState::Unknown => {
                counts.waiting_labels += 1;
                OnLabel::Wait
            }
        }
    }

    /// Pairs a prediction with its label: joined within the lag (the pair,
    /// to be journalled, is returned), else late. Returns what the id
    /// settles as.
    pub(crate) fn pair(
        prediction: PendingPrediction,
        label: TruthLabel,
        now_ms: i64,
        max_lag_ms: i64,
        counts: &mut JoinCounts,
    ) -> (Settled, Option<Joined>) {
        let label_ms = if label.timestamp_ms > 0 {
            label.timestamp_ms
        } else {
            now_ms
        };
        let lag_ms = label_ms - prediction.timestamp_ms;
        if lag_ms > max_lag_ms {
            counts.late_labels += 1;
            counts.expired_predictions += 1;
            (Settled::LateLabelled, None)
        } else {
            counts.joined += 1;
            let joined = Joined {
                prediction,
                label,
                lag_ms,
            };
            (Settled::Joined, Some(joined))
        }
    }

    /// A pending prediction's lag ran out: it settles as [`Settled::Expired`].
    pub(crate) fn expire_pending(counts: &mut JoinCounts) {
        counts.pending -= 1;
        counts.expired_predictions += 1;
    }

    /// A waiting label's wait ran out: it is forgotten.
    pub(crate) fn expire_waiting(counts: &mut JoinCounts) {
        counts.waiting_labels -= 1;
        counts.expired_labels += 1;
    }

    /// How many of the oldest journal entries go when `len` exceed `max`
    /// (counted as dropped).
    pub(crate) fn journal_excess(len: u64, max: u64, counts: &mut JoinCounts) -> u64 {
        let excess = len.saturating_sub(max);
        counts.journal_dropped += excess as i64;
        excess
    }
}

/// The deadlines both backends give an id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ttl {
    pub lag_ms: i64,
    pub wait_ms: i64,
    pub retention_ms: i64,
}

impl Ttl {
    fn of(config: &JoinConfig) -> Self {
        Self {
            lag_ms: (config.label_lag_secs as i64).saturating_mul(1000),
            wait_ms: (config.label_wait_secs as i64).saturating_mul(1000),
            retention_ms: (config.settled_retention_secs as i64).saturating_mul(1000),
        }
    }

    /// A pending prediction expires at its own time plus the lag.
    pub fn pending(&self, p: &PendingPrediction) -> i64 {
        p.timestamp_ms.saturating_add(self.lag_ms)
    }

    pub fn waiting(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.wait_ms)
    }

    pub fn settled(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.retention_ms)
    }
}

fn storage(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::storage("join store", format!("{what} {}: {e}", path.display()))
}

/// The join of one partition, in the backend its config names.
pub enum JoinStore {
    Redb(redb_store::RedbStore),
    Memory(Box<log_store::LogStore>),
}

/// Calls the same method on whichever backend `$store` is.
macro_rules! each {
    ($store:expr, $s:ident => $call:expr) => {
        match $store {
            JoinStore::Redb($s) => $call,
            JoinStore::Memory($s) => $call,
        }
    };
}

impl JoinStore {
    /// The file (redb) or directory (memory) of partition `partition` under
    /// `config.dir`.
    pub fn path_for(config: &JoinConfig, partition: i32) -> PathBuf {
        match config.backend {
            JoinBackend::Redb => config.dir.join(format!("join-p{partition}.redb")),
            JoinBackend::Memory => config.dir.join(format!("join-p{partition}.log")),
        }
    }

    /// Opens (or creates) the store of one partition.
    pub fn open(config: &JoinConfig, partition: i32) -> Result<Self, Error> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(|e| storage(&config.dir, "cannot create", e))?;
        Self::open_path(config, &Self::path_for(config, partition))
    }

    /// Opens (or creates) a store at an explicit path.
    pub fn open_path(config: &JoinConfig, path: &Path) -> Result<Self, Error> {
        Ok(match config.backend {
            JoinBackend::Redb => Self::Redb(redb_store::RedbStore::open_path(config, path)?),
            JoinBackend::Memory => Self::Memory(Box::new(log_store::LogStore::open_path(config, path)?)),
        })
    }

    /// Commits of [`JoinStore::apply`] stop waiting for the disk; only
    /// [`JoinStore::sync`] does. A crash then loses the applies since the
    /// last sync, which is safe when the caller syncs before every
    /// checkpoint: the store is never behind a checkpoint, and the lost
    /// messages come again from the broker (the store records the offsets
    /// it applied and skips what it already has). One fsync per checkpoint
    /// instead of one per message.
    pub fn defer_durability(&mut self, deferred: bool) {
        each!(self, s => s.defer_durability(deferred))
    }

    /// Makes every earlier commit durable (one fsync).
    pub fn sync(&mut self) -> Result<(), Error> {
        each!(self, s => s.sync())
    }

    pub fn counts(&self) -> JoinCounts {
        each!(self, s => s.counts())
    }

    pub fn label_lag_ms(&self) -> i64 {
        each!(self, s => s.label_lag_ms())
    }

    /// The last offset of `topic` applied to this store, if any.
    pub fn applied_offset(&self, topic: &str) -> Result<Option<i64>, Error> {
        each!(self, s => s.applied_offset(topic))
    }

    /// Applies a batch atomically, together with the offsets it consumed
    /// (`(topic, offset)`, the last offset of each topic in the batch), and
    /// journals what it produced: each new prediction and each joined pair,
    /// in input order, numbered after the previous batch's.
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
        each!(self, s => s.apply_each(inputs, offsets))
    }

    /// Journal entries after `seq`, oldest first: what a tracker restored
    /// from a checkpoint taken at `seq` has not seen.
    pub fn journal_since(&self, seq: u64) -> Result<Vec<JournalEntry>, Error> {
        each!(self, s => s.journal_since(seq))
    }

    /// Forgets journal entries up to `seq` (a checkpoint now covers them).
    pub fn trim_journal(&mut self, seq: u64) -> Result<(), Error> {
        each!(self, s => s.trim_journal(seq))
    }

    /// Expires predictions whose lag ran out by `now_ms`, labels that waited
    /// too long, and settled ids past retention; at most `expire_batch` of
    /// each per call. Returns how many predictions expired unlabelled.
    pub fn expire(&mut self, now_ms: i64) -> Result<u64, Error> {
        each!(self, s => s.expire(now_ms))
    }

    /// Bytes of the store on disk (the file, or every log segment).
    pub fn file_bytes(&self) -> u64 {
        each!(self, s => s.file_bytes())
    }

    /// Predictions pending now, counted in the store's own structures
    /// (equals `counts().pending`).
    pub fn pending_len(&self) -> Result<u64, Error> {
        each!(self, s => s.pending_len())
    }
}

/// Numbers the events of one batch after `counts.journal_seq`.
pub(crate) fn number(events: Vec<JoinEvent>, times: Vec<i64>, counts: &mut JoinCounts) -> Vec<JournalEntry> {
    events
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
        .collect()
}

impl JournalRecord {
    pub(crate) fn of(e: &JournalEntry) -> Self {
        match &e.event {
            JoinEvent::Predicted(p) => Self {
                now_ms: e.now_ms,
                prediction: Some(p.clone()),
                label: None,
                lag_ms: 0,
            },
            JoinEvent::Joined(j) => Self {
                now_ms: e.now_ms,
                prediction: Some(j.prediction.clone()),
                label: Some(j.label.clone()),
                lag_ms: j.lag_ms,
            },
        }
    }

    pub(crate) fn into_entry(self, seq: u64) -> JournalEntry {
        let prediction = self.prediction.unwrap_or_default();
        let event = match self.label {
            Some(label) => JoinEvent::Joined(Joined {
                prediction,
                label,
                lag_ms: self.lag_ms,
            }),
            None => JoinEvent::Predicted(prediction),
        };
        JournalEntry {
            seq,
            now_ms: self.now_ms,
            event,
        }
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

    const BACKENDS: [JoinBackend; 2] = [JoinBackend::Redb, JoinBackend::Memory];

    fn config(dir: &Path, backend: JoinBackend) -> JoinConfig {
        JoinConfig {
            backend,
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
        for backend in BACKENDS {
            out_of_order_duplicate_late_and_restart_count_exactly_on(backend);
        }
    }

    fn out_of_order_duplicate_late_and_restart_count_exactly_on(backend: JoinBackend) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), backend);
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
        for backend in BACKENDS {
            trimming_keeps_exactly_the_newer_entries_whether_few_or_many_on(backend);
        }
    }

    fn trimming_keeps_exactly_the_newer_entries_whether_few_or_many_on(backend: JoinBackend) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = JoinStore::open(&config(dir.path(), backend), 0).unwrap();
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
        let s = JoinStore::open(&config(dir.path(), backend), 0).unwrap();
        assert!(seqs(&s).is_empty());
        assert_eq!(s.counts().journal_seq, 101);
    }

    #[test]
    fn seven_day_lag_joins_and_expires_on_time() {
        for backend in BACKENDS {
            seven_day_lag_joins_and_expires_on_time_on(backend);
        }
    }

    fn seven_day_lag_joins_and_expires_on_time_on(backend: JoinBackend) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), backend);
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
        for backend in BACKENDS {
            shuffled_stream_with_restarts_and_redelivery_joins_exactly_on(backend);
        }
    }

    fn shuffled_stream_with_restarts_and_redelivery_joins_exactly_on(backend: JoinBackend) {
        let (msgs, want) = stream(7, 3000);
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), backend);
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
        for backend in BACKENDS {
            partition_moved_to_a_fresh_instance_rebuilds_the_same_state_on(backend);
        }
    }

    fn partition_moved_to_a_fresh_instance_rebuilds_the_same_state_on(backend: JoinBackend) {
        let (msgs, want) = stream(11, 2000);
        let half = msgs.len() / 2;
        // Instance A owns partition 5 for the first half.
        let a = tempfile::tempdir().unwrap();
        let mut sa = JoinStore::open(&config(a.path(), backend), 5).unwrap();
        let joined_a = feed(&mut sa, &msgs[..half]);
        // The partition moves to instance B, whose disk has no store for it:
        // B replays both topics of the partition from the retention horizon
        // (here the start), then goes on with the live messages.
        let b = tempfile::tempdir().unwrap();
        let mut sb = JoinStore::open(&config(b.path(), backend), 5).unwrap();
        let joined_replay = feed(&mut sb, &msgs[..half]);
        assert_eq!(joined_replay, joined_a);
        assert_eq!(sb.counts(), sa.counts());
        feed(&mut sb, &msgs[half..]);
        // A store file copied with the partition (shared volume) resumes
        // from its recorded offsets and ends in the same state.
        drop(sa);
        let moved = tempfile::tempdir().unwrap();
        copy_store(
            &JoinStore::path_for(&config(a.path(), backend), 5),
            &JoinStore::path_for(&config(moved.path(), backend), 5),
        );
        let mut sc = JoinStore::open(&config(moved.path(), backend), 5).unwrap();
        feed(&mut sc, &msgs);
        assert_eq!(sb.counts(), want);
        assert_eq!(sc.counts(), want);
    }

    /// Copies a store file (redb) or directory (memory).
    fn copy_store(from: &Path, to: &Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        } else {
            std::fs::copy(from, to).unwrap();
        }
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
            for backend in BACKENDS {
                let dir = tempfile::tempdir().unwrap();
                let cfg = config(dir.path(), backend);
                let mut s = JoinStore::open(&cfg, 0).unwrap();
                let mut now = T0;
                let retention_ms = cfg.settled_retention_secs as i64 * 1000;
                // Id -> when it was joined, and how many joins in all.
                let mut joined_at = std::collections::HashMap::new();
                let mut joins = 0usize;
                for &(kind, id, dt) in &ops {
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
    }

    /// One step of a differential run.
    #[derive(Debug, Clone)]
    enum Op {
        /// Inputs applied in one batch, each at its own clock step.
        Batch(Vec<(bool, u8, i64, bool)>),
        Expire,
        Reopen,
        /// Trims the journal up to this fraction (of 4) of its newest seq.
        Trim(u8),
        Sync,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            6 => proptest::collection::vec((any::<bool>(), 0u8..16, 0i64..3 * HOUR, proptest::bool::weighted(0.1)), 1..6)
                .prop_map(Op::Batch),
            1 => Just(Op::Expire),
            1 => Just(Op::Reopen),
            1 => (0u8..5).prop_map(Op::Trim),
            1 => Just(Op::Sync),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Both backends fed the same predictions, labels (duplicates,
        /// labels with no time), expiries, trims and reopens produce the
        /// same journal entries, journal and counts at every step.
        #[test]
        fn backends_agree_on_any_sequence(ops in proptest::collection::vec(op(), 1..40)) {
            let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
            let cfgs: Vec<JoinConfig> = BACKENDS
                .iter()
                .zip(&dirs)
                .map(|(b, d)| JoinConfig { journal_max_entries: 12, ..config(d.path(), *b) })
                .collect();
            let mut stores: Vec<Option<JoinStore>> = cfgs.iter().map(|c| Some(JoinStore::open(c, 0).unwrap())).collect();
            if let Some(s) = &mut stores[1] {
                s.defer_durability(true);
            }
            let mut now = T0;
            let mut offset = 0;
            for op in &ops {
                let mut outputs = Vec::new();
                for (slot, cfg) in stores.iter_mut().zip(&cfgs) {
                    if let Op::Reopen = op {
                        // (redb locks its file: the old handle goes first.)
                        *slot = None;
                        *slot = Some(JoinStore::open(cfg, 0).unwrap());
                    }
                    let s = slot.as_mut().unwrap();
                    let out = match op {
                        Op::Batch(inputs) => {
                            let mut clock = now;
                            let inputs: Vec<(JoinInput, i64)> = inputs
                                .iter()
                                .map(|&(is_pred, id, dt, untimed)| {
                                    clock += dt / 20;
                                    let id = format!("x{id}");
                                    let input = if is_pred {
                                        pred(&id, T0 + dt)
                                    } else if untimed {
                                        label(&id, 0)
                                    } else {
                                        label(&id, T0 + dt)
                                    };
                                    (input, clock)
                                })
                                .collect();
                            let entries = s
                                .apply_each(inputs.iter().map(|(i, t)| (i, *t)), &[("inference", offset)])
                                .unwrap();
                            format!("{entries:?}")
                        }
                        Op::Expire => format!("{}", s.expire(now).unwrap()),
                        Op::Reopen => String::new(),
                        Op::Trim(q) => {
                            s.trim_journal(s.counts().journal_seq as u64 * u64::from(*q) / 4).unwrap();
                            String::new()
                        }
                        Op::Sync => {
                            s.sync().unwrap();
                            String::new()
                        }
                    };
                    outputs.push((
                        out,
                        s.counts(),
                        s.journal_since(0).unwrap(),
                        s.applied_offset("inference").unwrap(),
                        s.pending_len().unwrap(),
                    ));
                }
                if let Op::Batch(inputs) = op {
                    now += inputs.iter().map(|i| i.2 / 20).sum::<i64>();
                    offset += 1;
                }
                proptest::prop_assert!(outputs[0].1.balanced(), "{:?}", outputs[0].1);
                proptest::prop_assert_eq!(&outputs[0], &outputs[1], "after {:?}", op);
            }
        }
    }

    /// The memory backend's log cut at random byte positions (a crash
    /// mid-write), some with a flipped byte before the cut: reopening gives
    /// the state after some prefix of the batches (the newest whose commit
    /// reached the disk when only cut), never a panic or a wrong count.
    #[test]
    fn cut_or_corrupted_log_reopens_at_a_committed_batch() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JoinConfig {
            segment_bytes: 1 << 20,
            ..config(dir.path(), JoinBackend::Memory)
        };
        let mut s = JoinStore::open(&cfg, 0).unwrap();
        s.defer_durability(true);
        let log = |s: &JoinStore| match s {
            JoinStore::Memory(m) => (m.fingerprint(), m.end_position()),
            JoinStore::Redb(_) => unreachable!(),
        };
        let mut rng = StdRng::seed_from_u64(3);
        let big = "t".repeat(12_000);
        let mut snapshots = vec![log(&s)];
        let mut now = T0;
        for batch in 0..60 {
            let mut inputs = Vec::new();
            for k in 0..12 {
                let id = format!("e{}", rng.random_range(0..400));
                let mut input = if rng.random_bool(0.6) {
                    pred(&id, now - rng.random_range(0..HOUR))
                } else {
                    label(&id, now)
                };
                if let JoinInput::Prediction(p) = &mut input
                    && k % 3 == 0
                {
                    p.tags.insert("blob".into(), big.clone());
                }
                inputs.push(input);
            }
            now += 2 * 60_000;
            s.apply(&inputs, now, &[("inference", batch)]).unwrap();
            s.sync().unwrap();
            snapshots.push(log(&s));
            if batch % 7 == 6 {
                s.expire(now).unwrap();
                s.sync().unwrap();
                snapshots.push(log(&s));
            }
        }
        let JoinStore::Memory(m) = &s else { unreachable!() };
        let segments = m.segment_paths();
        assert!(segments.len() >= 2, "the test needs several segments");
        drop(s);
        let sizes: Vec<u64> = segments.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect();
        let total: u64 = sizes.iter().sum();
        for case in 0..80 {
            let copy = tempfile::tempdir().unwrap();
            let store_dir = JoinStore::path_for(&config(copy.path(), JoinBackend::Memory), 0);
            copy_store(&JoinStore::path_for(&cfg, 0), &store_dir);
            // A global cut position → (segment, offset).
            let mut cut = rng.random_range(0..=total);
            let mut seg = 0;
            while seg + 1 < sizes.len() && cut > sizes[seg] {
                cut -= sizes[seg];
                seg += 1;
            }
            let path = store_dir.join(segments[seg].file_name().unwrap());
            for later in &segments[seg + 1..] {
                std::fs::remove_file(store_dir.join(later.file_name().unwrap())).unwrap();
            }
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(cut).unwrap();
            let flipped = case % 2 == 1 && cut > 0;
            if flipped {
                let at = cut - 1 - rng.random_range(0..cut.min(64));
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[at as usize] ^= 1 << rng.random_range(0..8);
                std::fs::write(&path, bytes).unwrap();
            }
            let seg_no = segments[seg]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("seg-")
                .trim_end_matches(".log")
                .parse::<u64>()
                .unwrap();
            let mut reopened = JoinStore::open(&config(copy.path(), JoinBackend::Memory), 0).unwrap();
            let (state, _) = log(&reopened);
            let at = snapshots
                .iter()
                .position(|(f, _)| *f == state)
                .unwrap_or_else(|| panic!("case {case}: state after no prefix: {:?}", state.0));
            // Not older than the newest batch whose commit was before the cut
            // (a cut inside a segment's opening copy of a commit keeps it).
            let newest = snapshots
                .iter()
                .rposition(|(_, end)| *end <= (seg_no, cut))
                .unwrap_or(0);
            if flipped {
                assert!(at <= newest + 1, "case {case}: {at} > {newest} + 1");
            } else {
                assert!(at == newest || at == newest + 1, "case {case}: {at} vs {newest}");
            }
            assert!(reopened.counts().balanced());
            assert_eq!(reopened.pending_len().unwrap(), reopened.counts().pending as u64);
            // The journal reads back whole, and the store goes on.
            reopened.journal_since(0).unwrap();
            reopened.apply(&[pred("after", now)], now, &[]).unwrap();
        }
    }

    /// A steady stream through the memory backend, with expiry, journal
    /// trims and syncs as the engine does them: old segments are deleted,
    /// so the log stays at about the retention horizon's worth of traffic;
    /// reopening after the deletions rebuilds the same state.
    #[test]
    fn steady_stream_keeps_the_log_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = JoinConfig {
            label_lag_secs: 60,
            label_wait_secs: 60,
            settled_retention_secs: 120,
            segment_bytes: 1 << 20,
            ..config(dir.path(), JoinBackend::Memory)
        };
        let mut s = JoinStore::open(&cfg, 0).unwrap();
        s.defer_durability(true);
        let tag = "v".repeat(300);
        let mut most_segments = 0;
        for step in 0..1000i64 {
            let now = T0 + step * 1000;
            let mut inputs = Vec::new();
            for k in 0..50 {
                let mut p = pred(&format!("s{step}-{k}"), now);
                if let JoinInput::Prediction(p) = &mut p {
                    p.tags.insert("t".into(), tag.clone());
                }
                inputs.push(p);
                // Labels 30 s later for 90 % of the predictions.
                if step >= 30 && k % 10 != 0 {
                    inputs.push(label(&format!("s{}-{k}", step - 30), now));
                }
            }
            s.apply(&inputs, now, &[("inference", step)]).unwrap();
            s.expire(now).unwrap();
            if step % 10 == 9 {
                s.sync().unwrap();
                s.trim_journal(s.counts().journal_seq as u64).unwrap();
            }
            let JoinStore::Memory(m) = &s else { unreachable!() };
            if step > 200 {
                most_segments = most_segments.max(m.segment_count());
            }
        }
        let c = s.counts();
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.joined, 970 * 45);
        // ~36 MiB were written; the live horizon (lag + retention ≈ 3 min
        // of 17) needs a few 1 MiB segments.
        assert!(most_segments <= 8, "{most_segments} segments live");
        assert!(s.file_bytes() < 9 << 20, "{} bytes on disk", s.file_bytes());
        let before = match &s {
            JoinStore::Memory(m) => m.fingerprint(),
            JoinStore::Redb(_) => unreachable!(),
        };
        s.sync().unwrap();
        drop(s);
        let s = JoinStore::open(&cfg, 0).unwrap();
        let JoinStore::Memory(m) = &s else { unreachable!() };
        assert_eq!(m.fingerprint(), before);
    }

    /// A batch that fails half-way (a record too large for the log) leaves
    /// the memory backend as it was before the batch: the next call reloads
    /// the committed state, and the batch's first, already-written input is
    /// not counted.
    #[test]
    fn failed_batch_leaves_the_memory_backend_at_its_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), JoinBackend::Memory);
        let mut s = JoinStore::open(&cfg, 0).unwrap();
        s.defer_durability(true);
        s.apply(&[pred("a", T0)], T0, &[("inference", 1)]).unwrap();
        let before = s.counts();
        let mut huge = pred("huge", T0);
        if let JoinInput::Prediction(p) = &mut huge {
            p.tags.insert("blob".into(), "x".repeat(65 << 20));
        }
        let err = s.apply(&[pred("b", T0), huge], T0, &[("inference", 3)]).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        let j = s
            .apply(&[label("a", T0 + 1), pred("c", T0)], T0, &[("inference", 4)])
            .unwrap();
        assert_eq!(ids(&j), ["a"]);
        let c = s.counts();
        assert_eq!(c.predictions, before.predictions + 1, "{c:?}"); // c, not b
        assert_eq!(c.journal_seq, before.journal_seq + 2);
        assert_eq!(s.applied_offset("inference").unwrap(), Some(4));
        assert!(c.balanced());
        drop(s);
        let s = JoinStore::open(&cfg, 0).unwrap();
        assert_eq!(s.counts(), c);
        assert_eq!(s.journal_since(0).unwrap().len(), 3);
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
