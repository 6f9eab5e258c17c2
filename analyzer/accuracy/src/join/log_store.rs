//! The `memory` backend of the join: an in-memory index over an
//! append-only log of state changes (docs/decisions/0006-join-store-backends.md).
//!
//! - **Index**: a hash map from the 128-bit xxh3 hash (seeded per store) of
//!   `model NUL event id` to a 16-byte `Slot`: the id's state (pending,
//!   waiting, settled and how), its deadline, and where its record sits in
//!   the log. Payloads (the prediction, the waiting label) stay in the log,
//!   in a plain length-prefixed layout (`payload`).
//! - **Expiry**: one coarse time wheel per state (1 s buckets in a B-tree)
//!   with lazy deletion: an entry whose id moved on is dropped when its
//!   bucket comes due.
//! - **Log**: numbered segment files `seg-NNNNNNNNNN.log` in the partition's
//!   directory, each a 16-byte header (magic, hash seed) then records framed
//!   as `len u32 | xxh3-64(body) as u32 | body`. Records are state changes;
//!   each apply ends with a commit record (counts, journal start, applied
//!   offsets). Reopening replays the segments up to the last commit and
//!   truncates there: the state is exactly that after the last committed
//!   batch that reached the disk.
//! - **Disk**: a segment pins itself while the index or the journal refers
//!   to a record in it; the oldest segments go once unpinned (only a prefix
//!   goes, so a later record that supersedes an earlier one always outlives
//!   it), after an fsync, so a crash never resurrects superseded state.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher as _, BuildHasherDefault, Hasher};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use twox_hash::{XxHash3_64, XxHash3_128};

use super::rules::{self, OnLabel, OnPrediction};
use super::{
    IdState, JoinConfig, JoinCounts, JoinEvent, JoinInput, JournalEntry, PendingPrediction, Settled, TruthLabel, Ttl,
    storage,
};
use mlwatch_analyzer_core::Error;

const MAGIC: &[u8; 8] = b"MLWJOIN1";
/// Magic then the store's hash seed.
const HEADER: u64 = 16;
/// `len u32 | check u32` before each body.
const FRAME: u64 = 8;
/// A location is `segment << OFFSET_BITS | offset`.
const OFFSET_BITS: u32 = 28;
const MAX_OFFSET: u64 = 1 << OFFSET_BITS;
const MAX_SEGMENT: u64 = (1 << 32) - 1;
/// Largest record body accepted (the broker's messages are far smaller).
const MAX_BODY: usize = 64 << 20;
/// The active segment's newest bytes kept in RAM to read recent records
/// back without a system call (labels usually follow their prediction
/// closely).
const RECENT_BYTES: u64 = 4 << 20;
/// Buffered bytes written to the file at once.
const FLUSH_BYTES: u64 = 1 << 20;
/// Width of a time-wheel bucket.
const BUCKET_MS: i64 = 1000;
/// Sealed segment files kept open for reading.
const OPEN_READERS: usize = 16;

const PREDICTED: u8 = 1;
const WAITING: u8 = 2;
const JOINED: u8 = 3;
const SETTLED: u8 = 4;
const FORGET: u8 = 5;
const COMMIT: u8 = 6;

/// Slot kinds (the top 4 bits of [`Slot::tagged`]); settled ids are
/// `KIND_SETTLED + Settled as u64`.
const KIND_PENDING: u64 = 1;
const KIND_WAITING: u64 = 2;
const KIND_SETTLED: u64 = 4;
const LOC_MASK: u64 = (1 << 60) - 1;

/// What the index holds per id: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    deadline: i64,
    /// Kind (4 bits) then the location of the record that set it.
    tagged: u64,
}

impl Slot {
    fn new(kind: u64, deadline: i64, loc: u64) -> Self {
        Self {
            deadline,
            tagged: kind << 60 | loc,
        }
    }

    fn kind(self) -> u64 {
        self.tagged >> 60
    }

    fn loc(self) -> u64 {
        self.tagged & LOC_MASK
    }

    fn settled(self) -> bool {
        self.kind() >= KIND_SETTLED
    }

    fn state(self) -> IdState {
        match self.kind() {
            KIND_PENDING => IdState::Pending,
            KIND_WAITING => IdState::Waiting,
            k => IdState::Settled(Settled::from_byte((k - KIND_SETTLED) as u8)),
        }
    }
}

/// The keys are already uniform hashes: the map uses their low bits.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Index = HashMap<u128, Slot, BuildHasherDefault<KeyHasher>>;

/// Deadlines of one state, bucketed by second; entries are checked against
/// the index when their bucket comes due (lazy deletion).
#[derive(Default)]
struct Wheel {
    buckets: BTreeMap<i64, Vec<u128>>,
}

/// What a due wheel entry is worth.
enum Check {
    Due,
    /// Still this state, due later within this bucket.
    Later,
    /// The id moved on (another entry, or none, stands for it).
    Stale,
}

impl Wheel {
    fn push(&mut self, deadline: i64, key: u128) {
        let bucket = deadline.div_euclid(BUCKET_MS);
        match self.buckets.last_entry() {
            Some(mut last) if *last.key() == bucket => last.get_mut().push(key),
            _ => self.buckets.entry(bucket).or_default().push(key),
        }
    }

    /// Up to `max` keys due by `now_ms`, bucket by bucket, oldest first.
    fn take_due(&mut self, now_ms: i64, max: usize, check: impl Fn(u128, i64) -> Check) -> Vec<u128> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(mut entry) = self.buckets.first_entry() else {
                break;
            };
            let bucket = *entry.key();
            if bucket.saturating_mul(BUCKET_MS) > now_ms {
                break;
            }
            let mut keep = Vec::new();
            for key in std::mem::take(entry.get_mut()) {
                if out.len() >= max {
                    keep.push(key);
                    continue;
                }
                match check(key, bucket) {
                    Check::Due => out.push(key),
                    Check::Later => keep.push(key),
                    Check::Stale => {}
                }
            }
            if keep.is_empty() {
                entry.remove();
            } else {
                *entry.get_mut() = keep;
                break;
            }
        }
        out
    }

    fn entries(&self) -> usize {
        self.buckets.values().map(Vec::capacity).sum()
    }
}

/// Counters, journal start and applied offsets as of a commit.
#[derive(Debug, Clone, PartialEq)]
struct Meta {
    counts: JoinCounts,
    /// Sequence number of the oldest journal entry kept.
    journal_start: u64,
    offsets: BTreeMap<String, i64>,
}

/// One state change, as logged (payloads are written beside it and not
/// kept in RAM).
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// A new prediction (journal entry `seq`), pending until `pending`
    /// unless its label was waiting. Payload: the prediction.
    Predicted {
        key: u128,
        pending: Option<i64>,
        seq: u64,
        now_ms: i64,
    },
    /// A label waiting for its prediction. Payload: the label.
    Waiting {
        key: u128,
        deadline: i64,
    },
    /// A joined pair (journal entry `seq`), settled until `deadline`.
    /// Payloads: the prediction, the label.
    Joined {
        key: u128,
        deadline: i64,
        seq: u64,
        now_ms: i64,
        lag_ms: i64,
    },
    Settled {
        key: u128,
        state: Settled,
        deadline: i64,
    },
    /// The id is gone (waited or was remembered long enough).
    Forget {
        key: u128,
    },
    /// The end of an atomic batch.
    Commit(Box<Meta>),
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends the body of `change` (and its payloads) to `out`.
fn encode(change: &Change, payloads: &[&[u8]], out: &mut Vec<u8>) {
    match change {
        Change::Predicted {
            key,
            pending,
            seq,
            now_ms,
        } => {
            out.push(PREDICTED);
            out.extend_from_slice(&key.to_le_bytes());
            out.push(u8::from(pending.is_some()));
            put_i64(out, pending.unwrap_or(0));
            put_u64(out, *seq);
            put_i64(out, *now_ms);
        }
        Change::Waiting { key, deadline } => {
            out.push(WAITING);
            out.extend_from_slice(&key.to_le_bytes());
            put_i64(out, *deadline);
        }
        Change::Joined {
            key,
            deadline,
            seq,
            now_ms,
            lag_ms,
        } => {
            out.push(JOINED);
            out.extend_from_slice(&key.to_le_bytes());
            put_i64(out, *deadline);
            put_u64(out, *seq);
            put_i64(out, *now_ms);
            put_i64(out, *lag_ms);
            let first = payloads.first().map_or(0, |p| p.len());
            out.extend_from_slice(&(first as u32).to_le_bytes());
        }
        Change::Settled { key, state, deadline } => {
            out.push(SETTLED);
            out.extend_from_slice(&key.to_le_bytes());
            out.push(*state as u8);
            put_i64(out, *deadline);
        }
        Change::Forget { key } => {
            out.push(FORGET);
            out.extend_from_slice(&key.to_le_bytes());
        }
        Change::Commit(meta) => {
            out.push(COMMIT);
            let mut counts = meta.counts;
            for field in counts.fields() {
                put_i64(out, *field);
            }
            put_u64(out, meta.journal_start);
            out.extend_from_slice(&(meta.offsets.len() as u32).to_le_bytes());
            for (topic, offset) in &meta.offsets {
                out.extend_from_slice(&(topic.len() as u32).to_le_bytes());
                out.extend_from_slice(topic.as_bytes());
                put_i64(out, *offset);
            }
        }
    }
    for p in payloads {
        out.extend_from_slice(p);
    }
}

/// Reads a body front to back; `None` when it is too short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }

    fn u128(&mut self) -> Option<u128> {
        self.take(16)?.try_into().ok().map(u128::from_le_bytes)
    }
}

/// Payloads: a prediction or a label in a plain length-prefixed layout
/// (about 4x cheaper to decode than protobuf, which matters on every pair).
mod payload {
    use super::{PendingPrediction, Reader, TruthLabel};

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn put_f64(out: &mut Vec<u8>, v: f64) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn str(r: &mut Reader<'_>) -> Option<String> {
        let len = r.u32()? as usize;
        std::str::from_utf8(r.take(len)?).ok().map(str::to_string)
    }

    fn f64(r: &mut Reader<'_>) -> Option<f64> {
        r.u64().map(f64::from_bits)
    }

    pub(super) fn put_prediction(p: &PendingPrediction, out: &mut Vec<u8>) {
        put_str(out, &p.event_id);
        put_str(out, &p.model);
        put_str(out, &p.model_version);
        out.extend_from_slice(&p.timestamp_ms.to_le_bytes());
        let flags = u8::from(p.score.is_some()) | u8::from(p.label.is_some()) << 1 | u8::from(p.value.is_some()) << 2;
        out.push(flags);
        if let Some(v) = p.score {
            put_f64(out, v);
        }
        if let Some(l) = &p.label {
            put_str(out, l);
        }
        if let Some(v) = p.value {
            put_f64(out, v);
        }
        out.extend_from_slice(&(p.scores.len() as u32).to_le_bytes());
        for (k, v) in &p.scores {
            put_str(out, k);
            put_f64(out, *v);
        }
        out.extend_from_slice(&(p.tags.len() as u32).to_le_bytes());
        for (k, v) in &p.tags {
            put_str(out, k);
            put_str(out, v);
        }
    }

    pub(super) fn prediction(bytes: &[u8]) -> Option<PendingPrediction> {
        let mut r = Reader(bytes);
        let mut p = PendingPrediction {
            event_id: str(&mut r)?,
            model: str(&mut r)?,
            model_version: str(&mut r)?,
            timestamp_ms: r.i64()?,
            ..Default::default()
        };
        let flags = r.u8()?;
        if flags & 1 != 0 {
            p.score = Some(f64(&mut r)?);
        }
        if flags & 2 != 0 {
            p.label = Some(str(&mut r)?);
        }
        if flags & 4 != 0 {
            p.value = Some(f64(&mut r)?);
        }
        let n = r.u32()?;
        for _ in 0..n {
            let k = str(&mut r)?;
            p.scores.insert(k, f64(&mut r)?);
        }
        let n = r.u32()?;
        for _ in 0..n {
            let k = str(&mut r)?;
            p.tags.insert(k, str(&mut r)?);
        }
        r.0.is_empty().then_some(p)
    }

    pub(super) fn put_label(l: &TruthLabel, out: &mut Vec<u8>) {
        put_str(out, &l.event_id);
        put_str(out, &l.model);
        out.extend_from_slice(&l.timestamp_ms.to_le_bytes());
        out.push(u8::from(l.label.is_some()) | u8::from(l.value.is_some()) << 1);
        if let Some(s) = &l.label {
            put_str(out, s);
        }
        if let Some(v) = l.value {
            put_f64(out, v);
        }
    }

    pub(super) fn label(bytes: &[u8]) -> Option<TruthLabel> {
        let mut r = Reader(bytes);
        let mut l = TruthLabel {
            event_id: str(&mut r)?,
            model: str(&mut r)?,
            timestamp_ms: r.i64()?,
            ..Default::default()
        };
        let flags = r.u8()?;
        if flags & 1 != 0 {
            l.label = Some(str(&mut r)?);
        }
        if flags & 2 != 0 {
            l.value = Some(f64(&mut r)?);
        }
        r.0.is_empty().then_some(l)
    }
}

/// A record body: its change and its payloads (`Joined`: prediction then
/// label; `Predicted`, `Waiting`: one).
fn decode(body: &[u8]) -> Option<(Change, &[u8], &[u8])> {
    let mut r = Reader(body);
    let change = match r.u8()? {
        PREDICTED => {
            let key = r.u128()?;
            let is_pending = r.u8()? == 1;
            let deadline = r.i64()?;
            Change::Predicted {
                key,
                pending: is_pending.then_some(deadline),
                seq: r.u64()?,
                now_ms: r.i64()?,
            }
        }
        WAITING => Change::Waiting {
            key: r.u128()?,
            deadline: r.i64()?,
        },
        JOINED => {
            let change = Change::Joined {
                key: r.u128()?,
                deadline: r.i64()?,
                seq: r.u64()?,
                now_ms: r.i64()?,
                lag_ms: r.i64()?,
            };
            let first = r.u32()? as usize;
            let prediction = r.take(first)?;
            return Some((change, prediction, r.0));
        }
        SETTLED => {
            let key = r.u128()?;
            let state = match r.u8()? {
                1 => Settled::Joined,
                2 => Settled::Expired,
                3 => Settled::LateLabelled,
                _ => return None,
            };
            Change::Settled {
                key,
                state,
                deadline: r.i64()?,
            }
        }
        FORGET => Change::Forget { key: r.u128()? },
        COMMIT => {
            let mut counts = JoinCounts::default();
            for field in counts.fields() {
                *field = r.i64()?;
            }
            let journal_start = r.u64()?;
            let n = r.u32()?;
            let mut offsets = BTreeMap::new();
            for _ in 0..n {
                let len = r.u32()? as usize;
                let topic = std::str::from_utf8(r.take(len)?).ok()?.to_string();
                offsets.insert(topic, r.i64()?);
            }
            if !r.0.is_empty() {
                return None;
            }
            Change::Commit(Box::new(Meta {
                counts,
                journal_start,
                offsets,
            }))
        }
        _ => return None,
    };
    Some((change, r.0, &[]))
}

fn checksum(body: &[u8]) -> u32 {
    XxHash3_64::oneshot(body) as u32
}

fn segment_name(no: u64) -> String {
    format!("seg-{no:010}.log")
}

/// One log file.
struct Segment {
    no: u64,
    /// Index slots and journal entries referring to records in it.
    live: u64,
}

/// The join of one partition in RAM, its changes in a log on disk.
pub struct LogStore {
    dir: PathBuf,
    ttl: Ttl,
    expire_batch: usize,
    journal_max: u64,
    segment_bytes: u64,
    seed: u64,
    meta: Meta,
    deferred: bool,
    index: Index,
    /// Pending, waiting, settled.
    wheels: [Wheel; 3],
    /// Locations of the journal entries kept, from `journal_first` on.
    journal: VecDeque<u64>,
    journal_first: u64,
    /// Oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    active: File,
    /// The active segment's newest bytes, from offset `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    /// Bytes of the active segment written to its file.
    flushed: u64,
    /// Sealed segments not fsynced yet.
    unsynced: Vec<File>,
    dir_dirty: bool,
    /// A call failed half-way: the next call reloads the committed state.
    broken: bool,
    readers: RefCell<HashMap<u64, File>>,
    /// Reused buffers: a record body, two payloads.
    body: Vec<u8>,
    first: Vec<u8>,
    second: Vec<u8>,
    key_buf: Vec<u8>,
    config: JoinConfig,
}

impl LogStore {
    /// Opens (or creates) the store in directory `path`, replaying its log.
    pub fn open_path(config: &JoinConfig, path: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(path).map_err(|e| storage(path, "cannot create", e))?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| storage(path, "cannot list", e))? {
            let entry = entry.map_err(|e| storage(path, "cannot list", e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(no) = name
                .strip_prefix("seg-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(no);
            }
        }
        numbers.sort_unstable();
        let mut store = Self::blank(config, path)?;
        store.replay(&numbers)?;
        Ok(store)
    }

    /// An empty store whose active file is a placeholder until replay or
    /// creation sets it.
    fn blank(config: &JoinConfig, path: &Path) -> Result<Self, Error> {
        let placeholder = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| storage(path, "cannot open", e))?;
        Ok(Self {
            dir: path.to_path_buf(),
            ttl: Ttl::of(config),
            expire_batch: config.expire_batch.max(1),
            journal_max: config.journal_max_entries,
            segment_bytes: config.segment_bytes.clamp(1 << 20, MAX_OFFSET / 2),
            seed: 0,
            meta: Meta {
                counts: JoinCounts::default(),
                journal_start: 1,
                offsets: BTreeMap::new(),
            },
            deferred: false,
            index: Index::default(),
            wheels: Default::default(),
            journal: VecDeque::new(),
            journal_first: 1,
            segments: VecDeque::new(),
            active: placeholder,
            buf: Vec::new(),
            buf_start: 0,
            flushed: 0,
            unsynced: Vec::new(),
            dir_dirty: false,
            broken: false,
            readers: RefCell::new(HashMap::new()),
            body: Vec::new(),
            first: Vec::new(),
            second: Vec::new(),
            key_buf: Vec::new(),
            config: config.clone(),
        })
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> Error {
        storage(&self.dir, what, e)
    }

    fn segment_path(&self, no: u64) -> PathBuf {
        self.dir.join(segment_name(no))
    }

    /// Replays segments `numbers` (ascending) up to the last commit, cuts
    /// the log there, and makes the last segment the active one.
    fn replay(&mut self, numbers: &[u64]) -> Result<(), Error> {
        // Changes since the last commit (applied only when it comes).
        let mut uncommitted: Vec<(Change, u64)> = Vec::new();
        // (segment number, end offset, bytes of that segment) of the last commit.
        let mut last_commit: Option<(u64, u64, Vec<u8>)> = None;
        let mut expected = numbers.first().copied();
        'segments: for &no in numbers {
            if Some(no) != expected || no > MAX_SEGMENT {
                break; // a gap: nothing after it is trusted
            }
            expected = Some(no + 1);
            let path = self.segment_path(no);
            let data = std::fs::read(&path).map_err(|e| self.err("cannot read", e))?;
            if data.len() < HEADER as usize || &data[..8] != MAGIC {
                break;
            }
            let seed = u64::from_le_bytes(data[8..16].try_into().unwrap_or([0; 8]));
            if self.segments.is_empty() {
                self.seed = seed;
            } else if seed != self.seed {
                break;
            }
            self.segments.push_back(Segment { no, live: 0 });
            let mut pos = HEADER as usize;
            let mut commit_end = None;
            while pos + FRAME as usize <= data.len() {
                let len = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap_or([0; 4])) as usize;
                let check = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap_or([0; 4]));
                let start = pos + FRAME as usize;
                if len > MAX_BODY || start + len > data.len() || start as u64 + len as u64 > MAX_OFFSET {
                    break;
                }
                let body = &data[start..start + len];
                if checksum(body) != check {
                    break;
                }
                let Some((change, _, _)) = decode(body) else {
                    break;
                };
                let loc = no << OFFSET_BITS | pos as u64;
                pos = start + len;
                let is_commit = matches!(change, Change::Commit(_));
                uncommitted.push((change, loc));
                if is_commit {
                    for (change, loc) in uncommitted.drain(..) {
                        self.apply_change(change, loc);
                    }
                    commit_end = Some(pos as u64);
                }
            }
            let torn = pos != data.len();
            if let Some(end) = commit_end {
                last_commit = Some((no, end, data));
            }
            if torn {
                break 'segments;
            }
        }
        let Some((no, end, data)) = last_commit else {
            // Nothing committed ever reached the disk: start over.
            for &n in numbers {
                let _ = std::fs::remove_file(self.segment_path(n));
            }
            return self.create();
        };
        // Cut after the last commit: later segments go, this one is truncated.
        while self.segments.back().is_some_and(|s| s.no > no) {
            self.segments.pop_back();
        }
        for &n in numbers.iter().filter(|n| **n > no) {
            std::fs::remove_file(self.segment_path(n)).map_err(|e| self.err("cannot remove segment in", e))?;
            self.dir_dirty = true;
        }
        let path = self.segment_path(no);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.err("cannot open", e))?;
        if end < data.len() as u64 {
            file.set_len(end).map_err(|e| self.err("cannot truncate", e))?;
            file.sync_all().map_err(|e| self.err("cannot sync", e))?;
        }
        self.active = file;
        self.buf_start = end.saturating_sub(RECENT_BYTES);
        self.buf = data[self.buf_start as usize..end as usize].to_vec();
        self.flushed = end;
        if self.dir_dirty {
            self.sync_dir()?;
        }
        let pending = self.pending_len()? as i64;
        if pending != self.meta.counts.pending || !self.meta.counts.balanced() {
            return Err(self.err(
                "inconsistent log in",
                format!("{pending} pending ids, counts {:?}", self.meta.counts),
            ));
        }
        Ok(())
    }

    /// A new log: segment 1 with an empty commit, made durable.
    fn create(&mut self) -> Result<(), Error> {
        self.seed = std::collections::hash_map::RandomState::new().build_hasher().finish();
        self.segments.clear();
        self.open_segment(1)?;
        self.write(&Change::Commit(Box::new(self.meta.clone())), &[])?;
        self.sync_inner()
    }

    /// Creates segment `no` and makes it the active one.
    fn open_segment(&mut self, no: u64) -> Result<(), Error> {
        if no > MAX_SEGMENT {
            return Err(self.err("too many segments in", no));
        }
        let path = self.segment_path(no);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| self.err("cannot create segment in", e))?;
        let old = std::mem::replace(&mut self.active, file);
        if !self.segments.is_empty() {
            self.unsynced.push(old);
        }
        self.segments.push_back(Segment { no, live: 0 });
        self.buf.clear();
        self.buf.extend_from_slice(MAGIC);
        self.buf.extend_from_slice(&self.seed.to_le_bytes());
        self.buf_start = 0;
        self.flushed = 0;
        self.dir_dirty = true;
        Ok(())
    }

    fn active_no(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.no)
    }

    fn active_len(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Seals the active segment and starts the next.
    fn roll(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.open_segment(self.active_no() + 1)
    }

    /// Writes the buffered bytes to the active file (no fsync) and keeps
    /// only the newest [`RECENT_BYTES`] in RAM.
    fn flush(&mut self) -> Result<(), Error> {
        let from = (self.flushed - self.buf_start) as usize;
        if from < self.buf.len() {
            self.active
                .write_all_at(&self.buf[from..], self.flushed)
                .map_err(|e| storage(&self.dir, "cannot write", e))?;
            self.flushed = self.active_len();
        }
        if self.buf.len() as u64 > 2 * RECENT_BYTES {
            let drop = self.buf.len() - RECENT_BYTES as usize;
            self.buf.drain(..drop);
            self.buf_start += drop as u64;
        }
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), Error> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.err("cannot sync", e))?;
        self.dir_dirty = false;
        Ok(())
    }

    /// Appends one record and applies its change; returns its location.
    fn write(&mut self, change: &Change, payloads: &[&[u8]]) -> Result<u64, Error> {
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        encode(change, payloads, &mut body);
        if body.len() > MAX_BODY {
            let len = body.len();
            self.body = body;
            return Err(self.err("record too large for", format!("{len} bytes")));
        }
        if self.active_len() + FRAME + body.len() as u64 > MAX_OFFSET {
            self.roll()?;
        }
        let loc = self.active_no() << OFFSET_BITS | self.active_len();
        self.buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&checksum(&body).to_le_bytes());
        self.buf.extend_from_slice(&body);
        self.body = body;
        if self.active_len() - self.flushed > FLUSH_BYTES {
            self.flush()?;
        }
        self.apply_change(change.clone(), loc);
        Ok(loc)
    }

    fn segment_mut(&mut self, loc: u64) -> Option<&mut Segment> {
        let no = loc >> OFFSET_BITS;
        let first = self.segments.front()?.no;
        self.segments.get_mut(no.checked_sub(first)? as usize)
    }

    fn pin(&mut self, loc: u64) {
        if let Some(s) = self.segment_mut(loc) {
            s.live += 1;
        }
    }

    fn unpin(&mut self, loc: u64) {
        if let Some(s) = self.segment_mut(loc) {
            s.live = s.live.saturating_sub(1);
        }
    }

    fn set_slot(&mut self, key: u128, slot: Slot) {
        if let Some(old) = self.index.insert(key, slot) {
            self.unpin(old.loc());
        }
        self.pin(slot.loc());
    }

    fn journal_push(&mut self, seq: u64, loc: u64) {
        if self.journal.is_empty() || seq != self.journal_first + self.journal.len() as u64 {
            // (Consecutive by construction; a gap restarts the journal.)
            while let Some(old) = self.journal.pop_front() {
                self.unpin(old);
            }
            self.journal_first = seq;
        }
        self.journal.push_back(loc);
        self.pin(loc);
    }

    /// Drops journal entries before `start`.
    fn journal_trim(&mut self, start: u64) {
        while self.journal_first < start {
            let Some(loc) = self.journal.pop_front() else {
                break;
            };
            self.unpin(loc);
            self.journal_first += 1;
        }
    }

    /// The state change of a record at `loc` (the same on the live path and
    /// in replay).
    fn apply_change(&mut self, change: Change, loc: u64) {
        match change {
            Change::Predicted { key, pending, seq, .. } => {
                self.journal_push(seq, loc);
                if let Some(deadline) = pending {
                    self.set_slot(key, Slot::new(KIND_PENDING, deadline, loc));
                    self.wheels[0].push(deadline, key);
                }
            }
            Change::Waiting { key, deadline } => {
                self.set_slot(key, Slot::new(KIND_WAITING, deadline, loc));
                self.wheels[1].push(deadline, key);
            }
            Change::Joined { key, deadline, seq, .. } => {
                self.journal_push(seq, loc);
                self.set_slot(key, Slot::new(KIND_SETTLED + Settled::Joined as u64, deadline, loc));
                self.wheels[2].push(deadline, key);
            }
            Change::Settled { key, state, deadline } => {
                self.set_slot(key, Slot::new(KIND_SETTLED + state as u64, deadline, loc));
                self.wheels[2].push(deadline, key);
            }
            Change::Forget { key } => {
                if let Some(old) = self.index.remove(&key) {
                    self.unpin(old.loc());
                }
            }
            Change::Commit(meta) => {
                self.journal_trim(meta.journal_start);
                self.meta = *meta;
            }
        }
    }

    /// Calls `f` with the body of the record at `loc`.
    fn with_body<T>(&self, loc: u64, f: impl FnOnce(&[u8]) -> Result<T, Error>) -> Result<T, Error> {
        let no = loc >> OFFSET_BITS;
        let offset = loc & (MAX_OFFSET - 1);
        if no == self.active_no() && offset >= self.buf_start {
            let at = (offset - self.buf_start) as usize;
            let body = self
                .buf
                .get(at + FRAME as usize..)
                .and_then(|rest| {
                    let len = u32::from_le_bytes(self.buf[at..at + 4].try_into().ok()?) as usize;
                    rest.get(..len)
                })
                .ok_or_else(|| self.err("record out of range in", loc))?;
            return f(body);
        }
        let mut readers = self.readers.borrow_mut();
        if !readers.contains_key(&no) {
            if readers.len() >= OPEN_READERS {
                readers.clear();
            }
            let file = File::open(self.segment_path(no)).map_err(|e| self.err("cannot open segment in", e))?;
            readers.insert(no, file);
        }
        let file = readers.get(&no).ok_or_else(|| self.err("cannot open segment in", no))?;
        let mut frame = [0u8; FRAME as usize];
        file.read_exact_at(&mut frame, offset)
            .map_err(|e| self.err("cannot read", e))?;
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if len > MAX_BODY {
            return Err(self.err("corrupt record in", loc));
        }
        let mut body = vec![0u8; len];
        file.read_exact_at(&mut body, offset + FRAME)
            .map_err(|e| self.err("cannot read", e))?;
        drop(readers);
        if checksum(&body) != u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]) {
            return Err(self.err("corrupt record in", loc));
        }
        f(&body)
    }

    /// Copies the (first) payload of the record at `loc` into `out`.
    fn read_payload(&self, loc: u64, out: &mut Vec<u8>) -> Result<(), Error> {
        self.with_body(loc, |body| {
            let (_, payload, _) = decode(body).ok_or_else(|| self.err("corrupt record in", loc))?;
            out.clear();
            out.extend_from_slice(payload);
            Ok(())
        })
    }

    fn key(&mut self, model: &str, event_id: &str) -> u128 {
        self.key_buf.clear();
        self.key_buf.extend_from_slice(model.as_bytes());
        self.key_buf.push(0);
        self.key_buf.extend_from_slice(event_id.as_bytes());
        XxHash3_128::oneshot_with_seed(self.seed, &self.key_buf)
    }

    /// Runs a mutating call; if it fails half-way, the store reloads its
    /// committed state from the log before the next call.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.broken {
            self.flush()?;
            let deferred = self.deferred;
            *self = Self::open_path(&self.config.clone(), &self.dir.clone())?;
            self.deferred = deferred;
        }
        let out = f(self);
        if out.is_err() {
            self.broken = true;
        }
        out
    }

    /// See [`super::JoinStore::defer_durability`].
    pub fn defer_durability(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    /// Flushes and fsyncs the log, then deletes the oldest segments nothing
    /// refers to any more.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.guarded(Self::sync_inner)
    }

    fn sync_inner(&mut self) -> Result<(), Error> {
        self.flush()?;
        self.active.sync_data().map_err(|e| self.err("cannot sync", e))?;
        for file in std::mem::take(&mut self.unsynced) {
            file.sync_data().map_err(|e| self.err("cannot sync", e))?;
        }
        if self.dir_dirty {
            self.sync_dir()?;
        }
        // Every change is durable now: the segments it superseded can go.
        let mut removed = false;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.live == 0) {
            if let Some(s) = self.segments.pop_front() {
                self.readers.borrow_mut().remove(&s.no);
                std::fs::remove_file(self.segment_path(s.no)).map_err(|e| self.err("cannot remove segment in", e))?;
                removed = true;
            }
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    pub fn counts(&self) -> JoinCounts {
        self.meta.counts
    }

    pub fn label_lag_ms(&self) -> i64 {
        self.ttl.lag_ms
    }

    pub fn applied_offset(&self, topic: &str) -> Result<Option<i64>, Error> {
        Ok(self.meta.offsets.get(topic).copied())
    }

    /// See [`super::JoinStore::apply_each`]: the batch's records end with
    /// one commit record.
    pub fn apply_each<'i>(
        &mut self,
        inputs: impl IntoIterator<Item = (&'i JoinInput, i64)>,
        offsets: &[(&str, i64)],
    ) -> Result<Vec<JournalEntry>, Error> {
        self.guarded(|s| {
            let mut counts = s.meta.counts;
            let mut entries = Vec::new();
            for (input, now_ms) in inputs {
                match input {
                    JoinInput::Prediction(p) => s.prediction(p, now_ms, &mut counts, &mut entries)?,
                    JoinInput::Label(l) => s.label(l, now_ms, &mut counts, &mut entries)?,
                }
            }
            let mut meta = s.meta.clone();
            for (topic, offset) in offsets {
                meta.offsets.insert((*topic).to_string(), *offset);
            }
            let excess = rules::journal_excess(s.journal.len() as u64, s.journal_max, &mut counts);
            if excess > 0 {
                meta.journal_start = s.journal_first + excess;
            }
            meta.counts = counts;
            if entries.is_empty() && meta == s.meta {
                return Ok(entries); // nothing to log
            }
            s.commit(meta)?;
            Ok(entries)
        })
    }

    fn commit(&mut self, meta: Meta) -> Result<(), Error> {
        let change = Change::Commit(Box::new(meta));
        self.write(&change, &[])?;
        if self.active_len() >= self.segment_bytes {
            // The new segment opens with the same commit, so the newest
            // commit is always in the active segment.
            self.roll()?;
            self.write(&change, &[])?;
        }
        if !self.deferred {
            self.sync_inner()?;
        }
        Ok(())
    }

    /// Journals one event, numbered after `counts.journal_seq`.
    fn next_seq(counts: &mut JoinCounts) -> u64 {
        counts.journal_seq += 1;
        counts.journal_seq as u64
    }

    fn prediction(
        &mut self,
        p: &PendingPrediction,
        now_ms: i64,
        counts: &mut JoinCounts,
        entries: &mut Vec<JournalEntry>,
    ) -> Result<(), Error> {
        let key = self.key(&p.model, &p.event_id);
        let slot = self.index.get(&key).copied();
        let step = rules::on_prediction(slot.map_or(IdState::Unknown, Slot::state), counts);
        if step == OnPrediction::Duplicate {
            return Ok(());
        }
        let mut prediction = std::mem::take(&mut self.first);
        prediction.clear();
        payload::put_prediction(p, &mut prediction);
        let seq = Self::next_seq(counts);
        let pending = (step == OnPrediction::Pend).then(|| self.ttl.pending(p));
        let written = self.write(
            &Change::Predicted {
                key,
                pending,
                seq,
                now_ms,
            },
            &[&prediction],
        );
        entries.push(JournalEntry {
            seq,
            now_ms,
            event: JoinEvent::Predicted(p.clone()),
        });
        let result = match (written, slot) {
            (Err(e), _) => Err(e),
            (Ok(_), Some(waiting)) if step == OnPrediction::PairWithWaiting => {
                let mut label = std::mem::take(&mut self.second);
                let paired = self.read_payload(waiting.loc(), &mut label).and_then(|()| {
                    let l = payload::label(&label).ok_or_else(|| self.err("corrupt label in", waiting.loc()))?;
                    self.pair(key, p.clone(), l, &prediction, &label, now_ms, counts, entries)
                });
                self.second = label;
                paired
            }
            (Ok(_), _) => Ok(()),
        };
        self.first = prediction;
        result
    }

    fn label(
        &mut self,
        l: &TruthLabel,
        now_ms: i64,
        counts: &mut JoinCounts,
        entries: &mut Vec<JournalEntry>,
    ) -> Result<(), Error> {
        let key = self.key(&l.model, &l.event_id);
        let slot = self.index.get(&key).copied();
        match rules::on_label(slot.map_or(IdState::Unknown, Slot::state), counts) {
            OnLabel::Duplicate => Ok(()),
            OnLabel::Late => self
                .write(
                    &Change::Settled {
                        key,
                        state: Settled::LateLabelled,
                        deadline: self.ttl.settled(now_ms),
                    },
                    &[],
                )
                .map(drop),
            OnLabel::PairWithPending => {
                let loc = slot.map_or(0, Slot::loc);
                let mut prediction = std::mem::take(&mut self.first);
                let mut label = std::mem::take(&mut self.second);
                label.clear();
                payload::put_label(l, &mut label);
                let result = self.read_payload(loc, &mut prediction).and_then(|()| {
                    let p = payload::prediction(&prediction).ok_or_else(|| self.err("corrupt prediction in", loc))?;
                    self.pair(key, p, l.clone(), &prediction, &label, now_ms, counts, entries)
                });
                self.first = prediction;
                self.second = label;
                result
            }
            OnLabel::Wait => {
                let mut label = std::mem::take(&mut self.second);
                label.clear();
                payload::put_label(l, &mut label);
                let deadline = self.ttl.waiting(now_ms);
                let result = self.write(&Change::Waiting { key, deadline }, &[&label]);
                self.second = label;
                result.map(drop)
            }
        }
    }

    /// Pairs a prediction with its label by the shared rules and logs the
    /// outcome: a journalled pair, or a late label.
    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        key: u128,
        p: PendingPrediction,
        l: TruthLabel,
        prediction: &[u8],
        label: &[u8],
        now_ms: i64,
        counts: &mut JoinCounts,
        entries: &mut Vec<JournalEntry>,
    ) -> Result<(), Error> {
        let (settled, joined) = rules::pair(p, l, now_ms, self.ttl.lag_ms, counts);
        let deadline = self.ttl.settled(now_ms);
        let Some(joined) = joined else {
            return self
                .write(
                    &Change::Settled {
                        key,
                        state: settled,
                        deadline,
                    },
                    &[],
                )
                .map(drop);
        };
        let seq = Self::next_seq(counts);
        self.write(
            &Change::Joined {
                key,
                deadline,
                seq,
                now_ms,
                lag_ms: joined.lag_ms,
            },
            &[prediction, label],
        )?;
        entries.push(JournalEntry {
            seq,
            now_ms,
            event: JoinEvent::Joined(joined),
        });
        Ok(())
    }

    /// See [`super::JoinStore::journal_since`]: decoded from the log.
    pub fn journal_since(&self, seq: u64) -> Result<Vec<JournalEntry>, Error> {
        let skip = seq.saturating_add(1).saturating_sub(self.journal_first) as usize;
        let mut out = Vec::with_capacity(self.journal.len().saturating_sub(skip));
        for &loc in self.journal.iter().skip(skip) {
            out.push(self.with_body(loc, |body| {
                let corrupt = || self.err("corrupt journal in", loc);
                let (change, first, second) = decode(body).ok_or_else(corrupt)?;
                let prediction = payload::prediction(first).ok_or_else(corrupt)?;
                match change {
                    Change::Predicted { seq, now_ms, .. } => Ok(JournalEntry {
                        seq,
                        now_ms,
                        event: JoinEvent::Predicted(prediction),
                    }),
                    Change::Joined {
                        seq, now_ms, lag_ms, ..
                    } => Ok(JournalEntry {
                        seq,
                        now_ms,
                        event: JoinEvent::Joined(super::Joined {
                            prediction,
                            label: payload::label(second).ok_or_else(corrupt)?,
                            lag_ms,
                        }),
                    }),
                    _ => Err(corrupt()),
                }
            })?);
        }
        Ok(out)
    }

    /// See [`super::JoinStore::trim_journal`]: one commit record.
    pub fn trim_journal(&mut self, seq: u64) -> Result<(), Error> {
        self.guarded(|s| {
            let newest = s.meta.counts.journal_seq.max(0) as u64;
            let start = seq.min(newest).saturating_add(1).max(s.meta.journal_start);
            if start == s.meta.journal_start {
                return Ok(());
            }
            let mut meta = s.meta.clone();
            meta.journal_start = start;
            s.commit(meta)
        })
    }

    /// See [`super::JoinStore::expire`]: due entries bucket by bucket (1 s),
    /// in arrival order within a bucket.
    pub fn expire(&mut self, now_ms: i64) -> Result<u64, Error> {
        self.guarded(|s| {
            let mut counts = s.meta.counts;
            let mut changed = false;
            let mut expired = 0;
            for wheel in 0..3 {
                let index = &s.index;
                let is = |slot: Slot| match wheel {
                    0 => slot.kind() == KIND_PENDING,
                    1 => slot.kind() == KIND_WAITING,
                    _ => slot.settled(),
                };
                let due = s.wheels[wheel].take_due(now_ms, s.expire_batch, |key, bucket| match index.get(&key) {
                    Some(slot) if is(*slot) && slot.deadline <= now_ms => Check::Due,
                    Some(slot) if is(*slot) && slot.deadline.div_euclid(BUCKET_MS) == bucket => Check::Later,
                    _ => Check::Stale,
                });
                for key in due {
                    // A key may be listed twice: check it again.
                    if !s
                        .index
                        .get(&key)
                        .is_some_and(|slot| is(*slot) && slot.deadline <= now_ms)
                    {
                        continue;
                    }
                    changed = true;
                    let change = match wheel {
                        0 => {
                            rules::expire_pending(&mut counts);
                            expired += 1;
                            Change::Settled {
                                key,
                                state: Settled::Expired,
                                deadline: s.ttl.settled(now_ms),
                            }
                        }
                        1 => {
                            rules::expire_waiting(&mut counts);
                            Change::Forget { key }
                        }
                        _ => Change::Forget { key },
                    };
                    s.write(&change, &[])?;
                }
            }
            if changed {
                let mut meta = s.meta.clone();
                meta.counts = counts;
                s.commit(meta)?;
            }
            Ok(expired)
        })
    }

    /// Bytes of every segment on disk.
    pub fn file_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| std::fs::metadata(self.segment_path(s.no)).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
            .max(self.flushed)
    }

    pub fn pending_len(&self) -> Result<u64, Error> {
        Ok(self.index.values().filter(|s| s.kind() == KIND_PENDING).count() as u64)
    }

    /// Ids the index tracks (pending, waiting or settled).
    pub fn tracked_ids(&self) -> usize {
        self.index.len()
    }

    /// Estimated heap bytes of the index, the wheels and the journal
    /// (capacities, hashbrown's control bytes included); the recent-records
    /// buffer is `RECENT_BYTES` to twice that on top.
    pub fn index_bytes(&self) -> u64 {
        let slot = std::mem::size_of::<(u128, Slot)>() + 1;
        (self.index.capacity() * slot
            + self.wheels.iter().map(Wheel::entries).sum::<usize>() * std::mem::size_of::<u128>()
            + self.journal.capacity() * 8) as u64
    }

    /// Log segments on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The state a reopen must rebuild: meta, and every id's state and
    /// deadline (by key). For tests.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) fn fingerprint(&self) -> (JoinCounts, BTreeMap<String, i64>, (u64, usize), Vec<(u128, u64, i64)>) {
        let mut ids: Vec<(u128, u64, i64)> = self.index.iter().map(|(k, s)| (*k, s.kind(), s.deadline)).collect();
        ids.sort_unstable();
        let journal = (self.journal_first, self.journal.len());
        (self.meta.counts, self.meta.offsets.clone(), journal, ids)
    }

    /// (active segment, its length): where the next record goes. For tests.
    #[cfg(test)]
    pub(crate) fn end_position(&self) -> (u64, u64) {
        (self.active_no(), self.active_len())
    }

    /// The segment files, oldest first. For tests.
    #[cfg(test)]
    pub(crate) fn segment_paths(&self) -> Vec<PathBuf> {
        self.segments.iter().map(|s| self.segment_path(s.no)).collect()
    }
}

impl Drop for LogStore {
    /// A clean close writes what is buffered (no fsync, as with deferred
    /// durability: a store reopened in this process sees every commit).
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "cannot write the join log's last records; they come again from the broker");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let meta = Meta {
            counts: JoinCounts {
                predictions: 3,
                journal_seq: 9,
                ..Default::default()
            },
            journal_start: 4,
            offsets: [("inference".to_string(), 41), ("labels".to_string(), -1)]
                .into_iter()
                .collect(),
        };
        let cases: Vec<(Change, Vec<&[u8]>)> = vec![
            (
                Change::Predicted {
                    key: u128::MAX - 3,
                    pending: Some(-5),
                    seq: 7,
                    now_ms: 11,
                },
                vec![b"pred"],
            ),
            (
                Change::Predicted {
                    key: 1,
                    pending: None,
                    seq: 8,
                    now_ms: 12,
                },
                vec![b""],
            ),
            (Change::Waiting { key: 2, deadline: 99 }, vec![b"label"]),
            (
                Change::Joined {
                    key: 3,
                    deadline: 5,
                    seq: 9,
                    now_ms: 1,
                    lag_ms: -2,
                },
                vec![b"pp", b"lll"],
            ),
            (
                Change::Settled {
                    key: 4,
                    state: Settled::LateLabelled,
                    deadline: i64::MIN,
                },
                vec![],
            ),
            (Change::Forget { key: 5 }, vec![]),
            (Change::Commit(Box::new(meta)), vec![]),
        ];
        for (change, payloads) in cases {
            let mut body = Vec::new();
            encode(&change, &payloads, &mut body);
            let (back, first, second) = decode(&body).unwrap();
            assert_eq!(back, change);
            assert_eq!(first, payloads.first().copied().unwrap_or_default());
            assert_eq!(second, payloads.get(1).copied().unwrap_or_default());
            // Every strict prefix of a fixed-size record is refused.
            if payloads.is_empty() {
                for cut in 0..body.len() {
                    assert!(decode(&body[..cut]).is_none(), "{change:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn payloads_round_trip_and_refuse_truncation() {
        let full = PendingPrediction {
            event_id: "e-é".into(),
            model: "m".into(),
            model_version: "v9".into(),
            timestamp_ms: -7,
            score: Some(0.25),
            label: Some("cat".into()),
            value: Some(f64::MAX),
            scores: [("a".to_string(), 0.5), ("b".to_string(), -1.0)].into_iter().collect(),
            tags: [("region".to_string(), "eu".to_string())].into_iter().collect(),
        };
        for p in [full, PendingPrediction::default()] {
            let mut out = Vec::new();
            payload::put_prediction(&p, &mut out);
            assert_eq!(payload::prediction(&out), Some(p));
            for cut in 0..out.len() {
                assert_eq!(payload::prediction(&out[..cut]), None);
            }
        }
        let labels = [
            TruthLabel {
                event_id: "e".into(),
                model: "m".into(),
                timestamp_ms: 3,
                label: Some("1".into()),
                value: Some(2.5),
            },
            TruthLabel::default(),
        ];
        for l in labels {
            let mut out = Vec::new();
            payload::put_label(&l, &mut out);
            assert_eq!(payload::label(&out), Some(l));
            for cut in 0..out.len() {
                assert_eq!(payload::label(&out[..cut]), None);
            }
        }
    }

    #[test]
    fn wheel_returns_due_keys_once_and_drops_stale_ones() {
        let mut w = Wheel::default();
        for (d, k) in [(500, 1u128), (1500, 2), (1200, 3), (999, 4), (2500, 5)] {
            w.push(d, k);
        }
        // Key 4 moved on (stale); key 3 is due later within its bucket.
        let deadline = |k: u128| [0i64, 500, 1500, 1200, 999, 2500][k as usize];
        let due = w.take_due(1300, 10, |k, bucket| {
            let d = deadline(k);
            if k == 4 {
                Check::Stale
            } else if d <= 1300 {
                Check::Due
            } else if d.div_euclid(BUCKET_MS) == bucket {
                Check::Later
            } else {
                Check::Stale
            }
        });
        assert_eq!(due, vec![1, 3]);
        assert_eq!(w.buckets.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        let due = w.take_due(1600, 10, |_, _| Check::Due);
        assert_eq!(due, vec![2]);
        let due = w.take_due(10_000, 1, |_, _| Check::Due);
        assert_eq!(due, vec![5]);
        assert!(w.buckets.is_empty());
    }
}
