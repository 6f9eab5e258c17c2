//! The `redb` backend of the join: one redb file per partition. RAM is
//! bounded by the page cache (`cache_bytes`), everything else is on disk.
//! Each apply is one write transaction that also records the offsets it
//! consumed.

use std::path::{Path, PathBuf};

use prost::Message as _;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::rules::{self, OnLabel, OnPrediction};
use super::{
    IdState, JoinConfig, JoinCounts, JoinEvent, JoinInput, JournalEntry, JournalRecord, PendingPrediction, Settled,
    TruthLabel, Ttl, storage,
};
use mlwatch_analyzer_core::Error;

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

/// The on-disk join of one partition.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    ttl: Ttl,
    expire_batch: usize,
    journal_max: u64,
    counts: JoinCounts,
    /// When set, `apply` commits without fsync and [`JoinStore::sync`]
    /// makes everything durable (the service calls it before each
    /// checkpoint; see [`JoinStore::defer_durability`]).
    deferred: bool,
}

impl RedbStore {
    /// Opens (or creates) a store at an explicit path.
    pub fn open_path(config: &JoinConfig, path: &Path) -> Result<Self, Error> {
        let db = Database::builder()
            .set_cache_size(config.cache_bytes as usize)
            .create(path)
            .map_err(|e| storage(path, "cannot open", e))?;
        let mut store = Self {
            db,
            path: path.to_path_buf(),
            ttl: Ttl::of(config),
            expire_batch: config.expire_batch.max(1),
            journal_max: config.journal_max_entries,
            counts: JoinCounts::default(),
            deferred: false,
        };
        store.counts = store.read_counts()?;
        Ok(store)
    }

    /// See [`super::JoinStore::defer_durability`].
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
        self.ttl.lag_ms
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

    /// See [`super::JoinStore::apply_each`]: one write transaction.
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
        let entries = super::number(events, times, &mut counts);
        self.journal(&tx, &entries, &mut counts)?;
        self.finish(tx, counts, offsets)?;
        Ok(entries)
    }

    fn journal(&self, tx: &WriteTransaction, entries: &[JournalEntry], counts: &mut JoinCounts) -> Result<(), Error> {
        let mut table = tx
            .open_table(JOURNAL)
            .map_err(|e| self.err("cannot open table in", e))?;
        for e in entries {
            let record = JournalRecord::of(e);
            table
                .insert(e.seq, record.encode_to_vec().as_slice())
                .map_err(|e| self.err("cannot write", e))?;
        }
        let len = table.len().map_err(|e| self.err("cannot read", e))?;
        let excess = rules::journal_excess(len, self.journal_max, counts);
        if excess > 0 {
            let first = table
                .first()
                .map_err(|e| self.err("cannot read", e))?
                .map(|(k, _)| k.value())
                .unwrap_or(0);
            table
                .retain_in(first..first + excess, |_, _| false)
                .map_err(|e| self.err("cannot write", e))?;
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
            out.push(r.into_entry(k.value()));
        }
        Ok(out)
    }

    /// See [`super::JoinStore::trim_journal`]. Usually that is nearly all of the journal: the table is then dropped
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

    /// See [`super::JoinStore::expire`]: due entries oldest first, by
    /// (deadline, key).
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
                    rules::expire_pending(&mut counts);
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
                    rules::expire_waiting(&mut counts);
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
    ttl: Ttl,
}

impl<'a> Tx<'a> {
    fn new(tx: &'a WriteTransaction, store: &'a RedbStore) -> Result<Self, Error> {
        let e = |e: redb::TableError| store.err("cannot open table in", e);
        Ok(Self {
            pending: tx.open_table(PENDING).map_err(e)?,
            pending_ttl: tx.open_table(PENDING_TTL).map_err(e)?,
            waiting: tx.open_table(WAITING).map_err(e)?,
            waiting_ttl: tx.open_table(WAITING_TTL).map_err(e)?,
            settled: tx.open_table(SETTLED).map_err(e)?,
            settled_ttl: tx.open_table(SETTLED_TTL).map_err(e)?,
            path: &store.path,
            ttl: store.ttl,
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
        let deadline = self.ttl.settled(now_ms);
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

    fn state(&self, k: &[u8]) -> Result<IdState, Error> {
        let read = |e| storage(self.path, "cannot read", e);
        Ok(if let Some(s) = self.settled_state(k)? {
            IdState::Settled(s)
        } else if self.pending.get(k).map_err(read)?.is_some() {
            IdState::Pending
        } else if self.waiting.get(k).map_err(read)?.is_some() {
            IdState::Waiting
        } else {
            IdState::Unknown
        })
    }

    fn prediction(
        &mut self,
        p: &PendingPrediction,
        now_ms: i64,
        counts: &mut JoinCounts,
        events: &mut Vec<JoinEvent>,
    ) -> Result<(), Error> {
        let k = key(&p.model, &p.event_id);
        let step = rules::on_prediction(self.state(&k)?, counts);
        if step == OnPrediction::Duplicate {
            return Ok(());
        }
        events.push(JoinEvent::Predicted(p.clone()));
        if step == OnPrediction::PairWithWaiting {
            let bytes = self
                .waiting
                .remove(k.as_slice())
                .map_err(|e| storage(self.path, "cannot write", e))?
                .map(|v| v.value().to_vec())
                .unwrap_or_default();
            let (deadline, encoded) = bytes.split_at(8.min(bytes.len()));
            let deadline = i64::from_be_bytes(deadline.try_into().unwrap_or([0; 8]));
            self.waiting_ttl
                .remove(ttl_key(deadline, &k).as_slice())
                .map_err(|e| storage(self.path, "cannot write", e))?;
            let label = TruthLabel::decode(encoded).map_err(|e| storage(self.path, "corrupt label in", e))?;
            let (settled, joined) = rules::pair(p.clone(), label, now_ms, self.ttl.lag_ms, counts);
            events.extend(joined.map(JoinEvent::Joined));
            return self.settle(&k, settled, now_ms);
        }
        let deadline = self.ttl.pending(p);
        self.pending
            .insert(k.as_slice(), p.encode_to_vec().as_slice())
            .map_err(|e| storage(self.path, "cannot write", e))?;
        self.pending_ttl
            .insert(ttl_key(deadline, &k).as_slice(), ())
            .map_err(|e| storage(self.path, "cannot write", e))?;
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
        match rules::on_label(self.state(&k)?, counts) {
            OnLabel::Duplicate => Ok(()),
            OnLabel::Late => self.settle(&k, Settled::LateLabelled, now_ms),
            OnLabel::PairWithPending => {
                let bytes = self
                    .pending
                    .remove(k.as_slice())
                    .map_err(|e| storage(self.path, "cannot write", e))?
                    .map(|v| v.value().to_vec())
                    .unwrap_or_default();
                let prediction = PendingPrediction::decode(bytes.as_slice())
                    .map_err(|e| storage(self.path, "corrupt prediction in", e))?;
                self.pending_ttl
                    .remove(ttl_key(self.ttl.pending(&prediction), &k).as_slice())
                    .map_err(|e| storage(self.path, "cannot write", e))?;
                let (settled, joined) = rules::pair(prediction, l.clone(), now_ms, self.ttl.lag_ms, counts);
                events.extend(joined.map(JoinEvent::Joined));
                self.settle(&k, settled, now_ms)
            }
            OnLabel::Wait => {
                let deadline = self.ttl.waiting(now_ms);
                let mut value = deadline.to_be_bytes().to_vec();
                l.encode(&mut value)
                    .map_err(|e| storage(self.path, "cannot encode label for", e))?;
                self.waiting
                    .insert(k.as_slice(), value.as_slice())
                    .map_err(|e| storage(self.path, "cannot write", e))?;
                self.waiting_ttl
                    .insert(ttl_key(deadline, &k).as_slice(), ())
                    .map_err(|e| storage(self.path, "cannot write", e))?;
                Ok(())
            }
        }
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
