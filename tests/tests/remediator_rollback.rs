//! A bad release fixed by an approved rollback, seen in the data: the
//! simulated platform serves fraud v3 (60 % right) after v2 (95 % right);
//! the traffic generator posts inferences and their ground-truth labels to
//! the collector; an `AccuracyDecay` alert (published here as the analyzer's
//! accuracy rule publishes it) makes the remediator ask for approval; once
//! approved, exactly one Rollback, and the labels joined to the predictions
//! on the real topics show accuracy back up under v2.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mlwatch_demo::stack::{Stack, StackOptions};
use mlwatch_proto::v1::{AlertStatus, InferenceEvent, LabelEvent, Severity};
use mlwatch_testkit::http::poll_json;
use mlwatch_testkit::kafka::analyzer_alert;
use mlwatch_testkit::sim::{ModelSim, SimPlatform};
use mlwatch_testkit::{Publisher, read_topic, setup, within};
use prost::Message as _;
use rdkafka::Message;

async fn wait_labels(sent: &mlwatch_demo::traffic::Sent, at_least: u64) {
    within(90, "labels from the traffic generator", async {
        while sent.labels.load(Ordering::Relaxed) < at_least {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_rollback_restores_accuracy() {
    let (kafka, suffix, _) = setup("rem-rollback-accuracy");
    let sim = SimPlatform::default();
    sim.add_model(
        ModelSim::new("fraud", "v3", 2, 50.0)
            .with_previous_versions(&["v2"])
            .with_accuracy("v2", 0.95)
            .with_accuracy("v3", 0.60),
    );
    let stack = Stack::start(StackOptions::new(kafka.clone(), &suffix), sim.clone())
        .await
        .expect("stack starts");
    let (sent, _traffic) = stack.start_traffic(vec!["fraud".into()]);
    wait_labels(&sent, 300).await;

    // The accuracy incident, as the analyzer raises it.
    let alert = analyzer_alert(
        "AccuracyDecay",
        Severity::High,
        &[("model", "fraud"), ("model_version", "v3")],
        AlertStatus::Firing,
        mlwatch_common::now_ms(),
    );
    Publisher::new(&kafka).await.send(&alert).await;

    let api = format!("http://{}", stack.remediator_admin);
    let client = reqwest::Client::new();
    let waiting = poll_json(
        &format!("{api}/v1/actions?decision=awaiting_approval"),
        60,
        "the approval request",
        |v| v["actions"][0]["action_id"].is_string(),
    )
    .await;
    let id = waiting["actions"][0]["action_id"].as_str().unwrap_or_default();
    assert!(sim.calls().is_empty(), "nothing before approval: {:?}", sim.calls());
    let r = client
        .post(format!("{api}/v1/actions/{id}/approve"))
        .json(&serde_json::json!({"by": "on-call"}))
        .send()
        .await
        .expect("approve");
    assert_eq!(r.status(), 200);
    let calls = sim.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!((calls[0].method, calls[0].detail.as_str()), ("Rollback", "to=\"v2\""));
    assert_eq!(sim.model("fraud").unwrap().deployment.active_version, "v2");

    let after = sent.labels.load(Ordering::Relaxed);
    wait_labels(&sent, after + 400).await;
    let inferences_sent = sent.accepted.load(Ordering::Relaxed) as usize;
    let labels_sent = sent.labels.load(Ordering::Relaxed) as usize;

    let inferences = read_topic(&kafka, &kafka.topics.inference, 90, |ms| ms.len() >= inferences_sent).await;
    let labels = read_topic(&kafka, &kafka.topics.labels, 90, |ms| ms.len() >= labels_sent).await;
    let predicted: HashMap<String, (String, String)> = inferences
        .iter()
        .filter_map(|m| InferenceEvent::decode(m.payload().unwrap_or_default()).ok())
        .map(|e| {
            let label = e.prediction.and_then(|p| p.label).unwrap_or_default();
            (e.event_id, (e.model_version, label))
        })
        .collect();
    let mut tally: HashMap<String, (u32, u32)> = HashMap::new();
    for l in labels
        .iter()
        .filter_map(|m| LabelEvent::decode(m.payload().unwrap_or_default()).ok())
    {
        let Some((version, label)) = predicted.get(&l.event_id) else {
            continue;
        };
        let t = tally.entry(version.clone()).or_default();
        t.1 += 1;
        if l.label.as_deref() == Some(label.as_str()) {
            t.0 += 1;
        }
    }
    let accuracy = |v: &str| {
        let (right, all) = tally.get(v).copied().unwrap_or_default();
        assert!(all >= 250, "too few labels for {v}: {tally:?}");
        f64::from(right) / f64::from(all)
    };
    // 60 % and 95 % true accuracy; the bounds are > 3 standard deviations
    // away at these sample sizes.
    assert!(accuracy("v3") < 0.72, "{tally:?}");
    assert!(accuracy("v2") > 0.88, "{tally:?}");
    stack.stop().await;
}
