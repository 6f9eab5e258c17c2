//! Client-given names cannot grow `/metrics` without bound: past
//! `[limits] max_metric_series` distinct (model, version) pairs and
//! `max_metric_endpoints` endpoints, new ones share `_overflow` series and
//! are counted; known ones keep their series. `ml_model_info` and
//! `ml_model_staleness_hours` cover every admitted model version.

mod support;

use serde_json::json;
use support::TestCollector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_model_names_past_the_cap_fold_into_overflow_series() {
    let c = TestCollector::start("collector-cardinality", |config| {
        config.limits.max_metric_series = 20;
        config.limits.max_metric_endpoints = 5;
    })
    .await;
    let client = reqwest::Client::new();
    // 2,000 model names in resource samples…
    let samples: Vec<_> = (0..2_000)
        .map(|i| json!({"model": format!("m{i}"), "model_version": "v1", "queue_depth": i}))
        .collect();
    let r = client.post(c.url("/v1/resources")).json(&samples).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // …and 500 inference events over 50 models and 50 endpoints.
    let now = mlwatch_common::now_ms();
    let events: Vec<_> = (0..500)
        .map(|i| {
            json!({"event_id": format!("e{i}"), "model": format!("m{}", i % 50), "model_version": "v1",
                   "endpoint": format!("/predict/{}", i % 50), "timestamp": now, "latency_ms": 10.0,
                   "status": "ok", "prediction": {"score": 0.5}, "features": {"x": 1.0}})
        })
        .collect();
    let r = client.post(c.url("/v1/inferences")).json(&events).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let text = reqwest::get(c.admin("/metrics")).await.unwrap().text().await.unwrap();
    let models = |metric: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.split("model_name=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_string)
            .collect()
    };
    for metric in ["ml_queue_depth{", "ml_inference_requests_total{", "ml_model_info{"] {
        let seen = models(metric);
        assert!(seen.len() <= 21, "{metric}: {} model names: {seen:?}", seen.len());
        assert!(seen.contains("_overflow"), "{metric}: {seen:?}");
    }
    // The first 20 samples were admitted and keep their own series.
    assert!(
        text.contains("ml_queue_depth{model_name=\"m19\",model_version=\"v1\"} 19"),
        "{text}"
    );
    assert!(text.contains("ml_model_staleness_hours{model_name=\"m0\",model_version=\"v1\"}"));
    let endpoints: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("ml_inference_latency_seconds_count{"))
        .filter_map(|l| l.split("endpoint=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(endpoints.len() <= 6, "{endpoints:?}");
    // Folded: 1,980 samples, the events of 30 of the 50 models (m0..m19
    // were admitted by the samples), and of 45 of the 50 endpoints.
    assert_eq!(
        c.metric("mlwatch_metric_series_folded_total{label=\"model_version\"}")
            .await,
        1_980.0 + 300.0
    );
    assert_eq!(
        c.metric("mlwatch_metric_series_folded_total{label=\"endpoint\"}").await,
        450.0
    );
    c.assert_healthy().await;
    c.stop().await;
}
