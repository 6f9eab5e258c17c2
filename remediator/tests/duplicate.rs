//! A duplicated alert gives one action: copies of one firing, the same
//! firing after a restart, and even a fresh consumer group that reads every
//! alert again, all end in one Scale call, because the ledger is rebuilt
//! from the actions topic.

mod support;

use mlwatch_proto::v1::{ActionDecision, Severity};
use mlwatch_testkit::sim::ModelSim;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_redelivered_alerts_act_once() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-dup").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));
    let cfg = Config::for_test(&kafka, &suffix, addr);
    let rem = Remediator::start(cfg.clone()).await;

    let t0 = mlwatch_common::now_ms();
    let fired = firing("HighP99Latency", Severity::High, "fraud", t0);
    for _ in 0..3 {
        publish(&kafka, &fired).await;
    }
    // A marker after the copies: once it is handled, so are they.
    let marker = firing("FeatureDrift", Severity::Medium, "fraud", t0);
    publish_keyed(&kafka, &fired.fingerprint, &marker).await;
    api_until(&rem.api, 40, "the marker", |a| a.iter().any(|r| r["kind"] == "notify")).await;
    assert_eq!(sim.calls().len(), 1, "{:?}", sim.calls());
    rem.stop().await;

    // Restart with a new consumer group: every alert is read again.
    let mut again = cfg.clone();
    again.remediator.group_id = format!("{}-fresh", cfg.remediator.group_id);
    let rem = Remediator::start(again).await;
    publish(&kafka, &fired).await;
    let marker = firing("FeatureDrift", Severity::Medium, "recsys", t0);
    publish_keyed(&kafka, &fired.fingerprint, &marker).await;
    let actions = api_until(&rem.api, 60, "the second marker", |a| {
        a.iter().any(|r| r["kind"] == "notify" && r["model"] == "recsys")
    })
    .await;
    assert_eq!(sim.calls().len(), 1, "{:?}", sim.calls());
    // The rebuilt ledger lists what the first instance did.
    assert_eq!(with_decision(&actions, "executed").len(), 3, "{actions:?}");
    let records = records(&kafka, 60, |rs| count(rs, ActionDecision::Executed) == 3).await;
    assert_eq!(count(&records, ActionDecision::Planned), 1, "{records:#?}");
    assert_eq!(records.len(), 4, "planned + executed scale, two notifies");
    rem.stop().await;
    shutdown.cancel();
}
