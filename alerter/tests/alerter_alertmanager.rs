//! The alerter beside a real Alertmanager and a real Prometheus (Debian's
//! `prometheus-alertmanager` 0.25 and `prometheus`, installed by
//! `scripts/test.sh`), both ways:
//!
//! - forwarding: an alert firing for ten minutes (`MLWATCH_AM_FIRING_SECS`
//!   shortens it on a workstation) stays active in an Alertmanager whose
//!   `resolve_timeout` is one minute, its receiver hears no resolve until
//!   mlwatch resolves the alert, then exactly that resolve;
//! - taking alerts: a Prometheus rule that fires, then stops, pages through
//!   the alerter's routes (`POST /api/v2/alerts` with a bearer token), with
//!   the metrics' `model_name` filed as the alerts' `model`, and resolves.
//!
//! Ports 21600 (Alertmanager) and 21601 (Prometheus).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mlwatch_alerter::route::RouteConfig;
use mlwatch_alerter::{Receiver, Secret};
use mlwatch_common::auth::AuthConfig;
use mlwatch_proto::v1::Severity;
use mlwatch_testkit::receiver::{HttpReceiver, Received};
use mlwatch_testkit::http::get_text;
use mlwatch_testkit::{get_json, setup, temp_dir, within};
use serde_json::Value;
use support::{fire, resolve, start};
use tokio::process::{Child, Command};

const ALERTMANAGER_PORT: u16 = 21600;
const PROMETHEUS_PORT: u16 = 21601;

/// A binary from `$env`, else the first of `names` on the PATH.
fn binary(env: &str, names: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("none of {names:?} on the PATH and {env} unset: scripts/test.sh installs them");
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()))
}

fn route_all(receiver: &str, group_interval_ms: u64) -> RouteConfig {
    RouteConfig {
        receiver: Some(receiver.into()),
        group_by: Some(vec!["alertname".into()]),
        group_wait_ms: Some(0),
        group_interval_ms: Some(group_interval_ms),
        ..RouteConfig::default()
    }
}

/// The webhook v4 messages an Alertmanager sent, as (status, alertnames).
fn am_messages(hook: &HttpReceiver) -> Vec<(String, Vec<String>)> {
    hook.all()
        .iter()
        .map(|r: &Received| {
            let names = r.body["alerts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| format!("{}:{}", x["labels"]["alertname"].as_str().unwrap_or(""), x["status"]))
                        .collect()
                })
                .unwrap_or_default();
            (r.body["status"].as_str().unwrap_or("").to_string(), names)
        })
        .collect()
}

/// The alert named `name` among an Alertmanager's alerts, if listed.
async fn am_alert(name: &str) -> Option<Value> {
    let list = get_json(&format!("http://127.0.0.1:{ALERTMANAGER_PORT}/api/v2/alerts")).await;
    list.as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alertmanager_keeps_a_forwarded_alert_firing_until_mlwatch_resolves_it() {
    let firing_secs: u64 = std::env::var("MLWATCH_AM_FIRING_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let (kafka, suffix, shutdown) = setup("alerter-alertmanager");
    let dir = temp_dir("alertmanager");
    let hook = HttpReceiver::default();
    let hook_addr = hook.start(&shutdown).await;
    // One minute: without re-sends, the alert would resolve after it.
    let am_config = format!(
        "global:\n  resolve_timeout: 1m\n\
         route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 2s\n  repeat_interval: 1h\n\
         receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook_addr}/am\n        send_resolved: true\n"
    );
    std::fs::write(dir.path().join("alertmanager.yml"), am_config).unwrap();
    let _am = spawn(
        &binary("MLWATCH_ALERTMANAGER_BIN", &["prometheus-alertmanager", "alertmanager"]),
        &[
            format!("--config.file={}", dir.path().join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.path().join("am-data").display()),
            format!("--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}"),
            "--cluster.listen-address=".into(),
        ],
        &dir.path().join("alertmanager.log"),
    );
    within(30, "the alertmanager answers", async {
        loop {
            if reqwest::get(format!("http://127.0.0.1:{ALERTMANAGER_PORT}/-/ready"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    let mut config = mlwatch_alerter::Config::for_test(&kafka, &suffix);
    config.route = Some(route_all("am", 300_000));
    config.receivers.insert(
        "am".into(),
        Receiver::Alertmanager {
            url: format!("http://127.0.0.1:{ALERTMANAGER_PORT}"),
            resend_interval_ms: Some(15_000),
            send_resolved: None,
            rate_limit_ms: None,
        },
    );
    let (_running, publisher) = start(config, &shutdown).await;
    let t0 = mlwatch_common::now_ms();
    fire(&publisher, "am-1", "HighP99Latency", Severity::High, "fraud", t0).await;

    within(60, "the alert active in the alertmanager", async {
        while am_alert("HighP99Latency").await.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(firing_secs) {
        let a = am_alert("HighP99Latency")
            .await
            .unwrap_or_else(|| panic!("the alert left the alertmanager after {:?}", started.elapsed()));
        assert_eq!(a["status"]["state"], "active", "{a}");
        let resolved: Vec<_> = am_messages(&hook)
            .into_iter()
            .filter(|(s, _)| s == "resolved")
            .collect();
        assert!(
            resolved.is_empty(),
            "the alertmanager resolved a firing alert after {:?}: {resolved:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let firing_messages = am_messages(&hook);
    assert!(!firing_messages.is_empty(), "the alertmanager paged nobody");

    resolve(
        &publisher,
        "am-1",
        "HighP99Latency",
        Severity::High,
        "fraud",
        mlwatch_common::now_ms(),
    )
    .await;
    within(60, "the alertmanager's resolve", async {
        loop {
            let msgs = am_messages(&hook);
            if msgs.iter().any(|(s, _)| s == "resolved") {
                let resolved: Vec<_> = msgs.iter().filter(|(s, _)| s == "resolved").collect();
                assert_eq!(
                    resolved,
                    vec![&("resolved".to_string(), vec!["HighP99Latency:\"resolved\"".to_string()])]
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(
        am_alert("HighP99Latency").await.is_none(),
        "still listed after the resolve"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prometheus_rule_pages_through_the_alerter_and_resolves() {
    let (kafka, suffix, shutdown) = setup("alerter-prometheus");
    let dir = temp_dir("prometheus");
    let hook = HttpReceiver::default();
    let hook_addr = hook.start(&shutdown).await;

    let mut config = mlwatch_alerter::Config::for_test(&kafka, &suffix);
    config.auth = AuthConfig {
        bearer_tokens: vec![Secret::new("prometheus-token")],
    };
    config.route = Some(route_all("hook", 1_000));
    config.receivers.insert(
        "hook".into(),
        Receiver::Webhook {
            url: Some(Secret::new(format!("http://{hook_addr}/hook"))),
            url_file: None,
            bearer_token: None,
            bearer_token_file: None,
            max_alerts: 0,
            send_resolved: None,
            rate_limit_ms: None,
        },
    );
    let (running, _publisher) = start(config, &shutdown).await;
    let alerter = running.admin_addr;

    // Without the token: refused.
    let refused = reqwest::Client::new()
        .post(format!("http://{alerter}/api/v2/alerts"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    // Fires at the first evaluation, stops 20 s later.
    let until = mlwatch_common::now_ms() / 1000 + 20;
    std::fs::write(
        dir.path().join("rules.yml"),
        format!(
            "groups:\n  - name: test\n    interval: 1s\n    rules:\n      - alert: MlwatchTestRule\n        \
             expr: vector(time()) < {until}\n        labels: {{severity: high, model_name: fraud}}\n        \
             annotations: {{summary: \"a test rule\"}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files: [{}]\n\
             alerting:\n  alertmanagers:\n    - api_version: v2\n      authorization: {{credentials: prometheus-token}}\n      \
             static_configs: [{{targets: [\"{alerter}\"]}}]\n",
            dir.path().join("rules.yml").display()
        ),
    )
    .unwrap();
    let _prometheus = spawn(
        &binary("MLWATCH_PROMETHEUS_BIN", &["prometheus"]),
        &[
            format!("--config.file={}", dir.path().join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"),
            "--rules.alert.resend-delay=1s".into(),
        ],
        &dir.path().join("prometheus.log"),
    );

    let log = dir.path().join("prometheus.log");
    let first = within(60, "the rule's page", hook.wait_accepted(0)).await.body;
    let alert = &first["alerts"][0];
    assert_eq!(first["status"], "firing", "{first}");
    assert_eq!(alert["labels"]["alertname"], "MlwatchTestRule");
    assert_eq!(alert["labels"]["severity"], "high");
    assert_eq!(alert["labels"]["model"], "fraud", "model_name is filed as model");
    assert_eq!(alert["annotations"]["summary"], "a test rule");

    let resolved = within(90, "the rule's resolve", async {
        let mut seen = 1;
        loop {
            let r = hook.wait_accepted(seen).await;
            seen += 1;
            if r.body["status"] == "resolved" {
                return r.body;
            }
        }
    })
    .await;
    assert_eq!(resolved["alerts"][0]["labels"]["alertname"], "MlwatchTestRule");
    let pages: Vec<_> = hook
        .accepted()
        .iter()
        .map(|r| r.body["status"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        pages.iter().filter(|s| *s == "resolved").count(),
        1,
        "{pages:?}; prometheus log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let metrics = get_text(&format!("http://{alerter}/metrics")).await;
    assert!(
        metrics.contains("mlwatch_alerter_prometheus_alerts_total{outcome=\"firing\"} 1"),
        "{metrics}"
    );
    shutdown.cancel();
}
