//! Planning (pure): what the remediator does about one alert, decided from
//! the alert, the policy, the guards, the ledger and, when the action
//! needs it, the model's deployment; `now_ms` is passed in.
//!
//! [`plan`] does no I/O. When the decision needs the deployment and the
//! caller has not read it yet, the plan says so ([`Plan::ReadDeployment`]);
//! the caller reads it and plans again with it. The live path
//! (`Engine::on_alert`) carries out the [`Plan`] (records, platform and
//! webhook calls); the preview (`POST /v1/plan`) only describes it
//! ([`Plan::preview`]). Both take the plan from here, so they cannot
//! disagree.

use std::collections::{BTreeMap, HashMap};

use mlwatch_proto::v1::{ActionDecision, ActionKind, ActionRecord, Alert, AlertStatus, Deployment, Severity};
use serde::Serialize;

use crate::guards::{self, GuardConfig, Proposal, Refusal};
use crate::ledger::{APPROVAL_REQUIRED, Ledger, NextStep, decision_name};
use crate::policy::{self, REMEDIATION_FAILED, Rule, Target, kind_name};

/// Everything a decision depends on besides the alert and the deployment.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The policy, in order.
    pub rules: &'a [Rule],
    /// Cooldowns, budgets, bounds, approval requirements.
    pub guards: &'a GuardConfig,
    /// The live kill switch (configuration or API).
    pub kill_switch: bool,
    /// Plan and record only.
    pub dry_run: bool,
    /// Whether a retraining webhook is configured.
    pub retrain_webhook: bool,
    /// Every action known, with its records.
    pub ledger: &'a Ledger,
}

/// What the caller knows of the model's deployment.
#[derive(Debug, Clone, Copy)]
pub enum Platform<'a> {
    /// Not read: a plan that needs it asks for it.
    Unread,
    /// As `GetDeployment` answered.
    Read(&'a Deployment),
    /// `GetDeployment` failed for good, with this status. (A transient
    /// failure is the caller's to retry; it never reaches the plan.)
    Unreadable(&'a str),
}

/// Why an alert calls for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nothing {
    /// Raised by the remediator itself (`RemediationFailed`).
    Own,
    /// No rule matches.
    NoRule,
    /// A firing older than the ledger remembers: it may have been acted on
    /// long ago, so it is never acted on now.
    Stale,
}

impl Nothing {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Own => "the remediator raised this alert itself",
            Self::NoRule => "no rule matches this alert",
            Self::Stale => "a firing older than the ledger remembers is never acted on",
        }
    }
}

/// One thing to publish, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// An action record on the actions topic.
    Record(ActionRecord),
    /// An alert on the alerts topic (`RemediationFailed`, firing or
    /// resolved).
    Alert(Alert),
}

/// How a new action's first record ends its planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Notify only: recorded `EXECUTED`; nothing is touched, so no guard
    /// applies.
    Notified,
    /// Recorded `REFUSED`: a guard, the target arithmetic, or a missing
    /// webhook.
    Refused,
    /// The deployment could not be read: recorded `FAILED`.
    Failed,
    /// Recorded `PLANNED` with `dry_run`: stops there until a person
    /// executes it.
    DryRun,
    /// Recorded `PLANNED`; waits for a person's approval.
    AwaitApproval,
    /// Recorded `PLANNED`; carried out at once.
    Execute,
}

impl Outcome {
    /// The outcome's name in the preview.
    pub fn name(self) -> &'static str {
        match self {
            Self::Notified => "notify",
            Self::Refused => "refuse",
            Self::Failed => "fail",
            Self::DryRun => "dry_run",
            Self::AwaitApproval => "await_approval",
            Self::Execute => "execute",
        }
    }
}

/// A new action, decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub rule: String,
    pub kind: ActionKind,
    /// What the action changes, once known.
    pub target: Option<Target>,
    pub outcome: Outcome,
    /// Its first record; the executor publishes it before anything else.
    pub record: ActionRecord,
}

/// What to do about an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing at all.
    Nothing(Nothing),
    /// A resolved alert: what becomes of the actions taken for it. Never
    /// a new action.
    Resolved(Vec<Effect>),
    /// This firing was decided before (a redelivery or a duplicate):
    /// finish what a crash may have interrupted (`step`), never start a
    /// second action.
    Resume {
        rule: String,
        kind: ActionKind,
        action_id: String,
        state: ActionDecision,
        step: NextStep,
    },
    /// The decision needs the deployment of `model`: read it, then plan
    /// again with it.
    ReadDeployment { model: String },
    /// A new action.
    Decided(Box<Decided>),
}

/// Decides what to do about `alert` at `now_ms`.
pub fn plan(ctx: &Context<'_>, alert: &Alert, platform: Platform<'_>, now_ms: i64) -> Plan {
    if policy::is_own(alert) {
        return Plan::Nothing(Nothing::Own);
    }
    if alert.status == AlertStatus::Resolved as i32 {
        return Plan::Resolved(resolved(ctx.ledger, alert, now_ms));
    }
    let Some(rule) = policy::select(ctx.rules, alert) else {
        return Plan::Nothing(Nothing::NoRule);
    };
    let kind = rule.action.kind();
    let id = policy::action_id(&alert.id, kind_name(kind));
    if let Some(e) = ctx.ledger.get(&id) {
        return Plan::Resume {
            rule: rule.name.clone(),
            kind,
            action_id: id,
            state: e.decision(),
            step: e.next_step(),
        };
    }
    if policy::is_stale(alert, now_ms, ctx.guards.memory_ms()) {
        return Plan::Nothing(Nothing::Stale);
    }
    let decided = |outcome: Outcome, target: Option<Target>, record: ActionRecord| {
        Plan::Decided(Box::new(Decided {
            rule: rule.name.clone(),
            kind,
            target,
            outcome,
            record,
        }))
    };
    let refuse = |why: &dyn std::fmt::Display| {
        let reason = format!("{}: refused: {why}", rule.name);
        let record = base_record(alert, &id, kind, ActionDecision::Refused, reason, now_ms);
        decided(Outcome::Refused, None, record)
    };
    if kind == ActionKind::Notify {
        let reason = format!(
            "{}: {} fired: notify only (people are paged by the alerter)",
            rule.name, alert.r#type
        );
        let record = base_record(alert, &id, kind, ActionDecision::Executed, reason, now_ms);
        return decided(Outcome::Notified, Some(Target::Notify), record);
    }
    let model = alert.labels.get("model").cloned().unwrap_or_default();
    let pre = Proposal {
        action_id: &id,
        model: &model,
        kind,
        alert_fingerprint: &alert.fingerprint,
        to_replicas: None,
    };
    if let Err(refusal) = guards::check(ctx.guards, ctx.kill_switch, ctx.ledger, &pre, now_ms) {
        return refuse(&refusal);
    }
    if kind == ActionKind::Retrain && !ctx.retrain_webhook {
        return refuse(&"no retraining webhook configured");
    }
    let (target, active_version) = if kind == ActionKind::Retrain {
        (Target::Webhook, None)
    } else {
        match platform {
            Platform::Unread => return Plan::ReadDeployment { model },
            Platform::Unreadable(status) => {
                let reason = format!("{}: cannot read the deployment of {model}", rule.name);
                let mut record = base_record(alert, &id, kind, ActionDecision::Failed, reason, now_ms);
                record.error = status.to_string();
                return decided(Outcome::Failed, None, record);
            }
            Platform::Read(d) => {
                match policy::target(&policy::for_alert(&rule.action, alert), d, ctx.guards.max_replicas) {
                    Ok(t) => (t, Some(d.active_version.clone())),
                    Err(e) => return refuse(&e),
                }
            }
        }
    };
    let to_replicas = match &target {
        Target::Replicas { to, .. } => Some(*to),
        _ => None,
    };
    let full = Proposal { to_replicas, ..pre };
    if let Err(refusal) = guards::check(ctx.guards, ctx.kill_switch, ctx.ledger, &full, now_ms) {
        return refuse(&refusal);
    }
    let approval = ctx.guards.needs_approval(kind);
    let reason = format!("{}: {} fired: {}", rule.name, alert.r#type, target.describe());
    let mut planned = base_record(alert, &id, kind, ActionDecision::Planned, reason, now_ms);
    planned.dry_run = ctx.dry_run;
    planned.params = target.to_params();
    planned.params.insert("rule".into(), rule.name.clone());
    planned
        .params
        .insert("alert_starts_at_ms".into(), alert.starts_at_ms.to_string());
    if let Some(v) = active_version
        && planned.model_version.is_empty()
    {
        planned.model_version = v;
    }
    if approval {
        planned.params.insert(APPROVAL_REQUIRED.into(), "true".into());
    }
    let outcome = if ctx.dry_run {
        Outcome::DryRun
    } else if approval {
        Outcome::AwaitApproval
    } else {
        Outcome::Execute
    };
    decided(outcome, Some(target), planned)
}

/// What a resolved alert does to the actions taken for its firings: an
/// executed action is `VERIFIED`; a request for approval lapses
/// (`REJECTED`: an approval now would act on a healthy model); a
/// `RemediationFailed` raised for this firing is resolved.
fn resolved(ledger: &Ledger, alert: &Alert, now_ms: i64) -> Vec<Effect> {
    let starts_at = alert.starts_at_ms.to_string();
    let mut effects = Vec::new();
    for e in ledger.entries() {
        let last = e.last();
        if last.alert_fingerprint != alert.fingerprint {
            continue;
        }
        match e.decision() {
            ActionDecision::AwaitingApproval => effects.push(Effect::Record(next_record(
                last,
                ActionDecision::Rejected,
                format!("{} resolved before approval: not needed any more", alert.r#type),
                now_ms,
            ))),
            ActionDecision::VerificationFailed
                if e.planned().and_then(|p| p.params.get("alert_starts_at_ms")) == Some(&starts_at) =>
            {
                effects.extend(remediation_failed_alert(last, AlertStatus::Resolved, now_ms).map(Effect::Alert));
            }
            _ if e.next_step() == NextStep::Verify => {
                let after_secs = (now_ms - last.at_ms).max(0) / 1000;
                effects.push(Effect::Record(next_record(
                    last,
                    ActionDecision::Verified,
                    format!("{} resolved {after_secs} s after the action", alert.r#type),
                    now_ms,
                )));
            }
            _ => {}
        }
    }
    effects
}

/// Executed actions whose alert has not resolved within `window_ms`:
/// each raises `RemediationFailed`, then is recorded `VERIFICATION_FAILED`.
pub fn overdue(ledger: &Ledger, now_ms: i64, window_ms: i64) -> Vec<Effect> {
    let mut effects = Vec::new();
    for (id, executed) in ledger.overdue_verifications(now_ms, window_ms) {
        let Some(e) = ledger.get(&id) else { continue };
        let last = e.last();
        let mut r = next_record(
            last,
            ActionDecision::VerificationFailed,
            format!(
                "{} still firing {} s after the action; not repeating it, raising {REMEDIATION_FAILED}",
                last.alert_type,
                window_ms / 1000
            ),
            now_ms,
        );
        // Deterministic start, so a repeat after a crash has the same id.
        r.params.insert(
            "remediation_failed_starts_at_ms".into(),
            (executed + window_ms).to_string(),
        );
        effects.extend(remediation_failed_alert(&r, AlertStatus::Firing, now_ms).map(Effect::Alert));
        effects.push(Effect::Record(r));
    }
    effects
}

/// The guards again for an action already planned (approved or executed
/// by hand), with the target it was planned with.
pub fn recheck(ctx: &Context<'_>, last: &ActionRecord, now_ms: i64) -> Result<(), Refusal> {
    let planned = ctx.ledger.get(&last.action_id).and_then(|e| e.planned());
    let to_replicas = planned
        .and_then(|p| p.params.get("to_replicas"))
        .and_then(|v| v.parse().ok());
    let p = Proposal {
        action_id: &last.action_id,
        model: &last.model,
        kind: ActionKind::try_from(last.kind).unwrap_or_default(),
        alert_fingerprint: &last.alert_fingerprint,
        to_replicas,
    };
    guards::check(ctx.guards, ctx.kill_switch, ctx.ledger, &p, now_ms)
}

/// What a `POST /v1/plan` answers: the decision without acting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanPreview {
    pub rule: Option<String>,
    pub kind: Option<&'static str>,
    pub target: Option<String>,
    pub params: BTreeMap<String, String>,
    /// `execute`, `await_approval`, `dry_run`, `refuse`, `fail`, `notify`,
    /// `already_decided`, `nothing`.
    pub outcome: &'static str,
    pub reason: String,
}

impl Plan {
    /// The plan as the preview shows it.
    pub fn preview(&self) -> PlanPreview {
        let mut out = PlanPreview {
            rule: None,
            kind: None,
            target: None,
            params: BTreeMap::new(),
            outcome: "nothing",
            reason: String::new(),
        };
        match self {
            Self::Nothing(why) => out.reason = why.reason().into(),
            Self::Resolved(effects) => {
                out.reason = format!(
                    "a resolved alert starts no action ({} record(s) or alert(s) for earlier actions)",
                    effects.len()
                );
            }
            Self::ReadDeployment { model } => out.reason = format!("the deployment of {model} is not read yet"),
            Self::Resume {
                rule,
                kind,
                action_id,
                state,
                ..
            } => {
                out.rule = Some(rule.clone());
                out.kind = Some(kind_name(*kind));
                out.outcome = "already_decided";
                out.reason = format!(
                    "this firing was decided before: action {action_id} is {}",
                    decision_name(*state)
                );
            }
            Self::Decided(d) => {
                out.rule = Some(d.rule.clone());
                out.kind = Some(kind_name(d.kind));
                out.outcome = d.outcome.name();
                if let Some(t) = &d.target {
                    out.target = Some(t.describe());
                    out.params = t.to_params().into_iter().collect();
                }
                out.reason = match d.outcome {
                    Outcome::Notified | Outcome::Refused => d.record.reason.clone(),
                    Outcome::Failed => format!("{}: {}", d.record.reason, d.record.error),
                    Outcome::DryRun => "dry-run mode: the action would be planned only".into(),
                    Outcome::AwaitApproval => "the action would wait for approval".into(),
                    Outcome::Execute => "every guard passes".into(),
                };
            }
        }
        out
    }
}

/// The first record of an action taken for `alert`.
pub fn base_record(
    alert: &Alert,
    action_id: &str,
    kind: ActionKind,
    decision: ActionDecision,
    reason: String,
    now_ms: i64,
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
        at_ms: now_ms,
        ..Default::default()
    }
}

/// The next record of an action: a copy of its last one with a new
/// decision, reason and time.
pub fn next_record(last: &ActionRecord, decision: ActionDecision, reason: String, now_ms: i64) -> ActionRecord {
    let mut r = last.clone();
    r.decision = decision as i32;
    r.reason = reason;
    r.at_ms = now_ms;
    r.error.clear();
    r
}

/// The `RemediationFailed` alert for a failed verification (same
/// fingerprint and id conventions as the analyzer's alerts).
pub fn remediation_failed_alert(failed: &ActionRecord, status: AlertStatus, now_ms: i64) -> Option<Alert> {
    let starts_at_ms: i64 = failed.params.get("remediation_failed_starts_at_ms")?.parse().ok()?;
    let kind = kind_name(ActionKind::try_from(failed.kind).unwrap_or_default());
    let mut labels = BTreeMap::new();
    labels.insert("model".to_string(), failed.model.clone());
    if !failed.model_version.is_empty() {
        labels.insert("model_version".to_string(), failed.model_version.clone());
    }
    labels.insert("alert_type".to_string(), failed.alert_type.clone());
    labels.insert("action".to_string(), kind.to_string());
    let fingerprint = mlwatch_proto::identity::fingerprint(REMEDIATION_FAILED, &labels);
    let id = mlwatch_proto::identity::alert_id(&fingerprint, status, starts_at_ms);
    let mut annotations = HashMap::new();
    annotations.insert(
        "summary".to_string(),
        format!(
            "{kind} of {} did not resolve {} (action {})",
            failed.model, failed.alert_type, failed.action_id
        ),
    );
    annotations.insert("description".to_string(), failed.reason.clone());
    Some(Alert {
        id,
        fingerprint,
        status: status as i32,
        r#type: REMEDIATION_FAILED.to_string(),
        severity: Severity::High as i32,
        labels: labels.into_iter().collect(),
        annotations,
        value: 1.0,
        threshold: 0.0,
        starts_at_ms,
        ends_at_ms: if status == AlertStatus::Resolved { now_ms } else { 0 },
        recommendations: vec![format!(
            "look at {} by hand: the automatic {kind} did not help",
            failed.model
        )],
        source: "remediator".into(),
        generated_at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::default_rules;
    use proptest::prelude::*;

    fn alert(id: &str, t: &str, severity: Severity, model: &str, status: AlertStatus) -> Alert {
        Alert {
            id: id.into(),
            fingerprint: format!("fp-{t}-{model}"),
            r#type: t.into(),
            severity: severity as i32,
            status: status as i32,
            labels: [("model".to_string(), model.to_string())].into(),
            starts_at_ms: 1,
            ..Default::default()
        }
    }

    fn firing(id: &str, t: &str, model: &str) -> Alert {
        alert(id, t, Severity::High, model, AlertStatus::Firing)
    }

    fn deployment(replicas: u32) -> Deployment {
        Deployment {
            model: "fraud".into(),
            active_version: "v3".into(),
            replicas,
            min_replicas: 1,
            max_replicas: 50,
            previous_versions: vec!["v2".into()],
            traffic_percent: Default::default(),
        }
    }

    fn ctx<'a>(rules: &'a [Rule], guards: &'a GuardConfig, ledger: &'a Ledger) -> Context<'a> {
        Context {
            rules,
            guards,
            kill_switch: false,
            dry_run: false,
            retrain_webhook: true,
            ledger,
        }
    }

    /// Plans as the engine does: reads the deployment when asked.
    fn decide(c: &Context<'_>, a: &Alert, d: &Deployment, now_ms: i64) -> Plan {
        match plan(c, a, Platform::Unread, now_ms) {
            Plan::ReadDeployment { .. } => plan(c, a, Platform::Read(d), now_ms),
            p => p,
        }
    }

    fn decided(p: Plan) -> Decided {
        match p {
            Plan::Decided(d) => *d,
            other => panic!("not a new action: {other:?}"),
        }
    }

    #[test]
    fn a_scale_reads_the_deployment_then_executes() {
        let (rules, guards, ledger) = (default_rules(), GuardConfig::default(), Ledger::default());
        let c = ctx(&rules, &guards, &ledger);
        let a = firing("a1", "HighP99Latency", "fraud");
        assert_eq!(
            plan(&c, &a, Platform::Unread, 10),
            Plan::ReadDeployment { model: "fraud".into() }
        );
        let d = decided(plan(&c, &a, Platform::Read(&deployment(2)), 10));
        assert_eq!(d.outcome, Outcome::Execute);
        assert_eq!(d.target, Some(Target::Replicas { from: 2, to: 3 }));
        let r = &d.record;
        assert_eq!(r.decision, ActionDecision::Planned as i32);
        assert_eq!(r.action_id, policy::action_id("a1", "scale"));
        assert_eq!(
            r.reason,
            "scale-up-on-latency: HighP99Latency fired: scale from 2 to 3 replicas"
        );
        assert_eq!(r.params["to_replicas"], "3");
        assert_eq!(r.params["rule"], "scale-up-on-latency");
        assert_eq!(r.params["alert_starts_at_ms"], "1");
        assert_eq!(r.model_version, "v3", "taken from the deployment");
        assert!(!r.dry_run && !r.params.contains_key(APPROVAL_REQUIRED));
    }

    #[test]
    fn a_version_regression_rolls_back_to_its_baseline_version() {
        let (rules, guards, ledger) = (default_rules(), GuardConfig::default(), Ledger::default());
        let c = ctx(&rules, &guards, &ledger);
        let mut a = firing("a1", "VersionRegression", "fraud");
        a.labels.insert("model_version".into(), "v3".into());
        a.labels.insert("baseline_version".into(), "v1".into());
        a.labels.insert("metric".into(), "p50".into());
        let d = decided(plan(&c, &a, Platform::Read(&deployment(2)), 10));
        assert_eq!(
            d.target,
            Some(Target::Version {
                from: "v3".into(),
                to: "v1".into()
            }),
            "the baseline version, not the previous one (v2)"
        );
        assert_eq!(d.record.params["rule"], "rollback-on-version-regression");
    }

    #[test]
    fn refusals_come_before_the_platform_is_asked() {
        let (rules, guards, ledger) = (default_rules(), GuardConfig::default(), Ledger::default());
        let mut c = ctx(&rules, &guards, &ledger);
        c.kill_switch = true;
        let d = decided(plan(&c, &firing("a1", "HighP99Latency", "fraud"), Platform::Unread, 0));
        assert_eq!(d.outcome, Outcome::Refused);
        assert_eq!(d.record.reason, "scale-up-on-latency: refused: kill switch engaged");
        assert_eq!(d.record.decision, ActionDecision::Refused as i32);
        c.kill_switch = false;
        let d = decided(plan(&c, &firing("a1", "HighP99Latency", "*"), Platform::Unread, 0));
        assert!(
            d.record.reason.contains("wildcard target model \"*\""),
            "{}",
            d.record.reason
        );
    }

    #[test]
    fn notify_records_executed_whatever_the_guards() {
        let (rules, guards, ledger) = (default_rules(), GuardConfig::default(), Ledger::default());
        let mut c = ctx(&rules, &guards, &ledger);
        c.kill_switch = true;
        c.dry_run = true;
        let d = decided(plan(&c, &firing("a1", "FeatureDrift", ""), Platform::Unread, 0));
        assert_eq!(d.outcome, Outcome::Notified);
        assert_eq!(d.record.decision, ActionDecision::Executed as i32);
        assert!(!d.record.dry_run);
        let p = Plan::Decided(Box::new(d)).preview();
        assert_eq!((p.outcome, p.target.as_deref()), ("notify", Some("notify only")));
    }

    #[test]
    fn retrain_needs_a_webhook_but_no_deployment() {
        let rules = vec![Rule {
            name: "retrain".into(),
            alert_types: vec!["FeatureDrift".into()],
            min_severity: Default::default(),
            labels: BTreeMap::new(),
            action: policy::ActionSpec::Retrain,
        }];
        let (guards, ledger) = (GuardConfig::default(), Ledger::default());
        let mut c = ctx(&rules, &guards, &ledger);
        let a = firing("a1", "FeatureDrift", "fraud");
        let d = decided(plan(&c, &a, Platform::Unread, 0));
        assert_eq!((d.outcome, d.target), (Outcome::Execute, Some(Target::Webhook)));
        c.retrain_webhook = false;
        let d = decided(plan(&c, &a, Platform::Unread, 0));
        assert_eq!(d.outcome, Outcome::Refused);
        assert_eq!(d.record.reason, "retrain: refused: no retraining webhook configured");
    }

    #[test]
    fn an_unreadable_deployment_fails_and_an_impossible_target_refuses() {
        let (rules, guards, ledger) = (default_rules(), GuardConfig::default(), Ledger::default());
        let c = ctx(&rules, &guards, &ledger);
        let a = firing("a1", "HighP99Latency", "fraud");
        let d = decided(plan(&c, &a, Platform::Unreadable("status: NotFound"), 0));
        assert_eq!(d.outcome, Outcome::Failed);
        assert_eq!(d.record.decision, ActionDecision::Failed as i32);
        assert_eq!(d.record.error, "status: NotFound");
        let p = Plan::Decided(Box::new(d)).preview();
        assert_eq!(p.outcome, "fail");
        assert!(p.reason.ends_with("status: NotFound"), "{}", p.reason);
        let d = decided(plan(&c, &a, Platform::Read(&deployment(20)), 0));
        assert_eq!(d.outcome, Outcome::Refused);
        assert!(d.record.reason.contains("already at the replica limit: 20 of max 20"));
    }

    #[test]
    fn dry_run_and_approval_stop_at_planned() {
        let (rules, guards, ledger) = (default_rules(), GuardConfig::default(), Ledger::default());
        let mut c = ctx(&rules, &guards, &ledger);
        let decay = firing("a1", "AccuracyDecay", "fraud");
        let d = decided(decide(&c, &decay, &deployment(2), 0));
        assert_eq!(d.outcome, Outcome::AwaitApproval);
        assert_eq!(d.record.params[APPROVAL_REQUIRED], "true");
        assert_eq!(d.record.params["to_version"], "v2");
        c.dry_run = true;
        let d = decided(decide(&c, &decay, &deployment(2), 0));
        assert_eq!(d.outcome, Outcome::DryRun);
        assert!(d.record.dry_run);
    }

    #[test]
    fn a_decided_firing_resumes_and_a_stale_one_is_ignored() {
        let (rules, guards) = (default_rules(), GuardConfig::default());
        let mut ledger = Ledger::default();
        let a = firing("a1", "HighP99Latency", "fraud");
        let first = decided(decide(&ctx(&rules, &guards, &ledger), &a, &deployment(2), 0));
        ledger.apply(first.record);
        let p = plan(&ctx(&rules, &guards, &ledger), &a, Platform::Unread, 5);
        assert!(
            matches!(
                &p,
                Plan::Resume {
                    step: NextStep::Execute,
                    state: ActionDecision::Planned,
                    ..
                }
            ),
            "{p:?}"
        );
        assert_eq!(p.preview().outcome, "already_decided");
        let mut old = firing("a2", "HighP99Latency", "recsys");
        old.generated_at_ms = 1_000;
        let c = ctx(&rules, &guards, &ledger);
        let now = 1_000 + guards.memory_ms() + 1;
        assert_eq!(plan(&c, &old, Platform::Unread, now), Plan::Nothing(Nothing::Stale));
        let mut own = firing("a3", REMEDIATION_FAILED, "fraud");
        own.source = "remediator".into();
        assert_eq!(plan(&c, &own, Platform::Unread, 0), Plan::Nothing(Nothing::Own));
        assert_eq!(
            plan(&c, &firing("a4", "Unknown", "fraud"), Platform::Unread, 0),
            Plan::Nothing(Nothing::NoRule)
        );
    }

    /// The effects of resolving `a` against `ledger` at `now_ms`.
    fn resolve(rules: &[Rule], guards: &GuardConfig, ledger: &Ledger, a: &Alert, now_ms: i64) -> Vec<Effect> {
        let mut resolved = a.clone();
        resolved.status = AlertStatus::Resolved as i32;
        match plan(&ctx(rules, guards, ledger), &resolved, Platform::Unread, now_ms) {
            Plan::Resolved(effects) => effects,
            other => panic!("not resolved: {other:?}"),
        }
    }

    /// Plans an action for `a`, then records it as moved on to `then`.
    fn record_as(rules: &[Rule], guards: &GuardConfig, ledger: &mut Ledger, a: &Alert, then: ActionDecision) {
        let planned = decided(decide(&ctx(rules, guards, ledger), a, &deployment(2), 0)).record;
        ledger.apply(planned.clone());
        ledger.apply(next_record(&planned, then, "next".into(), 1_000));
    }

    /// The one record of `effects`.
    fn only_record(effects: &[Effect]) -> &ActionRecord {
        match effects {
            [Effect::Record(r)] => r,
            other => panic!("not one record: {other:?}"),
        }
    }

    #[test]
    fn a_resolved_alert_verifies_lapses_and_closes() {
        let (rules, guards) = (default_rules(), GuardConfig::default());
        let mut ledger = Ledger::default();
        let a = firing("a1", "HighP99Latency", "fraud");
        record_as(&rules, &guards, &mut ledger, &a, ActionDecision::Executed);
        let effects = resolve(&rules, &guards, &ledger, &a, 25_000);
        let r = only_record(&effects);
        assert_eq!(r.decision, ActionDecision::Verified as i32);
        assert_eq!(r.reason, "HighP99Latency resolved 24 s after the action");

        // Overdue instead: RemediationFailed fires, and the resolve closes it.
        let raised = overdue(&ledger, 301_000, 300_000);
        let [Effect::Alert(fired), Effect::Record(failed)] = raised.as_slice() else {
            panic!("{raised:?}")
        };
        assert_eq!(fired.r#type, REMEDIATION_FAILED);
        assert_eq!(fired.starts_at_ms, 301_000);
        assert_eq!(failed.decision, ActionDecision::VerificationFailed as i32);
        ledger.apply(failed.clone());
        let effects = resolve(&rules, &guards, &ledger, &a, 400_000);
        let [Effect::Alert(closed)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        assert_eq!((closed.id != fired.id, &closed.fingerprint), (true, &fired.fingerprint));
        assert_eq!(closed.status, AlertStatus::Resolved as i32);

        // A request for approval lapses.
        let decay = firing("b1", "AccuracyDecay", "fraud");
        record_as(&rules, &guards, &mut ledger, &decay, ActionDecision::AwaitingApproval);
        let effects = resolve(&rules, &guards, &ledger, &decay, 2_000);
        assert_eq!(only_record(&effects).decision, ActionDecision::Rejected as i32);
    }

    #[test]
    fn recheck_uses_the_planned_target() {
        let rules = default_rules();
        let guards = GuardConfig {
            max_replicas: 3,
            ..Default::default()
        };
        let mut ledger = Ledger::default();
        let mut r = base_record(
            &firing("a1", "HighP99Latency", "fraud"),
            "x",
            ActionKind::Scale,
            ActionDecision::Planned,
            String::new(),
            0,
        );
        r.dry_run = true;
        r.params.insert("to_replicas".into(), "4".into());
        ledger.apply(r.clone());
        let c = ctx(&rules, &guards, &ledger);
        assert!(matches!(recheck(&c, &r, 1), Err(Refusal::Bounds { replicas: 4, .. })));
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Op {
        Fire { alert: usize, model: usize, kind: usize },
        Resolve { alert: usize, model: usize, kind: usize },
        KillSwitch(bool),
        DryRun(bool),
    }

    const MODELS: [&str; 3] = ["fraud", "recsys", "*"];
    const TYPES: [&str; 4] = ["HighP99Latency", "AccuracyDecay", "FeatureDrift", "DataQuality"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..12usize, 0..3usize, 0..4usize).prop_map(|(alert, model, kind)| Op::Fire { alert, model, kind }),
            2 => (0..12usize, 0..3usize, 0..4usize).prop_map(|(alert, model, kind)| Op::Resolve { alert, model, kind }),
            1 => any::<bool>().prop_map(Op::KillSwitch),
            1 => any::<bool>().prop_map(Op::DryRun),
        ]
    }

    fn storm_rules() -> Vec<Rule> {
        let mut rules = default_rules();
        rules.push(Rule {
            name: "retrain-on-quality".into(),
            alert_types: vec!["DataQuality".into()],
            min_severity: Default::default(),
            labels: BTreeMap::new(),
            action: policy::ActionSpec::Retrain,
        });
        rules
    }

    fn storm_guards() -> GuardConfig {
        GuardConfig {
            cooldown_secs: 300,
            max_actions_per_hour_per_model: 3,
            max_actions_per_hour: 4,
            min_replicas: 1,
            max_replicas: 6,
            require_approval: vec!["rollback".into()],
            ..Default::default()
        }
    }

    /// What the preview says, against what the executor does with the
    /// plan's first record (as the ledger reads it back).
    fn check_preview_matches(p: &Plan, ledger: &Ledger) -> Result<(), TestCaseError> {
        let preview = p.preview();
        match p {
            Plan::Decided(d) => {
                let mut l = ledger.clone();
                l.apply(d.record.clone());
                let e = l.get(&d.record.action_id).expect("applied");
                let expected = match (e.decision(), e.next_step(), e.last().dry_run) {
                    (ActionDecision::Executed, _, _) => "notify",
                    (ActionDecision::Refused, _, _) => "refuse",
                    (ActionDecision::Failed, _, _) => "fail",
                    (ActionDecision::Planned, NextStep::None, true) => "dry_run",
                    (ActionDecision::Planned, NextStep::AskApproval, false) => "await_approval",
                    (ActionDecision::Planned, NextStep::Execute, false) => "execute",
                    other => return Err(TestCaseError::fail(format!("unexpected first record {other:?}"))),
                };
                prop_assert_eq!(preview.outcome, expected);
                prop_assert_eq!(preview.rule.as_deref(), Some(d.rule.as_str()));
            }
            Plan::Resume { .. } => prop_assert_eq!(preview.outcome, "already_decided"),
            Plan::Nothing(_) | Plan::Resolved(_) | Plan::ReadDeployment { .. } => {
                prop_assert_eq!(preview.outcome, "nothing")
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Over a random history of firings, resolves, kill-switch and
        /// dry-run changes, with the plan carried out as the engine does:
        /// - the preview always says what the executor does with the plan;
        /// - nothing is committed while the kill switch is engaged or in
        ///   dry-run, and nothing ever targets a wildcard model;
        /// - a resolved alert never starts an action;
        /// - committed actions respect the cooldown, both budgets and the
        ///   replica bounds;
        /// - planning is pure: the same inputs give the same plan.
        #[test]
        fn random_histories_keep_every_guard(steps in proptest::collection::vec((0..200_000i64, op()), 1..60)) {
            let rules = storm_rules();
            let guards = storm_guards();
            let mut ledger = Ledger::default();
            let mut replicas: BTreeMap<&str, u32> = MODELS.iter().map(|m| (*m, 1)).collect();
            let (mut kill_switch, mut dry_run) = (false, false);
            let mut now = 0;
            let mut committed: Vec<(i64, String, i32)> = Vec::new();
            for (dt, op) in steps {
                now += dt;
                let (a, fire) = match op {
                    Op::KillSwitch(on) => { kill_switch = on; continue }
                    Op::DryRun(on) => { dry_run = on; continue }
                    Op::Fire { alert: i, model, kind } => (alert(&format!("f{i}"), TYPES[kind], Severity::High, MODELS[model], AlertStatus::Firing), true),
                    Op::Resolve { alert: i, model, kind } => (alert(&format!("r{i}"), TYPES[kind], Severity::High, MODELS[model], AlertStatus::Resolved), false),
                };
                let model = MODELS.iter().position(|m| a.labels["model"] == *m).unwrap();
                let d = Deployment { model: MODELS[model].into(), replicas: replicas[MODELS[model]], max_replicas: 10, ..deployment(1) };
                let c = Context { rules: &rules, guards: &guards, kill_switch, dry_run, retrain_webhook: true, ledger: &ledger };
                let p = decide(&c, &a, &d, now);
                prop_assert_eq!(&p, &decide(&c, &a, &d, now));
                check_preview_matches(&p, &ledger)?;
                let before = ledger.len();
                match p {
                    Plan::Resolved(effects) => {
                        prop_assert!(!fire);
                        for e in effects {
                            if let Effect::Record(r) = e {
                                prop_assert!(ledger.get(&r.action_id).is_some(), "a resolve started {}", r.action_id);
                                ledger.apply(r);
                            }
                        }
                        prop_assert_eq!(ledger.len(), before);
                    }
                    Plan::Decided(d) => {
                        prop_assert!(fire);
                        let r = d.record;
                        let commits = d.outcome == Outcome::Execute;
                        if commits {
                            prop_assert!(!kill_switch && !dry_run);
                            prop_assert!(!guards::bad_target(&r.model));
                            committed.push((now, r.model.clone(), r.kind));
                            if let Some(Target::Replicas { to, .. }) = d.target {
                                prop_assert!((guards.min_replicas..=guards.max_replicas).contains(&to));
                                replicas.insert(MODELS[model], to);
                            }
                        }
                        ledger.apply(r.clone());
                        if commits {
                            ledger.apply(next_record(&r, ActionDecision::Executed, "done".into(), now));
                        }
                    }
                    Plan::Nothing(_) | Plan::Resume { .. } => {}
                    Plan::ReadDeployment { .. } => prop_assert!(false, "the deployment was given"),
                }
            }
            let hour = 3_600_000;
            let cooldown = 300_000;
            for (t, m, k) in &committed {
                let window = |u: &i64| *u <= *t && t - u < hour;
                prop_assert!(committed.iter().filter(|(u, n, _)| n == m && window(u)).count() <= 3);
                prop_assert!(committed.iter().filter(|(u, _, _)| window(u)).count() <= 4);
                prop_assert_eq!(
                    committed.iter().filter(|(u, n, j)| n == m && j == k && u < t && t - u < cooldown).count(),
                    0
                );
            }
        }
    }
}
