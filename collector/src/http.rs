//! HTTP front end: `POST /v1/inferences` and `POST /v1/labels` take one JSON
//! object, a JSON array or JSON Lines in the shape of DESIGN.md;
//! `POST /v1/cloudevents` takes KServe's inference logger (binary-mode
//! CloudEvents, see [`crate::kserve`]); `POST /v1/resources` takes resource
//! samples (queue depth, memory, GPU) for the `ml_*` resource gauges.
//!
//! Answers: 200 with `{"accepted": n, "rejected": [...]}` when at least one
//! event was accepted (the rejected ones are listed with index, field and
//! reason); 400 when every event was rejected; 401 without a valid bearer
//! token (when tokens are configured); 413 when the body or the event count
//! is too large; 429 with `Retry-After` when the collector is at capacity;
//! 503 with `Retry-After` when the broker did not acknowledge in time. An
//! answer of 200 means every accepted event is acknowledged by the broker.
//! Errors are problem details (RFC 9457, [`mlwatch_common::problem`]).
//! `GET /openapi.json` (no token needed) serves the OpenAPI 3.1 contract of
//! these routes.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mlwatch_common::listener::ClientAddr;
use mlwatch_common::problem::Problem;
use serde_json::json;

use crate::ingest::{Batch, IngestError, Ingestor, Outcome};
use crate::kserve::{self, CloudEventsConfig, Joined, Joiner};
use crate::security::Tokens;
use crate::validate::{self, Rejection};

/// Shared state of the HTTP front end.
#[derive(Clone)]
pub struct AppState {
    ingestor: Ingestor,
    joiner: Arc<Mutex<Joiner>>,
}

/// The KServe half-pairs waiting for their other half, shared by the
/// HTTP handlers and the shutdown (which counts the ones it drops).
pub type SharedJoiner = Arc<Mutex<Joiner>>;

/// A [`SharedJoiner`] with `config`.
pub fn joiner(config: CloudEventsConfig) -> SharedJoiner {
    Arc::new(Mutex::new(Joiner::new(config)))
}

/// At shutdown: drops the KServe halves still waiting for their other
/// half, counts them in `mlwatch_collector_events_total{kind="inference",
/// outcome="dropped",reason="cloudevent_shutdown"}` and says so in the log.
pub fn drop_pending(joiner: &SharedJoiner, metrics: &crate::metrics::Metrics) -> usize {
    let dropped = joiner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).drain();
    metrics.cloudevents_pending.set(0);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "kserve halves still waiting for their other half dropped at shutdown"
        );
        metrics
            .events
            .with_label_values(&["inference", "dropped", "cloudevent_shutdown"])
            .inc_by(dropped as u64);
    }
    dropped
}

/// The ingest routes, behind bearer-token authentication when `tokens`
/// holds any.
pub fn router(ingestor: Ingestor, tokens: Tokens, joiner: SharedJoiner) -> Router {
    let limit = ingestor.limits.max_body_bytes;
    let state = AppState { ingestor, joiner };
    Router::new()
        .route("/v1/inferences", post(inferences))
        .route("/v1/labels", post(labels))
        .route("/v1/cloudevents", post(cloudevents_handler))
        .route("/v1/resources", post(resources))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            tokens,
            mlwatch_common::auth::require_bearer,
        ))
        .with_state(state)
        .layer(middleware::map_response(mlwatch_common::problem::normalize))
        .merge(mlwatch_common::problem::openapi_route(&openapi()))
}

/// The memory budget for request bodies being read, in KiB permits, with
/// each client's share capped so one client cannot hold it all.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<tokio::sync::Semaphore>,
    max_body_kib: usize,
    max_body_bytes: usize,
    per_client_kib: usize,
    in_use: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    read_timeout: std::time::Duration,
}

impl BodyBudget {
    /// `per_client_bytes`: most body bytes one client IP may have in flight;
    /// `read_timeout`: a whole body must arrive within it.
    pub fn new(
        max_in_flight_bytes: usize,
        max_body_bytes: usize,
        per_client_bytes: usize,
        read_timeout: std::time::Duration,
    ) -> Self {
        let total = max_in_flight_bytes
            .div_ceil(1024)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(total)),
            max_body_kib: max_body_bytes.div_ceil(1024).clamp(1, total.max(1)),
            max_body_bytes,
            per_client_kib: per_client_bytes.div_ceil(1024).max(1),
            in_use: Arc::default(),
            read_timeout,
        }
    }
}

/// A client's share of the budget, given back when dropped.
struct ClientShare {
    in_use: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
    kib: usize,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut map = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(self.kib);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Admits a request only while its body fits in the budget and in its
/// client's share of it: 429 otherwise, before the body is read, so memory
/// stays bounded however many clients connect and one client's slow
/// uploads cannot starve the others. The body must then arrive within the
/// read timeout (408 otherwise), so a trickling client gives its share back.
pub async fn admit(State(budget): State<BodyBudget>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let kib = declared.map_or(budget.max_body_kib, |b| b.div_ceil(1024).clamp(1, budget.max_body_kib));
    let _share = match request.extensions().get::<ClientAddr>() {
        None => None,
        Some(ClientAddr(peer)) => {
            let mut map = budget.in_use.lock().unwrap_or_else(|p| p.into_inner());
            let used = map.entry(peer.ip()).or_default();
            if *used + kib > budget.per_client_kib.max(kib.min(budget.max_body_kib)) && *used > 0 {
                return IngestError::BodiesOverloaded { retry_after_secs: 1 }.into_response();
            }
            *used += kib;
            Some(ClientShare {
                in_use: budget.in_use.clone(),
                ip: peer.ip(),
                kib,
            })
        }
    };
    let Ok(_permit) = budget
        .permits
        .clone()
        .try_acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
    else {
        return IngestError::BodiesOverloaded { retry_after_secs: 1 }.into_response();
    };
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, budget.max_body_bytes);
    let bytes = match tokio::time::timeout(budget.read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) => {
            let too_large =
                std::error::Error::source(&error).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let e = if too_large {
                IngestError::TooLarge(format!("body too large: limit is {} bytes", budget.max_body_bytes))
            } else {
                IngestError::BadRequest(format!("cannot read body: {error}"))
            };
            return e.into_response();
        }
        Err(_) => return IngestError::BodyTimeout(budget.read_timeout.as_millis() as u64).into_response(),
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

impl IntoResponse for IngestError {
    /// A problem (RFC 9457); every event rejected adds `accepted` (0) and
    /// the `rejected` list, a retryable error `retry_after_secs` and
    /// `Retry-After`.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut problem = Problem::new(status, self.to_string());
        if let IngestError::AllRejected(rejected) = &self {
            problem = problem
                .with("accepted", 0)
                .with("rejected", serde_json::to_value(rejected).unwrap_or_default());
        }
        if let Some(secs) = self.retry_after_secs() {
            problem = problem.retry_after(secs);
        }
        problem.into_response()
    }
}

fn answer(result: Result<Outcome, IngestError>) -> Response {
    match result {
        Ok(outcome) => (StatusCode::OK, axum::Json(outcome)).into_response(),
        Err(error) => error.into_response(),
    }
}

/// The body, or the precise reason it could not be read.
fn body_or_error(ingestor: &Ingestor, body: Result<Bytes, BytesRejection>) -> Result<Bytes, IngestError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            IngestError::TooLarge(format!(
                "body too large: limit is {} bytes",
                ingestor.limits.max_body_bytes
            ))
        } else {
            IngestError::BadRequest(format!("cannot read body: {}", rejection.body_text()))
        }
    })
}

/// Splits and converts a body; `convert` turns one JSON value into an event.
fn parse<T>(
    ingestor: &Ingestor,
    body: &[u8],
    convert: impl Fn(usize, &serde_json::Value) -> Result<T, Rejection>,
) -> Result<(Vec<T>, Vec<Rejection>), IngestError> {
    let items = validate::split_body(body).map_err(|r| IngestError::BadRequest(r.reason))?;
    let max = ingestor.limits.max_events_per_request;
    if items.len() > max {
        return Err(IngestError::TooLarge(format!(
            "too many events: {} > {max}",
            items.len()
        )));
    }
    let mut ok = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item.and_then(|v| convert(i, &v)) {
            Ok(e) => ok.push(e),
            Err(mut r) => {
                r.index = i;
                rejected.push(r);
            }
        }
    }
    Ok((ok, rejected))
}

#[utoipa::path(post, path = "/v1/inferences", tag = "ingest",
    description = "Inference events: one JSON object, a JSON array of them, or JSON Lines (`application/x-ndjson`). Valid events are accepted even when others are rejected.",
    request_body(content = Vec<InferenceEvent>, content_type = "application/json",
        description = "An array of events (also taken: one object, or JSON Lines as `application/x-ndjson`)."),
    responses(
        (status = 200, description = "At least one event accepted and acknowledged by the broker.", body = Outcome),
        (status = 400, description = "Malformed body, or every event rejected (`accepted`, `rejected` members).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the read timeout.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or event count over the limit.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "At capacity; `Retry-After`.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "The broker did not acknowledge in time; `Retry-After`.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn inferences(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let ingestor = &state.ingestor;
    let now = mlwatch_common::now_ms();
    let result = body_or_error(ingestor, body).and_then(|body| {
        parse(ingestor, &body, |i, v| {
            validate::inference_from_json(i, v, &ingestor.limits, now)
        })
    });
    match result {
        Ok((events, rejected)) => answer(ingestor.publish(Batch::Inferences(events), rejected).await),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(post, path = "/v1/labels", tag = "ingest",
    description = "Ground-truth labels: one JSON object, a JSON array of them, or JSON Lines. Valid events are accepted even when others are rejected.",
    request_body(content = Vec<LabelEvent>, content_type = "application/json",
        description = "An array of events (also taken: one object, or JSON Lines as `application/x-ndjson`)."),
    responses(
        (status = 200, description = "At least one event accepted and acknowledged by the broker.", body = Outcome),
        (status = 400, description = "Malformed body, or every event rejected (`accepted`, `rejected` members).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the read timeout.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or event count over the limit.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "At capacity; `Retry-After`.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "The broker did not acknowledge in time; `Retry-After`.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn labels(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let ingestor = &state.ingestor;
    let now = mlwatch_common::now_ms();
    let result = body_or_error(ingestor, body).and_then(|body| {
        parse(ingestor, &body, |i, v| {
            validate::label_from_json(i, v, &ingestor.limits, now)
        })
    });
    match result {
        Ok((events, rejected)) => answer(ingestor.publish(Batch::Labels(events), rejected).await),
        Err(e) => e.into_response(),
    }
}

/// A rejection of a whole CloudEvent (a header or its body).
fn ce_rejection(field: String, reason: String) -> IngestError {
    IngestError::AllRejected(vec![Rejection {
        index: 0,
        field,
        reason,
    }])
}

#[utoipa::path(post, path = "/v1/cloudevents", tag = "ingest",
    description = "KServe's inference logger (binary-mode CloudEvents): the request and the response of one inference, joined by `ce-id`.",
    params(
        ("ce-id" = String, Header, description = "The inference's id, shared by its request and response"),
        ("ce-type" = String, Header, description = "`org.kubeflow.serving.inference.request` or `.response`"),
        ("ce-source" = Option<String>, Header, description = "The logger's source"),
        ("ce-inferenceservicename" = Option<String>, Header, description = "The model"),
    ),
    request_body(content = serde_json::Value, content_type = "application/json", description = "The KServe v1 or v2 request or response body."),
    responses(
        (status = 200, description = "The pair joined; its events accepted.", body = Outcome),
        (status = 202, description = "One half stored until its other half arrives (`pending`: 1).", body = Outcome),
        (status = 400, description = "A header or the body rejected (`accepted`, `rejected` members).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the read timeout.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the limit.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "At capacity; `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not acknowledge in time; `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cloudevents_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ingestor = &state.ingestor;
    let body = match body_or_error(ingestor, body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let meta = match kserve::parse_meta(|name| headers.get(name).and_then(|v| v.to_str().ok())) {
        Ok(m) => m,
        Err((field, reason)) => {
            ingestor.count_rejections(
                "inference",
                &[Rejection {
                    index: 0,
                    field: field.clone(),
                    reason: reason.clone(),
                }],
            );
            return ce_rejection(field, reason).into_response();
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ce_rejection("body".into(), format!("malformed JSON: {e}")).into_response(),
    };
    let now = mlwatch_common::now_ms();
    let (joined, dropped) = {
        let mut joiner = state.joiner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let offered = joiner.offer(meta, value, body.len(), now);
        ingestor.metrics.cloudevents_pending.set(joiner.pending() as i64);
        offered
    };
    if dropped > 0 {
        tracing::warn!(dropped, "kserve halves dropped without their other half");
        ingestor
            .metrics
            .events
            .with_label_values(&["inference", "rejected", "cloudevent_unmatched"])
            .inc_by(dropped as u64);
    }
    match joined {
        Ok(Joined::Pending) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"accepted": 0, "rejected": [], "pending": 1})),
        )
            .into_response(),
        Ok(Joined::Events(events)) => {
            let mut ok = Vec::with_capacity(events.len());
            let mut rejected = Vec::new();
            for (i, v) in events.iter().enumerate() {
                match validate::inference_from_json(i, v, &ingestor.limits, now) {
                    Ok(e) => ok.push(e),
                    Err(r) => rejected.push(r),
                }
            }
            answer(ingestor.publish(Batch::Inferences(ok), rejected).await)
        }
        Err((field, reason)) => ce_rejection(field, reason).into_response(),
    }
}

#[utoipa::path(post, path = "/v1/resources", tag = "ingest",
    description = "Resource samples (queue depth, memory, GPU) for the `ml_*` gauges: one JSON object, a JSON array, or JSON Lines. Valid events are accepted even when others are rejected.",
    request_body(content = Vec<ResourceSample>, content_type = "application/json",
        description = "An array of events (also taken: one object, or JSON Lines as `application/x-ndjson`)."),
    responses(
        (status = 200, description = "At least one event accepted and acknowledged by the broker.", body = Outcome),
        (status = 400, description = "Malformed body, or every event rejected (`accepted`, `rejected` members).", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within the read timeout.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or event count over the limit.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "At capacity; `Retry-After`.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "The broker did not acknowledge in time; `Retry-After`.", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds"))),
    ))]
async fn resources(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let ingestor = &state.ingestor;
    let result = body_or_error(ingestor, body).and_then(|body| {
        parse(ingestor, &body, |i, v| {
            validate::resource_from_json(i, v, &ingestor.limits)
        })
    });
    let (samples, rejected) = match result {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    if samples.is_empty() && !rejected.is_empty() {
        return IngestError::AllRejected(rejected).into_response();
    }
    let m = &ingestor.metrics;
    for s in &samples {
        let labels = m.model_labels(&s.model, &s.model_version, 1);
        if let Some(x) = s.queue_depth {
            m.queue_depth.with_label_values(&labels).set(x);
        }
        if let Some(x) = s.memory_usage_bytes {
            m.memory_bytes.with_label_values(&labels).set(x);
        }
        if let Some(x) = s.gpu_utilization_percent {
            m.gpu_percent.with_label_values(&labels).set(x);
        }
    }
    answer(Ok(Outcome {
        accepted: samples.len(),
        rejected,
    }))
}

/// The contract of the ingest routes, as served at `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        info(
            title = "mlwatch collector",
            description = "Ingest of inference events, labels, KServe CloudEvents and resource samples, on the collector's ingest port."
        ),
        paths(inferences, labels, cloudevents_handler, resources),
        components(schemas(Outcome, Rejection, InferenceEvent, LabelEvent, ResourceSample))
    )]
    struct Doc;
    mlwatch_common::problem::finish(<Doc as utoipa::OpenApi>::openapi(), true)
}

/// An inference event in the public JSON shape (DESIGN.md).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct InferenceEvent {
    /// Unique id of the inference (labels refer to it).
    #[schema(min_length = 1)]
    event_id: String,
    #[schema(min_length = 1)]
    model: String,
    model_version: Option<String>,
    endpoint: Option<String>,
    /// RFC 3339 or milliseconds since the epoch; the arrival time when left out.
    #[schema(value_type = Option<Object>)]
    timestamp: Option<String>,
    #[schema(minimum = 0)]
    latency_ms: f64,
    /// `ok` (default) or `error`.
    status: Option<String>,
    error: Option<String>,
    #[schema(minimum = 1)]
    batch_size: Option<u64>,
    /// A number, a string, or an object of named outputs.
    #[schema(value_type = Option<Object>)]
    prediction: Option<serde_json::Value>,
    /// Feature name to number, string or boolean.
    #[schema(value_type = Option<Object>)]
    features: Option<serde_json::Value>,
    tags: Option<std::collections::HashMap<String, String>>,
}

/// A ground-truth label for an earlier inference.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct LabelEvent {
    /// The inference's `event_id`.
    #[schema(min_length = 1)]
    event_id: String,
    #[schema(min_length = 1)]
    model: String,
    #[schema(value_type = Option<Object>)]
    timestamp: Option<String>,
    #[schema(value_type = Option<Object>)]
    label: Option<serde_json::Value>,
    value: Option<f64>,
}

/// A resource sample of a model server.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ResourceSample {
    #[schema(min_length = 1)]
    model: String,
    model_version: Option<String>,
    queue_depth: Option<f64>,
    memory_usage_bytes: Option<f64>,
    gpu_utilization_percent: Option<f64>,
}
