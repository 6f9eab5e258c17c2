//! Escalation in the running service: a critical alert nobody acknowledges
//! pages the secondary PagerDuty service after `after_ms`; a group
//! acknowledged through the API in time sends `acknowledge` to the primary
//! and never escalates.

mod support;

use std::time::Duration;

use mlwatch_alerter::route::{EscalationConfig, RouteConfig};
use mlwatch_alerter::{Receiver, Secret};
use mlwatch_proto::v1::Severity;
use mlwatch_testkit::receiver::HttpReceiver;
use mlwatch_testkit::{eventually, get_json, post_json, setup, within};
use serde_json::json;
use support::{api, fire, resolve, start};

fn pagerduty(addr: std::net::SocketAddr, key: &str) -> Receiver {
    Receiver::Pagerduty {
        routing_key: Some(Secret::new(key)),
        routing_key_file: None,
        url: Some(format!("http://{addr}/v2/enqueue")),
        send_resolved: None,
        send_acknowledged: None,
        rate_limit_ms: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unacknowledged_critical_escalates_and_an_acknowledged_group_does_not() {
    let (kafka, suffix, shutdown) = setup("alerter-escalation");
    let primary = HttpReceiver::default();
    let secondary = HttpReceiver::default();
    let primary_addr = primary.start(&shutdown).await;
    let secondary_addr = secondary.start(&shutdown).await;

    let mut config = mlwatch_alerter::Config::for_test(&kafka, &suffix);
    config.route = Some(RouteConfig {
        receiver: Some("primary".into()),
        group_by: Some(vec!["model".into()]),
        group_wait_ms: Some(0),
        group_interval_ms: Some(500),
        escalation: Some(EscalationConfig {
            after_ms: 3000,
            receivers: vec!["secondary".into()],
            matchers: vec![r#"severity="critical""#.into()],
        }),
        ..RouteConfig::default()
    });
    config
        .receivers
        .insert("primary".into(), pagerduty(primary_addr, "primary-key"));
    config
        .receivers
        .insert("secondary".into(), pagerduty(secondary_addr, "secondary-key"));
    let (running, publisher) = start(config, &shutdown).await;
    let admin = running.admin_addr;

    let now = mlwatch_common::now_ms();
    fire(&publisher, "fp-a", "ModelDown", Severity::Critical, "a", now).await;
    fire(&publisher, "fp-b", "ModelDown", Severity::Critical, "b", now).await;
    eventually(30, "both triggers at the primary", || {
        (primary.accepted().len() >= 2).then_some(())
    })
    .await;

    // Acknowledge model b's group right away.
    let groups = get_json(&api(admin, "/api/v1/groups")).await;
    let group_b = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["labels"]["model"] == "b")
        .expect("group of b")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = post_json(
        &api(admin, &format!("/api/v1/groups/{group_b}/ack")),
        json!({"by": "ana"}),
    )
    .await;
    assert_eq!(status, 200);
    let ack = within(10, "acknowledge event", primary.wait_accepted(2)).await;
    assert_eq!(ack.body["event_action"], "acknowledge");
    assert_eq!(ack.body["dedup_key"], "fp-b");

    // Model a escalates; b does not.
    let esc = within(20, "escalation", secondary.wait_accepted(0)).await;
    assert_eq!(esc.body["event_action"], "trigger");
    assert_eq!(esc.body["dedup_key"], "fp-a");
    assert_eq!(esc.body["routing_key"], "secondary-key");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(secondary.accepted().len(), 1, "{:?}", secondary.accepted());
    let history = get_json(&api(admin, "/api/v1/notifications?receiver=secondary")).await;
    assert_eq!(history[0]["kind"], "escalation");
    assert_eq!(history[0]["escalation_level"], 1);
    let alerts = get_json(&api(admin, "/api/v1/alerts")).await;
    let b = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["fingerprint"] == "fp-b")
        .unwrap();
    assert_eq!(b["acknowledged"]["by"], "ana");

    // The resolve reaches the escalation receiver too.
    resolve(&publisher, "fp-a", "ModelDown", Severity::Critical, "a", now + 1).await;
    let resolve = within(30, "resolve at the secondary", secondary.wait_accepted(1)).await;
    assert_eq!(resolve.body["event_action"], "resolve");
    assert_eq!(resolve.body["dedup_key"], "fp-a");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), running.task).await;
}
