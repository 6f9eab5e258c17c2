//! The web UI on the admin port (docs/ui.md): static pages embedded in the
//! binary under `/ui/` (plain ES modules and SVG, no CDN, no fonts), and
//! read-only forwarding of an allow-list of the alerter's and the
//! remediator's GETs under `/ui/peer/{alerter,remediator}/...`, so the
//! incident timeline reads all three services through one origin.
//!
//! The pages themselves carry no data and load without a token; every
//! request they make for data (the analyzer's `/v1/...` and the forwarded
//! ones) is behind the analyzer's bearer tokens when `[auth]` has any. The
//! analyzer sends its own `[ui] alerter_token` / `remediator_token` to the
//! peers; the browser's token never leaves the analyzer.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use mlwatch_common::auth::Secret;

use crate::config::UiConfig;

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../ui/static/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/static/app.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../ui/static/charts.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../ui/static/style.css"),
    ),
];

/// The peers' GETs the UI may read: `(peer, path prefix)`. A path is
/// allowed when it equals a prefix or continues it with `/`.
const ALLOWED: &[(&str, &str)] = &[
    ("alerter", "api/v1/alerts"),
    ("alerter", "api/v1/notifications"),
    ("alerter", "api/v1/groups"),
    ("alerter", "api/v1/silences"),
    ("remediator", "v1/actions"),
    ("remediator", "v1/guards"),
];

/// Whether the UI may read `path` of `peer`.
pub fn allowed(peer: &str, path: &str) -> bool {
    if path.split('/').any(|s| s == ".." || s == "." || s.is_empty()) {
        return false;
    }
    ALLOWED.iter().any(|(p, prefix)| {
        *p == peer && (path == *prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
    })
}

#[derive(Clone)]
struct Peers {
    client: reqwest::Client,
    alerter: Option<(String, Option<Secret>)>,
    remediator: Option<(String, Option<Secret>)>,
}

fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("ui: no file {name:?}")).into_response(),
    }
}

/// The static routes (open: they carry no data).
pub(crate) fn pages() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

/// The forwarding routes (behind the API's bearer tokens) and
/// `/ui/api/peers` (which peers are configured).
pub(crate) fn peer_routes(config: &UiConfig) -> Result<Router, crate::Error> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.peer_timeout_ms.max(1)))
        .build()
        .map_err(|e| crate::Error::Config {
            key: "ui.peer_timeout_ms".into(),
            reason: e.to_string(),
        })?;
    let peer = |url: &Option<String>, token: &Option<Secret>, key: &str| -> Result<_, crate::Error> {
        match url {
            None => Ok(None),
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Ok(Some((u.trim_end_matches('/').to_string(), token.clone())))
            }
            Some(u) => Err(crate::Error::Config {
                key: format!("ui.{key}"),
                reason: format!("{u:?} is not an http:// or https:// address"),
            }),
        }
    };
    let peers = Peers {
        client,
        alerter: peer(&config.alerter_url, &config.alerter_token, "alerter_url")?,
        remediator: peer(&config.remediator_url, &config.remediator_token, "remediator_url")?,
    };
    Ok(Router::new()
        .route(
            "/ui/api/peers",
            get(|State(p): State<Peers>| async move {
                axum::Json(serde_json::json!({"alerter": p.alerter.is_some(), "remediator": p.remediator.is_some()}))
            }),
        )
        .route("/ui/peer/{peer}/{*path}", get(forward))
        .with_state(peers))
}

async fn forward(
    State(peers): State<Peers>,
    Path((peer, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let error = |status: StatusCode, message: String| mlwatch_common::problem::problem(status, message);
    if !allowed(&peer, &path) {
        return error(
            StatusCode::FORBIDDEN,
            format!("ui: {peer}/{path} is not a read-only API the UI forwards"),
        );
    }
    let target = match peer.as_str() {
        "alerter" => &peers.alerter,
        "remediator" => &peers.remediator,
        _ => &None,
    };
    let Some((base, token)) = target else {
        return error(StatusCode::NOT_FOUND, format!("ui: no {peer}_url in [ui]"));
    };
    let mut url = format!("{base}/{path}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(&q);
    }
    let mut request = peers.client.get(&url);
    if let Some(t) = token {
        request = request.bearer_auth(t.expose());
    }
    match request.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match r.bytes().await {
                Ok(body) => (
                    status,
                    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    body,
                )
                    .into_response(),
                Err(e) => error(StatusCode::BAD_GATEWAY, format!("ui: {peer}: {e}")),
            }
        }
        Err(e) => {
            let e = e.without_url();
            tracing::warn!(peer = %peer, error = %e, "ui: peer request failed");
            error(StatusCode::BAD_GATEWAY, format!("ui: {peer} unreachable: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_read_only_paths_are_forwarded() {
        assert!(allowed("alerter", "api/v1/notifications"));
        assert!(allowed("alerter", "api/v1/alerts"));
        assert!(allowed("remediator", "v1/actions"));
        assert!(allowed("remediator", "v1/actions/abc"));
        assert!(!allowed("remediator", "v1/kill-switch"));
        assert!(!allowed("remediator", "v1/plan"));
        assert!(!allowed("remediator", "v1/actionsx"));
        assert!(!allowed("alerter", "v1/actions"));
        assert!(!allowed("alerter", "api/v1/alerts/../silences"));
        assert!(!allowed("alerter", "api/v1/alerts//x"));
        assert!(!allowed("other", "v1/actions"));
    }

    #[test]
    fn every_page_is_embedded() {
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name}");
        }
        let index = ASSETS[0].2;
        for (name, _, _) in &ASSETS[1..] {
            assert!(index.contains(name), "index.html does not load {name}");
        }
        // Offline: nothing is loaded from another origin.
        for (name, _, body) in ASSETS {
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !body.contains("https://") && !body.contains("http://"),
                "{name} refers to a remote address"
            );
        }
    }
}
