//! The kill switch set through the API: it needs a bearer token when tokens
//! are configured, it stops actions at once, and it survives a restart (the
//! setting is recorded on the actions topic and replayed), until it is
//! released through the API again.

mod support;

use mlwatch_common::auth::Secret;
use mlwatch_proto::v1::{ActionDecision, ActionKind, Severity};
use mlwatch_testkit::sim::ModelSim;
use support::*;

const TOKEN: &str = "ops-team-token";

async fn put_switch(api: &str, token: Option<&str>, engaged: bool) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .put(format!("{api}/v1/kill-switch"))
        .json(&serde_json::json!({ "engaged": engaged }));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.expect("api answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn guards(api: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{api}/v1/guards"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("api answers")
        .json()
        .await
        .expect("json answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_needs_a_token_and_survives_a_restart() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-kill-switch").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 50.0).with_previous_versions(&["v2"]));
    let mut c = Config::for_test(&kafka, &suffix, addr);
    c.auth.bearer_tokens = vec![Secret::new(TOKEN)];

    let rem = Remediator::start(c.clone()).await;
    // No token, a wrong token: refused, and nothing changes.
    let (status, body) = put_switch(&rem.api, None, true).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(put_switch(&rem.api, Some("not-the-token"), true).await.0, 401);
    let anonymous = reqwest::get(format!("{}/v1/actions", rem.api))
        .await
        .expect("api answers");
    assert_eq!(anonymous.status().as_u16(), 401, "reads need the token too");
    let metrics = reqwest::get(format!("{}/metrics", rem.api))
        .await
        .expect("admin answers");
    assert_eq!(metrics.status().as_u16(), 200, "metrics and probes stay open");
    assert_eq!(guards(&rem.api).await["kill_switch"], false);

    let (status, body) = put_switch(&rem.api, Some(TOKEN), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kill_switch"], true);
    rem.stop().await;

    // A new instance replays the actions topic: still engaged, so a
    // latency alert is refused, never carried out.
    // (A fresh consumer group: the switch comes from the actions topic,
    // not from anything the group remembers.)
    c.remediator.group_id.push_str("-second");
    let rem = Remediator::start(c.clone()).await;
    assert_eq!(
        guards(&rem.api).await["kill_switch"],
        true,
        "engaged across the restart"
    );
    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("HighP99Latency", Severity::High, "fraud", t0)).await;
    let refused = records(&kafka, 60, |r| count(r, ActionDecision::Refused) >= 1).await;
    let refusal = refused
        .iter()
        .find(|r| r.decision == ActionDecision::Refused as i32)
        .expect("a refusal recorded");
    assert!(refusal.reason.contains("kill switch"), "{}", refusal.reason);
    assert!(
        sim.calls().is_empty(),
        "nothing reached the platform: {:?}",
        sim.calls()
    );

    // Released through the API: the release is what a restart sees.
    assert_eq!(put_switch(&rem.api, Some(TOKEN), false).await.0, 200);
    rem.stop().await;
    let rem = Remediator::start(c).await;
    assert_eq!(
        guards(&rem.api).await["kill_switch"],
        false,
        "released across the restart"
    );
    let is_switch = |r: &&mlwatch_proto::v1::ActionRecord| r.kind == ActionKind::KillSwitch as i32;
    let trail = records(&kafka, 20, |r| r.iter().filter(is_switch).count() >= 2).await;
    // (Records of several partitions arrive in any order: sort by time.)
    let mut switches: Vec<_> = trail
        .iter()
        .filter(is_switch)
        .map(|r| (r.at_ms, r.params["engaged"].clone()))
        .collect();
    switches.sort();
    let switches: Vec<_> = switches.into_iter().map(|(_, engaged)| engaged).collect();
    assert_eq!(switches, ["true", "false"], "both changes are on the audit trail");
    rem.stop().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engaged_kill_switch_is_recorded_again_before_it_could_age_out() {
    let (kafka, suffix, shutdown, _sim, addr) = fixture("rem-kill-republish").await;
    let mut c = Config::for_test(&kafka, &suffix, addr);
    c.auth.bearer_tokens = vec![Secret::new(TOKEN)];
    c.guards.kill_switch_republish_secs = 2;
    let rem = Remediator::start(c).await;
    assert_eq!(put_switch(&rem.api, Some(TOKEN), true).await.0, 200);
    let is_switch = |r: &&mlwatch_proto::v1::ActionRecord| r.kind == ActionKind::KillSwitch as i32;
    let trail = records(&kafka, 30, |r| r.iter().filter(is_switch).count() >= 3).await;
    let again: Vec<_> = trail
        .iter()
        .filter(is_switch)
        .filter(|r| r.reason.contains("re-published"))
        .collect();
    assert!(again.len() >= 2, "{trail:?}");
    assert!(again.iter().all(|r| r.params["engaged"] == "true"));
    // Released: nothing more is re-published.
    assert_eq!(put_switch(&rem.api, Some(TOKEN), false).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    // Everything on the topic (a condition that never holds reads for 8 s).
    let all = records(&kafka, 8, |_| false).await;
    let released_at = all
        .iter()
        .filter(is_switch)
        .filter(|r| r.params["engaged"] == "false")
        .map(|r| r.at_ms)
        .max()
        .expect("the release is recorded");
    let after: Vec<_> = all.iter().filter(is_switch).filter(|r| r.at_ms > released_at).collect();
    assert!(after.is_empty(), "re-published after the release: {after:?}");
    rem.stop().await;
    shutdown.cancel();
}
