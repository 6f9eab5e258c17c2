//! The alerter's JSON API on the admin port:
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/alerts` | alerts with their state (active, silenced, inhibited, resolved), acknowledgement and groups |
//! | POST | `/v1/alerts/{fingerprint}/ack` | acknowledge an alert (`{"by": …, "comment": …}`) |
//! | GET | `/v1/groups` | aggregation groups |
//! | POST | `/v1/groups/{id}/ack` | acknowledge every firing alert of a group |
//! | GET | `/v1/silences` | silences with their state |
//! | POST | `/v1/silences` | create a silence (`matchers`, `starts_at_ms`, `ends_at_ms`, `created_by`, `comment`) |
//! | DELETE | `/v1/silences/{id}` | expire a silence |
//! | GET | `/v1/notifications` | notification history with outcomes (`?receiver=`, `?outcome=`, `?limit=`) |
//! | POST | `/api/v2/alerts` | alerts from a Prometheus, as Alertmanager's API v2 takes them ([`crate::inbound`]) |
//!
//! Every `/v1/...` route also answers at `/api/v1/...`, its former path,
//! kept as a deprecated alias. Errors are problem details (RFC 9457,
//! [`mlwatch_common::problem`]); `GET /openapi.json` serves the OpenAPI 3.1
//! contract (docs/decisions/0016-http-api-contract.md).
//!
//! Answers never contain receiver configuration, so no secret can leak.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use mlwatch_common::auth::{Tokens, require_bearer};
use mlwatch_common::problem::Problem;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::engine::{AckTarget, SilenceRequest};
use crate::error::AlerterError;
use crate::store::Outcome;

fn answer(result: Result<Value, AlerterError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Problem::new(status, e.to_string()).into_response()
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, AlerterError> {
    serde_json::from_slice(body).map_err(|e| AlerterError::Invalid(format!("body: {e}")))
}

/// Runs a blocking state change off the async threads.
async fn blocking<T: Send + 'static>(
    shared: Arc<Shared>,
    f: impl FnOnce(&Shared) -> Result<T, AlerterError> + Send + 'static,
) -> Result<T, AlerterError> {
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .map_err(|e| AlerterError::Store(format!("task failed: {e}")))?
}

#[utoipa::path(get, path = "/v1/alerts", tag = "alerts",
    responses((status = 200, description = "Alerts: fingerprint, id, type, severity, status, state, silenced_by, labels, annotations, value, threshold, times, acknowledgement, groups.", body = Vec<Object>)))]
async fn alerts(State(shared): State<Arc<Shared>>) -> Response {
    let now = mlwatch_common::now_ms();
    let core = shared.lock();
    let e = &core.engine;
    let mut groups_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for g in e.state.groups.values() {
        for fp in &g.alerts {
            groups_of.entry(fp.as_str()).or_default().push(g.id.as_str());
        }
    }
    let list: Vec<Value> = e
        .state
        .alerts
        .values()
        .map(|a| {
            json!({
                "fingerprint": a.fingerprint,
                "id": a.id,
                "type": a.kind,
                "severity": a.severity,
                "status": a.status.as_str(),
                "state": e.alert_state(a, now),
                "silenced_by": e.silenced_by(a, now),
                "labels": a.labels,
                "annotations": a.annotations,
                "value": a.value,
                "threshold": a.threshold,
                "starts_at_ms": a.starts_at_ms,
                "ends_at_ms": a.ends_at_ms,
                "acknowledged": e.state.acks.get(&a.fingerprint),
                "groups": groups_of.get(a.fingerprint.as_str()).cloned().unwrap_or_default(),
            })
        })
        .collect();
    answer(Ok(Value::Array(list)))
}

#[utoipa::path(get, path = "/v1/groups", tag = "groups",
    responses((status = 200, description = "Aggregation groups: id, key, route, receiver, labels, alerts, times, escalation.", body = Vec<Object>)))]
async fn groups(State(shared): State<Arc<Shared>>) -> Response {
    let core = shared.lock();
    let list: Vec<Value> = core
        .engine
        .state
        .groups
        .values()
        .map(|g| {
            json!({
                "id": g.id,
                "key": g.key,
                "route": g.route_id,
                "receiver": g.receiver,
                "labels": g.labels,
                "alerts": g.alerts,
                "created_at_ms": g.created_at_ms,
                "next_flush_ms": g.next_flush_ms,
                "last_notified_ms": g.last.as_ref().map(|l| l.at_ms),
                "escalation_level": g.escalation.level,
                "escalation_due_ms": g.escalation.due_ms,
                "escalated_to": g.escalation.notified,
            })
        })
        .collect();
    answer(Ok(Value::Array(list)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckBody {
    by: String,
    #[serde(default)]
    comment: String,
}

async fn ack(shared: Arc<Shared>, target: AckTarget, body: Bytes) -> Response {
    let result = async {
        let req: AckBody = parse(&body)?;
        let sent = blocking(shared, move |s| {
            s.apply(|e, now| {
                let n = e.acknowledge(&target, &req.by, &req.comment, now)?;
                Ok((n.len(), n))
            })
        })
        .await?;
        Ok(json!({"acknowledged": true, "notifications": sent}))
    }
    .await;
    answer(result)
}

#[utoipa::path(post, path = "/v1/alerts/{fingerprint}/ack", tag = "alerts",
    params(("fingerprint" = String, Path, description = "The alert's fingerprint")),
    request_body(content = AckBody, content_type = "application/json"),
    responses((status = 200, description = "`{\"acknowledged\": true, \"notifications\": n}`.", body = Object),
        (status = 400, description = "The body cannot be read.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert or group.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The state could not be stored.", body = Problem, content_type = "application/problem+json")))]
async fn ack_alert(State(shared): State<Arc<Shared>>, Path(fp): Path<String>, body: Bytes) -> Response {
    ack(shared, AckTarget::Alert(fp), body).await
}

#[utoipa::path(post, path = "/v1/groups/{id}/ack", tag = "groups",
    description = "Acknowledges every firing alert of the group.",
    params(("id" = String, Path, description = "The group's id")),
    request_body(content = AckBody, content_type = "application/json"),
    responses((status = 200, description = "`{\"acknowledged\": true, \"notifications\": n}`.", body = Object),
        (status = 400, description = "The body cannot be read.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert or group.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The state could not be stored.", body = Problem, content_type = "application/problem+json")))]
async fn ack_group(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> Response {
    ack(shared, AckTarget::Group(id), body).await
}

#[utoipa::path(get, path = "/v1/silences", tag = "silences",
    responses((status = 200, description = "Silences with `state` (pending, active, expired).", body = Vec<Object>)))]
async fn silences(State(shared): State<Arc<Shared>>) -> Response {
    let now = mlwatch_common::now_ms();
    let core = shared.lock();
    let list: Vec<Value> = core
        .engine
        .state
        .silences
        .values()
        .map(|s| {
            json!({
                "id": s.id,
                "matchers": s.matchers,
                "starts_at_ms": s.starts_at_ms,
                "ends_at_ms": s.ends_at_ms,
                "created_by": s.created_by,
                "comment": s.comment,
                "created_at_ms": s.created_at_ms,
                "state": s.state(now),
            })
        })
        .collect();
    answer(Ok(Value::Array(list)))
}

#[utoipa::path(post, path = "/v1/silences", tag = "silences",
    request_body(content = SilenceBody, content_type = "application/json"),
    responses((status = 200, description = "`{\"id\": ...}` of the new silence.", body = Object),
        (status = 400, description = "The body or a matcher cannot be read.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The state could not be stored.", body = Problem, content_type = "application/problem+json")))]
async fn create_silence(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let result = async {
        let req: SilenceRequest = parse(&body)?;
        let id = blocking(shared, move |s| {
            s.apply(|e, now| Ok((e.add_silence(&req, now)?, e.tick(now))))
        })
        .await?;
        Ok(json!({"id": id}))
    }
    .await;
    answer(result)
}

#[utoipa::path(delete, path = "/v1/silences/{id}", tag = "silences",
    params(("id" = String, Path, description = "The silence's id")),
    responses((status = 200, description = "`{\"expired\": true}`.", body = Object),
        (status = 404, description = "No such silence.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The state could not be stored.", body = Problem, content_type = "application/problem+json")))]
async fn expire_silence(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let result = blocking(shared, move |s| {
        s.apply(|e, now| {
            e.expire_silence(&id, now)?;
            Ok(((), e.tick(now)))
        })
    })
    .await
    .map(|()| json!({"expired": true}));
    answer(result)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Only this receiver's notifications.
    receiver: Option<String>,
    /// `pending`, `delivered` or `failed`.
    #[param(value_type = Option<String>, pattern = "^(pending|delivered|failed)$")]
    outcome: Option<Outcome>,
    /// At most this many (default 100).
    #[param(minimum = 0)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(HistoryQuery),
    responses((status = 200, description = "Notification history, newest first.", body = Vec<Object>),
        (status = 400, description = "A query parameter cannot be read.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be read.", body = Problem, content_type = "application/problem+json")))]
async fn notifications(State(shared): State<Arc<Shared>>, Query(q): Query<HistoryQuery>) -> Response {
    let result = blocking(shared, move |s| s.lock().store.log(q.outcome))
        .await
        .map(|entries| {
            let list: Vec<Value> = entries
                .iter()
                .rev()
                .filter(|e| q.receiver.as_ref().is_none_or(|r| *r == e.notification.receiver))
                .take(q.limit.unwrap_or(100))
                .map(|e| {
                    let n = &e.notification;
                    json!({
                        "id": n.id,
                        "receiver": n.receiver,
                        "kind": n.kind.name(),
                    "escalation_level": match n.kind {
                        crate::engine::Kind::Escalation { level } => Some(level),
                        _ => None,
                    },
                        "group_id": n.group_id,
                        "status": n.status().as_str(),
                        "firing": n.firing.iter().map(|a| &a.fingerprint).collect::<Vec<_>>(),
                        "resolved": n.resolved.iter().map(|a| &a.fingerprint).collect::<Vec<_>>(),
                        "created_at_ms": n.created_at_ms,
                        "outcome": e.outcome,
                        "error": e.error,
                        "updated_at_ms": e.updated_at_ms,
                    })
                })
                .collect();
            Value::Array(list)
        });
    answer(result)
}

/// Alerts from a Prometheus, as an Alertmanager takes them: filed with the
/// alerts from the analyzer, routed, grouped and silenced alike.
#[utoipa::path(post, path = "/api/v2/alerts", tag = "alertmanager",
    description = "Alerts from a Prometheus, as Alertmanager's API v2 takes them.",
    request_body(content = Vec<Object>, content_type = "application/json"),
    responses((status = 200, description = "`{\"taken\": n}`.", body = Object),
        (status = 400, description = "The body or an alert cannot be read.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The state could not be stored.", body = Problem, content_type = "application/problem+json")))]
async fn prometheus_alerts(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let now = mlwatch_common::now_ms();
    let records = match crate::inbound::parse(&body, now, shared.resolve_timeout_ms) {
        Ok(r) => r,
        Err(e) => return answer(Err(e)),
    };
    let taken = records.len();
    let result = blocking(shared.clone(), move |s| {
        s.apply(|engine, now| {
            let outcomes: Vec<_> = records.into_iter().map(|r| engine.ingest(r, now)).collect();
            Ok((outcomes, engine.tick(now)))
        })
    })
    .await
    .map(|outcomes| {
        for o in outcomes {
            shared.prometheus_alerts.with_label_values(&[o.name()]).inc();
        }
        json!({"taken": taken})
    });
    answer(result)
}

/// The API routes, behind bearer-token authentication when `tokens` holds
/// any: each `/v1/...` route also at `/api/v1/...` (deprecated alias).
pub fn router(shared: Arc<Shared>, tokens: Tokens) -> Router {
    let mut router = Router::new();
    for prefix in [PREFIX, DEPRECATED_PREFIX] {
        router = router
            .route(&format!("{prefix}/alerts"), get(alerts))
            .route(&format!("{prefix}/alerts/{{fingerprint}}/ack"), post(ack_alert))
            .route(&format!("{prefix}/groups"), get(groups))
            .route(&format!("{prefix}/groups/{{id}}/ack"), post(ack_group))
            .route(&format!("{prefix}/silences"), get(silences).post(create_silence))
            .route(&format!("{prefix}/silences/{{id}}"), delete(expire_silence))
            .route(&format!("{prefix}/notifications"), get(notifications));
    }
    router
        .route("/api/v2/alerts", post(prometheus_alerts))
        .layer(axum::middleware::from_fn_with_state(tokens, require_bearer))
        .with_state(shared)
        .layer(axum::middleware::map_response(mlwatch_common::problem::normalize))
        .merge(mlwatch_common::problem::openapi_route(&openapi()))
}

/// The prefix of the alerter's own routes.
pub const PREFIX: &str = "/v1";
/// Their former prefix, kept as an alias.
pub const DEPRECATED_PREFIX: &str = "/api/v1";

/// The contract of the API, as served at `GET /openapi.json`: the `/v1`
/// routes, their `/api/v1` aliases (deprecated) and Alertmanager's
/// `POST /api/v2/alerts`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        info(
            title = "mlwatch alerter",
            description = "Alerts, groups, acknowledgements, silences and notification history, on the alerter's admin port; Alertmanager's `POST /api/v2/alerts` for a Prometheus."
        ),
        paths(
            alerts,
            ack_alert,
            groups,
            ack_group,
            silences,
            create_silence,
            expire_silence,
            notifications,
            prometheus_alerts
        ),
        components(schemas(AckBody, SilenceBody))
    )]
    struct Doc;
    let doc = mlwatch_common::problem::alias_paths(<Doc as utoipa::OpenApi>::openapi(), PREFIX, DEPRECATED_PREFIX);
    mlwatch_common::problem::finish(doc, true)
}

/// A new silence (the body of `POST /v1/silences`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct SilenceBody {
    /// Label matchers, e.g. `model="fraud"`, `severity=~"high|critical"`.
    matchers: Vec<String>,
    /// Default: now.
    starts_at_ms: Option<i64>,
    ends_at_ms: i64,
    created_by: String,
    comment: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_lists_v1_routes_and_their_deprecated_aliases() {
        let doc: Value = serde_json::from_str(&openapi().to_json().unwrap()).unwrap();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("alerts", "get"),
            ("alerts/{fingerprint}/ack", "post"),
            ("groups", "get"),
            ("groups/{id}/ack", "post"),
            ("silences", "get"),
            ("silences", "post"),
            ("silences/{id}", "delete"),
            ("notifications", "get"),
        ] {
            let new = &paths[&format!("{PREFIX}/{path}")][method];
            let old = &paths[&format!("{DEPRECATED_PREFIX}/{path}")][method];
            assert!(new["deprecated"].is_null(), "{path}: {new}");
            assert_eq!(old["deprecated"], true, "{path}");
            assert_eq!(
                new["responses"]["default"]["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem"
            );
        }
        assert!(paths["/api/v2/alerts"]["post"]["deprecated"].is_null());
        let mut ids: Vec<&str> = paths
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str())
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "operation ids are unique");
        assert_eq!(n, 17);
    }
}
