//! A latency incident against a real tonic `ServingControl` server and a
//! real broker: exactly one Scale call, verified when the alert resolves;
//! and an action that does not help: VERIFICATION_FAILED, a
//! `RemediationFailed` alert, and no blind repeat.

mod support;

use mlwatch_proto::v1::{ActionDecision, Alert, AlertStatus, Severity};
use mlwatch_testkit::sim::ModelSim;
use prost::Message as _;
use rdkafka::Message;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_incident_scales_once_and_is_verified() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-latency").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));
    let rem = Remediator::start(Config::for_test(&kafka, &suffix, addr)).await;

    let t0 = mlwatch_common::now_ms();
    let fired = firing("HighP99Latency", Severity::High, "fraud", t0);
    publish(&kafka, &fired).await;
    within(30, "the Scale call", sim.wait_for_calls(0)).await;
    api_until(&rem.api, 30, "EXECUTED", |a| with_decision(a, "executed").len() == 1).await;
    assert_eq!(sim.model("fraud").unwrap().deployment.replicas, 3);

    publish(&kafka, &resolved("HighP99Latency", Severity::High, "fraud", t0)).await;
    let actions = api_until(&rem.api, 30, "VERIFIED", |a| with_decision(a, "verified").len() == 1).await;
    assert!(
        reason(&actions, "verified").contains("HighP99Latency resolved"),
        "{actions:?}"
    );

    let calls = sim.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!((calls[0].method, calls[0].detail.as_str()), ("Scale", "replicas=3"));
    let records = records(&kafka, 30, |rs| count(rs, ActionDecision::Verified) == 1).await;
    assert_eq!(decisions(&records), PLANNED_EXECUTED_VERIFIED);
    assert!(records.iter().all(|r| r.request_id == calls[0].request_id));
    assert_eq!(records[0].params["to_replicas"], "3");
    assert_eq!(records[1].params["duplicate"], "false");
    rem.stop().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_that_does_not_help_raises_remediation_failed_and_is_not_repeated() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-verify-fail").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));
    let mut cfg = Config::for_test(&kafka, &suffix, addr);
    cfg.remediator.verify_window_secs = 2;
    cfg.guards.cooldown_secs = 0;
    let rem = Remediator::start(cfg).await;

    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("HighP99Latency", Severity::High, "fraud", t0)).await;
    let actions = api_until(&rem.api, 40, "VERIFICATION_FAILED", |a| {
        with_decision(a, "verification_failed").len() == 1
    })
    .await;
    assert!(
        reason(&actions, "verification_failed").contains("still firing"),
        "{actions:?}"
    );

    // The remediator raised RemediationFailed on the alerts topic, with
    // the analyzer's fingerprint and id conventions.
    let alerts = read_topic(&kafka, &kafka.topics.alerts, 30, |ms| {
        ms.iter()
            .any(|m| Alert::decode(m.payload().unwrap_or_default()).is_ok_and(|a| a.r#type == "RemediationFailed"))
    })
    .await;
    let failed = alerts
        .iter()
        .filter_map(|m| Alert::decode(m.payload().unwrap_or_default()).ok())
        .find(|a| a.r#type == "RemediationFailed")
        .expect("RemediationFailed raised");
    assert_eq!(failed.source, "remediator");
    assert_eq!(failed.severity, Severity::High as i32);
    assert_eq!(failed.labels["model"], "fraud");
    assert_eq!(failed.labels["action"], "scale");
    let labels: std::collections::BTreeMap<String, String> =
        failed.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let fp = mlwatch_proto::identity::fingerprint("RemediationFailed", &labels);
    assert_eq!(failed.fingerprint, fp);
    assert_eq!(
        failed.id,
        mlwatch_proto::identity::alert_id(&fp, AlertStatus::Firing, failed.starts_at_ms)
    );
    // It does not act on its own alert (the alert was consumed: a record
    // would exist by the time the next one is handled).

    // The same alert fires again: the same remedy is not repeated blindly.
    let t1 = t0 + 60_000;
    publish(&kafka, &firing("HighP99Latency", Severity::High, "fraud", t1)).await;
    let actions = api_until(&rem.api, 30, "the refusal", |a| with_decision(a, "refused").len() == 1).await;
    let refused = reason(&actions, "refused").to_string();
    assert!(refused.contains("not repeating a scale"), "{refused}");
    assert_eq!(sim.calls().len(), 1, "{:?}", sim.calls());
    assert_eq!(
        actions.len(),
        4,
        "planned, executed, verification_failed, refused: {actions:?}"
    );

    // When the first firing finally resolves, RemediationFailed resolves too.
    publish(&kafka, &resolved("HighP99Latency", Severity::High, "fraud", t0)).await;
    let alerts = read_topic(&kafka, &kafka.topics.alerts, 30, |ms| {
        ms.iter().any(|m| {
            Alert::decode(m.payload().unwrap_or_default())
                .is_ok_and(|a| a.r#type == "RemediationFailed" && a.status == AlertStatus::Resolved as i32)
        })
    })
    .await;
    let resolved = alerts
        .iter()
        .filter_map(|m| Alert::decode(m.payload().unwrap_or_default()).ok())
        .find(|a| a.r#type == "RemediationFailed" && a.status == AlertStatus::Resolved as i32)
        .expect("RemediationFailed resolved");
    assert_eq!(resolved.fingerprint, failed.fingerprint);
    assert_eq!(resolved.starts_at_ms, failed.starts_at_ms);
    rem.stop().await;
    shutdown.cancel();
}
