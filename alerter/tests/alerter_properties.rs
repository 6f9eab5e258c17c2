//! Property tests of the engine over random timelines of firing, resolving,
//! silencing and acknowledging, with a controlled clock:
//!
//! - restarting from the persisted state at any moment changes nothing: an
//!   engine whose state is committed to the store (in memory) and read back
//!   after every step makes exactly the notifications of one that never
//!   stopped;
//! - no notification pages an alert that is silenced or inhibited at that
//!   moment, and no escalation pages an acknowledged one;
//! - a group's first notification waits `group_wait`, later ones are at
//!   least `group_interval` apart;
//! - every alert still firing and unmuted at the end has been notified.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use mlwatch_alerter::alert::{AlertRecord, Status};
use mlwatch_alerter::engine::{
    AckTarget, Engine, EngineConfig, InhibitRule, InhibitRuleConfig, Kind, Notification, ReceiverPolicy,
    SilenceRequest, State,
};
use mlwatch_alerter::route::{EscalationConfig, Route, RouteConfig};
use mlwatch_alerter::store::Store;
use proptest::prelude::*;

const WAIT: i64 = 10_000;
const INTERVAL: i64 = 30_000;
const SEVERITIES: [&str; 4] = ["critical", "high", "medium", "low"];

#[derive(Debug, Clone)]
enum Op {
    Fire(usize),
    Resolve(usize),
    Silence { model: usize, for_ms: i64 },
    Ack(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..8usize).prop_map(Op::Fire),
        2 => (0..8usize).prop_map(Op::Resolve),
        1 => (0..3usize, 1_000..120_000i64).prop_map(|(model, for_ms)| Op::Silence { model, for_ms }),
        1 => (0..8usize).prop_map(Op::Ack),
    ]
}

fn alert(i: usize, status: Status, at: i64) -> AlertRecord {
    support::record(
        &format!("a{i}"),
        &format!("T{}", i % 2),
        SEVERITIES[i % 4],
        &format!("m{}", i % 3),
        status,
        at,
    )
}

fn config() -> EngineConfig {
    static CONFIG: std::sync::OnceLock<EngineConfig> = std::sync::OnceLock::new();
    CONFIG.get_or_init(build_config).clone()
}

fn build_config() -> EngineConfig {
    let route = RouteConfig {
        receiver: Some("slack".into()),
        group_by: Some(vec!["model".into()]),
        group_wait_ms: Some(WAIT as u64),
        group_interval_ms: Some(INTERVAL as u64),
        repeat_interval_ms: Some(120_000),
        routes: vec![
            RouteConfig {
                receiver: Some("pagerduty".into()),
                matchers: vec![r#"severity=~"critical|high""#.into()],
                continue_matching: true,
                escalation: Some(EscalationConfig {
                    after_ms: 60_000,
                    receivers: vec!["secondary".into(), "manager".into()],
                    matchers: vec![r#"severity="critical""#.into()],
                }),
                ..RouteConfig::default()
            },
            RouteConfig {
                receiver: Some("slack".into()),
                ..RouteConfig::default()
            },
        ],
        ..RouteConfig::default()
    };
    let inhibit = InhibitRuleConfig {
        source_matchers: vec![r#"severity="critical""#.into()],
        target_matchers: vec![r#"severity=~"medium|low""#.into()],
        equal: vec!["model".into()],
    };
    EngineConfig {
        route: Route::compile(&route).unwrap(),
        inhibit: vec![InhibitRule::compile(&inhibit).unwrap()],
        policies: [(
            "pagerduty".to_string(),
            ReceiverPolicy {
                send_resolved: true,
                send_acknowledged: true,
                resend_ms: None,
            },
        )]
        .into(),
    }
}

/// Applies an operation; errors (ack of an unknown alert) are fine.
fn apply(engine: &mut Engine, op: &Op, now: i64) -> Vec<Notification> {
    match op {
        Op::Fire(i) => {
            engine.ingest(alert(*i, Status::Firing, now), now);
            vec![]
        }
        Op::Resolve(i) => {
            engine.ingest(alert(*i, Status::Resolved, now), now);
            vec![]
        }
        Op::Silence { model, for_ms } => {
            let req = SilenceRequest {
                matchers: vec![format!("model=\"m{model}\"")],
                starts_at_ms: None,
                ends_at_ms: now + for_ms,
                created_by: "prop".into(),
                comment: String::new(),
            };
            engine.add_silence(&req, now).unwrap();
            vec![]
        }
        Op::Ack(i) => engine
            .acknowledge(&AckTarget::Alert(format!("a{i}")), "prop", "", now)
            .unwrap_or_default(),
    }
}

/// Commits the engine's state to the store, then starts a new engine from
/// what the store reads back (a restart).
fn reload(engine: Engine, store: &mut Store, made: &[Notification], now: i64) -> Engine {
    store.commit(&engine.state, made, now).unwrap();
    Engine::new(config(), store.load().unwrap())
}

/// Runs the timeline; `restart` reloads the state after every step.
/// Checks the per-notification invariants as it goes.
fn run(events: &[(i64, Op)], end: i64, restart: bool) -> Vec<(i64, Notification)> {
    let mut engine = Engine::new(config(), State::default());
    let mut store = Store::open(None).unwrap();
    store.load().unwrap();
    let mut out = Vec::new();
    let mut now = 0;
    let mut next_event = 0;
    loop {
        let at_event = events.get(next_event).map(|(at, _)| *at);
        let Some(next) = [at_event, engine.next_wakeup()].into_iter().flatten().min() else {
            break;
        };
        if next > end {
            break;
        }
        now = now.max(next);
        let mut made = Vec::new();
        while events.get(next_event).is_some_and(|(at, _)| *at <= now) {
            made.extend(apply(&mut engine, &events[next_event].1, now));
            next_event += 1;
        }
        made.extend(engine.tick(now));
        for n in &made {
            if n.kind != Kind::Acknowledged {
                for a in &n.firing {
                    assert!(
                        engine.silenced_by(a, now).is_none(),
                        "silenced {} paged at {now}",
                        a.fingerprint
                    );
                    assert!(!engine.inhibited(a), "inhibited {} paged at {now}", a.fingerprint);
                    if matches!(n.kind, Kind::Escalation { .. }) {
                        assert!(
                            !engine.state.acks.contains_key(&a.fingerprint),
                            "acked {} escalated",
                            a.fingerprint
                        );
                    }
                }
            }
        }
        if restart {
            engine = reload(engine, &mut store, &made, now);
        }
        out.extend(made.into_iter().map(|n| (now, n)));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn engine_invariants_hold_on_random_timelines(
        steps in prop::collection::vec((0..40_000i64, op()), 1..40)
    ) {
        let mut at = 0;
        let events: Vec<(i64, Op)> = steps
            .into_iter()
            .map(|(gap, op)| {
                at += gap;
                (at, op)
            })
            .collect();
        let end = at + 600_000;
        let straight = run(&events, end, false);
        let restarted = run(&events, end, true);
        prop_assert_eq!(&straight, &restarted);

        // Timing per group and receiver.
        // A group emptied by resolves is deleted; the same labels later make
        // a new group (a new incident), told apart by its creation time.
        let mut last: BTreeMap<(String, i64, String), i64> = BTreeMap::new();
        for (now, n) in &straight {
            if n.kind != Kind::Notify || !["slack", "pagerduty"].contains(&n.receiver.as_str()) {
                continue;
            }
            let key = (n.group_id.clone(), n.group_created_ms, n.receiver.clone());
            match last.get(&key) {
                None => prop_assert!(*now >= n.group_created_ms + WAIT, "first page before group_wait"),
                Some(prev) => prop_assert!(*now >= prev + INTERVAL, "pages {prev} and {now} closer than group_interval"),
            }
            last.insert(key, *now);
        }

        let mut engine = Engine::new(config(), State::default());
        let mut last_fire: BTreeMap<usize, i64> = BTreeMap::new();
        // Liveness: alerts firing and unmuted at the end were paged after
        // their current firing episode began.
        for (at, op) in &events {
            match op {
                // The start of the current firing episode.
                Op::Fire(i) => { last_fire.entry(*i).or_insert(*at); }
                Op::Resolve(i) => { last_fire.remove(i); }
                _ => {}
            }
            apply(&mut engine, op, *at);
        }
        let paged: BTreeSet<(String, i64)> = straight
            .iter()
            .flat_map(|(now, n)| n.firing.iter().map(move |a| (a.fingerprint.clone(), *now)))
            .collect();
        for (i, fired_at) in last_fire {
            let a = alert(i, Status::Firing, fired_at);
            if engine.silenced_by(&a, end).is_some() || engine.inhibited(&a) {
                continue;
            }
            prop_assert!(
                paged.iter().any(|(fp, t)| *fp == a.fingerprint && *t >= fired_at),
                "a{} never paged", i
            );
        }
    }
}
