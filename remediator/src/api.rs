//! The remediator's HTTP API, on the admin port:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/actions?model=&decision=` | every action record, oldest action first |
//! | GET | `/v1/actions/{id}` | one action: state and records |
//! | POST | `/v1/actions/{id}/approve` | approve an action awaiting approval (guards checked again), then carry it out |
//! | POST | `/v1/actions/{id}/reject` | reject it |
//! | POST | `/v1/actions/{id}/execute` | carry out an action planned in dry-run mode |
//! | POST | `/v1/plan` | what the policy and guards would do about an alert, without acting |
//! | GET | `/v1/guards` | kill switch, dry-run, cooldowns, budgets, pending approvals |
//! | PUT | `/v1/kill-switch` | `{"engaged": true}` stops every action; `false` releases |
//!
//! Approve, reject and execute take an optional JSON body
//! `{"by": "who", "comment": "why"}`. Errors are problem details (RFC 9457,
//! [`mlwatch_common::problem`]); `GET /openapi.json` serves the OpenAPI 3.1
//! contract of these routes.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use mlwatch_common::auth::{Tokens, require_bearer};
use mlwatch_common::problem::Problem;
use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use serde::Deserialize;

use crate::engine::{Engine, Manual, RemediatorError};

/// The API routes, behind bearer-token authentication when `tokens` holds
/// any.
pub fn router(engine: Engine, tokens: Tokens) -> Router {
    Router::new()
        .route("/v1/actions", get(list))
        .route("/v1/actions/{id}", get(one))
        .route("/v1/actions/{id}/{verb}", post(manual))
        .route("/v1/plan", post(plan))
        .route("/v1/guards", get(guards))
        .route("/v1/kill-switch", put(kill_switch).post(kill_switch))
        .layer(axum::middleware::from_fn_with_state(tokens, require_bearer))
        .with_state(engine)
        .layer(axum::middleware::map_response(mlwatch_common::problem::normalize))
        .merge(mlwatch_common::problem::openapi_route(&openapi()))
}

/// The contract of the API, as served at `GET /openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        info(
            title = "mlwatch remediator",
            description = "Remediation actions, approvals, plans and guards, on the remediator's admin port."
        ),
        paths(list, one, manual, plan, guards, kill_switch),
        components(schemas(Decision, AlertIn, KillSwitch))
    )]
    struct Doc;
    mlwatch_common::problem::finish(<Doc as utoipa::OpenApi>::openapi(), true)
}

impl IntoResponse for RemediatorError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Problem::new(status, self.to_string()).into_response()
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only the actions about this model.
    model: Option<String>,
    /// Only the actions with this decision.
    decision: Option<String>,
}

#[utoipa::path(get, path = "/v1/actions", tag = "actions", params(ListQuery),
    responses((status = 200, description = "`{\"actions\": [...]}`, oldest action first.", body = Object),
        (status = 400, description = "A query parameter cannot be read.", body = Problem, content_type = "application/problem+json")))]
async fn list(State(engine): State<Engine>, Query(q): Query<ListQuery>) -> impl IntoResponse {
    let actions = engine.records(q.model.as_deref(), q.decision.as_deref()).await;
    Json(serde_json::json!({ "actions": actions }))
}

#[utoipa::path(get, path = "/v1/actions/{id}", tag = "actions",
    params(("id" = String, Path, description = "The action's id")),
    responses((status = 200, description = "The action: state and records.", body = Object),
        (status = 404, description = "No such action.", body = Problem, content_type = "application/problem+json")))]
async fn one(State(engine): State<Engine>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, RemediatorError> {
    engine.action(&id).await.map(Json)
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    by: String,
    #[serde(default)]
    comment: String,
}

#[utoipa::path(post, path = "/v1/actions/{id}/{verb}", tag = "actions",
    description = "`approve` an action awaiting approval (guards checked again, then carried out), `reject` it, or `execute` an action planned in dry-run mode.",
    params(("id" = String, Path, description = "The action's id"),
        ("verb" = String, Path, description = "`approve`, `reject` or `execute`")),
    request_body(content = Option<Decision>, content_type = "application/json", description = "Optional: who decided and why."),
    responses((status = 200, description = "The action after the decision.", body = Object),
        (status = 400, description = "The body cannot be read.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such action or verb.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The action is not in a state that takes this decision, or a guard refuses.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A JSON body of the wrong shape.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The decision could not be published.", body = Problem, content_type = "application/problem+json")))]
async fn manual(
    State(engine): State<Engine>,
    Path((id, verb)): Path<(String, String)>,
    body: Option<Json<Decision>>,
) -> Result<Json<serde_json::Value>, RemediatorError> {
    let m = Manual::from_path(&verb).ok_or_else(|| RemediatorError::NotFound(format!("{id}/{verb}")))?;
    let d = body.map(|Json(d)| d).unwrap_or_default();
    engine
        .manual(&id, m, &d.by, &d.comment, mlwatch_common::now_ms())
        .await
        .map(Json)
}

/// An alert as the plan endpoint takes it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AlertIn {
    #[serde(rename = "type")]
    alert_type: String,
    /// `low`, `medium`, `high`, `critical`.
    severity: String,
    #[serde(default)]
    labels: HashMap<String, String>,
    /// Identifies the firing (default `preview`).
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
}

#[utoipa::path(post, path = "/v1/plan", tag = "plan",
    description = "What the policy and guards would do about an alert, without acting.",
    request_body(content = AlertIn, content_type = "application/json"),
    responses((status = 200, description = "The plan.", body = Object),
        (status = 400, description = "The alert cannot be read (e.g. an unknown severity).", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A JSON body of the wrong shape.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The guards' state is unavailable.", body = Problem, content_type = "application/problem+json")))]
async fn plan(State(engine): State<Engine>, Json(a): Json<AlertIn>) -> Result<impl IntoResponse, RemediatorError> {
    let severity = match a.severity.as_str() {
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        other => {
            return Err(RemediatorError::BadRequest(format!(
                "severity: {other:?} is not one of low, medium, high, critical"
            )));
        }
    };
    let alert = Alert {
        id: a.id.unwrap_or_else(|| "preview".into()),
        fingerprint: a.fingerprint.unwrap_or_default(),
        status: AlertStatus::Firing as i32,
        r#type: a.alert_type,
        severity: severity as i32,
        labels: a.labels,
        ..Default::default()
    };
    Ok(Json(engine.plan(&alert, mlwatch_common::now_ms()).await?))
}

#[utoipa::path(get, path = "/v1/guards", tag = "guards",
    responses((status = 200, description = "Kill switch, dry-run, cooldowns, budgets, pending approvals.", body = Object)))]
async fn guards(State(engine): State<Engine>) -> impl IntoResponse {
    Json(engine.guard_state(mlwatch_common::now_ms()).await)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KillSwitch {
    engaged: bool,
}

#[utoipa::path(put, path = "/v1/kill-switch", tag = "guards",
    description = "`{\"engaged\": true}` stops every action; `false` releases. `POST` is taken too.",
    request_body(content = KillSwitch, content_type = "application/json"),
    responses((status = 200, description = "The guards after the change.", body = Object),
        (status = 400, description = "The body cannot be read.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A JSON body of the wrong shape.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The change could not be published.", body = Problem, content_type = "application/problem+json")))]
async fn kill_switch(
    State(engine): State<Engine>,
    Json(k): Json<KillSwitch>,
) -> Result<Json<serde_json::Value>, RemediatorError> {
    let now = mlwatch_common::now_ms();
    engine.set_kill_switch(k.engaged, now).await?;
    Ok(Json(engine.guard_state(now).await))
}
