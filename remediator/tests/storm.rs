//! An alert storm: cooldowns and budgets bound what the remediator does,
//! and every refusal is recorded with its reason; the kill switch and
//! wildcard targets refuse too.

mod support;

use mlwatch_proto::v1::Severity;
use mlwatch_testkit::sim::ModelSim;
use support::*;

fn reasons(actions: &[serde_json::Value]) -> Vec<String> {
    with_decision(actions, "refused")
        .iter()
        .map(|a| a["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_on_one_model_scales_once_within_the_cooldown() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-storm-cooldown").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));
    let rem = Remediator::start(Config::for_test(&kafka, &suffix, addr)).await;

    // Five separate firings (flapping), each a distinct alert id.
    let t0 = mlwatch_common::now_ms();
    for i in 0..5 {
        let a = firing("HighP99Latency", Severity::High, "fraud", t0 + i * 1000);
        publish(&kafka, &a).await;
    }
    let actions = api_until(&rem.api, 40, "one execution and four refusals", |a| {
        with_decision(a, "executed").len() == 1 && with_decision(a, "refused").len() == 4
    })
    .await;
    assert_eq!(sim.calls().len(), 1, "{:?}", sim.calls());
    for r in reasons(&actions) {
        assert!(r.contains("refused: cooldown: a scale of fraud was taken"), "{r}");
    }
    rem.stop().await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_over_models_respects_the_budgets_and_the_kill_switch() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-storm-budget").await;
    for m in ["fraud", "recsys", "ranker"] {
        sim.add_model(ModelSim::new(m, "v1", 2, 114.0));
    }
    let mut cfg = Config::for_test(&kafka, &suffix, addr);
    cfg.guards.cooldown_secs = 0;
    cfg.guards.max_actions_per_hour_per_model = 2;
    cfg.guards.max_actions_per_hour = 3;
    let rem = Remediator::start(cfg).await;

    let t0 = mlwatch_common::now_ms();
    for i in 0..4 {
        let a = firing("HighP99Latency", Severity::High, "fraud", t0 + i);
        publish(&kafka, &a).await;
    }
    let actions = api_until(&rem.api, 40, "fraud's budget", |a| a.len() >= 2 * 2 + 2).await;
    assert_eq!(with_decision(&actions, "executed").len(), 2, "{actions:?}");
    for r in reasons(&actions) {
        assert!(r.contains("budget: 2 actions on fraud in the last hour (max 2)"), "{r}");
    }
    for i in 0..2 {
        let a = firing("LowThroughput", Severity::Medium, "recsys", t0 + i);
        publish(&kafka, &a).await;
    }
    let actions = api_until(&rem.api, 30, "the global budget", |a| {
        with_decision(a, "refused").len() == 3
    })
    .await;
    let last = reasons(&actions).pop().unwrap();
    assert!(
        last.contains("budget: 3 actions in the last hour over all models (max 3)"),
        "{last}"
    );
    assert_eq!(sim.applied_calls().len(), 3, "{:?}", sim.calls());
    let guards = get_json(&format!("{}/v1/guards", rem.api)).await;
    assert_eq!(guards["budget"]["used_last_hour"], 3, "{guards}");
    assert_eq!(guards["budget"]["used_last_hour_per_model"]["fraud"], 2, "{guards}");

    // The kill switch refuses everything, wildcards and missing models are
    // refused whatever the budget.
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{}/v1/kill-switch", rem.api))
        .json(&serde_json::json!({"engaged": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    publish(&kafka, &firing("HighP99Latency", Severity::High, "ranker", t0)).await;
    let actions = api_until(&rem.api, 30, "the kill switch refusal", |a| {
        with_decision(a, "refused").len() == 4
    })
    .await;
    assert!(reasons(&actions)[3].contains("kill switch engaged"), "{actions:?}");
    let metrics = get_text(&format!("{}/metrics", rem.api)).await;
    assert!(metrics.contains("mlwatch_remediator_kill_switch 1"), "{metrics}");
    assert!(
        metrics.contains(r#"mlwatch_remediator_decisions_total{decision="refused",kind="scale"} 4"#),
        "{metrics}"
    );
    client
        .put(format!("{}/v1/kill-switch", rem.api))
        .json(&serde_json::json!({"engaged": false}))
        .send()
        .await
        .unwrap();
    publish(&kafka, &firing("HighP99Latency", Severity::High, "*", t0)).await;
    let actions = api_until(&rem.api, 30, "the wildcard refusal", |a| {
        with_decision(a, "refused").len() == 5
    })
    .await;
    assert!(
        reasons(&actions)[4].contains("wildcard target model \"*\""),
        "{actions:?}"
    );
    assert_eq!(sim.applied_calls().len(), 3, "{:?}", sim.calls());
    rem.stop().await;
    shutdown.cancel();
}
