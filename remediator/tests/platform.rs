//! The remediator against a platform that is briefly or long away, the
//! retraining webhook (a real HTTP server), dry-run with execution by hand,
//! and the plan preview.

mod support;

use mlwatch_proto::v1::Severity;
use mlwatch_remediator::policy::{ActionSpec, MinSeverity, Rule};
use mlwatch_testkit::receiver::HttpReceiver;
use mlwatch_testkit::sim::ModelSim;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_platform_is_retried_with_the_same_request_id() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-unavailable").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));
    sim.add_model(ModelSim::new("recsys", "v1", 2, 114.0));
    let mut cfg = Config::for_test(&kafka, &suffix, addr);
    cfg.serving.timeout_ms = 2_000;
    cfg.remediator.max_attempts = 2;
    let rem = Remediator::start(cfg).await;

    // Briefly away: the client retries UNAVAILABLE within its deadline.
    sim.fail_next(2);
    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("HighP99Latency", Severity::High, "fraud", t0)).await;
    api_until(&rem.api, 40, "EXECUTED", |a| with_decision(a, "executed").len() == 1).await;
    assert_eq!(sim.unavailable_answers(), 2);
    assert_eq!(sim.applied_calls().len(), 1);

    // Away for good: retried on later ticks, then recorded as FAILED.
    sim.fail_next(1_000);
    publish(&kafka, &firing("HighP99Latency", Severity::High, "recsys", t0)).await;
    let actions = api_until(&rem.api, 60, "FAILED", |a| with_decision(a, "failed").len() == 1).await;
    let failed = with_decision(&actions, "failed")[0];
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("gave up after 2 attempts"),
        "{failed}"
    );
    assert!(failed["error"].as_str().unwrap().contains("unavailable"), "{failed}");
    assert_eq!(sim.applied_calls().len(), 1);
    assert_eq!(sim.model("recsys").unwrap().deployment.replicas, 2);
    rem.stop().await;
    shutdown.cancel();
}

/// A platform that applies a call but answers after the client's deadline:
/// the deadline is a transient failure, the call is tried again on a later
/// tick with the same request id, the platform answers it as a duplicate,
/// and the action ends EXECUTED, applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_deadline_is_retried_and_acts_once() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-deadline").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));
    let mut cfg = Config::for_test(&kafka, &suffix, addr);
    cfg.serving.timeout_ms = 500;
    cfg.remediator.max_attempts = 4;
    let rem = Remediator::start(cfg).await;

    sim.answer_late(1, std::time::Duration::from_millis(1_500));
    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("HighP99Latency", Severity::High, "fraud", t0)).await;
    let actions = api_until(&rem.api, 60, "EXECUTED", |a| with_decision(a, "executed").len() == 1).await;
    assert!(with_decision(&actions, "failed").is_empty(), "{actions:?}");
    let calls = sim.calls();
    assert!(calls.len() >= 2, "the late call was not tried again: {calls:?}");
    assert!(calls.iter().all(|c| c.request_id == calls[0].request_id), "{calls:?}");
    assert_eq!(sim.applied_calls().len(), 1, "applied more than once: {calls:?}");
    assert!(calls[1..].iter().all(|c| c.duplicate), "{calls:?}");
    assert_eq!(sim.model("fraud").unwrap().deployment.replicas, 3);
    rem.stop().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_calls_the_retraining_webhook_once() {
    let (kafka, suffix, shutdown, _sim, addr) = fixture("rem-retrain").await;
    let hook = HttpReceiver::default();
    let hook_addr = hook.start(&shutdown).await;
    let secret_path = "/hooks/retrain/s3cr3t-token";
    let mut cfg = Config::for_test(&kafka, &suffix, addr);
    cfg.retrain.webhook_url = Some(format!("http://{hook_addr}{secret_path}"));
    cfg.policy.rules.insert(
        0,
        Rule {
            name: "retrain-on-drift".into(),
            alert_types: vec!["FeatureDrift".into()],
            min_severity: MinSeverity::Medium,
            labels: Default::default(),
            action: ActionSpec::Retrain,
        },
    );
    let rem = Remediator::start(cfg).await;

    let fired = firing("FeatureDrift", Severity::Medium, "fraud", mlwatch_common::now_ms());
    publish(&kafka, &fired).await;
    publish(&kafka, &fired).await;
    let got = within(40, "the webhook call", hook.wait_accepted(0)).await;
    assert_eq!(got.path, secret_path);
    assert_eq!(got.body["model"], "fraud");
    assert_eq!(got.body["alert_type"], "FeatureDrift");
    let key = got
        .headers
        .iter()
        .find(|(k, _)| k == "idempotency-key")
        .map(|(_, v)| v.clone())
        .expect("idempotency key");
    let actions = api_until(&rem.api, 30, "EXECUTED", |a| with_decision(a, "executed").len() == 1).await;
    let done = with_decision(&actions, "executed")[0];
    assert_eq!(done["kind"], "retrain");
    assert_eq!(done["request_id"], key.as_str());
    assert_eq!(done["params"]["webhook_status"], "200");
    // The webhook URL is a secret: it never shows in the API.
    let all = get_text(&format!("{}/v1/actions", rem.api)).await;
    assert!(!all.contains("s3cr3t"), "{all}");
    // The duplicate did not call again: a marker published after it on the
    // same partition is handled, and only it adds a call.
    let marker = firing("FeatureDrift", Severity::Medium, "recsys", fired.starts_at_ms);
    publish_keyed(&kafka, &fired.fingerprint, &marker).await;
    let second = within(40, "the marker's webhook call", hook.wait_accepted(1)).await;
    assert_eq!(second.body["model"], "recsys");
    let models: Vec<String> = hook.accepted().iter().map(|r| r.body["model"].to_string()).collect();
    assert_eq!(models, ["\"fraud\"", "\"recsys\""]);
    rem.stop().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_only_until_a_person_executes() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-dry-run").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));
    let mut cfg = Config::for_test(&kafka, &suffix, addr);
    cfg.remediator.dry_run = true;
    let rem = Remediator::start(cfg).await;

    // The preview records nothing and calls nothing.
    let (status, preview) = rem
        .post(
            "/v1/plan",
            json!({"type": "HighP99Latency", "severity": "high", "labels": {"model": "fraud"}}),
        )
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["outcome"], "dry_run", "{preview}");
    assert_eq!(preview["target"], "scale from 2 to 3 replicas");
    let (status, bad) = rem
        .post("/v1/plan", json!({"type": "HighP99Latency", "severity": "urgent"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(bad["status"], 400, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("urgent"), "{bad}");

    publish(
        &kafka,
        &firing("HighP99Latency", Severity::High, "fraud", mlwatch_common::now_ms()),
    )
    .await;
    let actions = api_until(&rem.api, 40, "PLANNED", |a| with_decision(a, "planned").len() == 1).await;
    let planned = with_decision(&actions, "planned")[0];
    assert_eq!(planned["dry_run"], true);
    assert!(sim.calls().is_empty());
    let id = planned["action_id"].as_str().unwrap();
    let (status, body) = rem
        .post(&format!("/v1/actions/{id}/execute"), json!({"by": "carol"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "executed");
    assert_eq!(sim.applied_calls().len(), 1);
    let (status, _) = rem.post(&format!("/v1/actions/{id}/execute"), json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(sim.calls().len(), 1);
    rem.stop().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traffic_shift_waits_for_approval_then_sets_the_split_once() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-shift").await;
    sim.add_model(ModelSim::new("ranker", "r9", 2, 50.0).with_previous_versions(&["r7", "r8"]));
    let mut cfg = Config::for_test(&kafka, &suffix, addr);
    cfg.policy.rules.insert(
        0,
        Rule {
            name: "canary-back-to-r7".into(),
            alert_types: vec!["AccuracyDecay".into()],
            min_severity: MinSeverity::High,
            labels: [("model".to_string(), "ranker".to_string())].into(),
            action: ActionSpec::ShiftTraffic {
                to_version: Some("r7".into()),
                percent: 90.0,
            },
        },
    );
    let rem = Remediator::start(cfg).await;
    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("AccuracyDecay", Severity::Critical, "ranker", t0)).await;
    let actions = api_until(&rem.api, 40, "AWAITING_APPROVAL", |a| {
        with_decision(a, "awaiting_approval").len() == 1
    })
    .await;
    assert!(sim.calls().is_empty());
    let waiting = with_decision(&actions, "awaiting_approval")[0];
    assert_eq!(waiting["kind"], "shift_traffic");
    assert_eq!(waiting["params"]["traffic.r7"], "90");
    assert_eq!(waiting["params"]["traffic.r9"], "10");
    let id = waiting["action_id"].as_str().unwrap();
    let (status, body) = rem.post(&format!("/v1/actions/{id}/approve"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let calls = sim.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "SetTraffic");
    let split = sim.model("ranker").unwrap().deployment.traffic_percent;
    assert_eq!((split["r7"], split["r9"]), (90.0, 10.0));
    rem.stop().await;
    shutdown.cancel();
}
