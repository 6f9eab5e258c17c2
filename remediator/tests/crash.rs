//! `kill -9` of the remediator process between deciding and calling, and
//! between calling and recording: after a restart the action happens at
//! most once on the platform and the audit trail is complete.
//!
//! The binary runs as a child process. The test-only settings
//! `remediator.test_pause_after_planned_ms` / `test_pause_after_call_ms`
//! hold it at the interesting point so the test can kill it there.

mod support;

use std::path::PathBuf;
use std::process::Stdio;

use mlwatch_common::kafka::KafkaConfig;
use mlwatch_proto::v1::{ActionDecision, Severity};
use mlwatch_testkit::sim::ModelSim;
use support::*;
use tokio::process::{Child, Command};

fn config_file(kafka: &KafkaConfig, suffix: &str, serving: std::net::SocketAddr, extra: &str) -> PathBuf {
    mlwatch_testkit::config_file(
        &std::env::temp_dir(),
        &format!("mlwatch-remediator-{suffix}-{}", mlwatch_testkit::run_suffix()),
        kafka,
        &format!(
            r#"
[log]
filter = "info"

[remediator]
group_id = "mlwatch-remediator-{suffix}"
tick_ms = 200
{extra}

[serving]
endpoint = "http://{serving}"
"#
        ),
    )
}

fn spawn(config: &PathBuf) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mlwatch-remediator"))
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("remediator binary starts")
}

/// SIGKILL, the `kill -9` of the issue: no shutdown, no commit, no flush.
async fn kill_9(child: &mut Child) {
    child.start_kill().expect("SIGKILL sent");
    let status = child.wait().await.expect("child reaped");
    assert!(!status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_planned_and_the_call_acts_once_after_restart() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-crash-planned").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));

    let paused = config_file(&kafka, &suffix, addr, "test_pause_after_planned_ms = 600000");
    let mut child = spawn(&paused);
    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("HighP99Latency", Severity::High, "fraud", t0)).await;
    let before = records(&kafka, 90, |rs| count(rs, ActionDecision::Planned) == 1).await;
    assert_eq!(decisions(&before), [ActionDecision::Planned]);
    kill_9(&mut child).await;
    assert!(sim.calls().is_empty(), "{:?}", sim.calls());

    // Restart without the pause: the planned action is carried out once.
    let normal = config_file(&kafka, &suffix, addr, "");
    let mut child = spawn(&normal);
    within(90, "the Scale call after restart", sim.wait_for_calls(0)).await;
    publish(&kafka, &resolved("HighP99Latency", Severity::High, "fraud", t0)).await;
    let after = records(&kafka, 90, |rs| count(rs, ActionDecision::Verified) == 1).await;
    assert_eq!(decisions(&after), PLANNED_EXECUTED_VERIFIED);
    let calls = sim.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].request_id, before[0].request_id);
    assert_eq!(sim.model("fraud").unwrap().deployment.replicas, 3);
    kill_9(&mut child).await;
    let _ = std::fs::remove_file(paused);
    let _ = std::fs::remove_file(normal);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_call_and_executed_is_deduplicated_by_request_id() {
    let (kafka, suffix, shutdown, sim, addr) = fixture("rem-crash-called").await;
    sim.add_model(ModelSim::new("fraud", "v3", 2, 114.0));

    let paused = config_file(&kafka, &suffix, addr, "test_pause_after_call_ms = 600000");
    let mut child = spawn(&paused);
    let t0 = mlwatch_common::now_ms();
    publish(&kafka, &firing("HighP99Latency", Severity::High, "fraud", t0)).await;
    within(90, "the Scale call", sim.wait_for_calls(0)).await;
    kill_9(&mut child).await;
    let before = records(&kafka, 60, |rs| count(rs, ActionDecision::Planned) == 1).await;
    assert_eq!(
        decisions(&before),
        [ActionDecision::Planned],
        "EXECUTED was never recorded"
    );

    // After the restart the call is repeated with the same request id; the
    // platform recognises it and applies nothing twice.
    let normal = config_file(&kafka, &suffix, addr, "");
    let mut child = spawn(&normal);
    within(90, "the repeated call", sim.wait_for_calls(1)).await;
    let after = records(&kafka, 90, |rs| count(rs, ActionDecision::Executed) == 1).await;
    assert_eq!(decisions(&after), [ActionDecision::Planned, ActionDecision::Executed]);
    assert_eq!(after[1].params["duplicate"], "true");
    let calls = sim.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].request_id, calls[1].request_id);
    assert!(!calls[0].duplicate && calls[1].duplicate, "{calls:?}");
    assert_eq!(sim.applied_calls().len(), 1);
    assert_eq!(sim.model("fraud").unwrap().deployment.replicas, 3);
    kill_9(&mut child).await;
    let _ = std::fs::remove_file(paused);
    let _ = std::fs::remove_file(normal);
    shutdown.cancel();
}
