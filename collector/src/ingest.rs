//! The ingest core shared by HTTP and gRPC: validate, publish to Kafka keyed
//! by model, and answer only after the broker acknowledged every accepted
//! event. In-flight work is bounded; a full collector answers "retry later"
//! instead of buffering without limit.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlwatch_common::kafka::{KafkaSetupError, ResilientProducer};
use mlwatch_proto::v1::{InferenceEvent, InferenceStatus, LabelEvent};
use prost::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::validate::{DEFAULT_ENDPOINT, DEFAULT_MODEL_VERSION, Fill, Limits, Rejection};

/// Why a request as a whole failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Too much in flight: retry after the hint.
    #[error("collector is at capacity ({in_flight} events in flight); retry after {retry_after_secs} s")]
    Overloaded { in_flight: usize, retry_after_secs: u64 },
    /// Too many request bodies being read at once: retry after the hint.
    #[error("collector is at capacity (request bodies in memory); retry after {retry_after_secs} s")]
    BodiesOverloaded { retry_after_secs: u64 },
    /// The broker did not acknowledge in time.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The request itself is malformed (body, size).
    #[error("{0}")]
    BadRequest(String),
    /// The request is larger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Every event in the request was rejected.
    #[error("all {} events rejected", .0.len())]
    AllRejected(Vec<Rejection>),
    /// The body did not arrive within the read timeout (milliseconds).
    #[error("request body not received within {0} ms")]
    BodyTimeout(u64),
}

impl IngestError {
    /// The one HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Overloaded { .. } | Self::BodiesOverloaded { .. } => 429,
            Self::Unavailable(_) => 503,
            Self::BadRequest(_) | Self::AllRejected(_) => 400,
            Self::TooLarge(_) => 413,
            Self::BodyTimeout(_) => 408,
        }
    }

    /// The one gRPC code for this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::Overloaded { .. } | Self::BodiesOverloaded { .. } => tonic::Code::ResourceExhausted,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::BadRequest(_) | Self::AllRejected(_) | Self::TooLarge(_) => tonic::Code::InvalidArgument,
            Self::BodyTimeout(_) => tonic::Code::DeadlineExceeded,
        }
    }

    pub fn retry_hint(&self) -> mlwatch_common::RetryHint {
        match self {
            Self::Overloaded { .. } | Self::BodiesOverloaded { .. } | Self::Unavailable(_) => {
                mlwatch_common::RetryHint::Retry
            }
            _ => mlwatch_common::RetryHint::DoNotRetry,
        }
    }

    /// Seconds a client should wait before retrying, when a retry can help.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Overloaded { retry_after_secs, .. } | Self::BodiesOverloaded { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            Self::Unavailable(_) => Some(5),
            _ => None,
        }
    }
}

/// The answer to a request that was at least partly accepted.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
}

/// Validated events of one request, ready to publish.
pub enum Batch {
    Inferences(Vec<InferenceEvent>),
    Labels(Vec<LabelEvent>),
    /// Events validated straight from their protobuf bytes (gRPC); each is
    /// published as it came, followed by the defaults it takes.
    Wire(WireBatch),
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Self::Inferences(v) => v.len(),
            Self::Labels(v) => v.len(),
            Self::Wire(w) => w.events.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Inferences(_) | Self::Wire(WireBatch { labels: false, .. }) => "inference",
            Self::Labels(_) | Self::Wire(WireBatch { labels: true, .. }) => "label",
        }
    }
}

/// Valid events of one protobuf request, as ranges of its bytes.
pub struct WireBatch {
    /// Label events (else inference events).
    pub labels: bool,
    /// The request message as received.
    pub bytes: bytes::Bytes,
    pub events: Vec<WireEvent>,
}

/// One valid event of a [`WireBatch`]: where it is, its key, what the
/// per-request metrics need, and its defaults.
#[derive(Debug, Clone)]
pub struct WireEvent {
    /// The event's bytes.
    pub range: Range<usize>,
    /// `model` (the Kafka key).
    pub model: Range<usize>,
    /// `model_version` and `endpoint` (inferences; empty when defaulted).
    pub model_version: Range<usize>,
    pub endpoint: Range<usize>,
    pub error: bool,
    pub latency_ms: f64,
    pub batch_size: u32,
    pub score: Option<f64>,
    pub fill: Fill,
}

/// The range of `part`, a sub-slice of `whole`, within `whole`.
pub fn span(whole: &[u8], part: &str) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    debug_assert!(start + part.len() <= whole.len(), "part is not within whole");
    start..start + part.len()
}

/// The text at `range` of bytes that were validated as UTF-8 (empty,
/// never a panic, should the range not be one).
fn text(bytes: &[u8], range: Range<usize>) -> &str {
    bytes
        .get(range)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default()
}

impl WireBatch {
    fn observations(&self) -> impl Iterator<Item = Observed<'_>> {
        self.events.iter().map(|e| Observed {
            model: text(&self.bytes, e.model.clone()),
            model_version: if e.fill.model_version {
                DEFAULT_MODEL_VERSION
            } else {
                text(&self.bytes, e.model_version.clone())
            },
            endpoint: if e.fill.endpoint {
                DEFAULT_ENDPOINT
            } else {
                text(&self.bytes, e.endpoint.clone())
            },
            error: e.error,
            latency_ms: e.latency_ms,
            batch_size: e.batch_size,
            score: e.score,
        })
    }
}

/// What the per-request metrics take from one inference event.
struct Observed<'a> {
    model: &'a str,
    model_version: &'a str,
    endpoint: &'a str,
    error: bool,
    latency_ms: f64,
    batch_size: u32,
    score: Option<f64>,
}

impl<'a> Observed<'a> {
    fn of(e: &'a InferenceEvent) -> Self {
        Self {
            model: &e.model,
            model_version: &e.model_version,
            endpoint: &e.endpoint,
            error: e.status == InferenceStatus::Error as i32,
            latency_ms: e.latency_ms,
            batch_size: e.batch_size,
            score: e.prediction.as_ref().and_then(|p| p.score),
        }
    }
}

/// How one record's payload is written.
enum Payload<'a> {
    Message(&'a dyn Encode),
    /// A decoded inference event, its maps written in key order.
    Event(&'a InferenceEvent),
    Inference(&'a [u8], &'a Fill),
    Label(&'a [u8], &'a Fill),
}

/// A protobuf message that encodes into a reused buffer.
trait Encode {
    fn encode_into(&self, out: &mut Vec<u8>);
}

impl<M: Message> Encode for M {
    fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_raw(out);
    }
}

impl Payload<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Message(m) => m.encode_into(out),
            Self::Event(e) => mlwatch_proto::view::encode_sorted(e, out),
            Self::Inference(bytes, fill) => {
                out.extend_from_slice(bytes);
                fill.append_inference(out);
            }
            Self::Label(bytes, fill) => {
                out.extend_from_slice(bytes);
                fill.append_label(out);
            }
        }
    }
}

/// Publishes validated events; shared by the HTTP and gRPC front ends.
#[derive(Clone)]
pub struct Ingestor {
    producer: Arc<ResilientProducer>,
    inference_topic: Arc<str>,
    labels_topic: Arc<str>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    pub limits: Arc<Limits>,
    pub metrics: Metrics,
}

impl Ingestor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        producer: FutureProducer,
        inference_topic: &str,
        labels_topic: &str,
        max_in_flight: usize,
        limits: Limits,
        metrics: Metrics,
    ) -> Self {
        Self {
            producer: Arc::new(ResilientProducer::fixed(producer)),
            inference_topic: inference_topic.into(),
            labels_topic: labels_topic.into(),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            limits: Arc::new(limits),
            metrics,
        }
    }

    /// Replaces the producer with a fresh one from `rebuild` whenever
    /// librdkafka reports a fatal error (an idempotent producer fenced or
    /// out of sequence after broker trouble cannot produce again).
    pub fn with_rebuild(
        self,
        rebuild: impl Fn() -> Result<FutureProducer, KafkaSetupError> + Send + Sync + 'static,
    ) -> Self {
        let (_, current) = self.producer.current();
        Self {
            producer: Arc::new(ResilientProducer::new(current, rebuild)),
            ..self
        }
    }

    /// Waits up to `timeout` for queued messages to be delivered.
    pub fn flush(&self, timeout: Duration) {
        let (_, producer) = self.producer.current();
        if let Err(error) = rdkafka::producer::Producer::flush(&producer, timeout) {
            tracing::warn!(%error, "producer flush at shutdown failed");
        }
    }

    /// Records a rejection in the collector's own metrics.
    pub fn count_rejections(&self, kind: &str, rejected: &[Rejection]) {
        for r in rejected {
            let reason = rejection_label(&r.field);
            self.metrics.events.with_label_values(&[kind, "rejected", reason]).inc();
        }
    }

    /// Publishes `batch` and waits for the broker; `rejected` are the events
    /// validation already refused, returned in the answer.
    pub async fn publish(&self, batch: Batch, rejected: Vec<Rejection>) -> Result<Outcome, IngestError> {
        let kind = batch.kind();
        self.count_rejections(kind, &rejected);
        let n = batch.len();
        if n == 0 {
            return if rejected.is_empty() {
                Ok(Outcome { accepted: 0, rejected })
            } else {
                Err(IngestError::AllRejected(rejected))
            };
        }
        // A request larger than the whole budget takes all of it (alone)
        // rather than never fitting.
        let permits = u32::try_from(n.min(self.max_in_flight)).unwrap_or(u32::MAX);
        let Ok(_permit) = self.permits.clone().try_acquire_many_owned(permits) else {
            self.metrics
                .events
                .with_label_values(&[kind, "throttled", "in_flight"])
                .inc_by(n as u64);
            return Err(IngestError::Overloaded {
                in_flight: self.max_in_flight - self.permits.available_permits(),
                retry_after_secs: 1,
            });
        };
        self.metrics.in_flight.add(n as i64);
        let started = Instant::now();
        let result = match &batch {
            Batch::Inferences(events) => {
                self.observe(events.iter().map(Observed::of));
                self.send_all(
                    &self.inference_topic,
                    n,
                    events.iter().map(|e| (e.model.as_str(), Payload::Event(e))),
                )
                .await
            }
            Batch::Labels(events) => {
                self.send_all(
                    &self.labels_topic,
                    n,
                    events.iter().map(|e| (e.model.as_str(), Payload::Message(e))),
                )
                .await
            }
            Batch::Wire(wire) => {
                let bytes = &wire.bytes[..];
                let records = wire.events.iter().map(|e| {
                    let key = text(bytes, e.model.clone());
                    let event = &bytes[e.range.clone()];
                    let payload = if wire.labels {
                        Payload::Label(event, &e.fill)
                    } else {
                        Payload::Inference(event, &e.fill)
                    };
                    (key, payload)
                });
                if wire.labels {
                    self.send_all(&self.labels_topic, n, records).await
                } else {
                    self.observe(wire.observations());
                    self.send_all(&self.inference_topic, n, records).await
                }
            }
        };
        self.metrics.in_flight.sub(n as i64);
        self.metrics.produce_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.metrics
                    .events
                    .with_label_values(&[kind, "accepted", ""])
                    .inc_by(n as u64);
                Ok(Outcome { accepted: n, rejected })
            }
            Err(e) => {
                self.metrics
                    .events
                    .with_label_values(&[kind, "failed", "broker"])
                    .inc_by(n as u64);
                Err(e)
            }
        }
    }

    /// Enqueues every record (its payload written into one reused buffer;
    /// librdkafka copies it), then waits for the broker's acknowledgement
    /// of each one enqueued. Enqueuing stops at the first refusal (a full
    /// queue is backpressure).
    async fn send_all<'a>(
        &self,
        topic: &str,
        n: usize,
        records: impl Iterator<Item = (&'a str, Payload<'a>)>,
    ) -> Result<(), IngestError> {
        let (generation, producer) = self.producer.current();
        let mut scratch = Vec::with_capacity(1024);
        let mut deliveries = Vec::with_capacity(n);
        let mut refused = None;
        for (key, payload) in records {
            scratch.clear();
            payload.write(&mut scratch);
            match producer.send_result(FutureRecord::to(topic).key(key).payload(&scratch[..])) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => {
                    refused = Some(error);
                    break;
                }
            }
        }
        let mut failure = refused;
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    failure.get_or_insert(error);
                }
                Err(_canceled) => {
                    failure.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        if let Some(error) = failure {
            self.producer.failed(generation, &error);
            return Err(match error {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => IngestError::Overloaded {
                    in_flight: self.max_in_flight,
                    retry_after_secs: 1,
                },
                other => IngestError::Unavailable(other.to_string()),
            });
        }
        Ok(())
    }

    /// Per-request metrics. Metric handles are looked up once per distinct
    /// (model, version, endpoint) of the batch, not once per event.
    fn observe<'a>(&self, events: impl Iterator<Item = Observed<'a>>) {
        let m = &self.metrics;
        let now = mlwatch_common::now_ms();
        let mut handles: Vec<((&str, &str, &str), Handles)> = Vec::new();
        for e in events {
            let key = (e.model, e.model_version, e.endpoint);
            let at = match handles.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    // Client-given names become series only under the caps.
                    let [model, version] = m.model_labels(key.0, key.1, 0);
                    let endpoint = m.endpoint_label(key.2, 0);
                    m.seen([model, version], now);
                    handles.push((
                        key,
                        Handles {
                            ok: m.requests.with_label_values(&[model, version, "ok"]),
                            error: m.requests.with_label_values(&[model, version, "error"]),
                            latency: m.latency.with_label_values(&[model, version, endpoint]),
                            batch_size: m.batch_size.with_label_values(&[model]),
                            predictions: m.predictions.with_label_values(&[model, version]),
                            folded: model == mlwatch_common::cardinality::OVERFLOW,
                            endpoint_folded: endpoint == mlwatch_common::cardinality::OVERFLOW,
                        },
                    ));
                    handles.len() - 1
                }
            };
            let h = &handles[at].1;
            if h.folded {
                m.series.count_folded(1);
            }
            if h.endpoint_folded {
                m.endpoints.count_folded(1);
            }
            if e.error {
                h.error.inc();
            } else {
                h.ok.inc();
            }
            h.latency.observe(e.latency_ms / 1000.0);
            h.batch_size.observe(f64::from(e.batch_size));
            if let Some(score) = e.score {
                h.predictions.observe(score);
            }
        }
    }
}

/// Metric handles for one (model, version, endpoint).
struct Handles {
    ok: prometheus::IntCounter,
    error: prometheus::IntCounter,
    latency: prometheus::Histogram,
    batch_size: prometheus::Histogram,
    predictions: prometheus::Histogram,
    /// The series is the overflow one (the event is counted as folded).
    folded: bool,
    endpoint_folded: bool,
}

/// The `reason` label of a rejection of `field` (a path like
/// `features.amount`): its top-level field when the public event shape has
/// it, else `other_field`, so a client's unknown field names never become
/// label values.
fn rejection_label(field: &str) -> &'static str {
    if field.is_empty() {
        return "body";
    }
    let top = field.split(['.', '[']).next().unwrap_or("");
    crate::validate::INFERENCE_FIELDS
        .iter()
        .chain(crate::validate::LABEL_FIELDS)
        .find(|f| **f == top)
        .copied()
        .unwrap_or("other_field")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_labels_come_from_a_fixed_set() {
        assert_eq!(rejection_label(""), "body");
        assert_eq!(rejection_label("features.amount"), "features");
        assert_eq!(rejection_label("latency_ms"), "latency_ms");
        assert_eq!(rejection_label("x-attacker-chosen-42"), "other_field");
        assert_eq!(rejection_label("tags[9]"), "tags");
    }

    #[test]
    fn spans_find_borrowed_text_again() {
        let bytes = b"\x0a\x02e1\x12\x05fraud";
        let model = std::str::from_utf8(&bytes[6..]).unwrap();
        let range = span(bytes, model);
        assert_eq!(range, 6..11);
        assert_eq!(text(bytes, range), "fraud");
        assert_eq!(span(bytes, ""), 0..0);
        assert_eq!(text(bytes, 0..0), "");
        // A range that is not one: empty, not a panic.
        assert_eq!(text(bytes, 9..40), "");
        assert_eq!(text(bytes, 1..3), "\x02e");
        assert_eq!(text(b"\xff\xfe", 0..2), "");
    }
}
