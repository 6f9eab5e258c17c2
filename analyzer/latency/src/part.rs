//! One partition's latency and traffic ([`LatencyPart`]): a [`Series`] per
//! model, version and (optionally) tag segment holds the sliding windows,
//! the detectors' memory and the phase of every rule instance (pure: no
//! I/O, no clock reads).
//!
//! Time is the partition's event clock, passed in: rules are evaluated at
//! every multiple of the evaluation interval the clock passes, before the
//! event that passed it is added ([`LatencyPart::observe`]), and when an
//! idle partition's clock is advanced ([`LatencyPart::advance`]), so a
//! model that stops sending is still judged. The alerts are a function of
//! the partition's event sequence alone: a replay after a crash yields the
//! same alerts with the same ids.
//!
//! Where latency and traffic alerts fire: `evaluate_series` (threshold
//! rules), `evaluate_spike` and `evaluate_sla` below.

use std::collections::{BTreeMap, HashMap};

use mlwatch_proto::v1::{Alert, InferenceStatus};
use serde::{Deserialize, Serialize};

use crate::detectors::{self, P99History, SlaForecast, SlaRule, SpikeRule};
use crate::relative::{self, Metric, RelativeRule};
use crate::thresholds::{ErrorRateRule, LatencyRule, ModelOverrides, RuleParams, SlowRateRule, ThroughputRule};
use crate::versions::{self, Canary, ScoreBins, VersionRule};
use crate::window::{SlidingWindow, Stats, Summary};
use mlwatch_analyzer_core::clock::{Schedule, window_name};
use mlwatch_analyzer_core::rules::{self, AlertSpec, Phase, SeverityName};
use mlwatch_analyzer_core::series::{SeriesId, SeriesKey, labels, series_name};
use mlwatch_proto::view::InferenceRef;

/// The windowing part of the `[analyzer]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Sliding windows kept per series, in seconds (rule windows are added).
    pub windows_secs: Vec<u64>,
    /// Slots per window (resolution of the slide).
    pub slots_per_window: i64,
    /// How far behind the partition's newest event an event may arrive and
    /// still count in its window; later ones are counted as late.
    pub allowed_lateness_secs: u64,
    /// A request slower than this counts as slow, in milliseconds.
    pub slow_threshold_ms: f64,
    /// Tag names to segment by: an event with tag `region=eu` also counts in
    /// the series (model, version, `region=eu`). Keep them low-cardinality.
    pub segment_tags: Vec<String>,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            windows_secs: vec![60, 300, 3600],
            slots_per_window: 30,
            allowed_lateness_secs: 60,
            slow_threshold_ms: 1000.0,
            segment_tags: Vec::new(),
        }
    }
}

/// The `[rules]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// p99 latency above a threshold (`HighP99Latency`).
    pub p99_latency: LatencyRule,
    /// Throughput below a minimum (`LowThroughput`).
    pub throughput: ThroughputRule,
    /// Slow-request share above a maximum (`HighSlowRequestRate`).
    pub slow_rate: SlowRateRule,
    /// Error share above a maximum (`HighErrorRate`).
    pub error_rate: ErrorRateRule,
    /// Latency spike by z-score (`LatencySpike`).
    pub latency_spike: SpikeRule,
    /// SLA-breach prediction from the p99 trend (`PredictedSlaBreach`).
    pub sla_prediction: SlaRule,
    /// Baseline-relative, multi-window latency and error checks
    /// (`LatencyRegression`, `ErrorRateRegression`).
    pub relative: RelativeRule,
    /// Version comparison (`VersionRegression`).
    pub versions: VersionRule,
    /// Per-model overrides of the threshold rules, by model name.
    pub models: BTreeMap<String, ModelOverrides>,
}

/// One model version (or segment of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    /// `(window length in seconds, window)`, in the configured order.
    windows: Vec<(u64, SlidingWindow)>,
    events: u64,
    first_event_ms: i64,
    last_event_ms: i64,
    /// Latencies added since the last evaluation: their mean is the latest
    /// latency the spike detector judges.
    recent_sum_ms: f64,
    recent_count: u64,
    last_z: Option<f64>,
    p99_history: P99History,
    /// Rule phases by alert type.
    phases: BTreeMap<String, Phase>,
    /// The relative rules' reference period (frozen while one of them is
    /// pending or firing) and the evaluation it was taken at.
    #[serde(default)]
    baseline: Option<Stats>,
    #[serde(default)]
    baseline_at_ms: i64,
    /// Cumulative prediction scores (whole-version series only).
    #[serde(default)]
    scores: ScoreBins,
    /// The version this one is compared with, when it appeared after another.
    #[serde(default)]
    canary: Option<Canary>,
}

/// The latency and traffic state of one source partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyPart {
    /// The next evaluation boundary (0 before the first event).
    #[serde(rename = "next_eval_ms")]
    schedule: Schedule,
    #[serde(with = "mlwatch_analyzer_core::series::pairs")]
    series: BTreeMap<SeriesKey, Series>,
}

/// Statistics of one series over one window, as served by the API.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    pub model: String,
    pub model_version: String,
    pub segment: String,
    pub window: String,
    pub window_secs: u64,
    /// Event time the window ends at (the partition's clock).
    pub as_of_ms: i64,
    /// Events that arrived beyond the allowed lateness (counted here only).
    pub late_events: u64,
    #[serde(flatten)]
    pub summary: Summary,
    /// z-score of the latest latency at the last evaluation.
    pub latest_z_score: Option<f64>,
    /// SLA-breach forecast from the p99 trend, once there is enough history.
    pub sla_forecast: Option<SlaForecast>,
}

/// One tracked series, as served by `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesInfo {
    pub model: String,
    pub model_version: String,
    pub segment: String,
    pub partition: i32,
    pub events: u64,
    pub first_event_ms: i64,
    pub last_event_ms: i64,
    pub alerts_firing: Vec<String>,
    /// Approximate bytes of state held for the series.
    pub state_bytes: usize,
}

/// Configuration resolved once and shared by every partition.
#[derive(Debug, Clone)]
pub struct Settings {
    config: LatencyConfig,
    rules: RulesConfig,
    eval_interval_ms: i64,
    /// The distinct windows that rules and detectors read.
    rule_windows: Vec<u64>,
}

impl Settings {
    pub fn new(mut config: LatencyConfig, rules: RulesConfig, eval_interval_ms: u64) -> Self {
        let mut rule_windows = vec![
            rules.p99_latency.window_secs,
            rules.throughput.window_secs,
            rules.slow_rate.window_secs,
            rules.error_rate.window_secs,
            rules.latency_spike.window_secs,
            rules.sla_prediction.window_secs,
        ];
        if rules.relative.enabled {
            rule_windows.extend(rules.relative.windows());
        }
        if rules.versions.enabled {
            rule_windows.push(rules.versions.window_secs);
        }
        rule_windows.retain(|w| *w > 0);
        rule_windows.sort_unstable();
        rule_windows.dedup();
        config.windows_secs.extend(&rule_windows);
        if let Some(w) = baseline_window_secs(&rules.relative) {
            config.windows_secs.push(w);
        }
        config.windows_secs.retain(|w| *w > 0);
        config.windows_secs.sort_unstable();
        config.windows_secs.dedup();
        Self {
            config,
            rules,
            eval_interval_ms: i64::try_from(eval_interval_ms.max(1)).unwrap_or(1000),
            rule_windows,
        }
    }

    pub fn windows_secs(&self) -> &[u64] {
        &self.config.windows_secs
    }

    fn new_window(&self, secs: u64) -> SlidingWindow {
        SlidingWindow::new(
            secs as i64 * 1000,
            self.config.slots_per_window,
            self.config.allowed_lateness_secs as i64 * 1000,
        )
    }

    fn new_series(&self, t_ms: i64) -> Series {
        Series {
            windows: self.windows_secs().iter().map(|w| (*w, self.new_window(*w))).collect(),
            events: 0,
            first_event_ms: t_ms,
            last_event_ms: t_ms,
            recent_sum_ms: 0.0,
            recent_count: 0,
            last_z: None,
            p99_history: P99History::default(),
            phases: BTreeMap::new(),
            baseline: None,
            baseline_at_ms: 0,
            scores: ScoreBins::default(),
            canary: None,
        }
    }
}

/// The window the relative rules' baseline is read from: the reference
/// period plus the lag behind the evaluation (`None` when off).
fn baseline_window_secs(rule: &RelativeRule) -> Option<u64> {
    (rule.enabled && rule.baseline_secs > 0).then(|| rule.baseline_secs + rule.lag_secs())
}

impl Series {
    fn window(&self, secs: u64) -> Option<&SlidingWindow> {
        self.windows.iter().find(|(w, _)| *w == secs).map(|(_, w)| w)
    }

    fn add(&mut self, t_ms: i64, latency_ms: f64, error: bool, slow: bool, score: Option<f64>) {
        for (_, w) in &mut self.windows {
            w.add(t_ms, latency_ms, error, slow);
        }
        if let Some(score) = score {
            self.scores.add(score);
        }
        self.events += 1;
        self.first_event_ms = self.first_event_ms.min(t_ms);
        self.last_event_ms = self.last_event_ms.max(t_ms);
        self.recent_sum_ms += latency_ms;
        self.recent_count += 1;
    }

    /// Makes the windows match the configuration (after a restore under a
    /// changed configuration): unknown windows go, missing ones start empty.
    fn reconcile(&mut self, settings: &Settings) {
        let mut old: HashMap<u64, SlidingWindow> = std::mem::take(&mut self.windows).into_iter().collect();
        self.windows = settings
            .windows_secs()
            .iter()
            .map(|w| (*w, old.remove(w).unwrap_or_else(|| settings.new_window(*w))))
            .collect();
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.windows.iter().map(|(_, w)| w.heap_bytes()).sum::<usize>()
    }

    /// The SLA forecast, once the history spans half the trend window.
    fn forecast(&self, rule: &SlaRule, current_p99: f64) -> Option<SlaForecast> {
        if self.p99_history.span_ms() < rule.trend_window_secs as i64 * 500 {
            return None;
        }
        let slope = self.p99_history.slope_ms_per_min()?;
        Some(detectors::forecast(current_p99, slope, rule.horizon_mins, rule.sla_ms))
    }
}

/// The four threshold rules, in evaluation order.
#[derive(Debug, Clone, Copy)]
enum Threshold {
    P99,
    Throughput,
    SlowRate,
    ErrorRate,
}

impl Threshold {
    const ALL: [Threshold; 4] = [Self::P99, Self::Throughput, Self::SlowRate, Self::ErrorRate];

    fn alert_type(self) -> &'static str {
        match self {
            Self::P99 => "HighP99Latency",
            Self::Throughput => "LowThroughput",
            Self::SlowRate => "HighSlowRequestRate",
            Self::ErrorRate => "HighErrorRate",
        }
    }

    fn params(self, rules: &RulesConfig, model: &str) -> RuleParams {
        let o = rules.models.get(model);
        match self {
            Self::P99 => rules.p99_latency.params().with(o.and_then(|o| o.p99_latency.as_ref())),
            Self::Throughput => rules.throughput.params().with(o.and_then(|o| o.throughput.as_ref())),
            Self::SlowRate => rules.slow_rate.params().with(o.and_then(|o| o.slow_rate.as_ref())),
            Self::ErrorRate => rules.error_rate.params().with(o.and_then(|o| o.error_rate.as_ref())),
        }
    }

    fn recommendations(self) -> Vec<String> {
        let r: &[&str] = match self {
            Self::P99 | Self::SlowRate => &[
                "scale up the model's replicas",
                "check recent deployments and upstream dependencies",
            ],
            Self::Throughput => &[
                "check that clients reach the model (routing, DNS, load balancer)",
                "check the model server's health and recent deployments",
            ],
            Self::ErrorRate => &[
                "roll back the latest deployment if errors started with it",
                "check the model server's logs and upstream dependencies",
            ],
        };
        r.iter().map(|s| s.to_string()).collect()
    }
}

/// What one threshold rule sees in one window.
struct Judgement {
    value: f64,
    breach: bool,
    clear: bool,
    text: String,
}

fn judge(kind: Threshold, p: &RuleParams, stats: &Stats, window_secs: u64, judged_long_enough: bool) -> Judgement {
    let enough = stats.count >= p.min_samples;
    let n = stats.count as f64;
    let ratio = |k: u64| if stats.count > 0 { k as f64 / n } else { 0.0 };
    let above = |v: f64| Judgement {
        value: v,
        breach: enough && v > p.threshold,
        clear: !enough || v <= p.threshold * (1.0 - p.hysteresis),
        text: String::new(),
    };
    match kind {
        Threshold::P99 => above(stats.sketch.quantile(0.99).unwrap_or(0.0)),
        Threshold::SlowRate => above(ratio(stats.slow)),
        Threshold::ErrorRate => above(ratio(stats.errors)),
        Threshold::Throughput => {
            let v = n / window_secs.max(1) as f64;
            let on = p.threshold > 0.0 && judged_long_enough;
            Judgement {
                value: v,
                breach: on && v < p.threshold,
                clear: !on || v >= p.threshold * (1.0 + p.hysteresis),
                text: String::new(),
            }
        }
    }
}

fn describe(kind: Threshold, key: &SeriesKey, j: &Judgement, p: &RuleParams, stats: &Stats, wname: &str) -> String {
    let who = series_name(key);
    match kind {
        Threshold::P99 => format!(
            "p99 latency of {who} is {:.1} ms over {wname} (threshold {} ms)",
            j.value, p.threshold
        ),
        Threshold::Throughput => format!(
            "throughput of {who} is {:.2} req/s over {wname} (minimum {} req/s)",
            j.value, p.threshold
        ),
        Threshold::SlowRate => format!(
            "{:.2} % of requests to {who} were slow over {wname} (maximum {:.2} %, {} of {})",
            j.value * 100.0,
            p.threshold * 100.0,
            stats.slow,
            stats.count
        ),
        Threshold::ErrorRate => format!(
            "{:.2} % of requests to {who} failed over {wname} (maximum {:.2} %, {} of {})",
            j.value * 100.0,
            p.threshold * 100.0,
            stats.errors,
            stats.count
        ),
    }
}

impl LatencyPart {
    /// Applies one inference event at the partition's time `now_ms` (the
    /// clock after this event): first evaluates every boundary the clock
    /// passed, then counts the event in its series (and its segments').
    pub fn observe(&mut self, settings: &Settings, now_ms: i64, event: &InferenceRef<'_>) -> Vec<Alert> {
        let alerts = self.evaluate_due(settings, now_ms);
        let t = event.timestamp_ms;
        let error = event.status == InferenceStatus::Error as i32;
        let slow = event.latency_ms > settings.config.slow_threshold_ms;
        let segments = settings
            .config
            .segment_tags
            .iter()
            .filter_map(|tag| event.tag(tag).map(|v| format!("{tag}={v}")));
        let score = event.prediction.as_ref().and_then(|p| p.score);
        for segment in std::iter::once(String::new()).chain(segments) {
            // Found by reference: no key is built for a known series.
            let id = (event.model, event.model_version, segment.as_str());
            let whole = segment.is_empty();
            let series = match self.series.get_mut(&id as &dyn SeriesId) {
                Some(s) => s,
                None => {
                    let key = SeriesKey {
                        model: event.model.to_string(),
                        model_version: event.model_version.to_string(),
                        segment,
                    };
                    let mut series = settings.new_series(t);
                    if whole {
                        series.canary = self.canary_for(settings, &key, t);
                    }
                    self.series.entry(key).or_insert(series)
                }
            };
            series.add(t, event.latency_ms, error, slow, score.filter(|_| whole));
        }
        alerts
    }

    /// The baseline a new version `key` appearing at `t_ms` is compared
    /// with: the configured baseline version of its model, else the
    /// version of the model that served last (`None` when there is none or
    /// version comparison is off).
    fn canary_for(&self, settings: &Settings, key: &SeriesKey, t_ms: i64) -> Option<Canary> {
        let rule = &settings.rules.versions;
        if !rule.enabled {
            return None;
        }
        let configured = rule.baseline_versions.get(&key.model);
        let (bkey, base) = self
            .series
            .iter()
            .filter(|(k, _)| k.model == key.model && k.segment.is_empty() && k.model_version != key.model_version)
            .filter(|(k, _)| configured.is_none_or(|v| *v == k.model_version))
            .max_by_key(|(k, s)| (s.last_event_ms, (*k).clone()))?;
        let snapshot = base
            .window(rule.window_secs)
            .map(|w| w.stats(base.last_event_ms))
            .unwrap_or_default();
        Some(Canary {
            baseline_version: bkey.model_version.clone(),
            since_ms: t_ms,
            snapshot,
            snapshot_scores: base.scores.clone(),
        })
    }

    /// An idle partition's clock moved to `now_ms`: evaluates the
    /// boundaries it passed (nothing before the first event).
    pub fn advance(&mut self, settings: &Settings, now_ms: i64) -> Vec<Alert> {
        if !self.schedule.started() {
            return Vec::new();
        }
        self.evaluate_due(settings, now_ms)
    }

    fn evaluate_due(&mut self, settings: &Settings, now_ms: i64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for at in self.schedule.due_all(now_ms, settings.eval_interval_ms) {
            alerts.extend(self.evaluate_at(settings, at));
        }
        alerts
    }

    /// Makes every series' windows match the configuration (after a restore
    /// under a changed configuration).
    pub fn reconcile(&mut self, settings: &Settings) {
        for s in self.series.values_mut() {
            s.reconcile(settings);
        }
    }

    /// Evaluates every rule and detector of every series at event time `at_ms`.
    pub fn evaluate_at(&mut self, settings: &Settings, at_ms: i64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let baselines = self.live_baselines(settings, at_ms);
        for (key, series) in &mut self.series {
            evaluate_series(settings, key, series, at_ms, &mut alerts);
            if let Some(live) = baselines.get(key) {
                evaluate_version(&settings.rules.versions, key, series, live, at_ms, &mut alerts);
            }
        }
        alerts
    }

    /// For every new version with a baseline: what its baseline looks like
    /// at `at_ms` (its window, its scores since the new version appeared).
    fn live_baselines(&self, settings: &Settings, at_ms: i64) -> HashMap<SeriesKey, (Stats, ScoreBins)> {
        let rule = &settings.rules.versions;
        if !rule.enabled {
            return HashMap::new();
        }
        self.series
            .iter()
            .filter_map(|(k, s)| {
                let c = s.canary.as_ref()?;
                let id = (k.model.as_str(), c.baseline_version.as_str(), "");
                let live = self.series.get(&id as &dyn SeriesId).map(|b| {
                    // Only what the baseline served since the new version
                    // appeared: the same span as the new version's window.
                    let from = (at_ms - rule.window_secs as i64 * 1000).max(c.since_ms);
                    (
                        b.window(rule.window_secs)
                            .map(|w| w.stats_range(from, at_ms))
                            .unwrap_or_default(),
                        b.scores.since(&c.snapshot_scores),
                    )
                });
                Some((k.clone(), live.unwrap_or_default()))
            })
            .collect()
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.series.values().map(Series::heap_bytes).sum()
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

fn evaluate_series(settings: &Settings, key: &SeriesKey, series: &mut Series, at_ms: i64, out: &mut Vec<Alert>) {
    let rules = &settings.rules;
    // Each window the rules read is merged once per evaluation.
    let merged: Vec<(u64, Stats)> = settings
        .rule_windows
        .iter()
        .map(|w| (*w, series.window(*w).map(|x| x.stats(at_ms)).unwrap_or_default()))
        .collect();
    let empty = Stats::default();
    let stats_of = |secs: u64| merged.iter().find(|(w, _)| *w == secs).map_or(&empty, |(_, s)| s);
    for kind in Threshold::ALL {
        let p = kind.params(rules, &key.model);
        if !p.enabled {
            continue;
        }
        let stats = stats_of(p.window_secs);
        let window_ms = p.window_secs as i64 * 1000;
        let mut j = judge(
            kind,
            &p,
            stats,
            p.window_secs,
            at_ms - series.first_event_ms >= window_ms,
        );
        let wname = window_name(p.window_secs);
        j.text = describe(kind, key, &j, &p, stats, &wname);
        let phase = series.phases.entry(kind.alert_type().to_string()).or_default();
        let transition = rules::step(phase, at_ms, j.breach, j.clear, p.for_ms, p.resolve_for_ms);
        let spec = AlertSpec {
            alert_type: kind.alert_type(),
            severity: p.severity.into(),
            labels: labels(key),
            summary: j.text,
            description: format!(
                "{} requests in the last {wname}; quantiles within {:.1} % relative error",
                stats.count,
                stats.sketch.alpha() * 100.0
            ),
            value: j.value,
            threshold: p.threshold,
            recommendations: kind.recommendations(),
        };
        out.extend(rules::alert_for(spec, &transition, at_ms));
    }
    evaluate_spike(
        &rules.latency_spike,
        key,
        series,
        stats_of(rules.latency_spike.window_secs),
        at_ms,
        out,
    );
    evaluate_sla(
        &rules.sla_prediction,
        key,
        series,
        stats_of(rules.sla_prediction.window_secs),
        at_ms,
        out,
    );
    evaluate_relative(&rules.relative, key, series, &stats_of, at_ms, out);
    series.recent_sum_ms = 0.0;
    series.recent_count = 0;
}

/// The phase key of a relative check: alert type, metric and window.
fn relative_phase(check: &relative::Check) -> String {
    let kind = if check.metric == Metric::ErrorRate {
        "ErrorRateRegression"
    } else {
        "LatencyRegression"
    };
    format!("{kind}/{}/{}", check.metric.name(), window_name(check.window_secs))
}

fn evaluate_relative<'a>(
    rule: &RelativeRule,
    key: &SeriesKey,
    series: &mut Series,
    stats_of: &dyn Fn(u64) -> &'a Stats,
    at_ms: i64,
    out: &mut Vec<Alert>,
) {
    let Some(bw) = baseline_window_secs(rule) else {
        return;
    };
    // Refresh the reference period once per slot of its window, unless a
    // check is pending or firing.
    let held = rule.checks.iter().any(|c| {
        series
            .phases
            .get(&relative_phase(c))
            .is_some_and(|p| *p != Phase::Inactive)
    });
    if let Some(w) = series.window(bw)
        && !held
        && (series.baseline.is_none() || at_ms - series.baseline_at_ms >= w.slot_ms())
    {
        let end = at_ms - rule.lag_secs() as i64 * 1000;
        let b = w.stats_range(end - rule.baseline_secs as i64 * 1000, end);
        series.baseline = Some(b);
        series.baseline_at_ms = at_ms;
    }
    let Some(baseline) = series.baseline.clone() else {
        return;
    };
    for check in &rule.checks {
        let window = stats_of(check.window_secs);
        let confirm = (check.confirm_window_secs > 0).then(|| stats_of(check.confirm_window_secs));
        let d = relative::decide(
            check,
            window,
            confirm,
            &baseline,
            rule.error_min_delta,
            rule.confidence,
            rule.min_samples,
        );
        let phase_key = relative_phase(check);
        let phase = series.phases.entry(phase_key.clone()).or_default();
        let transition = rules::step(
            phase,
            at_ms,
            d.breach,
            d.clear,
            rule.for_secs as i64 * 1000,
            rule.resolve_for_secs as i64 * 1000,
        );
        let alert_type = phase_key.split('/').next().unwrap_or_default();
        let (value, base) = d.test.map(|t| t.values()).unwrap_or_else(|| {
            (
                relative::point(check.metric, window).unwrap_or(0.0),
                relative::point(check.metric, &baseline).unwrap_or(0.0),
            )
        });
        let mut labels = labels(key);
        labels.insert("metric".into(), check.metric.name().into());
        labels.insert("window".into(), window_name(check.window_secs));
        let m = check.metric;
        let spec = AlertSpec {
            alert_type,
            severity: rule.severity.into(),
            labels,
            summary: format!(
                "{} of {} is {} over {}, {:.2} × its baseline {} (minimum effect × {})",
                m.name(),
                series_name(key),
                m.show(value),
                window_name(check.window_secs),
                if base > 0.0 { value / base } else { f64::INFINITY },
                m.show(base),
                check.factor
            ),
            description: format!(
                "{}; {} events in the window, {} in the baseline (the {} ending {} before)",
                d.test
                    .map(|t| t.evidence(m, rule.confidence, check.factor))
                    .unwrap_or_else(|| "too few events to test".into()),
                window.count,
                baseline.count,
                window_name(rule.baseline_secs),
                window_name(rule.lag_secs())
            ),
            value,
            threshold: base * check.factor,
            recommendations: vec![
                "check recent deployments and configuration changes of the model".into(),
                "check the model server's dependencies and load".into(),
            ],
        };
        out.extend(rules::alert_for(spec, &transition, at_ms));
    }
}

/// Compares a new version with its baseline (`live`: the baseline's window
/// now and its scores since the new version appeared).
fn evaluate_version(
    rule: &VersionRule,
    key: &SeriesKey,
    series: &mut Series,
    live: &(Stats, ScoreBins),
    at_ms: i64,
    out: &mut Vec<Alert>,
) {
    let Some(canary) = series.canary.clone() else {
        return;
    };
    let current = series
        .window(rule.window_secs)
        .map(|w| w.stats(at_ms))
        .unwrap_or_default();
    // A canary: the same span of both; a rollout: the baseline's last period.
    let canary_mode = live.0.count >= rule.min_samples;
    let base = if canary_mode { &live.0 } else { &canary.snapshot };
    let base_scores = if live.1.total() >= rule.min_samples {
        &live.1
    } else {
        &canary.snapshot_scores
    };
    let mode = if canary_mode {
        "canary: both versions over the same window"
    } else {
        "rollout: against the baseline's last period before this version"
    };
    let mut decisions: Vec<(&str, bool, bool, f64, f64, f64, String)> = Vec::new();
    for metric in [Metric::P50, Metric::P90, Metric::P99, Metric::ErrorRate] {
        let factor = rule.factor(metric);
        let check = relative::Check {
            metric,
            window_secs: rule.window_secs,
            factor,
            confirm_window_secs: 0,
        };
        let d = relative::decide(
            &check,
            &current,
            None,
            base,
            rule.error_min_delta,
            rule.confidence,
            rule.min_samples,
        );
        let (v, b) = d.test.map(|t| t.values()).unwrap_or_else(|| {
            (
                relative::point(metric, &current).unwrap_or(0.0),
                relative::point(metric, base).unwrap_or(0.0),
            )
        });
        let evidence = d
            .test
            .map(|t| t.evidence(metric, rule.confidence, factor))
            .unwrap_or_else(|| "too few events to test".into());
        decisions.push((metric.name(), d.breach, d.clear, v, b, b * factor, evidence));
    }
    let current_scores = series.scores.clone();
    if let Some((psi, p, significant)) = versions::score_shift(&current_scores, base_scores, rule) {
        decisions.push((
            "score",
            significant,
            psi <= rule.score_psi,
            psi,
            0.0,
            rule.score_psi,
            format!("population stability index {psi:.3} of the prediction score; chi-square test of homogeneity p = {p:.3e}"),
        ));
    }
    for (metric, breach, clear, value, base_value, threshold, evidence) in decisions {
        let phase = series.phases.entry(format!("VersionRegression/{metric}")).or_default();
        let transition = rules::step(
            phase,
            at_ms,
            breach,
            clear || current.count == 0,
            rule.for_secs as i64 * 1000,
            rule.resolve_for_secs as i64 * 1000,
        );
        let mut labels = labels(key);
        labels.insert("baseline_version".into(), canary.baseline_version.clone());
        labels.insert("metric".into(), metric.into());
        let shown = |v: f64| match metric {
            "score" => format!("PSI {v:.3}"),
            "error_rate" => Metric::ErrorRate.show(v),
            _ => Metric::P50.show(v),
        };
        let summary = if metric == "score" {
            format!(
                "prediction scores of {} moved against {} {}: {}",
                series_name(key),
                key.model,
                canary.baseline_version,
                shown(value)
            )
        } else {
            format!(
                "{metric} of {} is {} against {} in {} {} ({mode})",
                series_name(key),
                shown(value),
                shown(base_value),
                key.model,
                canary.baseline_version
            )
        };
        let spec = AlertSpec {
            alert_type: "VersionRegression",
            severity: rule.severity.into(),
            labels,
            summary,
            description: format!(
                "{evidence}; {} events of {} over {}, baseline {} events",
                current.count,
                key.model_version,
                window_name(rule.window_secs),
                base.count
            ),
            value,
            threshold,
            recommendations: vec![format!(
                "roll back {} to {} if the regression is confirmed",
                key.model, canary.baseline_version
            )],
        };
        out.extend(rules::alert_for(spec, &transition, at_ms));
    }
}

fn evaluate_spike(
    rule: &SpikeRule,
    key: &SeriesKey,
    series: &mut Series,
    stats: &Stats,
    at_ms: i64,
    out: &mut Vec<Alert>,
) {
    if !rule.enabled {
        return;
    }
    let (mean_ms, std_ms) = stats.mean_std();
    let latest = (series.recent_count > 0).then(|| series.recent_sum_ms / series.recent_count as f64);
    let z = latest
        .filter(|_| stats.count >= rule.min_samples)
        .and_then(|l| detectors::z_score(l, mean_ms, std_ms));
    series.last_z = z;
    let severity = z.and_then(|z| detectors::spike_severity(rule, z));
    let phase = series.phases.entry("LatencySpike".to_string()).or_default();
    let breach = severity.is_some();
    let clear = z.is_none_or(|z| z <= rule.z_threshold);
    let transition = rules::step(
        phase,
        at_ms,
        breach,
        clear,
        rule.for_secs as i64 * 1000,
        rule.resolve_for_secs as i64 * 1000,
    );
    let z = z.unwrap_or(0.0);
    let spec = AlertSpec {
        alert_type: "LatencySpike",
        severity: severity.unwrap_or(SeverityName::Medium).into(),
        labels: labels(key),
        summary: format!(
            "latency of {} spiked: latest {:.1} ms is {z:.1} standard deviations above the {} mean {:.1} ms",
            series_name(key),
            latest.unwrap_or(0.0),
            window_name(rule.window_secs),
            mean_ms
        ),
        description: format!("z-score threshold {}, high above {}", rule.z_threshold, rule.high_z),
        value: z,
        threshold: rule.z_threshold,
        recommendations: vec!["check the model server and its dependencies for a sudden slowdown".into()],
    };
    out.extend(rules::alert_for(spec, &transition, at_ms));
}

fn evaluate_sla(rule: &SlaRule, key: &SeriesKey, series: &mut Series, stats: &Stats, at_ms: i64, out: &mut Vec<Alert>) {
    if !rule.enabled {
        return;
    }
    let every_ms = rule.sample_every_secs.max(1) as i64 * 1000;
    if series
        .p99_history
        .last_sample_ms()
        .is_some_and(|t| at_ms - t < every_ms)
    {
        return;
    }
    let Some(p99) = stats.sketch.quantile(0.99).filter(|_| stats.count >= rule.min_samples) else {
        return;
    };
    series
        .p99_history
        .push(at_ms, p99, rule.trend_window_secs as i64 * 1000);
    let Some(f) = series.forecast(rule, p99) else {
        return;
    };
    let phase = series.phases.entry("PredictedSlaBreach".to_string()).or_default();
    let breach = f.breach_probability > rule.fire_probability;
    let clear = f.breach_probability <= 0.2;
    let transition = rules::step(phase, at_ms, breach, clear, 0, rule.resolve_for_secs as i64 * 1000);
    let severity = if f.breach_probability > 0.8 {
        SeverityName::High
    } else {
        SeverityName::Medium
    };
    let spec = AlertSpec {
        alert_type: "PredictedSlaBreach",
        severity: severity.into(),
        labels: labels(key),
        summary: format!(
            "p99 of {} is {:.1} ms and rising {:.2} ms/min: {:.1} ms predicted in {} min (SLA {} ms), breach probability {:.2}",
            series_name(key),
            f.current_p99_ms,
            f.trend_ms_per_min,
            f.predicted_p99_ms,
            rule.horizon_mins,
            rule.sla_ms,
            f.breach_probability
        ),
        description: format!(
            "least-squares trend of p99 over the last {}",
            window_name(rule.trend_window_secs)
        ),
        value: f.breach_probability,
        threshold: rule.fire_probability,
        recommendations: vec![f.recommendation.to_string()],
    };
    out.extend(rules::alert_for(spec, &transition, at_ms));
}

impl LatencyPart {
    /// Statistics of every series of `model` (all when `None`) over the
    /// window of `window_secs`, as of the partition's time `now_ms`. `None`
    /// when the window is not tracked.
    pub fn reports(
        &self,
        settings: &Settings,
        model: Option<&str>,
        window_secs: u64,
        now_ms: i64,
    ) -> Option<Vec<WindowReport>> {
        if !settings.windows_secs().contains(&window_secs) {
            return None;
        }
        let sla = &settings.rules.sla_prediction;
        let out = self
            .series
            .iter()
            .filter(|(k, _)| model.is_none_or(|m| k.model == m))
            .filter_map(|(k, s)| {
                let w = s.window(window_secs)?;
                let summary = w.stats(now_ms).summary(w.window_ms());
                let forecast = s
                    .window(sla.window_secs)
                    .and_then(|sw| sw.stats(now_ms).sketch.quantile(0.99))
                    .and_then(|p99| s.forecast(sla, p99));
                Some(WindowReport {
                    model: k.model.clone(),
                    model_version: k.model_version.clone(),
                    segment: k.segment.clone(),
                    window: window_name(window_secs),
                    window_secs,
                    as_of_ms: now_ms,
                    late_events: w.late(),
                    summary,
                    latest_z_score: s.last_z,
                    sla_forecast: forecast,
                })
            })
            .collect();
        Some(out)
    }

    /// Every tracked series of the partition, in key order.
    pub fn series(&self, partition: i32) -> impl Iterator<Item = SeriesInfo> + '_ {
        self.series.iter().map(move |(k, s)| SeriesInfo {
            model: k.model.clone(),
            model_version: k.model_version.clone(),
            segment: k.segment.clone(),
            partition,
            events: s.events,
            first_event_ms: s.first_event_ms,
            last_event_ms: s.last_event_ms,
            alerts_firing: s
                .phases
                .iter()
                .filter(|(_, ph)| ph.is_firing())
                .map(|(t, _)| t.clone())
                .collect(),
            state_bytes: s.heap_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use mlwatch_analyzer_core::EventClock;
    use mlwatch_proto::v1::{AlertStatus, InferenceEvent};

    use super::*;

    /// One partition's clock and latency part, driven as the service does.
    struct Driver {
        settings: Settings,
        clock: EventClock,
        part: LatencyPart,
    }

    impl Driver {
        fn new(config: LatencyConfig, rules: RulesConfig, eval_interval_ms: u64) -> Self {
            Self {
                settings: Settings::new(config, rules, eval_interval_ms),
                clock: EventClock::default(),
                part: LatencyPart::default(),
            }
        }

        fn observe(&mut self, event: &InferenceEvent) -> Vec<Alert> {
            let now = self.clock.observe(event.timestamp_ms);
            self.part.observe(&self.settings, now, &InferenceRef::of(event))
        }

        fn advance(&mut self, t_ms: i64) -> Vec<Alert> {
            self.clock.advance(t_ms);
            self.part.advance(&self.settings, self.clock.now_ms())
        }

        fn series(&self) -> Vec<SeriesInfo> {
            self.part.series(0).collect()
        }

        fn reports(&self, model: Option<&str>, window_secs: u64) -> Option<Vec<WindowReport>> {
            self.part
                .reports(&self.settings, model, window_secs, self.clock.now_ms())
        }
    }

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

    fn quiet_rules() -> RulesConfig {
        let mut rules = RulesConfig::default();
        rules.latency_spike.enabled = false;
        rules.sla_prediction.enabled = false;
        rules
    }

    /// Feeds 10 events/s of event time through three phases of latency;
    /// returns every alert.
    fn run(engine: &mut Driver, phases: &[f64], secs_per_phase: i64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let mut t = 1_000_000;
        for latency in phases {
            for _ in 0..secs_per_phase * 10 {
                alerts.extend(engine.observe(&event("fraud", t, *latency)));
                t += 100;
            }
        }
        alerts
    }

    #[test]
    fn p99_regression_fires_then_resolves_on_event_time() {
        let mut rules = quiet_rules();
        rules.p99_latency.window_secs = 10;
        rules.p99_latency.resolve_for_secs = 2;
        let mut e = Driver::new(LatencyConfig::default(), rules, 1000);
        let fired = run(&mut e, &[20.0, 450.0, 20.0], 30);
        let kinds: Vec<(&str, i32)> = fired.iter().map(|a| (a.r#type.as_str(), a.status)).collect();
        assert_eq!(
            kinds,
            vec![
                ("HighP99Latency", AlertStatus::Firing as i32),
                ("HighP99Latency", AlertStatus::Resolved as i32)
            ]
        );
        assert_eq!(fired[0].fingerprint, fired[1].fingerprint);
        assert!(fired[0].value > 200.0);
        // The regression began at t = 1_030_000; one slot of the 10 s window
        // (> 1 % of 100 events) is slow after the first whole second.
        assert_eq!(fired[0].starts_at_ms, 1_031_000);
    }

    #[test]
    fn replay_gives_identical_alerts() {
        let mut rules = RulesConfig::default();
        rules.p99_latency.window_secs = 10;
        let mut a = Driver::new(LatencyConfig::default(), rules.clone(), 1000);
        let mut b = Driver::new(LatencyConfig::default(), rules, 1000);
        let first = run(&mut a, &[20.0, 450.0, 20.0], 30);
        let second = run(&mut b, &[20.0, 450.0, 20.0], 30);
        assert!(!first.is_empty());
        assert_eq!(first, second);
        assert_eq!(a.series()[0].events, 900);
    }

    #[test]
    fn checkpoint_round_trip_continues_identically() {
        let mut rules = quiet_rules();
        rules.p99_latency.window_secs = 10;
        let mut whole = Driver::new(LatencyConfig::default(), rules.clone(), 1000);
        let all = run(&mut whole, &[20.0, 450.0, 20.0], 30);

        // Stop after the first phase, serialise, restore into a new engine
        // and feed the rest: same alerts, same counts.
        let mut first = Driver::new(LatencyConfig::default(), rules.clone(), 1000);
        let mut alerts = run(&mut first, &[20.0], 30);
        let json = serde_json::to_vec(&first.part).unwrap();
        let mut second = Driver::new(LatencyConfig::default(), rules, 1000);
        second.part = serde_json::from_slice(&json).unwrap();
        second.part.reconcile(&second.settings);
        second.clock = EventClock::at(first.clock.now_ms());
        let mut t = 1_030_000;
        for i in 300..900 {
            let latency = if i < 600 { 450.0 } else { 20.0 };
            alerts.extend(second.observe(&event("fraud", t, latency)));
            t += 100;
        }
        assert_eq!(alerts, all);
        assert_eq!(second.series()[0].events, whole.series()[0].events);
        let r1 = whole.reports(Some("fraud"), 60).unwrap();
        let r2 = second.reports(Some("fraud"), 60).unwrap();
        assert_eq!(r1[0].summary, r2[0].summary);
    }

    #[test]
    fn rate_rules_and_overrides() {
        let mut rules = quiet_rules();
        rules.p99_latency.enabled = false;
        rules.slow_rate.window_secs = 10;
        rules.slow_rate.min_samples = 10;
        rules.error_rate.window_secs = 10;
        rules.models.insert(
            "fraud".into(),
            ModelOverrides {
                error_rate: Some(crate::thresholds::RuleOverride {
                    enabled: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let mut e = Driver::new(LatencyConfig::default(), rules, 1000);
        let mut alerts = Vec::new();
        for i in 0..200 {
            let mut ev = event("fraud", 1_000_000 + i * 100, if i % 10 == 0 { 1500.0 } else { 10.0 });
            ev.status = if i % 5 == 0 { 2 } else { 1 };
            alerts.extend(e.observe(&ev));
        }
        let types: Vec<&str> = alerts.iter().map(|a| a.r#type.as_str()).collect();
        assert_eq!(types, vec!["HighSlowRequestRate"]);
        assert_eq!(alerts[0].severity, mlwatch_proto::v1::Severity::Medium as i32);
        assert!((alerts[0].value - 0.1).abs() < 1e-9);
    }

    #[test]
    fn throughput_below_minimum_fires_when_traffic_stops() {
        let mut rules = quiet_rules();
        rules.throughput.min_rps = 5.0;
        rules.throughput.window_secs = 10;
        rules.throughput.for_secs = 2;
        let mut e = Driver::new(LatencyConfig::default(), rules, 1000);
        let fired = run(&mut e, &[10.0], 20);
        assert!(fired.is_empty(), "{fired:?}");
        // No events for a while: the idle partition is advanced.
        let alerts = e.advance(1_000_000 + 40_000);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].r#type, "LowThroughput");
    }

    #[test]
    fn spike_and_sla_prediction() {
        let mut rules = RulesConfig::default();
        rules.p99_latency.enabled = false;
        rules.slow_rate.enabled = false;
        let mut e = Driver::new(LatencyConfig::default(), rules, 1000);
        let mut alerts = Vec::new();
        // 5 minutes of p99 rising 10 ms per minute, with noise for spread.
        let mut t = 1_000_000;
        for i in 0..3000i64 {
            let base = 50.0 + 10.0 * (i as f64 / 600.0);
            let latency = base + (i % 7) as f64;
            alerts.extend(e.observe(&event("fraud", t, latency)));
            t += 100;
        }
        let r = e.reports(Some("fraud"), 60).unwrap();
        let f = r[0].sla_forecast.clone().unwrap();
        assert!((f.trend_ms_per_min - 10.0).abs() < 1.5, "{f:?}");
        assert!(f.breach_probability > 0.5, "{f:?}");
        assert!(alerts.iter().any(|a| a.r#type == "PredictedSlaBreach"));
        assert!(!alerts.iter().any(|a| a.r#type == "LatencySpike"), "{alerts:?}");
        // One very slow outlier is not a spike; slow seconds for longer
        // than `for_secs` are, of high severity.
        let mut a = Vec::new();
        for i in 3000..3080 {
            let latency = if i == 3000 || i >= 3020 { 5000.0 } else { 100.0 };
            let x = e.observe(&event("fraud", t, latency));
            if i < 3020 {
                assert!(x.iter().all(|a| a.r#type != "LatencySpike"), "{x:?}");
            }
            a.extend(x);
            t += 100;
        }
        let spike: Vec<&Alert> = a.iter().filter(|a| a.r#type == "LatencySpike").collect();
        assert_eq!(spike.len(), 1, "{a:?}");
        assert_eq!(spike[0].severity, mlwatch_proto::v1::Severity::High as i32);
    }

    #[test]
    fn segments_are_tracked_separately() {
        let mut config = LatencyConfig::default();
        config.segment_tags = vec!["region".into()];
        let mut e = Driver::new(config, quiet_rules(), 1000);
        let mut ev = event("fraud", 1_000_000, 10.0);
        ev.tags.insert("region".into(), "eu".into());
        e.observe(&ev);
        e.observe(&event("fraud", 1_000_001, 10.0));
        let s = e.series();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].segment.as_str(), s[0].events), ("", 2));
        assert_eq!((s[1].segment.as_str(), s[1].events), ("region=eu", 1));
    }
}
