//! One incident travelling end to end through the four services over a
//! real broker: a latency regression posted over HTTP to the collector is
//! detected by the analyzer, paged to a real HTTP receiver in Slack's
//! format by the alerter, and remediated by the remediator through a real
//! tonic `ServingControl` server; after recovery the resolve follows.

use std::time::Duration;

use mlwatch_demo::stack::{Stack, StackOptions};
use mlwatch_proto::v1::{ActionDecision, ActionRecord};
use mlwatch_testkit::sim::{ModelSim, SimPlatform};
use mlwatch_testkit::{read_decoded, setup, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latency_regression_is_paged_remediated_and_resolved() {
    let (kafka, suffix, _) = setup("e2e");
    let sim = SimPlatform::default();
    sim.add_model(ModelSim::new("fraud", "v3", 2, 50.0));
    let mut opts = StackOptions::new(kafka.clone(), &suffix);
    opts.p99_window_secs = 10;
    opts.resolve_for_secs = 3;
    let stack = Stack::start(opts, sim.clone()).await.expect("stack starts");
    let (sent, _traffic) = stack.start_traffic(vec!["fraud".into()]);

    // Healthy traffic first: nobody is paged.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        stack.slack.accepted().is_empty(),
        "paged while healthy: {:?}",
        stack.slack.accepted()
    );
    assert!(sim.calls().is_empty());

    // The regression: load beyond what two replicas serve.
    sim.set_load("fraud", 114.0);
    let page = within(60, "the firing page", stack.slack.wait_accepted(0)).await;
    let text = page.body["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("[FIRING] HighP99Latency (high) fraud v3"), "{text}");
    assert_eq!(page.path, "/services/T000/B000/XXXX");
    let attachment = &page.body["attachments"][0];
    assert_eq!(attachment["color"], "#FF6600");
    let blocks = attachment["blocks"].to_string();
    assert!(blocks.contains("threshold 200.00"), "{blocks}");
    assert!(blocks.contains("scale up"), "{blocks}");

    within(30, "the Scale call", sim.wait_for_calls(0)).await;
    let calls = sim.calls();
    assert_eq!(calls[0].method, "Scale");
    assert_eq!(calls[0].model, "fraud");
    assert_eq!(calls[0].detail, "replicas=3");
    assert!(!calls[0].request_id.is_empty());
    assert_eq!(sim.model("fraud").unwrap().deployment.replicas, 3);

    // Three replicas serve the load: the alert resolves and says so.
    let resolve = within(90, "the resolve page", stack.slack.wait_accepted(1)).await;
    let text = resolve.body["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("[RESOLVED] HighP99Latency"), "{text}");
    assert_eq!(resolve.body["attachments"][0]["color"], "#00CC00");

    // Exactly one action for the one firing, and the audit trail shows it
    // executed and verified.
    let records = read_decoded(&kafka, &kafka.topics.actions, 30, |rs: &[ActionRecord]| {
        rs.iter().any(|r| r.decision == ActionDecision::Verified as i32)
    })
    .await;
    let decisions: Vec<i32> = records.iter().map(|r| r.decision).collect();
    assert_eq!(
        decisions,
        vec![
            ActionDecision::Planned as i32,
            ActionDecision::Executed as i32,
            ActionDecision::Verified as i32
        ]
    );
    assert_eq!(sim.calls().len(), 1, "one firing, one action: {:?}", sim.calls());
    assert_eq!(stack.slack.accepted().len(), 2);
    assert_eq!(sent.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    stack.stop().await;
}
