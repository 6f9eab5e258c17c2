//! One error body for every mlwatch HTTP API: RFC 9457 problem details
//! (`application/problem+json`), and the OpenAPI contract each service
//! serves at `GET /openapi.json` (docs/decisions/0016-http-api-contract.md).
//!
//! A problem is `{"type": "about:blank", "title": <the status's reason
//! phrase>, "status": <code>, "detail": <what is wrong, naming the field
//! and the value>}`, plus extension members where a service has more to
//! say: the collector's `accepted` count and `rejected` list,
//! `retry_after_secs` beside a `Retry-After` header.
//!
//! [`normalize`] turns every other error answer (the framework's own
//! rejections of a path, query or body it cannot extract, 404 and 405) into
//! a problem too, so a client reads one shape whatever went wrong.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr, ResponseBuilder, Schema};

/// The media type of a problem.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Largest error body [`normalize`] reads to carry into `detail`.
const MAX_NORMALIZED_BODY: usize = 16 * 1024;

/// An RFC 9457 problem: the error body of every mlwatch HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` (the status says it).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status code's reason phrase.
    pub title: String,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What is wrong, naming the field and the value.
    pub detail: String,
    /// Extension members (`accepted`, `rejected`, `retry_after_secs`, …).
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// Adds the extension member `name`.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.into(), value.into());
        self
    }

    /// Says when to try again: `retry_after_secs` in the body, `Retry-After`
    /// in the headers.
    pub fn retry_after(self, secs: u64) -> Self {
        self.with("retry_after_secs", secs)
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry = self.extensions.get("retry_after_secs").and_then(Value::as_u64);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body,
        )
            .into_response();
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl utoipa::PartialSchema for Problem {
    fn schema() -> RefOr<Schema> {
        RefOr::T(problem_schema())
    }
}

impl utoipa::ToSchema for Problem {
    fn name() -> std::borrow::Cow<'static, str> {
        "Problem".into()
    }
}

/// The answer `status` with `detail`, as a problem.
pub fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    Problem::new(status, detail).into_response()
}

/// Response middleware (`axum::middleware::map_response(normalize)`):
/// an error answer (4xx, 5xx) that is not yet a problem becomes one, its
/// text (or the `error` member of a JSON body) as `detail`, its headers
/// (`Retry-After`, `WWW-Authenticate`, `Allow`) kept.
pub async fn normalize(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(CONTENT_TYPE.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_NORMALIZED_BODY)
        .await
        .unwrap_or_default();
    let detail = match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(o)) if o.get("error").is_some_and(Value::is_string) => {
            o["error"].as_str().unwrap_or_default().to_string()
        }
        _ => String::from_utf8_lossy(&text).trim().to_string(),
    };
    let detail = if detail.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        detail
    };
    let body = serde_json::to_vec(&Problem::new(status, detail)).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Response::from_parts(parts, Body::from(body))
}

/// `GET /openapi.json`: `doc` as JSON, rendered once.
pub fn openapi_route(doc: &OpenApi) -> Router {
    let json = doc.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the OpenAPI document");
        "{}".into()
    });
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], json) }
        }),
    )
}

/// The schema of [`Problem`]: its four members required, extension members
/// allowed.
pub fn problem_schema() -> Schema {
    let string = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
            .build()
    };
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "RFC 9457 problem details, with extension members where the service has more to say \
                 (`accepted` and `rejected` of the collector, `retry_after_secs` beside `Retry-After`).",
            ))
            .property("type", string("A URI naming the kind of problem; `about:blank`."))
            .property("title", string("The status code's reason phrase."))
            .property(
                "status",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(400))
                    .maximum(Some(599))
                    .description(Some("The HTTP status code.")),
            )
            .property("detail", string("What is wrong, naming the field and the value."))
            .property(
                "retry_after_secs",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .description(Some("Seconds to wait before trying again (as `Retry-After`).")),
            )
            .required("type")
            .required("title")
            .required("status")
            .required("detail")
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .build(),
    )
}

/// What every mlwatch contract shares, applied to a generated `doc`: the
/// `Problem` schema, a `default` problem answer on every operation (any
/// error status not listed), and, when `bearer` (the API takes bearer
/// tokens when configured), the `bearer` security scheme as an option
/// beside no authentication.
pub fn finish(mut doc: OpenApi, bearer: bool) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("Problem".into(), RefOr::T(problem_schema()));
    if bearer {
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    let default = ResponseBuilder::new()
        .description("Any other error, as problem details.")
        .content(
            CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem"))))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| RefOr::T(default.clone()));
            if bearer {
                op.security = Some(vec![
                    SecurityRequirement::default(),
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                ]);
            }
        }
    }
    doc
}

/// Copies every path under `from` to the same path under `to`, each
/// operation marked deprecated and its id suffixed `_deprecated`: old
/// paths kept as aliases of the new ones.
pub fn alias_paths(mut doc: OpenApi, from: &str, to: &str) -> OpenApi {
    let aliases: Vec<_> = doc
        .paths
        .paths
        .iter()
        .filter_map(|(path, item)| {
            let rest = path.strip_prefix(from)?;
            let mut item = item.clone();
            for op in operations(&mut item) {
                op.deprecated = Some(utoipa::openapi::Deprecated::True);
                op.operation_id = op.operation_id.take().map(|id| format!("{id}_deprecated"));
                op.description = Some(format!(
                    "Deprecated alias of `{from}{rest}`. {}",
                    op.description.take().unwrap_or_default()
                ));
            }
            Some((format!("{to}{rest}"), item))
        })
        .collect();
    doc.paths.paths.extend(aliases);
    doc
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// A free-form JSON object, for answers whose members are described in
/// words.
pub fn object() -> Object {
    ObjectBuilder::new().schema_type(Type::Object).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn problems_carry_status_detail_and_retry_after() {
        let response = Problem::new(StatusCode::TOO_MANY_REQUESTS, "at capacity")
            .retry_after(2)
            .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "about:blank", "title": "Too Many Requests", "status": 429,
                "detail": "at capacity", "retry_after_secs": 2})
        );
    }

    #[tokio::test]
    async fn other_error_answers_become_problems() {
        let plain = (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Failed to deserialize: missing field `by`",
        )
            .into_response();
        let response = normalize(plain).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let p: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!(p.status, 422);
        assert_eq!(p.detail, "Failed to deserialize: missing field `by`");

        let empty = normalize(StatusCode::METHOD_NOT_ALLOWED.into_response()).await;
        let body = axum::body::to_bytes(empty.into_body(), 1 << 16).await.unwrap();
        let p: Problem = serde_json::from_slice(&body).unwrap();
        assert_eq!((p.status, p.detail.as_str()), (405, "method not allowed"));

        let ok = normalize((StatusCode::OK, "fine").into_response()).await;
        assert_eq!(ok.status(), 200);
        assert!(ok.headers().get(header::CONTENT_TYPE).unwrap() != CONTENT_TYPE);
    }
}
