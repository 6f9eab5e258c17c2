//! The web UI as a browser and an operator meet it, on a real analyzer
//! against the real broker: the pages load without a token, the JSON API
//! and the forwarded peer APIs need the bearer token, only the read-only
//! peer paths are forwarded, with the analyzer's own token to the peer,
//! and the history API answers (docs/ui.md).

use mlwatch_common::auth::Secret;
use mlwatch_testkit::receiver::HttpReceiver;
use mlwatch_testkit::{setup, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_open_data_needs_the_token_and_peers_get_only_reads() {
    let (kafka, suffix, shutdown) = setup("web-ui");
    let dir = temp_dir("web-ui");
    let alerter = HttpReceiver::default();
    let alerter_addr = alerter.start(&shutdown).await;
    let mut config = mlwatch_analyzer::Config::for_test(&kafka, &format!("web-ui-{suffix}"), dir.path());
    config.auth.bearer_tokens = vec![Secret::new("ui-test-token")];
    config.ui.alerter_url = Some(format!("http://{alerter_addr}"));
    config.ui.alerter_token = Some(Secret::new("analyzer-to-alerter"));
    let running = mlwatch_analyzer::start(config, shutdown.clone())
        .await
        .expect("analyzer");
    let base = format!("http://{}", running.admin_addr);
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = client.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.expect("answer") }
    };

    // The pages: open, embedded, the script a module.
    let index = get("/ui/", None).await;
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        index
            .text()
            .await
            .unwrap()
            .contains(r#"<script type="module" src="app.js">"#)
    );
    let js = get("/ui/app.js", None).await;
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(get("/ui/nothing.js", None).await.status(), 404);
    assert_eq!(get("/healthz", None).await.status(), 200);

    // The data: 401 without the token or with a wrong one, 200 with it.
    assert_eq!(get("/v1/models", None).await.status(), 401);
    assert_eq!(get("/v1/models", Some("wrong")).await.status(), 401);
    assert_eq!(get("/v1/models", Some("ui-test-token")).await.status(), 200);
    assert_eq!(get("/ui/api/peers", None).await.status(), 401);
    let peers: serde_json::Value = get("/ui/api/peers", Some("ui-test-token")).await.json().await.unwrap();
    assert_eq!(peers, serde_json::json!({"alerter": true, "remediator": false}));
    let history = get("/v1/models/nobody/history?range=1d", Some("ui-test-token")).await;
    assert_eq!(history.status(), 404);
    let bad = get("/v1/models/nobody/history?range=1y", Some("ui-test-token")).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("range"));

    // Forwarding: a read goes to the alerter with the analyzer's token and
    // the query; the browser's token stays at the analyzer.
    assert_eq!(
        get("/ui/peer/alerter/api/v1/notifications?limit=5", None)
            .await
            .status(),
        401
    );
    let forwarded = get("/ui/peer/alerter/api/v1/notifications?limit=5", Some("ui-test-token")).await;
    assert_eq!(forwarded.status(), 200);
    let seen = alerter.all();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].path.starts_with("/api/v1/notifications"), "{}", seen[0].path);
    assert_eq!(
        seen[0].header("authorization").as_deref(),
        Some("Bearer analyzer-to-alerter")
    );
    // Anything else is refused before it reaches a peer.
    for path in [
        "/ui/peer/alerter/api/v1/silences/x/../../x",
        "/ui/peer/remediator/v1/kill-switch",
        "/ui/peer/alerter/metrics",
    ] {
        assert_eq!(get(path, Some("ui-test-token")).await.status(), 403, "{path}");
    }
    assert_eq!(
        get("/ui/peer/remediator/v1/actions", Some("ui-test-token"))
            .await
            .status(),
        404,
        "no remediator_url"
    );
    assert_eq!(alerter.all().len(), 1);
    shutdown.cancel();
    let _ = running.task.await;
}
