//! The engine: where alerts, approvals and the clock meet the policy, the
//! guards and the ledger, and where actions are carried out (I/O: the
//! serving platform, the retraining webhook, the actions and alerts
//! topics).
//!
//! All decisions go through one async lock, so the guards always see every
//! earlier decision. A record is applied to the ledger only after the
//! broker acknowledged it: what the ledger says is what a restarted
//! remediator will rebuild.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mlwatch_proto::v1::{
    ActionDecision, ActionKind, ActionRecord, Alert, RollbackRequest, ScaleRequest, SetTrafficRequest,
};
use prometheus::{IntCounterVec, IntGauge, Opts};
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::guards::{GuardConfig, Refusal};
pub use crate::ledger::decision_name;
use crate::ledger::{self, Entry, Ledger, NextStep};
use crate::plan::{self, Effect, Outcome, Plan, Platform, next_record};
pub use crate::plan::{PlanPreview, remediation_failed_alert};
use crate::policy::{Rule, Target, kind_name};
use crate::serving::{self, Serving};

/// The crate's error: what went wrong handling an alert or an API call.
#[derive(Debug, thiserror::Error)]
pub enum RemediatorError {
    #[error("action {0} not found")]
    NotFound(String),
    #[error("action {id} is {state}: {why}")]
    Conflict { id: String, state: String, why: String },
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("record not acknowledged by the broker: {0}")]
    Publish(String),
    #[error("serving platform unavailable: {0}")]
    Unavailable(String),
}

impl RemediatorError {
    /// The one HTTP status of each error.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Conflict { .. } | Self::Refused(_) => 409,
            Self::BadRequest(_) => 400,
            Self::Publish(_) | Self::Unavailable(_) => 503,
        }
    }

    /// Whether trying again later can help.
    pub fn retry_hint(&self) -> mlwatch_common::RetryHint {
        match self {
            Self::Publish(_) | Self::Unavailable(_) => mlwatch_common::RetryHint::Retry,
            _ => mlwatch_common::RetryHint::DoNotRetry,
        }
    }
}

/// The `[retrain]` section: the retraining webhook.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RetrainConfig {
    /// URL that receives a JSON POST per retraining request (a secret:
    /// never logged nor shown by the API). Unset: retrain actions are
    /// refused.
    pub webhook_url: Option<String>,
}

impl std::fmt::Debug for RetrainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is a secret: never printed.
        f.debug_struct("RetrainConfig")
            .field("webhook_url", &self.webhook_url.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What the engine needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rules: Vec<Rule>,
    pub guards: GuardConfig,
    pub dry_run: bool,
    pub verify_window_ms: i64,
    pub max_attempts: u32,
    pub retrain: RetrainConfig,
    pub retrain_timeout: Duration,
    pub pause_after_planned: Duration,
    pub pause_after_call: Duration,
}

/// Where records and alerts go.
pub struct Sink {
    pub producer: FutureProducer,
    pub actions_topic: String,
    pub alerts_topic: String,
    pub timeout: Duration,
}

struct Retry {
    attempts: u32,
    next_ms: i64,
}

pub struct Core {
    settings: Settings,
    ledger: Ledger,
    kill_switch: bool,
    serving: Serving,
    http: reqwest::Client,
    sink: Sink,
    retries: HashMap<String, Retry>,
    metrics: Metrics,
}

/// The remediator's own metrics, registered on the registry passed in.
#[derive(Clone)]
pub struct Metrics {
    /// Action records by decision and kind.
    pub decisions: IntCounterVec,
    /// 1 while the kill switch is engaged.
    pub kill_switch: IntGauge,
}

impl Metrics {
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "mlwatch_remediator_decisions_total",
                "Action records by decision and kind",
            ),
            &["decision", "kind"],
        )?;
        let kill_switch = IntGauge::new("mlwatch_remediator_kill_switch", "1 while the kill switch is engaged")?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(kill_switch.clone()))?;
        Ok(Self { decisions, kill_switch })
    }
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Mutex<Core>>);

/// An action record as JSON for the API.
pub fn record_json(r: &ActionRecord) -> serde_json::Value {
    let params: BTreeMap<&String, &String> = r.params.iter().collect();
    serde_json::json!({
        "action_id": r.action_id,
        "request_id": r.request_id,
        "alert_id": r.alert_id,
        "alert_fingerprint": r.alert_fingerprint,
        "alert_type": r.alert_type,
        "model": r.model,
        "model_version": r.model_version,
        "kind": kind_name(ActionKind::try_from(r.kind).unwrap_or_default()),
        "decision": decision_name(ActionDecision::try_from(r.decision).unwrap_or_default()),
        "reason": r.reason,
        "dry_run": r.dry_run,
        "params": params,
        "at_ms": r.at_ms,
        "error": r.error,
    })
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "action_id": e.last().action_id,
        "state": decision_name(e.decision()),
        "records": e.records.iter().map(record_json).collect::<Vec<_>>(),
    })
}

/// What a person can decide about an action through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manual {
    Approve,
    Reject,
    /// Carry out an action planned in dry-run mode.
    Execute,
}

impl Manual {
    /// From the last path segment of `/v1/actions/{id}/{verb}`.
    pub fn from_path(verb: &str) -> Option<Self> {
        match verb {
            "approve" => Some(Self::Approve),
            "reject" => Some(Self::Reject),
            "execute" => Some(Self::Execute),
            _ => None,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Reject => "rejected",
            Self::Execute => "executed by hand",
        }
    }

    fn precondition(self) -> &'static str {
        match self {
            Self::Approve | Self::Reject => "only an action awaiting approval can be approved or rejected",
            Self::Execute => "only an action planned in dry-run mode can be executed by hand",
        }
    }
}

impl Engine {
    pub fn new(settings: Settings, ledger: Ledger, serving: Serving, sink: Sink, metrics: Metrics) -> Self {
        // `guards.kill_switch = true` in the configuration engages the switch
        // at every start; otherwise the last setting recorded through the
        // API (replayed from the actions topic) holds.
        let kill_switch = settings.guards.kill_switch || ledger.kill_switch().unwrap_or(false);
        metrics.kill_switch.set(i64::from(kill_switch));
        Self(Arc::new(Mutex::new(Core {
            settings,
            ledger,
            kill_switch,
            serving,
            http: reqwest::Client::new(),
            sink,
            retries: HashMap::new(),
            metrics,
        })))
    }

    pub async fn on_alert(&self, alert: &Alert, now_ms: i64) -> Result<(), RemediatorError> {
        self.0.lock().await.on_alert(alert, now_ms).await
    }

    /// Periodic work: carry out committed actions (after a restart, or
    /// retrying a platform that was away), complete interrupted approval
    /// requests, and fail verifications whose window has passed.
    pub async fn tick(&self, now_ms: i64) -> Result<(), RemediatorError> {
        self.0.lock().await.tick(now_ms).await
    }

    /// Approve, reject or execute by hand; answers the action's state.
    pub async fn manual(
        &self,
        id: &str,
        m: Manual,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<serde_json::Value, RemediatorError> {
        let mut core = self.0.lock().await;
        core.manual(id, m, by, comment, now_ms).await?;
        core.entry_json(id)
    }

    /// What the remediator would do about `alert` now, without acting:
    /// the live path's own plan. A platform that is away answers
    /// [`RemediatorError::Unavailable`], as it holds the live path back.
    pub async fn plan(&self, alert: &Alert, now_ms: i64) -> Result<PlanPreview, RemediatorError> {
        Ok(self.0.lock().await.decide(alert, now_ms).await?.preview())
    }

    pub async fn action(&self, id: &str) -> Result<serde_json::Value, RemediatorError> {
        self.0.lock().await.entry_json(id)
    }

    /// Every record, oldest action first, filtered by model and decision.
    pub async fn records(&self, model: Option<&str>, decision: Option<&str>) -> Vec<serde_json::Value> {
        let core = self.0.lock().await;
        core.ledger
            .entries()
            .flat_map(|e| e.records.iter())
            .filter(|r| model.is_none_or(|m| r.model == m))
            .filter(|r| {
                decision.is_none_or(|d| decision_name(ActionDecision::try_from(r.decision).unwrap_or_default()) == d)
            })
            .map(record_json)
            .collect()
    }

    /// Whether the kill switch is engaged now.
    pub async fn kill_switch(&self) -> bool {
        self.0.lock().await.kill_switch
    }

    /// Engages or releases the kill switch. The change is recorded on the
    /// actions topic first, so it survives a restart; it takes effect only
    /// once the broker acknowledged it.
    pub async fn set_kill_switch(&self, engaged: bool, now_ms: i64) -> Result<(), RemediatorError> {
        let mut core = self.0.lock().await;
        core.record(kill_switch_record(engaged, "set through the API", now_ms))
            .await?;
        if core.kill_switch != engaged {
            tracing::warn!(engaged, "kill switch changed through the API");
        }
        core.kill_switch = engaged;
        core.metrics.kill_switch.set(i64::from(engaged));
        Ok(())
    }

    /// Guard state for the API.
    pub async fn guard_state(&self, now_ms: i64) -> serde_json::Value {
        let core = self.0.lock().await;
        guard_state(&core.settings, core.kill_switch, &core.ledger, now_ms)
    }
}

/// A kill-switch record for the actions topic.
fn kill_switch_record(engaged: bool, reason: &str, now_ms: i64) -> ActionRecord {
    ActionRecord {
        action_id: format!("kill-switch-{now_ms}"),
        kind: ActionKind::KillSwitch as i32,
        decision: ActionDecision::Executed as i32,
        reason: reason.into(),
        params: [(ledger::ENGAGED.to_string(), engaged.to_string())].into(),
        at_ms: now_ms,
        ..Default::default()
    }
}

/// Kill switch, dry-run, cooldowns running, budgets used and pending
/// approvals at `now_ms`, as the API shows them.
fn guard_state(settings: &Settings, kill_switch: bool, ledger: &Ledger, now_ms: i64) -> serde_json::Value {
    let g = &settings.guards;
    let mut per_model: BTreeMap<String, u32> = BTreeMap::new();
    let mut overall = 0u32;
    let mut cooldowns = Vec::new();
    let cooldown_ms = i64::try_from(g.cooldown_secs).unwrap_or(i64::MAX).saturating_mul(1000);
    for e in ledger.entries() {
        let Some(at) = e.committed_at_ms else { continue };
        if e.kind() == ActionKind::Notify {
            continue;
        }
        if now_ms - at < 3_600_000 {
            overall += 1;
            *per_model.entry(e.last().model.clone()).or_default() += 1;
        }
        if now_ms - at < cooldown_ms {
            cooldowns.push(serde_json::json!({
                "model": e.last().model,
                "kind": kind_name(e.kind()),
                "action_id": e.last().action_id,
                "remaining_secs": (cooldown_ms - (now_ms - at)) / 1000,
            }));
        }
    }
    let awaiting: Vec<String> = ledger
        .entries()
        .filter(|e| e.decision() == ActionDecision::AwaitingApproval)
        .map(|e| e.last().action_id.clone())
        .collect();
    serde_json::json!({
        "kill_switch": kill_switch,
        "dry_run": settings.dry_run,
        "require_approval": g.require_approval,
        "cooldown_secs": g.cooldown_secs,
        "cooldowns": cooldowns,
        "budget": {
            "max_actions_per_hour": g.max_actions_per_hour,
            "max_actions_per_hour_per_model": g.max_actions_per_hour_per_model,
            "used_last_hour": overall,
            "used_last_hour_per_model": per_model,
        },
        "replicas": {"min": g.min_replicas, "max": g.max_replicas},
        "awaiting_approval": awaiting,
    })
}

/// How long to wait before the next attempt at an action call, after
/// `attempts` failed ones: 2, 4, 8 … s, at most about 17 minutes.
fn retry_backoff_ms(attempts: u32) -> i64 {
    1000i64 << attempts.min(10)
}

enum Called {
    Done(HashMap<String, String>),
    Transient(String),
    Failed(String),
}

impl Core {
    async fn record(&mut self, record: ActionRecord) -> Result<(), RemediatorError> {
        let payload = record.encode_to_vec();
        let decision = ActionDecision::try_from(record.decision).unwrap_or_default();
        self.sink
            .producer
            .send(
                FutureRecord::to(&self.sink.actions_topic)
                    .key(&record.model)
                    .payload(&payload),
                self.sink.timeout,
            )
            .await
            .map_err(|(e, _)| RemediatorError::Publish(e.to_string()))?;
        tracing::info!(
            action_id = %record.action_id,
            model = %record.model,
            kind = kind_name(ActionKind::try_from(record.kind).unwrap_or_default()),
            decision = decision_name(decision),
            reason = %record.reason,
            "action recorded"
        );
        self.metrics
            .decisions
            .with_label_values(&[
                decision_name(decision),
                kind_name(ActionKind::try_from(record.kind).unwrap_or_default()),
            ])
            .inc();
        self.ledger.apply(record);
        Ok(())
    }

    fn entry_json(&self, id: &str) -> Result<serde_json::Value, RemediatorError> {
        self.ledger
            .get(id)
            .map(entry_json)
            .ok_or_else(|| RemediatorError::NotFound(id.to_string()))
    }

    fn last(&self, id: &str) -> Result<ActionRecord, RemediatorError> {
        self.ledger
            .get(id)
            .map(|e| e.last().clone())
            .ok_or_else(|| RemediatorError::NotFound(id.to_string()))
    }

    /// What the plan is made from, besides the alert and the deployment.
    fn context(&self) -> plan::Context<'_> {
        plan::Context {
            rules: &self.settings.rules,
            guards: &self.settings.guards,
            kill_switch: self.kill_switch,
            dry_run: self.settings.dry_run,
            retrain_webhook: self.settings.retrain.webhook_url.is_some(),
            ledger: &self.ledger,
        }
    }

    /// The plan for `alert` at `now_ms`, reading the model's deployment
    /// first when the plan needs it. The one decision of both the live
    /// path and the preview. A transient failure to read the deployment is
    /// an error (the alert is tried again), never a decision.
    async fn decide(&self, alert: &Alert, now_ms: i64) -> Result<Plan, RemediatorError> {
        let first = plan::plan(&self.context(), alert, Platform::Unread, now_ms);
        let Plan::ReadDeployment { model } = &first else {
            return Ok(first);
        };
        let plan = match self.serving.get_deployment(model).await {
            Ok(d) => plan::plan(&self.context(), alert, Platform::Read(&d), now_ms),
            Err(status) if serving::is_transient(&status) => {
                return Err(RemediatorError::Unavailable(format!("GetDeployment {model}: {status}")));
            }
            Err(status) => plan::plan(
                &self.context(),
                alert,
                Platform::Unreadable(&status.to_string()),
                now_ms,
            ),
        };
        Ok(plan)
    }

    /// Decides, then does: records the plan's first record, then carries
    /// the action as far as the plan says.
    async fn on_alert(&mut self, alert: &Alert, now_ms: i64) -> Result<(), RemediatorError> {
        match self.decide(alert, now_ms).await? {
            Plan::Nothing(why) => {
                if why == plan::Nothing::Stale {
                    tracing::warn!(alert_id = %alert.id, alert_type = %alert.r#type, "stale firing alert ignored");
                } else {
                    tracing::debug!(alert_id = %alert.id, alert_type = %alert.r#type, reason = why.reason(), "no action");
                }
                Ok(())
            }
            Plan::Resolved(effects) => self.publish(effects).await,
            Plan::Resume { action_id, step, .. } => {
                // A redelivered or duplicated alert: finish what a crash may
                // have interrupted, never start a second action.
                tracing::info!(%action_id, ?step, "alert already decided; not acting again");
                match step {
                    NextStep::Execute => self.execute(&action_id, now_ms).await,
                    NextStep::AskApproval => self.ask_approval(&action_id, now_ms).await,
                    NextStep::None | NextStep::Verify => Ok(()),
                }
            }
            Plan::ReadDeployment { model } => {
                // `decide` reads it; a plan with the deployment never asks again.
                Err(RemediatorError::Unavailable(format!("deployment of {model} not read")))
            }
            Plan::Decided(d) => {
                let plan::Decided { record, outcome, .. } = *d;
                let id = record.action_id.clone();
                self.record(record).await?;
                match outcome {
                    Outcome::Notified | Outcome::Refused | Outcome::Failed | Outcome::DryRun => Ok(()),
                    Outcome::AwaitApproval => self.ask_approval(&id, now_ms).await,
                    Outcome::Execute => {
                        if !self.settings.pause_after_planned.is_zero() {
                            tracing::warn!(action_id = %id, pause = ?self.settings.pause_after_planned, "test pause after PLANNED");
                            tokio::time::sleep(self.settings.pause_after_planned).await;
                        }
                        self.execute(&id, now_ms).await
                    }
                }
            }
        }
    }

    /// Publishes what a plan produced, in order.
    async fn publish(&mut self, effects: Vec<Effect>) -> Result<(), RemediatorError> {
        for effect in effects {
            match effect {
                Effect::Record(r) => self.record(r).await?,
                Effect::Alert(a) => self.publish_alert(&a).await?,
            }
        }
        Ok(())
    }

    async fn ask_approval(&mut self, id: &str, now_ms: i64) -> Result<(), RemediatorError> {
        let last = self.last(id)?;
        let r = next_record(
            &last,
            ActionDecision::AwaitingApproval,
            format!(
                "{} needs approval: POST /v1/actions/{id}/approve or /reject",
                kind_name(ActionKind::try_from(last.kind).unwrap_or_default())
            ),
            now_ms,
        );
        self.record(r).await
    }

    /// Carries out a committed action. A platform that is away is retried
    /// by [`Core::tick`] with backoff, up to `max_attempts`.
    async fn execute(&mut self, id: &str, now_ms: i64) -> Result<(), RemediatorError> {
        let Some(entry) = self.ledger.get(id) else {
            return Err(RemediatorError::NotFound(id.to_string()));
        };
        let last = entry.last().clone();
        let planned = entry.planned().cloned().unwrap_or_else(|| last.clone());
        if self.kill_switch {
            let r = next_record(
                &last,
                ActionDecision::Refused,
                format!("refused: {}", Refusal::KillSwitch),
                now_ms,
            );
            return self.record(r).await;
        }
        let kind = ActionKind::try_from(planned.kind).unwrap_or_default();
        let Some(target) = Target::from_params(kind, &planned.params) else {
            let mut r = next_record(
                &last,
                ActionDecision::Failed,
                "planned record has no usable target".into(),
                now_ms,
            );
            r.error = format!("params {:?}", planned.params);
            return self.record(r).await;
        };
        let called = self.call(&planned, &target).await;
        if !self.settings.pause_after_call.is_zero() {
            tracing::warn!(action_id = %id, pause = ?self.settings.pause_after_call, "test pause after the call");
            tokio::time::sleep(self.settings.pause_after_call).await;
        }
        match called {
            Called::Done(outcome) => {
                self.retries.remove(id);
                let mut r = next_record(
                    &last,
                    ActionDecision::Executed,
                    format!("done: {}", target.describe()),
                    now_ms,
                );
                r.params = planned.params.clone();
                r.params.extend(outcome);
                self.record(r).await
            }
            Called::Transient(error) => {
                let retry = self.retries.entry(id.to_string()).or_insert(Retry {
                    attempts: 0,
                    next_ms: now_ms,
                });
                retry.attempts += 1;
                let attempts = retry.attempts;
                if attempts >= self.settings.max_attempts {
                    self.retries.remove(id);
                    let mut r = next_record(
                        &last,
                        ActionDecision::Failed,
                        format!("gave up after {attempts} attempts: {}", target.describe()),
                        now_ms,
                    );
                    r.error = error;
                    return self.record(r).await;
                }
                let backoff = retry_backoff_ms(attempts);
                retry.next_ms = now_ms + backoff;
                tracing::warn!(action_id = %id, attempts, %error, backoff_ms = backoff, "action call failed, will retry");
                Ok(())
            }
            Called::Failed(error) => {
                self.retries.remove(id);
                let mut r = next_record(
                    &last,
                    ActionDecision::Failed,
                    format!("failed: {}", target.describe()),
                    now_ms,
                );
                r.error = error;
                self.record(r).await
            }
        }
    }

    async fn call(&self, planned: &ActionRecord, target: &Target) -> Called {
        let request_id = planned.request_id.clone();
        let model = planned.model.clone();
        let reason = planned.reason.clone();
        let status = |s: tonic::Status| {
            if serving::is_transient(&s) {
                Called::Transient(s.to_string())
            } else {
                Called::Failed(s.to_string())
            }
        };
        let deployment_params = |d: Option<mlwatch_proto::v1::Deployment>, duplicate: bool| {
            let mut p = HashMap::new();
            p.insert("duplicate".to_string(), duplicate.to_string());
            if let Some(d) = d {
                p.insert("replicas_now".into(), d.replicas.to_string());
                p.insert("active_version_now".into(), d.active_version);
            }
            Called::Done(p)
        };
        match target {
            Target::Replicas { to, .. } => match self
                .serving
                .scale(ScaleRequest {
                    request_id,
                    model,
                    replicas: *to,
                    reason,
                })
                .await
            {
                Ok(r) => deployment_params(r.deployment, r.duplicate),
                Err(s) => status(s),
            },
            Target::Version { to, .. } => match self
                .serving
                .rollback(RollbackRequest {
                    request_id,
                    model,
                    to_version: to.clone(),
                    reason,
                })
                .await
            {
                Ok(r) => deployment_params(r.deployment, r.duplicate),
                Err(s) => status(s),
            },
            Target::Traffic { split } => match self
                .serving
                .set_traffic(SetTrafficRequest {
                    request_id,
                    model,
                    traffic_percent: split.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                    reason,
                })
                .await
            {
                Ok(r) => deployment_params(r.deployment, r.duplicate),
                Err(s) => status(s),
            },
            Target::Webhook => self.call_webhook(planned).await,
            Target::Notify => Called::Done(HashMap::new()),
        }
    }

    async fn call_webhook(&self, planned: &ActionRecord) -> Called {
        let Some(url) = self.settings.retrain.webhook_url.as_deref() else {
            return Called::Failed("no retraining webhook configured".into());
        };
        let body = serde_json::json!({
            "request_id": planned.request_id,
            "model": planned.model,
            "model_version": planned.model_version,
            "alert_type": planned.alert_type,
            "alert_id": planned.alert_id,
            "alert_fingerprint": planned.alert_fingerprint,
            "reason": planned.reason,
        });
        let sent = self
            .http
            .post(url)
            .header("idempotency-key", &planned.request_id)
            .timeout(self.settings.retrain_timeout)
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let mut p = HashMap::new();
                p.insert("webhook_status".into(), r.status().as_u16().to_string());
                Called::Done(p)
            }
            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                Called::Transient(format!("retraining webhook answered {}", r.status()))
            }
            Ok(r) => Called::Failed(format!("retraining webhook answered {}", r.status())),
            // The URL is a secret: keep it out of the error text.
            Err(e) => Called::Transient(format!("retraining webhook unreachable: {}", e.without_url())),
        }
    }

    async fn publish_alert(&self, alert: &Alert) -> Result<(), RemediatorError> {
        self.sink
            .producer
            .send(
                FutureRecord::to(&self.sink.alerts_topic)
                    .key(&alert.fingerprint)
                    .payload(&alert.encode_to_vec()),
                self.sink.timeout,
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| RemediatorError::Publish(e.to_string()))
    }

    async fn tick(&mut self, now_ms: i64) -> Result<(), RemediatorError> {
        let republish_ms = (self.settings.guards.kill_switch_republish_secs as i64).saturating_mul(1000);
        if let Some(since) = self.ledger.kill_switch_engaged_since()
            && now_ms - since >= republish_ms
        {
            tracing::info!(
                since,
                "recording the engaged kill switch again, within the actions topic's retention"
            );
            self.record(kill_switch_record(
                true,
                "re-published while engaged, so it stays within the actions topic's retention",
                now_ms,
            ))
            .await?;
        }
        for id in self.ledger.with_next_step(NextStep::AskApproval) {
            self.ask_approval(&id, now_ms).await?;
        }
        for id in self.ledger.with_next_step(NextStep::Execute) {
            let due = self.retries.get(&id).is_none_or(|r| r.next_ms <= now_ms);
            if due {
                tracing::info!(action_id = %id, "carrying out a committed action");
                self.execute(&id, now_ms).await?;
            }
        }
        let effects = plan::overdue(&self.ledger, now_ms, self.settings.verify_window_ms);
        self.publish(effects).await?;
        self.ledger.prune(now_ms - self.settings.guards.memory_ms());
        Ok(())
    }

    fn conflict(&self, last: &ActionRecord, why: &str) -> RemediatorError {
        RemediatorError::Conflict {
            id: last.action_id.clone(),
            state: decision_name(ActionDecision::try_from(last.decision).unwrap_or_default()).to_string(),
            why: why.to_string(),
        }
    }

    /// A person's decision on an action: approve or reject one awaiting
    /// approval, or execute one planned in dry-run mode. Approving and
    /// executing check every guard again (dry-run aside).
    async fn manual(
        &mut self,
        id: &str,
        m: Manual,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<(), RemediatorError> {
        let last = self.last(id)?;
        let allowed = match m {
            Manual::Approve | Manual::Reject => last.decision == ActionDecision::AwaitingApproval as i32,
            Manual::Execute => last.decision == ActionDecision::Planned as i32 && last.dry_run,
        };
        if !allowed {
            return Err(self.conflict(&last, m.precondition()));
        }
        if m == Manual::Reject {
            let r = next_record(&last, ActionDecision::Rejected, who(m.verb(), by, comment), now_ms);
            return self.record(r).await;
        }
        if let Err(refusal) = plan::recheck(&self.context(), &last, now_ms) {
            let reason = format!("{} but refused: {refusal}", who(m.verb(), by, comment));
            self.record(next_record(&last, ActionDecision::Refused, reason, now_ms))
                .await?;
            return Err(refusal.into());
        }
        // Executing a dry-run plan by hand is its approval too.
        let mut r = next_record(&last, ActionDecision::Approved, who(m.verb(), by, comment), now_ms);
        r.dry_run = false;
        self.record(r).await?;
        self.execute(id, now_ms).await
    }
}

fn who(what: &str, by: &str, comment: &str) -> String {
    let by = if by.trim().is_empty() { "anonymous" } else { by.trim() };
    if comment.trim().is_empty() {
        format!("{what} by {by}")
    } else {
        format!("{what} by {by}: {}", comment.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::base_record;

    fn settings() -> Settings {
        Settings {
            rules: crate::policy::default_rules(),
            guards: GuardConfig::default(),
            dry_run: false,
            verify_window_ms: 300_000,
            max_attempts: 5,
            retrain: RetrainConfig::default(),
            retrain_timeout: Duration::from_secs(1),
            pause_after_planned: Duration::ZERO,
            pause_after_call: Duration::ZERO,
        }
    }

    fn record(id: &str, model: &str, kind: ActionKind, decision: ActionDecision, at_ms: i64) -> ActionRecord {
        let alert = Alert {
            id: format!("alert-{id}"),
            labels: [("model".to_string(), model.to_string())].into(),
            ..Default::default()
        };
        base_record(&alert, id, kind, decision, "why".into(), at_ms)
    }

    #[test]
    fn errors_map_to_one_status_and_retry_hint() {
        let cases = [
            (RemediatorError::NotFound("x".into()), 404, false),
            (RemediatorError::Refused(Refusal::KillSwitch), 409, false),
            (RemediatorError::BadRequest("x".into()), 400, false),
            (RemediatorError::Publish("x".into()), 503, true),
            (RemediatorError::Unavailable("x".into()), 503, true),
        ];
        for (e, status, retry) in cases {
            assert_eq!(e.http_status(), status, "{e}");
            assert_eq!(e.retry_hint() == mlwatch_common::RetryHint::Retry, retry, "{e}");
        }
        assert_eq!(
            RemediatorError::Refused(Refusal::KillSwitch).to_string(),
            "refused: kill switch engaged"
        );
    }

    #[test]
    fn manual_verbs_and_who() {
        assert_eq!(Manual::from_path("approve"), Some(Manual::Approve));
        assert_eq!(Manual::from_path("reject"), Some(Manual::Reject));
        assert_eq!(Manual::from_path("execute"), Some(Manual::Execute));
        assert_eq!(Manual::from_path("delete"), None);
        assert_eq!(
            who(Manual::Approve.verb(), "alice", " v3 is bad "),
            "approved by alice: v3 is bad"
        );
        assert_eq!(who(Manual::Execute.verb(), " ", ""), "executed by hand by anonymous");
        assert!(Manual::Execute.precondition().contains("dry-run"));
    }

    #[test]
    fn records_as_json() {
        let mut r = record("a", "fraud", ActionKind::Rollback, ActionDecision::AwaitingApproval, 7);
        r.params.insert("to_version".into(), "v2".into());
        let j = record_json(&r);
        assert_eq!(j["kind"], "rollback");
        assert_eq!(j["decision"], "awaiting_approval");
        assert_eq!(j["params"]["to_version"], "v2");
        assert_eq!(j["model"], "fraud");
        let mut l = Ledger::default();
        l.apply(r);
        let e = entry_json(l.get("a").unwrap());
        assert_eq!(e["state"], "awaiting_approval");
        assert_eq!(e["records"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn guard_state_counts_committed_actions_only() {
        let s = settings();
        let mut l = Ledger::default();
        l.apply(record("a", "fraud", ActionKind::Scale, ActionDecision::Planned, 0));
        l.apply(record("n", "fraud", ActionKind::Notify, ActionDecision::Executed, 0));
        let mut dry = record("d", "recsys", ActionKind::Scale, ActionDecision::Planned, 0);
        dry.dry_run = true;
        l.apply(dry);
        let mut waiting = record("w", "recsys", ActionKind::Rollback, ActionDecision::Planned, 0);
        waiting.params.insert(ledger::APPROVAL_REQUIRED.into(), "true".into());
        l.apply(waiting.clone());
        l.apply(plan::next_record(
            &waiting,
            ActionDecision::AwaitingApproval,
            "ask".into(),
            1,
        ));
        let g = guard_state(&s, true, &l, 60_000);
        assert_eq!(g["kill_switch"], true);
        assert_eq!(g["budget"]["used_last_hour"], 1);
        assert_eq!(g["budget"]["used_last_hour_per_model"]["fraud"], 1);
        assert_eq!(g["cooldowns"][0]["remaining_secs"], 540);
        assert_eq!(g["awaiting_approval"][0], "w");
        let later = guard_state(&s, false, &l, 3_600_000);
        assert_eq!(later["budget"]["used_last_hour"], 0);
        assert_eq!(later["cooldowns"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn retries_back_off_and_stop_growing() {
        assert_eq!(retry_backoff_ms(1), 2_000);
        assert_eq!(retry_backoff_ms(2), 4_000);
        assert_eq!(retry_backoff_ms(10), retry_backoff_ms(40));
    }
}
