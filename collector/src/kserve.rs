//! KServe inference-logger CloudEvents (binary mode), pure: no I/O.
//!
//! KServe's logger posts the request and the response of each prediction as
//! two CloudEvents with the same `ce-id`, types
//! `org.kubeflow.serving.inference.request` / `...response`, the payload as
//! the body and the metadata in `ce-*` headers. [`Joiner`] holds whichever
//! half arrives first (bounded in count, bytes and age) and, when the other
//! half arrives, turns the pair into inference events in the DESIGN.md JSON
//! shape, which then go through the ordinary validation. The mapping is
//! documented in docs/collector.md.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The `[cloudevents]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudEventsConfig {
    /// Most half-pairs (a request waiting for its response or the reverse)
    /// held at once; the oldest is dropped (and counted) beyond it.
    pub max_pending: usize,
    /// Most body bytes held by waiting halves.
    pub max_pending_bytes: usize,
    /// How long a half waits for its other half, in seconds.
    pub pending_ttl_secs: i64,
}

impl Default for CloudEventsConfig {
    fn default() -> Self {
        Self {
            max_pending: 10_000,
            max_pending_bytes: 64 * 1024 * 1024,
            pending_ttl_secs: 60,
        }
    }
}

/// Which half of a prediction an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Request,
    Response,
}

/// The `ce-*` metadata of one posted CloudEvent.
#[derive(Debug, Clone, PartialEq)]
pub struct CeMeta {
    pub id: String,
    pub half: Half,
    /// `ce-inferenceservicename`: the model.
    pub service: String,
    /// `ce-endpoint` (`default`, `canary`): the model version.
    pub endpoint: Option<String>,
    /// `ce-component` (`predictor`, `transformer`): the endpoint.
    pub component: Option<String>,
    /// `ce-time` as epoch milliseconds.
    pub time_ms: Option<i64>,
}

/// Parses the `ce-*` headers; `get` returns a header's value by lowercase
/// name. Errors are `(header, reason)`.
pub fn parse_meta<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<CeMeta, (String, String)> {
    let need = |name: &str| {
        get(name)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| (name.to_string(), "missing required header".to_string()))
    };
    let spec = need("ce-specversion")?;
    if !spec.starts_with('1') {
        return Err(("ce-specversion".into(), format!("unsupported version {spec:?}")));
    }
    let id = need("ce-id")?;
    let ty = need("ce-type")?;
    let half = if ty.ends_with(".request") {
        Half::Request
    } else if ty.ends_with(".response") {
        Half::Response
    } else {
        return Err((
            "ce-type".into(),
            format!("expected an inference request or response type, found {ty:?}"),
        ));
    };
    let service = need("ce-inferenceservicename")?;
    let time_ms = match get("ce-time") {
        None => None,
        Some(t) => Some(
            crate::validate::parse_rfc3339_ms(t)
                .ok_or_else(|| ("ce-time".to_string(), format!("not an RFC 3339 timestamp: {t:?}")))?,
        ),
    };
    let opt = |name: &str| get(name).filter(|v| !v.is_empty()).map(str::to_string);
    Ok(CeMeta {
        id,
        half,
        service,
        endpoint: opt("ce-endpoint"),
        component: opt("ce-component"),
        time_ms,
    })
}

struct Waiting {
    meta: CeMeta,
    body: Value,
    bytes: usize,
    arrived_ms: i64,
}

/// What became of a posted half.
#[derive(Debug, PartialEq)]
pub enum Joined {
    /// Held until the other half arrives.
    Pending,
    /// Both halves are here: the inference events, in the public JSON shape.
    Events(Vec<Value>),
}

/// Joins request and response halves by `ce-id`, in bounded memory.
pub struct Joiner {
    config: CloudEventsConfig,
    waiting: HashMap<String, Waiting>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Joiner {
    pub fn new(config: CloudEventsConfig) -> Self {
        Self {
            config,
            waiting: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Halves waiting now.
    pub fn pending(&self) -> usize {
        self.waiting.len()
    }

    /// Drops every waiting half (at shutdown: they live only in memory)
    /// and says how many there were.
    pub fn drain(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        self.order.clear();
        self.bytes = 0;
        n
    }

    /// Offers one half at `now_ms`. Returns what became of it and how many
    /// waiting halves were dropped (expired or evicted) to stay in bounds.
    pub fn offer(
        &mut self,
        meta: CeMeta,
        body: Value,
        bytes: usize,
        now_ms: i64,
    ) -> (Result<Joined, (String, String)>, usize) {
        let dropped = self.expire(now_ms);
        if let Some(other) = self.waiting.get(&meta.id) {
            if other.meta.half == meta.half {
                return (
                    Err((
                        "ce-id".into(),
                        format!("duplicate {:?} half for id {:?}", meta.half, meta.id),
                    )),
                    dropped,
                );
            }
            let other = self.remove(&meta.id).expect("present");
            let (req, resp) = match meta.half {
                Half::Request => ((meta, body, now_ms), (other.meta, other.body, other.arrived_ms)),
                Half::Response => ((other.meta, other.body, other.arrived_ms), (meta, body, now_ms)),
            };
            return (to_events(req, resp).map(Joined::Events), dropped);
        }
        let mut evicted = 0;
        while !self.order.is_empty()
            && (self.waiting.len() >= self.config.max_pending || self.bytes + bytes > self.config.max_pending_bytes)
        {
            if let Some(id) = self.order.pop_front()
                && self.remove(&id).is_some()
            {
                evicted += 1;
            }
        }
        self.bytes += bytes;
        self.order.push_back(meta.id.clone());
        self.waiting.insert(
            meta.id.clone(),
            Waiting {
                meta,
                body,
                bytes,
                arrived_ms: now_ms,
            },
        );
        (Ok(Joined::Pending), dropped + evicted)
    }

    fn remove(&mut self, id: &str) -> Option<Waiting> {
        let w = self.waiting.remove(id)?;
        self.bytes -= w.bytes;
        Some(w)
    }

    fn expire(&mut self, now_ms: i64) -> usize {
        let ttl_ms = self.config.pending_ttl_secs * 1000;
        let mut n = 0;
        while let Some(id) = self.order.front() {
            match self.waiting.get(id) {
                Some(w) if now_ms - w.arrived_ms <= ttl_ms => break,
                Some(_) => {
                    let id = self.order.pop_front().expect("front");
                    self.remove(&id);
                    n += 1;
                }
                // Already joined: a stale entry in the order queue.
                None => {
                    self.order.pop_front();
                }
            }
        }
        n
    }
}

/// Splits a KServe request body (V1 `instances`, V2 `inputs`) into one
/// feature map per instance.
fn instances(body: &Value) -> Result<Vec<Map<String, Value>>, (String, String)> {
    if let Some(items) = body.get("instances").and_then(Value::as_array) {
        return Ok(items.iter().map(features_of).collect());
    }
    if let Some(inputs) = body.get("inputs").and_then(Value::as_array) {
        let tensors = tensors(inputs, "inputs")?;
        let n = tensors.first().map_or(0, |t| t.rows);
        let mut out = vec![Map::new(); n];
        for t in &tensors {
            if t.rows != n {
                return Err((
                    format!("inputs.{}", t.name),
                    format!("has {} rows, the first input has {n}", t.rows),
                ));
            }
            for (i, row) in t.data.chunks(t.width.max(1)).enumerate().take(n) {
                if row.len() == 1 {
                    out[i].insert(t.name.clone(), row[0].clone());
                } else {
                    for (j, v) in row.iter().enumerate() {
                        out[i].insert(format!("{}.{j}", t.name), v.clone());
                    }
                }
            }
        }
        return Ok(out);
    }
    Err((
        "body".into(),
        "expected a KServe request with `instances` (V1) or `inputs` (V2)".into(),
    ))
}

fn features_of(instance: &Value) -> Map<String, Value> {
    match instance {
        Value::Object(m) => m.clone(),
        Value::Array(xs) => xs.iter().enumerate().map(|(i, v)| (i.to_string(), v.clone())).collect(),
        scalar => std::iter::once(("0".to_string(), scalar.clone())).collect(),
    }
}

struct Tensor {
    name: String,
    rows: usize,
    width: usize,
    data: Vec<Value>,
}

/// V2 tensors: `{name, shape, data}`; `data` may be nested, it is flattened.
fn tensors(items: &[Value], what: &str) -> Result<Vec<Tensor>, (String, String)> {
    items
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| k.to_string(), str::to_string);
            let shape: Vec<usize> = t
                .get("shape")
                .and_then(Value::as_array)
                .map(|s| s.iter().filter_map(Value::as_u64).map(|d| d as usize).collect())
                .unwrap_or_default();
            let mut data = Vec::new();
            flatten(t.get("data").unwrap_or(&Value::Null), &mut data);
            let rows = shape.first().copied().unwrap_or(data.len());
            // Shapes come from outside: multiply without overflowing.
            let width = shape
                .iter()
                .skip(1)
                .try_fold(1usize, |a, d| a.checked_mul(*d))
                .map(|w| w.max(1));
            if width.and_then(|w| w.checked_mul(rows)) != Some(data.len()) {
                return Err((
                    format!("{what}.{name}"),
                    format!("shape {shape:?} does not match {} data values", data.len()),
                ));
            }
            Ok(Tensor {
                name,
                rows,
                width: width.unwrap_or(1),
                data,
            })
        })
        .collect()
}

fn flatten(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(xs) => xs.iter().for_each(|x| flatten(x, out)),
        Value::Null => {}
        other => out.push(other.clone()),
    }
}

/// Splits a KServe response body (V1 `predictions`, V2 `outputs`, first
/// output) into one prediction per instance.
fn predictions(body: &Value) -> Result<Vec<Value>, (String, String)> {
    if let Some(items) = body.get("predictions").and_then(Value::as_array) {
        return Ok(items.iter().map(prediction_of).collect());
    }
    if let Some(outputs) = body.get("outputs").and_then(Value::as_array) {
        let tensors = tensors(outputs, "outputs")?;
        let Some(t) = tensors.first() else {
            return Err(("outputs".into(), "no output tensor".into()));
        };
        return Ok(t
            .data
            .chunks(t.width.max(1))
            .map(|row| {
                prediction_of(&if row.len() == 1 {
                    row[0].clone()
                } else {
                    Value::from(row.to_vec())
                })
            })
            .collect());
    }
    Err((
        "body".into(),
        "expected a KServe response with `predictions` (V1) or `outputs` (V2)".into(),
    ))
}

/// One model output as a DESIGN.md prediction: a class (string, integer,
/// bool) is a `label`, another number a `value`, a list of probabilities
/// `scores` by class index (and `score` = P(class 1) for two classes), an
/// object is taken as is.
fn prediction_of(v: &Value) -> Value {
    match v {
        Value::String(_) | Value::Bool(_) => json!({"label": v}),
        Value::Number(n) if n.is_i64() || n.is_u64() => json!({"label": n.to_string()}),
        Value::Number(_) => json!({"value": v}),
        Value::Array(ps) if ps.iter().all(Value::is_number) => {
            let scores: Map<String, Value> = ps.iter().enumerate().map(|(i, p)| (i.to_string(), p.clone())).collect();
            if ps.len() == 2 {
                json!({"scores": scores, "score": ps[1]})
            } else {
                json!({"scores": scores})
            }
        }
        other => other.clone(),
    }
}

fn to_events(
    (req, req_body, req_arrived): (CeMeta, Value, i64),
    (resp, resp_body, resp_arrived): (CeMeta, Value, i64),
) -> Result<Vec<Value>, (String, String)> {
    let inputs = instances(&req_body)?;
    let outputs = predictions(&resp_body)?;
    if inputs.len() != outputs.len() {
        return Err((
            "body".into(),
            format!(
                "{} instances in the request but {} predictions in the response",
                inputs.len(),
                outputs.len()
            ),
        ));
    }
    let start = req.time_ms.unwrap_or(req_arrived);
    let end = resp.time_ms.unwrap_or(resp_arrived);
    let latency_ms = (end - start).max(0) as f64;
    let n = inputs.len();
    Ok(inputs
        .into_iter()
        .zip(outputs)
        .enumerate()
        .map(|(i, (features, prediction))| {
            let event_id = if n == 1 {
                req.id.clone()
            } else {
                format!("{}-{i}", req.id)
            };
            json!({
                "event_id": event_id,
                "model": req.service,
                "model_version": req.endpoint.clone().unwrap_or_default(),
                "endpoint": req.component.clone().unwrap_or_else(|| "predict".into()),
                "timestamp": start,
                "latency_ms": latency_ms,
                "batch_size": n,
                "prediction": prediction,
                "features": features,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, half: Half, time_ms: i64) -> CeMeta {
        CeMeta {
            id: id.into(),
            half,
            service: "sklearn-iris".into(),
            endpoint: Some("default".into()),
            component: Some("predictor".into()),
            time_ms: Some(time_ms),
        }
    }

    #[test]
    fn headers_parse_and_name_the_missing_one() {
        let headers: HashMap<&str, &str> = [
            ("ce-specversion", "1.0"),
            ("ce-id", "abc"),
            ("ce-type", "org.kubeflow.serving.inference.response"),
            ("ce-inferenceservicename", "sklearn-iris"),
            ("ce-time", "2026-11-26T20:00:00.100Z"),
        ]
        .into();
        let m = parse_meta(|k| headers.get(k).copied()).unwrap();
        assert_eq!(m.half, Half::Response);
        assert_eq!(m.time_ms, Some(1_795_723_200_100));
        let mut h2 = headers.clone();
        h2.remove("ce-inferenceservicename");
        assert_eq!(
            parse_meta(|k| h2.get(k).copied()).unwrap_err(),
            (
                "ce-inferenceservicename".to_string(),
                "missing required header".to_string()
            )
        );
    }

    #[test]
    fn v1_pair_joins_in_either_order() {
        for response_first in [false, true] {
            let mut j = Joiner::new(CloudEventsConfig::default());
            let req = (
                meta("x", Half::Request, 1000),
                json!({"instances": [[6.8, 2.8], [5.1, 3.5]]}),
            );
            let resp = (meta("x", Half::Response, 1012), json!({"predictions": [1, 0]}));
            let (first, second) = if response_first { (resp, req) } else { (req, resp) };
            assert_eq!(j.offer(first.0, first.1, 10, 5).0, Ok(Joined::Pending));
            let (Ok(Joined::Events(events)), 0) = j.offer(second.0, second.1, 10, 6) else {
                panic!("not joined")
            };
            assert_eq!(j.pending(), 0);
            assert_eq!(events.len(), 2);
            assert_eq!(events[0]["event_id"], "x-0");
            assert_eq!(events[0]["latency_ms"], 12.0);
            assert_eq!(events[0]["features"], json!({"0": 6.8, "1": 2.8}));
            assert_eq!(events[1]["prediction"], json!({"label": "0"}));
            assert_eq!(events[1]["model"], "sklearn-iris");
            assert_eq!(events[1]["model_version"], "default");
        }
    }

    #[test]
    fn v2_tensors_split_per_row() {
        let req = json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
        let resp = json!({"outputs": [{"name": "p", "shape": [2, 2], "data": [0.1, 0.9, 0.8, 0.2]}]});
        let events = to_events(
            (meta("y", Half::Request, 0), req, 0),
            (meta("y", Half::Response, 3), resp, 0),
        )
        .unwrap();
        assert_eq!(events[1]["features"], json!({"x.0": 3, "x.1": 4}));
        assert_eq!(events[0]["prediction"]["score"], 0.9);
        let huge = json!({"inputs": [{"name": "x", "shape": [u64::MAX, u64::MAX, 2], "data": [1]}]});
        let err = instances(&huge).unwrap_err();
        assert_eq!(err.0, "inputs.x");
    }

    #[test]
    fn waiting_halves_are_bounded_and_expire() {
        let mut j = Joiner::new(CloudEventsConfig {
            max_pending: 2,
            max_pending_bytes: 1000,
            pending_ttl_secs: 60,
        });
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let (r, dropped) = j.offer(meta(id, Half::Request, 0), json!({}), 10, i as i64);
            assert_eq!(r, Ok(Joined::Pending));
            assert_eq!(dropped, usize::from(i == 2));
        }
        assert_eq!(j.pending(), 2);
        let (_, dropped) = j.offer(meta("d", Half::Request, 0), json!({}), 10, 61_000);
        assert_eq!(dropped, 2);
        assert_eq!(j.pending(), 1);
        let (r, _) = j.offer(meta("d", Half::Request, 0), json!({}), 10, 61_001);
        assert_eq!(r.unwrap_err().0, "ce-id");
    }

    #[test]
    fn drain_drops_and_counts_every_waiting_half() {
        let mut j = Joiner::new(CloudEventsConfig {
            max_pending: 2,
            max_pending_bytes: 100,
            pending_ttl_secs: 60,
        });
        assert_eq!(
            j.offer(meta("a", Half::Request, 0), json!({}), 40, 0).0,
            Ok(Joined::Pending)
        );
        assert_eq!(
            j.offer(meta("b", Half::Response, 0), json!({}), 40, 0).0,
            Ok(Joined::Pending)
        );
        assert_eq!(j.drain(), 2);
        assert_eq!((j.pending(), j.drain()), (0, 0));
        // The byte budget was released: two more halves of 40 B fit
        // without evicting anything.
        assert_eq!(j.offer(meta("c", Half::Request, 0), json!({}), 40, 1).1, 0);
        assert_eq!(j.offer(meta("d", Half::Request, 0), json!({}), 40, 1).1, 0);
        // And the order queue was emptied too: the next one over the count
        // evicts the oldest of the new ones.
        assert_eq!(j.offer(meta("e", Half::Request, 0), json!({}), 10, 1).1, 1);
        assert_eq!(j.pending(), 2);
    }
}
