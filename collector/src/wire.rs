//! Pure protobuf wire-format walking for the gRPC hot path. No I/O here.
//!
//! A gRPC ingest request is `repeated InferenceEvent events = 1` (or
//! `LabelEvent`). Rather than decoding every event into owned strings and
//! maps and encoding it again for Kafka, the collector finds each event's
//! byte range in the request ([`events`]), reads the event into a borrowed
//! view ([`inference`], [`label`]) that validation checks, and publishes the
//! event's own bytes followed by the defaults validation filled in
//! (`validate::Fill`), which protobuf's last-field-wins rule makes override.
//!
//! The readers accept exactly what prost accepts (tested differentially
//! against prost in the unit tests and by the `proto_events` fuzz target):
//! the same field numbers and wire types, unknown fields skipped (groups
//! included), repeated scalar fields last-wins, repeated embedded messages
//! merged, map entries last-wins per key, strings valid UTF-8. A malformed
//! event is rejected on its own, naming the field.

use std::ops::Range;

use crate::validate::{Check, FeatureRef, InferenceRef, LabelRef, PredictionRef};

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

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
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
    #[inline]
    fn key(&mut self) -> Wire<(u32, u8)> {
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

    #[inline]
    fn take(&mut self, n: usize) -> Wire<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err("buffer underflow".into());
        };
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    #[inline]
    fn len_delimited(&mut self) -> Wire<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| "buffer underflow".to_string())?;
        self.take(len)
    }

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

fn utf8(bytes: &[u8]) -> Wire<&str> {
    std::str::from_utf8(bytes).map_err(|_| "invalid string value: data is not UTF-8 encoded".to_string())
}

fn string<'a>(r: &mut Reader<'a>, wire_type: u8) -> Wire<&'a str> {
    expect(wire_type, LEN)?;
    utf8(r.len_delimited()?)
}

fn double(r: &mut Reader<'_>, wire_type: u8) -> Wire<f64> {
    expect(wire_type, FIXED64)?;
    Ok(f64::from_bits(r.fixed64()?))
}

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
pub fn inference<'a>(bytes: &'a [u8], out: &mut InferenceRef<'a>) -> Check<()> {
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
            13 => {
                varint(&mut r, wire_type).map_err(at)?;
            }
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
pub fn label(bytes: &[u8]) -> Check<LabelRef<'_>> {
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
            6 => {
                varint(&mut r, wire_type).map_err(at)?;
            }
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
fn merge_prediction<'a>(body: &'a [u8], p: &mut PredictionRef<'a>) -> Check<()> {
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
fn last_per_key<V>(entries: &mut Vec<(&str, V)>) {
    if entries.len() < 2 {
        return;
    }
    // Stable: entries of one key keep their arrival order.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut keep = 0;
    for i in 0..entries.len() {
        if i + 1 < entries.len() && entries[i + 1].0 == entries[i].0 {
            continue;
        }
        entries.swap(keep, i);
        keep += 1;
    }
    entries.truncate(keep);
}

/// What the gRPC path does with one event's bytes, side by side with what
/// decoding it with prost and validating the decoded message does: both
/// must accept the same events, and the published bytes must decode to the
/// event the decoded path would publish. Used by the unit tests and the
/// `proto_events` fuzz target.
pub mod differential {
    use mlwatch_proto::v1::{InferenceEvent, LabelEvent};
    use prost::Message;

    use super::{inference, label};
    use crate::validate::{self, InferenceRef, Limits};

    /// Panics when the wire path and the prost path disagree on `bytes` as
    /// an `InferenceEvent`.
    pub fn check_inference(bytes: &[u8], limits: &Limits, now_ms: i64) {
        let mut view = InferenceRef::default();
        let wire = inference(bytes, &mut view).and_then(|()| validate::check_inference_ref(&view, limits, now_ms));
        let decoded = InferenceEvent::decode(bytes);
        let Ok(mut event) = decoded else {
            assert!(
                wire.is_err(),
                "prost rejects {bytes:?} ({decoded:?}) but the wire path accepts it"
            );
            return;
        };
        let checked = validate::inference_proto(0, &mut event, limits, now_ms);
        match (wire, checked) {
            (Ok(fill), Ok(())) => {
                let mut published = bytes.to_vec();
                fill.append_inference(&mut published);
                let republished = InferenceEvent::decode(&published[..]).expect("published bytes decode");
                assert_eq!(republished, event, "published bytes differ from the validated event");
            }
            (Err(w), Err(p)) => {
                // With several bad map entries, which one is named depends
                // on map order; elsewhere the answers are the same.
                let map = |f: &str| {
                    ["features", "tags", "prediction.scores"]
                        .iter()
                        .any(|m| f.starts_with(m))
                };
                if !map(&w.0) && !map(&p.field) {
                    assert_eq!((w.0.as_str(), w.1.as_str()), (p.field.as_str(), p.reason.as_str()));
                }
            }
            (w, p) => panic!("wire path {w:?} but prost path {p:?} for {bytes:?}"),
        }
    }

    /// The same for a `LabelEvent`.
    pub fn check_label(bytes: &[u8], limits: &Limits, now_ms: i64) {
        let wire = label(bytes).and_then(|l| validate::check_label_ref(&l, limits, now_ms));
        let Ok(mut event) = LabelEvent::decode(bytes) else {
            assert!(wire.is_err(), "prost rejects {bytes:?} but the wire path accepts it");
            return;
        };
        match (wire, validate::label_proto(0, &mut event, limits, now_ms)) {
            (Ok(fill), Ok(())) => {
                let mut published = bytes.to_vec();
                fill.append_label(&mut published);
                assert_eq!(
                    LabelEvent::decode(&published[..]).expect("published bytes decode"),
                    event
                );
            }
            (Err(w), Err(p)) => assert_eq!((w.0.as_str(), w.1.as_str()), (p.field.as_str(), p.reason.as_str())),
            (w, p) => panic!("wire path {w:?} but prost path {p:?} for {bytes:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use mlwatch_proto::v1::{
        FeatureValue, InferenceEvent, IngestInferencesRequest, LabelEvent, Prediction, feature_value,
    };
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::validate::{self, Limits};

    const NOW: i64 = 1_795_723_079_957;

    fn event() -> InferenceEvent {
        InferenceEvent {
            event_id: "e1".into(),
            model: "fraud".into(),
            latency_ms: 12.5,
            prediction: Some(Prediction {
                score: Some(0.8),
                label: Some("1".into()),
                scores: HashMap::from([("a".into(), 0.2), ("b".into(), 0.8)]),
                ..Prediction::default()
            }),
            features: HashMap::from([
                (
                    "amount".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Number(3.5)),
                    },
                ),
                (
                    "country".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Text("DE".into())),
                    },
                ),
                (
                    "new".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Flag(true)),
                    },
                ),
                (
                    "age".into(),
                    FeatureValue {
                        kind: Some(feature_value::Kind::Missing(true)),
                    },
                ),
            ]),
            tags: HashMap::from([("region".into(), "eu".into())]),
            ..InferenceEvent::default()
        }
    }

    fn both(bytes: &[u8]) {
        differential::check_inference(bytes, &Limits::default(), NOW);
        differential::check_label(bytes, &Limits::default(), NOW);
    }

    #[test]
    fn events_are_found_in_a_request() {
        let events = vec![event(), InferenceEvent::default(), event()];
        let request = IngestInferencesRequest { events: events.clone() }.encode_to_vec();
        let ranges = super::events(&request).unwrap();
        assert_eq!(ranges.len(), 3);
        for (range, e) in ranges.iter().zip(&events) {
            assert_eq!(InferenceEvent::decode(&request[range.clone()]).unwrap(), *e);
        }
        assert!(super::events(&[0x0a, 0x05, 1]).is_err(), "length past the end");
        assert_eq!(
            super::events(&[0x08, 0x01]).unwrap_err(),
            "events: invalid wire type: Varint (expected LengthDelimited)"
        );
        // Unknown fields of the request are skipped.
        let mut with_unknown = vec![0x10, 0x07];
        with_unknown.extend_from_slice(&request);
        assert_eq!(super::events(&with_unknown).unwrap().len(), 3);
    }

    #[test]
    fn valid_events_publish_what_the_decoded_path_publishes() {
        let mut e = event();
        both(&e.encode_to_vec());
        e.model_version = "v3".into();
        e.endpoint = "explain".into();
        e.timestamp_ms = NOW - 1000;
        e.status = 2;
        e.batch_size = 4;
        e.received_at_ms = 5;
        both(&e.encode_to_vec());
        let l = LabelEvent {
            event_id: "e1".into(),
            model: "fraud".into(),
            value: Some(1.5),
            ..LabelEvent::default()
        };
        both(&l.encode_to_vec());
    }

    #[test]
    fn repeated_fields_merge_as_prost_merges() {
        let e = event();
        // A second `prediction` merges into the first; a second `model`
        // wins; a second entry of a map key wins.
        let mut bytes = e.encode_to_vec();
        let extra = InferenceEvent {
            model: "other".into(),
            prediction: Some(Prediction {
                value: Some(2.0),
                scores: HashMap::from([("a".into(), 0.9)]),
                ..Prediction::default()
            }),
            features: HashMap::from([(
                "amount".into(),
                FeatureValue {
                    kind: Some(feature_value::Kind::Number(f64::NAN)),
                },
            )]),
            ..InferenceEvent::default()
        };
        bytes.extend(extra.encode_to_vec());
        both(&bytes);
        let mut view = InferenceRef::default();
        inference(&bytes, &mut view).unwrap();
        assert_eq!(view.model, "other");
        assert_eq!(view.features.len(), 4);
        let p = view.prediction.as_ref().unwrap();
        assert_eq!((p.score, p.value, p.scores.len()), (Some(0.8), Some(2.0), 2));
        // The NaN amount came last: it wins, and is rejected.
        let checked = validate::check_inference_ref(&view, &Limits::default(), NOW);
        assert_eq!(
            checked.unwrap_err(),
            ("features.amount".to_string(), "must be finite, found NaN".to_string())
        );
    }

    #[test]
    fn malformed_events_are_rejected_naming_the_field() {
        let mut view = InferenceRef::default();
        // latency_ms (6) sent as a varint.
        let err = inference(&[0x30, 0x01], &mut view).unwrap_err();
        assert_eq!(
            err,
            (
                "latency_ms".to_string(),
                "malformed protobuf: invalid wire type: Varint (expected SixtyFourBit)".to_string()
            )
        );
        // event_id that is not UTF-8.
        let err = inference(&[0x0a, 0x01, 0xff], &mut view).unwrap_err();
        assert_eq!(err.0, "event_id");
        assert!(err.1.contains("UTF-8"), "{}", err.1);
        // A truncated feature entry.
        let err = inference(&[0x5a, 0x03, 0x0a, 0x05, 0x61], &mut view).unwrap_err();
        assert_eq!(err.0, "features");
        for bytes in [
            &[0x30, 0x01][..],
            &[0x0a, 0x01, 0xff],
            &[0x5a, 0x03, 0x0a, 0x05, 0x61],
            &[0x07],
            &[0x0b, 0x0c],
            &[0x0b, 0x14],
        ] {
            both(bytes);
        }
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped() {
        let mut bytes = event().encode_to_vec();
        // Field 99 varint, field 100 fixed32, field 101 a group holding a
        // varint.
        bytes.extend([
            0x98, 0x06, 0x01, 0xa5, 0x06, 1, 2, 3, 4, 0xab, 0x06, 0x08, 0x01, 0xac, 0x06,
        ]);
        both(&bytes);
        let mut view = InferenceRef::default();
        inference(&bytes, &mut view).unwrap();
    }

    fn mutated() -> impl Strategy<Value = Vec<u8>> {
        let base = {
            let mut e = event();
            e.model_version = "v1".into();
            let mut bytes = e.encode_to_vec();
            bytes.extend(
                LabelEvent {
                    event_id: "x".into(),
                    label: Some("1".into()),
                    ..LabelEvent::default()
                }
                .encode_to_vec(),
            );
            bytes
        };
        let len = base.len();
        prop::collection::vec((0..len, any::<u8>(), 0u8..3), 0..4).prop_map(move |edits| {
            let mut bytes = base.clone();
            for (at, byte, op) in edits {
                let at = at.min(bytes.len().saturating_sub(1));
                match op {
                    0 if !bytes.is_empty() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
            }
            bytes
        })
    }

    /// The fuzz seed corpus (and every crashing input the fuzzer found,
    /// kept there) goes through the differential check on every test run.
    #[test]
    fn fuzz_seeds_agree_with_prost() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/proto_events");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            both(&bytes);
            if let Ok(ranges) = super::events(&bytes) {
                for range in ranges {
                    both(&bytes[range]);
                }
            }
            n += 1;
        }
        assert!(n >= 8, "seed corpus missing: {n} files in {dir}");
        let valid = std::fs::read(format!("{dir}/inference")).unwrap();
        let mut view = InferenceRef::default();
        inference(&valid, &mut view).unwrap();
        assert_eq!((view.event_id, view.features.len()), ("e1", 4));
        validate::check_inference_ref(&view, &Limits::default(), NOW).unwrap();
    }

    /// Mostly valid: a short name; now and then empty, a control
    /// character, or too long for an identifier.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            40 => "[a-c]{1,3}",
            1 => Just(String::new()),
            1 => Just("\u{7}".to_string()),
            1 => Just("x".repeat(300)),
        ]
    }

    /// Mostly a probability; now and then negative, not finite or huge.
    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            40 => 0.0..1.0f64,
            1 => -1.0..0.0f64,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(1e12),
        ]
    }

    fn feature() -> impl Strategy<Value = FeatureValue> {
        let kind = prop_oneof![
            number().prop_map(feature_value::Kind::Number),
            text().prop_map(feature_value::Kind::Text),
            any::<bool>().prop_map(feature_value::Kind::Flag),
            any::<bool>().prop_map(feature_value::Kind::Missing),
        ];
        prop::option::weighted(0.9, kind).prop_map(|kind| FeatureValue { kind })
    }

    /// Inference events of every shape, valid or not, with the odd field
    /// sent twice (a second part appended: last wins, or merged).
    fn structured() -> impl Strategy<Value = Vec<u8>> {
        let prediction = (
            prop::option::of(number()),
            prop::option::of(text()),
            prop::option::of(number()),
            prop::collection::hash_map(text(), number(), 0..3),
        )
            .prop_map(|(score, label, value, scores)| Prediction {
                score,
                label,
                value,
                scores,
            });
        let time = prop_oneof![4 => Just(0i64), 4 => Just(NOW - 1), 1 => Just(-5), 1 => Just(NOW * 2)];
        let head = (text(), text(), text(), text(), time);
        let body = (
            number(),
            prop_oneof![8 => 0i32..3, 1 => Just(7)],
            text(),
            prop_oneof![4 => Just(0u32), 4 => Just(3), 1 => Just(u32::MAX)],
            prop::option::of(prediction),
            prop::collection::hash_map(text(), feature(), 0..5),
            prop::collection::hash_map(text(), text(), 0..3),
        );
        let tail = prop::option::of((text(), prop::collection::hash_map(text(), feature(), 0..2)));
        (head, body, tail).prop_map(
            |((event_id, model, model_version, endpoint, timestamp_ms), body, tail)| {
                let (latency_ms, status, error, batch_size, prediction, features, tags) = body;
                let e = InferenceEvent {
                    event_id,
                    model,
                    model_version,
                    endpoint,
                    timestamp_ms,
                    latency_ms,
                    status,
                    error,
                    batch_size,
                    prediction,
                    features,
                    tags,
                    received_at_ms: 0,
                };
                let mut bytes = e.encode_to_vec();
                if let Some((model, features)) = tail {
                    bytes.extend(
                        InferenceEvent {
                            model,
                            features,
                            ..InferenceEvent::default()
                        }
                        .encode_to_vec(),
                    );
                }
                bytes
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4))]

        #[test]
        fn structured_events_are_often_valid(batch in prop::collection::vec(structured(), 200)) {
            // The generator is worth its name only if the accepting path
            // is taken often, not just the rejections.
            let accepted = batch
                .iter()
                .filter(|bytes| {
                    let mut view = InferenceRef::default();
                    inference(bytes, &mut view).is_ok()
                        && validate::check_inference_ref(&view, &Limits::default(), NOW).is_ok()
                })
                .count();
            prop_assert!(accepted >= 20, "only {accepted} of 200 generated events are valid");
        }
    }

    proptest! {
        #[test]
        fn structured_events_agree_with_prost(bytes in structured()) {
            both(&bytes);
        }

        #[test]
        fn any_bytes_agree_with_prost(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            both(&bytes);
            let _ = super::events(&bytes);
        }

        #[test]
        fn mutated_events_agree_with_prost(bytes in mutated()) {
            both(&bytes);
        }
    }
}
