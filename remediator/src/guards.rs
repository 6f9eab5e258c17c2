//! Guards (pure): what must hold before any action is carried out, and the
//! reason when it does not. Checked when an action is planned and again
//! when it is approved or executed by hand; `now_ms` is passed in.

use mlwatch_proto::v1::{ActionDecision, ActionKind};
use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::policy::kind_name;

/// The `[guards]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Refuse every action (the API can also engage and release it).
    pub kill_switch: bool,
    /// While the kill switch is engaged through the API, record it again on
    /// the actions topic when its record is this old, so it never ages out
    /// of the topic's retention (keep it well below `retention.ms`).
    pub kill_switch_republish_secs: u64,
    /// Action kinds that wait for a person's approval: any of `scale`,
    /// `rollback`, `shift_traffic`, `retrain`.
    pub require_approval: Vec<String>,
    /// No second action of the same kind on the same model within this
    /// many seconds.
    pub cooldown_secs: u64,
    /// At most this many actions per model in any hour.
    pub max_actions_per_hour_per_model: u32,
    /// At most this many actions over all models in any hour.
    pub max_actions_per_hour: u32,
    /// Never scale below this many replicas.
    pub min_replicas: u32,
    /// Never scale above this many replicas (the platform's own maximum
    /// applies too).
    pub max_replicas: u32,
    /// After an action failed verification, refuse the same kind of action
    /// for the same alert for this many seconds (do not repeat blindly).
    pub failed_memory_secs: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            kill_switch: false,
            kill_switch_republish_secs: 24 * 3600,
            require_approval: vec!["rollback".into(), "shift_traffic".into()],
            cooldown_secs: 600,
            max_actions_per_hour_per_model: 3,
            max_actions_per_hour: 10,
            min_replicas: 1,
            max_replicas: 20,
            failed_memory_secs: 24 * 3600,
        }
    }
}

impl GuardConfig {
    pub fn needs_approval(&self, kind: ActionKind) -> bool {
        self.require_approval.iter().any(|k| k == kind_name(kind))
    }

    /// How long finished actions must stay in the ledger: the longest look
    /// back of any guard (and at least an hour, for the budgets). A firing
    /// older than this is never acted on.
    pub fn memory_ms(&self) -> i64 {
        let secs = self.failed_memory_secs.max(self.cooldown_secs).max(3600);
        i64::try_from(secs).unwrap_or(i64::MAX / 2000).saturating_mul(1000)
    }

    /// Checks the values a deserializer cannot; names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        const KINDS: [&str; 4] = ["scale", "rollback", "shift_traffic", "retrain"];
        if let Some(k) = self.require_approval.iter().find(|k| !KINDS.contains(&k.as_str())) {
            return Err((
                "guards.require_approval".into(),
                format!("unknown action kind {k:?} (expected one of {KINDS:?})"),
            ));
        }
        if self.min_replicas > self.max_replicas {
            return Err((
                "guards.min_replicas".into(),
                format!("{} is above max_replicas {}", self.min_replicas, self.max_replicas),
            ));
        }
        Ok(())
    }
}

/// What an action would do, as the guards see it.
#[derive(Debug, Clone)]
pub struct Proposal<'a> {
    pub action_id: &'a str,
    pub model: &'a str,
    pub kind: ActionKind,
    pub alert_fingerprint: &'a str,
    /// Target replicas, for a scale.
    pub to_replicas: Option<u32>,
}

/// Why a guard refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("kill switch engaged")]
    KillSwitch,
    #[error("empty or wildcard target model {0:?}")]
    BadTarget(String),
    #[error("cooldown: a {kind} of {model} was taken {ago_secs} s ago (cooldown {cooldown_secs} s)")]
    Cooldown {
        kind: &'static str,
        model: String,
        ago_secs: i64,
        cooldown_secs: u64,
    },
    #[error("budget: {used} actions on {model} in the last hour (max {max})")]
    ModelBudget { model: String, used: u32, max: u32 },
    #[error("budget: {used} actions in the last hour over all models (max {max})")]
    GlobalBudget { used: u32, max: u32 },
    #[error("bounds: {replicas} replicas is outside [{min}, {max}]")]
    Bounds { replicas: u32, min: u32, max: u32 },
    #[error("not repeating a {kind} that did not resolve this alert {ago_secs} s ago")]
    FailedBefore { kind: &'static str, ago_secs: i64 },
}

/// A model name that must never be acted on: empty, or a pattern.
pub fn bad_target(model: &str) -> bool {
    model.trim().is_empty() || model.contains(['*', '?']) || model.eq_ignore_ascii_case("all")
}

const HOUR_MS: i64 = 3_600_000;

/// Checks every guard for `p` at `now_ms`; the first refusal wins.
/// `kill_switch` is the live state (config or API).
pub fn check(
    cfg: &GuardConfig,
    kill_switch: bool,
    ledger: &Ledger,
    p: &Proposal<'_>,
    now_ms: i64,
) -> Result<(), Refusal> {
    if kill_switch {
        return Err(Refusal::KillSwitch);
    }
    if bad_target(p.model) {
        return Err(Refusal::BadTarget(p.model.to_string()));
    }
    if let Some(r) = p.to_replicas
        && (r < cfg.min_replicas || r > cfg.max_replicas)
    {
        return Err(Refusal::Bounds {
            replicas: r,
            min: cfg.min_replicas,
            max: cfg.max_replicas,
        });
    }
    if p.kind == ActionKind::Notify {
        return Ok(());
    }
    let others = ledger
        .entries()
        .filter(|e| e.last().action_id != p.action_id && e.kind() != ActionKind::Notify);
    let mut per_model = 0u32;
    let mut overall = 0u32;
    let mut last_same: Option<i64> = None;
    let mut failed_same: Option<i64> = None;
    let cooldown_ms = i64::try_from(cfg.cooldown_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let memory_ms = i64::try_from(cfg.failed_memory_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    for e in others {
        let last = e.last();
        if let Some(at) = e.committed_at_ms {
            if now_ms - at < HOUR_MS {
                overall += 1;
                if last.model == p.model {
                    per_model += 1;
                }
            }
            if last.model == p.model && e.kind() == p.kind && now_ms - at < cooldown_ms {
                last_same = Some(last_same.map_or(at, |l: i64| l.max(at)));
            }
        }
        if e.decision() == ActionDecision::VerificationFailed
            && e.kind() == p.kind
            && last.alert_fingerprint == p.alert_fingerprint
            && now_ms - last.at_ms < memory_ms
        {
            failed_same = Some(last.at_ms);
        }
    }
    let kind = kind_name(p.kind);
    if let Some(at) = failed_same {
        return Err(Refusal::FailedBefore {
            kind,
            ago_secs: (now_ms - at) / 1000,
        });
    }
    if let Some(at) = last_same {
        return Err(Refusal::Cooldown {
            kind,
            model: p.model.to_string(),
            ago_secs: (now_ms - at) / 1000,
            cooldown_secs: cfg.cooldown_secs,
        });
    }
    if per_model >= cfg.max_actions_per_hour_per_model {
        return Err(Refusal::ModelBudget {
            model: p.model.to_string(),
            used: per_model,
            max: cfg.max_actions_per_hour_per_model,
        });
    }
    if overall >= cfg.max_actions_per_hour {
        return Err(Refusal::GlobalBudget {
            used: overall,
            max: cfg.max_actions_per_hour,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlwatch_proto::v1::ActionRecord;
    use proptest::prelude::*;

    fn planned(id: &str, model: &str, kind: ActionKind, at_ms: i64) -> ActionRecord {
        ActionRecord {
            action_id: id.into(),
            model: model.into(),
            kind: kind as i32,
            decision: ActionDecision::Planned as i32,
            alert_fingerprint: format!("fp-{id}"),
            at_ms,
            ..Default::default()
        }
    }

    fn proposal<'a>(id: &'a str, model: &'a str, kind: ActionKind) -> Proposal<'a> {
        Proposal {
            action_id: id,
            model,
            kind,
            alert_fingerprint: "fp",
            to_replicas: None,
        }
    }

    #[test]
    fn kill_switch_and_bad_targets_refuse_first() {
        let cfg = GuardConfig::default();
        let l = Ledger::default();
        let p = proposal("x", "fraud", ActionKind::Scale);
        assert_eq!(check(&cfg, true, &l, &p, 0), Err(Refusal::KillSwitch));
        for m in ["", "  ", "*", "fraud*", "ALL"] {
            let p = proposal("x", m, ActionKind::Scale);
            assert_eq!(check(&cfg, false, &l, &p, 0), Err(Refusal::BadTarget(m.into())));
        }
        assert_eq!(
            check(&cfg, false, &l, &proposal("x", "fraud", ActionKind::Scale), 0),
            Ok(())
        );
    }

    #[test]
    fn cooldown_per_model_and_kind() {
        let cfg = GuardConfig::default();
        let mut l = Ledger::default();
        l.apply(planned("a", "fraud", ActionKind::Scale, 1_000));
        let now = 1_000 + 599_000;
        let r = check(&cfg, false, &l, &proposal("b", "fraud", ActionKind::Scale), now);
        assert!(matches!(r, Err(Refusal::Cooldown { ago_secs: 599, .. })), "{r:?}");
        assert!(r.unwrap_err().to_string().starts_with("cooldown"));
        // Another model, another kind, or after the cooldown: allowed.
        assert_eq!(
            check(&cfg, false, &l, &proposal("b", "recsys", ActionKind::Scale), now),
            Ok(())
        );
        assert_eq!(
            check(&cfg, false, &l, &proposal("b", "fraud", ActionKind::Retrain), now),
            Ok(())
        );
        assert_eq!(
            check(&cfg, false, &l, &proposal("b", "fraud", ActionKind::Scale), 601_000),
            Ok(())
        );
        // An action never blocks itself (resuming after a restart).
        assert_eq!(
            check(&cfg, false, &l, &proposal("a", "fraud", ActionKind::Scale), now),
            Ok(())
        );
    }

    #[test]
    fn dry_runs_and_pending_approvals_do_not_count() {
        let cfg = GuardConfig::default();
        let mut l = Ledger::default();
        let mut dry = planned("a", "fraud", ActionKind::Scale, 0);
        dry.dry_run = true;
        l.apply(dry);
        let mut waiting = planned("b", "fraud", ActionKind::Scale, 0);
        waiting
            .params
            .insert(crate::ledger::APPROVAL_REQUIRED.into(), "true".into());
        l.apply(waiting);
        assert_eq!(
            check(&cfg, false, &l, &proposal("c", "fraud", ActionKind::Scale), 10),
            Ok(())
        );
    }

    #[test]
    fn budgets_per_model_and_overall() {
        let cfg = GuardConfig {
            cooldown_secs: 0,
            max_actions_per_hour_per_model: 2,
            max_actions_per_hour: 3,
            ..Default::default()
        };
        let mut l = Ledger::default();
        l.apply(planned("a", "fraud", ActionKind::Scale, 0));
        l.apply(planned("b", "fraud", ActionKind::Rollback, 1));
        let r = check(&cfg, false, &l, &proposal("c", "fraud", ActionKind::Scale), 10);
        assert_eq!(
            r,
            Err(Refusal::ModelBudget {
                model: "fraud".into(),
                used: 2,
                max: 2
            })
        );
        l.apply(planned("c", "recsys", ActionKind::Scale, 2));
        let r = check(&cfg, false, &l, &proposal("d", "other", ActionKind::Scale), 10);
        assert_eq!(r, Err(Refusal::GlobalBudget { used: 3, max: 3 }));
        // An hour later the budget is back.
        assert_eq!(
            check(&cfg, false, &l, &proposal("d", "fraud", ActionKind::Scale), HOUR_MS + 3),
            Ok(())
        );
    }

    #[test]
    fn replica_bounds_and_failed_actions() {
        let cfg = GuardConfig::default();
        let mut l = Ledger::default();
        let mut p = proposal("x", "fraud", ActionKind::Scale);
        p.to_replicas = Some(21);
        assert!(matches!(check(&cfg, false, &l, &p, 0), Err(Refusal::Bounds { .. })));
        let mut failed = planned("a", "fraud", ActionKind::Scale, 0);
        failed.alert_fingerprint = "fp".into();
        l.apply(failed.clone());
        failed.decision = ActionDecision::VerificationFailed as i32;
        failed.at_ms = 1_000;
        l.apply(failed);
        let cfg = GuardConfig {
            cooldown_secs: 0,
            ..Default::default()
        };
        let r = check(&cfg, false, &l, &proposal("b", "fraud", ActionKind::Scale), 5_000);
        assert!(matches!(r, Err(Refusal::FailedBefore { .. })), "{r:?}");
        // A different remedy for the same alert is still possible.
        assert_eq!(
            check(&cfg, false, &l, &proposal("b", "fraud", ActionKind::Rollback), 5_000),
            Ok(())
        );
    }

    #[test]
    fn validate_names_the_key() {
        let cfg = GuardConfig {
            require_approval: vec!["rolback".into()],
            ..Default::default()
        };
        let (key, reason) = cfg.validate().unwrap_err();
        assert_eq!(key, "guards.require_approval");
        assert!(reason.contains("rolback"));
    }

    proptest! {
        /// However a storm of proposals arrives, the actions committed in
        /// any hour never exceed the per-model budget and no two of a kind
        /// on a model fall within the cooldown.
        #[test]
        fn storms_respect_budget_and_cooldown(times in proptest::collection::vec((0i64..7_200_000, 0usize..2, 0usize..2), 1..60)) {
            let cfg = GuardConfig { cooldown_secs: 300, max_actions_per_hour_per_model: 3, max_actions_per_hour: 5, ..Default::default() };
            let mut times = times;
            times.sort();
            let mut l = Ledger::default();
            let models = ["fraud", "recsys"];
            let kinds = [ActionKind::Scale, ActionKind::Retrain];
            let mut accepted: Vec<(i64, usize, usize)> = Vec::new();
            for (i, (t, m, k)) in times.iter().enumerate() {
                let id = format!("a{i}");
                let p = proposal(&id, models[*m], kinds[*k]);
                if check(&cfg, false, &l, &p, *t).is_ok() {
                    l.apply(planned(&id, models[*m], kinds[*k], *t));
                    accepted.push((*t, *m, *k));
                }
            }
            for (t, m, k) in &accepted {
                let in_hour = accepted.iter().filter(|(u, n, _)| n == m && *u <= *t && t - u < HOUR_MS).count();
                prop_assert!(in_hour <= 3);
                let all_in_hour = accepted.iter().filter(|(u, _, _)| *u <= *t && t - u < HOUR_MS).count();
                prop_assert!(all_in_hour <= 5);
                let close = accepted.iter().filter(|(u, n, j)| n == m && j == k && *u < *t && t - u < 300_000).count();
                prop_assert_eq!(close, 0);
            }
        }
    }
}
