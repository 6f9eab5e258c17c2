//! The analyzer's JSON API, one router: models and latency, accuracy and
//! the join, drift reports, and the reference profiles (upload, read,
//! capture). Uploads are published to the profiles topic and answered once
//! the broker acknowledged them (docs/decisions/0004-profile-store.md).
//! Errors are problem details (RFC 9457, [`mlwatch_common::problem`]);
//! `GET /openapi.json` serves the OpenAPI 3.1 contract of these routes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use mlwatch_analyzer_core::clock::{parse_window, window_name};
use mlwatch_analyzer_drift::Profile;
use mlwatch_common::problem::Problem;

use crate::consumer::{self, Shared};
use crate::profiles::{self, ProfileTopic};

/// The profiles topic, when drift is enabled.
type Topic = Extension<Option<Arc<ProfileTopic>>>;

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    Problem::new(status, message).into_response()
}

fn disabled() -> Response {
    error(StatusCode::NOT_FOUND, "drift: disabled in [drift]".into())
}

/// `GET /v1/models/{model}/drift[?model_version=v]`: per model version, per
/// feature and prediction output the scores, decision state and quality,
/// with the reference and current distributions on the same bins. The
/// top-level `model_version`, `profile_version` and `report` are those of
/// the version with the newest evaluated window; `versions` lists all.
#[utoipa::path(get, path = "/v1/models/{model}/drift", tag = "drift",
    params(("model" = String, Path, description = "The model's name"), ("model_version" = Option<String>, Query, description = "One model version only")),
    responses((status = 200, description = "Per model version, per feature and prediction output: scores, decision state, quality, the reference and current distributions.", body = Object),
        (status = 404, description = "No drift monitor for the model on this instance.", body = Problem, content_type = "application/problem+json")))]
async fn model_drift(
    State(core): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let core = consumer::lock(&core);
    let versions = core.drift_report(&model, q.get("model_version").map(String::as_str));
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
#[utoipa::path(put, path = "/v1/models/{model}/profile", tag = "profiles",
    description = "Publishes a profile (JSON from `mlwatch-profile build`) as the model's active one, or as one version's; answers once the broker has it.",
    params(("model" = String, Path, description = "The model's name"), ("model_version" = Option<String>, Query, description = "One model version only")),
    request_body(content = Object, content_type = "application/json", description = "A profile from `mlwatch-profile build`."),
    responses((status = 201, description = "`{\"model\", \"version\", \"model_version\", \"active\"}`.", body = Object),
        (status = 400, description = "The profile cannot be read or names another model or version.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Drift is disabled.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not take the profile.", body = Problem, content_type = "application/problem+json")))]
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
#[utoipa::path(get, path = "/v1/models/{model}/profile", tag = "profiles",
    params(("model" = String, Path, description = "The model's name"), ("model_version" = Option<String>, Query, description = "One model version only")),
    responses((status = 200, description = "The active profile (for a version: the one it is judged against).", body = Object),
        (status = 404, description = "No profile, or drift is disabled.", body = Problem, content_type = "application/problem+json")))]
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
#[utoipa::path(post, path = "/v1/models/{model}/profile/capture", tag = "profiles",
    description = "The model's next N events (of one version, when given) become its new active profile.",
    params(("model" = String, Path, description = "The model's name"), ("events" = u64, Query, minimum = 1, description = "How many events"),
        ("from_version" = Option<String>, Query, description = "Only this version's events")),
    responses((status = 202, description = "Capture requested.", body = Object),
        (status = 400, description = "`events` missing or not a positive integer.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Drift is disabled.", body = Problem, content_type = "application/problem+json")))]
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
    match core.request_capture(&model, events, from_version) {
        Ok(()) => answer(
            StatusCode::ACCEPTED,
            serde_json::json!({"model": model, "capturing_events": events, "from_version": from_version}),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub(crate) fn router(core: Shared, profiles: Option<Arc<ProfileTopic>>) -> Router {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/models/{model}/latency", get(model_latency))
        .route("/v1/models/{model}/accuracy", get(model_accuracy))
        .route("/v1/models/{model}/decay", get(model_decay))
        .route("/v1/models/{model}/accuracy/report", get(model_decay_report))
        .route("/v1/models/{model}/accuracy/join", get(model_join))
        .route("/v1/models/{model}/drift", get(model_drift))
        .route("/v1/models/{model}/history", get(model_history))
        .route("/v1/models/{model}/profile", get(get_profile).put(put_profile))
        .route("/v1/models/{model}/profile/capture", post(capture_profile))
        .layer(Extension(profiles))
        .with_state(core)
        .layer(axum::middleware::map_response(mlwatch_common::problem::normalize))
        .merge(mlwatch_common::problem::openapi_route(&openapi()))
}

/// The contract of the API, as served at `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        info(
            title = "mlwatch analyzer",
            description = "Models, latency, accuracy and the label join, drift reports, alerts and reference profiles, on the analyzer's admin port."
        ),
        paths(
            list_models,
            list_alerts,
            model_latency,
            model_accuracy,
            model_decay,
            model_decay_report,
            model_join,
            model_drift,
            get_profile,
            put_profile,
            capture_profile
        )
    )]
    struct Doc;
    mlwatch_common::problem::finish(<Doc as utoipa::OpenApi>::openapi(), true)
}

/// `GET /v1/models/{model}/accuracy/report`: the same as `/decay`.
#[utoipa::path(get, path = "/v1/models/{model}/accuracy/report", tag = "accuracy",
    description = "The decay report per version and segment (the same answer as `/v1/models/{model}/decay`).",
    params(("model" = String, Path, description = "The model's name")),
    responses((status = 200, description = "`{\"model\": ..., \"reports\": [...]}`.", body = Object),
        (status = 404, description = "No predictions seen for the model on this instance.", body = Problem, content_type = "application/problem+json")))]
async fn model_decay_report(core: State<Shared>, model: Path<String>) -> Response {
    model_decay(core, model).await
}

/// `GET /v1/models/{model}/history?range=1h|1d|1w[&version=v]`: each
/// series' history over the range, from the fine ring (a day at one
/// minute by default) or, for longer ranges, the coarse one (a week at ten
/// minutes); see docs/ui.md for the columns.
async fn model_history(
    State(core): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let range = q.get("range").map(String::as_str).unwrap_or("1h");
    let Some(range_ms) = crate::history::parse_range(range) else {
        return bad_request(format!("range: cannot parse {range:?}; use 1h, 1d or 1w"));
    };
    let version = q.get("version").or_else(|| q.get("model_version")).map(String::as_str);
    let core = consumer::lock(&core);
    let config = core.history_config();
    if !config.enabled {
        return not_found("history: disabled in [history]".into());
    }
    let mut series: Vec<_> = core
        .history(&model, version)
        .into_iter()
        .map(|(h, now)| h.range(config, now, range_ms))
        .collect();
    if series.is_empty() {
        return not_found(format!("model: no history for {model:?} on this instance"));
    }
    series.sort_by(|a, b| (&a.model_version, &a.segment).cmp(&(&b.model_version, &b.segment)));
    let versions: Vec<_> = core
        .series()
        .into_iter()
        .filter(|s| s.model == model)
        .map(|s| serde_json::json!({"model_version": s.model_version, "segment": s.segment, "first_event_ms": s.first_event_ms, "last_event_ms": s.last_event_ms}))
        .collect();
    axum::Json(serde_json::json!({"model": model, "range": range, "versions": versions, "series": series}))
        .into_response()
}

fn not_found(message: String) -> Response {
    error(StatusCode::NOT_FOUND, message)
}

/// `GET /v1/models/{model}/accuracy?window=1h`: realised metrics and the
/// CBPE estimate per version and segment, coverage and label lag, each as
/// of its partition's accuracy clock.
#[utoipa::path(get, path = "/v1/models/{model}/accuracy", tag = "accuracy",
    params(("model" = String, Path, description = "The model's name"), ("window" = Option<String>, Query, description = "A served window, e.g. `1h`")),
    responses((status = 200, description = "Realised metrics and the CBPE estimate per version and segment, coverage and label lag.", body = Object),
        (status = 400, description = "The window cannot be read or is not served.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No predictions seen for the model, or accuracy is disabled.", body = Problem, content_type = "application/problem+json")))]
async fn model_accuracy(
    State(core): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let core = consumer::lock(&core);
    let config = core.accuracy_config();
    if !config.enabled {
        return not_found("accuracy: disabled in [accuracy]".into());
    }
    let default = window_name(config.decay_window_secs);
    let window = q.get("window").cloned().unwrap_or(default);
    let Some(secs) = parse_window(&window) else {
        return bad_request(format!("window: cannot parse {window:?}; use e.g. 1h, 1d"));
    };
    if secs != config.decay_window_secs && !config.windows_secs.contains(&secs) {
        return bad_request(format!(
            "window: {window} is not served; served: {:?}",
            config
                .windows_secs
                .iter()
                .chain(std::iter::once(&config.decay_window_secs))
                .map(|s| window_name(*s))
                .collect::<Vec<_>>()
        ));
    }
    let series: Vec<_> = core
        .accuracy_parts()
        .flat_map(|(t, _, clock)| t.window_metrics(Some(&model), secs, clock))
        .collect();
    if series.is_empty() {
        return not_found(format!("model: no predictions seen for {model:?} on this instance"));
    }
    axum::Json(serde_json::json!({"model": model, "window": window_name(secs), "series": series})).into_response()
}

/// `GET /v1/models/{model}/decay`: the decay report per version/segment.
#[utoipa::path(get, path = "/v1/models/{model}/decay", tag = "accuracy",
    params(("model" = String, Path, description = "The model's name")),
    responses((status = 200, description = "The decay report per version and segment.", body = Object),
        (status = 404, description = "No predictions seen for the model on this instance.", body = Problem, content_type = "application/problem+json")))]
async fn model_decay(State(core): State<Shared>, Path(model): Path<String>) -> Response {
    let core = consumer::lock(&core);
    let reports: Vec<_> = core
        .accuracy_parts()
        .flat_map(|(t, _, clock)| t.reports(&model, clock))
        .collect();
    if reports.is_empty() {
        return not_found(format!("model: no predictions seen for {model:?} on this instance"));
    }
    axum::Json(serde_json::json!({"model": model, "reports": reports})).into_response()
}

/// `GET /v1/models/{model}/accuracy/join`: the join counts of the
/// partition(s) holding the model (summed over owned partitions).
#[utoipa::path(get, path = "/v1/models/{model}/accuracy/join", tag = "accuracy",
    params(("model" = String, Path, description = "The model's name")),
    responses((status = 200, description = "The join counts of the partitions holding the model.", body = Object),
        (status = 404, description = "No predictions seen for the model on this instance.", body = Problem, content_type = "application/problem+json")))]
async fn model_join(State(core): State<Shared>, Path(model): Path<String>) -> Response {
    let core = consumer::lock(&core);
    let mut total = mlwatch_analyzer_accuracy::join::JoinCounts::default();
    let mut found = false;
    for (t, counts, clock) in core.accuracy_parts() {
        if !t
            .window_metrics(Some(&model), t.config().decay_window_secs, clock)
            .is_empty()
        {
            total.add(&counts);
            found = true;
        }
    }
    if !found {
        return not_found(format!("model: no predictions seen for {model:?} on this instance"));
    }
    axum::Json(serde_json::json!({"model": model, "join": total})).into_response()
}

/// `GET /v1/alerts[?model=m][&limit=n]`: the alerts of every signal this
/// instance published: `active` (firing, kept across restarts with the
/// partition's checkpoint) and `recent` transitions of this process,
/// newest first (`limit`, default 100, at most 1000).
#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    params(("model" = Option<String>, Query, description = "One model only"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Most recent transitions (default 100)")),
    responses((status = 200, description = "`active` alerts and `recent` transitions, newest first.", body = Object),
        (status = 400, description = "`limit` is not a whole number from 1 to 1000.", body = Problem, content_type = "application/problem+json")))]
async fn list_alerts(State(core): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=crate::alerts::RECENT).contains(&n) => n,
        Some(_) => {
            return bad_request(format!(
                "limit: {:?} is not a whole number from 1 to {}",
                q["limit"],
                crate::alerts::RECENT
            ));
        }
    };
    let model = q.get("model").map(String::as_str);
    let core = consumer::lock(&core);
    let book = core.alerts();
    axum::Json(serde_json::json!({
        "active": book.active(model),
        "recent": book.recent(model, limit),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "`{\"models\": [...]}`: the series this instance has seen.", body = Object)))]
async fn list_models(State(core): State<Shared>) -> Response {
    let series = consumer::lock(&core).series();
    axum::Json(serde_json::json!({ "models": series })).into_response()
}

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

#[utoipa::path(get, path = "/v1/models/{model}/latency", tag = "latency",
    params(("model" = String, Path, description = "The model's name"), ("window" = Option<String>, Query, description = "A tracked window, e.g. `5m` (default)")),
    responses((status = 200, description = "Latency percentiles, throughput and error rate per version and segment.", body = Object),
        (status = 400, description = "The window cannot be read or is not tracked.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No events seen for the model on this instance.", body = Problem, content_type = "application/problem+json")))]
async fn model_latency(
    State(core): State<Shared>,
    Path(model): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let window = q.get("window").map(String::as_str).unwrap_or("5m");
    let Some(secs) = parse_window(window) else {
        return bad_request(format!("window: cannot parse {window:?}; use e.g. 30s, 5m, 1h"));
    };
    let core = consumer::lock(&core);
    match core.latency_reports(Some(&model), secs) {
        None => bad_request(format!(
            "window: {window} is not tracked; tracked: {:?}",
            core.windows_secs().iter().map(|s| window_name(*s)).collect::<Vec<_>>()
        )),
        Some(r) if r.is_empty() => not_found(format!("model: no events seen for {model:?} on this instance")),
        Some(mut r) => {
            r.sort_by(|a, b| (&a.model_version, &a.segment).cmp(&(&b.model_version, &b.segment)));
            axum::Json(serde_json::json!({"model": model, "window": window_name(secs), "versions": r})).into_response()
        }
    }
}
