//! A borrowed view of the event contracts, read straight from their
//! protobuf bytes (pure: no I/O).
//!
//! The collector validates and republishes the bytes it received, and the
//! analyzer reads every message of the inference and label topics. Decoding
//! with prost allocates a map per event, a `String` per feature name and
//! text value, and hashes every name; here an event is read into an
//! [`InferenceRef`] (or [`LabelRef`]) whose strings borrow from the bytes
//! and whose maps are lists, reusing the lists' memory from event to event.
//!
//! The readers accept exactly what prost accepts (tested differentially
//! against prost here, in the collector, and by the `proto_events` and
//! `analyzer_wire` fuzz targets): the same field numbers and wire types,
//! unknown fields skipped (groups included, to prost's depth limit),
//! repeated scalar fields last-wins, repeated embedded messages merged,
//! map entries last-wins per key, strings valid UTF-8. A malformed event
//! is rejected naming the field. Map entries come out sorted by key, one
//! per key, so a reader sees the same order for the same schema whatever
//! order the producer's map had.

use std::ops::Range;

use prost::encoding::WireType;

use crate::v1::{FeatureValue, InferenceEvent, LabelEvent, Prediction, feature_value};

/// A failure to read an event: the path of the field and why.
pub type Checked<T> = Result<T, (String, String)>;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// How deep groups in unknown fields may nest (prost's recursion limit).
const MAX_DEPTH: u32 = 100;

/// A cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A failure to read the wire format: the reason, named by the caller's
/// field path.
type Wire<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    #[inline(always)]
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline(always)]
    fn varint(&mut self) -> Wire<u64> {
        // Keys, lengths and small numbers: one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Wire<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err("truncated varint".into());
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err("invalid varint".into());
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err("invalid varint".into())
    }

    /// The next field's number and wire type.
    #[inline(always)]
    fn key(&mut self) -> Wire<(u32, u8)> {
        // Fields 1 to 15 with a valid wire type: one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && (8..0x80).contains(&b)
            && b & 7 <= FIXED32
        {
            self.pos += 1;
            return Ok((u32::from(b >> 3), b & 7));
        }
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| format!("invalid key value: {key}"))?;
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(format!("invalid wire type value: {wire_type}"));
        }
        let field = key >> 3;
        if field == 0 {
            return Err("invalid tag value: 0".into());
        }
        Ok((field, wire_type))
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Wire<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err("buffer underflow".into());
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    #[inline(always)]
    fn len_delimited(&mut self) -> Wire<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| "buffer underflow".to_string())?;
        self.take(len)
    }

    #[inline(always)]
    fn fixed64(&mut self) -> Wire<u64> {
        let bytes = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// Skips the value of a field this reader does not know.
    fn skip(&mut self, field: u32, wire_type: u8, depth: u32) -> Wire<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            START_GROUP => {
                if depth >= MAX_DEPTH {
                    return Err("recursion limit reached".into());
                }
                loop {
                    if self.done() {
                        return Err("truncated group".into());
                    }
                    let (inner, inner_type) = self.key()?;
                    if inner_type == END_GROUP {
                        return if inner == field {
                            Ok(())
                        } else {
                            Err("unexpected end group tag".into())
                        };
                    }
                    self.skip(inner, inner_type, depth + 1)?;
                }
            }
            _ => Err("unexpected end group tag".into()),
        }
    }
}

#[inline(always)]
fn expect(wire_type: u8, want: u8) -> Wire<()> {
    if wire_type == want {
        Ok(())
    } else {
        Err(format!(
            "invalid wire type: {} (expected {})",
            name(wire_type),
            name(want)
        ))
    }
}

fn name(wire_type: u8) -> &'static str {
    match wire_type {
        VARINT => "Varint",
        FIXED64 => "SixtyFourBit",
        LEN => "LengthDelimited",
        START_GROUP => "StartGroup",
        END_GROUP => "EndGroup",
        _ => "ThirtyTwoBit",
    }
}

#[inline(always)]
fn utf8(bytes: &[u8]) -> Wire<&str> {
    std::str::from_utf8(bytes).map_err(|_| "invalid string value: data is not UTF-8 encoded".to_string())
}

#[inline(always)]
fn string<'a>(r: &mut Reader<'a>, wire_type: u8) -> Wire<&'a str> {
    expect(wire_type, LEN)?;
    utf8(r.len_delimited()?)
}

#[inline(always)]
fn double(r: &mut Reader<'_>, wire_type: u8) -> Wire<f64> {
    expect(wire_type, FIXED64)?;
    Ok(f64::from_bits(r.fixed64()?))
}

#[inline(always)]
fn varint(r: &mut Reader<'_>, wire_type: u8) -> Wire<u64> {
    expect(wire_type, VARINT)?;
    r.varint()
}

/// The byte ranges of the events in an `IngestInferencesRequest` or
/// `IngestLabelsRequest` (both `repeated <Event> events = 1`); other fields
/// are skipped. Fails when the request itself is not valid protobuf.
pub fn events(request: &[u8]) -> Result<Vec<Range<usize>>, String> {
    let mut r = Reader::new(request);
    let mut ranges = Vec::new();
    while !r.done() {
        let (field, wire_type) = r.key()?;
        if field == 1 {
            expect(wire_type, LEN).map_err(|e| format!("events: {e}"))?;
            let len = r.varint()?;
            let len = usize::try_from(len).map_err(|_| "buffer underflow".to_string())?;
            let start = r.pos;
            r.take(len)?;
            ranges.push(start..start + len);
        } else {
            r.skip(field, wire_type, 0)?;
        }
    }
    Ok(ranges)
}

/// Reads an `InferenceEvent` from `bytes` into `out` (cleared first,
/// vectors reused). Fails with the field path and why.
pub fn inference<'a>(bytes: &'a [u8], out: &mut InferenceRef<'a>) -> Checked<()> {
    out.clear();
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (field, wire_type) = r.key().map_err(|e| (String::new(), malformed(&e)))?;
        let at = |e: String| (field_name(INFERENCE_NAMES, field), malformed(&e));
        match field {
            1 => out.event_id = string(&mut r, wire_type).map_err(at)?,
            2 => out.model = string(&mut r, wire_type).map_err(at)?,
            3 => out.model_version = string(&mut r, wire_type).map_err(at)?,
            4 => out.endpoint = string(&mut r, wire_type).map_err(at)?,
            5 => out.timestamp_ms = varint(&mut r, wire_type).map_err(at)? as i64,
            6 => out.latency_ms = double(&mut r, wire_type).map_err(at)?,
            7 => out.status = varint(&mut r, wire_type).map_err(at)? as i32,
            8 => out.error = string(&mut r, wire_type).map_err(at)?,
            9 => out.batch_size = varint(&mut r, wire_type).map_err(at)? as u32,
            10 => {
                expect(wire_type, LEN).map_err(at)?;
                let body = r.len_delimited().map_err(at)?;
                let prediction = out.prediction.get_or_insert_with(|| PredictionRef {
                    scores: std::mem::take(&mut out.spare_scores),
                    ..PredictionRef::default()
                });
                merge_prediction(body, prediction)?;
            }
            11 => {
                expect(wire_type, LEN).map_err(at)?;
                let entry = r.len_delimited().map_err(at)?;
                let (name, value) = map_entry(entry, FeatureRef::Unset, merge_feature)
                    .map_err(|e| ("features".to_string(), malformed(&e)))?;
                out.features.push((name, value));
            }
            12 => {
                expect(wire_type, LEN).map_err(at)?;
                let entry = r.len_delimited().map_err(at)?;
                let (name, value) = map_entry(entry, "", |r, wire_type, value: &mut &'a str| {
                    *value = string(r, wire_type)?;
                    Ok(())
                })
                .map_err(|e| ("tags".to_string(), malformed(&e)))?;
                out.tags.push((name, value));
            }
            13 => out.received_at_ms = varint(&mut r, wire_type).map_err(at)? as i64,
            _ => r.skip(field, wire_type, 0).map_err(at)?,
        }
    }
    last_per_key(&mut out.features);
    last_per_key(&mut out.tags);
    if let Some(p) = &mut out.prediction {
        last_per_key(&mut p.scores);
    }
    Ok(())
}

/// Reads a `LabelEvent` from `bytes`.
pub fn label(bytes: &[u8]) -> Checked<LabelRef<'_>> {
    let mut out = LabelRef::default();
    let mut r = Reader::new(bytes);
    while !r.done() {
        let (field, wire_type) = r.key().map_err(|e| (String::new(), malformed(&e)))?;
        let at = |e: String| (field_name(LABEL_NAMES, field), malformed(&e));
        match field {
            1 => out.event_id = string(&mut r, wire_type).map_err(at)?,
            2 => out.model = string(&mut r, wire_type).map_err(at)?,
            3 => out.timestamp_ms = varint(&mut r, wire_type).map_err(at)? as i64,
            4 => out.label = Some(string(&mut r, wire_type).map_err(at)?),
            5 => out.value = Some(double(&mut r, wire_type).map_err(at)?),
            6 => out.received_at_ms = varint(&mut r, wire_type).map_err(at)? as i64,
            _ => r.skip(field, wire_type, 0).map_err(at)?,
        }
    }
    Ok(out)
}

const INFERENCE_NAMES: &[&str] = &[
    "",
    "event_id",
    "model",
    "model_version",
    "endpoint",
    "timestamp_ms",
    "latency_ms",
    "status",
    "error",
    "batch_size",
    "prediction",
    "features",
    "tags",
    "received_at_ms",
];

const LABEL_NAMES: &[&str] = &[
    "",
    "event_id",
    "model",
    "timestamp_ms",
    "label",
    "value",
    "received_at_ms",
];

fn field_name(names: &[&str], field: u32) -> String {
    match names.get(field as usize) {
        Some(name) if field > 0 => (*name).to_string(),
        _ => format!("#{field}"),
    }
}

fn malformed(reason: &str) -> String {
    format!("malformed protobuf: {reason}")
}

/// Merges one occurrence of `Prediction` (an embedded message may be sent
/// in several parts; later scalars win, map entries add up).
fn merge_prediction<'a>(body: &'a [u8], p: &mut PredictionRef<'a>) -> Checked<()> {
    let mut r = Reader::new(body);
    while !r.done() {
        let (field, wire_type) = r.key().map_err(|e| ("prediction".to_string(), malformed(&e)))?;
        let at = |e: String| {
            let name = ["", "score", "label", "value", "scores"].get(field as usize).copied();
            let name = name
                .filter(|n| !n.is_empty())
                .map_or_else(|| format!("#{field}"), str::to_string);
            (format!("prediction.{name}"), malformed(&e))
        };
        match field {
            1 => p.score = Some(double(&mut r, wire_type).map_err(at)?),
            2 => p.label = Some(string(&mut r, wire_type).map_err(at)?),
            3 => p.value = Some(double(&mut r, wire_type).map_err(at)?),
            4 => {
                expect(wire_type, LEN).map_err(at)?;
                let entry = r.len_delimited().map_err(at)?;
                let (class, prob) = map_entry(entry, 0.0, |r, wire_type, value: &mut f64| {
                    *value = double(r, wire_type)?;
                    Ok(())
                })
                .map_err(at)?;
                p.scores.push((class, prob));
            }
            _ => r.skip(field, wire_type, 0).map_err(at)?,
        }
    }
    Ok(())
}

/// Merges one occurrence of `FeatureValue` into `value` (a oneof: the last
/// member present wins).
fn merge_feature<'a>(entry: &mut Reader<'a>, wire_type: u8, value: &mut FeatureRef<'a>) -> Wire<()> {
    expect(wire_type, LEN)?;
    let mut r = Reader::new(entry.len_delimited()?);
    while !r.done() {
        let (field, wire_type) = r.key()?;
        match field {
            1 => *value = FeatureRef::Number(double(&mut r, wire_type)?),
            2 => *value = FeatureRef::Text(string(&mut r, wire_type)?),
            3 => *value = FeatureRef::Flag(varint(&mut r, wire_type)? != 0),
            4 => *value = FeatureRef::Missing(varint(&mut r, wire_type)? != 0),
            _ => r.skip(field, wire_type, 0)?,
        }
    }
    Ok(())
}

/// Reads a map entry (`key = 1` a string, `value = 2`), starting from the
/// value's default; `merge_value` reads each occurrence of the value.
fn map_entry<'a, V>(
    entry: &'a [u8],
    default: V,
    merge_value: impl Fn(&mut Reader<'a>, u8, &mut V) -> Wire<()>,
) -> Wire<(&'a str, V)> {
    let mut r = Reader::new(entry);
    let mut key = "";
    let mut value = default;
    while !r.done() {
        let (field, wire_type) = r.key()?;
        match field {
            1 => key = string(&mut r, wire_type)?,
            2 => merge_value(&mut r, wire_type, &mut value)?,
            _ => r.skip(field, wire_type, 0)?,
        }
    }
    Ok((key, value))
}

/// Keeps the last entry of every key (a protobuf map's rule for repeated
/// keys); the order of the kept entries is by key.
fn last_per_key<V: Copy>(entries: &mut Vec<(&str, V)>) {
    // Usually already so: one pass of comparisons (see `encode_sorted`).
    if entries.windows(2).all(|w| by_key(w[0].0, w[1].0).is_lt()) {
        return;
    }
    // Sort positions by (first 8 bytes as a word, arrival): cheap to compare
    // and to move. Names sharing their first 8 bytes are then put in string
    // order, still by arrival within one name.
    let mut order: Vec<(u64, u32)> = entries
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (head(k), i as u32))
        .collect();
    order.sort_unstable();
    let mut start = 0;
    while start < order.len() {
        let end = start + order[start..].iter().take_while(|(h, _)| *h == order[start].0).count();
        if end - start > 1 {
            order[start..end].sort_by(|a, b| entries[a.1 as usize].0.cmp(entries[b.1 as usize].0).then(a.1.cmp(&b.1)));
        }
        start = end;
    }
    let mut kept: Vec<(&str, V)> = Vec::with_capacity(entries.len());
    for (i, (word, at)) in order.iter().enumerate() {
        let key = entries[*at as usize].0;
        // The last arrival of a name is the last of its run (different
        // words: different names, no need to compare them).
        if order
            .get(i + 1)
            .is_some_and(|(next_word, next)| next_word == word && entries[*next as usize].0 == key)
        {
            continue;
        }
        kept.push(entries[*at as usize]);
    }
    entries.clear();
    entries.extend_from_slice(&kept);
}

/// The first 8 bytes of `s`, zero-padded, as a big-endian word: ordered as
/// the strings are, except that strings equal in those bytes tie.
#[inline]
pub fn head(s: &str) -> u64 {
    let mut word = [0u8; 8];
    for (w, b) in word.iter_mut().zip(s.as_bytes()) {
        *w = *b;
    }
    u64::from_be_bytes(word)
}

/// String order, decided by the first 8 bytes (zero-padded, compared as
/// one big-endian word) unless they tie: names of a schema usually differ
/// there, and a word comparison is much cheaper than a `memcmp` call.
#[inline]
fn by_key(a: &str, b: &str) -> std::cmp::Ordering {
    head(a).cmp(&head(b)).then_with(|| a.cmp(b))
}

/// A feature value seen through a borrow: [`FeatureValue`] without owning
/// its text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureRef<'a> {
    Number(f64),
    Text(&'a str),
    Flag(bool),
    Missing(bool),
    /// A `FeatureValue` with no `kind` set.
    Unset,
}

impl<'a> FeatureRef<'a> {
    /// The owned value.
    pub fn to_value(self) -> FeatureValue {
        let kind = match self {
            Self::Number(x) => Some(feature_value::Kind::Number(x)),
            Self::Text(t) => Some(feature_value::Kind::Text(t.to_string())),
            Self::Flag(b) => Some(feature_value::Kind::Flag(b)),
            Self::Missing(b) => Some(feature_value::Kind::Missing(b)),
            Self::Unset => None,
        };
        FeatureValue { kind }
    }

    /// Borrows a decoded value.
    pub fn of(value: &'a FeatureValue) -> Self {
        match &value.kind {
            Some(feature_value::Kind::Number(x)) => Self::Number(*x),
            Some(feature_value::Kind::Text(s)) => Self::Text(s),
            Some(feature_value::Kind::Flag(b)) => Self::Flag(*b),
            Some(feature_value::Kind::Missing(b)) => Self::Missing(*b),
            None => Self::Unset,
        }
    }
}

/// A prediction seen through a borrow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictionRef<'a> {
    pub score: Option<f64>,
    pub label: Option<&'a str>,
    pub value: Option<f64>,
    /// Class → probability, one entry per distinct class.
    pub scores: Vec<(&'a str, f64)>,
}

/// An inference event seen through borrows: built from a decoded
/// [`InferenceEvent`] ([`InferenceRef::of`]) or straight from its protobuf
/// bytes ([`inference`]), so that both are handled by one function. Its
/// vectors are reused from event to event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferenceRef<'a> {
    pub event_id: &'a str,
    pub model: &'a str,
    pub model_version: &'a str,
    pub endpoint: &'a str,
    pub timestamp_ms: i64,
    pub latency_ms: f64,
    pub status: i32,
    pub error: &'a str,
    pub batch_size: u32,
    pub prediction: Option<PredictionRef<'a>>,
    /// One entry per distinct feature name.
    pub features: Vec<(&'a str, FeatureRef<'a>)>,
    /// One entry per distinct tag name.
    pub tags: Vec<(&'a str, &'a str)>,
    pub received_at_ms: i64,
    /// The emptied `scores` of an earlier event's prediction, kept for the
    /// next one.
    spare_scores: Vec<(&'a str, f64)>,
}

impl<'a> InferenceRef<'a> {
    /// Borrows a decoded event.
    pub fn of(e: &'a InferenceEvent) -> Self {
        Self {
            event_id: &e.event_id,
            model: &e.model,
            model_version: &e.model_version,
            endpoint: &e.endpoint,
            timestamp_ms: e.timestamp_ms,
            latency_ms: e.latency_ms,
            status: e.status,
            error: &e.error,
            batch_size: e.batch_size,
            prediction: e.prediction.as_ref().map(|p| PredictionRef {
                score: p.score,
                label: p.label.as_deref(),
                value: p.value,
                scores: p.scores.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
            }),
            features: e
                .features
                .iter()
                .map(|(k, v)| (k.as_str(), FeatureRef::of(v)))
                .collect(),
            tags: e.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            received_at_ms: e.received_at_ms,
            spare_scores: Vec::new(),
        }
    }

    /// The owned event (what prost decodes from the same bytes).
    pub fn to_event(&self) -> InferenceEvent {
        InferenceEvent {
            event_id: self.event_id.to_string(),
            model: self.model.to_string(),
            model_version: self.model_version.to_string(),
            endpoint: self.endpoint.to_string(),
            timestamp_ms: self.timestamp_ms,
            latency_ms: self.latency_ms,
            status: self.status,
            error: self.error.to_string(),
            batch_size: self.batch_size,
            prediction: self.prediction.as_ref().map(|p| Prediction {
                score: p.score,
                label: p.label.map(str::to_string),
                value: p.value,
                scores: p.scores.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            }),
            features: self
                .features
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_value()))
                .collect(),
            tags: self.tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            received_at_ms: self.received_at_ms,
        }
    }

    /// The value of tag `name`.
    pub fn tag(&self, name: &str) -> Option<&'a str> {
        self.tags.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// Takes the view's vectors (emptied) for a view of another lifetime:
    /// a view per message of a batch, with memory recycled across batches.
    pub fn recycle<'b>(self) -> InferenceRef<'b> {
        let scores = match self.prediction {
            Some(p) => p.scores,
            None => self.spare_scores,
        };
        InferenceRef {
            features: emptied(self.features),
            tags: emptied(self.tags),
            spare_scores: emptied(scores),
            ..InferenceRef::default()
        }
    }

    /// Empties the view for the next event, keeping its vectors' capacity.
    pub fn clear(&mut self) {
        let mut features = std::mem::take(&mut self.features);
        let mut tags = std::mem::take(&mut self.tags);
        let mut scores = match self.prediction.take() {
            Some(p) => p.scores,
            None => std::mem::take(&mut self.spare_scores),
        };
        features.clear();
        tags.clear();
        scores.clear();
        *self = Self {
            features,
            tags,
            spare_scores: scores,
            ..Self::default()
        };
    }
}

/// A label event seen through borrows (see [`InferenceRef`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelRef<'a> {
    pub event_id: &'a str,
    pub model: &'a str,
    pub timestamp_ms: i64,
    pub label: Option<&'a str>,
    pub value: Option<f64>,
    pub received_at_ms: i64,
}

impl<'a> LabelRef<'a> {
    /// The owned event (what prost decodes from the same bytes).
    pub fn to_event(&self) -> LabelEvent {
        LabelEvent {
            event_id: self.event_id.to_string(),
            model: self.model.to_string(),
            timestamp_ms: self.timestamp_ms,
            label: self.label.map(str::to_string),
            value: self.value,
            received_at_ms: self.received_at_ms,
        }
    }

    /// Borrows a decoded event.
    pub fn of(e: &'a LabelEvent) -> Self {
        Self {
            event_id: &e.event_id,
            model: &e.model,
            timestamp_ms: e.timestamp_ms,
            label: e.label.as_deref(),
            value: e.value,
            received_at_ms: e.received_at_ms,
        }
    }
}

/// Empties `v` and gives its allocation back with an element type of the
/// same layout (views differ only in their lifetimes): an empty vector
/// collected in place keeps its buffer.
fn emptied<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// `e` as prost encodes it, except that the entries of `features` and
/// `tags` come sorted by key (prost writes a map in its hash order). Such
/// bytes decode to the same event, and [`inference`] finds their maps
/// already in order, with nothing to sort: the collector publishes the
/// events it decoded from JSON this way.
pub fn encode_sorted(e: &InferenceEvent, out: &mut Vec<u8>) {
    use prost::encoding::{double, encode_key, encode_varint, int32, int64, message, string, uint32};

    for (tag, value) in [(1, &e.event_id), (2, &e.model), (3, &e.model_version), (4, &e.endpoint)] {
        if !value.is_empty() {
            string::encode(tag, value, out);
        }
    }
    if e.timestamp_ms != 0 {
        int64::encode(5, &e.timestamp_ms, out);
    }
    if e.latency_ms != 0.0 {
        double::encode(6, &e.latency_ms, out);
    }
    if e.status != 0 {
        int32::encode(7, &e.status, out);
    }
    if !e.error.is_empty() {
        string::encode(8, &e.error, out);
    }
    if e.batch_size != 0 {
        uint32::encode(9, &e.batch_size, out);
    }
    if let Some(p) = &e.prediction {
        message::encode(10, p, out);
    }
    // A map entry as prost writes it: a default key or value is left out.
    let mut features: Vec<(&String, &FeatureValue)> = e.features.iter().collect();
    features.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, value) in features {
        let key_len = if key.is_empty() { 0 } else { string::encoded_len(1, key) };
        let value_len = if value.kind.is_none() {
            0
        } else {
            message::encoded_len(2, value)
        };
        encode_key(11, WireType::LengthDelimited, out);
        encode_varint((key_len + value_len) as u64, out);
        if !key.is_empty() {
            string::encode(1, key, out);
        }
        if value.kind.is_some() {
            message::encode(2, value, out);
        }
    }
    let mut tags: Vec<(&String, &String)> = e.tags.iter().collect();
    tags.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, value) in tags {
        let key_len = if key.is_empty() { 0 } else { string::encoded_len(1, key) };
        let value_len = if value.is_empty() {
            0
        } else {
            string::encoded_len(2, value)
        };
        encode_key(12, WireType::LengthDelimited, out);
        encode_varint((key_len + value_len) as u64, out);
        if !key.is_empty() {
            string::encode(1, key, out);
        }
        if !value.is_empty() {
            string::encode(2, value, out);
        }
    }
    if e.received_at_ms != 0 {
        int64::encode(13, &e.received_at_ms, out);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;
    use crate::v1::feature_value::Kind;

    fn kind() -> impl Strategy<Value = Option<Kind>> {
        prop_oneof![
            Just(None),
            any::<f64>().prop_map(|x| Some(Kind::Number(x))),
            "[a-zé]{0,6}".prop_map(|t| Some(Kind::Text(t))),
            any::<bool>().prop_map(|b| Some(Kind::Flag(b))),
            any::<bool>().prop_map(|b| Some(Kind::Missing(b))),
        ]
    }

    fn event() -> impl Strategy<Value = InferenceEvent> {
        (
            ("[a-z0-9]{0,8}", "[a-z]{1,5}", any::<i64>(), any::<f64>(), any::<i32>()),
            proptest::collection::hash_map("[a-c]{0,3}", kind(), 0..12),
            proptest::collection::hash_map("[a-b]{1,2}", "[a-z]{0,3}", 0..3),
            proptest::option::of((
                proptest::option::of(any::<f64>()),
                proptest::option::of("[a-z]{0,3}"),
                proptest::collection::hash_map("[a-c]{1,2}", any::<f64>(), 0..3),
            )),
        )
            .prop_map(
                |((event_id, model, t, latency, status), features, tags, prediction)| InferenceEvent {
                    event_id,
                    model,
                    model_version: "v1".into(),
                    timestamp_ms: t,
                    latency_ms: latency,
                    status,
                    prediction: prediction.map(|(score, label, scores)| Prediction {
                        score,
                        label,
                        scores,
                        ..Default::default()
                    }),
                    features: features
                        .into_iter()
                        .map(|(k, kind)| (k, FeatureValue { kind }))
                        .collect(),
                    tags,
                    received_at_ms: t / 2,
                    ..Default::default()
                },
            )
    }

    /// Equality with floats compared bitwise (NaN equals itself) and maps
    /// as maps.
    fn same(a: &InferenceEvent, b: &InferenceEvent) -> bool {
        let bits = |p: &Option<Prediction>| {
            p.as_ref().map(|p| {
                let mut s: Vec<_> = p.scores.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect();
                s.sort();
                (p.score.map(f64::to_bits), p.label.clone(), p.value.map(f64::to_bits), s)
            })
        };
        let rest = |e: &InferenceEvent| {
            InferenceEvent {
                features: HashMap::new(),
                tags: HashMap::new(),
                prediction: None,
                latency_ms: 0.0,
                ..e.clone()
            }
            .encode_to_vec()
        };
        let features = a.features.len() == b.features.len()
            && a.features.iter().all(|(k, v)| {
                b.features.get(k).is_some_and(|w| match (&v.kind, &w.kind) {
                    (Some(Kind::Number(x)), Some(Kind::Number(y))) => x.to_bits() == y.to_bits(),
                    (x, y) => x == y,
                })
            });
        features
            && a.tags == b.tags
            && bits(&a.prediction) == bits(&b.prediction)
            && a.latency_ms.to_bits() == b.latency_ms.to_bits()
            && rest(a) == rest(b)
    }

    proptest! {
        /// Bytes of one or two events (a second part overrides and merges),
        /// then anything, cut anywhere: an error exactly when prost errs,
        /// else prost's event; maps come out sorted, one entry per key.
        #[test]
        fn views_read_what_prost_decodes(
            first in event(),
            second in proptest::option::of(event()),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = first.encode_to_vec();
            if let Some(second) = second {
                bytes.extend_from_slice(&second.encode_to_vec());
            }
            bytes.extend_from_slice(&garbage);
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            let mut view = InferenceRef::default();
            let ours = inference(bytes, &mut view).map(|()| view.to_event());
            match InferenceEvent::decode(bytes) {
                Ok(expected) => {
                    prop_assert!(ours.as_ref().is_ok_and(|o| same(o, &expected)), "{ours:?} != {expected:?}");
                    prop_assert!(view.features.windows(2).all(|w| w[0].0 < w[1].0));
                    prop_assert!(view.tags.windows(2).all(|w| w[0].0 < w[1].0));
                }
                Err(e) => prop_assert!(ours.is_err(), "prost: {e}"),
            }
            let label = label(bytes).map(|l| l.to_event());
            match LabelEvent::decode(bytes) {
                Ok(expected) => prop_assert_eq!(label, Ok(expected)),
                Err(_) => prop_assert!(label.is_err()),
            }
        }
    }

    proptest! {
        /// Sorted encoding decodes to the same event, reads with its maps
        /// in the order written, and is prost's own encoding when a map has
        /// at most one entry.
        #[test]
        fn sorted_encoding_is_prost_with_maps_in_order(e in event()) {
            let mut bytes = Vec::new();
            encode_sorted(&e, &mut bytes);
            // Compared with prost's own round trip (it drops a -0.0 map
            // value as a default, and so does this encoding).
            let decoded = InferenceEvent::decode(bytes.as_slice()).unwrap();
            let expected = InferenceEvent::decode(e.encode_to_vec().as_slice()).unwrap();
            prop_assert!(same(&decoded, &expected), "{decoded:?} != {expected:?}");
            prop_assert_eq!(bytes.len(), e.encoded_len());
            if e.features.len() <= 1 && e.tags.len() <= 1 {
                prop_assert_eq!(&bytes, &e.encode_to_vec());
            }
            let mut view = InferenceRef::default();
            inference(&bytes, &mut view).unwrap();
            let mut names: Vec<&String> = e.features.keys().collect();
            names.sort();
            prop_assert!(view.features.iter().map(|(k, _)| *k).eq(names.iter().map(|n| n.as_str())));
        }
    }

    proptest! {
        /// One entry per key, the last one sent, in key order: as a map
        /// filled in arrival order (names sharing their first 8 bytes too).
        #[test]
        fn last_per_key_is_a_map(
            names in proptest::collection::vec("(feature_long_[a-c]{0,2}|[a-c]{0,3}|x{8}|x{8}y)", 0..40),
        ) {
            let mut entries: Vec<(&str, usize)> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
            let expected: std::collections::BTreeMap<&str, usize> = entries.iter().copied().collect();
            last_per_key(&mut entries);
            prop_assert_eq!(entries, expected.into_iter().collect::<Vec<_>>());
        }

        /// The word-first comparison is string order.
        #[test]
        fn by_key_is_string_order(a in "[a-c\\x00é]{0,12}", b in "[a-c\\x00é]{0,12}") {
            prop_assert_eq!(by_key(&a, &b), a.cmp(&b));
        }
    }

    #[test]
    fn deep_unknown_groups_fail_as_in_prost() {
        // Field 20 as nested start groups, then as many end groups.
        for depth in [98, 99, 100, 101] {
            let mut bytes = Vec::new();
            for _ in 0..depth {
                bytes.extend([0xa3, 0x01]);
            }
            for _ in 0..depth {
                bytes.extend([0xa4, 0x01]);
            }
            let prost = InferenceEvent::decode(bytes.as_slice());
            let ours = inference(&bytes, &mut InferenceRef::default());
            assert_eq!(ours.is_ok(), prost.is_ok(), "depth {depth}: {ours:?} vs {prost:?}");
        }
    }

    #[test]
    fn a_recycled_view_keeps_its_lists() {
        let e = InferenceEvent {
            model: "m".into(),
            features: (0..25)
                .map(|i| {
                    (
                        format!("f{i}"),
                        FeatureValue {
                            kind: Some(Kind::Number(1.0)),
                        },
                    )
                })
                .collect(),
            prediction: Some(Prediction {
                scores: [("a".to_string(), 0.5)].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = e.encode_to_vec();
        let mut view = InferenceRef::default();
        inference(&bytes, &mut view).unwrap();
        let capacity = view.features.capacity();
        let mut again: InferenceRef<'_> = view.recycle();
        assert!(again.features.is_empty() && again.features.capacity() >= capacity);
        inference(&bytes, &mut again).unwrap();
        assert_eq!(again.to_event(), e);
    }
}
