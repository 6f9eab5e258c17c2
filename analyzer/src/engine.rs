//! The analyzer's in-memory state: per model and version, a set of sliding
//! windows and the phase of each rule instance. Pure: no I/O; the service
//! feeds it events and asks it to evaluate at a time it chooses.

use std::collections::{BTreeMap, HashMap};

use mlwatch_proto::v1::{Alert, InferenceEvent, InferenceStatus};
use serde::{Deserialize, Serialize};

use crate::rules::{self, AlertSpec, LatencyRule, Phase};
use crate::window::{SlidingWindow, Summary};

/// The `[analyzer]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Sliding windows kept per model version, in seconds.
    pub windows_secs: Vec<u64>,
    /// Slots per window (resolution of the slide).
    pub slots_per_window: i64,
    /// How far behind the newest event an event may arrive and still count
    /// in its window; later ones are counted as late.
    pub allowed_lateness_secs: u64,
    /// A request slower than this counts as slow.
    pub slow_threshold_ms: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            windows_secs: vec![60, 300, 3600],
            slots_per_window: 30,
            allowed_lateness_secs: 60,
            slow_threshold_ms: 1000.0,
        }
    }
}

/// The `[rules]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub p99_latency: LatencyRule,
}

/// Identity of a tracked series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SeriesKey {
    pub model: String,
    pub model_version: String,
}

struct Series {
    windows: Vec<SlidingWindow>,
    events: u64,
    last_event_ms: i64,
    p99_phase: Phase,
}

/// Statistics of one series over one window, as served by the API.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    pub model: String,
    pub model_version: String,
    pub window: String,
    pub window_secs: u64,
    pub late_events: u64,
    #[serde(flatten)]
    pub summary: Summary,
}

/// One tracked model version, as served by `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesInfo {
    pub model: String,
    pub model_version: String,
    pub events: u64,
    pub last_event_ms: i64,
    pub alerts_firing: Vec<String>,
}

pub struct Engine {
    config: EngineConfig,
    rules: RulesConfig,
    series: HashMap<SeriesKey, Series>,
    rule_window: usize,
}

/// Formats a window length the way the API accepts it: `1m`, `5m`, `1h`, `90s`.
pub fn window_name(secs: u64) -> String {
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses `30s`, `5m`, `1h` or plain seconds.
pub fn parse_window(text: &str) -> Option<u64> {
    let text = text.trim();
    let (num, mult) = match text.chars().last()? {
        's' => (&text[..text.len() - 1], 1),
        'm' => (&text[..text.len() - 1], 60),
        'h' => (&text[..text.len() - 1], 3600),
        _ => (text, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

impl Engine {
    pub fn new(mut config: EngineConfig, rules: RulesConfig) -> Self {
        if !config.windows_secs.contains(&rules.p99_latency.window_secs) {
            config.windows_secs.push(rules.p99_latency.window_secs);
        }
        config.windows_secs.retain(|w| *w > 0);
        config.windows_secs.sort_unstable();
        config.windows_secs.dedup();
        let rule_window = config
            .windows_secs
            .iter()
            .position(|w| *w == rules.p99_latency.window_secs)
            .unwrap_or(0);
        Self {
            config,
            rules,
            series: HashMap::new(),
            rule_window,
        }
    }

    pub fn windows_secs(&self) -> &[u64] {
        &self.config.windows_secs
    }

    fn new_series(&self) -> Series {
        let lateness = self.config.allowed_lateness_secs as i64 * 1000;
        Series {
            windows: self
                .config
                .windows_secs
                .iter()
                .map(|w| SlidingWindow::new(*w as i64 * 1000, self.config.slots_per_window, lateness))
                .collect(),
            events: 0,
            last_event_ms: 0,
            p99_phase: Phase::Inactive,
        }
    }

    /// Adds one inference event to every window of its series.
    pub fn observe(&mut self, event: &InferenceEvent) {
        let key = SeriesKey {
            model: event.model.clone(),
            model_version: event.model_version.clone(),
        };
        if !self.series.contains_key(&key) {
            let s = self.new_series();
            self.series.insert(key.clone(), s);
        }
        let slow_threshold = self.config.slow_threshold_ms;
        let Some(series) = self.series.get_mut(&key) else {
            return;
        };
        let error = event.status == InferenceStatus::Error as i32;
        let slow = event.latency_ms > slow_threshold;
        for w in &mut series.windows {
            w.add(event.timestamp_ms, event.latency_ms, error, slow);
        }
        series.events += 1;
        series.last_event_ms = series.last_event_ms.max(event.timestamp_ms);
    }

    /// Evaluates every rule instance at `now_ms`; returns the alerts of the
    /// transitions that happened.
    pub fn evaluate(&mut self, now_ms: i64) -> Vec<Alert> {
        let rule = self.rules.p99_latency.clone();
        if !rule.enabled {
            return Vec::new();
        }
        let mut alerts = Vec::new();
        for (key, series) in &mut self.series {
            let window = &series.windows[self.rule_window];
            let stats = window.stats(now_ms);
            let enough = stats.count >= rule.min_samples;
            let p99 = stats.sketch.quantile(0.99).unwrap_or(0.0);
            let breach = enough && p99 > rule.threshold_ms;
            let clear = !enough || p99 <= rule.threshold_ms * (1.0 - rule.hysteresis);
            let transition = rules::step(
                &mut series.p99_phase,
                now_ms,
                breach,
                clear,
                rule.for_secs as i64 * 1000,
                rule.resolve_for_secs as i64 * 1000,
            );
            let mut labels = BTreeMap::new();
            labels.insert("model".to_string(), key.model.clone());
            labels.insert("model_version".to_string(), key.model_version.clone());
            let wname = window_name(window.window_ms() as u64 / 1000);
            let spec = AlertSpec {
                alert_type: "HighP99Latency",
                severity: rule.severity.into(),
                labels,
                summary: format!(
                    "p99 latency of {} {} is {:.1} ms over {} (threshold {} ms)",
                    key.model, key.model_version, p99, wname, rule.threshold_ms
                ),
                description: format!(
                    "{} requests in the last {}; p99 {:.1} ms, relative error {:.1} %",
                    stats.count,
                    wname,
                    p99,
                    stats.sketch.alpha() * 100.0
                ),
                value: p99,
                threshold: rule.threshold_ms,
                recommendations: vec![
                    "scale up the model's replicas".into(),
                    "check recent deployments and upstream dependencies".into(),
                ],
            };
            if let Some(alert) = rules::alert_for(spec, &transition, now_ms) {
                alerts.push(alert);
            }
        }
        alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        alerts
    }

    /// Statistics of every series of `model` over the window of `window_secs`.
    pub fn reports(&self, model: Option<&str>, window_secs: u64, now_ms: i64) -> Option<Vec<WindowReport>> {
        let idx = self.config.windows_secs.iter().position(|w| *w == window_secs)?;
        let mut out: Vec<WindowReport> = self
            .series
            .iter()
            .filter(|(k, _)| model.is_none_or(|m| k.model == m))
            .map(|(k, s)| {
                let w = &s.windows[idx];
                WindowReport {
                    model: k.model.clone(),
                    model_version: k.model_version.clone(),
                    window: window_name(window_secs),
                    window_secs,
                    late_events: w.late(),
                    summary: w.stats(now_ms).summary(w.window_ms()),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.model, &a.model_version).cmp(&(&b.model, &b.model_version)));
        Some(out)
    }

    /// Every tracked series.
    pub fn series(&self) -> Vec<SeriesInfo> {
        let mut out: Vec<SeriesInfo> = self
            .series
            .iter()
            .map(|(k, s)| SeriesInfo {
                model: k.model.clone(),
                model_version: k.model_version.clone(),
                events: s.events,
                last_event_ms: s.last_event_ms,
                alerts_firing: match s.p99_phase {
                    Phase::Firing { .. } => vec!["HighP99Latency".to_string()],
                    _ => Vec::new(),
                },
            })
            .collect();
        out.sort_by(|a, b| (&a.model, &a.model_version).cmp(&(&b.model, &b.model_version)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(model: &str, t: i64, latency: f64) -> InferenceEvent {
        InferenceEvent {
            event_id: format!("{model}-{t}"),
            model: model.into(),
            model_version: "v1".into(),
            timestamp_ms: t,
            latency_ms: latency,
            status: InferenceStatus::Ok as i32,
            ..Default::default()
        }
    }

    #[test]
    fn p99_regression_fires_then_resolves() {
        let rules = RulesConfig {
            p99_latency: LatencyRule {
                window_secs: 10,
                resolve_for_secs: 2,
                ..Default::default()
            },
        };
        let mut e = Engine::new(EngineConfig::default(), rules);
        let mut fired = Vec::new();
        let mut t = 1_000_000;
        for phase_latency in [20.0, 450.0, 20.0] {
            for _ in 0..30 {
                for _ in 0..10 {
                    e.observe(&event("fraud", t, phase_latency));
                    t += 100;
                }
                fired.extend(e.evaluate(t));
            }
        }
        let kinds: Vec<(String, i32)> = fired.iter().map(|a| (a.r#type.clone(), a.status)).collect();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert_eq!(fired[0].status, mlwatch_proto::v1::AlertStatus::Firing as i32);
        assert_eq!(fired[1].status, mlwatch_proto::v1::AlertStatus::Resolved as i32);
        assert_eq!(fired[0].fingerprint, fired[1].fingerprint);
        assert!(fired[0].value > 200.0);
    }

    #[test]
    fn window_names_round_trip() {
        for s in [30, 60, 300, 3600, 90] {
            assert_eq!(parse_window(&window_name(s)), Some(s));
        }
        assert_eq!(parse_window("5m"), Some(300));
        assert_eq!(parse_window("x"), None);
    }
}
