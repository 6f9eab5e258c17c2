//! Secrets never reach a log line or an API answer: the alerter binary
//! runs at debug level with a Slack webhook URL, a PagerDuty routing key
//! (from a file), SMTP passwords (one wrong, so authentication fails and is
//! logged), a webhook URL with a token, a bearer token and the API token
//! that guards its own API; it delivers,
//! fails, retries and dead-letters; then every line it logged and every
//! answer of its API is searched for each secret.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use mlwatch_proto::v1::Severity;
use mlwatch_testkit::receiver::HttpReceiver;
use mlwatch_testkit::smtp::SmtpServer;
use mlwatch_testkit::{Publisher, config_file, eventually, setup, temp_dir};
use support::fire;

const SLACK_SECRET: &str = "SLACKSECRETT0B0abcdef";
const PD_SECRET: &str = "PDROUTINGSECRET0123456789abcdef";
const SMTP_SECRET: &str = "SMTPSECRETpassw0rd";
const WRONG_SMTP_SECRET: &str = "WRONGSMTPSECRETxyz";
const URL_SECRET: &str = "URLSECRETtoken42";
const BEARER_SECRET: &str = "BEARERSECRETtoken99";
const API_SECRET: &str = "APISECRETopsTeam77";

const SECRETS: [&str; 7] = [
    SLACK_SECRET,
    PD_SECRET,
    SMTP_SECRET,
    WRONG_SMTP_SECRET,
    URL_SECRET,
    BEARER_SECRET,
    API_SECRET,
];

fn leaks(text: &str) -> Vec<&'static str> {
    SECRETS.iter().copied().filter(|s| text.contains(s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_in_any_log_line_or_api_answer() {
    let (kafka, suffix, shutdown) = setup("alerter-secrets");
    let [slack, pd, hook] = [(); 3].map(|_| HttpReceiver::default());
    let slack_addr = slack.start(&shutdown).await;
    let pd_addr = pd.start(&shutdown).await;
    let hook_addr = hook.start(&shutdown).await;
    // Slack fails first (retried), then refuses one message outright.
    slack.script([(500, None), (429, Some(1)), (200, None), (404, None)]);
    let smtp = SmtpServer::default();
    smtp.require_auth("alerts@example.org", SMTP_SECRET);
    let smtp_addr = smtp.start(&shutdown).await;

    let temp = temp_dir("secrets");
    let dir = temp.path();
    let key_file = dir.join("pd_key");
    std::fs::write(&key_file, format!("{PD_SECRET}\n")).unwrap();
    let config = config_file(
        dir,
        "alerter",
        &kafka,
        &format!(
            r#"[log]
filter = "debug"
json = true
[auth]
bearer_tokens = ["{API_SECRET}"]
[alerter]
group_id = "alerter-{suffix}"
state_file = "{state}"
initial_backoff_ms = 50
max_attempts = 3
[route]
receiver = "slack"
group_by = ["model"]
group_wait_ms = 0
group_interval_ms = 300
[[route.routes]]
receiver = "pagerduty"
continue = true
[[route.routes]]
receiver = "email"
continue = true
[[route.routes]]
receiver = "email-wrong"
continue = true
[[route.routes]]
receiver = "hook"
continue = true
[[route.routes]]
receiver = "slack"
[receivers.slack]
type = "slack"
webhook_url = "http://{slack_addr}/services/T0/B0/{SLACK_SECRET}"
rate_limit_ms = 0
[receivers.pagerduty]
type = "pagerduty"
routing_key_file = "{key_file}"
url = "http://{pd_addr}/v2/enqueue"
[receivers.email]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
username = "alerts@example.org"
password = "{SMTP_SECRET}"
from = "alerts@example.org"
to = ["oncall@example.org"]
[receivers.email-wrong]
type = "email"
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
username = "alerts@example.org"
password = "{WRONG_SMTP_SECRET}"
from = "alerts@example.org"
to = ["oncall@example.org"]
[receivers.hook]
type = "webhook"
url = "http://{hook_addr}/hook?token={URL_SECRET}"
bearer_token = "{BEARER_SECRET}"
"#,
            state = dir.join("state.redb").display(),
            key_file = key_file.display(),
            smtp_port = smtp_addr.port(),
        ),
    );
    let publisher = Publisher::new(&kafka).await;
    let t0 = mlwatch_common::now_ms();
    fire(&publisher, "fp1", "HighP99Latency", Severity::High, "fraud", t0).await;
    fire(&publisher, "fp2", "FeatureDrift", Severity::Medium, "churn", t0).await;
    publisher.send_raw("garbage", b"\x08\x96not an alert").await;

    let log_path = dir.join("alerter.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlwatch-alerter"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("alerter starts");
    let admin = eventually(30, "the admin address in the log", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let line = log.lines().find(|l| l.contains("alerter ready"))?;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["fields"]["admin_addr"].as_str()?.parse::<std::net::SocketAddr>().ok()
    })
    .await;

    // Deliveries, retries, a refusal, an authentication failure, a poison
    // message: all of it logged.
    eventually(60, "every outcome recorded", || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let delivered = log.matches("notification delivered").count();
        let failed = log.matches("notification failed").count();
        (delivered >= 7 && failed >= 3 && log.contains("dead-letter")).then_some(())
    })
    .await;
    // The secrets were really in use.
    assert!(slack.all()[0].path.ends_with(SLACK_SECRET));
    assert_eq!(pd.accepted()[0].body["routing_key"], PD_SECRET);
    assert_eq!(
        hook.accepted()[0].header("authorization").unwrap(),
        format!("Bearer {BEARER_SECRET}")
    );
    assert_eq!(smtp.mails().len(), 2);
    assert!(smtp.auth_failures() >= 1);

    let client = reqwest::Client::new();
    let mut answers = String::new();
    for path in [
        "/api/v1/alerts",
        "/api/v1/groups",
        "/api/v1/silences",
        "/api/v1/notifications",
        "/api/v1/notifications?outcome=failed",
        "/api/v1/alerts/nope/ack",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        let r = if path.ends_with("/ack") {
            client.post(format!("http://{admin}{path}")).body("{}")
        } else {
            client.get(format!("http://{admin}{path}"))
        };
        let r = r.bearer_auth(API_SECRET).send().await;
        answers.push_str(&r.unwrap().text().await.unwrap());
        answers.push('\n');
    }
    let r = client
        .post(format!("http://{admin}/api/v1/silences"))
        .bearer_auth(API_SECRET)
        .json(&serde_json::json!({"matchers": ["model=\"fraud\""], "ends_at_ms": t0 + 60_000, "created_by": "ana"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a silence with the API token");
    answers.push_str(&r.text().await.unwrap());
    // The API wants the token; metrics and probes do not.
    for (path, token) in [("/api/v1/silences", None), ("/api/v1/alerts", Some("wrong"))] {
        let mut request = client.get(format!("http://{admin}{path}"));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{path} with {token:?}");
    }
    let r = client
        .post(format!("http://{admin}/api/v1/silences"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no silence without the token");
    assert_eq!(
        client
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(answers.contains("receiver refused with 404"), "{answers}");
    assert!(
        answers.contains("535"),
        "the authentication failure is reported: {answers}"
    );

    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap() + &std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    assert!(log.lines().count() > 20, "{log}");
    for (i, line) in log.lines().enumerate() {
        assert!(leaks(line).is_empty(), "log line {i} leaks {:?}: {line}", leaks(line));
    }
    for line in answers.lines() {
        assert!(leaks(line).is_empty(), "API answer leaks {:?}: {line}", leaks(line));
    }

    // Bad configuration holding a secret: exit 64, the key named, the
    // secret not shown.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!("[receivers.slack]\ntype = \"slack\"\nwebhook_url = \"ftp://{SLACK_SECRET}\"\n[alerter]\nstate_file = \"{}\"\n", dir.join("bad.redb").display()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mlwatch-alerter"))
        .arg("--config")
        .arg(&bad)
        .env("KAFKA_BOOTSTRAP_SERVERS", &kafka.bootstrap_servers)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{text}");
    assert!(text.contains("receivers.slack"), "{text}");
    assert!(leaks(&text).is_empty(), "{text}");
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
}
