//! Timeline tests in the manner of Alertmanager's acceptance tests, on the
//! pure engine with a clock the test controls: alerts are pushed at given
//! times, time advances from one wake-up of the engine to the next, and
//! the exact notifications (time, receiver, kind, firing and resolved
//! alerts) are compared with the expected ones.

mod support;

use std::collections::BTreeMap;

use mlwatch_alerter::alert::{AlertRecord, Status};
use mlwatch_alerter::engine::{
    AckTarget, Engine, EngineConfig, InhibitRule, InhibitRuleConfig, Kind, Notification, ReceiverPolicy,
    SilenceRequest, State,
};
use mlwatch_alerter::route::{EscalationConfig, Route, RouteConfig};

const S: i64 = 1000;
const M: i64 = 60 * S;

fn alert(fp: &str, kind: &str, severity: &str, model: &str, status: Status, at: i64) -> AlertRecord {
    support::record(fp, kind, severity, model, status, at)
}

fn firing(fp: &str, kind: &str, severity: &str, model: &str, at: i64) -> AlertRecord {
    alert(fp, kind, severity, model, Status::Firing, at)
}

fn resolved(fp: &str, kind: &str, severity: &str, model: &str, at: i64) -> AlertRecord {
    alert(fp, kind, severity, model, Status::Resolved, at)
}

/// What the test sees of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    at: i64,
    receiver: String,
    kind: Kind,
    firing: Vec<String>,
    resolved: Vec<String>,
}

fn note(at: i64, receiver: &str, firing: &[&str], resolved: &[&str]) -> Seen {
    Seen {
        at,
        receiver: receiver.into(),
        kind: Kind::Notify,
        firing: firing.iter().map(|s| s.to_string()).collect(),
        resolved: resolved.iter().map(|s| s.to_string()).collect(),
    }
}

fn sorted(mut v: Vec<Seen>) -> Vec<Seen> {
    v.sort_by(|a, b| (a.at, &a.receiver, &a.firing, &a.resolved).cmp(&(b.at, &b.receiver, &b.firing, &b.resolved)));
    v
}

enum Event {
    Push(AlertRecord),
    Ack(AckTarget, &'static str),
    Silence(SilenceRequest),
}

/// A timeline: events at given times, run until `end`.
struct Timeline {
    engine: Engine,
    events: Vec<(i64, Event)>,
}

impl Timeline {
    fn new(route: RouteConfig) -> Self {
        Self::with(route, vec![], BTreeMap::new())
    }

    fn with(route: RouteConfig, inhibit: Vec<InhibitRuleConfig>, policies: BTreeMap<String, ReceiverPolicy>) -> Self {
        let config = EngineConfig {
            route: Route::compile(&route).expect("route compiles"),
            inhibit: inhibit.iter().map(|r| InhibitRule::compile(r).unwrap()).collect(),
            policies,
        };
        Self {
            engine: Engine::new(config, State::default()),
            events: vec![],
        }
    }

    fn push(mut self, at: i64, a: AlertRecord) -> Self {
        self.events.push((at, Event::Push(a)));
        self
    }

    fn ack(mut self, at: i64, target: AckTarget, by: &'static str) -> Self {
        self.events.push((at, Event::Ack(target, by)));
        self
    }

    fn silence(mut self, at: i64, req: SilenceRequest) -> Self {
        self.events.push((at, Event::Silence(req)));
        self
    }

    /// Runs the clock from 0 to `end`, waking at each event and each time
    /// the engine asks for; returns every notification made.
    fn run(mut self, end: i64) -> (Vec<Seen>, Vec<Notification>) {
        self.events.sort_by_key(|(at, _)| *at);
        let mut events = self.events.into_iter().peekable();
        let mut out = Vec::new();
        let mut raw = Vec::new();
        let mut now = 0;
        loop {
            let next_event = events.peek().map(|(at, _)| *at);
            let next = [next_event, self.engine.next_wakeup()].into_iter().flatten().min();
            let Some(next) = next else { break };
            if next > end {
                break;
            }
            now = now.max(next);
            let mut made = Vec::new();
            while events.peek().is_some_and(|(at, _)| *at <= now) {
                let (_, e) = events.next().unwrap();
                match e {
                    Event::Push(a) => {
                        self.engine.ingest(a, now);
                    }
                    Event::Ack(target, by) => made.extend(self.engine.acknowledge(&target, by, "on it", now).unwrap()),
                    Event::Silence(req) => {
                        self.engine.add_silence(&req, now).unwrap();
                    }
                }
            }
            made.extend(self.engine.tick(now));
            for n in made {
                out.push(Seen {
                    at: now,
                    receiver: n.receiver.clone(),
                    kind: n.kind,
                    firing: n.firing.iter().map(|a| a.fingerprint.clone()).collect(),
                    resolved: n.resolved.iter().map(|a| a.fingerprint.clone()).collect(),
                });
                raw.push(n);
            }
        }
        (out, raw)
    }
}

/// One receiver, grouped by model, Alertmanager's default timings.
fn simple() -> RouteConfig {
    RouteConfig {
        receiver: Some("slack".into()),
        group_by: Some(vec!["model".into()]),
        ..RouteConfig::default()
    }
}

#[test]
fn grouping_waits_group_wait_then_batches_changes_per_group_interval() {
    let (seen, _) = Timeline::new(simple())
        .push(0, firing("a1", "HighP99Latency", "high", "fraud", 0))
        .push(10 * S, firing("a2", "FeatureDrift", "medium", "fraud", 10 * S))
        .push(10 * S, firing("b1", "FeatureDrift", "medium", "churn", 10 * S))
        // Redelivery of a1: no change.
        .push(20 * S, firing("a1", "HighP99Latency", "high", "fraud", 0))
        // New alert in an already notified group: waits for group_interval.
        .push(60 * S, firing("a3", "AccuracyDecay", "high", "fraud", 60 * S))
        .run(6 * M);
    assert_eq!(
        seen,
        vec![
            // group_wait (30 s) from each group's first alert.
            note(30 * S, "slack", &["a1", "a2"], &[]),
            note(40 * S, "slack", &["b1"], &[]),
            // group_interval (5 min) after the first flush.
            note(30 * S + 5 * M, "slack", &["a1", "a2", "a3"], &[]),
        ]
    );
}

#[test]
fn unchanged_group_repeats_after_repeat_interval() {
    let mut route = simple();
    route.repeat_interval_ms = Some(60 * M as u64);
    let (seen, _) = Timeline::new(route)
        .push(0, firing("a1", "HighP99Latency", "high", "fraud", 0))
        .run(2 * 60 * M + 10 * M);
    // Flushes every 5 min, but only notifies when 60 min passed since the
    // last notification: at 30 s, 60 min 30 s, 120 min 30 s.
    assert_eq!(
        seen,
        vec![
            note(30 * S, "slack", &["a1"], &[]),
            note(30 * S + 60 * M, "slack", &["a1"], &[]),
            note(30 * S + 120 * M, "slack", &["a1"], &[]),
        ]
    );
}

#[test]
fn default_repeat_interval_is_four_hours() {
    let (seen, _) = Timeline::new(simple())
        .push(0, firing("a1", "HighP99Latency", "high", "fraud", 0))
        .run(5 * 60 * M);
    let times: Vec<i64> = seen.iter().map(|s| s.at).collect();
    assert_eq!(times, vec![30 * S, 30 * S + 240 * M]);
}

#[test]
fn resolve_is_notified_once_and_per_receiver_it_can_be_turned_off() {
    let mut route = simple();
    route.routes = vec![
        RouteConfig {
            receiver: Some("email".into()),
            matchers: vec![r#"severity="high""#.into()],
            continue_matching: true,
            ..RouteConfig::default()
        },
        RouteConfig {
            receiver: Some("slack".into()),
            matchers: vec![r#"severity=~"high|medium""#.into()],
            ..RouteConfig::default()
        },
    ];
    let policies = [(
        "email".to_string(),
        ReceiverPolicy {
            send_resolved: false,
            send_acknowledged: false,
            resend_ms: None,
        },
    )]
    .into();
    let (seen, raw) = Timeline::with(route, vec![], policies)
        .push(0, firing("a1", "HighP99Latency", "high", "fraud", 0))
        .push(0, firing("a2", "FeatureDrift", "medium", "fraud", 0))
        .push(2 * M, resolved("a1", "HighP99Latency", "high", "fraud", 2 * M))
        .push(8 * M, resolved("a2", "FeatureDrift", "medium", "fraud", 8 * M))
        .run(30 * M);
    assert_eq!(
        sorted(seen),
        sorted(vec![
            note(30 * S, "email", &["a1"], &[]),
            note(30 * S, "slack", &["a1", "a2"], &[]),
            // a1 resolved at 2 min: slack hears it at the 5 min 30 s flush;
            // email does not want resolves.
            note(30 * S + 5 * M, "slack", &["a2"], &["a1"]),
            // a2 resolved at 8 min: the 10 min 30 s flush.
            note(30 * S + 10 * M, "slack", &[], &["a2"]),
        ])
    );
    assert!(raw.iter().all(|n| n.receiver != "email" || n.resolved.is_empty()));
}

#[test]
fn alert_that_fires_and_resolves_between_flushes_is_reported_once_as_resolved() {
    let (seen, _) = Timeline::new(simple())
        .push(0, firing("a1", "HighP99Latency", "high", "fraud", 0))
        .push(6 * M, firing("a3", "FeatureDrift", "medium", "fraud", 6 * M))
        .push(7 * M, resolved("a3", "FeatureDrift", "medium", "fraud", 7 * M))
        .run(20 * M);
    assert_eq!(
        seen,
        vec![
            note(30 * S, "slack", &["a1"], &[]),
            // a3 came and went within one interval: send_resolved reports
            // the resolve as new information, once.
            note(30 * S + 10 * M, "slack", &["a1"], &["a3"]),
        ]
    );
}

#[test]
fn critical_inhibits_medium_of_the_same_model_only() {
    let rule = InhibitRuleConfig {
        source_matchers: vec![r#"severity="critical""#.into()],
        target_matchers: vec![r#"severity=~"medium|low""#.into()],
        equal: vec!["model".into()],
    };
    let mut route = simple();
    route.group_by = Some(vec!["...".into()]);
    let (seen, _) = Timeline::with(route, vec![rule], BTreeMap::new())
        .push(0, firing("crit", "ModelDown", "critical", "fraud", 0))
        .push(0, firing("med", "FeatureDrift", "medium", "fraud", 0))
        .push(0, firing("other", "FeatureDrift", "medium", "churn", 0))
        // The critical one resolves: the medium one is no longer muted.
        .push(7 * M, resolved("crit", "ModelDown", "critical", "fraud", 7 * M))
        .run(20 * M);
    assert_eq!(
        sorted(seen),
        sorted(vec![
            note(30 * S, "slack", &["crit"], &[]),
            note(30 * S, "slack", &["other"], &[]),
            // Both groups flush at 10 min 30 s: crit's resolve, and med,
            // unmuted since crit resolved.
            note(30 * S + 10 * M, "slack", &[], &["crit"]),
            note(30 * S + 10 * M, "slack", &["med"], &[]),
        ])
    );
}

#[test]
fn silences_mute_between_start_and_end() {
    let (seen, _) = Timeline::new(simple())
        .silence(
            0,
            SilenceRequest {
                matchers: vec![r#"model="fraud""#.into(), r#"type=~"Feature.*""#.into()],
                starts_at_ms: Some(0),
                ends_at_ms: 12 * M,
                created_by: "ana".into(),
                comment: "retraining".into(),
            },
        )
        .push(0, firing("drift", "FeatureDrift", "medium", "fraud", 0))
        .push(M, firing("lat", "HighP99Latency", "high", "fraud", M))
        .run(20 * M);
    assert_eq!(
        seen,
        vec![
            // The group's first flush (30 s) finds only drift, silenced:
            // nothing. lat arrives; the 5 min 30 s flush sends lat only.
            note(30 * S + 5 * M, "slack", &["lat"], &[]),
            // The silence ends at 12 min; the 15 min 30 s flush adds drift.
            note(30 * S + 15 * M, "slack", &["drift", "lat"], &[]),
        ]
    );
}

fn escalating() -> RouteConfig {
    RouteConfig {
        receiver: Some("pagerduty".into()),
        group_by: Some(vec!["model".into()]),
        group_wait_ms: Some(0),
        escalation: Some(EscalationConfig {
            after_ms: 15 * M as u64,
            receivers: vec!["oncall-secondary".into(), "eng-manager".into()],
            matchers: vec![r#"severity="critical""#.into()],
        }),
        ..RouteConfig::default()
    }
}

#[test]
fn unacknowledged_critical_escalates_step_by_step() {
    let (seen, _) = Timeline::new(escalating())
        .push(0, firing("c1", "ModelDown", "critical", "fraud", 0))
        .push(0, firing("h1", "HighP99Latency", "high", "fraud", 0))
        .run(40 * M);
    let mut expected = vec![
        note(0, "pagerduty", &["c1", "h1"], &[]),
        // Only the critical alert escalates.
        note(15 * M, "oncall-secondary", &["c1"], &[]),
        note(30 * M, "eng-manager", &["c1"], &[]),
    ];
    expected[1].kind = Kind::Escalation { level: 1 };
    expected[2].kind = Kind::Escalation { level: 2 };
    assert_eq!(seen, expected);
}

#[test]
fn acknowledgement_stops_escalation_and_repeats_and_is_sent_to_who_wants_it() {
    let policies = [(
        "pagerduty".to_string(),
        ReceiverPolicy {
            send_resolved: true,
            send_acknowledged: true,
            resend_ms: None,
        },
    )]
    .into();
    let mut route = escalating();
    route.repeat_interval_ms = Some(20 * M as u64);
    let (seen, raw) = Timeline::with(route, vec![], policies)
        .push(0, firing("c1", "ModelDown", "critical", "fraud", 0))
        .ack(10 * M, AckTarget::Alert("c1".into()), "bob")
        .push(50 * M, resolved("c1", "ModelDown", "critical", "fraud", 50 * M))
        .run(60 * M);
    let mut ack = note(10 * M, "pagerduty", &["c1"], &[]);
    ack.kind = Kind::Acknowledged;
    assert_eq!(
        seen,
        vec![
            note(0, "pagerduty", &["c1"], &[]),
            ack,
            // No escalation at 15 min, no repeat at 20 or 40 min; the
            // resolve comes at the first flush after 50 min.
            note(50 * M, "pagerduty", &[], &["c1"]),
        ]
    );
    assert_eq!(raw[1].ack.as_ref().unwrap().by, "bob");
}

#[test]
fn escalated_receivers_hear_the_resolve() {
    let (seen, _) = Timeline::new(escalating())
        .push(0, firing("c1", "ModelDown", "critical", "fraud", 0))
        .push(17 * M, resolved("c1", "ModelDown", "critical", "fraud", 17 * M))
        .run(40 * M);
    let mut esc = note(15 * M, "oncall-secondary", &["c1"], &[]);
    esc.kind = Kind::Escalation { level: 1 };
    assert_eq!(
        seen,
        vec![
            note(0, "pagerduty", &["c1"], &[]),
            esc,
            note(20 * M, "pagerduty", &[], &["c1"]),
            note(20 * M, "oncall-secondary", &[], &["c1"]),
        ]
    );
}

#[test]
fn design_default_routes_page_every_channel_for_high() {
    let (seen, _) = Timeline::new(RouteConfig::design_defaults())
        .push(0, firing("h", "HighP99Latency", "high", "fraud", 0))
        .push(0, firing("m", "FeatureDrift", "medium", "fraud", 0))
        .push(0, firing("l", "DataQuality", "low", "fraud", 0))
        .run(M);
    let mut receivers: Vec<(String, Vec<String>)> =
        seen.iter().map(|s| (s.receiver.clone(), s.firing.clone())).collect();
    receivers.sort();
    let r = |n: &str, a: &str| (n.to_string(), vec![a.to_string()]);
    assert_eq!(
        receivers,
        vec![
            r("email", "h"),
            r("pagerduty", "h"),
            r("slack", "h"),
            r("slack", "m"),
            r("slack-info", "l")
        ]
    );
}

#[test]
fn stale_updates_and_unknown_resolves_are_ignored() {
    let (seen, _) = Timeline::new(simple())
        .push(0, resolved("ghost", "X", "low", "fraud", 0))
        .push(M, firing("a1", "X", "low", "fraud", M))
        // An older resolve arriving late does not resolve the newer firing.
        .push(2 * M, resolved("a1", "X", "low", "fraud", 0))
        .run(10 * M);
    assert_eq!(seen, vec![note(M + 30 * S, "slack", &["a1"], &[])]);
}

#[test]
fn acknowledging_a_group_acknowledges_its_firing_alerts_and_stops_repeats() {
    let mut route = simple();
    route.group_wait_ms = Some(0);
    route.repeat_interval_ms = Some(10 * M as u64);
    let config = EngineConfig {
        route: Route::compile(&route).unwrap(),
        inhibit: vec![],
        policies: BTreeMap::new(),
    };
    let mut engine = Engine::new(config, State::default());
    engine.ingest(firing("a1", "X", "high", "fraud", 0), 0);
    engine.ingest(firing("a2", "Y", "high", "fraud", 0), 0);
    assert_eq!(engine.tick(0).len(), 1);
    let group = engine.state.groups.keys().next().unwrap().clone();
    // Slack does not want acknowledgements: none is sent.
    assert!(
        engine
            .acknowledge(&AckTarget::Group(group.clone()), "ana", "mine", M)
            .unwrap()
            .is_empty()
    );
    assert_eq!(engine.state.acks.len(), 2);
    assert_eq!(engine.state.acks["a1"].by, "ana");
    // No repeat at 10 min while both are acknowledged…
    let mut now = M;
    while now < 30 * M {
        now = engine.next_wakeup().unwrap();
        assert!(engine.tick(now).is_empty(), "repeat at {now}");
    }
    // …errors name what is missing…
    let e = engine
        .acknowledge(&AckTarget::Group("nope".into()), "ana", "", now)
        .unwrap_err();
    assert_eq!(e.to_string(), "group nope not found");
    let e = engine
        .acknowledge(&AckTarget::Alert("a1".into()), " ", "", now)
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid request: acknowledgement needs `by`");
    // …and a new alert in the group is news again.
    engine.ingest(firing("a3", "Z", "high", "fraud", now), now);
    let next = engine.next_wakeup().unwrap();
    let sent = engine.tick(next);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].firing.len(), 3);
}

/// An engine on the simple route, no inhibition, default policies.
fn simple_engine() -> Engine {
    Engine::new(
        EngineConfig {
            route: Route::compile(&simple()).unwrap(),
            inhibit: vec![],
            policies: BTreeMap::new(),
        },
        State::default(),
    )
}

#[test]
fn silences_are_validated_listed_and_expired() {
    let mut engine = simple_engine();
    let req = |matchers: Vec<&str>, ends: i64, by: &str| SilenceRequest {
        matchers: matchers.into_iter().map(String::from).collect(),
        starts_at_ms: None,
        ends_at_ms: ends,
        created_by: by.into(),
        comment: String::new(),
    };
    assert!(engine.add_silence(&req(vec![], M, "ana"), 0).is_err());
    assert!(engine.add_silence(&req(vec!["model=x"], M, ""), 0).is_err());
    assert!(engine.add_silence(&req(vec!["model=x"], 0, "ana"), 0).is_err());
    let e = engine.add_silence(&req(vec!["model=~("], M, "ana"), 0).unwrap_err();
    assert!(e.to_string().starts_with("bad matcher"), "{e}");
    let id = engine
        .add_silence(&req(vec![r#"model="fraud""#], 10 * M, "ana"), 0)
        .unwrap();
    let a = firing("a1", "X", "high", "fraud", 0);
    assert_eq!(engine.silenced_by(&a, M), Some(id.as_str()));
    engine.expire_silence(&id, 2 * M).unwrap();
    assert_eq!(engine.state.silences[&id].state(2 * M), "expired");
    assert_eq!(engine.silenced_by(&a, 2 * M), None);
    assert!(engine.expire_silence("nope", 2 * M).is_err());
}

#[test]
fn resolved_alerts_are_forgotten_once_every_group_reported_them() {
    let mut route = simple();
    route.group_wait_ms = Some(0);
    route.routes = vec![
        RouteConfig {
            receiver: Some("email".into()),
            continue_matching: true,
            group_interval_ms: Some(M as u64),
            ..RouteConfig::default()
        },
        RouteConfig {
            receiver: Some("slack".into()),
            ..RouteConfig::default()
        },
    ];
    let config = EngineConfig {
        route: Route::compile(&route).unwrap(),
        inhibit: vec![],
        policies: BTreeMap::new(),
    };
    let mut engine = Engine::new(config, State::default());
    engine.ingest(firing("a1", "X", "high", "fraud", 0), 0);
    engine
        .acknowledge(&AckTarget::Alert("a1".into()), "ana", "", 0)
        .unwrap();
    assert_eq!(engine.tick(0).len(), 2);
    engine.ingest(resolved("a1", "X", "high", "fraud", S), S);
    // The email group (1 min interval) reports it first; slack's (5 min)
    // still holds it.
    assert_eq!(engine.tick(M).len(), 1);
    assert!(engine.state.alerts.contains_key("a1"));
    assert_eq!(engine.tick(5 * M).len(), 1);
    assert!(engine.state.alerts.is_empty());
    assert!(engine.state.groups.is_empty());
    assert!(engine.state.acks.is_empty());
}

#[test]
fn firing_alerts_are_counted_by_type_severity_and_state() {
    let mut engine = simple_engine();
    engine.ingest(firing("a", "HighP99Latency", "high", "fraud", 0), 0);
    engine.ingest(firing("b", "HighP99Latency", "high", "recsys", 0), 0);
    engine.ingest(firing("c", "FeatureDrift", "medium", "fraud", 0), 0);
    engine
        .add_silence(
            &SilenceRequest {
                matchers: vec![r#"type="FeatureDrift""#.into()],
                starts_at_ms: Some(0),
                ends_at_ms: 10 * M,
                created_by: "ana".into(),
                comment: "known upstream change".into(),
            },
            0,
        )
        .unwrap();
    let counts = engine.firing_counts(S);
    let want: BTreeMap<(String, String, &str), i64> = [
        (("FeatureDrift".to_string(), "medium".to_string(), "silenced"), 1),
        (("HighP99Latency".to_string(), "high".to_string(), "active"), 2),
    ]
    .into();
    assert_eq!(counts, want);
    engine.ingest(resolved("a", "HighP99Latency", "high", "fraud", 2 * S), 2 * S);
    engine.ingest(resolved("b", "HighP99Latency", "high", "recsys", 2 * S), 2 * S);
    let counts = engine.firing_counts(11 * M);
    assert_eq!(
        counts,
        [(("FeatureDrift".to_string(), "medium".to_string(), "active"), 1)].into()
    );
}

#[test]
fn an_alertmanager_receiver_hears_firing_alerts_every_resend_interval_until_resolved() {
    let policies = BTreeMap::from([(
        "slack".to_string(),
        ReceiverPolicy {
            resend_ms: Some(M as u64),
            ..ReceiverPolicy::default()
        },
    )]);
    let (seen, _) = Timeline::with(simple(), vec![], policies)
        .push(0, firing("a1", "HighP99Latency", "high", "fraud", 0))
        // Acknowledged: a pager would go quiet, an Alertmanager must not.
        .ack(2 * M, AckTarget::Alert("a1".into()), "ana")
        .push(10 * M, resolved("a1", "HighP99Latency", "high", "fraud", 10 * M))
        .run(20 * M);
    let mut want: Vec<Seen> = (0..10).map(|i| note(30 * S + i * M, "slack", &["a1"], &[])).collect();
    want.push(note(10 * M + 30 * S, "slack", &[], &["a1"]));
    assert_eq!(
        seen.into_iter().filter(|s| s.kind == Kind::Notify).collect::<Vec<_>>(),
        want
    );
}

#[test]
fn an_alert_with_an_expiry_resolves_at_it_unless_renewed() {
    let expiring = |fp: &str, at: i64, expires: i64| {
        let mut a = firing(fp, "MlwatchServiceDown", "critical", "fraud", at);
        a.expires_at_ms = expires;
        a
    };
    let (seen, raw) = Timeline::new(simple())
        .push(0, expiring("a1", 0, 5 * M))
        // Renewed before it expires (a Prometheus re-sends every minute)…
        .push(4 * M, expiring("a1", 4 * M, 9 * M))
        // …then no more: it resolves at 9 min, seen at the next group flush.
        .run(30 * M);
    assert_eq!(
        seen,
        vec![
            note(30 * S, "slack", &["a1"], &[]),
            note(10 * M + 30 * S, "slack", &[], &["a1"])
        ]
    );
    let last = &raw.last().unwrap().resolved[0];
    assert_eq!(last.ends_at_ms, 9 * M);
    assert_eq!(last.status, Status::Resolved);
}
