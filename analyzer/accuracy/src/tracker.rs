//! Per model, version and segment accuracy state: what the engine calls on
//! each prediction, each joined label and each evaluation tick, and what it
//! exports and serves (pure, no I/O; time is the `now_ms` passed in).
//!
//! Outcomes are kept in time buckets by *prediction* time, so a window's
//! label coverage is the share of its predictions labelled so far. Decay is
//! judged on the merge of the buckets in `decay_window_secs` against the
//! series' baseline (configured, or measured over its first
//! `reference_labelled` labelled outcomes); the Page-Hinkley detector reads
//! the correctness stream in label-arrival order.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use mlwatch_proto::v1::{Alert, AlertStatus, Severity};
use serde::{Deserialize, Serialize};

use super::decay::{Assessment, Baseline, DecayConfig, MetricType, assess};
use super::join::{JoinConfig, JoinEvent, Joined, JournalEntry, PendingPrediction, TruthLabel};
use super::metrics::{BinaryMetrics, BinaryStats, Evaluation, LagSummary, MulticlassMetrics, RegressionMetrics};
use super::sequential::{PageHinkley, PageHinkleyConfig};
use super::trend::{self, Trend};
use mlwatch_analyzer_core::Error;
use mlwatch_analyzer_core::clock::window_name;
use mlwatch_analyzer_core::rules::{self, AlertSpec, Phase, Transition};
use mlwatch_analyzer_core::series::{SeriesId, labels};

/// Alert type of a significant decay against the baseline.
pub const DECAY_ALERT: &str = "AccuracyDecay";
/// Alert type of the sequential detector's early warning.
pub const EARLY_WARNING_ALERT: &str = "AccuracyDecayEarlyWarning";

/// The `[accuracy]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccuracyConfig {
    /// Join labels and judge accuracy at all.
    pub enabled: bool,
    pub join: JoinConfig,
    /// Width of a metrics bucket, by prediction time.
    pub bucket_secs: u64,
    /// Windows (by prediction time) served by the API.
    pub windows_secs: Vec<u64>,
    /// Window the decay rule and the `ml_model_accuracy` gauges read.
    pub decay_window_secs: u64,
    /// Tags whose values become segments (keep them low-cardinality).
    pub segment_tags: Vec<String>,
    /// Label values that mean the positive class.
    pub positive_labels: Vec<String>,
    /// Label values that mean the negative class.
    pub negative_labels: Vec<String>,
    /// A prediction with a score but no label is positive at or above this.
    pub score_threshold: f64,
    /// Labelled outcomes from a series' start that form its measured baseline.
    pub reference_labelled: u64,
    /// Configured baselines, model → metric name → value; they replace the
    /// measured baseline of that metric.
    pub baselines: BTreeMap<String, BTreeMap<String, f64>>,
    pub decay: DecayConfig,
    pub early_warning: PageHinkleyConfig,
    /// How long the early warning stays firing after the detector's last alarm.
    pub early_warning_hold_secs: u64,
    /// How long decay must hold before the alert fires.
    pub for_secs: u64,
    /// How long a metric must stay undecayed before the alert resolves.
    pub resolve_for_secs: u64,
    /// One trend point per metric per this interval.
    pub trend_interval_secs: u64,
    /// Trend points older than this are dropped (the fit's horizon).
    pub trend_horizon_secs: u64,
    /// How far ahead the trend predicts.
    pub trend_ahead_secs: u64,
    /// High-severity decays within `repeat_window_secs` that turn the
    /// recommendation from "keep watching" into rollback or retrain.
    pub repeat_count: usize,
    /// Window of the repeat count.
    pub repeat_window_secs: u64,
    /// Score histogram bins (AUC resolution).
    pub score_bins: u32,
}

impl Default for AccuracyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            join: JoinConfig::default(),
            bucket_secs: 300,
            windows_secs: vec![3600, 86_400],
            decay_window_secs: 86_400,
            segment_tags: Vec::new(),
            positive_labels: ["1", "true", "yes", "positive"].map(String::from).to_vec(),
            negative_labels: ["0", "false", "no", "negative"].map(String::from).to_vec(),
            score_threshold: 0.5,
            reference_labelled: 2000,
            baselines: BTreeMap::new(),
            decay: DecayConfig::default(),
            early_warning: PageHinkleyConfig::default(),
            early_warning_hold_secs: 3600,
            for_secs: 0,
            resolve_for_secs: 600,
            trend_interval_secs: 300,
            trend_horizon_secs: 86_400,
            trend_ahead_secs: 3600,
            repeat_count: 2,
            repeat_window_secs: 86_400,
            score_bins: super::metrics::DEFAULT_SCORE_BINS,
        }
    }
}

impl AccuracyConfig {
    /// Checks values the types cannot; names the offending key.
    pub fn validate(&self) -> Result<(), Error> {
        self.join.validate()?;
        if self.bucket_secs == 0 {
            return Err(Error::config("accuracy.bucket_secs", "must be > 0"));
        }
        for (model, metrics) in &self.baselines {
            for (name, value) in metrics {
                if !MetricType::ALL.iter().any(|m| m.name() == name) {
                    return Err(Error::config(
                        format!("accuracy.baselines.{model}.{name}"),
                        "unknown metric; use accuracy, precision, recall, f1, auc_roc or multiclass_accuracy",
                    ));
                }
                if !(0.0..=1.0).contains(value) {
                    return Err(Error::config(
                        format!("accuracy.baselines.{model}.{name}"),
                        format!("{value} is outside [0, 1]"),
                    ));
                }
            }
        }
        if !(0.0..1.0).contains(&self.decay.significance) || self.decay.significance == 0.0 {
            return Err(Error::config(
                "accuracy.decay.significance",
                format!("{} is outside (0, 1)", self.decay.significance),
            ));
        }
        Ok(())
    }
}

pub use mlwatch_analyzer_core::series::SeriesKey;

/// An empty evaluation with `score_bins` bins.
fn evaluation(score_bins: u32) -> Evaluation {
    let stats = BinaryStats::new(score_bins);
    Evaluation {
        binary: stats.clone(),
        estimated: stats,
        ..Default::default()
    }
}

/// A labelled outcome, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Binary {
        score: Option<f64>,
        predicted: bool,
        actual: bool,
    },
    Multiclass {
        predicted: String,
        actual: String,
    },
    Regression {
        predicted: f64,
        actual: f64,
    },
}

/// One alert state change kept for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert_type: String,
    pub metric: Option<MetricType>,
    pub status: String,
    pub severity: String,
    pub value: f64,
    pub threshold: f64,
    pub at_ms: i64,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetricState {
    #[serde(with = "PhaseDef")]
    phase: Phase,
    points: VecDeque<(i64, f64)>,
    last: Option<Assessment>,
}

impl Default for MetricState {
    fn default() -> Self {
        Self {
            phase: Phase::Inactive,
            points: VecDeque::new(),
            last: None,
        }
    }
}

/// Serde shape of [`Phase`].
#[derive(Serialize, Deserialize)]
#[serde(remote = "Phase")]
enum PhaseDef {
    Inactive,
    Pending { since_ms: i64 },
    Firing { since_ms: i64, good_since_ms: Option<i64> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Series {
    buckets: BTreeMap<i64, Evaluation>,
    reference: Evaluation,
    reference_done: bool,
    detector: PageHinkley,
    alarms: u64,
    last_alarm_ms: Option<i64>,
    #[serde(with = "PhaseDef")]
    warning_phase: Phase,
    #[serde(with = "mlwatch_analyzer_core::series::pairs")]
    metrics: BTreeMap<MetricType, MetricState>,
    history: VecDeque<AlertRecord>,
    /// Starts of high-severity decay episodes within the repeat window.
    high_decays: VecDeque<i64>,
    /// A high-severity episode is under way (some metric still firing).
    high_episode: bool,
    /// Labels whose bucket had already left retention.
    too_old: u64,
    /// Pairs whose prediction and label do not fit one kind of model.
    mismatched: u64,
}

const HISTORY: usize = 20;

/// Counters the engine exports beside the join's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrackerCounts {
    pub too_old: u64,
    pub mismatched: u64,
    pub early_warnings: u64,
}

/// Which series and window a served object describes, and how much of it
/// is labelled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    pub model: String,
    pub model_version: String,
    pub segment: String,
    pub window_secs: u64,
    pub predictions: u64,
    pub labelled: u64,
    pub label_coverage: Option<f64>,
}

impl Coverage {
    fn of(key: &SeriesKey, window_secs: u64, w: &Evaluation) -> Self {
        Self {
            model: key.model.clone(),
            model_version: key.model_version.clone(),
            segment: key.segment.clone(),
            window_secs,
            predictions: w.predictions,
            labelled: w.labelled,
            label_coverage: w.coverage(),
        }
    }
}

/// Metrics of one series over one window, as served by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowMetrics {
    #[serde(flatten)]
    pub series: Coverage,
    pub label_lag: Option<LagSummary>,
    pub binary: Option<BinaryMetrics>,
    /// Confidence-based estimate over every scored prediction of the window.
    pub binary_estimated: Option<BinaryMetrics>,
    pub multiclass: Option<MulticlassMetrics>,
    pub multiclass_estimated_accuracy: Option<f64>,
    pub regression: Option<RegressionMetrics>,
}

/// One metric in the decay report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricReport {
    pub metric: MetricType,
    pub baseline: Option<f64>,
    /// `configured`, `measured`, or `pending` (reference not yet full).
    pub baseline_source: &'static str,
    /// Realised value over the decay window.
    pub current: Option<f64>,
    /// Confidence-based estimate over the same window (CBPE).
    pub estimated: Option<f64>,
    /// baseline − current.
    pub decay: Option<f64>,
    pub threshold: f64,
    pub p_value: Option<f64>,
    pub decayed: bool,
    pub severity: Option<String>,
    pub firing: bool,
    pub trend: Option<Trend>,
}

/// What to do about a model version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Recommendation {
    KeepWatching { reason: String },
    Rollback { to_version: String, reason: String },
    Retrain { reason: String },
}

/// The decay report of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecayReport {
    #[serde(flatten)]
    pub series: Coverage,
    pub metrics: Vec<MetricReport>,
    pub early_warning_alarms: u64,
    pub early_warning_last_ms: Option<i64>,
    pub last_alerts: Vec<AlertRecord>,
    pub recommendation: Recommendation,
}

/// One value for `ml_model_accuracy{model_name,model_version,metric_type}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gauge {
    pub model: String,
    pub model_version: String,
    pub metric_type: String,
    pub value: f64,
}

pub struct AccuracyTracker {
    config: AccuracyConfig,
    state: AccuracyState,
}

/// Everything an [`AccuracyTracker`] has learnt: what a checkpoint saves
/// (JSON-friendly) and [`AccuracyTracker::from_state`] restores.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccuracyState {
    /// Newest journal entry applied (see [`AccuracyTracker::apply`]).
    pub journal_seq: u64,
    /// Input offsets (topic → last applied offset) this state covers, as
    /// set by the engine before checkpointing; a rebuilt join store feeds
    /// the tracker only what comes after them.
    pub covered_offsets: BTreeMap<String, i64>,
    early_warnings: u64,
    #[serde(with = "mlwatch_analyzer_core::series::pairs")]
    series: BTreeMap<SeriesKey, Series>,
}

impl AccuracyTracker {
    pub fn new(config: AccuracyConfig) -> Self {
        Self::from_state(config, AccuracyState::default())
    }

    /// A tracker that goes on from a checkpointed state.
    pub fn from_state(config: AccuracyConfig, state: AccuracyState) -> Self {
        Self { config, state }
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &AccuracyState {
        &self.state
    }

    /// Newest journal entry applied.
    pub fn journal_seq(&self) -> u64 {
        self.state.journal_seq
    }

    /// Records which input offsets the state covers (call before
    /// checkpointing, with the store's applied offsets).
    pub fn set_covered_offsets(&mut self, offsets: impl IntoIterator<Item = (String, i64)>) {
        self.state.covered_offsets = offsets.into_iter().collect();
    }

    /// Adopts a rebuilt store's journal numbering: after the store was
    /// rebuilt up to [`AccuracyState::covered_offsets`] (its entries not
    /// applied here, the checkpoint already holds them), entries after
    /// `seq` are new to this tracker.
    pub fn rebase_journal(&mut self, seq: u64) {
        self.state.journal_seq = seq;
    }

    /// Applies what the join produced (from [`super::join::JoinStore::apply`]
    /// or, after a restore, [`super::join::JoinStore::journal_since`]).
    /// Entries at or below [`Self::journal_seq`] are skipped, so replaying
    /// a journal that overlaps the checkpoint counts nothing twice.
    pub fn apply(&mut self, entries: &[JournalEntry]) {
        for e in entries {
            if e.seq <= self.state.journal_seq {
                continue;
            }
            match &e.event {
                JoinEvent::Predicted(p) => self.on_prediction(p),
                JoinEvent::Joined(j) => self.on_joined(j, e.now_ms),
            }
            self.state.journal_seq = e.seq;
        }
    }

    pub fn config(&self) -> &AccuracyConfig {
        &self.config
    }

    fn bucket_ms(&self) -> i64 {
        self.config.bucket_secs.max(1) as i64 * 1000
    }

    fn retention_ms(&self) -> i64 {
        let widest = self
            .config
            .windows_secs
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.config.decay_window_secs);
        (widest + self.config.join.label_lag_secs) as i64 * 1000 + self.bucket_ms()
    }

    /// The segments a prediction counts in besides the whole version:
    /// `tag=value` for each configured segment tag it carries.
    fn segments(&self, p: &PendingPrediction) -> Vec<String> {
        self.config
            .segment_tags
            .iter()
            .filter_map(|tag| p.tags.get(tag).map(|v| format!("{tag}={v}")))
            .collect()
    }

    /// The series of `p`'s model version in `segment`, created when new
    /// (found by reference: no key is built for a known series).
    fn series_mut(&mut self, p: &PendingPrediction, segment: &str) -> &mut Series {
        let id = (p.model.as_str(), p.model_version.as_str(), segment);
        if !self.state.series.contains_key(&id as &dyn SeriesId) {
            let fresh = self.new_series();
            self.state.series.insert(
                SeriesKey {
                    model: p.model.clone(),
                    model_version: p.model_version.clone(),
                    segment: segment.to_string(),
                },
                fresh,
            );
        }
        self.state.series.get_mut(&id as &dyn SeriesId).expect("inserted above")
    }

    fn new_series(&self) -> Series {
        Series {
            buckets: BTreeMap::new(),
            reference: self.empty_eval(),
            reference_done: false,
            detector: PageHinkley::new(self.config.early_warning.clone()),
            alarms: 0,
            last_alarm_ms: None,
            warning_phase: Phase::Inactive,
            metrics: BTreeMap::new(),
            history: VecDeque::new(),
            high_decays: VecDeque::new(),
            high_episode: false,
            too_old: 0,
            mismatched: 0,
        }
    }

    fn empty_eval(&self) -> Evaluation {
        evaluation(self.config.score_bins)
    }

    fn is_positive(&self, label: &str) -> Option<bool> {
        let l = label.trim();
        if self.config.positive_labels.iter().any(|p| p.eq_ignore_ascii_case(l)) {
            Some(true)
        } else if self.config.negative_labels.iter().any(|n| n.eq_ignore_ascii_case(l)) {
            Some(false)
        } else {
            None
        }
    }

    /// The predicted class of a classifier's prediction, if any.
    fn predicted_class(p: &PendingPrediction) -> Option<&str> {
        p.label.as_deref().or_else(|| {
            p.scores
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(k, _)| k.as_str())
        })
    }

    /// Classifies a joined pair; `Err` names why it fits no model kind.
    pub fn outcome(&self, p: &PendingPrediction, l: &TruthLabel) -> Result<Outcome, String> {
        let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
        if !finite(p.value) || !finite(p.score) || !finite(l.value) || !p.scores.values().all(|v| v.is_finite()) {
            return Err(format!("pair {:?} has a non-finite score or value", p.event_id));
        }
        if let (Some(predicted), Some(actual)) = (p.value, l.value) {
            return Ok(Outcome::Regression { predicted, actual });
        }
        let Some(truth) = l.label.as_deref() else {
            return Err(format!("label for {:?} has neither label nor value", l.event_id));
        };
        if p.scores.is_empty()
            && let Some(actual) = self.is_positive(truth)
        {
            let predicted = match (&p.label, p.score) {
                (Some(label), _) => self.is_positive(label),
                (None, Some(s)) => Some(s >= self.config.score_threshold),
                (None, None) => None,
            };
            if let Some(predicted) = predicted {
                return Ok(Outcome::Binary {
                    score: p.score,
                    predicted,
                    actual,
                });
            }
        }
        match Self::predicted_class(p) {
            Some(predicted) => Ok(Outcome::Multiclass {
                predicted: predicted.to_string(),
                actual: truth.to_string(),
            }),
            None => Err(format!(
                "prediction {:?} has no class, score or value to compare with label {truth:?}",
                p.event_id
            )),
        }
    }

    /// Called for every new prediction (after the join accepted it as new):
    /// counts it in its bucket and adds its confidence-based estimate.
    pub fn on_prediction(&mut self, p: &PendingPrediction) {
        let bucket = p.timestamp_ms.div_euclid(self.bucket_ms()) * self.bucket_ms();
        let predicted_binary = match (&p.label, p.score.filter(|s| s.is_finite())) {
            (Some(l), Some(s)) => Some((s, self.is_positive(l).unwrap_or(s >= self.config.score_threshold))),
            (None, Some(s)) => Some((s, s >= self.config.score_threshold)),
            _ => None,
        };
        let multiclass_conf = Self::predicted_class(p)
            .and_then(|c| p.scores.get(c).copied())
            .filter(|c| c.is_finite());
        let bins = self.config.score_bins;
        let tagged = self.segments(p);
        for segment in std::iter::once("").chain(tagged.iter().map(String::as_str)) {
            let series = self.series_mut(p, segment);
            let eval = series.buckets.entry(bucket).or_insert_with(|| evaluation(bins));
            eval.predictions += 1;
            if p.scores.is_empty() {
                if let Some((s, predicted)) = predicted_binary {
                    eval.estimated.add_expected(s, predicted);
                }
            } else if let Some(c) = multiclass_conf {
                eval.multiclass.add_expected(c);
            }
        }
    }

    /// Called for every pair the join produced: adds the outcome to its
    /// prediction's bucket, the reference, and the early-warning detector.
    /// `now_ms` timestamps a detector alarm.
    pub fn on_joined(&mut self, j: &Joined, now_ms: i64) {
        let bucket = j.prediction.timestamp_ms.div_euclid(self.bucket_ms()) * self.bucket_ms();
        let horizon = now_ms - self.retention_ms();
        let outcome = self.outcome(&j.prediction, &j.label);
        let reference_labelled = self.config.reference_labelled;
        let early_warning = self.config.early_warning.enabled;
        let bucket_ms = self.config.bucket_secs as i64 * 1000;
        let bins = self.config.score_bins;
        let tagged = self.segments(&j.prediction);
        let mut alarms = 0;
        for segment in std::iter::once("").chain(tagged.iter().map(String::as_str)) {
            let series = self.series_mut(&j.prediction, segment);
            let Ok(outcome) = &outcome else {
                series.mismatched += 1;
                continue;
            };
            let correct = match outcome {
                Outcome::Binary { predicted, actual, .. } => Some(predicted == actual),
                Outcome::Multiclass { predicted, actual } => Some(predicted == actual),
                Outcome::Regression { .. } => None,
            };
            if let Some(c) = correct
                && early_warning
                && series.detector.update(if c { 1.0 } else { 0.0 })
            {
                series.alarms += 1;
                series.last_alarm_ms = Some(now_ms);
                alarms += 1;
            }
            if !series.reference_done {
                add_outcome(&mut series.reference, outcome, j.lag_ms);
                series.reference_done = series.reference.labelled >= reference_labelled;
            }
            if bucket + bucket_ms <= horizon {
                series.too_old += 1;
                continue;
            }
            let eval = series.buckets.entry(bucket).or_insert_with(|| evaluation(bins));
            add_outcome(eval, outcome, j.lag_ms);
        }
        self.state.early_warnings += alarms;
    }

    fn window(&self, series: &Series, window_secs: u64, now_ms: i64) -> Evaluation {
        let from = now_ms - window_secs as i64 * 1000;
        let mut out = self.empty_eval();
        let parts: Vec<&Evaluation> = series
            .buckets
            .range(from.div_euclid(self.bucket_ms()) * self.bucket_ms()..)
            .filter(|(start, _)| **start + self.bucket_ms() > from && **start <= now_ms)
            .map(|(_, eval)| eval)
            .collect();
        out.merge_all(&parts);
        out
    }

    /// `reference` is [`stats_of`] the series' reference for `metric`.
    fn baseline_for<'a>(
        &self,
        key: &SeriesKey,
        series: &Series,
        metric: MetricType,
        reference: &'a BinaryStats,
    ) -> Option<(Baseline<'a>, &'static str)> {
        if let Some(v) = self.config.baselines.get(&key.model).and_then(|m| m.get(metric.name())) {
            return Some((Baseline::Configured(*v), "configured"));
        }
        series
            .reference_done
            .then_some((Baseline::Measured(reference), "measured"))
    }

    /// The evaluation tick: prunes old buckets, judges decay, runs the rule
    /// state machines and returns the alert transitions (sorted by
    /// fingerprint), built with the fingerprint and id scheme of
    /// [`mlwatch_analyzer_core::rules`].
    pub fn evaluate(&mut self, now_ms: i64) -> Vec<Alert> {
        let horizon = now_ms - self.retention_ms();
        let keys: Vec<SeriesKey> = self.state.series.keys().cloned().collect();
        let mut alerts = Vec::new();
        for key in keys {
            let mut series = self.state.series.remove(&key).expect("key listed");
            series.buckets.retain(|start, _| *start + self.bucket_ms() > horizon);
            let window = self.window(&series, self.config.decay_window_secs, now_ms);
            let mut assessments = Vec::new();
            for metric in MetricType::ALL {
                let reference = stats_of(metric, &series.reference);
                let a = self
                    .baseline_for(&key, &series, metric, &reference)
                    .and_then(|(b, _)| assess(metric, &b, &stats_of(metric, &window), &self.config.decay));
                assessments.push((metric, a));
            }
            // A version with no prediction in the whole decay window no
            // longer serves (rolled back, replaced): nothing is left to
            // judge, so its decay alerts resolve (after `resolve_for_secs`)
            // instead of firing forever on outcomes that age away.
            let serving = window.predictions > 0;
            for (metric, a) in assessments {
                if let Some(alert) = self.judge(&key, &mut series, metric, a, serving, now_ms) {
                    alerts.push(alert);
                }
            }
            if !series.metrics.values().any(|m| matches!(m.phase, Phase::Firing { .. })) {
                series.high_episode = false;
            }
            if let Some(alert) = self.early_warning(&key, &mut series, now_ms) {
                alerts.push(alert);
            }
            self.state.series.insert(key, series);
        }
        alerts.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        alerts
    }

    fn judge(
        &self,
        key: &SeriesKey,
        series: &mut Series,
        metric: MetricType,
        a: Option<Assessment>,
        serving: bool,
        now_ms: i64,
    ) -> Option<Alert> {
        let interval_ms = self.config.trend_interval_secs as i64 * 1000;
        let horizon_ms = self.config.trend_horizon_secs as i64 * 1000;
        let state = series.metrics.entry(metric).or_default();
        let enough = a.as_ref().is_some_and(|a| a.samples >= self.config.decay.min_samples);
        let breach = a.as_ref().is_some_and(|a| a.decayed);
        let clear = (enough && !breach) || !serving;
        if let Some(a) = &a
            && enough
            && state.points.back().is_none_or(|(t, _)| now_ms - t >= interval_ms)
        {
            state.points.push_back((now_ms, a.current));
        }
        while state.points.front().is_some_and(|(t, _)| now_ms - t > horizon_ms) {
            state.points.pop_front();
        }
        let transition = rules::step(
            &mut state.phase,
            now_ms,
            breach,
            clear,
            self.config.for_secs as i64 * 1000,
            self.config.resolve_for_secs as i64 * 1000,
        );
        let high = a.as_ref().is_some_and(|a| a.high);
        if matches!(state.phase, Phase::Firing { .. }) && high && !series.high_episode {
            // One high-severity episode per series, however many metrics.
            series.high_episode = true;
            series.high_decays.push_back(now_ms);
        }
        let repeat_ms = self.config.repeat_window_secs as i64 * 1000;
        while series.high_decays.front().is_some_and(|t| now_ms - t > repeat_ms) {
            series.high_decays.pop_front();
        }
        // A version that stopped serving keeps its last judgement, which
        // also tells its resolve.
        if serving {
            state.last = a.clone();
        }
        let a = a.or_else(|| state.last.clone())?;
        let mut labels = labels(key);
        labels.insert("metric".to_string(), metric.name().to_string());
        let severity = if a.high { Severity::High } else { Severity::Medium };
        let spec = AlertSpec {
            alert_type: DECAY_ALERT,
            severity,
            labels,
            summary: format!(
                "{} of {} {} fell from {:.3} to {:.3} (drop {:.3}, threshold {}){}",
                metric.name(),
                key.model,
                key.model_version,
                a.baseline,
                a.current,
                a.drop,
                a.threshold,
                if serving {
                    ""
                } else {
                    "; the version no longer serves (no prediction in the window)"
                }
            ),
            description: format!(
                "{} labelled outcomes over {}; one-sided p = {:.2e}{}",
                a.samples,
                window_name(self.config.decay_window_secs),
                a.p_value,
                if key.segment.is_empty() {
                    String::new()
                } else {
                    format!("; segment {}", key.segment)
                }
            ),
            value: a.current,
            threshold: a.baseline - a.threshold,
            recommendations: vec![
                "compare the input distribution with the training data (drift)".into(),
                "roll back to the previous version or retrain on recent labelled data".into(),
            ],
        };
        let alert = rules::alert_for(spec, &transition, now_ms)?;
        record(series, &alert, Some(metric));
        Some(alert)
    }

    fn early_warning(&mut self, key: &SeriesKey, series: &mut Series, now_ms: i64) -> Option<Alert> {
        let hold = self.config.early_warning_hold_secs as i64 * 1000;
        let recent = series.last_alarm_ms.is_some_and(|t| now_ms - t <= hold);
        let transition = rules::step(&mut series.warning_phase, now_ms, recent, !recent, 0, 0);
        if transition == Transition::None {
            return None;
        }
        let mut labels = labels(key);
        labels.insert("detector".to_string(), "page_hinkley".to_string());
        let spec = AlertSpec {
            alert_type: EARLY_WARNING_ALERT,
            severity: Severity::Low,
            labels,
            summary: format!(
                "the share of correct predictions of {} {} is falling (early warning)",
                key.model, key.model_version
            ),
            description: format!(
                "Page-Hinkley alarm on the correctness stream (δ {}, λ {}); {} alarms so far",
                self.config.early_warning.delta, self.config.early_warning.lambda, series.alarms
            ),
            value: series.alarms as f64,
            threshold: self.config.early_warning.lambda,
            recommendations: vec!["watch the AccuracyDecay alert as more labels arrive".into()],
        };
        let alert = rules::alert_for(spec, &transition, now_ms)?;
        record(series, &alert, None);
        Some(alert)
    }

    /// Metrics of every series of `model` (all when `None`) over a window.
    pub fn window_metrics(&self, model: Option<&str>, window_secs: u64, now_ms: i64) -> Vec<WindowMetrics> {
        self.state
            .series
            .iter()
            .filter(|(k, _)| model.is_none_or(|m| k.model == m))
            .map(|(k, s)| {
                let w = self.window(s, window_secs, now_ms);
                WindowMetrics {
                    series: Coverage::of(k, window_secs, &w),
                    label_lag: w.lag.summary(),
                    binary: (w.binary.count() > 0.0).then(|| w.binary.metrics()),
                    binary_estimated: (w.estimated.count() > 0.0).then(|| w.estimated.metrics()),
                    multiclass: (w.multiclass.count() > 0).then(|| w.multiclass.metrics()),
                    multiclass_estimated_accuracy: w.multiclass.expected_accuracy(),
                    regression: (w.regression.count() > 0).then(|| w.regression.metrics()),
                }
            })
            .collect()
    }

    /// The decay report of every series of `model`.
    pub fn reports(&self, model: &str, now_ms: i64) -> Vec<DecayReport> {
        self.state
            .series
            .iter()
            .filter(|(k, _)| k.model == model)
            .map(|(k, s)| self.report(k, s, now_ms))
            .collect()
    }

    fn report(&self, key: &SeriesKey, series: &Series, now_ms: i64) -> DecayReport {
        let w = self.window(series, self.config.decay_window_secs, now_ms);
        let ahead = self.config.trend_ahead_secs as i64 * 1000;
        let metrics = MetricType::ALL
            .iter()
            .map(|&metric| {
                let state = series.metrics.get(&metric);
                let last = state.and_then(|s| s.last.as_ref());
                let reference = stats_of(metric, &series.reference);
                let baseline = self.baseline_for(key, series, metric, &reference);
                let points: Vec<(i64, f64)> = state.map(|s| s.points.iter().copied().collect()).unwrap_or_default();
                let current = metric.value(&stats_of(metric, &w));
                let base = baseline.as_ref().and_then(|(b, _)| match b {
                    Baseline::Configured(v) => Some(*v),
                    Baseline::Measured(s) => metric.value(s),
                });
                MetricReport {
                    metric,
                    baseline: base,
                    baseline_source: baseline.map(|(_, s)| s).unwrap_or("pending"),
                    current,
                    estimated: match metric {
                        MetricType::MulticlassAccuracy => w.multiclass.expected_accuracy(),
                        _ => metric.value(&w.estimated),
                    },
                    decay: base.zip(current).map(|(b, c)| b - c),
                    threshold: self.config.decay.thresholds.get(metric),
                    p_value: last.map(|a| a.p_value),
                    decayed: last.is_some_and(|a| a.decayed),
                    severity: last
                        .filter(|a| a.decayed)
                        .map(|a| if a.high { "high" } else { "medium" }.to_string()),
                    firing: state.is_some_and(|s| matches!(s.phase, Phase::Firing { .. })),
                    trend: trend::fit(&points, ahead),
                }
            })
            .collect();
        DecayReport {
            series: Coverage::of(key, self.config.decay_window_secs, &w),
            metrics,
            early_warning_alarms: series.alarms,
            early_warning_last_ms: series.last_alarm_ms,
            last_alerts: series.history.iter().rev().cloned().collect(),
            recommendation: self.recommend(key, series),
        }
    }

    /// Rollback (to a sibling version with no decay firing) or retrain when
    /// high-severity decay repeated within the repeat window; else keep
    /// watching.
    fn recommend(&self, key: &SeriesKey, series: &Series) -> Recommendation {
        let repeats = series.high_decays.len();
        if repeats < self.config.repeat_count.max(1) {
            let firing = series.metrics.values().any(|m| matches!(m.phase, Phase::Firing { .. }));
            return Recommendation::KeepWatching {
                reason: if firing {
                    format!(
                        "decay is firing; {repeats} high-severity decay(s) in the repeat window, {} needed to act",
                        self.config.repeat_count
                    )
                } else {
                    "no decay firing".to_string()
                },
            };
        }
        let healthy = self.state.series.iter().find(|(k, s)| {
            k.model == key.model
                && k.model_version != key.model_version
                && k.segment.is_empty()
                && s.reference_done
                && !s.metrics.values().any(|m| matches!(m.phase, Phase::Firing { .. }))
        });
        let reason = format!(
            "{repeats} high-severity decays within {}",
            window_name(self.config.repeat_window_secs)
        );
        match healthy {
            Some((k, _)) => Recommendation::Rollback {
                to_version: k.model_version.clone(),
                reason,
            },
            None => Recommendation::Retrain { reason },
        }
    }

    /// Values for `ml_model_accuracy{model_name,model_version,metric_type}`
    /// over the decay window, whole model versions only (segments stay in
    /// the API to keep label cardinality low). Estimated values carry the
    /// suffix `_estimated`.
    pub fn gauges(&self, now_ms: i64) -> Vec<Gauge> {
        let mut out = Vec::new();
        for (k, s) in self.state.series.iter().filter(|(k, _)| k.segment.is_empty()) {
            let w = self.window(s, self.config.decay_window_secs, now_ms);
            let mut push = |name: &str, v: Option<f64>| {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    out.push(Gauge {
                        model: k.model.clone(),
                        model_version: k.model_version.clone(),
                        metric_type: name.to_string(),
                        value: v,
                    });
                }
            };
            push("label_coverage", w.coverage());
            if w.binary.count() > 0.0 {
                let m = w.binary.metrics();
                push("accuracy", Some(m.accuracy));
                push("precision", Some(m.precision));
                push("recall", Some(m.recall));
                push("f1", Some(m.f1));
                push("auc_roc", m.auc_roc);
                push("log_loss", m.log_loss);
                push("brier", m.brier);
                push("positive_rate", Some(m.positive_rate));
                push("prediction_rate", Some(m.prediction_rate));
            }
            if w.estimated.count() > 0.0 {
                let m = w.estimated.metrics();
                push("accuracy_estimated", Some(m.accuracy));
                push("precision_estimated", Some(m.precision));
                push("recall_estimated", Some(m.recall));
                push("f1_estimated", Some(m.f1));
                push("auc_roc_estimated", m.auc_roc);
            }
            if w.multiclass.count() > 0 {
                let m = w.multiclass.metrics();
                push("multiclass_accuracy", Some(m.accuracy));
                push("macro_f1", Some(m.macro_f1));
                push("weighted_f1", Some(m.weighted_f1));
            }
            push("multiclass_accuracy_estimated", w.multiclass.expected_accuracy());
            if w.regression.count() > 0 {
                let m = w.regression.metrics();
                push("mae", Some(m.mae));
                push("rmse", Some(m.rmse));
                push("mape", Some(m.mape));
                push("r2", Some(m.r2));
            }
            // The baseline each decay is judged against, once known
            // (`<metric>_baseline`), so dashboards plot current vs baseline.
            for metric in MetricType::ALL {
                let reference = stats_of(metric, &s.reference);
                let base = self.baseline_for(k, s, metric, &reference).and_then(|(b, _)| match b {
                    Baseline::Configured(v) => Some(v),
                    Baseline::Measured(r) => metric.value(r),
                });
                push(&format!("{}_baseline", metric.name()), base);
            }
        }
        out
    }

    pub fn counts(&self) -> TrackerCounts {
        TrackerCounts {
            too_old: self.state.series.values().map(|s| s.too_old).sum(),
            mismatched: self.state.series.values().map(|s| s.mismatched).sum(),
            early_warnings: self.state.early_warnings,
        }
    }
}

/// The accumulator a metric is judged on: the binary outcomes, or the
/// multiclass correctness.
fn stats_of(metric: MetricType, e: &Evaluation) -> Cow<'_, BinaryStats> {
    match metric {
        MetricType::MulticlassAccuracy => Cow::Owned(e.multiclass.correctness()),
        _ => Cow::Borrowed(&e.binary),
    }
}

fn add_outcome(eval: &mut Evaluation, outcome: &Outcome, lag_ms: i64) {
    eval.labelled += 1;
    eval.lag.add(lag_ms);
    match outcome {
        Outcome::Binary {
            score,
            predicted,
            actual,
        } => eval.binary.add(*score, *predicted, *actual),
        Outcome::Multiclass { predicted, actual } => eval.multiclass.add(predicted, actual),
        Outcome::Regression { predicted, actual } => eval.regression.add(*predicted, *actual),
    }
}

fn record(series: &mut Series, alert: &Alert, metric: Option<MetricType>) {
    let status = AlertStatus::try_from(alert.status)
        .map(|s| s.name())
        .unwrap_or("unknown");
    let severity = Severity::try_from(alert.severity)
        .map(|s| s.name())
        .unwrap_or("unknown");
    series.history.push_back(AlertRecord {
        alert_type: alert.r#type.clone(),
        metric,
        status: status.to_string(),
        severity: severity.to_string(),
        value: alert.value,
        threshold: alert.threshold,
        at_ms: alert.generated_at_ms,
        fingerprint: alert.fingerprint.clone(),
    });
    while series.history.len() > HISTORY {
        series.history.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const T0: i64 = 1_795_000_000_000;
    const SEC: i64 = 1000;

    fn config() -> AccuracyConfig {
        AccuracyConfig {
            bucket_secs: 60,
            windows_secs: vec![1800],
            decay_window_secs: 1800,
            reference_labelled: 2000,
            decay: DecayConfig {
                min_samples: 500,
                ..Default::default()
            },
            resolve_for_secs: 300,
            trend_interval_secs: 60,
            segment_tags: vec!["region".into()],
            ..Default::default()
        }
    }

    fn prediction(i: usize, version: &str, t: i64, score: f64) -> PendingPrediction {
        let mut tags = std::collections::HashMap::new();
        tags.insert(
            "region".to_string(),
            if i.is_multiple_of(2) { "eu" } else { "us" }.to_string(),
        );
        PendingPrediction {
            event_id: format!("e{i}"),
            model: "fraud".into(),
            model_version: version.into(),
            timestamp_ms: t,
            score: Some(score),
            tags,
            ..Default::default()
        }
    }

    /// What a run saw: alerts with the labelled-event count at which each
    /// was raised, and the labelled count at the change point.
    struct Run {
        alerts: Vec<(Alert, usize)>,
        tracker: AccuracyTracker,
        labelled_at_change: usize,
    }

    /// One prediction per second on `version`; its label arrives 10 min
    /// later; scores separate the classes with `quality(i)`. Evaluates
    /// every 30 s.
    fn run(
        seed: u64,
        n: usize,
        version: &str,
        quality: impl Fn(usize) -> f64,
        tracker: Option<AccuracyTracker>,
    ) -> Run {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tracker = tracker.unwrap_or_else(|| AccuracyTracker::new(config()));
        let lag = 600;
        let mut pending = VecDeque::new();
        let mut alerts = Vec::new();
        let mut labelled = 0;
        let mut labelled_at_change = 0;
        let change = (0..n).find(|&i| quality(i) != quality(0)).unwrap_or(n);
        for sec in 0..n + lag {
            let now = T0 + sec as i64 * SEC;
            if sec < n {
                let y = rng.random_bool(0.3);
                let logit = quality(sec) * if y { 1.0 } else { -1.0 } + normal(&mut rng);
                let p = prediction(sec, version, now, 1.0 / (1.0 + (-logit).exp()));
                tracker.on_prediction(&p);
                pending.push_back((p, y));
            }
            if sec >= lag {
                let (p, y) = pending.pop_front().unwrap();
                let j = Joined {
                    lag_ms: now - p.timestamp_ms,
                    label: TruthLabel {
                        event_id: p.event_id.clone(),
                        model: p.model.clone(),
                        timestamp_ms: now,
                        label: Some(if y { "1" } else { "0" }.into()),
                        value: None,
                    },
                    prediction: p,
                };
                tracker.on_joined(&j, now);
                labelled += 1;
                if sec - lag == change {
                    labelled_at_change = labelled - 1;
                }
            }
            if sec % 30 == 0 {
                alerts.extend(tracker.evaluate(now).into_iter().map(|a| (a, labelled)));
            }
        }
        Run {
            alerts,
            tracker,
            labelled_at_change,
        }
    }

    fn normal(rng: &mut StdRng) -> f64 {
        // Box-Muller.
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let v: f64 = rng.random_range(0.0..1.0);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn firing(alerts: &[(Alert, usize)], kind: &str) -> Vec<(Alert, usize)> {
        alerts
            .iter()
            .filter(|(a, _)| a.r#type == kind && a.status == AlertStatus::Firing as i32)
            .cloned()
            .collect()
    }

    #[test]
    fn decay_fires_after_a_known_drop_and_never_on_a_stationary_stream() {
        let (n, change) = (12_000, 6_000);
        let mut delays = Vec::new();
        let mut warning_delays = Vec::new();
        for seed in 0..4 {
            let stationary = run(seed, n, "v1", |_| 1.6, None);
            assert!(
                stationary.alerts.is_empty(),
                "seed {seed}: {:?}",
                stationary
                    .alerts
                    .iter()
                    .map(|(a, _)| &a.annotations["summary"])
                    .collect::<Vec<_>>()
            );
            let drop = run(seed, n, "v1", |i| if i < change { 1.6 } else { 0.9 }, None);
            let decays = firing(&drop.alerts, DECAY_ALERT);
            assert!(!decays.is_empty(), "seed {seed}: no decay alert");
            let (first, at) = &decays[0];
            assert!(*at > drop.labelled_at_change, "fired before the change");
            assert_eq!(first.labels["model"], "fraud");
            let mut labels: BTreeMap<String, String> = first.labels.clone().into_iter().collect();
            assert_eq!(first.fingerprint, rules::fingerprint(DECAY_ALERT, &labels));
            labels.remove("segment");
            delays.push(at - drop.labelled_at_change);
            let warnings = firing(&drop.alerts, EARLY_WARNING_ALERT);
            let (_, wat) = warnings.first().expect("early warning");
            assert!(*wat > drop.labelled_at_change);
            warning_delays.push(wat - drop.labelled_at_change);
        }
        eprintln!("decay alert delay (labelled events after the change): {delays:?}");
        eprintln!("early warning delay (labelled events after the change): {warning_delays:?}");
    }

    #[test]
    fn decay_of_a_version_that_stopped_serving_resolves() {
        let (n, change) = (8_000, 4_000);
        let mut drop = run(3, n, "v1", |i| if i < change { 1.6 } else { 0.6 }, None);
        let fired: Vec<String> = firing(&drop.alerts, DECAY_ALERT)
            .iter()
            .map(|(a, _)| a.fingerprint.clone())
            .collect();
        assert!(!fired.is_empty(), "no decay alert");
        let resolved = |alerts: &[Alert]| {
            alerts
                .iter()
                .filter(|a| a.r#type == DECAY_ALERT && a.status == AlertStatus::Resolved as i32)
                .map(|a| a.fingerprint.clone())
                .collect::<Vec<_>>()
        };
        let already: Vec<Alert> = drop.alerts.iter().map(|(a, _)| a.clone()).collect();
        let already = resolved(&already);
        let still_firing: Vec<String> = fired.into_iter().filter(|f| !already.contains(f)).collect();
        assert!(
            !still_firing.is_empty(),
            "the decay should still fire when traffic stops"
        );
        // The last prediction was at T0 + n s, its label 600 s later. While
        // a prediction is inside the decay window nothing changes.
        let last = T0 + n as i64 * SEC;
        let window = config().decay_window_secs as i64 * SEC;
        assert!(resolved(&drop.tracker.evaluate(last + window - 120 * SEC)).is_empty());
        // Past the window (and `resolve_for_secs`): every alert resolves.
        let mut out = drop.tracker.evaluate(last + window + 120 * SEC);
        out.extend(drop.tracker.evaluate(last + window + 120 * SEC + 301 * SEC));
        let mut got = resolved(&out);
        got.sort();
        let mut want = still_firing;
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn report_shows_baseline_current_trend_and_recommends() {
        // Good, drop, recover, drop again: two high-severity episodes.
        let q = |i: usize| {
            if (3000..5000).contains(&i) || i >= 8000 {
                0.5
            } else {
                1.6
            }
        };
        let r = run(3, 11_000, "v2", q, None);
        let now = T0 + 11_600 * SEC;
        let reports = r.tracker.reports("fraud", now);
        let whole = reports.iter().find(|x| x.series.segment.is_empty()).unwrap();
        let auc = whole.metrics.iter().find(|m| m.metric == MetricType::AucRoc).unwrap();
        assert_eq!(auc.baseline_source, "measured");
        assert!(auc.baseline.unwrap() > 0.95 && auc.current.unwrap() < 0.9, "{auc:?}");
        assert!(auc.decay.unwrap() > 0.1 && auc.decayed && auc.firing);
        assert_eq!(auc.severity.as_deref(), Some("high"));
        // Falling over the last points; estimate reported beside the value.
        assert!(auc.estimated.is_some());
        assert!(whole.last_alerts.iter().any(|a| a.status == "resolved"));
        assert!(
            matches!(whole.recommendation, Recommendation::Retrain { .. }),
            "{:?}",
            whole.recommendation
        );
        // Segments are tracked and alert on their own.
        assert!(reports.iter().any(|x| x.series.segment == "region=eu"));
        // With a healthy sibling version, the advice is to roll back to it.
        let r1 = run(4, 11_000, "v1", |_| 1.6, None);
        let r2 = run(3, 11_000, "v2", q, Some(r1.tracker));
        let reports = r2.tracker.reports("fraud", now);
        let v2 = reports
            .iter()
            .find(|x| x.series.model_version == "v2" && x.series.segment.is_empty())
            .unwrap();
        assert_eq!(
            v2.recommendation,
            Recommendation::Rollback {
                to_version: "v1".into(),
                reason: "2 high-severity decays within 24h".into()
            }
        );
    }

    /// A multiclass model whose accuracy falls from 0.9 to 0.7 at a known
    /// point: the two-proportion test fires on `multiclass_accuracy`; the
    /// stationary stream never does.
    #[test]
    fn multiclass_accuracy_decay_fires_only_after_the_drop() {
        let classes = ["cat", "dog", "bird"];
        let run = |seed: u64, drop_at: usize| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = AccuracyTracker::new(config());
            let mut fired = Vec::new();
            for i in 0..8000usize {
                let now = T0 + i as i64 * SEC;
                let predicted = classes[i % 3];
                let right = rng.random_bool(if i < drop_at { 0.9 } else { 0.7 });
                let actual = if right { predicted } else { classes[(i + 1) % 3] };
                let p = PendingPrediction {
                    event_id: format!("m{i}"),
                    model: "species".into(),
                    model_version: "v1".into(),
                    timestamp_ms: now,
                    scores: classes
                        .iter()
                        .map(|c| (c.to_string(), if *c == predicted { 0.8 } else { 0.1 }))
                        .collect(),
                    ..Default::default()
                };
                t.on_prediction(&p);
                let label = TruthLabel {
                    event_id: p.event_id.clone(),
                    model: p.model.clone(),
                    timestamp_ms: now,
                    label: Some(actual.into()),
                    value: None,
                };
                t.on_joined(
                    &Joined {
                        prediction: p,
                        label,
                        lag_ms: 0,
                    },
                    now,
                );
                if i % 30 == 0 {
                    for a in t.evaluate(now) {
                        if a.r#type == DECAY_ALERT && a.status == AlertStatus::Firing as i32 {
                            fired.push((i, a.labels["metric"].clone()));
                        }
                    }
                }
            }
            (fired, t)
        };
        let (stationary, _) = run(1, usize::MAX);
        assert!(stationary.is_empty(), "{stationary:?}");
        let (fired, t) = run(1, 5000);
        let (at, metric) = fired.first().expect("multiclass decay fired");
        assert_eq!(metric, "multiclass_accuracy");
        assert!(*at > 5000, "fired at {at}");
        let report = &t.reports("species", T0 + 8000 * SEC)[0];
        let m = report
            .metrics
            .iter()
            .find(|m| m.metric == MetricType::MulticlassAccuracy)
            .unwrap();
        assert!(
            m.decayed && m.baseline.unwrap() > 0.85 && m.current.unwrap() < 0.8,
            "{m:?}"
        );
        assert!((m.estimated.unwrap() - 0.8).abs() < 1e-9);
    }

    #[test]
    fn trend_slope_is_negative_while_accuracy_slides() {
        // Quality falls steadily: the slope of accuracy over the last
        // points is negative and the 1 h prediction is below the current.
        let r = run(
            5,
            9000,
            "v1",
            |i| {
                if i < 3000 {
                    1.6
                } else {
                    1.6 - (i - 3000) as f64 / 6000.0
                }
            },
            None,
        );
        let now = T0 + 9600 * SEC;
        let rep = r.tracker.reports("fraud", now);
        let acc = rep[0]
            .metrics
            .iter()
            .find(|m| m.metric == MetricType::Accuracy)
            .unwrap();
        let t = acc.trend.unwrap();
        assert!(
            t.slope_per_hour < 0.0 && t.predicted < acc.current.unwrap() + 0.01,
            "{t:?}"
        );
    }

    #[test]
    fn baselines_are_exported_beside_the_current_values() {
        let r = run(5, 3000, "v1", |_| 1.6, None);
        let now = T0 + 3600 * SEC;
        let gauges = r.tracker.gauges(now);
        let report = &r.tracker.reports("fraud", now)[0];
        let measured = report
            .metrics
            .iter()
            .find(|m| m.metric == MetricType::Accuracy)
            .and_then(|m| m.baseline)
            .expect("measured baseline");
        let exported: Vec<&Gauge> = gauges
            .iter()
            .filter(|g| g.metric_type == "accuracy_baseline" && g.model_version == "v1")
            .collect();
        assert_eq!(exported.len(), 1, "{gauges:?}");
        assert_eq!(exported[0].value, measured);
        // A configured baseline is exported as configured.
        let mut config = config();
        config
            .baselines
            .insert("fraud".into(), [("auc_roc".to_string(), 0.91)].into());
        let r = run(5, 3000, "v1", |_| 1.6, Some(AccuracyTracker::new(config)));
        assert!(
            r.tracker
                .gauges(now)
                .iter()
                .any(|g| g.metric_type == "auc_roc_baseline" && g.value == 0.91)
        );
    }

    #[test]
    fn estimate_is_served_before_labels_and_beside_them_after() {
        let mut t = AccuracyTracker::new(config());
        let mut rng = StdRng::seed_from_u64(1);
        for i in 0..3000 {
            let s: f64 = rng.random_range(0.0..1.0);
            t.on_prediction(&prediction(i, "v1", T0 + i as i64 * SEC, s));
        }
        let w = &t.window_metrics(Some("fraud"), 1800, T0 + 3000 * SEC)[0];
        assert!(w.binary.is_none() && w.series.label_coverage == Some(0.0));
        let est = w.binary_estimated.as_ref().unwrap();
        // Uniform calibrated scores: expected accuracy ≈ 0.75.
        assert!((est.accuracy - 0.75).abs() < 0.03, "{est:?}");
        let gauges = t.gauges(T0 + 3000 * SEC);
        assert!(gauges.iter().any(|g| g.metric_type == "accuracy_estimated"));
        assert!(!gauges.iter().any(|g| g.metric_type == "accuracy"));
    }

    #[test]
    fn outcomes_are_classified_and_mismatches_counted() {
        let mut t = AccuracyTracker::new(config());
        let label = |l: Option<&str>, v: Option<f64>| TruthLabel {
            event_id: "x".into(),
            model: "m".into(),
            timestamp_ms: T0,
            label: l.map(String::from),
            value: v,
        };
        let mut p = PendingPrediction {
            event_id: "x".into(),
            model: "m".into(),
            model_version: "v".into(),
            timestamp_ms: T0,
            ..Default::default()
        };
        p.value = Some(3.0);
        assert_eq!(
            t.outcome(&p, &label(None, Some(2.5))),
            Ok(Outcome::Regression {
                predicted: 3.0,
                actual: 2.5
            })
        );
        p.value = None;
        p.label = Some("true".into());
        assert_eq!(
            t.outcome(&p, &label(Some("0"), None)),
            Ok(Outcome::Binary {
                score: None,
                predicted: true,
                actual: false
            })
        );
        p.label = None;
        p.scores = [("cat".to_string(), 0.7), ("dog".to_string(), 0.3)]
            .into_iter()
            .collect();
        assert_eq!(
            t.outcome(&p, &label(Some("dog"), None)),
            Ok(Outcome::Multiclass {
                predicted: "cat".into(),
                actual: "dog".into()
            })
        );
        p.scores.clear();
        p.score = Some(f64::NAN);
        assert!(
            t.outcome(&p, &label(Some("1"), None))
                .unwrap_err()
                .contains("non-finite")
        );
        t.on_prediction(&p);
        let w = &t.window_metrics(Some("m"), 1800, T0)[0];
        assert!(w.binary_estimated.is_none() && w.series.predictions == 1);
        p.score = None;
        let bad = label(Some("dog"), None);
        assert!(t.outcome(&p, &bad).unwrap_err().contains("no class"));
        t.on_joined(
            &Joined {
                prediction: p,
                label: bad,
                lag_ms: 0,
            },
            T0,
        );
        assert_eq!(t.counts().mismatched, 1);
    }

    /// The engine's path: join store + tracker, a checkpoint of the
    /// tracker taken mid-stream, a crash later, a restore that replays the
    /// journal: the result equals an uninterrupted run exactly.
    #[test]
    fn checkpoint_plus_journal_replay_equals_an_uninterrupted_run() {
        use crate::join::{JoinInput, JoinStore};
        let mut rng = StdRng::seed_from_u64(9);
        let mut inputs = Vec::new();
        for i in 0..4000 {
            let t = T0 + i as i64 * SEC;
            let y = rng.random_bool(0.3);
            let logit = 1.2 * if y { 1.0 } else { -1.0 } + normal(&mut rng);
            let p = prediction(i, "v1", t, 1.0 / (1.0 + (-logit).exp()));
            inputs.push((t, JoinInput::Prediction(p)));
            if rng.random_bool(0.8) {
                let lt = t + rng.random_range(0..1200) * SEC;
                inputs.push((
                    lt,
                    JoinInput::Label(TruthLabel {
                        event_id: format!("e{i}"),
                        model: "fraud".into(),
                        timestamp_ms: lt,
                        label: Some(if y { "1" } else { "0" }.into()),
                        value: None,
                    }),
                ));
            }
        }
        inputs.sort_by_key(|(t, _)| *t);
        let batches: Vec<&[(i64, JoinInput)]> = inputs.chunks(100).collect();
        let feed = |store: &mut JoinStore, tracker: &mut AccuracyTracker, batch: &[(i64, JoinInput)]| {
            let now = batch.last().unwrap().0;
            let ins: Vec<JoinInput> = batch.iter().map(|(_, i)| i.clone()).collect();
            let entries = store.apply(&ins, now, &[]).unwrap();
            tracker.apply(&entries);
            tracker.evaluate(now);
        };
        let end = inputs.last().unwrap().0;

        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.join.dir = dir.path().join("whole");
        let mut store = JoinStore::open(&cfg.join, 0).unwrap();
        let mut whole = AccuracyTracker::new(cfg.clone());
        for b in &batches {
            feed(&mut store, &mut whole, b);
        }

        cfg.join.dir = dir.path().join("crash");
        let mut store = JoinStore::open(&cfg.join, 0).unwrap();
        let mut t = AccuracyTracker::new(cfg.clone());
        let mut checkpoint = String::new();
        for (k, b) in batches.iter().enumerate() {
            if k == batches.len() / 2 {
                checkpoint = serde_json::to_string(t.state()).unwrap();
            }
            if k == batches.len() * 3 / 4 {
                // Crash: the store is on disk, the tracker's memory is gone.
                drop(store);
                drop(t);
                store = JoinStore::open(&cfg.join, 0).unwrap();
                let state: AccuracyState = serde_json::from_str(&checkpoint).unwrap();
                t = AccuracyTracker::from_state(cfg.clone(), state);
                let journal = store.journal_since(t.journal_seq()).unwrap();
                assert!(!journal.is_empty());
                t.apply(&journal);
                // Replaying an overlapping journal again changes nothing.
                t.apply(&store.journal_since(0).unwrap());
            }
            feed(&mut store, &mut t, b);
        }
        let a = serde_json::to_value(whole.window_metrics(None, 10_000, end)).unwrap();
        let b = serde_json::to_value(t.window_metrics(None, 10_000, end)).unwrap();
        assert_eq!(a, b);

        // The partition moves to an instance without the store file: it
        // restores the checkpoint, rebuilds a fresh store from the topics up
        // to the covered offsets (entries not fed to the tracker), rebases,
        // and goes on with the rest.
        cfg.join.dir = dir.path().join("old-owner");
        let mut store = JoinStore::open(&cfg.join, 0).unwrap();
        let mut t = AccuracyTracker::new(cfg.clone());
        let half = batches.len() / 2;
        for (k, b) in batches[..half].iter().enumerate() {
            feed(&mut store, &mut t, b);
            // Batch index stands in for the partition offset here.
            t.set_covered_offsets([("inputs".to_string(), k as i64)]);
        }
        let checkpoint = serde_json::to_string(t.state()).unwrap();
        drop(store);
        drop(t);
        cfg.join.dir = dir.path().join("new-owner");
        let mut store = JoinStore::open(&cfg.join, 0).unwrap();
        let state: AccuracyState = serde_json::from_str(&checkpoint).unwrap();
        let covered = state.covered_offsets["inputs"] as usize;
        let mut t = AccuracyTracker::from_state(cfg.clone(), state);
        for b in &batches[..=covered] {
            let ins: Vec<JoinInput> = b.iter().map(|(_, i)| i.clone()).collect();
            store.apply(&ins, b.last().unwrap().0, &[]).unwrap();
        }
        t.rebase_journal(store.counts().journal_seq as u64);
        for b in &batches[covered + 1..] {
            feed(&mut store, &mut t, b);
        }
        let c = serde_json::to_value(t.window_metrics(None, 10_000, end)).unwrap();
        assert_eq!(a, c);
        assert!(a[0]["labelled"].as_u64().unwrap() > 3000, "{a}");
        assert_eq!(whole.journal_seq(), t.journal_seq());
    }

    #[test]
    fn bad_baseline_config_names_the_key() {
        let mut c = AccuracyConfig::default();
        c.baselines
            .insert("fraud".into(), [("acuracy".to_string(), 0.9)].into_iter().collect());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("accuracy.baselines.fraud.acuracy"), "{e}");
    }
}
