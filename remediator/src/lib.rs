//! The mlwatch remediator: turns alerts into actions on the serving
//! platform, and records every decision.
//!
//! - [`policy`]: which alert calls for which action, and the bounds of a
//!   scale-up (pure).
//! - [`serving`]: the `ServingControl` gRPC client (deadlines, retries on
//!   `UNAVAILABLE` only).
//!
//! One action per alert firing: the action id is derived from the alert id,
//! is sent as the request id of the mutating call (so the platform drops a
//! duplicate), and redelivered alerts are recognised and skipped. Every
//! decision is an `ActionRecord` on `mlwatch.actions.v1` and listed at
//! `GET /v1/actions` on the admin port. When the alert that caused an
//! action resolves, the action is recorded as verified.

pub mod policy;
pub mod serving;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use mlwatch_common::admin::{self, Readiness};
use mlwatch_common::cli::HasLog;
use mlwatch_common::config::AdminConfig;
use mlwatch_common::kafka::{self, DeadLetter, HandleError, Handler, KafkaConfig};
use mlwatch_common::shutdown::CancellationToken;
use mlwatch_common::telemetry::LogConfig;
use mlwatch_proto::v1::{ActionDecision, ActionKind, ActionRecord, Alert, AlertStatus, ScaleRequest};
use prometheus::{IntCounterVec, Opts, Registry};
use prost::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::policy::{Plan, ScaleUpPolicy};
use crate::serving::Serving;

pub const SECTIONS: &[&str] = &["kafka", "admin", "log", "remediator", "serving", "policy"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default = "default_admin")]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub remediator: RemediatorConfig,
    #[serde(default)]
    pub serving: ServingConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
}

fn default_admin() -> AdminConfig {
    AdminConfig::on(SocketAddr::from(([127, 0, 0, 1], 9104)))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            admin: default_admin(),
            log: LogConfig::default(),
            remediator: RemediatorConfig::default(),
            serving: ServingConfig::default(),
            policy: PolicyConfig::default(),
        }
    }
}

impl HasLog for Config {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

/// The `[remediator]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemediatorConfig {
    pub group_id: String,
    /// Plan and record actions without calling the serving platform.
    pub dry_run: bool,
}

impl Default for RemediatorConfig {
    fn default() -> Self {
        Self {
            group_id: "mlwatch-remediator".into(),
            dry_run: false,
        }
    }
}

/// The `[serving]` section: where the `ServingControl` service is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
    /// Deadline of each call, retries included.
    pub timeout_ms: u64,
}

impl Default for ServingConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:50051".into(),
            timeout_ms: 5_000,
        }
    }
}

/// The `[policy]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub scale_up: ScaleUpPolicy,
}

pub use mlwatch_common::ServiceError as Error;

pub struct Running {
    pub admin_addr: SocketAddr,
    pub task: JoinHandle<Result<(), Error>>,
}

const HISTORY: usize = 10_000;

/// Recent action records, for the API.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<VecDeque<ActionRecord>>>);

impl Journal {
    fn push(&self, record: ActionRecord) {
        let mut j = self.0.lock().unwrap_or_else(|p| p.into_inner());
        j.push_back(record);
        while j.len() > HISTORY {
            j.pop_front();
        }
    }

    fn list(&self) -> Vec<ActionRecord> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

struct AlertHandler {
    serving: Serving,
    policy: PolicyConfig,
    dry_run: bool,
    producer: FutureProducer,
    actions_topic: String,
    timeout: Duration,
    handled: HashSet<String>,
    /// Executed actions waiting for their alert to resolve, by fingerprint.
    awaiting: HashMap<String, ActionRecord>,
    journal: Journal,
    decisions: IntCounterVec,
}

fn decision_name(d: ActionDecision) -> &'static str {
    match d {
        ActionDecision::Unspecified => "unspecified",
        ActionDecision::Planned => "planned",
        ActionDecision::Refused => "refused",
        ActionDecision::AwaitingApproval => "awaiting_approval",
        ActionDecision::Approved => "approved",
        ActionDecision::Rejected => "rejected",
        ActionDecision::Executed => "executed",
        ActionDecision::Failed => "failed",
        ActionDecision::Verified => "verified",
        ActionDecision::VerificationFailed => "verification_failed",
    }
}

impl AlertHandler {
    /// Publishes a record and waits for the broker (retrying), then keeps it
    /// in the journal.
    async fn record(&self, record: ActionRecord) -> Result<(), HandleError> {
        let payload = record.encode_to_vec();
        let decision = ActionDecision::try_from(record.decision).unwrap_or_default();
        self.producer
            .send(
                FutureRecord::to(&self.actions_topic)
                    .key(&record.model)
                    .payload(&payload),
                self.timeout,
            )
            .await
            .map_err(|(e, _)| HandleError::Transient(format!("action record not acknowledged: {e}")))?;
        tracing::info!(
            model = %record.model,
            decision = decision_name(decision),
            reason = %record.reason,
            params = ?record.params,
            "action recorded"
        );
        self.decisions.with_label_values(&[decision_name(decision)]).inc();
        self.journal.push(record);
        Ok(())
    }

    fn base_record(
        alert: &Alert,
        action_id: &str,
        kind: ActionKind,
        decision: ActionDecision,
        reason: String,
    ) -> ActionRecord {
        ActionRecord {
            action_id: action_id.to_string(),
            request_id: action_id.to_string(),
            alert_id: alert.id.clone(),
            alert_fingerprint: alert.fingerprint.clone(),
            alert_type: alert.r#type.clone(),
            model: alert.labels.get("model").cloned().unwrap_or_default(),
            model_version: alert.labels.get("model_version").cloned().unwrap_or_default(),
            kind: kind as i32,
            decision: decision as i32,
            reason,
            at_ms: mlwatch_common::now_ms(),
            ..Default::default()
        }
    }

    async fn scale_up(&mut self, alert: &Alert) -> Result<(), HandleError> {
        let action_id = policy::action_id(&alert.id, "scale");
        if self.handled.contains(&action_id) {
            tracing::info!(%action_id, "alert already handled; skipping duplicate");
            return Ok(());
        }
        let model = alert.labels.get("model").cloned().unwrap_or_default();
        if model.is_empty() || model.contains('*') {
            let r = Self::base_record(
                alert,
                &action_id,
                ActionKind::Scale,
                ActionDecision::Refused,
                "refused: empty or wildcard target model".into(),
            );
            self.record(r).await?;
            self.handled.insert(action_id);
            return Ok(());
        }
        let deployment = match self.serving.get_deployment(&model).await {
            Ok(d) => d,
            Err(status)
                if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::DeadlineExceeded =>
            {
                return Err(HandleError::Transient(format!("GetDeployment: {status}")));
            }
            Err(status) => {
                let mut r = Self::base_record(
                    alert,
                    &action_id,
                    ActionKind::Scale,
                    ActionDecision::Failed,
                    "GetDeployment failed".into(),
                );
                r.error = status.to_string();
                self.record(r).await?;
                self.handled.insert(action_id);
                return Ok(());
            }
        };
        let Some(target) = policy::scale_target(&self.policy.scale_up, deployment.replicas, deployment.max_replicas)
        else {
            let r = Self::base_record(
                alert,
                &action_id,
                ActionKind::Scale,
                ActionDecision::Refused,
                format!("refused: already at the replica limit ({})", deployment.replicas),
            );
            self.record(r).await?;
            self.handled.insert(action_id);
            return Ok(());
        };
        let reason = format!(
            "{} fired: scale {} from {} to {} replicas",
            alert.r#type, model, deployment.replicas, target
        );
        let mut planned = Self::base_record(
            alert,
            &action_id,
            ActionKind::Scale,
            ActionDecision::Planned,
            reason.clone(),
        );
        planned.dry_run = self.dry_run;
        planned
            .params
            .insert("from_replicas".into(), deployment.replicas.to_string());
        planned.params.insert("to_replicas".into(), target.to_string());
        self.record(planned.clone()).await?;
        if self.dry_run {
            self.handled.insert(action_id);
            return Ok(());
        }
        let result = self
            .serving
            .scale(ScaleRequest {
                request_id: action_id.clone(),
                model: model.clone(),
                replicas: target,
                reason: reason.clone(),
            })
            .await;
        let mut done = planned;
        done.at_ms = mlwatch_common::now_ms();
        match result {
            Ok(resp) => {
                done.decision = ActionDecision::Executed as i32;
                if let Some(d) = resp.deployment {
                    done.params.insert("replicas_now".into(), d.replicas.to_string());
                }
                done.params.insert("duplicate".into(), resp.duplicate.to_string());
                self.record(done.clone()).await?;
                self.awaiting.insert(alert.fingerprint.clone(), done);
            }
            Err(status) => {
                done.decision = ActionDecision::Failed as i32;
                done.error = status.to_string();
                self.record(done).await?;
            }
        }
        self.handled.insert(action_id);
        Ok(())
    }

    async fn resolved(&mut self, alert: &Alert) -> Result<(), HandleError> {
        let Some(executed) = self.awaiting.get(&alert.fingerprint).cloned() else {
            return Ok(());
        };
        let mut r = executed;
        r.decision = ActionDecision::Verified as i32;
        r.reason = format!("{} resolved after the action", alert.r#type);
        r.at_ms = mlwatch_common::now_ms();
        self.record(r).await?;
        self.awaiting.remove(&alert.fingerprint);
        Ok(())
    }
}

impl Handler for AlertHandler {
    async fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), HandleError> {
        let alert: Alert = kafka::decode(message)?;
        if alert.id.is_empty() {
            return Err(HandleError::Poison("alert without id".into()));
        }
        if alert.status == AlertStatus::Resolved as i32 {
            return self.resolved(&alert).await;
        }
        match policy::plan(&self.policy.scale_up, &alert) {
            Plan::Nothing => Ok(()),
            Plan::ScaleUp => self.scale_up(&alert).await,
        }
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    mlwatch_common::join(start(config, shutdown).await?.task).await
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let registry = Registry::new();
    let decisions = IntCounterVec::new(
        Opts::new("mlwatch_remediator_decisions_total", "Action records by decision"),
        &["decision"],
    )?;
    registry.register(Box::new(decisions.clone()))?;
    let ready = Readiness::default();
    let topics = config.kafka.topics.clone();
    config
        .kafka
        .ensure_topics(&[&topics.alerts, &topics.actions, &topics.deadletter])
        .await?;
    let producer = config.kafka.producer()?;
    let consumer = config.kafka.consumer(&config.remediator.group_id)?;
    consumer.subscribe(&[&topics.alerts])?;
    let deadline = Duration::from_millis(config.serving.timeout_ms);
    let serving =
        Serving::connect_lazy(&config.serving.endpoint, deadline).map_err(|e| Error::config("serving.endpoint", e))?;
    let journal = Journal::default();
    let app = admin::router(registry, ready.clone()).merge(
        Router::new()
            .route("/v1/actions", get(list_actions))
            .with_state(journal.clone()),
    );
    let (admin_addr, admin_task) = admin::serve(config.admin.listen, app, shutdown.clone()).await?;
    let timeout = Duration::from_millis(config.kafka.produce_timeout_ms);
    let mut handler = AlertHandler {
        serving,
        policy: config.policy.clone(),
        dry_run: config.remediator.dry_run,
        producer: producer.clone(),
        actions_topic: topics.actions.clone(),
        timeout,
        handled: HashSet::new(),
        awaiting: HashMap::new(),
        journal,
        decisions,
    };
    let dead_letter = DeadLetter::new(producer, topics.deadletter.clone(), timeout);
    ready.set(true);
    tracing::info!(%admin_addr, dry_run = config.remediator.dry_run, "remediator ready");
    let task = tokio::spawn(async move {
        kafka::consume(&consumer, &dead_letter, &shutdown, &mut handler).await;
        ready.set(false);
        let _ = admin_task.await;
        Ok(())
    });
    Ok(Running { admin_addr, task })
}

async fn list_actions(State(journal): State<Journal>) -> impl IntoResponse {
    let records: Vec<serde_json::Value> = journal
        .list()
        .into_iter()
        .map(|r| {
            serde_json::json!({
                "action_id": r.action_id,
                "request_id": r.request_id,
                "alert_id": r.alert_id,
                "alert_fingerprint": r.alert_fingerprint,
                "alert_type": r.alert_type,
                "model": r.model,
                "model_version": r.model_version,
                "kind": ActionKind::try_from(r.kind).map(|k| k.as_str_name()).unwrap_or("unknown"),
                "decision": decision_name(ActionDecision::try_from(r.decision).unwrap_or_default()),
                "reason": r.reason,
                "dry_run": r.dry_run,
                "params": r.params,
                "at_ms": r.at_ms,
                "error": r.error,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "actions": records }))
}
