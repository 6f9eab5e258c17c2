//! The run command's story: three incidents injected one after another
//! into a running [`Stack`], each told live with timestamps — detected (the
//! analyzer's alert), paged (Slack and PagerDuty at the local HTTP
//! receivers, email at the mail catcher, its contents shown), remediated
//! (the call on the simulated serving platform, or the action recorded),
//! resolved — then a summary table.
//!
//! 1. latency surge on `fraud` → `HighP99Latency` → scale-up;
//! 2. accuracy decay of `fraud v4`, whose labels arrive 20–50 s late →
//!    `AccuracyDecay` → rollback to v3; accuracy recovers, the alert of the
//!    retired v4 resolves;
//! 3. covariate drift of `recsys`'s `amount` → `FeatureDrift` → paged only:
//!    a person reads the drift report and the upstream fix restores the
//!    input (why no automatic action: docs/demo.md).
//!
//! The `mlwatch-demo` binary and the integration test run the same code;
//! what is told goes to a caller-supplied sink.

use std::time::{Duration, Instant};

use anyhow::Context;
use mlwatch_common::kafka::KafkaConfig;
use mlwatch_proto::v1::{ActionDecision, ActionKind, ActionRecord, Alert, AlertStatus};
use prost::Message as _;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::stack::Stack;
use mlwatch_testkit::sim::{ModelSim, SimPlatform};
use mlwatch_testkit::smtp::Mail;

/// The models of the scenario: `fraud` v4 (v3 before it; labels arrive
/// 20–50 s after each prediction) and `recsys` v12 (no labels).
pub fn platform() -> SimPlatform {
    let sim = SimPlatform::default();
    sim.add_model(
        ModelSim::new("fraud", "v4", 2, 50.0)
            .with_previous_versions(&["v3"])
            .with_accuracy("v3", 0.93)
            .with_accuracy("v4", 0.93)
            .with_label_delay_secs(20.0, 50.0),
    );
    sim.add_model(ModelSim::new("recsys", "v12", 3, 80.0));
    sim
}

/// The models the traffic generator sends.
pub fn models() -> Vec<String> {
    vec!["fraud".into(), "recsys".into()]
}

/// Starts the scenario's traffic (every 100 ms) into `stack`'s collector
/// until the stack shuts down.
pub fn start_traffic(stack: &Stack) -> (std::sync::Arc<crate::traffic::Sent>, tokio::task::JoinHandle<()>) {
    stack.start_traffic(models())
}

/// What an incident does to the platform.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The model's offered load becomes `rps`.
    LoadSurge { rps: f64 },
    /// The active version's share of correct predictions becomes `accuracy`.
    AccuracyDrop { version: String, accuracy: f64 },
    /// The `amount` feature's shape exponent becomes `exponent`; a person
    /// restores 1.0 after reading the drift report.
    AmountShift { exponent: f64 },
}

/// One incident of the scenario.
#[derive(Debug, Clone)]
pub struct Incident {
    /// Name in the summary table.
    pub name: String,
    pub model: String,
    /// The alert type that tells it.
    pub alert_type: String,
    pub fault: Fault,
    /// What the terminal says when it is injected.
    pub story: String,
}

/// The three incidents, in order.
pub fn incidents() -> Vec<Incident> {
    vec![
        Incident {
            name: "latency surge (fraud)".into(),
            model: "fraud".into(),
            alert_type: "HighP99Latency".into(),
            fault: Fault::LoadSurge { rps: 114.0 },
            story: "traffic surge on fraud: 50 -> 114 req/s; 2 replicas are now ~95 % busy".into(),
        },
        Incident {
            name: "accuracy decay (fraud v4)".into(),
            model: "fraud".into(),
            alert_type: "AccuracyDecay".into(),
            fault: Fault::AccuracyDrop {
                version: "v4".into(),
                accuracy: 0.55,
            },
            story: "fraud v4 starts predicting worse: 93 % -> 55 % right; its labels arrive 20-50 s late".into(),
        },
        Incident {
            name: "covariate drift (recsys)".into(),
            model: "recsys".into(),
            alert_type: "FeatureDrift".into(),
            fault: Fault::AmountShift { exponent: 0.45 },
            story: "an upstream change shifts recsys's `amount` feature: mean 250 -> ~345, same range".into(),
        },
    ]
}

/// Knobs of a scenario run.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// Seconds of healthy traffic before the first incident.
    pub first_after_secs: u64,
    /// Seconds between one incident's end and the next.
    pub pause_secs: u64,
    /// Seconds after the drift page before the person's fix lands.
    pub human_fix_after_secs: u64,
    /// Give up when the incidents are not over this long after the first.
    pub timeout_secs: u64,
    /// Window of the p99 shown in status lines (the rule's window).
    pub p99_window_secs: u64,
    /// Keep telling (status, alerts, pages) after the last incident until
    /// `stop` fires.
    pub keep_running: bool,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        Self {
            first_after_secs: 15,
            pause_secs: 3,
            human_fix_after_secs: 10,
            timeout_secs: 280,
            p99_window_secs: 20,
            keep_running: false,
        }
    }
}

/// What happened to one incident, measured from its injection.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub name: String,
    pub model: String,
    pub alert_type: String,
    /// The firing alert's own timestamp.
    pub detected: Option<Duration>,
    /// The first page of the firing (any channel).
    pub paged: Option<Duration>,
    /// Channels that paged the firing: `slack`, `pagerduty`, `email`.
    pub paged_on: Vec<&'static str>,
    /// The remedy and when: a platform call, or the recorded decision.
    pub action: Option<(Duration, String)>,
    /// The resolved alert's own timestamp.
    pub resolved: Option<Duration>,
    /// The Slack resolve page arrived.
    pub resolve_paged: bool,
    /// The remediator verified its action (the alert resolved after it).
    pub verified: bool,
    /// Whether a platform action is expected (and so must be verified).
    pub acts_on_platform: bool,
}

impl Outcome {
    /// Detected, paged, remediated (verified when it acted on the
    /// platform), resolved and the resolve paged.
    pub fn complete(&self) -> bool {
        self.detected.is_some()
            && self.paged.is_some()
            && self.action.is_some()
            && self.resolved.is_some()
            && self.resolve_paged
            && (self.verified || !self.acts_on_platform)
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".into())
}

/// The summary table.
pub fn summary_table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<27} {:>14} {:>11}  {:<36} {:>14}\n",
        "incident", "detected after", "paged after", "action", "resolved after"
    );
    for o in outcomes {
        let action = o
            .action
            .as_ref()
            .map(|(d, a)| format!("{a} @ {:.1} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<27} {:>14} {:>11}  {:<36} {:>14}\n",
            o.name,
            secs(o.detected),
            secs(o.paged),
            action,
            secs(o.resolved)
        ));
    }
    out
}

/// Prints timestamped lines to a sink.
pub struct Teller<'a> {
    start: Instant,
    sink: &'a mut (dyn FnMut(&str) + Send),
}

impl<'a> Teller<'a> {
    pub fn new(start: Instant, sink: &'a mut (dyn FnMut(&str) + Send)) -> Self {
        Self { start, sink }
    }

    pub fn say(&mut self, what: &str, text: impl std::fmt::Display) {
        let t = self.start.elapsed().as_secs_f64();
        let line = format!("[{:>02}:{:>04.1}] {:<10} {}", (t / 60.0) as u64, t % 60.0, what, text);
        (self.sink)(&line);
    }

    /// A line under the previous one, without a timestamp.
    pub fn more(&mut self, text: impl std::fmt::Display) {
        (self.sink)(&format!("{:18} {text}", ""));
    }
}

/// The body of a caught mail as text: quoted-printable soft breaks and
/// escapes undone; other encodings shown as they came.
pub fn mail_text(mail: &Mail) -> String {
    let qp = mail
        .header("Content-Transfer-Encoding")
        .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
    let body = mail.body().replace("\r\n", "\n");
    if !qp {
        return body;
    }
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the scenario stands.
struct Run {
    incidents: Vec<Incident>,
    outcomes: Vec<Outcome>,
    /// Index of the incident under way (== len when all are over).
    current: usize,
    /// Injection time of the current incident (wall clock ms and instant).
    started: Option<(i64, Instant)>,
}

impl Run {
    fn active(&mut self) -> Option<(&Incident, &mut Outcome, i64, Instant)> {
        let (ms, at) = self.started?;
        let i = self.current;
        Some((self.incidents.get(i)?, self.outcomes.get_mut(i)?, ms, at))
    }
}

fn alert_line(a: &Alert) -> String {
    let status = AlertStatus::try_from(a.status).unwrap_or_default();
    format!(
        "{} {} ({}) on {} {}: {}",
        status.as_str_name().trim_start_matches("ALERT_STATUS_"),
        a.r#type,
        mlwatch_proto::v1::Severity::try_from(a.severity)
            .map(|s| s.as_str_name().trim_start_matches("SEVERITY_").to_lowercase())
            .unwrap_or_default(),
        a.labels.get("model").map(String::as_str).unwrap_or("-"),
        a.labels.get("model_version").map(String::as_str).unwrap_or("-"),
        a.annotations.get("summary").map(String::as_str).unwrap_or("")
    )
}

fn matches(text: &str, inc: &Incident) -> bool {
    text.contains(&inc.alert_type) && text.contains(&format!(" {} ", inc.model))
}

/// Runs the three incidents against `stack` (whose traffic must already
/// flow), telling each step to `sink`; returns each incident's outcome.
/// Stops early when `stop` fires.
pub async fn run(
    stack: &Stack,
    kafka: &KafkaConfig,
    observer_group: &str,
    opts: &ScenarioOptions,
    stop: CancellationToken,
    sink: &mut (dyn FnMut(&str) + Send),
) -> anyhow::Result<Vec<Outcome>> {
    let mut t = Teller::new(Instant::now(), sink);
    let sim = stack.sim.clone();
    let observer: StreamConsumer = kafka
        .client_config()
        .set("group.id", observer_group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .context("observer consumer")?;
    observer.subscribe(&[&kafka.topics.alerts, &kafka.topics.actions])?;
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while observer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            let _ = tokio::time::timeout(Duration::from_millis(200), observer.recv()).await;
        }
    })
    .await;
    if joined.is_err() {
        t.say(
            "WARNING",
            "the observer did not join its consumer group within 30 s; alert lines may lag",
        );
    }

    let incidents = incidents();
    let mut run = Run {
        outcomes: incidents
            .iter()
            .map(|i| Outcome {
                name: i.name.clone(),
                model: i.model.clone(),
                alert_type: i.alert_type.clone(),
                acts_on_platform: !matches!(i.fault, Fault::AmountShift { .. }),
                ..Default::default()
            })
            .collect(),
        incidents,
        current: 0,
        started: None,
    };
    let http = reqwest::Client::new();
    let mut status_tick = tokio::time::interval(Duration::from_secs(5));
    let next = tokio::time::sleep(Duration::from_secs(opts.first_after_secs));
    tokio::pin!(next);
    let mut next_armed = true;
    let human = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(human);
    let (mut human_armed, mut human_done) = (false, false);
    let deadline = tokio::time::sleep(Duration::from_secs(opts.first_after_secs + opts.timeout_secs));
    tokio::pin!(deadline);
    let (mut slack_seen, mut pd_seen, mut mail_seen, mut calls_seen) = (0, 0, 0, 0);

    loop {
        if run.current >= run.incidents.len() && !opts.keep_running {
            break;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = &mut deadline, if run.current < run.incidents.len() => {
                t.say("TIMEOUT", format!("incident {:?} did not complete in time", run.incidents[run.current].name));
                break;
            }
            _ = &mut next, if next_armed => {
                next_armed = false;
                let inc = &run.incidents[run.current];
                match &inc.fault {
                    Fault::LoadSurge { rps } => sim.set_load(&inc.model, *rps),
                    Fault::AccuracyDrop { version, accuracy } => sim.set_accuracy(&inc.model, version, *accuracy),
                    Fault::AmountShift { exponent } => sim.set_amount_exponent(&inc.model, *exponent),
                }
                run.started = Some((mlwatch_common::now_ms(), Instant::now()));
                t.say("INCIDENT", format!("{}/{} {}", run.current + 1, run.incidents.len(), inc.story));
            }
            _ = &mut human, if human_armed => {
                human_armed = false;
                human_done = true;
                let Some((inc, _, _, _)) = run.active() else { continue };
                let model = inc.model.clone();
                let url = format!("http://{}/v1/models/{model}/drift", stack.analyzer_admin);
                let report: Option<Value> = match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => r.json().await.ok(),
                    _ => None,
                };
                t.say("HUMAN", format!("on-call reads the drift report: curl {url}"));
                for f in report.as_ref().and_then(|r| r["report"]["features"].as_array()).into_iter().flatten() {
                    t.more(format!(
                        "{:<8} PSI {:>6.3}  KS {:>5.3}  z {:>5.1}  firing {}",
                        f["name"].as_str().unwrap_or("-"),
                        f["scores"]["psi"].as_f64().unwrap_or(f64::NAN),
                        f["scores"]["ks"].as_f64().unwrap_or(f64::NAN),
                        f["decision"]["z"].as_f64().unwrap_or(f64::NAN),
                        f["decision"]["firing"].as_bool().unwrap_or(false),
                    ));
                }
                sim.set_amount_exponent(&model, 1.0);
                t.say("HUMAN", format!("the upstream change is reverted: {model}'s `amount` is back to its training distribution"));
            }
            _ = status_tick.tick() => {
                for line in status_lines(&http, stack, &sim, opts.p99_window_secs).await {
                    t.say("STATUS", line);
                }
            }
            msg = observer.recv() => {
                let Ok(msg) = msg else { continue };
                let payload = msg.payload().unwrap_or_default();
                if msg.topic() == kafka.topics.alerts {
                    let Ok(a) = Alert::decode(payload) else { continue };
                    t.say("ALERT", alert_line(&a));
                    let status = AlertStatus::try_from(a.status).unwrap_or_default();
                    if let Some((inc, o, start_ms, _)) = run.active()
                        && a.r#type == inc.alert_type
                        && a.labels.get("model") == Some(&inc.model)
                    {
                        let at = Duration::from_millis(u64::try_from(a.generated_at_ms - start_ms).unwrap_or(0));
                        match status {
                            AlertStatus::Firing if o.detected.is_none() => o.detected = Some(at),
                            AlertStatus::Resolved if o.detected.is_some() && o.resolved.is_none() => o.resolved = Some(at),
                            _ => {}
                        }
                    }
                } else if let Ok(r) = ActionRecord::decode(payload) {
                    let decision = ActionDecision::try_from(r.decision).unwrap_or_default();
                    let kind = ActionKind::try_from(r.kind).unwrap_or_default();
                    t.say("ACTION", format!(
                        "{} {} {} ({}): {}",
                        decision.as_str_name().trim_start_matches("ACTION_DECISION_"),
                        kind.as_str_name().trim_start_matches("ACTION_KIND_").to_lowercase(),
                        r.model, r.alert_type, r.reason
                    ));
                    if let Some((inc, o, _, at)) = run.active()
                        && r.alert_type == inc.alert_type
                        && r.model == inc.model
                    {
                        if decision == ActionDecision::Verified {
                            o.verified = true;
                        }
                        if kind == ActionKind::Notify && decision == ActionDecision::Executed && o.action.is_none() {
                            o.action = Some((at.elapsed(), "none: paged for human review".into()));
                        }
                    }
                }
            }
            received = stack.slack.wait_accepted(slack_seen) => {
                slack_seen += 1;
                let text = received.body["text"].as_str().unwrap_or_default().to_string();
                t.say("PAGED", format!("Slack <- {text}"));
                if let Some((inc, o, _, at)) = run.active() && matches(&text, inc) {
                    if text.starts_with("[FIRING]") {
                        page(o, at, "slack");
                        if matches!(inc.fault, Fault::AmountShift { .. }) && !human_armed && !human_done {
                            human_armed = true;
                            human.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(opts.human_fix_after_secs));
                        }
                    } else if text.starts_with("[RESOLVED]") {
                        o.resolve_paged = true;
                    }
                }
            }
            received = stack.pagerduty.wait_accepted(pd_seen) => {
                pd_seen += 1;
                let b = &received.body;
                let action = b["event_action"].as_str().unwrap_or_default();
                let severity = b["payload"]["severity"]
                    .as_str()
                    .map(|s| format!(" (severity {s})"))
                    .unwrap_or_default();
                t.say("PAGED", format!(
                    "PagerDuty <- {action}{severity} dedup_key {}{}",
                    b["dedup_key"].as_str().unwrap_or("-"),
                    b["payload"]["summary"].as_str().map(|s| format!(": {s}")).unwrap_or_default(),
                ));
                if let Some((inc, o, _, at)) = run.active()
                    && action == "trigger"
                    && b["payload"]["class"].as_str() == Some(inc.alert_type.as_str())
                {
                    page(o, at, "pagerduty");
                }
            }
            mails = stack.smtp.wait_mails(mail_seen) => {
                for mail in mails.iter().skip(mail_seen) {
                    let subject = mail.header("Subject").unwrap_or_default();
                    t.say("EMAIL", format!("{} <- {subject}", mail.to.join(", ")));
                    for line in mail_text(mail).lines().filter(|l| !l.trim().is_empty()) {
                        t.more(format!("| {line}"));
                    }
                    if let Some((inc, o, _, at)) = run.active()
                        && subject.contains(&inc.alert_type)
                        && mail_text(mail).contains(&format!("model: {}", inc.model))
                        && !mail_text(mail).contains("[RESOLVED]")
                    {
                        page(o, at, "email");
                    }
                }
                mail_seen = mails.len();
            }
            _ = sim.wait_for_calls(calls_seen) => {
                for call in sim.calls().into_iter().skip(calls_seen) {
                    t.say("PLATFORM", format!(
                        "ServingControl.{} {} {} (request id {}{})",
                        call.method, call.model, call.detail,
                        &call.request_id[..12.min(call.request_id.len())],
                        if call.duplicate { ", duplicate ignored" } else { "" }
                    ));
                    if let Some((inc, o, _, at)) = run.active()
                        && call.model == inc.model
                        && o.action.is_none()
                    {
                        o.action = Some((at.elapsed(), format!("{} {}", call.method, call.detail)));
                    }
                    calls_seen += 1;
                }
            }
        }
        if let Some((inc, o, _, _)) = run.active()
            && o.complete()
        {
            t.say(
                "DONE",
                format!(
                    "{}: detected, paged ({}), remediated ({}), resolved",
                    inc.name,
                    o.paged_on.join(", "),
                    o.action.as_ref().map(|(_, a)| a.as_str()).unwrap_or("-")
                ),
            );
            run.current += 1;
            run.started = None;
            if run.current < run.incidents.len() {
                next_armed = true;
                next.as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_secs(opts.pause_secs));
            }
        }
    }
    Ok(run.outcomes)
}

fn page(o: &mut Outcome, at: Instant, channel: &'static str) {
    if o.paged.is_none() {
        o.paged = Some(at.elapsed());
    }
    if !o.paged_on.contains(&channel) {
        o.paged_on.push(channel);
    }
}

/// One line per model: load, replicas, version, p99; accuracy of the
/// active version with its label coverage; PSI of the drifting feature.
async fn status_lines(http: &reqwest::Client, stack: &Stack, sim: &SimPlatform, p99_window_secs: u64) -> Vec<String> {
    let get = |url: String| async move {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        }
    };
    let mut lines = Vec::new();
    for model in models() {
        let Some(s) = sim.model(&model) else { continue };
        let api = format!("http://{}/v1/models/{model}", stack.analyzer_admin);
        let version = s.deployment.active_version.clone();
        let p99 = get(format!("{api}/latency?window={p99_window_secs}s"))
            .await
            .and_then(|v| {
                v["versions"]
                    .as_array()?
                    .iter()
                    .find(|x| x["model_version"] == version.as_str())
                    .or_else(|| v["versions"].get(0))?["p99_ms"]
                    .as_f64()
            });
        let mut line = format!(
            "{model:<7} {version:<4} {:>4.0} req/s  {} replicas  p99 {}",
            s.load_rps,
            s.deployment.replicas,
            p99.map(|p| format!("{p:>4.0} ms")).unwrap_or_else(|| "   - ms".into()),
        );
        if s.accuracy().is_some() {
            let acc = get(format!("{api}/accuracy")).await.and_then(|v| {
                let series = v["series"].as_array()?.iter().find(|x| {
                    x["model_version"] == version.as_str() && x["segment"].as_str().unwrap_or_default().is_empty()
                })?;
                Some((
                    series["binary"]["accuracy"].as_f64(),
                    series["label_coverage"].as_f64(),
                    series["window_secs"].as_u64(),
                ))
            });
            line.push_str(&match acc {
                Some((Some(a), Some(c), Some(w))) => {
                    format!("  accuracy {a:.3} over {w} s ({:.0} % labelled so far)", c * 100.0)
                }
                Some((None, Some(c), _)) => format!("  accuracy - ({:.0} % labelled so far)", c * 100.0),
                _ => "  accuracy -".into(),
            });
        }
        if let Some(psi) = get(format!("{api}/drift")).await.and_then(|v| {
            v["report"]["features"]
                .as_array()?
                .iter()
                .find(|f| f["name"] == "amount")?["scores"]["psi"]
                .as_f64()
        }) {
            line.push_str(&format!("  amount PSI {psi:.3}"));
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_complete_only_with_every_step() {
        let mut o = Outcome {
            acts_on_platform: true,
            detected: Some(Duration::from_secs(1)),
            paged: Some(Duration::from_secs(1)),
            action: Some((Duration::from_secs(1), "Scale replicas=3".into())),
            resolved: Some(Duration::from_secs(20)),
            resolve_paged: true,
            ..Default::default()
        };
        assert!(!o.complete(), "a platform action must be verified");
        o.verified = true;
        assert!(o.complete());
        o.acts_on_platform = false;
        o.verified = false;
        assert!(o.complete(), "a page-only incident needs no verification");
        o.resolve_paged = false;
        assert!(!o.complete());
    }

    #[test]
    fn the_table_shows_each_incident_with_its_times() {
        let table = summary_table(&[Outcome {
            name: "latency surge (fraud)".into(),
            detected: Some(Duration::from_millis(1200)),
            paged: Some(Duration::from_millis(1500)),
            action: Some((Duration::from_millis(1700), "Scale replicas=3".into())),
            resolved: None,
            ..Default::default()
        }]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("incident"), "{table}");
        assert!(lines[1].contains("1.2 s") && lines[1].contains("1.5 s"), "{table}");
        assert!(lines[1].contains("Scale replicas=3 @ 1.7 s"), "{table}");
        assert!(lines[1].trim_end().ends_with('-'), "{table}");
    }

    #[test]
    fn quoted_printable_mail_bodies_are_decoded() {
        let mail = Mail {
            from: "a@b".into(),
            to: vec!["c@d".into()],
            data: "Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nlatency of fraud =\r\nis 3=3D4 =C2=B5s\r\n"
                .into(),
            user: None,
            tls: false,
        };
        assert_eq!(mail_text(&mail), "latency of fraud is 3=4 µs\n");
    }

    #[test]
    fn pages_are_matched_by_type_and_model() {
        let inc = &incidents()[0];
        assert!(matches("[FIRING] HighP99Latency (high) fraud v4: p99 …", inc));
        assert!(!matches("[FIRING] HighP99Latency (high) fraudster v4: p99 …", inc));
        assert!(!matches("[FIRING] AccuracyDecay (high) fraud v4: …", inc));
    }
}
