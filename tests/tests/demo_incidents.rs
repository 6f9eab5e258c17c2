//! The run command's three incidents, end to end over a real broker with
//! the four services, the simulated serving platform (a real tonic
//! `ServingControl` server), real HTTP receivers for Slack and PagerDuty
//! and a real SMTP catcher — the same scenario code the `mlwatch-demo`
//! binary runs. Each incident must be detected, paged, remediated and
//! resolved; the assertions read what a user would see: the pages and mails
//! received, the platform calls, the actions recorded.

use std::time::Duration;

use mlwatch_demo::scenario::{self, ScenarioOptions};
use mlwatch_demo::stack::{QualityWindows, Stack, StackOptions};
use mlwatch_proto::v1::{ActionDecision, ActionKind, ActionRecord};
use mlwatch_testkit::{read_decoded, setup};
use tokio_util::sync::CancellationToken;

fn slack_texts(stack: &Stack) -> Vec<String> {
    stack
        .slack
        .accepted()
        .iter()
        .map(|r| r.body["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_incidents_are_detected_paged_remediated_and_resolved() {
    let (kafka, suffix, _) = setup("demo-incidents");
    let sim = scenario::platform();
    let mut opts = StackOptions::new(kafka.clone(), &suffix);
    opts.quality = Some(QualityWindows::default());
    let stack = Stack::start(opts.clone(), sim.clone()).await.expect("stack starts");
    let (sent, traffic) = scenario::start_traffic(&stack);
    let scenario_opts = ScenarioOptions {
        p99_window_secs: opts.p99_window_secs,
        ..ScenarioOptions::default()
    };
    let mut tell = |line: &str| eprintln!("{line}");
    let outcomes = scenario::run(
        &stack,
        &kafka,
        &format!("observer-{suffix}"),
        &scenario_opts,
        CancellationToken::new(),
        &mut tell,
    )
    .await
    .expect("scenario runs");
    eprintln!("{}", scenario::summary_table(&outcomes));

    // Every incident completed, in order, and the table says so.
    let names: Vec<&str> = outcomes.iter().map(|o| o.alert_type.as_str()).collect();
    assert_eq!(names, ["HighP99Latency", "AccuracyDecay", "FeatureDrift"]);
    for o in &outcomes {
        assert!(o.complete(), "incomplete: {o:?}");
        assert!(o.detected <= o.paged, "paged before detection: {o:?}");
        assert!(o.detected < o.resolved, "{o:?}");
    }
    let [latency, accuracy, drift] = &outcomes[..] else {
        panic!("three outcomes")
    };
    // Late labels: the decay cannot be seen before labels of the worse
    // predictions arrive (20 s at the earliest).
    assert!(accuracy.detected.unwrap() >= Duration::from_secs(20), "{accuracy:?}");

    // The platform: one scale-up of fraud, one rollback of fraud to v3,
    // nothing for the drift (a person fixes the input).
    let calls: Vec<(String, String, String)> = stack
        .sim
        .applied_calls()
        .into_iter()
        .map(|c| (c.method.to_string(), c.model, c.detail))
        .collect();
    assert_eq!(
        calls,
        [
            ("Scale".into(), "fraud".into(), "replicas=3".into()),
            ("Rollback".into(), "fraud".into(), "to=\"v3\"".into()),
        ]
    );
    let fraud = sim.model("fraud").unwrap();
    assert_eq!(
        (fraud.deployment.active_version.as_str(), fraud.deployment.replicas),
        ("v3", 3)
    );
    assert_eq!(latency.action.as_ref().unwrap().1, "Scale replicas=3");
    assert_eq!(accuracy.action.as_ref().unwrap().1, "Rollback to=\"v3\"");
    assert_eq!(drift.action.as_ref().unwrap().1, "none: paged for human review");

    // Slack: a firing and a resolve page per incident.
    let texts = slack_texts(&stack);
    for (kind, model) in [
        ("HighP99Latency", "fraud"),
        ("AccuracyDecay", "fraud"),
        ("FeatureDrift", "recsys"),
    ] {
        for status in ["[FIRING]", "[RESOLVED]"] {
            assert!(
                texts
                    .iter()
                    .any(|t| t.starts_with(&format!("{status} {kind}")) && t.contains(&format!(" {model} "))),
                "no {status} {kind} page on Slack: {texts:#?}"
            );
        }
    }
    // PagerDuty and email for the high-severity incidents only (the drift
    // is medium: Slack alone, as DESIGN.md routes it).
    let triggers: Vec<String> = stack
        .pagerduty
        .accepted()
        .iter()
        .filter(|r| r.body["event_action"] == "trigger")
        .map(|r| r.body["payload"]["class"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(triggers.iter().any(|c| c == "HighP99Latency"), "{triggers:?}");
    assert!(triggers.iter().any(|c| c == "AccuracyDecay"), "{triggers:?}");
    assert!(!triggers.iter().any(|c| c == "FeatureDrift"), "{triggers:?}");
    assert_eq!(latency.paged_on.len(), 3, "{latency:?}");
    assert_eq!(drift.paged_on, ["slack"], "{drift:?}");
    let subjects: Vec<String> = stack.smtp.mails().iter().filter_map(|m| m.header("Subject")).collect();
    assert!(
        subjects.iter().any(|s| s == "[ML Alert - HIGH] HighP99Latency"),
        "{subjects:?}"
    );
    assert!(subjects.iter().any(|s| s.ends_with("] AccuracyDecay")), "{subjects:?}");
    assert!(!subjects.iter().any(|s| s.contains("FeatureDrift")), "{subjects:?}");
    let mail = stack
        .smtp
        .mails()
        .into_iter()
        .find(|m| m.header("Subject").is_some_and(|s| s.ends_with("AccuracyDecay")))
        .unwrap();
    let text = scenario::mail_text(&mail);
    assert!(
        text.contains("model: fraud") && text.contains("model_version: v4"),
        "{text}"
    );

    // The audit trail: both platform actions verified, the drift notified.
    let records = read_decoded(&kafka, &kafka.topics.actions, 30, |rs: &[ActionRecord]| rs.len() >= 7).await;
    let records: Vec<(String, i32, i32)> = records
        .into_iter()
        .map(|r| (r.alert_type, r.kind, r.decision))
        .collect();
    for (kind, action) in [
        ("HighP99Latency", ActionKind::Scale),
        ("AccuracyDecay", ActionKind::Rollback),
    ] {
        assert!(
            records
                .iter()
                .any(|r| r == &(kind.to_string(), action as i32, ActionDecision::Verified as i32)),
            "{kind} not verified: {records:?}"
        );
    }
    assert!(
        records.iter().any(|r| r
            == &(
                "FeatureDrift".to_string(),
                ActionKind::Notify as i32,
                ActionDecision::Executed as i32
            )),
        "{records:?}"
    );
    assert!(
        !records
            .iter()
            .any(|r| r.2 == ActionDecision::Refused as i32 || r.2 == ActionDecision::Failed as i32),
        "{records:?}"
    );
    assert_eq!(sent.failed.load(std::sync::atomic::Ordering::Relaxed), 0);
    traffic.abort();
    stack.stop().await;
}
