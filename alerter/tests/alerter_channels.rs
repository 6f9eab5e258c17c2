//! The alerter against real receivers over a real broker: HTTP receivers
//! standing in for Slack, PagerDuty, a webhook and an Alertmanager, and a
//! real SMTP server receiving the email. Payloads are checked against the
//! shapes the services document; acknowledgement, silences and the
//! notification history go through the HTTP API.

mod support;

use std::time::Duration;

use mlwatch_alerter::route::RouteConfig;
use mlwatch_alerter::{Receiver, Secret, SmtpTls};
use mlwatch_proto::v1::Severity;
use mlwatch_testkit::receiver::HttpReceiver;
use mlwatch_testkit::smtp::SmtpServer;
use mlwatch_testkit::{eventually, get_json, get_json_blocking, post_json, setup, within};
use serde_json::{Value, json};
use support::{api, fire, resolve, start};

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

fn child(receiver: &str, matcher: Option<&str>) -> RouteConfig {
    RouteConfig {
        receiver: Some(receiver.into()),
        matchers: matcher.map(|m| vec![m.to_string()]).unwrap_or_default(),
        continue_matching: true,
        ..RouteConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_channel_gets_the_documented_payloads_and_the_api_drives_acks_and_silences() {
    let (kafka, suffix, shutdown) = setup("alerter-channels");
    let [slack, pd, hook, am] = [(); 4].map(|_| HttpReceiver::default());
    let mut addrs = Vec::new();
    for r in [&slack, &pd, &hook, &am] {
        addrs.push(r.start(&shutdown).await);
    }
    let smtp = SmtpServer::default();
    smtp.require_auth("alerts@example.org", "smtp-pass");
    let smtp_addr = smtp.start(&shutdown).await;

    let mut config = mlwatch_alerter::Config::for_test(&kafka, &suffix);
    config.alerter.external_url = "http://alerter.example".into();
    config.route = Some(RouteConfig {
        receiver: Some("slack".into()),
        group_by: Some(vec!["model".into(), "type".into()]),
        group_wait_ms: Some(0),
        group_interval_ms: Some(300),
        routes: vec![
            child("pagerduty", Some(r#"severity=~"critical|high""#)),
            child("email", Some(r#"severity=~"critical|high""#)),
            child("webhook", None),
            child("alertmanager", None),
            child("slack", None),
        ],
        ..RouteConfig::default()
    });
    config.receivers.insert(
        "slack".into(),
        Receiver::slack(
            format!("http://{}/services/T0/B0/SLACKTOKEN", addrs[0]),
            Some("#ml".into()),
        ),
    );
    config.receivers.insert(
        "pagerduty".into(),
        Receiver::Pagerduty {
            routing_key: Some(Secret::new("R0UTINGKEY0000000000000000000000")),
            routing_key_file: None,
            url: Some(format!("http://{}/v2/enqueue", addrs[1])),
            send_resolved: None,
            send_acknowledged: None,
            rate_limit_ms: None,
        },
    );
    config.receivers.insert(
        "webhook".into(),
        Receiver::Webhook {
            url: Some(Secret::new(format!("http://{}/hook", addrs[2]))),
            url_file: None,
            bearer_token: Some(Secret::new("hook-token")),
            bearer_token_file: None,
            max_alerts: 0,
            send_resolved: None,
            rate_limit_ms: None,
        },
    );
    config.receivers.insert(
        "alertmanager".into(),
        Receiver::Alertmanager {
            resend_interval_ms: None,
            url: format!("http://{}", addrs[3]),
            send_resolved: None,
            rate_limit_ms: None,
        },
    );
    config.receivers.insert(
        "email".into(),
        Receiver::Email {
            host: "127.0.0.1".into(),
            port: Some(smtp_addr.port()),
            tls: SmtpTls::None,
            ca_file: None,
            username: Some("alerts@example.org".into()),
            password: Some(Secret::new("smtp-pass")),
            password_file: None,
            from: "mlwatch <alerts@example.org>".into(),
            to: vec!["oncall@example.org".into()],
            subject_template: None,
            send_resolved: None,
            rate_limit_ms: None,
        },
    );
    let (running, publisher) = start(config, &shutdown).await;
    let admin = running.admin_addr;

    let t0 = mlwatch_common::now_ms();

    // A high alert fires: every channel hears it once.
    fire(&publisher, "fp-fraud", "HighP99Latency", Severity::High, "fraud", t0).await;
    let s = within(30, "slack", slack.wait_accepted(0)).await;
    assert_eq!(s.path, "/services/T0/B0/SLACKTOKEN");
    assert_eq!(keys(&s.body), ["attachments", "channel", "text"]);
    assert_eq!(s.body["channel"], "#ml");
    assert_eq!(
        s.body["text"],
        "[FIRING] HighP99Latency (high) fraud v3: p99 latency of fraud is 431 ms (threshold 200 ms)"
    );
    let att = &s.body["attachments"][0];
    assert_eq!(keys(att), ["blocks", "color", "fallback"]);
    assert_eq!(att["color"], "#FF6600");
    let blocks = att["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    for b in blocks {
        assert!(
            ["header", "section", "context"].contains(&b["type"].as_str().unwrap()),
            "{b}"
        );
    }
    assert!(att["blocks"].to_string().contains("431.00 (threshold 200.00)"));
    assert!(att["blocks"].to_string().contains("scale up to 3 replicas"));

    let p = within(30, "pd", pd.wait_accepted(0)).await;
    assert_eq!(p.path, "/v2/enqueue");
    assert_eq!(
        keys(&p.body),
        ["client", "dedup_key", "event_action", "payload", "routing_key"]
    );
    assert_eq!(p.body["routing_key"], "R0UTINGKEY0000000000000000000000");
    assert_eq!(p.body["event_action"], "trigger");
    assert_eq!(p.body["dedup_key"], "fp-fraud");
    let payload = &p.body["payload"];
    assert_eq!(
        keys(payload),
        [
            "class",
            "component",
            "custom_details",
            "group",
            "severity",
            "source",
            "summary",
            "timestamp"
        ]
    );
    assert_eq!(payload["severity"], "error");
    assert_eq!(payload["source"], "analyzer");
    assert_eq!(payload["component"], "fraud");
    assert_eq!(payload["class"], "HighP99Latency");
    assert!(payload["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(payload["custom_details"]["threshold"], 200.0);

    let h = within(30, "webhook", hook.wait_accepted(0)).await;
    assert_eq!(h.header("authorization").as_deref(), Some("Bearer hook-token"));
    assert!(h.header("idempotency-key").is_some());
    assert_eq!(
        keys(&h.body),
        [
            "alerts",
            "commonAnnotations",
            "commonLabels",
            "externalURL",
            "groupKey",
            "groupLabels",
            "receiver",
            "status",
            "truncatedAlerts",
            "version"
        ]
    );
    assert_eq!(h.body["version"], "4");
    assert_eq!(h.body["receiver"], "webhook");
    assert_eq!(h.body["externalURL"], "http://alerter.example");
    assert_eq!(
        h.body["groupLabels"],
        json!({"model": "fraud", "type": "HighP99Latency"})
    );
    assert_eq!(
        keys(&h.body["alerts"][0]),
        [
            "annotations",
            "endsAt",
            "fingerprint",
            "generatorURL",
            "labels",
            "startsAt",
            "status"
        ]
    );

    let a = within(30, "alertmanager", am.wait_accepted(0)).await;
    assert_eq!(a.path, "/api/v2/alerts");
    assert_eq!(a.body[0]["labels"]["alertname"], "HighP99Latency");
    assert_eq!(a.body[0]["labels"]["severity"], "high");
    // Firing: an end four re-send intervals ahead, pushed on by each re-send.
    let ends = a.body[0]["endsAt"].as_str().expect("endsAt");
    assert!(ends > a.body[0]["startsAt"].as_str().unwrap(), "{ends}");

    let mails = within(30, "mail", smtp.wait_mails(0)).await;
    let first = &mails[0];
    assert_eq!(first.user.as_deref(), Some("alerts@example.org"));
    assert_eq!(first.to, ["oncall@example.org"]);
    assert_eq!(
        first.header("Subject").as_deref(),
        Some("[ML Alert - HIGH] HighP99Latency")
    );
    let root = first.header("Message-ID").expect("message id");
    assert!(first.header("In-Reply-To").is_none());
    assert!(first.body().contains("threshold 200.00"), "{}", first.body());

    // The API lists the alert and its groups.
    let alerts = get_json(&api(admin, "/api/v1/alerts")).await;
    assert_eq!(alerts[0]["fingerprint"], "fp-fraud");
    assert_eq!(alerts[0]["state"], "active");
    assert_eq!(alerts[0]["groups"].as_array().unwrap().len(), 5);
    let groups = get_json(&api(admin, "/api/v1/groups")).await;
    assert_eq!(groups.as_array().unwrap().len(), 5);

    // Acknowledge: PagerDuty gets `acknowledge` for the same dedup key.
    let client = reqwest::Client::new();
    let (status, _) = post_json(
        &api(admin, "/api/v1/alerts/fp-fraud/ack"),
        json!({"by": "ana", "comment": "looking"}),
    )
    .await;
    assert_eq!(status, 200);
    let ack = within(30, "ack", pd.wait_accepted(1)).await;
    assert_eq!(
        ack.body,
        json!({"routing_key": "R0UTINGKEY0000000000000000000000", "event_action": "acknowledge", "dedup_key": "fp-fraud"})
    );
    let (status, _) = post_json(&api(admin, "/api/v1/alerts/nope/ack"), json!({"by": "ana"})).await;
    assert_eq!(status, 404);
    let r = client
        .post(format!("http://{admin}/api/v1/alerts/fp-fraud/ack"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A silence mutes a medium alert of another model until it is expired.
    let r: Value = client
        .post(format!("http://{admin}/api/v1/silences"))
        .json(&json!({"matchers": ["model=\"churn\""], "ends_at_ms": t0 + 3_600_000, "created_by": "ana", "comment": "retraining"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let silence = r["id"].as_str().expect("silence id").to_string();
    let bad = client
        .post(format!("http://{admin}/api/v1/silences"))
        .json(&json!({"matchers": ["model=~("], "ends_at_ms": t0 + 3_600_000, "created_by": "ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("bad matcher"));
    fire(&publisher, "fp-churn", "FeatureDrift", Severity::Medium, "churn", t0).await;
    let state = eventually(30, "the churn alert to be filed", || {
        get_json_blocking(&api(admin, "/api/v1/alerts"))
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["fingerprint"] == "fp-churn")
            .map(|a| a["state"].clone())
    })
    .await;
    assert_eq!(state, "silenced");
    let silences = get_json(&api(admin, "/api/v1/silences")).await;
    assert_eq!(silences[0]["state"], "active");
    assert_eq!(silences[0]["created_by"], "ana");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        slack.accepted().len(),
        1,
        "silenced alert was sent: {:?}",
        slack.accepted()
    );
    let r = client
        .delete(format!("http://{admin}/api/v1/silences/{silence}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let churn = within(30, "churn", slack.wait_accepted(1)).await;
    assert!(churn.text().starts_with("[FIRING] FeatureDrift (medium) churn"));
    assert_eq!(churn.body["attachments"][0]["color"], "#FFCC00");

    // The fraud alert resolves: resolve everywhere, the email in the thread.
    resolve(
        &publisher,
        "fp-fraud",
        "HighP99Latency",
        Severity::High,
        "fraud",
        t0 + 1,
    )
    .await;
    let resolved = within(30, "resolve", slack.wait_accepted(2)).await;
    assert!(resolved.text().starts_with("[RESOLVED] HighP99Latency"));
    assert_eq!(resolved.body["attachments"][0]["color"], "#00CC00");
    let r = within(30, "pd resolve", pd.wait_accepted(2)).await;
    assert_eq!(r.body["event_action"], "resolve");
    assert_eq!(r.body["dedup_key"], "fp-fraud");
    let mails = within(30, "mail 2", smtp.wait_mails(1)).await;
    let second = &mails[1];
    assert_eq!(second.header("In-Reply-To").as_deref(), Some(root.as_str()));
    assert_eq!(second.header("References").as_deref(), Some(root.as_str()));
    assert_ne!(second.header("Message-ID").as_deref(), Some(root.as_str()));
    assert!(second.body().contains("[RESOLVED] HighP99Latency"));
    let h = within(30, "hook resolve", hook.wait_accepted(2)).await;
    assert_eq!(h.body["status"], "resolved");
    let a = within(30, "am resolve", am.wait_accepted(2)).await;
    assert!(a.body[0]["endsAt"].as_str().is_some());

    // The history shows every notification delivered, newest first: 5
    // firing, 1 acknowledge, 3 for churn (webhook, alertmanager, slack),
    // 5 resolves.
    let history = eventually(30, "every outcome recorded", || {
        let h = get_json_blocking(&api(admin, "/api/v1/notifications"));
        let all = h.as_array().unwrap().clone();
        (all.len() == 14 && all.iter().all(|n| n["outcome"] == "delivered")).then_some(all)
    })
    .await;
    let per_receiver = |r: &str| history.iter().filter(|n| n["receiver"] == r).count();
    assert_eq!(per_receiver("pagerduty"), 3);
    assert_eq!(per_receiver("slack"), 3);
    assert_eq!(per_receiver("email"), 2);
    assert_eq!(slack.accepted().len(), 3);
    assert_eq!(smtp.mails().len(), 2);
    assert_eq!(smtp.auth_failures(), 0);
    let only_pd = get_json(&api(admin, "/api/v1/notifications?receiver=pagerduty&limit=1")).await;
    assert_eq!(only_pd.as_array().unwrap().len(), 1);
    assert_eq!(only_pd[0]["kind"], "notify");

    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"mlwatch_alerter_alerts_total{outcome="firing"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mlwatch_alerter_alerts_total{outcome="resolved"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mlwatch_alerter_notifications_total{outcome="delivered",receiver="slack"} 3"#),
        "{metrics}"
    );

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), running.task).await;
}
