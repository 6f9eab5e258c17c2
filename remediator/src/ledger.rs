//! The ledger (pure): every action's life, rebuilt from its `ActionRecord`s.
//!
//! The actions topic is the remediator's durable memory. At start-up the
//! remediator replays it into a ledger; afterwards each record it publishes
//! is applied here once the broker acknowledged it. So what the ledger says
//! (which alert firings were already decided, what is waiting for approval,
//! what was planned but not yet carried out, what still waits for
//! verification, and when actions were taken, for cooldowns and budgets)
//! survives a crash at any point.

use std::collections::HashMap;

use mlwatch_proto::v1::{ActionDecision, ActionKind, ActionRecord};

/// Parameter set on a `PLANNED` record whose action needs approval.
pub const APPROVAL_REQUIRED: &str = "approval_required";

/// Short lowercase name of a decision, used in the API and metrics.
pub fn decision_name(d: ActionDecision) -> &'static str {
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

/// One action and its records, oldest first.
#[derive(Debug, Clone)]
pub struct Entry {
    pub records: Vec<ActionRecord>,
    /// When the action was committed to being carried out (planned without
    /// approval and not in dry run, or approved): what cooldowns and
    /// budgets count.
    pub committed_at_ms: Option<i64>,
}

impl Entry {
    pub fn last(&self) -> &ActionRecord {
        // An entry is created with its first record and never emptied.
        &self.records[self.records.len() - 1]
    }

    pub fn decision(&self) -> ActionDecision {
        ActionDecision::try_from(self.last().decision).unwrap_or_default()
    }

    pub fn kind(&self) -> ActionKind {
        ActionKind::try_from(self.last().kind).unwrap_or_default()
    }

    /// The `PLANNED` record (what was decided and why).
    pub fn planned(&self) -> Option<&ActionRecord> {
        self.records
            .iter()
            .find(|r| r.decision == ActionDecision::Planned as i32)
    }

    pub fn needs_approval(&self) -> bool {
        self.planned()
            .is_some_and(|r| r.params.get(APPROVAL_REQUIRED).map(String::as_str) == Some("true"))
    }

    /// When the platform (or webhook) call succeeded.
    pub fn executed_at_ms(&self) -> Option<i64> {
        self.records
            .iter()
            .find(|r| r.decision == ActionDecision::Executed as i32)
            .map(|r| r.at_ms)
    }

    /// What must still happen to this action without new input.
    pub fn next_step(&self) -> NextStep {
        let dry_run = self.last().dry_run;
        match self.decision() {
            ActionDecision::Planned if dry_run => NextStep::None,
            ActionDecision::Planned if self.needs_approval() => NextStep::AskApproval,
            ActionDecision::Planned | ActionDecision::Approved => NextStep::Execute,
            ActionDecision::Executed if awaits_verification(self.kind()) => NextStep::Verify,
            _ => NextStep::None,
        }
    }
}

/// Only platform changes are verified; a retraining takes far longer than
/// any window and a notification changes nothing.
pub fn awaits_verification(kind: ActionKind) -> bool {
    matches!(kind, ActionKind::Scale | ActionKind::Rollback | ActionKind::SetTraffic)
}

/// What an action is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Terminal, or waiting for a person (approval, dry-run execute).
    None,
    /// Planned with approval required, but `AWAITING_APPROVAL` is not yet
    /// recorded (a crash in between).
    AskApproval,
    /// Committed but not yet carried out.
    Execute,
    /// Executed; waiting for its alert to resolve.
    Verify,
}

/// Every known action by id, plus the order in which they appeared, and the
/// kill switch as last set through the API.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    entries: HashMap<String, Entry>,
    order: Vec<String>,
    /// `(at_ms, engaged)` of the latest kill-switch record.
    kill_switch: Option<(i64, bool)>,
}

/// The `params` key of a kill-switch record.
pub const ENGAGED: &str = "engaged";

impl Ledger {
    pub fn apply(&mut self, record: ActionRecord) {
        if ActionKind::try_from(record.kind) == Ok(ActionKind::KillSwitch) {
            // A switch, not an action: it never counts toward cooldowns or
            // budgets. The latest by time wins, whatever order a replay over
            // several partitions delivers them in.
            let engaged = record.params.get(ENGAGED).map(String::as_str) == Some("true");
            if self.kill_switch.is_none_or(|(at, _)| record.at_ms >= at) {
                self.kill_switch = Some((record.at_ms, engaged));
            }
            return;
        }
        let id = record.action_id.clone();
        let decision = ActionDecision::try_from(record.decision).unwrap_or_default();
        let at = record.at_ms;
        let entry = match self.entries.get_mut(&id) {
            Some(e) => e,
            None => {
                self.order.push(id.clone());
                self.entries.entry(id).or_insert(Entry {
                    records: Vec::new(),
                    committed_at_ms: None,
                })
            }
        };
        let committing = match decision {
            ActionDecision::Planned => {
                !record.dry_run && record.params.get(APPROVAL_REQUIRED).map(String::as_str) != Some("true")
            }
            ActionDecision::Approved => true,
            _ => false,
        };
        if committing && entry.committed_at_ms.is_none() {
            entry.committed_at_ms = Some(at);
        }
        entry.records.push(record);
    }

    /// The kill switch as last recorded through the API, if ever.
    pub fn kill_switch(&self) -> Option<bool> {
        self.kill_switch.map(|(_, engaged)| engaged)
    }

    /// When the kill switch was last recorded engaged, if it is.
    pub fn kill_switch_engaged_since(&self) -> Option<i64> {
        self.kill_switch.filter(|(_, engaged)| *engaged).map(|(at, _)| at)
    }

    pub fn get(&self, action_id: &str) -> Option<&Entry> {
        self.entries.get(action_id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in the order they first appeared.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().filter_map(|id| self.entries.get(id))
    }

    /// Ids of the actions with work left (see [`NextStep`]).
    pub fn with_next_step(&self, step: NextStep) -> Vec<String> {
        self.entries()
            .filter(|e| e.next_step() == step)
            .map(|e| e.last().action_id.clone())
            .collect()
    }

    /// Executed actions whose alert has not resolved within `window_ms` of
    /// the execution, with the execution time.
    pub fn overdue_verifications(&self, now_ms: i64, window_ms: i64) -> Vec<(String, i64)> {
        self.entries()
            .filter(|e| e.next_step() == NextStep::Verify)
            .filter_map(|e| {
                let executed = e.executed_at_ms().unwrap_or(e.last().at_ms);
                (now_ms - executed >= window_ms).then(|| (e.last().action_id.clone(), executed))
            })
            .collect()
    }

    /// Drops terminal entries whose last record is older than `before_ms`,
    /// keeping memory bounded.
    pub fn prune(&mut self, before_ms: i64) {
        let entries = &mut self.entries;
        self.order.retain(|id| {
            let keep = entries
                .get(id)
                .is_some_and(|e| e.last().at_ms >= before_ms || e.next_step() != NextStep::None);
            if !keep {
                entries.remove(id);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rec(id: &str, decision: ActionDecision, at_ms: i64) -> ActionRecord {
        ActionRecord {
            action_id: id.into(),
            request_id: id.into(),
            model: "fraud".into(),
            kind: ActionKind::Scale as i32,
            decision: decision as i32,
            at_ms,
            ..Default::default()
        }
    }

    #[test]
    fn lifecycle_and_next_steps() {
        let mut l = Ledger::default();
        l.apply(rec("a", ActionDecision::Planned, 10));
        assert_eq!(l.get("a").unwrap().next_step(), NextStep::Execute);
        assert_eq!(l.get("a").unwrap().committed_at_ms, Some(10));
        l.apply(rec("a", ActionDecision::Executed, 11));
        assert_eq!(l.get("a").unwrap().next_step(), NextStep::Verify);
        l.apply(rec("a", ActionDecision::Verified, 20));
        assert_eq!(l.get("a").unwrap().next_step(), NextStep::None);

        let mut needs = rec("b", ActionDecision::Planned, 30);
        needs.kind = ActionKind::Rollback as i32;
        needs.params.insert(APPROVAL_REQUIRED.into(), "true".into());
        l.apply(needs);
        assert_eq!(l.with_next_step(NextStep::AskApproval), vec!["b".to_string()]);
        assert_eq!(l.get("b").unwrap().committed_at_ms, None);
        let mut waiting = rec("b", ActionDecision::AwaitingApproval, 31);
        waiting.kind = ActionKind::Rollback as i32;
        l.apply(waiting);
        assert_eq!(l.get("b").unwrap().next_step(), NextStep::None);
        let mut approved = rec("b", ActionDecision::Approved, 40);
        approved.kind = ActionKind::Rollback as i32;
        l.apply(approved);
        assert_eq!(l.get("b").unwrap().next_step(), NextStep::Execute);
        assert_eq!(l.get("b").unwrap().committed_at_ms, Some(40));

        let mut dry = rec("c", ActionDecision::Planned, 50);
        dry.dry_run = true;
        l.apply(dry);
        assert_eq!(l.get("c").unwrap().next_step(), NextStep::None);
        assert_eq!(l.get("c").unwrap().committed_at_ms, None);

        let ids: Vec<&str> = l.entries().map(|e| e.last().action_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn verification_is_overdue_after_the_window() {
        let mut l = Ledger::default();
        l.apply(rec("a", ActionDecision::Planned, 0));
        l.apply(rec("a", ActionDecision::Executed, 1_000));
        let mut notify = rec("n", ActionDecision::Executed, 0);
        notify.kind = ActionKind::Notify as i32;
        l.apply(notify);
        assert!(l.overdue_verifications(300_999, 300_000).is_empty());
        assert_eq!(
            l.overdue_verifications(301_000, 300_000),
            vec![("a".to_string(), 1_000)]
        );
        l.apply(rec("a", ActionDecision::Verified, 2_000));
        assert!(l.overdue_verifications(1_000_000, 300_000).is_empty());
    }

    #[test]
    fn prune_keeps_unfinished_work() {
        let mut l = Ledger::default();
        l.apply(rec("old", ActionDecision::Refused, 1));
        l.apply(rec("pending", ActionDecision::Planned, 1));
        l.apply(rec("new", ActionDecision::Refused, 100));
        l.prune(50);
        assert!(l.get("old").is_none());
        assert!(l.get("pending").is_some());
        assert!(l.get("new").is_some());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn kill_switch_records_are_no_actions_and_the_latest_wins() {
        let switch = |at_ms: i64, engaged: bool| ActionRecord {
            action_id: format!("kill-switch-{at_ms}"),
            kind: ActionKind::KillSwitch as i32,
            decision: ActionDecision::Executed as i32,
            params: [(ENGAGED.to_string(), engaged.to_string())].into(),
            at_ms,
            ..Default::default()
        };
        let mut l = Ledger::default();
        assert_eq!(l.kill_switch(), None);
        l.apply(switch(200, false));
        // Replayed out of order (another partition): the older one loses.
        l.apply(switch(100, true));
        assert_eq!(l.kill_switch(), Some(false));
        l.apply(switch(300, true));
        assert_eq!(l.kill_switch(), Some(true));
        assert_eq!(l.len(), 0, "no action entries");
    }
}
