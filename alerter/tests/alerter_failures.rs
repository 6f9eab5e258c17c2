//! Failure tests: a receiver that answers 500, then 429 with Retry-After,
//! then recovers gets every notification exactly once; a receiver that
//! refuses (4xx) is not retried and the refusal is in the history; and the
//! alerter binary killed with SIGKILL in the middle of a burst, then
//! restarted, delivers each notification once (at most the one in flight
//! at the kill is sent again, with the same idempotency key).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mlwatch_alerter::route::RouteConfig;
use mlwatch_alerter::{Receiver, Secret};
use mlwatch_proto::v1::Severity;
use mlwatch_testkit::receiver::HttpReceiver;
use mlwatch_testkit::{Publisher, config_file, eventually, get_json, get_json_blocking, setup, temp_dir};
use support::{api, fire, start};

fn webhook(url: String, rate_limit_ms: u64) -> Receiver {
    Receiver::Webhook {
        url: Some(Secret::new(url)),
        url_file: None,
        bearer_token: None,
        bearer_token_file: None,
        max_alerts: 0,
        send_resolved: None,
        rate_limit_ms: Some(rate_limit_ms),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flaky_receiver_gets_each_notification_once_and_refusals_are_not_retried() {
    let (kafka, suffix, shutdown) = setup("alerter-flaky");
    let flaky = HttpReceiver::default();
    let flaky_addr = flaky.start(&shutdown).await;
    flaky.script([(500, None), (429, Some(1)), (503, None)]);
    let refusing = HttpReceiver::default();
    let refusing_addr = refusing.start(&shutdown).await;
    refusing.script([(404, None); 10]);

    let mut config = mlwatch_alerter::Config::for_test(&kafka, &suffix);
    config.alerter.initial_backoff_ms = 50;
    config.route = Some(RouteConfig {
        receiver: Some("slack".into()),
        group_by: Some(vec!["model".into()]),
        group_wait_ms: Some(0),
        group_interval_ms: Some(300),
        routes: vec![
            RouteConfig {
                receiver: Some("refusing".into()),
                matchers: vec![r#"model="m0""#.into()],
                continue_matching: true,
                ..RouteConfig::default()
            },
            RouteConfig {
                receiver: Some("slack".into()),
                ..RouteConfig::default()
            },
        ],
        ..RouteConfig::default()
    });
    // Slack's own rate: one message per second per webhook.
    config.receivers.insert(
        "slack".into(),
        Receiver::slack(format!("http://{flaky_addr}/services/T/B/X"), None),
    );
    config
        .receivers
        .insert("refusing".into(), webhook(format!("http://{refusing_addr}/hook"), 0));
    let (running, publisher) = start(config, &shutdown).await;

    let t0 = mlwatch_common::now_ms();
    for i in 0..4 {
        fire(
            &publisher,
            &format!("fp{i}"),
            "HighP99Latency",
            Severity::High,
            &format!("m{i}"),
            t0,
        )
        .await;
    }
    let accepted = eventually(60, "four pages accepted", || {
        let a = flaky.accepted();
        (a.len() >= 4).then_some(a)
    })
    .await;
    // Give any duplicate a chance to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let accepted_now = flaky.accepted();
    assert_eq!(accepted_now.len(), 4, "{accepted_now:?}");
    let models: BTreeSet<String> = accepted
        .iter()
        .map(|r| {
            r.body["attachments"][0]["blocks"][2]["fields"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(models.len(), 4, "{models:?}");
    let statuses: Vec<u16> = flaky.all().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 429, 503, 200, 200, 200, 200]);

    // The refusal: one request, no retry, the receiver's text recorded.
    let history = eventually(30, "the refusal in the history", || {
        let h = get_json_blocking(&api(running.admin_addr, "/api/v1/notifications?outcome=failed"));
        (!h.as_array().unwrap().is_empty()).then_some(h)
    })
    .await;
    assert_eq!(history[0]["receiver"], "refusing");
    assert_eq!(history[0]["error"], "receiver refused with 404: scripted failure");
    assert_eq!(refusing.all().len(), 1);
    let delivered = get_json(&api(running.admin_addr, "/api/v1/notifications?outcome=delivered")).await;
    assert_eq!(delivered.as_array().unwrap().len(), 4);

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), running.task).await;
}

struct Alerter {
    child: Child,
}

impl Alerter {
    fn spawn(config: &std::path::Path, log: &std::path::Path) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mlwatch-alerter"))
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("alerter binary starts");
        Self { child }
    }

    /// SIGKILL: no chance to flush, commit or say goodbye.
    fn kill9(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Alerter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_burst_then_restart_delivers_each_notification_once() {
    let (kafka, suffix, shutdown) = setup("alerter-kill9");
    let hook = HttpReceiver::default();
    let hook_addr = hook.start(&shutdown).await;
    let dir = temp_dir("kill9");
    let log = dir.path().join("alerter.log");
    let config = config_file(
        dir.path(),
        "alerter",
        &kafka,
        &format!(
            r#"[log]
filter = "info"
[alerter]
group_id = "alerter-{suffix}"
state_file = "{state}"
initial_backoff_ms = 50
[route]
receiver = "hook"
group_by = ["model"]
group_wait_ms = 0
group_interval_ms = 500
[receivers.hook]
type = "webhook"
url = "http://{hook_addr}/hook"
rate_limit_ms = 100
"#,
            state = dir.path().join("state.redb").display(),
        ),
    );
    const BURST: usize = 30;
    let publisher = Publisher::new(&kafka).await;
    let t0 = mlwatch_common::now_ms();
    for i in 0..BURST {
        fire(
            &publisher,
            &format!("fp{i}"),
            "HighP99Latency",
            Severity::High,
            &format!("m{i:02}"),
            t0,
        )
        .await;
    }

    let mut first = Alerter::spawn(&config, &log);
    eventually(60, "a third of the burst delivered", || {
        (hook.accepted().len() >= BURST / 3).then_some(())
    })
    .await;
    first.kill9();
    let at_kill = hook.accepted().len();
    assert!(at_kill < BURST, "the burst was over before the kill; make it longer");

    let _second = Alerter::spawn(&config, &log);
    let keys = |rs: &[mlwatch_testkit::receiver::Received]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in rs {
            *m.entry(r.header("idempotency-key").unwrap_or_default()).or_insert(0) += 1;
        }
        m
    };
    eventually(90, "the whole burst delivered after the restart", || {
        (keys(&hook.accepted()).len() >= BURST).then_some(())
    })
    .await;
    // Late duplicates (e.g. redelivered Kafka messages) would show now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = hook.accepted();
    let per_key = keys(&accepted);
    let models: BTreeSet<String> = accepted
        .iter()
        .map(|r| r.body["groupLabels"]["model"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(models.len(), BURST, "every alert paged: {models:?}");
    assert_eq!(per_key.len(), BURST, "one notification per alert: {per_key:?}");
    let resent: Vec<(&String, &usize)> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        resent.len() <= 1 && resent.iter().all(|(_, n)| **n == 2),
        "only the notification in flight at the kill may be sent twice: {resent:?}"
    );
    assert!(
        accepted.len() <= BURST + 1,
        "{} pages for {BURST} alerts",
        accepted.len()
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log_text.matches("alerter ready").count(), 2, "{log_text}");
    shutdown.cancel();
}
