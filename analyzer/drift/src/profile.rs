//! Reference profiles: the compact, versioned summary of a training set (or
//! a reference window) that drift is measured against.
//!
//! A numeric feature keeps the distinct reference quantiles at `k / fine_bins`
//! as bin edges (bins are `[e(i-1), e(i))`, as `numpy.searchsorted(edges, x,
//! side="right")`), the reference count and mean of each bin, and moments and
//! range; the coarse edges at `k / coarse_bins` (PSI, chi-square) are a subset
//! of the fine ones. A categorical feature keeps a frequency table of its
//! `max_categories` most frequent values and the count of the rest. No raw
//! rows are stored: a 25-feature profile is a few tens of kilobytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::DriftError;

/// Format tag written into every profile.
pub const FORMAT: &str = "mlwatch.profile.v1";

/// A reference profile of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Model the profile belongs to.
    pub model: String,
    /// Profile version; a model has one active version at a time.
    pub version: u32,
    /// The model version this profile is the reference of, when it is
    /// specific to one (a canary judged against its own reference); absent:
    /// the reference of every version of the model without its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// When the profile was built, epoch milliseconds.
    pub created_at_ms: i64,
    /// Where the data came from (file name, window, model version).
    pub source: String,
    /// Rows (events) summarised.
    pub rows: u64,
    /// Input features by name.
    pub features: BTreeMap<String, FeatureProfile>,
    /// Prediction outputs by name: `score`, `label`, `value`, `scores.<class>`.
    #[serde(default)]
    pub predictions: BTreeMap<String, FeatureProfile>,
}

/// The reference summary of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeatureProfile {
    Numeric(NumericProfile),
    Categorical(CategoricalProfile),
}

impl FeatureProfile {
    /// Rows where the feature was missing (null or absent).
    pub fn missing(&self) -> u64 {
        match self {
            Self::Numeric(n) => n.missing,
            Self::Categorical(c) => c.missing,
        }
    }

    /// Rows with a usable value.
    pub fn count(&self) -> u64 {
        match self {
            Self::Numeric(n) => n.count,
            Self::Categorical(c) => c.count,
        }
    }
}

/// Reference summary of a numeric feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericProfile {
    /// Finite values seen.
    pub count: u64,
    /// Rows where the value was null or absent.
    pub missing: u64,
    pub mean: f64,
    /// Population standard deviation (ddof = 0).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// Fine bin edges: the distinct reference quantiles at `k / fine_bins`
    /// (numpy's default linear interpolation), strictly increasing.
    pub edges: Vec<f64>,
    /// Coarse bin edges (quantiles at `k / coarse_bins`), a subset of `edges`.
    pub coarse_edges: Vec<f64>,
    /// Reference count per fine bin (`edges.len() + 1` entries).
    pub counts: Vec<u64>,
    /// Mean of the reference values in each fine bin (0 when empty).
    pub bin_means: Vec<f64>,
    /// Wasserstein-1 distance between the reference and its binned form
    /// (each value moved to its bin mean): the reference's share of the
    /// Wasserstein error bound.
    pub binning_error: f64,
}

/// Reference summary of a categorical (string or boolean) feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalProfile {
    /// Values seen.
    pub count: u64,
    /// Rows where the value was null or absent.
    pub missing: u64,
    /// Count of each kept category (the most frequent ones).
    pub categories: BTreeMap<String, u64>,
    /// Values of categories that were not kept (over `max_categories`).
    pub other: u64,
}

impl Profile {
    /// Parses and validates a profile from JSON.
    pub fn from_json(text: &str) -> Result<Self, DriftError> {
        let profile: Profile =
            serde_json::from_str(text).map_err(|e| DriftError::InvalidProfile(format!("json: {e}")))?;
        profile.validate()?;
        Ok(profile)
    }

    /// Serialises the profile as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the invariants the monitor relies on.
    pub fn validate(&self) -> Result<(), DriftError> {
        let bad = |name: &str, why: String| Err(DriftError::InvalidProfile(format!("{name}: {why}")));
        if self.format != FORMAT {
            return bad("format", format!("{:?} is not {FORMAT:?}", self.format));
        }
        if self.model.is_empty() {
            return bad("model", "is empty".into());
        }
        for (name, f) in self.features.iter().chain(&self.predictions) {
            let FeatureProfile::Numeric(n) = f else { continue };
            if n.edges.iter().any(|e| !e.is_finite()) || n.edges.windows(2).any(|w| w[0] >= w[1]) {
                return bad(name, "edges are not finite and strictly increasing".into());
            }
            if n.counts.len() != n.edges.len() + 1 || n.bin_means.len() != n.counts.len() {
                return bad(
                    name,
                    format!(
                        "{} edges need {} counts and bin means, got {} and {}",
                        n.edges.len(),
                        n.edges.len() + 1,
                        n.counts.len(),
                        n.bin_means.len()
                    ),
                );
            }
            if let Some(e) = n.coarse_edges.iter().find(|e| !n.edges.contains(e)) {
                return bad(name, format!("coarse edge {e} is not a fine edge"));
            }
            if n.counts.iter().sum::<u64>() != n.count {
                return bad(name, format!("bin counts do not add up to count {}", n.count));
            }
            if n.bin_means.iter().any(|m| !m.is_finite()) || !(n.binning_error >= 0.0 && n.min <= n.max) {
                return bad(
                    name,
                    format!(
                        "bin means, binning error {} or range [{}, {}] are not usable",
                        n.binning_error, n.min, n.max
                    ),
                );
            }
            if !(n.std.is_finite() && n.std >= 0.0 && n.mean.is_finite()) {
                return bad(name, format!("mean {} / std {} are not usable", n.mean, n.std));
            }
        }
        Ok(())
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.features
            .iter()
            .chain(&self.predictions)
            .map(|(k, f)| {
                k.len()
                    + match f {
                        FeatureProfile::Numeric(n) => {
                            8 * (n.edges.len() + n.coarse_edges.len() + n.counts.len() + n.bin_means.len())
                        }
                        FeatureProfile::Categorical(c) => c.categories.keys().map(|k| k.len() + 48).sum(),
                    }
            })
            .sum()
    }
}

/// One input value, borrowed from an event or a file row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Number(f64),
    Text(&'a str),
    Bool(bool),
    Missing,
}

impl<'a> Value<'a> {
    /// The value as a category name, if it is one.
    pub fn category(&self) -> Option<&'a str> {
        match *self {
            Value::Text(t) => Some(t),
            Value::Bool(true) => Some("true"),
            Value::Bool(false) => Some("false"),
            _ => None,
        }
    }

    /// Reads a JSON value: numbers, strings and booleans; null is missing;
    /// arrays and objects are `None` (not a feature value).
    pub fn from_json(v: &'a serde_json::Value) -> Option<Self> {
        Some(match v {
            serde_json::Value::Null => Value::Missing,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64()?),
            serde_json::Value::String(s) => Value::Text(s),
            _ => return None,
        })
    }

    /// Reads a CSV cell: empty, `NA`, `NaN`, `null`, `None` are missing;
    /// anything that parses as a number is a number; the rest is text.
    pub fn from_cell(cell: &'a str) -> Self {
        let t = cell.trim();
        match t {
            "" | "NA" | "N/A" | "NaN" | "nan" | "null" | "NULL" | "None" => Value::Missing,
            _ => t.parse::<f64>().map(Value::Number).unwrap_or(Value::Text(t)),
        }
    }
}

/// How a profile is built.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub model: String,
    pub version: u32,
    pub source: String,
    pub created_at_ms: i64,
    /// Fine bins (KS, JS, Wasserstein, plots); a multiple of `coarse_bins`.
    pub fine_bins: usize,
    /// Coarse bins (PSI and the chi-square drift test).
    pub coarse_bins: usize,
    /// Categories kept per categorical feature.
    pub max_categories: usize,
    /// Columns forced to be categorical even when all values are numbers.
    pub categorical: BTreeSet<String>,
}

impl BuildOptions {
    pub fn new(model: impl Into<String>, version: u32) -> Self {
        Self {
            model: model.into(),
            version,
            source: String::new(),
            created_at_ms: 0,
            fine_bins: 100,
            coarse_bins: 10,
            max_categories: 200,
            categorical: BTreeSet::new(),
        }
    }
}

#[derive(Default)]
struct Column {
    numbers: Vec<f64>,
    texts: HashMap<String, u64>,
}

/// Accumulates rows and produces a [`Profile`]. Numeric columns are held in
/// memory until [`ProfileBuilder::finish`] (exact quantiles); this is an
/// offline step, the streaming monitor never keeps values.
pub struct ProfileBuilder {
    options: BuildOptions,
    rows: u64,
    features: HashMap<String, Column>,
    predictions: HashMap<String, Column>,
}

impl ProfileBuilder {
    pub fn new(options: BuildOptions) -> Result<Self, DriftError> {
        if options.coarse_bins < 2
            || options.fine_bins < options.coarse_bins
            || !options.fine_bins.is_multiple_of(options.coarse_bins)
        {
            return Err(DriftError::InvalidOptions(format!(
                "fine_bins {} must be a multiple of coarse_bins {} (at least 2)",
                options.fine_bins, options.coarse_bins
            )));
        }
        Ok(Self {
            options,
            rows: 0,
            features: HashMap::new(),
            predictions: HashMap::new(),
        })
    }

    /// Starts a new row; values added after it belong to it.
    pub fn start_row(&mut self) {
        self.rows += 1;
    }

    /// Adds one feature value of the current row.
    pub fn add_feature(&mut self, name: &str, value: Value<'_>) {
        add(&mut self.features, name, value);
    }

    /// Adds one prediction output of the current row (`score`, `label`, ...).
    pub fn add_prediction(&mut self, name: &str, value: Value<'_>) {
        add(&mut self.predictions, name, value);
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds an inference event as one row: its features and prediction
    /// outputs. This is how a profile is captured from a reference window
    /// or from a model version's first events.
    pub fn add_event(&mut self, event: &mlwatch_proto::v1::InferenceEvent) {
        self.start_row();
        for (name, v) in &event.features {
            self.add_feature(name, super::monitor::feature_value(v));
        }
        if let Some(p) = &event.prediction {
            for (name, v) in super::monitor::prediction_values(p) {
                self.add_prediction(&name, v);
            }
        }
    }

    /// Builds the profile.
    pub fn finish(self) -> Result<Profile, DriftError> {
        if self.rows == 0 {
            return Err(DriftError::InvalidInput("no rows to profile".into()));
        }
        let o = &self.options;
        let build = |cols: HashMap<String, Column>| -> BTreeMap<String, FeatureProfile> {
            cols.into_iter()
                .map(|(name, col)| {
                    let forced = o.categorical.contains(&name);
                    let f = summarise(col, self.rows, o, forced);
                    (name, f)
                })
                .collect()
        };
        let profile = Profile {
            format: FORMAT.into(),
            model: o.model.clone(),
            version: o.version,
            model_version: None,
            created_at_ms: o.created_at_ms,
            source: o.source.clone(),
            rows: self.rows,
            features: build(self.features),
            predictions: build(self.predictions),
        };
        profile.validate()?;
        Ok(profile)
    }
}

fn add(cols: &mut HashMap<String, Column>, name: &str, value: Value<'_>) {
    let col = match cols.get_mut(name) {
        Some(c) => c,
        None => cols.entry(name.to_string()).or_default(),
    };
    match value {
        Value::Number(x) if x.is_finite() => col.numbers.push(x),
        Value::Number(_) | Value::Missing => {}
        v => {
            if let Some(c) = v.category() {
                *col.texts.entry(c.to_string()).or_default() += 1;
            }
        }
    }
}

fn summarise(mut col: Column, rows: u64, o: &BuildOptions, forced_categorical: bool) -> FeatureProfile {
    if forced_categorical || !col.texts.is_empty() || col.numbers.is_empty() {
        for x in col.numbers.drain(..) {
            *col.texts.entry(format_number(x)).or_default() += 1;
        }
        let count: u64 = col.texts.values().sum();
        let mut all: Vec<(String, u64)> = col.texts.into_iter().collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let other = all.iter().skip(o.max_categories).map(|c| c.1).sum();
        all.truncate(o.max_categories);
        return FeatureProfile::Categorical(CategoricalProfile {
            count,
            missing: rows.saturating_sub(count),
            categories: all.into_iter().collect(),
            other,
        });
    }
    let mut xs = col.numbers;
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
    let quantiles = |bins: usize| -> Vec<f64> {
        let mut e: Vec<f64> = (1..bins)
            .map(|k| quantile_sorted(&xs, k as f64 / bins as f64))
            .collect();
        e.dedup();
        e
    };
    let edges = quantiles(o.fine_bins);
    let coarse_edges = quantiles(o.coarse_bins);
    let mut counts = vec![0u64; edges.len() + 1];
    let mut sums = vec![0f64; edges.len() + 1];
    let mut bin = 0;
    let mut bins_of = Vec::with_capacity(n);
    for &x in &xs {
        while bin < edges.len() && edges[bin] <= x {
            bin += 1;
        }
        counts[bin] += 1;
        sums[bin] += x;
        bins_of.push(bin);
    }
    let bin_means: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, c)| if *c > 0 { s / *c as f64 } else { 0.0 })
        .collect();
    let binning_error = xs
        .iter()
        .zip(&bins_of)
        .map(|(x, b)| (x - bin_means[*b]).abs())
        .sum::<f64>()
        / n as f64;
    FeatureProfile::Numeric(NumericProfile {
        count: n as u64,
        missing: rows.saturating_sub(n as u64),
        mean,
        std: var.sqrt(),
        min: xs[0],
        max: xs[n - 1],
        edges,
        coarse_edges,
        counts,
        bin_means,
        binning_error,
    })
}

/// numpy's default (linear) quantile of sorted values, with numpy's
/// rounding (`_lerp` interpolates from the nearer end), so edges match
/// `np.quantile` bit for bit.
pub fn quantile_sorted(xs: &[f64], q: f64) -> f64 {
    let h = (xs.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(xs.len() - 1);
    let (a, b, t) = (xs[lo], xs[hi], h - lo as f64);
    let diff = b - a;
    if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
}

/// How a number becomes a category name (integers without a trailing `.0`).
pub fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(values: &[f64]) -> NumericProfile {
        let mut b = ProfileBuilder::new(BuildOptions::new("m", 1)).unwrap();
        for &v in values {
            b.start_row();
            b.add_feature("x", Value::Number(v));
        }
        b.start_row();
        b.add_feature("x", Value::Missing);
        match b.finish().unwrap().features.remove("x").unwrap() {
            FeatureProfile::Numeric(n) => n,
            other => panic!("not numeric: {other:?}"),
        }
    }

    #[test]
    fn numeric_profile_bins_and_moments() {
        let xs: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let p = build(&xs);
        assert_eq!(p.count, 1000);
        assert_eq!(p.missing, 1);
        assert_eq!(p.edges.len(), 99);
        assert_eq!(p.coarse_edges.len(), 9);
        assert!((p.edges[0] - 9.99).abs() < 1e-9);
        assert_eq!(p.counts.iter().sum::<u64>(), 1000);
        assert!((p.mean - 499.5).abs() < 1e-9);
        assert!(p.coarse_edges.iter().all(|e| p.edges.contains(e)));
    }

    #[test]
    fn ties_collapse_edges() {
        let xs: Vec<f64> = (0..1000).map(|i| (i % 3) as f64).collect();
        let p = build(&xs);
        // Interpolated quantiles may fall between the ties, but only the
        // bins holding a tie value are occupied.
        assert!(p.edges.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(p.counts.iter().filter(|c| **c > 0).count(), 3);
        assert_eq!(p.counts.iter().sum::<u64>(), 1000);
    }

    #[test]
    fn categorical_keeps_top_categories() {
        let mut o = BuildOptions::new("m", 1);
        o.max_categories = 2;
        let mut b = ProfileBuilder::new(o).unwrap();
        for c in ["a", "a", "a", "b", "b", "c"] {
            b.start_row();
            b.add_feature("c", Value::Text(c));
        }
        let p = b.finish().unwrap();
        let FeatureProfile::Categorical(c) = &p.features["c"] else {
            panic!()
        };
        assert_eq!(c.categories.len(), 2);
        assert_eq!(c.other, 1);
        let back = Profile::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn profile_captured_from_events() {
        use mlwatch_proto::v1::{FeatureValue, InferenceEvent, Prediction, feature_value::Kind};
        let mut b = ProfileBuilder::new(BuildOptions::new("m", 2)).unwrap();
        for i in 0..10 {
            let mut e = InferenceEvent::default();
            e.features.insert(
                "x".into(),
                FeatureValue {
                    kind: Some(Kind::Number(i as f64)),
                },
            );
            e.features.insert(
                "flag".into(),
                FeatureValue {
                    kind: Some(Kind::Flag(i % 2 == 0)),
                },
            );
            e.prediction = Some(Prediction {
                label: Some("yes".into()),
                ..Default::default()
            });
            b.add_event(&e);
        }
        let p = b.finish().unwrap();
        assert_eq!(p.rows, 10);
        assert_eq!(p.features["x"].count(), 10);
        let FeatureProfile::Categorical(flag) = &p.features["flag"] else {
            panic!()
        };
        assert_eq!(flag.categories["true"], 5);
        assert_eq!(p.predictions["label"].count(), 10);
    }

    #[test]
    fn invalid_profiles_are_rejected_with_the_field() {
        let mut p = ProfileBuilder::new(BuildOptions::new("m", 1)).unwrap();
        p.start_row();
        p.add_feature("x", Value::Number(1.0));
        let mut prof = p.finish().unwrap();
        if let FeatureProfile::Numeric(n) = prof.features.get_mut("x").unwrap() {
            n.counts.push(3);
        }
        let err = prof.validate().unwrap_err().to_string();
        assert!(err.contains("x:"), "{err}");
        assert!(Profile::from_json("{").is_err());
    }
}
