//! HTTP front end: `POST /v1/inferences` and `POST /v1/labels` take one JSON
//! object, a JSON array or JSON Lines in the shape of DESIGN.md.
//!
//! Answers: 200 with `{"accepted": n, "rejected": [...]}` when at least one
//! event was accepted (the rejected ones are listed with index, field and
//! reason); 400 when every event was rejected; 413 when the body is too
//! large; 429 with `Retry-After` when the collector is at capacity; 503 with
//! `Retry-After` when the broker did not acknowledge in time. An answer of
//! 200 means every accepted event is acknowledged by the broker.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use crate::ingest::{Batch, IngestError, Ingestor, Outcome};
use crate::validate::{self, Rejection};

pub fn router(ingestor: Ingestor) -> Router {
    let limit = ingestor.limits.max_body_bytes;
    Router::new()
        .route("/v1/inferences", post(inferences))
        .route("/v1/labels", post(labels))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ingestor)
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match &self {
            IngestError::AllRejected(rejected) => {
                json!({"error": self.to_string(), "accepted": 0, "rejected": rejected})
            }
            other => json!({"error": other.to_string()}),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs()
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn answer(result: Result<Outcome, IngestError>) -> Response {
    match result {
        Ok(outcome) => (StatusCode::OK, axum::Json(outcome)).into_response(),
        Err(error) => error.into_response(),
    }
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

async fn inferences(State(ingestor): State<Ingestor>, body: Bytes) -> Response {
    let now = mlwatch_common::now_ms();
    let limits = ingestor.limits.clone();
    match parse(&ingestor, &body, |i, v| {
        validate::inference_from_json(i, v, &limits, now)
    }) {
        Ok((events, rejected)) => answer(ingestor.publish(Batch::Inferences(events), rejected).await),
        Err(e) => e.into_response(),
    }
}

async fn labels(State(ingestor): State<Ingestor>, body: Bytes) -> Response {
    let now = mlwatch_common::now_ms();
    let limits = ingestor.limits.clone();
    match parse(&ingestor, &body, |i, v| validate::label_from_json(i, v, &limits, now)) {
        Ok((events, rejected)) => answer(ingestor.publish(Batch::Labels(events), rejected).await),
        Err(e) => e.into_response(),
    }
}
