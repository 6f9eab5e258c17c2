//! KServe's inference logger pointed at a real collector: the request and
//! response CloudEvents (binary mode) of each prediction are joined by
//! `ce-id` into inference events on the broker. Also the resource-sample
//! endpoint feeding `ml_queue_depth`, `ml_memory_usage_bytes` and
//! `ml_gpu_utilization_percent`.

mod support;

use mlwatch_collector::validate::format_rfc3339_ms;
use mlwatch_proto::v1::feature_value::Kind;
use mlwatch_testkit::read_inferences;
use serde_json::{Value, json};
use support::TestCollector;

async fn post_ce(http: &reqwest::Client, url: &str, id: &str, kind: &str, time: &str, body: Value) -> (u16, Value) {
    let r = http
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", format!("org.kubeflow.serving.inference.{kind}"))
        .header("ce-source", "http://localhost:9081/")
        .header("ce-inferenceservicename", "sklearn-iris")
        .header("ce-namespace", "default")
        .header("ce-component", "predictor")
        .header("ce-endpoint", "default")
        .header("ce-time", time)
        .header("content-type", "application/json")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_logger_pairs_become_inference_events() {
    let collector = TestCollector::start("kserve", |_| {}).await;
    let http = reqwest::Client::new();
    let url = collector.url("/v1/cloudevents");
    let now = mlwatch_common::now_ms();
    let t0 = format_rfc3339_ms(now);
    let t1 = format_rfc3339_ms(now + 23);

    // V1 protocol, request first: 202 while waiting, then 200 with two events.
    let (status, answer) = post_ce(
        &http,
        &url,
        "ce-1",
        "request",
        &t0,
        json!({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}),
    )
    .await;
    assert_eq!((status, answer["pending"].as_u64()), (202, Some(1)));
    let (status, answer) = post_ce(&http, &url, "ce-1", "response", &t1, json!({"predictions": [1, 2]})).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(2)), "{answer}");

    // V2 protocol, response first, probabilities out.
    let v2_req = json!({"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP32", "data": [[0.5, 1.5]]}]});
    let v2_resp = json!({"outputs": [{"name": "output-0", "shape": [1, 2], "datatype": "FP32", "data": [0.2, 0.8]}]});
    let (status, _) = post_ce(&http, &url, "ce-2", "response", &t1, v2_resp).await;
    assert_eq!(status, 202);
    let (status, answer) = post_ce(&http, &url, "ce-2", "request", &t0, v2_req).await;
    assert_eq!((status, answer["accepted"].as_u64()), (200, Some(1)), "{answer}");

    // Bad CloudEvents get a precise answer naming the header or the body.
    let r = http
        .post(&url)
        .header("ce-specversion", "1.0")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["rejected"][0]["field"], "ce-id");
    assert_eq!(answer["rejected"][0]["reason"], "missing required header");
    let (status, _) = post_ce(&http, &url, "ce-3", "request", &t0, json!({"instances": [[1], [2]]})).await;
    assert_eq!(status, 202);
    let (status, answer) = post_ce(&http, &url, "ce-3", "response", &t1, json!({"predictions": [1]})).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["rejected"][0]["reason"],
        "2 instances in the request but 1 predictions in the response"
    );

    // On the broker: the mapping documented in docs/collector.md.
    let events = read_inferences(&collector.kafka, 3, 30).await;
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["ce-1-0", "ce-1-1", "ce-2"]);
    let e = &events[1];
    assert_eq!(
        (e.model.as_str(), e.model_version.as_str(), e.endpoint.as_str()),
        ("sklearn-iris", "default", "predictor")
    );
    assert_eq!(e.latency_ms, 23.0);
    assert_eq!(e.batch_size, 2);
    assert_eq!(e.prediction.as_ref().unwrap().label.as_deref(), Some("2"));
    assert_eq!(e.features["0"].kind, Some(Kind::Number(6.0)));
    let p = events[2].prediction.as_ref().unwrap();
    assert_eq!(p.score, Some(0.8));
    assert_eq!(events[2].features["input-0.1"].kind, Some(Kind::Number(1.5)));

    // Resource samples feed the resource gauges.
    let samples = json!([
        {"model": "fraud", "model_version": "v3", "queue_depth": 12, "memory_usage_bytes": 2.5e9, "gpu_utilization_percent": 71.5},
        {"model": "fraud", "gpu_utilization_percent": 140},
    ]);
    let r = http
        .post(collector.url("/v1/resources"))
        .json(&samples)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["rejected"][0]["field"], "gpu_utilization_percent");
    assert_eq!(
        answer["rejected"][0]["reason"],
        "expected a value in [0, 100], found 140"
    );
    let labels = "{model_name=\"fraud\",model_version=\"v3\"}";
    assert_eq!(collector.metric(&format!("ml_queue_depth{labels}")).await, 12.0);
    assert_eq!(collector.metric(&format!("ml_memory_usage_bytes{labels}")).await, 2.5e9);
    assert_eq!(
        collector.metric(&format!("ml_gpu_utilization_percent{labels}")).await,
        71.5
    );
    collector.assert_healthy().await;
    collector.stop().await;
}

/// KServe halves live only in memory: the ones still waiting for their
/// other half when the collector stops are dropped, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_waiting_at_shutdown_are_counted() {
    let collector = TestCollector::start("kserve-shutdown", |_| {}).await;
    let http = reqwest::Client::new();
    let url = collector.url("/v1/cloudevents");
    let t0 = format_rfc3339_ms(mlwatch_common::now_ms());
    for id in ["lonely-1", "lonely-2"] {
        let (status, _) = post_ce(&http, &url, id, "request", &t0, json!({"instances": [[1.0]]})).await;
        assert_eq!(status, 202);
    }
    assert_eq!(collector.metric("mlwatch_collector_cloudevents_pending").await, 2.0);
    let TestCollector { running, shutdown, .. } = collector;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
    let dropped = running
        .registry
        .gather()
        .iter()
        .filter(|family| family.name() == "mlwatch_collector_events_total")
        .flat_map(|family| family.get_metric())
        .find(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "reason" && l.value() == "cloudevent_shutdown")
        })
        .map(|m| m.get_counter().get_value());
    assert_eq!(dropped, Some(2.0));
}
