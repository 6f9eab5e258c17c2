//! Pure validation: JSON values and protobuf messages in, valid events or
//! precise rejections (index, field path, reason) out. No I/O here.

use std::collections::HashMap;

use mlwatch_proto::v1::{FeatureValue, InferenceEvent, InferenceStatus, LabelEvent, Prediction, feature_value};
pub use mlwatch_proto::view::{FeatureRef, InferenceRef, LabelRef, PredictionRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Input limits, all configurable (`[limits]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body (HTTP) or message (gRPC), in bytes.
    pub max_body_bytes: usize,
    /// Most events in one request.
    pub max_events_per_request: usize,
    /// Most features in one event.
    pub max_features: usize,
    /// Most tags in one event.
    pub max_tags: usize,
    /// Longest string value (feature, label, error text), in bytes.
    pub max_string_bytes: usize,
    /// Longest identifier (event_id, model, version, endpoint, names), in bytes.
    pub max_id_bytes: usize,
    /// How far in the future a timestamp may be, in seconds.
    pub max_future_secs: i64,
    /// How far in the past a timestamp may be, in seconds (backfills).
    pub max_past_secs: i64,
    /// Largest accepted latency, in milliseconds.
    pub max_latency_ms: f64,
    /// Largest accepted batch size.
    pub max_batch_size: u32,
    /// Most distinct (model, version) pairs that get their own metric
    /// series; later new ones share `_overflow` series
    /// (`mlwatch_metric_series_folded_total` counts their events).
    pub max_metric_series: usize,
    /// Most distinct endpoints that get their own latency series.
    pub max_metric_endpoints: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 * 1024 * 1024,
            max_events_per_request: 10_000,
            max_features: 512,
            max_tags: 16,
            max_string_bytes: 1024,
            max_id_bytes: 256,
            max_future_secs: 300,
            max_past_secs: 30 * 24 * 3600,
            max_latency_ms: 3_600_000.0,
            max_batch_size: 1_000_000,
            max_metric_series: 1_000,
            max_metric_endpoints: 100,
        }
    }
}

/// Why one event was rejected.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rejection {
    /// Position of the event in the request (0-based; the line for JSON Lines).
    pub index: usize,
    /// Path of the offending field, e.g. `features.amount`; empty for the
    /// event as a whole.
    pub field: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(index: usize, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            index,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A check's failure: the field path and the reason.
pub type Check<T> = mlwatch_proto::view::Checked<T>;

fn err<T>(field: impl Into<String>, reason: impl Into<String>) -> Check<T> {
    Err((field.into(), reason.into()))
}

/// Splits a request body into JSON values: one object, an array of objects,
/// or JSON Lines. A line that does not parse is rejected on its own, and so
/// is an event with a key written twice (JSON leaves its meaning open).
pub fn split_body(body: &[u8]) -> Result<Vec<Result<Value, Rejection>>, Rejection> {
    let text = std::str::from_utf8(body).map_err(|e| Rejection::new(0, "", format!("body is not UTF-8: {e}")))?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Rejection::new(
            0,
            "",
            "empty body: expected a JSON object, an array or JSON Lines",
        ));
    }
    if let Ok(checked) = serde_json::from_str::<Strict>(trimmed) {
        return Ok(match checked {
            Strict::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| item.into_event(i))
                .collect(),
            other => vec![other.into_event(0)],
        });
    }
    if trimmed.starts_with('[') {
        let e = serde_json::from_str::<Value>(trimmed).unwrap_err();
        return Err(Rejection::new(0, "", format!("malformed JSON array: {e}")));
    }
    Ok(trimmed
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| match serde_json::from_str::<Strict>(line) {
            Ok(checked) => checked.into_event(i),
            Err(e) => Err(Rejection::new(i, "", format!("malformed JSON line: {e}"))),
        })
        .collect())
}

/// A JSON value that remembers the first key written twice in it (its
/// path), so that one event with a repeated key is rejected and the others
/// of the request are not.
enum Strict {
    Array(Vec<Strict>),
    Value { value: Value, repeated: Option<String> },
}

impl Strict {
    fn into_value(self) -> (Value, Option<String>) {
        match self {
            Strict::Value { value, repeated } => (value, repeated),
            Strict::Array(items) => {
                let mut repeated = None;
                let values = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let (v, r) = item.into_value();
                        if repeated.is_none() {
                            repeated = r.map(|r| format!("{i}.{r}"));
                        }
                        v
                    })
                    .collect();
                (Value::Array(values), repeated)
            }
        }
    }

    fn into_event(self, index: usize) -> Result<Value, Rejection> {
        match self.into_value() {
            (value, None) => Ok(value),
            (_, Some(path)) => Err(Rejection::new(
                index,
                path.trim_end_matches('.'),
                "key given twice (JSON leaves its value open)",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                Ok(plain(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                Ok(plain(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                Ok(plain(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
                Ok(plain(
                    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                Ok(plain(Value::String(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Strict, E> {
                Ok(plain(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(plain(Value::Null))
            }
            fn visit_none<E>(self) -> Result<Strict, E> {
                Ok(plain(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Strict>()? {
                    items.push(item);
                }
                Ok(Strict::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                let mut out = Map::new();
                let mut repeated = None;
                while let Some(key) = map.next_key::<String>()? {
                    let (value, inner) = map.next_value::<Strict>()?.into_value();
                    if repeated.is_none() {
                        repeated = inner.map(|r| format!("{key}.{r}"));
                    }
                    if out.contains_key(&key) && repeated.is_none() {
                        repeated = Some(format!("{key}."));
                    }
                    out.insert(key, value);
                }
                Ok(Strict::Value {
                    value: Value::Object(out),
                    repeated,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn plain(value: Value) -> Strict {
    Strict::Value { value, repeated: None }
}

/// The fields of an inference event in the public JSON shape.
pub const INFERENCE_FIELDS: &[&str] = &[
    "event_id",
    "model",
    "model_version",
    "endpoint",
    "timestamp",
    "latency_ms",
    "status",
    "error",
    "batch_size",
    "prediction",
    "features",
    "tags",
];

/// The fields of a label event in the public JSON shape.
pub const LABEL_FIELDS: &[&str] = &["event_id", "model", "timestamp", "label", "value"];

/// Converts one JSON value to an inference event and validates it.
pub fn inference_from_json(
    index: usize,
    value: &Value,
    limits: &Limits,
    now_ms: i64,
) -> Result<InferenceEvent, Rejection> {
    inference_json(value, limits, now_ms).map_err(|(f, r)| Rejection::new(index, f, r))
}

/// Converts one JSON value to a label event and validates it.
pub fn label_from_json(index: usize, value: &Value, limits: &Limits, now_ms: i64) -> Result<LabelEvent, Rejection> {
    label_json(value, limits, now_ms).map_err(|(f, r)| Rejection::new(index, f, r))
}

/// Validates an inference event that arrived as protobuf (gRPC), filling
/// defaults the same way as for JSON.
pub fn inference_proto(
    index: usize,
    event: &mut InferenceEvent,
    limits: &Limits,
    now_ms: i64,
) -> Result<(), Rejection> {
    check_inference(event, limits, now_ms).map_err(|(f, r)| Rejection::new(index, f, r))
}

/// Validates a label event that arrived as protobuf (gRPC).
pub fn label_proto(index: usize, event: &mut LabelEvent, limits: &Limits, now_ms: i64) -> Result<(), Rejection> {
    check_label(event, limits, now_ms).map_err(|(f, r)| Rejection::new(index, f, r))
}

fn object<'a>(value: &'a Value, known: &[&str]) -> Check<&'a Map<String, Value>> {
    let Value::Object(map) = value else {
        return err("", format!("expected a JSON object, found {}", kind(value)));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return err(unknown.clone(), "unknown field");
    }
    Ok(map)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn opt_str(map: &Map<String, Value>, field: &str) -> Check<Option<String>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => err(field, format!("expected a string, found {}", kind(other))),
    }
}

fn req_str(map: &Map<String, Value>, field: &str) -> Check<String> {
    opt_str(map, field)?.ok_or_else(|| (field.to_string(), "missing required field".to_string()))
}

fn opt_num(map: &Map<String, Value>, field: &str) -> Check<Option<f64>> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => err(field, format!("expected a number, found {}", kind(other))),
    }
}

/// A class label may be sent as a string, an integer or a bool.
fn class_label(value: &Value, field: &str) -> Check<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::Bool(b) => Ok(if *b { "1" } else { "0" }.to_string()),
        other => err(
            field,
            format!(
                "expected a class label (string, integer or bool), found {}",
                kind(other)
            ),
        ),
    }
}

/// Why an explicit timestamp of 0 is refused (0 is how protobuf says
/// "unset", so JSON must not mean 1970 by it either).
const EPOCH_ZERO: &str = "0 (1970-01-01) is not an event time: leave the field out to use the arrival time";

fn timestamp(map: &Map<String, Value>) -> Check<Option<i64>> {
    match map.get("timestamp") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => err("timestamp", EPOCH_ZERO),
            Some(ms) => Ok(Some(ms)),
            None => err("timestamp", "expected integer epoch milliseconds or an RFC 3339 string"),
        },
        Some(Value::String(s)) => match parse_rfc3339_ms(s) {
            Some(0) => err("timestamp", EPOCH_ZERO),
            Some(ms) => Ok(Some(ms)),
            None => err("timestamp", format!("not an RFC 3339 timestamp: {s:?}")),
        },
        Some(other) => err(
            "timestamp",
            format!("expected epoch milliseconds or RFC 3339, found {}", kind(other)),
        ),
    }
}

/// Formats epoch milliseconds as RFC 3339 (UTC); the inverse of
/// [`parse_rfc3339_ms`].
pub fn format_rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 timestamp to epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn inference_json(value: &Value, limits: &Limits, now_ms: i64) -> Check<InferenceEvent> {
    let map = object(value, INFERENCE_FIELDS)?;
    let event_id = req_str(map, "event_id")?;
    let model = req_str(map, "model")?;
    let status = match opt_str(map, "status")?.as_deref() {
        None | Some("ok") => InferenceStatus::Ok,
        Some("error") => InferenceStatus::Error,
        Some(other) => return err("status", format!("expected \"ok\" or \"error\", found {other:?}")),
    };
    let latency_ms =
        opt_num(map, "latency_ms")?.ok_or_else(|| ("latency_ms".to_string(), "missing required field".to_string()))?;
    let batch_size = match map.get("batch_size") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(0) => return err("batch_size", "must be at least 1, found 0 (leave it out for 1)"),
            Some(n) => n,
            None => return err("batch_size", format!("expected a positive integer, found {n}")),
        },
        Some(other) => {
            return err(
                "batch_size",
                format!("expected a positive integer, found {}", kind(other)),
            );
        }
    };
    let prediction = match map.get("prediction") {
        None | Some(Value::Null) => None,
        Some(v) => Some(prediction_json(v)?),
    };
    let mut features = HashMap::new();
    match map.get("features") {
        None | Some(Value::Null) => {}
        Some(Value::Object(fs)) => {
            if fs.len() > limits.max_features {
                return err(
                    "features",
                    format!("too many features: {} > {}", fs.len(), limits.max_features),
                );
            }
            for (name, v) in fs {
                let path = || format!("features.{name}");
                let kind_ = match v {
                    Value::Null => feature_value::Kind::Missing(true),
                    Value::Bool(b) => feature_value::Kind::Flag(*b),
                    Value::String(s) => feature_value::Kind::Text(s.clone()),
                    Value::Number(n) => match n.as_f64() {
                        Some(x) => feature_value::Kind::Number(x),
                        None => return err(path(), "number out of range"),
                    },
                    other => {
                        return err(
                            path(),
                            format!(
                                "wrong feature type: expected a number, string, bool or null, found {}",
                                kind(other)
                            ),
                        );
                    }
                };
                features.insert(name.clone(), FeatureValue { kind: Some(kind_) });
            }
        }
        Some(other) => return err("features", format!("expected an object, found {}", kind(other))),
    }
    let mut tags = HashMap::new();
    match map.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(ts)) => {
            for (name, v) in ts {
                match v {
                    Value::String(s) => {
                        tags.insert(name.clone(), s.clone());
                    }
                    other => {
                        return err(
                            format!("tags.{name}"),
                            format!("expected a string, found {}", kind(other)),
                        );
                    }
                }
            }
        }
        Some(other) => return err("tags", format!("expected an object, found {}", kind(other))),
    }
    let mut event = InferenceEvent {
        event_id,
        model,
        model_version: opt_str(map, "model_version")?.unwrap_or_default(),
        endpoint: opt_str(map, "endpoint")?.unwrap_or_default(),
        timestamp_ms: timestamp(map)?.unwrap_or(0),
        latency_ms,
        status: status as i32,
        error: opt_str(map, "error")?.unwrap_or_default(),
        batch_size,
        prediction,
        features,
        tags,
        received_at_ms: 0,
    };
    check_inference(&mut event, limits, now_ms)?;
    Ok(event)
}

fn prediction_json(value: &Value) -> Check<Prediction> {
    let map = match value {
        Value::Object(m) => m,
        other => return err("prediction", format!("expected an object, found {}", kind(other))),
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["score", "label", "value", "scores"].contains(&k.as_str()))
    {
        return err(format!("prediction.{unknown}"), "unknown field");
    }
    let field = |name: &str| format!("prediction.{name}");
    let score = match map.get("score") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => return err(field("score"), format!("expected a number, found {}", kind(other))),
    };
    let value_ = match map.get("value") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => return err(field("value"), format!("expected a number, found {}", kind(other))),
    };
    let label = match map.get("label") {
        None | Some(Value::Null) => None,
        Some(v) => Some(class_label(v, &field("label"))?),
    };
    let mut scores = HashMap::new();
    match map.get("scores") {
        None | Some(Value::Null) => {}
        Some(Value::Object(s)) => {
            for (class, p) in s {
                match p.as_f64() {
                    Some(p) => {
                        scores.insert(class.clone(), p);
                    }
                    None => {
                        return err(
                            format!("prediction.scores.{class}"),
                            format!("expected a number, found {}", kind(p)),
                        );
                    }
                }
            }
        }
        Some(other) => return err(field("scores"), format!("expected an object, found {}", kind(other))),
    }
    Ok(Prediction {
        score,
        label,
        value: value_,
        scores,
    })
}

fn label_json(value: &Value, limits: &Limits, now_ms: i64) -> Check<LabelEvent> {
    let map = object(value, LABEL_FIELDS)?;
    let label = match map.get("label") {
        None | Some(Value::Null) => None,
        Some(v) => Some(class_label(v, "label")?),
    };
    let mut event = LabelEvent {
        event_id: req_str(map, "event_id")?,
        model: req_str(map, "model")?,
        timestamp_ms: timestamp(map)?.unwrap_or(0),
        label,
        value: opt_num(map, "value")?,
        received_at_ms: 0,
    };
    check_label(&mut event, limits, now_ms)?;
    Ok(event)
}

fn check_id(field: &str, value: &str, limits: &Limits, required: bool) -> Check<()> {
    if value.is_empty() {
        return if required {
            err(field, "missing required field")
        } else {
            Ok(())
        };
    }
    if value.len() > limits.max_id_bytes {
        return err(
            field,
            format!("too long: {} bytes > {}", value.len(), limits.max_id_bytes),
        );
    }
    if value.chars().any(|c| c.is_control()) {
        return err(field, "contains control characters");
    }
    Ok(())
}

fn check_text(field: &str, value: &str, limits: &Limits) -> Check<()> {
    if value.len() > limits.max_string_bytes {
        return err(
            field,
            format!("string too long: {} bytes > {}", value.len(), limits.max_string_bytes),
        );
    }
    Ok(())
}

fn check_time(ts: &mut i64, limits: &Limits, now_ms: i64) -> Check<()> {
    if *ts == 0 {
        *ts = now_ms;
        return Ok(());
    }
    if *ts > now_ms + limits.max_future_secs * 1000 {
        return err(
            "timestamp",
            format!("{} ms is more than {} s in the future", ts, limits.max_future_secs),
        );
    }
    if *ts < now_ms - limits.max_past_secs * 1000 {
        return err(
            "timestamp",
            format!("{} ms is more than {} s in the past", ts, limits.max_past_secs),
        );
    }
    Ok(())
}

/// Runs `check` on one entry of a map field and, only when it fails, names
/// the entry in the answer (`features.amount`): no allocation per valid
/// entry.
fn in_entry(prefix: &str, name: &str, check: impl FnOnce(&str) -> Check<()>) -> Check<()> {
    check("").map_err(|(_, reason)| (format!("{prefix}.{name}"), reason))
}

fn check_probability(field: &str, p: f64) -> Check<()> {
    if !p.is_finite() || !(0.0..=1.0).contains(&p) {
        return err(field, format!("expected a probability in [0, 1], found {p}"));
    }
    Ok(())
}

/// The defaults validation fills into a valid event, and when the
/// collector received it. Applied to a decoded event ([`Fill::apply`]) or
/// appended to its protobuf bytes ([`Fill::append_inference`]), where
/// protobuf's last-field-wins rule makes them override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    /// `model_version` was empty: it becomes [`DEFAULT_MODEL_VERSION`].
    pub model_version: bool,
    /// `endpoint` was empty: it becomes [`DEFAULT_ENDPOINT`].
    pub endpoint: bool,
    /// `timestamp_ms` was 0: it becomes this (now).
    pub timestamp_ms: Option<i64>,
    /// `status` was unspecified: it becomes OK.
    pub status: bool,
    /// `batch_size` was 0: it becomes 1.
    pub batch_size: bool,
    /// When the collector accepted the event.
    pub received_at_ms: i64,
}

/// The version of an event that names none.
pub const DEFAULT_MODEL_VERSION: &str = "unversioned";
/// The endpoint of an event that names none.
pub const DEFAULT_ENDPOINT: &str = "predict";

impl Fill {
    /// Fills the defaults into a decoded inference event.
    pub fn apply(&self, e: &mut InferenceEvent) {
        if self.model_version {
            e.model_version = DEFAULT_MODEL_VERSION.into();
        }
        if self.endpoint {
            e.endpoint = DEFAULT_ENDPOINT.into();
        }
        if let Some(ts) = self.timestamp_ms {
            e.timestamp_ms = ts;
        }
        if self.status {
            e.status = InferenceStatus::Ok as i32;
        }
        if self.batch_size {
            e.batch_size = 1;
        }
        e.received_at_ms = self.received_at_ms;
    }

    /// Fills the defaults into a decoded label event.
    pub fn apply_label(&self, e: &mut LabelEvent) {
        if let Some(ts) = self.timestamp_ms {
            e.timestamp_ms = ts;
        }
        e.received_at_ms = self.received_at_ms;
    }

    /// Appends the defaults as protobuf fields of `InferenceEvent`, to
    /// follow the event's own bytes.
    pub fn append_inference(&self, out: &mut Vec<u8>) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let string = |out: &mut Vec<u8>, tag: u32, s: &str| {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        };
        let varint = |out: &mut Vec<u8>, tag: u32, v: u64| {
            encode_key(tag, WireType::Varint, out);
            encode_varint(v, out);
        };
        if self.model_version {
            string(out, 3, DEFAULT_MODEL_VERSION);
        }
        if self.endpoint {
            string(out, 4, DEFAULT_ENDPOINT);
        }
        if let Some(ts) = self.timestamp_ms {
            varint(out, 5, ts as u64);
        }
        if self.status {
            varint(out, 7, InferenceStatus::Ok as u64);
        }
        if self.batch_size {
            varint(out, 9, 1);
        }
        varint(out, 13, self.received_at_ms as u64);
    }

    /// Appends the defaults as protobuf fields of `LabelEvent`.
    pub fn append_label(&self, out: &mut Vec<u8>) {
        use prost::encoding::{WireType, encode_key, encode_varint};
        if let Some(ts) = self.timestamp_ms {
            encode_key(3, WireType::Varint, out);
            encode_varint(ts as u64, out);
        }
        encode_key(6, WireType::Varint, out);
        encode_varint(self.received_at_ms as u64, out);
    }
}

fn check_inference(e: &mut InferenceEvent, limits: &Limits, now_ms: i64) -> Check<()> {
    let fill = check_inference_ref(&InferenceRef::of(e), limits, now_ms)?;
    fill.apply(e);
    Ok(())
}

/// Validates an inference event (every rule, in a fixed order) and says
/// which defaults it takes.
pub fn check_inference_ref(e: &InferenceRef<'_>, limits: &Limits, now_ms: i64) -> Check<Fill> {
    check_id("event_id", e.event_id, limits, true)?;
    check_id("model", e.model, limits, true)?;
    check_id("model_version", e.model_version, limits, false)?;
    check_id("endpoint", e.endpoint, limits, false)?;
    let mut ts = e.timestamp_ms;
    check_time(&mut ts, limits, now_ms)?;
    if !e.latency_ms.is_finite() {
        return err("latency_ms", format!("must be finite, found {}", e.latency_ms));
    }
    if e.latency_ms < 0.0 {
        return err("latency_ms", format!("must not be negative, found {}", e.latency_ms));
    }
    if e.latency_ms > limits.max_latency_ms {
        return err(
            "latency_ms",
            format!("{} ms exceeds the limit of {} ms", e.latency_ms, limits.max_latency_ms),
        );
    }
    if e.status != InferenceStatus::Unspecified as i32 && InferenceStatus::try_from(e.status).is_err() {
        return err("status", format!("unknown status {}", e.status));
    }
    check_text("error", e.error, limits)?;
    let batch_size = if e.batch_size == 0 { 1 } else { e.batch_size };
    if batch_size > limits.max_batch_size {
        return err(
            "batch_size",
            format!("{} exceeds the limit of {}", batch_size, limits.max_batch_size),
        );
    }
    if let Some(p) = &e.prediction {
        if let Some(s) = p.score {
            check_probability("prediction.score", s)?;
        }
        if let Some(v) = p.value
            && !v.is_finite()
        {
            return err("prediction.value", format!("must be finite, found {v}"));
        }
        if let Some(l) = p.label {
            check_text("prediction.label", l, limits)?;
        }
        for (class, prob) in &p.scores {
            check_id("prediction.scores", class, limits, true)?;
            in_entry("prediction.scores", class, |f| check_probability(f, *prob))?;
        }
    }
    if e.features.len() > limits.max_features {
        return err(
            "features",
            format!("too many features: {} > {}", e.features.len(), limits.max_features),
        );
    }
    for (name, value) in &e.features {
        in_entry("features", name, |f| {
            check_id(f, name, limits, true)?;
            match value {
                FeatureRef::Number(x) if !x.is_finite() => err(f, format!("must be finite, found {x}")),
                FeatureRef::Text(s) => check_text(f, s, limits),
                FeatureRef::Unset => err(f, "feature value has no kind"),
                _ => Ok(()),
            }
        })?;
    }
    if e.tags.len() > limits.max_tags {
        return err("tags", format!("too many tags: {} > {}", e.tags.len(), limits.max_tags));
    }
    for (name, value) in &e.tags {
        in_entry("tags", name, |f| {
            check_id(f, name, limits, true)?;
            check_id(f, value, limits, false)
        })?;
    }
    Ok(Fill {
        model_version: e.model_version.is_empty(),
        endpoint: e.endpoint.is_empty(),
        timestamp_ms: (e.timestamp_ms == 0).then_some(ts),
        status: e.status == InferenceStatus::Unspecified as i32,
        batch_size: e.batch_size == 0,
        received_at_ms: now_ms,
    })
}

fn check_label(e: &mut LabelEvent, limits: &Limits, now_ms: i64) -> Check<()> {
    let fill = check_label_ref(&LabelRef::of(e), limits, now_ms)?;
    fill.apply_label(e);
    Ok(())
}

/// Validates a label event and says which defaults it takes.
pub fn check_label_ref(e: &LabelRef<'_>, limits: &Limits, now_ms: i64) -> Check<Fill> {
    check_id("event_id", e.event_id, limits, true)?;
    check_id("model", e.model, limits, true)?;
    let mut ts = e.timestamp_ms;
    check_time(&mut ts, limits, now_ms)?;
    match (e.label, e.value) {
        (None, None) => {
            return err(
                "label",
                "missing: a label event needs `label` (classifiers) or `value` (regressors)",
            );
        }
        (Some(_), Some(_)) => return err("value", "give either `label` or `value`, not both"),
        (Some(l), None) => check_text("label", l, limits)?,
        (None, Some(v)) if !v.is_finite() => return err("value", format!("must be finite, found {v}")),
        _ => {}
    }
    Ok(Fill {
        model_version: false,
        endpoint: false,
        timestamp_ms: (e.timestamp_ms == 0).then_some(ts),
        status: false,
        batch_size: false,
        received_at_ms: now_ms,
    })
}

/// One resource sample from a model server (`POST /v1/resources`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSample {
    pub model: String,
    pub model_version: String,
    pub queue_depth: Option<f64>,
    pub memory_usage_bytes: Option<f64>,
    pub gpu_utilization_percent: Option<f64>,
}

const RESOURCE_FIELDS: &[&str] = &[
    "model",
    "model_version",
    "queue_depth",
    "memory_usage_bytes",
    "gpu_utilization_percent",
];

/// Converts one JSON value to a resource sample and validates it.
pub fn resource_from_json(index: usize, value: &Value, limits: &Limits) -> Result<ResourceSample, Rejection> {
    resource_json(value, limits).map_err(|(f, r)| Rejection::new(index, f, r))
}

fn resource_json(value: &Value, limits: &Limits) -> Check<ResourceSample> {
    let map = object(value, RESOURCE_FIELDS)?;
    let model = req_str(map, "model")?;
    check_id("model", &model, limits, true)?;
    let model_version = opt_str(map, "model_version")?.unwrap_or_default();
    check_id("model_version", &model_version, limits, false)?;
    let bounded = |field: &str, max: f64| -> Check<Option<f64>> {
        match opt_num(map, field)? {
            Some(x) if !(0.0..=max).contains(&x) => err(field, format!("expected a value in [0, {max}], found {x}")),
            other => Ok(other),
        }
    };
    let sample = ResourceSample {
        model,
        model_version: if model_version.is_empty() {
            "unversioned".into()
        } else {
            model_version
        },
        queue_depth: bounded("queue_depth", f64::MAX)?,
        memory_usage_bytes: bounded("memory_usage_bytes", f64::MAX)?,
        gpu_utilization_percent: bounded("gpu_utilization_percent", 100.0)?,
    };
    if sample.queue_depth.is_none() && sample.memory_usage_bytes.is_none() && sample.gpu_utilization_percent.is_none() {
        return err(
            "",
            "a resource sample needs queue_depth, memory_usage_bytes or gpu_utilization_percent",
        );
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_795_723_079_957;

    fn good() -> Value {
        json!({"event_id": "b7c1e0", "model": "fraud", "model_version": "v3",
               "endpoint": "predict", "timestamp": "2026-11-26T20:00:00.123Z",
               "latency_ms": 12.5, "status": "ok", "batch_size": 1,
               "prediction": {"score": 0.87, "label": "1"},
               "features": {"amount": 120.5, "country": "DE", "is_new": true, "age": null},
               "tags": {"region": "eu"}})
    }

    #[test]
    fn design_example_is_valid() {
        let e = inference_from_json(0, &good(), &Limits::default(), NOW).unwrap();
        assert_eq!(e.model, "fraud");
        assert_eq!(e.timestamp_ms, 1_795_723_200_123);
        assert_eq!(e.features.len(), 4);
        assert_eq!(e.prediction.unwrap().score, Some(0.87));
    }

    #[test]
    fn bodies_of_every_shape_split() {
        let one = split_body(br#"{"a":1}"#).unwrap();
        assert_eq!(one.len(), 1);
        let arr = split_body(br#"[{"a":1},{"a":2}]"#).unwrap();
        assert_eq!(arr.len(), 2);
        let lines = split_body(b"{\"a\":1}\n\n{\"a\":\n{\"a\":3}\n").unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].is_err());
        assert_eq!(lines[1].as_ref().unwrap_err().index, 1);
        assert!(split_body(b"  ").is_err());
        assert!(split_body(b"[{\"a\":1},").is_err());
    }

    fn reject(mutate: impl FnOnce(&mut Map<String, Value>)) -> Rejection {
        let mut v = good();
        mutate(v.as_object_mut().unwrap());
        inference_from_json(3, &v, &Limits::default(), NOW).unwrap_err()
    }

    #[test]
    fn rejections_name_field_and_reason() {
        let r = reject(|m| {
            m.remove("event_id");
        });
        assert_eq!(
            (r.index, r.field.as_str(), r.reason.as_str()),
            (3, "event_id", "missing required field")
        );
        let r = reject(|m| {
            m.insert("latency_ms".into(), json!(-1));
        });
        assert_eq!(r.field, "latency_ms");
        assert!(r.reason.contains("negative"));
        let r = reject(|m| {
            m.insert("colour".into(), json!(1));
        });
        assert_eq!((r.field.as_str(), r.reason.as_str()), ("colour", "unknown field"));
        let r = reject(|m| {
            m["features"]["nested"] = json!({"x": 1});
        });
        assert_eq!(r.field, "features.nested");
        let r = reject(|m| {
            m.insert("timestamp".into(), json!(NOW + 3_600_000));
        });
        assert!(r.reason.contains("future"));
    }
}
