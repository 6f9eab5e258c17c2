//! The alerting engine: Alertmanager's semantics as a pure state machine
//! driven by a clock the caller passes in (`now_ms`). It keeps alerts,
//! aggregation groups, silences and acknowledgements, and turns alert
//! updates and the passing of time into notifications:
//!
//! - [`Engine::ingest`] files an alert into the groups of the routes it
//!   matches; a new group waits `group_wait` before its first notification.
//! - [`Engine::tick`] flushes due groups: a group notifies when it has new
//!   firing alerts, when all its alerts resolved, when resolved alerts are
//!   new and the receiver wants them, or when `repeat_interval` passed with
//!   nothing acknowledged (Alertmanager's `needsUpdate`), then waits
//!   `group_interval`. Silenced and inhibited alerts are left out. Groups
//!   with escalation page the next receiver when matching alerts stay
//!   unacknowledged.
//! - [`Engine::acknowledge`], [`Engine::add_silence`],
//!   [`Engine::expire_silence`] change state on request.
//!
//! The whole [`State`] is serde so the store can persist it; notifications
//! carry everything a channel needs to render them, so an undelivered one
//! can be sent again after a restart exactly as it was meant.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::alert::{AlertRecord, Status};
use crate::error::AlerterError;
use crate::matcher::{self, Labels, Matcher};
use crate::route::Route;

/// What a receiver wants besides firing notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverPolicy {
    /// Send notifications of resolved alerts.
    pub send_resolved: bool,
    /// Send acknowledgements (PagerDuty `acknowledge`).
    pub send_acknowledged: bool,
    /// Re-send a group's firing alerts at least this often, acknowledged or
    /// not, for receivers that expire alerts not heard of (an
    /// Alertmanager, whose `resolve_timeout` would otherwise resolve them).
    pub resend_ms: Option<u64>,
}

impl Default for ReceiverPolicy {
    fn default() -> Self {
        Self {
            send_resolved: true,
            send_acknowledged: false,
            resend_ms: None,
        }
    }
}

/// An inhibition rule as written in `[[inhibit]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Matchers a firing alert must satisfy to mute others.
    pub source_matchers: Vec<String>,
    /// Matchers of the alerts it mutes.
    pub target_matchers: Vec<String>,
    /// Labels that must be equal in source and target.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// A compiled inhibition rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    pub fn compile(c: &InhibitRuleConfig) -> Result<Self, AlerterError> {
        Ok(Self {
            source: matcher::parse_all(&c.source_matchers)?,
            target: matcher::parse_all(&c.target_matchers)?,
            equal: c.equal.clone(),
        })
    }
}

/// The engine's configuration, compiled.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub route: Route,
    pub inhibit: Vec<InhibitRule>,
    /// Per receiver; a receiver not listed gets the default policy.
    pub policies: BTreeMap<String, ReceiverPolicy>,
}

/// Who acknowledged, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub comment: String,
    pub at_ms: i64,
}

/// A silence: alerts matching all `matchers` are not notified while
/// `starts_at_ms <= now < ends_at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at_ms: i64,
}

impl Silence {
    /// `pending`, `active` or `expired` at `now`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.starts_at_ms {
            "pending"
        } else if now_ms < self.ends_at_ms {
            "active"
        } else {
            "expired"
        }
    }
}

/// A request for a new silence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    pub matchers: Vec<String>,
    /// Default: now.
    #[serde(default)]
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: i64,
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// What the last notification of a group said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    pub at_ms: i64,
}

/// Escalation progress of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationState {
    /// Steps taken.
    pub level: usize,
    /// When the next step is due, if armed.
    pub due_ms: Option<i64>,
    /// Receivers paged by escalation so far.
    pub notified: Vec<String>,
}

/// An aggregation group: the alerts of one route with equal group labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    /// Route id, receiver and group labels, e.g. `0.2|slack|{model="fraud"}`.
    pub key: String,
    pub route_id: String,
    pub receiver: String,
    pub labels: Labels,
    pub alerts: BTreeSet<String>,
    pub created_at_ms: i64,
    pub next_flush_ms: i64,
    pub group_interval_ms: u64,
    pub repeat_interval_ms: u64,
    pub last: Option<Sent>,
    pub escalation: EscalationState,
    /// Messages sent per receiver (threads emails).
    pub sent_per_receiver: BTreeMap<String, u64>,
}

/// The engine's durable state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub alerts: BTreeMap<String, AlertRecord>,
    pub groups: BTreeMap<String, Group>,
    pub silences: BTreeMap<String, Silence>,
    pub acks: BTreeMap<String, Ack>,
    /// Counter behind notification and silence ids.
    pub seq: u64,
}

/// Why a notification was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    /// A group changed (or repeats): its firing and resolved alerts.
    Notify,
    /// Unacknowledged alerts paged to the next receiver.
    Escalation { level: usize },
    /// Alerts were acknowledged.
    Acknowledged,
}

impl Kind {
    /// `notify`, `escalation` or `acknowledged`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Notify => "notify",
            Kind::Escalation { .. } => "escalation",
            Kind::Acknowledged => "acknowledged",
        }
    }
}

/// One message to one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique, ordered by creation: `<seq>-<group id>`.
    pub id: String,
    pub receiver: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub group_id: String,
    pub group_key: String,
    pub group_labels: Labels,
    /// When the group was created (threads emails per group incident).
    pub group_created_ms: i64,
    /// 1 for the first message of this group to this receiver.
    pub thread_seq: u64,
    pub firing: Vec<AlertRecord>,
    pub resolved: Vec<AlertRecord>,
    pub ack: Option<Ack>,
    pub created_at_ms: i64,
}

impl Notification {
    /// All alerts of the message, firing first.
    pub fn alerts(&self) -> impl Iterator<Item = &AlertRecord> {
        self.firing.iter().chain(self.resolved.iter())
    }

    /// `firing` if any alert fires, else `resolved`.
    pub fn status(&self) -> Status {
        if self.firing.is_empty() {
            Status::Resolved
        } else {
            Status::Firing
        }
    }
}

/// What [`Engine::ingest`] did with an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// A firing alert new to the engine (or firing again).
    Firing,
    /// A known firing alert's details changed, or a redelivery.
    Unchanged,
    Resolved,
    /// Older than what the engine has: ignored.
    Stale,
    /// A resolve of an alert the engine never saw: ignored.
    UnknownResolved,
}

impl Ingested {
    /// The `outcome` label of the alerts counters.
    pub fn name(self) -> &'static str {
        match self {
            Ingested::Firing => "firing",
            Ingested::Resolved => "resolved",
            Ingested::Unchanged => "unchanged",
            Ingested::Stale => "stale",
            Ingested::UnknownResolved => "unknown_resolved",
        }
    }
}

/// What an acknowledgement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckTarget {
    Alert(String),
    Group(String),
}

/// Short stable hex hash.
pub fn hash16(text: &str) -> String {
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn labels_text(labels: &Labels) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// Finds a route by id in the tree.
fn find_route<'a>(route: &'a Route, id: &str) -> Option<&'a Route> {
    if route.id == id {
        return Some(route);
    }
    route.routes.iter().find_map(|r| find_route(r, id))
}

pub struct Engine {
    pub config: EngineConfig,
    pub state: State,
}

impl Engine {
    pub fn new(config: EngineConfig, state: State) -> Self {
        Self { config, state }
    }

    fn policy(&self, receiver: &str) -> ReceiverPolicy {
        self.config.policies.get(receiver).copied().unwrap_or_default()
    }

    /// Files an alert update.
    pub fn ingest(&mut self, alert: AlertRecord, now_ms: i64) -> Ingested {
        let fp = alert.fingerprint.clone();
        let old = self.state.alerts.get(&fp);
        if let Some(old) = old
            && alert.generated_at_ms < old.generated_at_ms
        {
            return Ingested::Stale;
        }
        let was_firing = old.map(AlertRecord::is_firing);
        if alert.status == Status::Resolved {
            return match was_firing {
                None => Ingested::UnknownResolved,
                Some(false) => Ingested::Unchanged,
                Some(true) => {
                    self.state.alerts.insert(fp.clone(), alert);
                    self.state.acks.remove(&fp);
                    Ingested::Resolved
                }
            };
        }
        let outcome = if was_firing == Some(true) {
            Ingested::Unchanged
        } else {
            // New, or firing again after a resolve: a new incident.
            self.state.acks.remove(&fp);
            Ingested::Firing
        };
        let labels = alert.match_labels();
        self.state.alerts.insert(fp.clone(), alert);
        let routes: Vec<(String, String, Labels, u64, u64, u64)> = self
            .config
            .route
            .matches(&labels)
            .into_iter()
            .map(|r| {
                (
                    r.id.clone(),
                    r.receiver.clone(),
                    r.group_labels(&labels),
                    r.group_wait_ms,
                    r.group_interval_ms,
                    r.repeat_interval_ms,
                )
            })
            .collect();
        for (route_id, receiver, group_labels, wait, interval, repeat) in routes {
            let key = format!("{route_id}|{receiver}|{}", labels_text(&group_labels));
            let id = hash16(&key);
            let group = self.state.groups.entry(id.clone()).or_insert_with(|| Group {
                id,
                key,
                route_id,
                receiver,
                labels: group_labels,
                alerts: BTreeSet::new(),
                created_at_ms: now_ms,
                next_flush_ms: now_ms + wait as i64,
                group_interval_ms: interval,
                repeat_interval_ms: repeat,
                last: None,
                escalation: EscalationState::default(),
                sent_per_receiver: BTreeMap::new(),
            });
            group.alerts.insert(fp.clone());
        }
        outcome
    }

    /// Whether an active silence matches the alert at `now`.
    pub fn silenced_by(&self, alert: &AlertRecord, now_ms: i64) -> Option<&str> {
        let labels = alert.match_labels();
        self.state
            .silences
            .values()
            .find(|s| s.state(now_ms) == "active" && matcher::all_match(&s.matchers, &labels))
            .map(|s| s.id.as_str())
    }

    /// Whether a firing alert of an inhibition rule's source mutes this one.
    pub fn inhibited(&self, alert: &AlertRecord) -> bool {
        let labels = alert.match_labels();
        self.config.inhibit.iter().any(|rule| {
            matcher::all_match(&rule.target, &labels)
                && self.state.alerts.values().any(|source| {
                    if !source.is_firing() || source.fingerprint == alert.fingerprint {
                        return false;
                    }
                    let sl = source.match_labels();
                    matcher::all_match(&rule.source, &sl) && rule.equal.iter().all(|l| sl.get(l) == labels.get(l))
                })
        })
    }

    fn muted(&self, alert: &AlertRecord, now_ms: i64) -> bool {
        self.silenced_by(alert, now_ms).is_some() || self.inhibited(alert)
    }

    /// `active`, `silenced`, `inhibited` or `resolved`.
    pub fn alert_state(&self, alert: &AlertRecord, now_ms: i64) -> &'static str {
        if !alert.is_firing() {
            "resolved"
        } else if self.silenced_by(alert, now_ms).is_some() {
            "silenced"
        } else if self.inhibited(alert) {
            "inhibited"
        } else {
            "active"
        }
    }

    /// Firing alerts counted by (type, severity, state), state being
    /// `active`, `silenced` or `inhibited`.
    pub fn firing_counts(&self, now_ms: i64) -> BTreeMap<(String, String, &'static str), i64> {
        let mut out = BTreeMap::new();
        for a in self.state.alerts.values().filter(|a| a.is_firing()) {
            *out.entry((a.kind.clone(), a.severity.clone(), self.alert_state(a, now_ms)))
                .or_insert(0) += 1;
        }
        out
    }

    /// The earliest time at which [`Engine::tick`] has work.
    pub fn next_wakeup(&self) -> Option<i64> {
        let expiries = self
            .state
            .alerts
            .values()
            .filter(|a| a.is_firing() && a.expires_at_ms > 0)
            .map(|a| a.expires_at_ms);
        self.state
            .groups
            .values()
            .flat_map(|g| [Some(g.next_flush_ms), g.escalation.due_ms])
            .flatten()
            .chain(expiries)
            .min()
    }

    /// Resolves firing alerts whose sender stopped renewing them (alerts
    /// taken from a Prometheus carry `endsAt`, renewed by every re-send).
    fn expire(&mut self, now_ms: i64) {
        for a in self.state.alerts.values_mut() {
            if a.is_firing() && a.expires_at_ms > 0 && a.expires_at_ms <= now_ms {
                a.status = Status::Resolved;
                a.ends_at_ms = a.expires_at_ms;
                a.id = crate::inbound::alert_id(&a.fingerprint, a.starts_at_ms, Status::Resolved);
                self.state.acks.remove(&a.fingerprint);
            }
        }
    }

    /// Flushes every due group and takes due escalation steps.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Notification> {
        self.expire(now_ms);
        let due: Vec<String> = self
            .state
            .groups
            .values()
            .filter(|g| g.next_flush_ms <= now_ms || g.escalation.due_ms.is_some_and(|d| d <= now_ms))
            .map(|g| g.id.clone())
            .collect();
        let mut out = Vec::new();
        let mut released = Vec::new();
        for id in due {
            if self.state.groups.get(&id).is_some_and(|g| g.next_flush_ms <= now_ms) {
                released.extend(self.flush(&id, now_ms, &mut out));
            }
            if self
                .state
                .groups
                .get(&id)
                .is_some_and(|g| g.escalation.due_ms.is_some_and(|d| d <= now_ms))
            {
                self.escalate(&id, now_ms, &mut out);
            }
        }
        self.collect_garbage(released, now_ms);
        out
    }

    fn split(&self, group: &Group, now_ms: i64) -> (Vec<AlertRecord>, Vec<AlertRecord>) {
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        for fp in &group.alerts {
            let Some(a) = self.state.alerts.get(fp) else { continue };
            if a.is_firing() {
                if !self.muted(a, now_ms) {
                    firing.push(a.clone());
                }
            } else {
                resolved.push(a.clone());
            }
        }
        (firing, resolved)
    }

    fn escalation_candidates(&self, group: &Group, firing: &[AlertRecord]) -> Vec<AlertRecord> {
        let Some(esc) = find_route(&self.config.route, &group.route_id).and_then(|r| r.escalation.as_ref()) else {
            return vec![];
        };
        firing
            .iter()
            .filter(|a| !self.state.acks.contains_key(&a.fingerprint))
            .filter(|a| matcher::all_match(&esc.matchers, &a.match_labels()))
            .cloned()
            .collect()
    }

    /// Flushes one group; returns the resolved alerts that left it.
    fn flush(&mut self, id: &str, now_ms: i64, out: &mut Vec<Notification>) -> BTreeSet<String> {
        let Some(group) = self.state.groups.get(id).cloned() else {
            return BTreeSet::new();
        };
        let policy = self.policy(&group.receiver);
        let (firing, resolved) = self.split(&group, now_ms);
        let firing_set: BTreeSet<String> = firing.iter().map(|a| a.fingerprint.clone()).collect();
        let resolved_set: BTreeSet<String> = resolved.iter().map(|a| a.fingerprint.clone()).collect();
        let all_acked = firing.iter().all(|a| self.state.acks.contains_key(&a.fingerprint));
        let notify = match &group.last {
            None => !firing.is_empty(),
            Some(last) => {
                if !firing_set.is_subset(&last.firing) {
                    true
                } else if firing.is_empty() {
                    !last.firing.is_empty()
                } else if (policy.send_resolved && !resolved_set.is_subset(&last.resolved))
                    || policy.resend_ms.is_some_and(|r| last.at_ms + r as i64 <= now_ms)
                {
                    true
                } else {
                    !all_acked && last.at_ms + group.repeat_interval_ms as i64 <= now_ms
                }
            }
        };
        let mut group = group;
        if notify {
            let sent_resolved = if policy.send_resolved { resolved.clone() } else { vec![] };
            if !firing.is_empty() || !sent_resolved.is_empty() {
                let receiver = group.receiver.clone();
                let n = self.notification(
                    &mut group,
                    &receiver,
                    Kind::Notify,
                    firing.clone(),
                    sent_resolved,
                    None,
                    now_ms,
                );
                out.push(n);
            }
            group.last = Some(Sent {
                firing: firing_set,
                resolved: resolved_set.clone(),
                at_ms: now_ms,
            });
            let esc = find_route(&self.config.route, &group.route_id).and_then(|r| r.escalation.clone());
            if let Some(esc) = esc
                && group.escalation.due_ms.is_none()
                && group.escalation.level < esc.receivers.len()
                && !self.escalation_candidates(&group, &firing).is_empty()
            {
                group.escalation.due_ms = Some(now_ms + esc.after_ms as i64);
            }
        }
        // Resolved alerts leave the group once flushed.
        for fp in &resolved_set {
            group.alerts.remove(fp);
        }
        if group.alerts.is_empty() {
            // Tell escalation receivers the incident is over.
            for receiver in group.escalation.notified.clone() {
                if self.policy(&receiver).send_resolved && !resolved.is_empty() {
                    let n = self.notification(
                        &mut group,
                        &receiver,
                        Kind::Notify,
                        vec![],
                        resolved.clone(),
                        None,
                        now_ms,
                    );
                    out.push(n);
                }
            }
            self.state.groups.remove(id);
        } else {
            let mut next = group.group_interval_ms;
            if let Some(resend) = policy.resend_ms
                && !firing.is_empty()
            {
                next = next.min(resend);
            }
            group.next_flush_ms = now_ms + next as i64;
            self.state.groups.insert(id.to_string(), group);
        }
        resolved_set
    }

    fn escalate(&mut self, id: &str, now_ms: i64, out: &mut Vec<Notification>) {
        let Some(mut group) = self.state.groups.get(id).cloned() else {
            return;
        };
        group.escalation.due_ms = None;
        let esc = find_route(&self.config.route, &group.route_id).and_then(|r| r.escalation.clone());
        if let Some(esc) = esc
            && group.escalation.level < esc.receivers.len()
        {
            let (firing, _) = self.split(&group, now_ms);
            let candidates = self.escalation_candidates(&group, &firing);
            if !candidates.is_empty() {
                let receiver = esc.receivers[group.escalation.level].clone();
                group.escalation.level += 1;
                let level = group.escalation.level;
                if !group.escalation.notified.contains(&receiver) {
                    group.escalation.notified.push(receiver.clone());
                }
                let n = self.notification(
                    &mut group,
                    &receiver,
                    Kind::Escalation { level },
                    candidates,
                    vec![],
                    None,
                    now_ms,
                );
                out.push(n);
                if level < esc.receivers.len() {
                    group.escalation.due_ms = Some(now_ms + esc.after_ms as i64);
                }
            }
        }
        self.state.groups.insert(id.to_string(), group);
    }

    #[allow(clippy::too_many_arguments)]
    fn notification(
        &mut self,
        group: &mut Group,
        receiver: &str,
        kind: Kind,
        firing: Vec<AlertRecord>,
        resolved: Vec<AlertRecord>,
        ack: Option<Ack>,
        now_ms: i64,
    ) -> Notification {
        self.state.seq += 1;
        let thread = group.sent_per_receiver.entry(receiver.to_string()).or_default();
        *thread += 1;
        Notification {
            id: format!("{:012}-{}", self.state.seq, group.id),
            receiver: receiver.to_string(),
            kind,
            group_id: group.id.clone(),
            group_key: group.key.clone(),
            group_labels: group.labels.clone(),
            group_created_ms: group.created_at_ms,
            thread_seq: *thread,
            firing,
            resolved,
            ack,
            created_at_ms: now_ms,
        }
    }

    /// Drops the `released` resolved alerts that no group holds any more,
    /// and silences expired for more than a day.
    fn collect_garbage(&mut self, released: Vec<String>, now_ms: i64) {
        for fp in released {
            let resolved = self.state.alerts.get(&fp).is_some_and(|a| !a.is_firing());
            if !resolved || self.state.groups.values().any(|g| g.alerts.contains(&fp)) {
                continue;
            }
            self.state.alerts.remove(&fp);
            self.state.acks.remove(&fp);
        }
        self.state.silences.retain(|_, s| s.ends_at_ms + 86_400_000 > now_ms);
    }

    /// Acknowledges an alert (by fingerprint) or all firing alerts of a
    /// group. Stops their repeats and escalation; receivers that want
    /// acknowledgements get one.
    pub fn acknowledge(
        &mut self,
        target: &AckTarget,
        by: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<Vec<Notification>, AlerterError> {
        if by.trim().is_empty() {
            return Err(AlerterError::Invalid("acknowledgement needs `by`".into()));
        }
        let fps: Vec<String> = match target {
            AckTarget::Alert(fp) => match self.state.alerts.get(fp) {
                Some(a) if a.is_firing() => vec![fp.clone()],
                _ => {
                    return Err(AlerterError::NotFound {
                        what: "firing alert",
                        id: fp.clone(),
                    });
                }
            },
            AckTarget::Group(id) => {
                let g = self.state.groups.get(id).ok_or_else(|| AlerterError::NotFound {
                    what: "group",
                    id: id.clone(),
                })?;
                g.alerts
                    .iter()
                    .filter(|fp| self.state.alerts.get(*fp).is_some_and(AlertRecord::is_firing))
                    .cloned()
                    .collect()
            }
        };
        let ack = Ack {
            by: by.to_string(),
            comment: comment.to_string(),
            at_ms: now_ms,
        };
        let mut fresh = Vec::new();
        for fp in &fps {
            if !self.state.acks.contains_key(fp) {
                self.state.acks.insert(fp.clone(), ack.clone());
                fresh.push(fp.clone());
            }
        }
        let mut out = Vec::new();
        let ids: Vec<String> = self
            .state
            .groups
            .values()
            .filter(|g| g.last.is_some() && fresh.iter().any(|fp| g.alerts.contains(fp)))
            .map(|g| g.id.clone())
            .collect();
        for id in ids {
            let Some(mut group) = self.state.groups.get(&id).cloned() else {
                continue;
            };
            let alerts: Vec<AlertRecord> = fresh
                .iter()
                .filter(|fp| group.alerts.contains(*fp))
                .filter_map(|fp| self.state.alerts.get(fp).cloned())
                .collect();
            let mut receivers = vec![group.receiver.clone()];
            receivers.extend(group.escalation.notified.iter().cloned());
            for receiver in receivers {
                if self.policy(&receiver).send_acknowledged {
                    let n = self.notification(
                        &mut group,
                        &receiver,
                        Kind::Acknowledged,
                        alerts.clone(),
                        vec![],
                        Some(ack.clone()),
                        now_ms,
                    );
                    out.push(n);
                }
            }
            self.state.groups.insert(id, group);
        }
        Ok(out)
    }

    /// Adds a silence; returns its id.
    pub fn add_silence(&mut self, req: &SilenceRequest, now_ms: i64) -> Result<String, AlerterError> {
        if req.matchers.is_empty() {
            return Err(AlerterError::Invalid("a silence needs at least one matcher".into()));
        }
        if req.created_by.trim().is_empty() {
            return Err(AlerterError::Invalid("a silence needs created_by".into()));
        }
        let matchers = matcher::parse_all(&req.matchers)?;
        let starts = req.starts_at_ms.unwrap_or(now_ms);
        if req.ends_at_ms <= starts || req.ends_at_ms <= now_ms {
            return Err(AlerterError::Invalid(format!(
                "ends_at_ms {} must be after starts_at_ms {starts} and now",
                req.ends_at_ms
            )));
        }
        self.state.seq += 1;
        let id = hash16(&format!("silence|{}|{now_ms}", self.state.seq));
        self.state.silences.insert(
            id.clone(),
            Silence {
                id: id.clone(),
                matchers,
                starts_at_ms: starts,
                ends_at_ms: req.ends_at_ms,
                created_by: req.created_by.clone(),
                comment: req.comment.clone(),
                created_at_ms: now_ms,
            },
        );
        Ok(id)
    }

    /// Ends a silence now (idempotent).
    pub fn expire_silence(&mut self, id: &str, now_ms: i64) -> Result<(), AlerterError> {
        let s = self.state.silences.get_mut(id).ok_or_else(|| AlerterError::NotFound {
            what: "silence",
            id: id.to_string(),
        })?;
        if s.ends_at_ms > now_ms {
            s.ends_at_ms = now_ms;
            if s.starts_at_ms > now_ms {
                s.starts_at_ms = now_ms;
            }
        }
        Ok(())
    }
}
