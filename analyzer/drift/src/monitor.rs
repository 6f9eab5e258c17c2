//! One model's drift and data-quality monitor (pure: the caller feeds events
//! and chooses when a window ends).
//!
//! Per window and per monitored stream (each feature and each prediction
//! output) the monitor bins values on the reference's quantile edges and, at
//! [`DriftMonitor::evaluate`], computes the scores (PSI, KS, JS, normalised
//! Wasserstein, chi-square, unseen share) and one decision statistic: the
//! two-sample chi-square test of the window against the reference on the
//! coarse bins, turned into a z-score that is N(0, 1) when nothing changed.
//! A one-sided CUSUM of those z-scores fires when it crosses `h`, where `h`
//! is set so that the in-control average run length of each stream is
//! `streams × horizon_windows / false_alarm_probability` (Bonferroni across
//! streams, union bound over the horizon). See `docs/drift.md`.

use std::collections::BTreeMap;

use mlwatch_proto::v1::feature_value::Kind;
use mlwatch_proto::v1::{Alert, FeatureValue, InferenceEvent, Prediction, Severity};
use serde::{Deserialize, Serialize};

use super::DriftError;
use super::profile::{CategoricalProfile, FeatureProfile, NumericProfile, Profile, Value, format_number};
use super::stats;
use mlwatch_analyzer_core::rules::{self, AlertSpec, Transition};
use mlwatch_proto::view::{self, FeatureRef, InferenceRef};

use super::names::NameIndex as NameMap;

/// Names kept per window for unseen categories and unexpected features.
const MAX_TRACKED_NAMES: usize = 64;

/// Drift and quality settings of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Probability of at least one false `FeatureDrift`/`PredictionDrift`
    /// alarm for the model, over all its features and predictions, within
    /// `horizon_windows` consecutive evaluations.
    pub false_alarm_probability: f64,
    /// Number of evaluations the false-alarm probability is stated over.
    pub horizon_windows: u64,
    /// CUSUM reference value `k`, in z units: window z-scores below it pull
    /// the CUSUM down; about half the z-shift one wants to detect fastest.
    pub cusum_k: f64,
    /// Consecutive evaluations the CUSUM must stay above `h` before firing.
    pub persistence_windows: u32,
    /// Consecutive evaluations with z below `cusum_k` before a drift alert
    /// resolves.
    pub resolve_windows: u32,
    /// A window with fewer events is not evaluated; its events carry over
    /// into the next window.
    pub min_window_events: u64,
    /// Also require PSI at least this large to fire (0 = significance only);
    /// use it to ignore shifts that are real but too small to matter.
    pub min_effect_psi: f64,
    /// Data-quality thresholds.
    pub quality: QualityConfig,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            false_alarm_probability: 0.01,
            horizon_windows: 10_000,
            cusum_k: 1.0,
            persistence_windows: 1,
            resolve_windows: 3,
            min_window_events: 1000,
            min_effect_psi: 0.0,
            quality: QualityConfig::default(),
        }
    }
}

impl DriftConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), DriftError> {
        let bad = |key: &str, v: f64| Err(DriftError::InvalidOptions(format!("{key}: {v} is out of range")));
        if !(self.false_alarm_probability > 0.0 && self.false_alarm_probability < 1.0) {
            return bad("false_alarm_probability", self.false_alarm_probability);
        }
        if self.horizon_windows == 0 {
            return bad("horizon_windows", 0.0);
        }
        if !(self.cusum_k >= 0.0 && self.cusum_k.is_finite()) {
            return bad("cusum_k", self.cusum_k);
        }
        if self.min_effect_psi.is_nan() || self.min_effect_psi < 0.0 {
            return bad("min_effect_psi", self.min_effect_psi);
        }
        let q = &self.quality;
        for (key, v) in [
            ("quality.max_missing_rate_increase", q.max_missing_rate_increase),
            ("quality.max_out_of_range_share", q.max_out_of_range_share),
            ("quality.max_wrong_type_share", q.max_wrong_type_share),
            ("quality.max_unseen_share", q.max_unseen_share),
            ("quality.schema_presence_share", q.schema_presence_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(key, v);
            }
        }
        Ok(())
    }

    /// The CUSUM threshold `h` for a model with `streams` monitored streams.
    pub fn cusum_h(&self, streams: usize) -> f64 {
        stats::cusum_threshold(self.cusum_k, self.arl0(streams))
    }

    /// In-control average run length each stream's CUSUM is set to.
    pub fn arl0(&self, streams: usize) -> f64 {
        streams.max(1) as f64 * self.horizon_windows as f64 / self.false_alarm_probability
    }
}

/// Data-quality thresholds (shares are in [0, 1]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Fire when a feature's missing rate exceeds its reference missing rate
    /// by more than this.
    pub max_missing_rate_increase: f64,
    /// Fire when more than this share of a numeric feature's values lie
    /// outside the reference [min, max].
    pub max_out_of_range_share: f64,
    /// Fire when more than this share of a feature's values have the wrong
    /// type (text for a number, number for a category).
    pub max_wrong_type_share: f64,
    /// Fire when more than this share of a categorical feature's values are
    /// categories the reference never saw.
    pub max_unseen_share: f64,
    /// Schema change: a new feature present in more than this share of
    /// events has appeared; a reference feature present in less has vanished.
    pub schema_presence_share: f64,
    /// Consecutive breaching evaluations before a `DataQuality` alert fires.
    pub persistence_windows: u32,
    /// Consecutive clean evaluations before it resolves.
    pub resolve_windows: u32,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            max_missing_rate_increase: 0.05,
            max_out_of_range_share: 0.01,
            max_wrong_type_share: 0.01,
            max_unseen_share: 0.01,
            schema_presence_share: 0.05,
            persistence_windows: 2,
            resolve_windows: 3,
        }
    }
}

/// The `[drift]` configuration: defaults and per-model overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftRulesConfig {
    /// Settings of every model without its own entry.
    pub defaults: DriftConfig,
    /// Settings by model name (fields not given take built-in defaults).
    pub models: BTreeMap<String, DriftConfig>,
}

impl DriftRulesConfig {
    pub fn for_model(&self, model: &str) -> &DriftConfig {
        self.models.get(model).unwrap_or(&self.defaults)
    }
}

/// The data-quality checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityCheck {
    MissingValues,
    OutOfRange,
    WrongType,
    UnseenCategories,
    Schema,
}

impl QualityCheck {
    pub const ALL: [QualityCheck; 5] = [
        Self::MissingValues,
        Self::OutOfRange,
        Self::WrongType,
        Self::UnseenCategories,
        Self::Schema,
    ];

    /// The `quality_check` label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::MissingValues => "missing_values",
            Self::OutOfRange => "out_of_range",
            Self::WrongType => "wrong_type",
            Self::UnseenCategories => "unseen_categories",
            Self::Schema => "schema",
        }
    }
}

/// What kind of alert a decision is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DecisionKind {
    FeatureDrift,
    PredictionDrift,
    DataQuality,
}

impl DecisionKind {
    /// The alert `type`.
    pub fn alert_type(self) -> &'static str {
        match self {
            Self::FeatureDrift => "FeatureDrift",
            Self::PredictionDrift => "PredictionDrift",
            Self::DataQuality => "DataQuality",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionStatus {
    Firing,
    Resolved,
}

/// A state change of one drift or quality alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub status: DecisionStatus,
    pub model: String,
    /// Feature (or `prediction.<output>`) concerned.
    pub feature: String,
    /// The quality check, for `DataQuality`.
    pub check: Option<QualityCheck>,
    /// Drift: the CUSUM statistic; quality: the offending share.
    pub value: f64,
    /// Drift: the CUSUM threshold `h`; quality: the configured limit.
    pub threshold: f64,
    /// End of the window where the condition started, epoch milliseconds.
    pub started_at_ms: i64,
    /// End of the window that decided, epoch milliseconds.
    pub window_end_ms: i64,
    pub summary: String,
}

impl Decision {
    /// The alert to publish for this decision (severity medium, labels
    /// model, model_version, feature and for quality quality_check).
    pub fn to_alert(&self, model_version: &str) -> Option<Alert> {
        let mut labels = BTreeMap::new();
        labels.insert("model".to_string(), self.model.clone());
        if !model_version.is_empty() {
            labels.insert("model_version".to_string(), model_version.to_string());
        }
        labels.insert("feature".to_string(), self.feature.clone());
        if let Some(c) = self.check {
            labels.insert("quality_check".to_string(), c.name().to_string());
        }
        let transition = match self.status {
            DecisionStatus::Firing => Transition::Fire {
                starts_at_ms: self.started_at_ms,
            },
            DecisionStatus::Resolved => Transition::Resolve {
                starts_at_ms: self.started_at_ms,
                ends_at_ms: self.window_end_ms,
            },
        };
        let recommendations = match self.kind {
            DecisionKind::DataQuality => vec!["Check the upstream data pipeline for this feature".to_string()],
            _ => vec![
                "Compare the reference and current distributions in the drift report".to_string(),
                "Consider retraining on recent data if the shift is expected to persist".to_string(),
            ],
        };
        rules::alert_for(
            AlertSpec {
                alert_type: self.kind.alert_type(),
                severity: Severity::Medium,
                labels,
                summary: self.summary.clone(),
                description: match self.kind {
                    DecisionKind::DataQuality => format!(
                        "{}: share {:.4} against a limit of {:.4}",
                        self.summary, self.value, self.threshold
                    ),
                    _ => format!(
                        "{}: CUSUM of per-window chi-square z-scores {:.2} crossed {:.2}, the threshold \
                         set for the model's false-alarm budget",
                        self.summary, self.value, self.threshold
                    ),
                },
                value: self.value,
                threshold: self.threshold,
                recommendations,
            },
            &transition,
            self.window_end_ms,
        )
    }
}

/// Scores of one stream over the last evaluated window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    pub psi: f64,
    pub chi_square: f64,
    pub chi_square_df: u32,
    pub chi_square_p_value: f64,
    /// Jensen-Shannon distance, base 2, on the fine bins / categories.
    pub js_distance: f64,
    /// KS statistic at the fine edges; the exact KS lies in
    /// `[ks, ks + ks_bound]`.
    pub ks: Option<f64>,
    pub ks_p_value: Option<f64>,
    pub ks_bound: Option<f64>,
    /// Wasserstein-1 distance divided by the reference std, from bin means;
    /// the exact value is within `wasserstein_bound` of it.
    pub wasserstein_normalised: Option<f64>,
    pub wasserstein_bound: Option<f64>,
    /// Share of values in categories the reference never saw.
    pub unseen_share: Option<f64>,
}

/// The sequential decision state of one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DecisionState {
    /// This window's standardised statistic (N(0, 1) under no drift).
    pub z: f64,
    pub cusum: f64,
    pub threshold: f64,
    pub firing: bool,
}

/// Quality measurements of one stream over the last evaluated window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QualityMeasures {
    pub missing_rate: f64,
    pub reference_missing_rate: f64,
    pub out_of_range_share: Option<f64>,
    pub wrong_type_share: f64,
    pub unseen_share: Option<f64>,
    /// Share of events that carried the feature at all (null included).
    pub presence_share: f64,
}

/// Reference and current shares on the same bins, for plotting side by side.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Distribution {
    /// Numeric: fine bin edges; bin `i` is `[edges[i-1], edges[i])`, the
    /// outer bins are open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<f64>>,
    /// Categorical: category names, then `__other__` and `__unseen__`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// One feature (or prediction output) in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureReport {
    pub name: String,
    pub kind: &'static str,
    /// Usable values in the window.
    pub count: u64,
    /// Values in the reference.
    pub reference_count: u64,
    pub scores: Scores,
    pub decision: DecisionState,
    pub quality: QualityMeasures,
    pub distribution: Distribution,
    /// Unseen categories with their counts (at most 64 names).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unseen_values: BTreeMap<String, u64>,
}

/// How decisions are made, as served in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodReport {
    pub streams: usize,
    pub false_alarm_probability: f64,
    pub horizon_windows: u64,
    pub arl0_per_stream: f64,
    pub cusum_k: f64,
    pub cusum_h: f64,
    pub persistence_windows: u32,
}

/// The drift and quality report of the last evaluated window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    pub model: String,
    pub profile_version: u32,
    pub window_end_ms: i64,
    pub window_events: u64,
    pub windows_evaluated: u64,
    pub method: MethodReport,
    pub features: Vec<FeatureReport>,
    pub predictions: Vec<FeatureReport>,
    /// Score per quality check (1 = clean), as exported.
    pub quality_scores: BTreeMap<&'static str, f64>,
    /// Features present now but not in the reference (share of events).
    pub appeared: BTreeMap<String, f64>,
    /// Reference features (almost) absent now.
    pub vanished: Vec<String>,
}

/// Values for `ml_feature_drift_score{model_name,feature_name}` (PSI) and
/// `ml_data_quality_score{model_name,quality_check}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricValues {
    pub drift: Vec<(String, f64)>,
    pub quality: Vec<(&'static str, f64)>,
}

/// Counts consecutive breaching / calm evaluations and flips between
/// inactive and firing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latch {
    firing: bool,
    since_ms: i64,
    breach_run: u32,
    calm_run: u32,
}

impl Latch {
    fn step(
        &mut self,
        breach: bool,
        calm: bool,
        fire_after: u32,
        resolve_after: u32,
        now_ms: i64,
    ) -> Option<DecisionStatus> {
        if !self.firing {
            if breach {
                if self.breach_run == 0 {
                    self.since_ms = now_ms;
                }
                self.breach_run += 1;
            } else {
                self.breach_run = 0;
            }
            if self.breach_run >= fire_after.max(1) {
                self.firing = true;
                self.calm_run = 0;
                return Some(DecisionStatus::Firing);
            }
            return None;
        }
        self.calm_run = if calm { self.calm_run + 1 } else { 0 };
        if self.calm_run >= resolve_after.max(1) {
            self.firing = false;
            self.breach_run = 0;
            return Some(DecisionStatus::Resolved);
        }
        None
    }
}

/// A monitor's mutable state, as checkpointed (serde JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorState {
    pub model: String,
    pub profile_version: u32,
    /// Events in the open window.
    pub events: u64,
    pub windows_evaluated: u64,
    pub unexpected: BTreeMap<String, u64>,
    pub appeared: BTreeMap<String, Latch>,
    pub streams: Vec<StreamState>,
}

/// One stream's open window and sequential state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamState {
    pub name: String,
    pub counts: Vec<u64>,
    pub sums: Vec<f64>,
    pub squares: Vec<f64>,
    pub values: u64,
    pub nulls: u64,
    pub wrong_type: u64,
    pub out_of_range: u64,
    pub unseen: BTreeMap<String, u64>,
    pub cusum: f64,
    pub drift: Latch,
    pub quality: Vec<Latch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Feature,
    Prediction,
}

struct NumericRef {
    edges: Vec<f64>,
    /// Coarse bin of each fine bin.
    coarse_of: Vec<usize>,
    fine: Vec<f64>,
    coarse: Vec<f64>,
    /// Reference share below each fine edge.
    cum: Vec<f64>,
    atoms: Vec<(f64, f64)>,
    binning_error: f64,
    std: f64,
    min: f64,
    max: f64,
}

struct CategoricalRef {
    index: NameMap,
    names: Vec<String>,
    /// Counts of the categories, then other, then unseen (0).
    counts: Vec<f64>,
    truncated: bool,
}

enum Reference {
    Numeric(NumericRef),
    Categorical(CategoricalRef),
}

#[derive(Default)]
struct WindowCounts {
    /// Per bin (fine bins or categories + other + unseen).
    counts: Vec<u64>,
    /// Numeric: sum and sum of squares of the values in each fine bin.
    sums: Vec<f64>,
    squares: Vec<f64>,
    values: u64,
    nulls: u64,
    wrong_type: u64,
    out_of_range: u64,
    unseen: BTreeMap<String, u64>,
}

impl WindowCounts {
    fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.sums.iter_mut().for_each(|c| *c = 0.0);
        self.squares.iter_mut().for_each(|c| *c = 0.0);
        self.values = 0;
        self.nulls = 0;
        self.wrong_type = 0;
        self.out_of_range = 0;
        self.unseen.clear();
    }
}

struct Slot {
    name: String,
    role: Role,
    reference: Reference,
    reference_count: u64,
    reference_missing_rate: f64,
    window: WindowCounts,
    cusum: f64,
    drift: Latch,
    quality: [Latch; 5],
}

/// What [`DriftMonitor::observe_view`] keeps between events.
struct FastPath {
    /// The feature names of the previous event, in its order, with their
    /// first words (`view::head`) and slots (`None`: not in the profile).
    order: Vec<(String, u64, Option<usize>)>,
    /// Slots of the prediction outputs.
    score: Option<usize>,
    label: Option<usize>,
    value: Option<usize>,
    /// Class name (after `scores.`) to slot.
    classes: NameMap,
}

impl FastPath {
    fn heap_bytes(&self) -> usize {
        self.order.iter().map(|(n, _, _)| n.capacity()).sum::<usize>()
            + self.order.capacity() * std::mem::size_of::<(String, u64, Option<usize>)>()
            + self.classes.heap_bytes()
    }

    fn new(predictions: &NameMap) -> Self {
        Self {
            order: Vec::new(),
            score: predictions.get("score").copied(),
            label: predictions.get("label").copied(),
            value: predictions.get("value").copied(),
            classes: predictions
                .iter()
                .filter_map(|(k, i)| k.strip_prefix("scores.").map(|c| (c.to_string(), *i)))
                .collect(),
        }
    }
}

/// Drift and quality state of one model against its active profile.
pub struct DriftMonitor {
    model: String,
    profile_version: u32,
    config: DriftConfig,
    cusum_h: f64,
    slots: Vec<Slot>,
    features: NameMap,
    predictions: NameMap,
    fast: FastPath,
    events: u64,
    windows_evaluated: u64,
    unexpected: BTreeMap<String, u64>,
    appeared: BTreeMap<String, Latch>,
    last: Option<DriftReport>,
}

impl DriftMonitor {
    /// A monitor of `profile.model` against `profile`.
    pub fn new(profile: &Profile, config: DriftConfig) -> Result<Self, DriftError> {
        profile.validate()?;
        config.validate()?;
        let mut slots = Vec::new();
        let mut features = NameMap::default();
        let mut predictions = NameMap::default();
        for (role, map, index) in [
            (Role::Feature, &profile.features, &mut features),
            (Role::Prediction, &profile.predictions, &mut predictions),
        ] {
            for (key, f) in map {
                index.insert(key.clone(), slots.len());
                let name = match role {
                    Role::Feature => key.clone(),
                    Role::Prediction => format!("prediction.{key}"),
                };
                slots.push(Slot::new(name, role, f));
            }
        }
        let cusum_h = config.cusum_h(slots.len());
        let fast = FastPath::new(&predictions);
        Ok(Self {
            model: profile.model.clone(),
            profile_version: profile.version,
            config,
            cusum_h,
            slots,
            features,
            predictions,
            fast,
            events: 0,
            windows_evaluated: 0,
            unexpected: BTreeMap::new(),
            appeared: BTreeMap::new(),
            last: None,
        })
    }

    /// Replaces the active profile, keeping the configuration; the current
    /// window and all sequential state start over.
    pub fn set_profile(&mut self, profile: &Profile) -> Result<(), DriftError> {
        if profile.model != self.model {
            return Err(DriftError::WrongModel {
                profile: profile.model.clone(),
                model: self.model.clone(),
            });
        }
        *self = Self::new(profile, self.config.clone())?;
        Ok(())
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn profile_version(&self) -> u32 {
        self.profile_version
    }

    /// The CUSUM threshold in use.
    pub fn cusum_h(&self) -> f64 {
        self.cusum_h
    }

    /// Events in the current (not yet evaluated) window.
    pub fn window_events(&self) -> u64 {
        self.events
    }

    /// Adds one event's features and prediction outputs to the window.
    pub fn observe<'a>(
        &mut self,
        features: impl IntoIterator<Item = (&'a str, Value<'a>)>,
        prediction: impl IntoIterator<Item = (&'a str, Value<'a>)>,
    ) {
        self.events += 1;
        for (name, value) in features {
            let slot = self.features.get(name).copied();
            self.add_feature(slot, name, value);
        }
        for (name, value) in prediction {
            if let Some(&i) = self.predictions.get(name) {
                self.slots[i].add(value);
            }
        }
    }

    /// A feature value for `slot` (`None`: a name the profile lacks).
    fn add_feature(&mut self, slot: Option<usize>, name: &str, value: Value<'_>) {
        match slot {
            Some(i) => self.slots[i].add(value),
            None => {
                if let Some(c) = self.unexpected.get_mut(name) {
                    *c += 1;
                } else if self.unexpected.len() < MAX_TRACKED_NAMES {
                    self.unexpected.insert(name.to_string(), 1);
                }
            }
        }
    }

    /// Adds an inference event from the topic.
    pub fn observe_event(&mut self, event: &InferenceEvent) {
        self.observe_view(&InferenceRef::of(event));
    }

    /// Adds a decoded inference event: [`DriftMonitor::observe`] of its
    /// features and outputs. A view lists features sorted by name, one per
    /// name, so events of one schema list them in the same order: the
    /// slots found for the previous event are checked by comparing names,
    /// and a name is looked up only where the list differs.
    pub fn observe_view(&mut self, event: &InferenceRef<'_>) {
        self.events += 1;
        for (i, (name, value)) in event.features.iter().enumerate() {
            // Names of up to 8 bytes are equal when their lengths and
            // first words are; longer ones are compared whole.
            let word = view::head(name);
            let slot = match self.fast.order.get(i) {
                Some((cached, cached_word, slot))
                    if *cached_word == word
                        && cached.len() == name.len()
                        && (name.len() <= 8 || cached.as_str() == *name) =>
                {
                    *slot
                }
                _ => {
                    let slot = self.features.get(name).copied();
                    self.fast.order.truncate(i);
                    self.fast.order.push((name.to_string(), word, slot));
                    slot
                }
            };
            self.add_feature(slot, name, kind_value(*value));
        }
        let Some(p) = &event.prediction else { return };
        let outputs = [
            (self.fast.score, p.score.map(Value::Number)),
            (self.fast.label, p.label.map(Value::Text)),
            (self.fast.value, p.value.map(Value::Number)),
        ];
        for (slot, value) in outputs {
            if let (Some(s), Some(v)) = (slot, value) {
                self.slots[s].add(v);
            }
        }
        for (class, score) in &p.scores {
            if let Some(&s) = self.fast.classes.get(class) {
                self.slots[s].add(Value::Number(*score));
            }
        }
    }

    /// Closes the window ending at `window_end_ms`: computes scores, updates
    /// the sequential tests and returns the alert state changes. A window
    /// with fewer than `min_window_events` events is not evaluated and
    /// carries over.
    pub fn evaluate(&mut self, window_end_ms: i64) -> Vec<Decision> {
        if self.events == 0 || self.events < self.config.min_window_events {
            return Vec::new();
        }
        let events = self.events;
        let cfg = self.config.clone();
        let q = &cfg.quality;
        let h = self.cusum_h;
        let mut decisions = Vec::new();
        let mut features = Vec::new();
        let mut predictions = Vec::new();
        let mut worst = [0f64; 5];
        let mut vanished = Vec::new();
        for slot in &mut self.slots {
            let report = slot.evaluate(events, h, cfg.cusum_k);
            // Drift.
            let breach = report.decision.cusum >= h && report.scores.psi >= cfg.min_effect_psi;
            let calm = report.decision.z < cfg.cusum_k;
            if let Some(status) = slot.drift.step(
                breach,
                calm,
                cfg.persistence_windows,
                cfg.resolve_windows,
                window_end_ms,
            ) {
                let kind = match slot.role {
                    Role::Feature => DecisionKind::FeatureDrift,
                    Role::Prediction => DecisionKind::PredictionDrift,
                };
                decisions.push(Decision {
                    kind,
                    status,
                    model: self.model.clone(),
                    feature: slot.name.clone(),
                    check: None,
                    value: report.decision.cusum,
                    threshold: h,
                    started_at_ms: slot.drift.since_ms,
                    window_end_ms,
                    summary: format!(
                        "{} {} of model {} (psi {:.4}, z {:.1})",
                        kind.alert_type(),
                        slot.name,
                        self.model,
                        report.scores.psi,
                        report.decision.z
                    ),
                });
                if status == DecisionStatus::Resolved {
                    slot.cusum = 0.0;
                }
            }
            let mut report = report;
            report.decision.firing = slot.drift.firing;
            // Quality (features only: a missing score is not a data problem).
            if slot.role == Role::Feature {
                let m = &report.quality;
                let excess = (m.missing_rate - m.reference_missing_rate).max(0.0);
                let is_vanished = m.presence_share < q.schema_presence_share
                    && 1.0 - m.reference_missing_rate >= q.schema_presence_share;
                if is_vanished {
                    vanished.push(slot.name.clone());
                }
                let measures = [
                    (QualityCheck::MissingValues, excess, q.max_missing_rate_increase),
                    (
                        QualityCheck::OutOfRange,
                        m.out_of_range_share.unwrap_or(0.0),
                        q.max_out_of_range_share,
                    ),
                    (QualityCheck::WrongType, m.wrong_type_share, q.max_wrong_type_share),
                    (
                        QualityCheck::UnseenCategories,
                        m.unseen_share.unwrap_or(0.0),
                        q.max_unseen_share,
                    ),
                    (
                        QualityCheck::Schema,
                        if is_vanished { 1.0 - m.presence_share } else { 0.0 },
                        1.0 - q.schema_presence_share,
                    ),
                ];
                for (i, (check, share, limit)) in measures.into_iter().enumerate() {
                    if check != QualityCheck::Schema {
                        worst[i] = worst[i].max(share);
                    }
                    let breach = if check == QualityCheck::Schema {
                        is_vanished
                    } else {
                        share > limit
                    };
                    if let Some(status) =
                        slot.quality[i].step(breach, !breach, q.persistence_windows, q.resolve_windows, window_end_ms)
                    {
                        decisions.push(Decision {
                            kind: DecisionKind::DataQuality,
                            status,
                            model: self.model.clone(),
                            feature: slot.name.clone(),
                            check: Some(check),
                            value: share,
                            threshold: limit,
                            started_at_ms: slot.quality[i].since_ms,
                            window_end_ms,
                            summary: format!(
                                "DataQuality {} on {} of model {}: {:.4}",
                                check.name(),
                                slot.name,
                                self.model,
                                share
                            ),
                        });
                    }
                }
                features.push(report);
            } else {
                predictions.push(report);
            }
        }
        // Schema: features that appeared.
        let mut appeared = BTreeMap::new();
        for (name, count) in &self.unexpected {
            let share = *count as f64 / events as f64;
            if share > q.schema_presence_share {
                appeared.insert(name.clone(), share);
            }
        }
        let mut names: Vec<String> = self.appeared.keys().cloned().collect();
        names.extend(appeared.keys().filter(|n| !self.appeared.contains_key(*n)).cloned());
        for name in names {
            let share = appeared.get(&name).copied();
            if share.is_some() && !self.appeared.contains_key(&name) && self.appeared.len() >= MAX_TRACKED_NAMES {
                continue;
            }
            let latch = self.appeared.entry(name.clone()).or_default();
            let breach = share.is_some();
            if let Some(status) = latch.step(breach, !breach, q.persistence_windows, q.resolve_windows, window_end_ms) {
                decisions.push(Decision {
                    kind: DecisionKind::DataQuality,
                    status,
                    model: self.model.clone(),
                    feature: name.clone(),
                    check: Some(QualityCheck::Schema),
                    value: share.unwrap_or(0.0),
                    threshold: q.schema_presence_share,
                    started_at_ms: latch.since_ms,
                    window_end_ms,
                    summary: format!("DataQuality schema: new feature {name} in model {}", self.model),
                });
            }
            if !latch.firing && latch.breach_run == 0 {
                self.appeared.remove(&name);
            }
        }
        let reference_features = self.features.len().max(1) as f64;
        worst[4] = ((vanished.len() + appeared.len()) as f64 / reference_features).min(1.0);
        let quality_scores = QualityCheck::ALL
            .iter()
            .zip(worst)
            .map(|(c, w)| (c.name(), (1.0 - w).clamp(0.0, 1.0)))
            .collect();
        self.windows_evaluated += 1;
        self.last = Some(DriftReport {
            model: self.model.clone(),
            profile_version: self.profile_version,
            window_end_ms,
            window_events: events,
            windows_evaluated: self.windows_evaluated,
            method: MethodReport {
                streams: self.slots.len(),
                false_alarm_probability: cfg.false_alarm_probability,
                horizon_windows: cfg.horizon_windows,
                arl0_per_stream: cfg.arl0(self.slots.len()),
                cusum_k: cfg.cusum_k,
                cusum_h: h,
                persistence_windows: cfg.persistence_windows,
            },
            features,
            predictions,
            quality_scores,
            appeared,
            vanished,
        });
        self.events = 0;
        self.unexpected.clear();
        for s in &mut self.slots {
            s.window.reset();
        }
        decisions
    }

    /// The report of the last evaluated window.
    pub fn report(&self) -> Option<&DriftReport> {
        self.last.as_ref()
    }

    /// Metric values of the last evaluated window (empty before the first).
    pub fn metric_values(&self) -> MetricValues {
        let Some(r) = &self.last else {
            return MetricValues::default();
        };
        MetricValues {
            drift: r
                .features
                .iter()
                .chain(&r.predictions)
                .map(|f| (f.name.clone(), f.scores.psi))
                .collect(),
            quality: r.quality_scores.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }

    /// The mutable state (open window, CUSUMs, alert phases) for a
    /// checkpoint. The last report is not included; it is recomputed at the
    /// next evaluation.
    pub fn snapshot(&self) -> MonitorState {
        MonitorState {
            model: self.model.clone(),
            profile_version: self.profile_version,
            events: self.events,
            windows_evaluated: self.windows_evaluated,
            unexpected: self.unexpected.clone(),
            appeared: self.appeared.clone(),
            streams: self
                .slots
                .iter()
                .map(|s| StreamState {
                    name: s.name.clone(),
                    counts: s.window.counts.clone(),
                    sums: s.window.sums.clone(),
                    squares: s.window.squares.clone(),
                    values: s.window.values,
                    nulls: s.window.nulls,
                    wrong_type: s.window.wrong_type,
                    out_of_range: s.window.out_of_range,
                    unseen: s.window.unseen.clone(),
                    cusum: s.cusum,
                    drift: s.drift.clone(),
                    quality: s.quality.to_vec(),
                })
                .collect(),
        }
    }

    /// A monitor resumed from a checkpoint taken with the same profile.
    pub fn restore(profile: &Profile, config: DriftConfig, state: MonitorState) -> Result<Self, DriftError> {
        let mut m = Self::new(profile, config)?;
        if state.model != m.model || state.profile_version != m.profile_version {
            return Err(DriftError::InvalidState(format!(
                "checkpoint is for {} profile v{}, not {} v{}",
                state.model, state.profile_version, m.model, m.profile_version
            )));
        }
        if state.streams.len() != m.slots.len() {
            return Err(DriftError::InvalidState(format!(
                "checkpoint has {} streams, the profile {}",
                state.streams.len(),
                m.slots.len()
            )));
        }
        for (slot, st) in m.slots.iter_mut().zip(state.streams) {
            let w = &mut slot.window;
            let numeric = matches!(slot.reference, Reference::Numeric(_));
            let sums_len = if numeric { w.counts.len() } else { 0 };
            if st.name != slot.name
                || st.counts.len() != w.counts.len()
                || st.sums.len() != sums_len
                || st.squares.len() != sums_len
                || st.quality.len() != slot.quality.len()
            {
                return Err(DriftError::InvalidState(format!(
                    "stream {}: does not match the profile's {}",
                    st.name, slot.name
                )));
            }
            w.counts = st.counts;
            w.sums = st.sums;
            w.squares = st.squares;
            w.values = st.values;
            w.nulls = st.nulls;
            w.wrong_type = st.wrong_type;
            w.out_of_range = st.out_of_range;
            w.unseen = st.unseen;
            slot.cusum = st.cusum;
            slot.drift = st.drift;
            for (q, l) in slot.quality.iter_mut().zip(st.quality) {
                *q = l;
            }
        }
        m.events = state.events;
        m.windows_evaluated = state.windows_evaluated;
        m.unexpected = state.unexpected;
        m.appeared = state.appeared;
        Ok(m)
    }

    /// Approximate heap bytes of the monitor (reference and window state).
    pub fn heap_bytes(&self) -> usize {
        let slot_bytes: usize = self
            .slots
            .iter()
            .map(|s| {
                let w = &s.window;
                let window = 8 * (w.counts.len() + w.sums.len() + w.squares.len());
                let reference = match &s.reference {
                    Reference::Numeric(n) => {
                        8 * (n.edges.len() + n.coarse_of.len() + n.fine.len() + n.coarse.len() + n.cum.len())
                            + 16 * n.atoms.len()
                    }
                    Reference::Categorical(c) => {
                        c.names.iter().map(|n| n.len() + 24).sum::<usize>() + c.index.heap_bytes() + 8 * c.counts.len()
                    }
                };
                std::mem::size_of::<Slot>() + s.name.len() + window + reference
            })
            .sum();
        let index = self.features.heap_bytes() + self.predictions.heap_bytes() + self.fast.heap_bytes();
        std::mem::size_of::<Self>() + slot_bytes + index
    }
}

/// A decoded feature value as monitored.
pub fn kind_value(v: FeatureRef<'_>) -> Value<'_> {
    match v {
        FeatureRef::Number(x) => Value::Number(x),
        FeatureRef::Text(t) => Value::Text(t),
        FeatureRef::Flag(b) => Value::Bool(b),
        FeatureRef::Missing(_) | FeatureRef::Unset => Value::Missing,
    }
}

/// A protobuf feature value as a [`Value`].
pub fn feature_value(v: &FeatureValue) -> Value<'_> {
    match &v.kind {
        Some(Kind::Number(x)) => Value::Number(*x),
        Some(Kind::Text(t)) => Value::Text(t),
        Some(Kind::Flag(b)) => Value::Bool(*b),
        Some(Kind::Missing(_)) | None => Value::Missing,
    }
}

/// A prediction's outputs as monitored streams: `score`, `label`, `value`,
/// `scores.<class>`.
pub fn prediction_values(p: &Prediction) -> Vec<(std::borrow::Cow<'_, str>, Value<'_>)> {
    let mut out: Vec<(std::borrow::Cow<'_, str>, Value<'_>)> = Vec::new();
    if let Some(s) = p.score {
        out.push(("score".into(), Value::Number(s)));
    }
    if let Some(l) = &p.label {
        out.push(("label".into(), Value::Text(l)));
    }
    if let Some(v) = p.value {
        out.push(("value".into(), Value::Number(v)));
    }
    for (class, s) in &p.scores {
        out.push((format!("scores.{class}").into(), Value::Number(*s)));
    }
    out
}

impl Slot {
    fn new(name: String, role: Role, f: &FeatureProfile) -> Self {
        let total = (f.count() + f.missing()).max(1) as f64;
        let (reference, window) = match f {
            FeatureProfile::Numeric(n) => numeric_reference(n),
            FeatureProfile::Categorical(c) => categorical_reference(c),
        };
        Self {
            name,
            role,
            reference,
            reference_count: f.count(),
            reference_missing_rate: f.missing() as f64 / total,
            window,
            cusum: 0.0,
            drift: Latch::default(),
            quality: Default::default(),
        }
    }

    #[inline]
    fn add(&mut self, value: Value<'_>) {
        let w = &mut self.window;
        match (&self.reference, value) {
            (_, Value::Missing) => w.nulls += 1,
            (Reference::Numeric(r), Value::Number(x)) => {
                if !x.is_finite() {
                    w.wrong_type += 1;
                    return;
                }
                let bin = r.edges.partition_point(|e| *e <= x);
                w.counts[bin] += 1;
                w.sums[bin] += x;
                w.squares[bin] += x * x;
                if x < r.min || x > r.max {
                    w.out_of_range += 1;
                }
                w.values += 1;
            }
            (Reference::Numeric(_), _) => w.wrong_type += 1,
            (Reference::Categorical(r), v) => {
                let owned;
                let name = match v {
                    Value::Number(x) if !x.is_finite() => {
                        w.wrong_type += 1;
                        return;
                    }
                    Value::Number(x) => {
                        // A number where the reference had categories is the
                        // wrong type unless the reference itself was numbers
                        // forced to categories.
                        owned = format_number(x);
                        if !r.index.contains_key(&owned) {
                            w.wrong_type += 1;
                            return;
                        }
                        owned.as_str()
                    }
                    other => other.category().unwrap_or_default(),
                };
                w.values += 1;
                match r.index.get(name) {
                    Some(&i) => w.counts[i] += 1,
                    None if r.truncated => w.counts[r.names.len()] += 1,
                    None => {
                        w.counts[r.names.len() + 1] += 1;
                        if let Some(c) = w.unseen.get_mut(name) {
                            *c += 1;
                        } else if w.unseen.len() < MAX_TRACKED_NAMES {
                            w.unseen.insert(name.to_string(), 1);
                        }
                    }
                }
            }
        }
    }

    fn evaluate(&mut self, events: u64, h: f64, k: f64) -> FeatureReport {
        let w = &self.window;
        let n = w.values as f64;
        let present = w.values + w.nulls + w.wrong_type;
        let cur: Vec<f64> = w.counts.iter().map(|c| *c as f64).collect();
        let mut scores = Scores::default();
        let mut quality = QualityMeasures {
            missing_rate: (events.saturating_sub(w.values + w.wrong_type)) as f64 / events as f64,
            reference_missing_rate: self.reference_missing_rate,
            wrong_type_share: if present > w.nulls {
                w.wrong_type as f64 / (w.values + w.wrong_type) as f64
            } else {
                0.0
            },
            presence_share: present as f64 / events as f64,
            ..Default::default()
        };
        let (kind, distribution, chi) = match &self.reference {
            Reference::Numeric(r) => {
                let mut coarse = vec![0.0; r.coarse.len()];
                for (i, c) in cur.iter().enumerate() {
                    coarse[r.coarse_of[i]] += c;
                }
                let chi = stats::chi2_two_sample(&r.coarse, &coarse);
                scores.psi = stats::psi(&r.coarse, &coarse);
                scores.js_distance = stats::js_distance(&r.fine, &cur);
                if n > 0.0 {
                    let mut acc = 0.0;
                    let cur_cum: Vec<f64> = cur[..r.edges.len()]
                        .iter()
                        .map(|c| {
                            acc += c / n;
                            acc
                        })
                        .collect();
                    let d = stats::ks_from_cdfs(&r.cum, &cur_cum);
                    let ref_total: f64 = r.fine.iter().sum();
                    let bound = r
                        .fine
                        .iter()
                        .zip(&cur)
                        .map(|(a, b)| (a / ref_total).min(b / n))
                        .fold(0.0, f64::max);
                    scores.ks = Some(d);
                    scores.ks_p_value = Some(stats::ks_p_value(d, ref_total, n));
                    scores.ks_bound = Some(bound);
                    let atoms: Vec<(f64, f64)> = cur
                        .iter()
                        .zip(&w.sums)
                        .filter(|(c, _)| **c > 0.0)
                        .map(|(c, s)| (s / c, *c))
                        .collect();
                    // Moving a bin's values to their mean moves each by
                    // E|x − mean| ≤ the bin's standard deviation.
                    let spread: f64 = cur
                        .iter()
                        .zip(w.sums.iter().zip(&w.squares))
                        .filter(|(c, _)| **c > 0.0)
                        .map(|(c, (s, sq))| {
                            let mean = s / c;
                            c / n * (sq / c - mean * mean).max(0.0).sqrt()
                        })
                        .sum();
                    let std = if r.std > 0.0 { r.std } else { 1.0 };
                    scores.wasserstein_normalised = Some(stats::wasserstein(&r.atoms, &atoms) / std);
                    scores.wasserstein_bound = Some((r.binning_error + spread) / std);
                    quality.out_of_range_share = Some(w.out_of_range as f64 / n);
                }
                let distribution = Distribution {
                    edges: Some(r.edges.clone()),
                    categories: None,
                    reference: shares(&r.fine),
                    current: shares(&cur),
                };
                ("numeric", distribution, chi)
            }
            Reference::Categorical(r) => {
                let chi = stats::chi2_two_sample(&r.counts, &cur);
                scores.psi = stats::psi(&r.counts, &cur);
                scores.js_distance = stats::js_distance(&r.counts, &cur);
                if !r.truncated && n > 0.0 {
                    let share = cur[r.names.len() + 1] / n;
                    scores.unseen_share = Some(share);
                    quality.unseen_share = Some(share);
                }
                let mut categories = r.names.clone();
                categories.push("__other__".into());
                categories.push("__unseen__".into());
                let distribution = Distribution {
                    edges: None,
                    categories: Some(categories),
                    reference: shares(&r.counts),
                    current: shares(&cur),
                };
                ("categorical", distribution, chi)
            }
        };
        scores.chi_square = chi.statistic;
        scores.chi_square_df = chi.df;
        scores.chi_square_p_value = chi.p_value;
        let z = if chi.df > 0 {
            stats::z_from_ln_p(chi.ln_p_value)
        } else {
            0.0
        };
        self.cusum = (self.cusum + z - k).max(0.0);
        FeatureReport {
            name: self.name.clone(),
            kind,
            count: w.values,
            reference_count: self.reference_count,
            scores,
            decision: DecisionState {
                z,
                cusum: self.cusum,
                threshold: h,
                firing: self.drift.firing,
            },
            quality,
            distribution,
            unseen_values: w.unseen.clone(),
        }
    }
}

fn shares(counts: &[f64]) -> Vec<f64> {
    let t: f64 = counts.iter().sum();
    counts.iter().map(|c| if t > 0.0 { c / t } else { 0.0 }).collect()
}

fn numeric_reference(n: &NumericProfile) -> (Reference, WindowCounts) {
    let bins = n.counts.len();
    let mut coarse_of = Vec::with_capacity(bins);
    let mut coarse_bin = 0;
    for i in 0..bins {
        coarse_of.push(coarse_bin);
        if i < n.edges.len() && n.coarse_edges.contains(&n.edges[i]) {
            coarse_bin += 1;
        }
    }
    let fine: Vec<f64> = n.counts.iter().map(|c| *c as f64).collect();
    let mut coarse = vec![0.0; n.coarse_edges.len() + 1];
    for (i, c) in fine.iter().enumerate() {
        coarse[coarse_of[i]] += c;
    }
    let total = n.count.max(1) as f64;
    let mut acc = 0.0;
    let cum = fine[..n.edges.len()]
        .iter()
        .map(|c| {
            acc += c / total;
            acc
        })
        .collect();
    let atoms = n.bin_means.iter().zip(&fine).map(|(m, c)| (*m, *c)).collect();
    let window = WindowCounts {
        counts: vec![0; bins],
        sums: vec![0.0; bins],
        squares: vec![0.0; bins],
        ..Default::default()
    };
    (
        Reference::Numeric(NumericRef {
            edges: n.edges.clone(),
            coarse_of,
            fine,
            coarse,
            cum,
            atoms,
            binning_error: n.binning_error,
            std: n.std,
            min: n.min,
            max: n.max,
        }),
        window,
    )
}

fn categorical_reference(c: &CategoricalProfile) -> (Reference, WindowCounts) {
    let names: Vec<String> = c.categories.keys().cloned().collect();
    let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
    let mut counts: Vec<f64> = c.categories.values().map(|v| *v as f64).collect();
    counts.push(c.other as f64);
    counts.push(0.0);
    let window = WindowCounts {
        counts: vec![0; counts.len()],
        ..Default::default()
    };
    (
        Reference::Categorical(CategoricalRef {
            index,
            names,
            counts,
            truncated: c.other > 0,
        }),
        window,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Drift, Scenario};
    use crate::{BuildOptions, ProfileBuilder};

    fn monitor(config: DriftConfig) -> (DriftMonitor, Scenario) {
        let s = Scenario::stationary();
        let p = s.profile("fraud", 50_000, 1);
        (DriftMonitor::new(&p, config).unwrap(), s)
    }

    fn feed(m: &mut DriftMonitor, stream: &mut crate::sim::Stream, n: usize) {
        for _ in 0..n {
            let e = stream.next_event();
            m.observe(e.features(), [("score", Value::Number(e.score))]);
        }
    }

    /// The decoded-view path equals the name-by-name path fed with prost's
    /// event, whatever the feature order, with unknown features, names
    /// repeated within a message (the last value counts) and outputs.
    #[test]
    fn views_count_as_prost_events() {
        use prost::Message as _;
        use rand::rngs::StdRng;
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};

        use mlwatch_analyzer_core::wire::Decoder;

        let s = Scenario::stationary();
        let mut p = s.profile("fraud", 20_000, 1);
        let mut builder = ProfileBuilder::new(BuildOptions::new("fraud", 1)).unwrap();
        for (class, x) in [("a", 0.1), ("b", 0.7), ("a", 0.3), ("b", 0.2)] {
            builder.start_row();
            builder.add_prediction(&format!("scores.{class}"), Value::Number(x));
            builder.add_prediction("label", Value::Text(if x > 0.2 { "yes" } else { "no" }));
        }
        p.predictions.extend(builder.finish().unwrap().predictions);
        let (mut a, mut b) = (
            DriftMonitor::new(&p, DriftConfig::default()).unwrap(),
            DriftMonitor::new(&p, DriftConfig::default()).unwrap(),
        );
        let mut st = s.stream(5);
        let mut rng = StdRng::seed_from_u64(5);
        let mut decoder = Decoder::default();
        let to_value = |v: Value<'_>| FeatureValue {
            kind: Some(match v {
                Value::Number(x) => Kind::Number(x),
                Value::Text(t) => Kind::Text(t.to_string()),
                Value::Bool(b) => Kind::Flag(b),
                Value::Missing => Kind::Missing(true),
            }),
        };
        for i in 0..3000 {
            let e = st.next_event();
            let mut features: Vec<(String, FeatureValue)> =
                e.features().map(|(n, v)| (n.to_string(), to_value(v))).collect();
            if i % 7 == 0 {
                features.push((format!("extra{}", i % 3), to_value(Value::Number(1.0))));
            }
            // Schema order changes now and then; the cache must follow.
            if i % 50 == 0 {
                features.shuffle(&mut rng);
            }
            let mut bytes = Vec::new();
            for (name, value) in &features {
                InferenceEvent {
                    features: [(name.clone(), value.clone())].into(),
                    ..Default::default()
                }
                .encode(&mut bytes)
                .unwrap();
            }
            if i % 11 == 0 {
                // A repeated name: the later value counts.
                let (name, _) = &features[rng.random_range(0..features.len())];
                InferenceEvent {
                    features: [(name.clone(), to_value(Value::Number(rng.random_range(-5.0..500.0))))].into(),
                    ..Default::default()
                }
                .encode(&mut bytes)
                .unwrap();
            }
            let mut scores = std::collections::HashMap::new();
            if i % 3 == 0 {
                scores.insert("a".to_string(), rng.random_range(0.0..1.0));
                scores.insert("b".to_string(), rng.random_range(0.0..1.0));
            }
            InferenceEvent {
                model: "fraud".into(),
                prediction: Some(Prediction {
                    score: Some(e.score),
                    label: (i % 2 == 0).then(|| "yes".to_string()),
                    scores,
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode(&mut bytes)
            .unwrap();
            let view = decoder.view(&bytes).unwrap();
            a.observe_view(&view);
            decoder.recycle(view);
            let event = InferenceEvent::decode(bytes.as_slice()).unwrap();
            let outputs = prediction_values(event.prediction.as_ref().unwrap());
            b.observe(
                event.features.iter().map(|(k, v)| (k.as_str(), feature_value(v))),
                outputs.iter().map(|(k, v)| (k.as_ref(), *v)),
            );
        }
        let json = |m: &DriftMonitor| serde_json::to_value(m.snapshot()).unwrap();
        assert_eq!(json(&a), json(&b));
        assert_eq!(a.evaluate(1), b.evaluate(1));
        assert_eq!(a.report(), b.report());
    }

    #[test]
    fn small_windows_carry_over() {
        let (mut m, s) = monitor(DriftConfig::default());
        let mut st = s.stream(2);
        feed(&mut m, &mut st, 500);
        assert!(m.evaluate(1).is_empty());
        assert!(m.report().is_none());
        feed(&mut m, &mut st, 600);
        m.evaluate(2);
        assert_eq!(m.report().unwrap().window_events, 1100);
        assert_eq!(m.window_events(), 0);
    }

    #[test]
    fn shift_fires_then_resolves() {
        let (mut m, _) = monitor(DriftConfig::default());
        let mut drifted = Scenario {
            drift_at: 0,
            drifts: vec![("n03".into(), Drift::MeanShift(0.5))],
            ..Scenario::stationary()
        }
        .stream(3);
        feed(&mut m, &mut drifted, 5000);
        let d = m.evaluate(10);
        let r = m.report().unwrap();
        let n03 = r.features.iter().find(|f| f.name == "n03").unwrap();
        assert!(n03.decision.firing);
        // n03 feeds the score, so the prediction drifts as well.
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[1].kind, DecisionKind::PredictionDrift);
        assert_eq!(d[1].feature, "prediction.score");
        assert_eq!(d[0].kind, DecisionKind::FeatureDrift);
        assert_eq!(d[0].feature, "n03");
        let alert = d[0].to_alert("v1").unwrap();
        assert_eq!(alert.r#type, "FeatureDrift");
        assert_eq!(alert.labels["feature"], "n03");
        let mut clean = Scenario::stationary().stream(4);
        let mut resolved = Vec::new();
        // Resolves after three consecutive calm windows (z < k, each with
        // probability 0.84 when nothing drifts).
        for t in 0..20 {
            feed(&mut m, &mut clean, 5000);
            resolved.extend(m.evaluate(20 + t));
        }
        assert_eq!(resolved.len(), 2, "{resolved:?}");
        for r in &resolved {
            assert_eq!(r.status, DecisionStatus::Resolved);
            assert_eq!(r.started_at_ms, 10);
            let alert = r.to_alert("v1").unwrap();
            assert_eq!(alert.ends_at_ms, r.window_end_ms);
        }
    }

    #[test]
    fn quality_checks_fire_after_persistence() {
        let (mut m, s) = monitor(DriftConfig::default());
        let mut st = s.stream(5);
        let mut all = Vec::new();
        for t in 0..2 {
            for i in 0..2000 {
                let e = st.next_event();
                let feats: Vec<(&str, Value<'_>)> = e
                    .features()
                    .map(|(k, v)| match k {
                        "n01" if i % 5 == 0 => (k, Value::Missing),
                        "n02" if i % 4 == 0 => (k, Value::Number(1e9)),
                        "c1" if i % 3 == 0 => (k, Value::Number(7.0)),
                        "c2" if i % 3 == 0 => (k, Value::Text("brand-new")),
                        _ => (k, v),
                    })
                    .filter(|(k, _)| *k != "n05")
                    .chain([("extra", Value::Number(1.0))])
                    .collect();
                m.observe(feats, []);
            }
            all.extend(m.evaluate(t));
        }
        let fired: Vec<(String, &str)> = all
            .iter()
            .filter(|d| d.kind == DecisionKind::DataQuality)
            .map(|d| (d.feature.clone(), d.check.unwrap().name()))
            .collect();
        for want in [
            ("n01", "missing_values"),
            ("n02", "out_of_range"),
            ("c1", "wrong_type"),
            ("c2", "unseen_categories"),
            ("n05", "schema"),
            ("extra", "schema"),
        ] {
            assert!(
                fired.contains(&(want.0.to_string(), want.1)),
                "{want:?} not in {fired:?}"
            );
        }
        let r = m.report().unwrap();
        assert_eq!(r.vanished, vec!["n05".to_string()]);
        assert!(r.appeared.contains_key("extra"));
        assert!(r.quality_scores["out_of_range"] < 0.8);
        let mv = m.metric_values();
        assert_eq!(mv.quality.len(), 5);
        assert_eq!(mv.drift.len(), 26);
        let json = serde_json::to_value(r).unwrap();
        assert!(json["features"][0]["distribution"]["reference"].is_array());
    }

    #[test]
    fn events_from_the_topic_are_observed() {
        use mlwatch_proto::v1::feature_value;
        let (mut m, _) = monitor(DriftConfig {
            min_window_events: 1,
            ..DriftConfig::default()
        });
        let mut e = InferenceEvent::default();
        e.features.insert(
            "n00".into(),
            FeatureValue {
                kind: Some(feature_value::Kind::Number(0.5)),
            },
        );
        e.features.insert(
            "c0".into(),
            FeatureValue {
                kind: Some(feature_value::Kind::Text("a".into())),
            },
        );
        e.prediction = Some(Prediction {
            score: Some(0.3),
            ..Default::default()
        });
        m.observe_event(&e);
        m.evaluate(1);
        let r = m.report().unwrap();
        let n00 = r.features.iter().find(|f| f.name == "n00").unwrap();
        assert_eq!(n00.count, 1);
        assert_eq!(r.predictions[0].name, "prediction.score");
        assert_eq!(r.predictions[0].count, 1);
    }

    #[test]
    fn checkpoint_round_trip_resumes_exactly() {
        let s = Scenario::stationary();
        let p = s.profile("fraud", 20_000, 1);
        let mut a = DriftMonitor::new(&p, DriftConfig::default()).unwrap();
        let mut st = s.stream(9);
        feed(&mut a, &mut st, 3000);
        a.evaluate(1);
        feed(&mut a, &mut st, 1500);
        let json = serde_json::to_string(&a.snapshot()).unwrap();
        let state: MonitorState = serde_json::from_str(&json).unwrap();
        let mut b = DriftMonitor::restore(&p, DriftConfig::default(), state).unwrap();
        let mut st2 = s.stream(10);
        let mut st3 = s.stream(10);
        feed(&mut a, &mut st2, 1500);
        feed(&mut b, &mut st3, 1500);
        assert_eq!(a.evaluate(2), b.evaluate(2));
        let (ra, rb) = (a.report().unwrap(), b.report().unwrap());
        assert_eq!(ra, rb);
        let other = s.profile("other", 1000, 1);
        let err = DriftMonitor::restore(&other, DriftConfig::default(), a.snapshot())
            .err()
            .unwrap();
        assert!(err.to_string().contains("checkpoint is for fraud"), "{err}");
    }

    fn exact_ks_and_wasserstein(a: &[f64], b: &[f64]) -> (f64, f64) {
        let mut pts: Vec<(f64, f64)> = a
            .iter()
            .map(|x| (*x, 1.0 / a.len() as f64))
            .chain(b.iter().map(|x| (*x, -1.0 / b.len() as f64)))
            .collect();
        pts.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (mut diff, mut ks, mut w) = (0.0f64, 0.0f64, 0.0);
        for (i, p) in pts.iter().enumerate() {
            diff += p.1;
            // Right-continuous CDFs: compare after all ties at this point.
            if pts.get(i + 1).is_none_or(|n| n.0 > p.0) {
                ks = ks.max(diff.abs());
            }
            if let Some(n) = pts.get(i + 1) {
                w += diff.abs() * (n.0 - p.0);
            }
        }
        (ks, w)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The binned KS and Wasserstein are within their reported bounds
        /// of the exact values, for any data (ties, skew, shifts).
        #[test]
        fn binned_statistics_stay_within_their_bounds(
            seed in 0u64..u64::MAX,
            m in 50usize..1500,
            n in 20usize..800,
            shift in -2.0f64..2.0,
            scale in 0.2f64..3.0,
            round in proptest::bool::ANY,
        ) {
            let mut rng = crate::sim::Rng::new(seed);
            let mut draw = |k: usize, shift: f64, scale: f64| -> Vec<f64> {
                (0..k)
                    .map(|_| {
                        let x = shift + scale * rng.normal().exp();
                        if round { x.round() } else { x }
                    })
                    .collect()
            };
            let reference = draw(m, 0.0, 1.0);
            let current = draw(n, shift, scale);
            let mut b = crate::ProfileBuilder::new(crate::BuildOptions::new("p", 1)).unwrap();
            for x in &reference {
                b.start_row();
                b.add_feature("x", Value::Number(*x));
            }
            let p = b.finish().unwrap();
            let mut mon = DriftMonitor::new(&p, DriftConfig { min_window_events: 1, ..DriftConfig::default() }).unwrap();
            for x in &current {
                mon.observe([("x", Value::Number(*x))], []);
            }
            mon.evaluate(1);
            let s = &mon.report().unwrap().features[0].scores;
            let (ks, w) = exact_ks_and_wasserstein(&reference, &current);
            let (got, bound) = (s.ks.unwrap(), s.ks_bound.unwrap());
            proptest::prop_assert!(got <= ks + 1e-9 && ks <= got + bound + 1e-9, "ks {ks} vs {got} + {bound}");
            let FeatureProfile::Numeric(np) = &p.features["x"] else { unreachable!() };
            let std = if np.std > 0.0 { np.std } else { 1.0 };
            let (wn, wb) = (s.wasserstein_normalised.unwrap(), s.wasserstein_bound.unwrap());
            proptest::prop_assert!((w / std - wn).abs() <= wb + 1e-9, "w {} vs {wn} ± {wb}", w / std);
        }
    }

    #[test]
    fn config_is_validated() {
        let bad = DriftConfig {
            false_alarm_probability: 0.0,
            ..DriftConfig::default()
        };
        let s = Scenario::stationary();
        let p = s.profile("m", 1000, 1);
        let err = DriftMonitor::new(&p, bad).err().unwrap().to_string();
        assert!(err.contains("false_alarm_probability"), "{err}");
        let rules: DriftRulesConfig = serde_json::from_str(r#"{"models": {"fraud": {"cusum_k": 2.0}}}"#).unwrap();
        assert_eq!(rules.for_model("fraud").cusum_k, 2.0);
        assert_eq!(rules.for_model("other").cusum_k, 1.0);
        assert!(serde_json::from_str::<DriftRulesConfig>(r#"{"cusum": 1}"#).is_err());
    }
}
