//! An accuracy incident with approval required: no Rollback until a person
//! approves, then exactly one; a rejected action never runs; a
//! medium-severity decay only notifies.

mod support;

use mlwatch_proto::v1::{ActionDecision, ActionRecord, Severity};
use mlwatch_testkit::sim::ModelSim;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_waits_for_approval_then_happens_once() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-approval").await;
    sim.add_model(
        ModelSim::new("fraud", "v3", 2, 50.0)
            .with_previous_versions(&["v1", "v2"])
            .with_accuracy("v2", 0.93)
            .with_accuracy("v3", 0.71),
    );
    sim.add_model(ModelSim::new("ranker", "r9", 2, 50.0).with_previous_versions(&["r8"]));
    sim.add_model(ModelSim::new("scorer", "s2", 2, 50.0).with_previous_versions(&["s1"]));
    let rem = Remediator::start(Config::for_test(&kafka, &suffix, addr)).await;
    assert_eq!(sim.model("fraud").unwrap().accuracy(), Some(0.71));

    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("AccuracyDecay", Severity::High, "fraud", t0)).await;
    publish(&kafka, &firing("AccuracyDecay", Severity::High, "ranker", t0)).await;
    publish(&kafka, &firing("AccuracyDecay", Severity::Medium, "recsys", t0)).await;
    let actions = api_until(&rem.api, 40, "two actions awaiting approval and one notify", |a| {
        with_decision(a, "awaiting_approval").len() == 2 && with_decision(a, "executed").len() == 1
    })
    .await;
    // Nothing was called: the rollbacks wait, the notify touches nothing.
    assert!(sim.calls().is_empty(), "{:?}", sim.calls());
    let notify = with_decision(&actions, "executed")[0];
    assert_eq!(
        (notify["kind"].as_str(), notify["model"].as_str()),
        (Some("notify"), Some("recsys"))
    );
    let waiting: Vec<_> = with_decision(&actions, "awaiting_approval")
        .into_iter()
        .filter(|a| a["model"] != "scorer")
        .collect();
    let id_of = |model: &str| {
        waiting
            .iter()
            .find(|a| a["model"] == model)
            .map(|a| a["action_id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (fraud, ranker) = (id_of("fraud"), id_of("ranker"));
    let guards = get_json(&format!("{}/v1/guards", rem.api)).await;
    assert_eq!(
        guards["awaiting_approval"].as_array().map(Vec::len),
        Some(2),
        "{guards}"
    );
    // The redelivered alert does not create a second request.
    publish(&kafka, &firing("AccuracyDecay", Severity::High, "fraud", t0)).await;

    let (status, body) = rem
        .post(
            &format!("/v1/actions/{fraud}/approve"),
            json!({"by": "alice", "comment": "v3 is bad"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "executed", "{body}");
    let calls = sim.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!((calls[0].method, calls[0].detail.as_str()), ("Rollback", "to=\"v2\""));
    let fraud_now = sim.model("fraud").unwrap();
    assert_eq!(fraud_now.deployment.active_version, "v2");
    assert_eq!(fraud_now.accuracy(), Some(0.93));

    // Approving twice is refused and calls nothing.
    let (status, body) = rem.post(&format!("/v1/actions/{fraud}/approve"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = rem.post("/v1/actions/nope/approve", json!({})).await;
    assert_eq!(status, 404);

    // A rejected rollback never runs.
    let (status, body) = rem
        .post(&format!("/v1/actions/{ranker}/reject"), json!({"by": "bob"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected");
    let (status, _) = rem.post(&format!("/v1/actions/{ranker}/approve"), json!({})).await;
    assert_eq!(status, 409);

    publish(&kafka, &resolved("AccuracyDecay", Severity::High, "fraud", t0)).await;
    api_until(&rem.api, 30, "VERIFIED", |a| with_decision(a, "verified").len() == 1).await;
    assert_eq!(sim.calls().len(), 1, "{:?}", sim.calls());
    assert_eq!(sim.model("ranker").unwrap().deployment.active_version, "r9");

    let records = records(&kafka, 30, |rs| count(rs, ActionDecision::Verified) == 1).await;
    assert_eq!(
        trail(&records, &fraud),
        [
            ActionDecision::Planned,
            ActionDecision::AwaitingApproval,
            ActionDecision::Approved,
            ActionDecision::Executed,
            ActionDecision::Verified
        ]
    );
    let approved = records
        .iter()
        .find(|r| r.action_id == fraud && r.decision == ActionDecision::Approved as i32)
        .unwrap();
    assert_eq!(approved.reason, "approved by alice: v3 is bad");
    assert_eq!(
        trail(&records, &ranker),
        [
            ActionDecision::Planned,
            ActionDecision::AwaitingApproval,
            ActionDecision::Rejected
        ]
    );
    rem.stop().await;
    shutdown.cancel();
}

/// The decisions recorded for one action, in order.
fn trail(records: &[ActionRecord], action_id: &str) -> Vec<ActionDecision> {
    let mine: Vec<ActionRecord> = records.iter().filter(|r| r.action_id == action_id).cloned().collect();
    decisions(&mine)
}
