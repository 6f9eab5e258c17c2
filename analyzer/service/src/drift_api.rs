//! The drift part of the analyzer's JSON API: reports per model version,
//! and the reference profiles (upload, read, capture). Uploads are published
//! to the profiles topic and answered once the broker acknowledged them
//! (docs/decisions/0004-profile-store.md).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::consumer::{self, Shared};
use crate::drift::Profile;
use crate::profiles::{self, ProfileTopic};

/// The profiles topic, when drift is enabled.
type Topic = Extension<Option<Arc<ProfileTopic>>>;

pub(crate) fn router(core: Shared, topic: Option<Arc<ProfileTopic>>) -> Router {
    Router::new()
        .route("/v1/models/{model}/drift", get(model_drift))
        .route("/v1/models/{model}/profile", get(get_profile).put(put_profile))
        .route("/v1/models/{model}/profile/capture", post(capture_profile))
        .layer(Extension(topic))
        .with_state(core)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    answer(status, serde_json::json!({ "error": message }))
}

fn disabled() -> Response {
    error(StatusCode::NOT_FOUND, "drift: disabled in [drift]".into())
}

/// `GET /v1/models/{model}/drift[?model_version=v]`: per model version, per
/// feature and prediction output the scores, decision state and quality,
/// with the reference and current distributions on the same bins. The
/// top-level `model_version`, `profile_version` and `report` are those of
/// the version with the newest evaluated window; `versions` lists all.
async fn model_drift(
    State(core): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let core = consumer::lock(&core);
    let versions = core
        .trackers
        .drift_report(&model, q.get("model_version").map(String::as_str));
    let newest = versions
        .iter()
        .max_by_key(|v| v.report.map(|r| (r.window_end_ms, r.window_events)))
        .map(|v| (v.model_version, v.profile_version, v.report));
    let Some((model_version, profile_version, report)) = newest else {
        return error(
            StatusCode::NOT_FOUND,
            format!("model: no drift monitor for {model:?} on this instance (no active profile or no events)"),
        );
    };
    let mut body = serde_json::json!({
        "model": model, "model_version": model_version, "profile_version": profile_version,
        "report": report, "versions": versions,
    });
    if report.is_none() {
        body["status"] = "no window evaluated yet".into();
    }
    answer(StatusCode::OK, body)
}

/// `PUT /v1/models/{model}/profile[?model_version=v]`: publishes a profile
/// (JSON from `mlwatch-profile build`) as the model's active one, or as
/// the profile of one model version; answers once the broker has it.
async fn put_profile(
    Extension(topic): Topic,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let Some(topic) = topic else { return disabled() };
    let mut profile = match Profile::from_json(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("profile: {e}")),
    };
    if profile.model != model {
        return error(
            StatusCode::BAD_REQUEST,
            format!("profile: model is {:?}, the path names {model:?}", profile.model),
        );
    }
    if let Some(v) = q.get("model_version") {
        if v.is_empty() || v.contains(profiles::KEY_SEPARATOR) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("model_version: {v:?} is not a version name"),
            );
        }
        if profile.model_version.as_ref().is_some_and(|p| p != v) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "profile: model_version is {:?}, the query names {v:?}",
                    profile.model_version
                ),
            );
        }
        profile.model_version = Some(v.clone());
    }
    let model_version = profile.model_version.clone();
    match topic.publish(profile).await {
        Ok(version) => answer(
            StatusCode::CREATED,
            serde_json::json!({"model": model, "version": version, "model_version": model_version, "active": true}),
        ),
        Err(e) => {
            tracing::error!(error = %e, model = %model, "cannot publish profile");
            error(StatusCode::SERVICE_UNAVAILABLE, format!("profile not stored: {e}"))
        }
    }
}

/// `GET /v1/models/{model}/profile[?model_version=v]`: the active profile
/// (for a version: the one it is judged against).
async fn get_profile(
    Extension(topic): Topic,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(topic) = topic else { return disabled() };
    let registry = topic.registry();
    let registry = profiles::read(&registry);
    let profile = match q.get("model_version") {
        Some(v) => registry.for_version(&model, v),
        None => registry.active(&model),
    };
    match profile {
        Some(p) => axum::Json(p.as_ref()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("model: no profile for {model:?}")),
    }
}

/// `POST /v1/models/{model}/profile/capture?events=N[&from_version=v]`: the
/// model's next N events (of version `v` only, when given) become its new
/// active profile.
async fn capture_profile(
    State(core): State<Shared>,
    Extension(topic): Topic,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if topic.is_none() {
        return disabled();
    }
    let events = match q.get("events").map(|e| e.parse::<u64>()) {
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("events: {:?} is not a positive integer", q["events"]),
            );
        }
        None => return error(StatusCode::BAD_REQUEST, "events: required, e.g. ?events=10000".into()),
    };
    let from_version = q.get("from_version").map(String::as_str);
    let mut core = consumer::lock(&core);
    match core.trackers.request_capture(&model, events, from_version) {
        Ok(()) => answer(
            StatusCode::ACCEPTED,
            serde_json::json!({"model": model, "capturing_events": events, "from_version": from_version}),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
