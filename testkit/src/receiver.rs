//! A real HTTP receiver standing in for Slack, PagerDuty or any webhook:
//! records every request (path, headers, JSON body) and answers with a
//! scripted sequence of statuses (200 once the script is used up).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    /// Status the receiver answered.
    pub status: u16,
}

impl Received {
    /// The `text` field of the JSON body (a Slack message's text); empty
    /// when there is none.
    pub fn text(&self) -> &str {
        self.body["text"].as_str().unwrap_or_default()
    }

    /// A header's value (header names arrive lowercase).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<(u16, Option<u64>)>,
}

#[derive(Clone, Default)]
pub struct HttpReceiver {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::Notify>,
}

impl HttpReceiver {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers the next requests with these statuses (and optional
    /// `Retry-After` seconds), then 200.
    pub fn script(&self, answers: impl IntoIterator<Item = (u16, Option<u64>)>) {
        self.lock().script.extend(answers);
    }

    /// Requests answered with 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.status < 300)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Waits until a request is accepted beyond the first `seen`.
    pub async fn wait_accepted(&self, seen: usize) -> Received {
        loop {
            let notified = self.changed.notified();
            if let Some(r) = self.accepted().get(seen) {
                return r.clone();
            }
            notified.await;
        }
    }

    /// Serves on `listen` until `shutdown`.
    pub async fn serve(&self, listen: SocketAddr, shutdown: CancellationToken) -> crate::Served {
        let (listener, addr) = crate::bind(listen).await?;
        let app = Router::new().fallback(record).with_state(self.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        Ok((addr, task))
    }

    /// [`Self::serve`] on a loopback port the OS picks; returns the address.
    pub async fn start(&self, shutdown: &CancellationToken) -> SocketAddr {
        crate::started(self.serve(crate::loopback(), shutdown.clone()).await)
    }
}

async fn record(State(rx): State<HttpReceiver>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    let (status, retry_after) = rx.lock().script.pop_front().unwrap_or((200, None));
    let received = Received {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body,
        status,
    };
    rx.lock().received.push(received);
    rx.changed.notify_waiters();
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut resp = (code, if status < 300 { "ok" } else { "scripted failure" }).into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = secs.to_string().parse()
    {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}
