//! Mergeable accumulators of labelled outcomes and the metrics they yield
//! (pure, no I/O).
//!
//! Every accumulator is a small sum that merges by addition, so a window is
//! the merge of its time buckets and a model is the merge of its segments.
//! Exact metrics (confusion-matrix metrics, log loss, Brier, the regression
//! errors) equal scikit-learn's up to floating-point rounding. AUC-ROC is
//! computed from a score histogram of [`DEFAULT_SCORE_BINS`] equal bins on
//! [0, 1]: pairs of a positive and a negative in the same bin count as ties,
//! so the error against the exact AUC is at most half the share of such
//! pairs, which [`BinaryMetrics::auc_error_bound`] reports with every value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use mlwatch_analyzer_core::sketch::DDSketch;

/// Score histogram resolution for AUC-ROC.
pub const DEFAULT_SCORE_BINS: u32 = 1000;

/// Smallest probability used in log loss (scikit-learn clips at the float
/// epsilon too).
const PROB_EPS: f64 = f64::EPSILON;

/// Binary classification outcomes with fractional weights. Realised
/// outcomes add weight 1 to the true class; the confidence-based estimate
/// (CBPE) adds `p` to the positive and `1 − p` to the negative class of the
/// same prediction, so one type serves both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryStats {
    pub tp: f64,
    pub fp: f64,
    pub tn: f64,
    pub fn_: f64,
    scored: f64,
    log_loss_sum: f64,
    brier_sum: f64,
    bins: u32,
    /// bin → [positive weight, negative weight].
    hist: BTreeMap<u32, [f64; 2]>,
}

impl Default for BinaryStats {
    fn default() -> Self {
        Self::new(DEFAULT_SCORE_BINS)
    }
}

/// Metrics of a [`BinaryStats`], as served by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinaryMetrics {
    pub n: f64,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// `None` without scores or without both classes.
    pub auc_roc: Option<f64>,
    /// Largest possible distance of `auc_roc` from the exact value.
    pub auc_error_bound: Option<f64>,
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    /// Share of actual positives.
    pub positive_rate: f64,
    /// Share of predicted positives.
    pub prediction_rate: f64,
    pub tp: f64,
    pub fp: f64,
    pub tn: f64,
    #[serde(rename = "fn")]
    pub fn_: f64,
}

/// AUC with its DeLong variance, from the histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AucEstimate {
    pub auc: f64,
    pub variance: f64,
    pub error_bound: f64,
    pub positives: f64,
    pub negatives: f64,
}

fn ratio(num: f64, den: f64) -> f64 {
    // scikit-learn's zero_division=0.
    if den > 0.0 { num / den } else { 0.0 }
}

impl BinaryStats {
    pub fn new(bins: u32) -> Self {
        Self {
            tp: 0.0,
            fp: 0.0,
            tn: 0.0,
            fn_: 0.0,
            scored: 0.0,
            log_loss_sum: 0.0,
            brier_sum: 0.0,
            bins: bins.max(1),
            hist: BTreeMap::new(),
        }
    }

    /// Adds one labelled outcome.
    pub fn add(&mut self, score: Option<f64>, predicted: bool, actual: bool) {
        let (w_pos, w_neg) = if actual { (1.0, 0.0) } else { (0.0, 1.0) };
        self.add_weighted(score, predicted, w_pos, w_neg);
    }

    /// Adds the expected outcome of a calibrated score `p`: weight `p` on
    /// the positive class and `1 − p` on the negative one (CBPE).
    pub fn add_expected(&mut self, score: f64, predicted: bool) {
        let p = score.clamp(0.0, 1.0);
        self.add_weighted(Some(p), predicted, p, 1.0 - p);
    }

    fn add_weighted(&mut self, score: Option<f64>, predicted: bool, w_pos: f64, w_neg: f64) {
        if predicted {
            self.tp += w_pos;
            self.fp += w_neg;
        } else {
            self.fn_ += w_pos;
            self.tn += w_neg;
        }
        let Some(s) = score.filter(|s| s.is_finite()) else {
            return;
        };
        let p = s.clamp(PROB_EPS, 1.0 - PROB_EPS);
        self.scored += w_pos + w_neg;
        self.log_loss_sum += -(w_pos * p.ln() + w_neg * (1.0 - p).ln());
        let s01 = s.clamp(0.0, 1.0);
        self.brier_sum += w_pos * (1.0 - s01).powi(2) + w_neg * s01.powi(2);
        let bin = ((s01 * f64::from(self.bins)) as u32).min(self.bins - 1);
        let cell = self.hist.entry(bin).or_insert([0.0, 0.0]);
        cell[0] += w_pos;
        cell[1] += w_neg;
    }

    /// [`BinaryStats::merge`] of each of `others` in turn, with the same
    /// result to the bit: the histogram cells of all are gathered, sorted
    /// by bin (stable, so equal bins add up in the same order) and folded,
    /// and the map is built once from sorted cells, instead of one map
    /// insertion per cell per part (a window of many buckets).
    pub fn merge_all(&mut self, others: &[&Self]) {
        if others.iter().any(|o| o.bins != self.bins) {
            for o in others {
                self.merge(o);
            }
            return;
        }
        // (bin, cell, whether it is one of this accumulator's own cells).
        let mut cells: Vec<(u32, [f64; 2], bool)> = std::mem::take(&mut self.hist)
            .into_iter()
            .map(|(b, c)| (b, c, true))
            .collect();
        for o in others {
            self.tp += o.tp;
            self.fp += o.fp;
            self.tn += o.tn;
            self.fn_ += o.fn_;
            self.scored += o.scored;
            self.log_loss_sum += o.log_loss_sum;
            self.brier_sum += o.brier_sum;
            cells.extend(o.hist.iter().map(|(b, c)| (*b, *c, false)));
        }
        cells.sort_by_key(|(b, _, _)| *b);
        let mut folded: Vec<(u32, [f64; 2])> = Vec::with_capacity(cells.len());
        for (bin, [p, n], own) in cells {
            match folded.last_mut() {
                Some((last, cell)) if *last == bin => {
                    cell[0] += p;
                    cell[1] += n;
                }
                _ if own => folded.push((bin, [p, n])),
                // As `merge` does: a cell new to this one starts from zero.
                _ => folded.push((bin, [0.0 + p, 0.0 + n])),
            }
        }
        self.hist = folded.into_iter().collect();
    }

    pub fn merge(&mut self, other: &Self) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.tn += other.tn;
        self.fn_ += other.fn_;
        self.scored += other.scored;
        self.log_loss_sum += other.log_loss_sum;
        self.brier_sum += other.brier_sum;
        if other.bins == self.bins {
            for (bin, [p, n]) in &other.hist {
                let cell = self.hist.entry(*bin).or_insert([0.0, 0.0]);
                cell[0] += p;
                cell[1] += n;
            }
        } else {
            // Rebin through the bin centres (only between differently
            // configured accumulators, which the tracker never mixes).
            for (bin, [p, n]) in &other.hist {
                let centre = (f64::from(*bin) + 0.5) / f64::from(other.bins);
                let b = ((centre * f64::from(self.bins)) as u32).min(self.bins - 1);
                let cell = self.hist.entry(b).or_insert([0.0, 0.0]);
                cell[0] += p;
                cell[1] += n;
            }
        }
    }

    pub fn count(&self) -> f64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Correct predictions (for the accuracy test).
    pub fn correct(&self) -> f64 {
        self.tp + self.tn
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.count())
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> f64 {
        ratio(2.0 * self.tp, 2.0 * self.tp + self.fp + self.fn_)
    }

    /// AUC-ROC and its DeLong variance from the histogram. Positives and
    /// negatives in one bin share a placement value with ties counted ½.
    pub fn auc(&self) -> Option<AucEstimate> {
        let (pos, neg) = self.hist.values().fold((0.0, 0.0), |(p, n), [cp, cn]| (p + cp, n + cn));
        if pos <= 0.0 || neg <= 0.0 {
            return None;
        }
        let mut neg_below = 0.0;
        let mut pos_above = pos;
        let mut sum = 0.0;
        let mut tied = 0.0;
        // (weight, placement) of positives (V10) and negatives (V01).
        let mut v10 = Vec::with_capacity(self.hist.len());
        let mut v01 = Vec::with_capacity(self.hist.len());
        for [cp, cn] in self.hist.values() {
            pos_above -= cp;
            sum += cp * (neg_below + 0.5 * cn);
            tied += cp * cn;
            if *cp > 0.0 {
                v10.push((*cp, (neg_below + 0.5 * cn) / neg));
            }
            if *cn > 0.0 {
                v01.push((*cn, (pos_above + 0.5 * cp) / pos));
            }
            neg_below += cn;
        }
        let auc = sum / (pos * neg);
        let spread = |v: &[(f64, f64)], total: f64| {
            if total <= 1.0 {
                return 0.0;
            }
            v.iter().map(|(w, x)| w * (x - auc).powi(2)).sum::<f64>() / (total - 1.0)
        };
        let variance = spread(&v10, pos) / pos + spread(&v01, neg) / neg;
        Some(AucEstimate {
            auc,
            variance,
            error_bound: 0.5 * tied / (pos * neg),
            positives: pos,
            negatives: neg,
        })
    }

    pub fn metrics(&self) -> BinaryMetrics {
        let n = self.count();
        let auc = self.auc();
        BinaryMetrics {
            n,
            accuracy: self.accuracy(),
            precision: self.precision(),
            recall: self.recall(),
            f1: self.f1(),
            auc_roc: auc.map(|a| a.auc),
            auc_error_bound: auc.map(|a| a.error_bound),
            log_loss: (self.scored > 0.0).then(|| self.log_loss_sum / self.scored),
            brier: (self.scored > 0.0).then(|| self.brier_sum / self.scored),
            positive_rate: ratio(self.tp + self.fn_, n),
            prediction_rate: ratio(self.tp + self.fp, n),
            tp: self.tp,
            fp: self.fp,
            tn: self.tn,
            fn_: self.fn_,
        }
    }
}

/// Multiclass outcomes: the confusion matrix as (actual, predicted) counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MulticlassStats {
    /// (actual, predicted) → count; a list of pairs in JSON.
    #[serde(with = "mlwatch_analyzer_core::series::pairs")]
    cells: BTreeMap<(String, String), u64>,
    /// Sum over predictions of the score of the predicted class (CBPE).
    expected_correct: f64,
    scored: u64,
}

/// Metrics of a [`MulticlassStats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MulticlassMetrics {
    pub n: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    pub classes: usize,
}

impl MulticlassStats {
    pub fn add(&mut self, predicted: &str, actual: &str) {
        *self
            .cells
            .entry((actual.to_string(), predicted.to_string()))
            .or_insert(0) += 1;
    }

    /// Adds the confidence of an unlabelled prediction (CBPE): the expected
    /// accuracy is the mean score of the predicted class.
    pub fn add_expected(&mut self, predicted_score: f64) {
        self.expected_correct += predicted_score.clamp(0.0, 1.0);
        self.scored += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        for (k, c) in &other.cells {
            *self.cells.entry(k.clone()).or_insert(0) += c;
        }
        self.expected_correct += other.expected_correct;
        self.scored += other.scored;
    }

    pub fn count(&self) -> u64 {
        self.cells.values().sum()
    }

    /// Correct and wrong predictions as a binary accumulator (TP = correct,
    /// FP = wrong), so accuracy tests apply unchanged.
    pub fn correctness(&self) -> BinaryStats {
        let mut b = BinaryStats::new(1);
        for ((a, p), c) in &self.cells {
            if a == p {
                b.tp += *c as f64;
            } else {
                b.fp += *c as f64;
            }
        }
        b
    }

    /// Expected accuracy of the unlabelled predictions seen (CBPE).
    pub fn expected_accuracy(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.expected_correct / self.scored as f64)
    }

    /// Accuracy, and F1 averaged over the union of true and predicted
    /// classes (macro) or weighted by true support, as scikit-learn does.
    pub fn metrics(&self) -> MulticlassMetrics {
        let mut tp: BTreeMap<&str, u64> = BTreeMap::new();
        let mut support: BTreeMap<&str, u64> = BTreeMap::new();
        let mut predicted: BTreeMap<&str, u64> = BTreeMap::new();
        let mut n = 0;
        for ((a, p), c) in &self.cells {
            n += c;
            *support.entry(a).or_insert(0) += c;
            *predicted.entry(p).or_insert(0) += c;
            tp.entry(a).or_insert(0);
            tp.entry(p).or_insert(0);
            if a == p {
                *tp.entry(a).or_insert(0) += c;
            }
        }
        let mut macro_sum = 0.0;
        let mut weighted = 0.0;
        for (class, t) in &tp {
            let s = support.get(class).copied().unwrap_or(0);
            let pr = predicted.get(class).copied().unwrap_or(0);
            let f1 = ratio(2.0 * *t as f64, (s + pr) as f64);
            macro_sum += f1;
            weighted += f1 * s as f64;
        }
        let correct: u64 = tp.values().sum();
        MulticlassMetrics {
            n,
            accuracy: ratio(correct as f64, n as f64),
            macro_f1: ratio(macro_sum, tp.len() as f64),
            weighted_f1: ratio(weighted, n as f64),
            classes: tp.len(),
        }
    }
}

/// Regression outcomes: error sums and a Welford summary of the truth.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionStats {
    n: u64,
    abs_sum: f64,
    sq_sum: f64,
    ape_sum: f64,
    mean_y: f64,
    m2_y: f64,
}

/// Metrics of a [`RegressionStats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionMetrics {
    pub n: u64,
    pub mae: f64,
    pub rmse: f64,
    pub mape: f64,
    pub r2: f64,
}

impl RegressionStats {
    pub fn add(&mut self, predicted: f64, actual: f64) {
        let e = actual - predicted;
        self.n += 1;
        self.abs_sum += e.abs();
        self.sq_sum += e * e;
        self.ape_sum += e.abs() / actual.abs().max(f64::EPSILON);
        let d = actual - self.mean_y;
        self.mean_y += d / self.n as f64;
        self.m2_y += d * (actual - self.mean_y);
    }

    pub fn merge(&mut self, other: &Self) {
        if other.n == 0 {
            return;
        }
        let n = self.n + other.n;
        let d = other.mean_y - self.mean_y;
        self.m2_y += other.m2_y + d * d * (self.n as f64 * other.n as f64) / n as f64;
        self.mean_y += d * other.n as f64 / n as f64;
        self.n = n;
        self.abs_sum += other.abs_sum;
        self.sq_sum += other.sq_sum;
        self.ape_sum += other.ape_sum;
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn metrics(&self) -> RegressionMetrics {
        let n = self.n as f64;
        // scikit-learn's force_finite: a constant truth gives 1 (perfect) or 0.
        let r2 = if self.m2_y > 0.0 {
            1.0 - self.sq_sum / self.m2_y
        } else if self.sq_sum == 0.0 {
            1.0
        } else {
            0.0
        };
        RegressionMetrics {
            n: self.n,
            mae: ratio(self.abs_sum, n),
            rmse: ratio(self.sq_sum, n).sqrt(),
            mape: ratio(self.ape_sum, n),
            r2,
        }
    }
}

/// Distribution of the label lag (label time − prediction time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagStats {
    sketch: DDSketch,
    sum_secs: f64,
    min_secs: Option<f64>,
    max_secs: Option<f64>,
}

/// Summary of a [`LagStats`]: quantiles within the sketch's 0.5 % relative
/// error, the rest exact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagSummary {
    pub count: u64,
    pub mean_secs: f64,
    pub min_secs: f64,
    pub max_secs: f64,
    pub p50_secs: f64,
    pub p90_secs: f64,
    pub p99_secs: f64,
}

impl LagStats {
    /// Adds one lag; a label older than its prediction counts as lag 0.
    pub fn add(&mut self, lag_ms: i64) {
        let s = lag_ms.max(0) as f64 / 1000.0;
        self.sketch.add(s);
        self.sum_secs += s;
        self.min_secs = Some(self.min_secs.map_or(s, |m| m.min(s)));
        self.max_secs = Some(self.max_secs.map_or(s, |m| m.max(s)));
    }

    pub fn merge(&mut self, other: &Self) {
        self.sketch.merge(&other.sketch);
        self.sum_secs += other.sum_secs;
        self.min_secs = match (self.min_secs, other.min_secs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_secs = match (self.max_secs, other.max_secs) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    pub fn summary(&self) -> Option<LagSummary> {
        let count = self.sketch.count();
        let q = |x| self.sketch.quantile(x).unwrap_or(0.0);
        (count > 0).then(|| LagSummary {
            count,
            mean_secs: self.sum_secs / count as f64,
            min_secs: self.min_secs.unwrap_or(0.0),
            max_secs: self.max_secs.unwrap_or(0.0),
            p50_secs: q(0.5),
            p90_secs: q(0.9),
            p99_secs: q(0.99),
        })
    }
}

/// Everything one time bucket of one series knows: predictions seen,
/// labelled outcomes, and the confidence-based estimate of the predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub predictions: u64,
    pub labelled: u64,
    pub binary: BinaryStats,
    /// CBPE: expected confusion matrix and score histogram of every
    /// prediction with a score, labelled or not.
    pub estimated: BinaryStats,
    pub multiclass: MulticlassStats,
    pub regression: RegressionStats,
    pub lag: LagStats,
}

impl Evaluation {
    pub fn merge(&mut self, other: &Self) {
        self.predictions += other.predictions;
        self.labelled += other.labelled;
        self.binary.merge(&other.binary);
        self.estimated.merge(&other.estimated);
        self.multiclass.merge(&other.multiclass);
        self.regression.merge(&other.regression);
        self.lag.merge(&other.lag);
    }

    /// [`Evaluation::merge`] of each of `others` in turn (the same result),
    /// with the score histograms summed in one pass each.
    pub fn merge_all(&mut self, others: &[&Self]) {
        let binary: Vec<&BinaryStats> = others.iter().map(|o| &o.binary).collect();
        self.binary.merge_all(&binary);
        let estimated: Vec<&BinaryStats> = others.iter().map(|o| &o.estimated).collect();
        self.estimated.merge_all(&estimated);
        for o in others {
            self.predictions += o.predictions;
            self.labelled += o.labelled;
            self.multiclass.merge(&o.multiclass);
            self.regression.merge(&o.regression);
            self.lag.merge(&o.lag);
        }
    }

    /// Share of predictions that got a label (`None` before any prediction).
    pub fn coverage(&self) -> Option<f64> {
        (self.predictions > 0).then(|| (self.labelled as f64 / self.predictions as f64).min(1.0))
    }
}

/// Upper tail of the standard normal distribution, P(Z > z), to about
/// 1e-14 relative error: a series for erf when |z|/√2 < 2, Lentz's
/// continued fraction for erfc beyond.
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.0 {
        // erf(x) = 2/√π · e^{−x²} · Σ 2ⁿ x^{2n+1} / (1·3·…·(2n+1)), all terms positive.
        let mut term = x;
        let mut sum = x;
        let mut k = 1.0;
        while term > sum * 1e-17 {
            term *= 2.0 * x * x / (2.0 * k + 1.0);
            sum += term;
            k += 1.0;
        }
        return 1.0 - 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp() * sum;
    }
    // erfc(x) = e^{−x²}/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))).
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for k in 1..300 {
        let a = f64::from(k) * 0.5;
        d = x + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = x + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (std::f64::consts::PI.sqrt() * f)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    proptest! {
        /// Merging many at once gives exactly what merging one by one
        /// gives, cells and sums to the bit.
        #[test]
        fn merge_all_equals_merging_one_by_one(
            parts in proptest::collection::vec(
                proptest::collection::vec(
                    (proptest::option::of(0.0..1.0f64), any::<bool>(), any::<bool>(), 0.0..1.0f64),
                    0..40,
                ),
                0..8,
            ),
            own in proptest::collection::vec((0.0..1.0f64, any::<bool>()), 0..10),
        ) {
            let empty = || Evaluation {
                binary: BinaryStats::new(50),
                estimated: BinaryStats::new(50),
                ..Default::default()
            };
            let parts: Vec<Evaluation> = parts
                .iter()
                .map(|outcomes| {
                    let mut e = empty();
                    for (score, predicted, actual, expected) in outcomes {
                        e.labelled += 1;
                        e.predictions += 1;
                        e.binary.add(*score, *predicted, *actual);
                        e.estimated.add_expected(*expected, *predicted);
                    }
                    e
                })
                .collect();
            let mut start = empty();
            for (x, predicted) in own {
                start.estimated.add_expected(x, predicted);
            }
            let mut one_by_one = start.clone();
            for p in &parts {
                one_by_one.merge(p);
            }
            let mut at_once = start;
            at_once.merge_all(&parts.iter().collect::<Vec<_>>());
            prop_assert_eq!(format!("{one_by_one:?}"), format!("{at_once:?}"));
        }
    }

    pub(crate) fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/accuracy/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture json")
    }

    pub(crate) fn floats(v: &Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }

    fn close(name: &str, got: f64, want: f64, tol: f64) {
        assert!(
            (got - want).abs() <= tol * want.abs().max(1.0),
            "{name}: got {got}, scikit-learn {want} (tolerance {tol})"
        );
    }

    pub(crate) fn binary_from(case: &Value) -> BinaryStats {
        let y = floats(&case["y_true"]);
        let s = floats(&case["score"]);
        let p = floats(&case["y_pred"]);
        let mut b = BinaryStats::default();
        for i in 0..y.len() {
            b.add(Some(s[i]), p[i] == 1.0, y[i] == 1.0);
        }
        b
    }

    #[test]
    fn binary_metrics_equal_scikit_learn() {
        let f = fixture("binary.json");
        for case in ["baseline", "current", "tiny"] {
            let b = binary_from(&f[case]);
            let e = &f[case]["expected"];
            let m = b.metrics();
            let exact = 1e-12;
            close("accuracy", m.accuracy, e["accuracy"].as_f64().unwrap(), exact);
            close("precision", m.precision, e["precision"].as_f64().unwrap(), exact);
            close("recall", m.recall, e["recall"].as_f64().unwrap(), exact);
            close("f1", m.f1, e["f1"].as_f64().unwrap(), exact);
            close("log_loss", m.log_loss.unwrap(), e["log_loss"].as_f64().unwrap(), 1e-10);
            close("brier", m.brier.unwrap(), e["brier"].as_f64().unwrap(), 1e-10);
            // AUC from the score histogram: within the bound it reports,
            // and the bound itself is small at 1000 bins.
            let auc = m.auc_roc.unwrap();
            let bound = m.auc_error_bound.unwrap();
            let want = e["auc_roc"].as_f64().unwrap();
            assert!(
                (auc - want).abs() <= bound + 1e-12,
                "{case} auc {auc} vs {want} bound {bound}"
            );
            if case != "tiny" {
                assert!(bound < 2e-3, "{case} bound {bound}");
                close(
                    "positive_rate",
                    m.positive_rate,
                    e["positive_rate"].as_f64().unwrap(),
                    exact,
                );
                close(
                    "prediction_rate",
                    m.prediction_rate,
                    e["prediction_rate"].as_f64().unwrap(),
                    exact,
                );
                for (k, v) in [("tp", m.tp), ("fp", m.fp), ("tn", m.tn), ("fn", m.fn_)] {
                    assert_eq!(v, e[k].as_f64().unwrap(), "{case} {k}");
                }
                // DeLong variance from binned placements: within 2 %.
                let a = b.auc().unwrap();
                let rel = (a.variance - e["delong_var"].as_f64().unwrap()).abs() / e["delong_var"].as_f64().unwrap();
                assert!(rel < 0.02, "{case} delong variance off by {rel}");
            } else {
                // Ties inside one bin are exact ties: the AUC is exact.
                close("auc tiny", auc, want, 1e-12);
            }
        }
    }

    #[test]
    fn multiclass_metrics_equal_scikit_learn() {
        let f = fixture("multiclass.json");
        let mut m = MulticlassStats::default();
        let t = f["y_true"].as_array().unwrap();
        let p = f["y_pred"].as_array().unwrap();
        for (a, b) in t.iter().zip(p) {
            m.add(b.as_str().unwrap(), a.as_str().unwrap());
        }
        let r = m.metrics();
        let e = &f["expected"];
        close("accuracy", r.accuracy, e["accuracy"].as_f64().unwrap(), 1e-12);
        close("macro_f1", r.macro_f1, e["macro_f1"].as_f64().unwrap(), 1e-12);
        close("weighted_f1", r.weighted_f1, e["weighted_f1"].as_f64().unwrap(), 1e-12);
        assert_eq!(r.classes, 4);
    }

    #[test]
    fn regression_metrics_equal_scikit_learn() {
        let f = fixture("regression.json");
        let t = floats(&f["y_true"]);
        let p = floats(&f["y_pred"]);
        // Two halves merged = one pass: the merge is exact up to rounding.
        let (mut a, mut b) = (RegressionStats::default(), RegressionStats::default());
        for i in 0..t.len() {
            if i % 3 == 0 { &mut a } else { &mut b }.add(p[i], t[i]);
        }
        a.merge(&b);
        let r = a.metrics();
        let e = &f["expected"];
        for (k, v) in [("mae", r.mae), ("rmse", r.rmse), ("mape", r.mape), ("r2", r.r2)] {
            close(k, v, e[k].as_f64().unwrap(), 1e-10);
        }
    }

    #[test]
    fn lag_distribution_matches_numpy() {
        let f = fixture("lag_trend.json");
        let mut l = LagStats::default();
        for v in f["lag_ms"].as_array().unwrap() {
            l.add(v.as_i64().unwrap());
        }
        let s = l.summary().unwrap();
        let e = &f["lag_expected"];
        close("mean", s.mean_secs, e["mean_secs"].as_f64().unwrap(), 1e-12);
        close("min", s.min_secs, e["min_secs"].as_f64().unwrap(), 1e-12);
        close("max", s.max_secs, e["max_secs"].as_f64().unwrap(), 1e-12);
        for (k, v) in [
            ("p50_secs", s.p50_secs),
            ("p90_secs", s.p90_secs),
            ("p99_secs", s.p99_secs),
        ] {
            let want = e[k].as_f64().unwrap();
            assert!((v - want).abs() <= 0.005 * want, "{k}: {v} vs numpy {want}");
        }
    }

    #[test]
    fn normal_tail_matches_scipy() {
        let f = fixture("binary.json");
        for pair in f["normal_sf"].as_array().unwrap() {
            let z = pair[0].as_f64().unwrap();
            let want = pair[1].as_f64().unwrap();
            let got = normal_sf(z);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1e-300),
                "sf({z}) = {got}, scipy {want}"
            );
        }
    }

    #[test]
    fn cbpe_estimate_matches_formula_and_tracks_realised() {
        let f = fixture("binary.json");
        let c = &f["cbpe"];
        let s = floats(&c["score"]);
        let p = floats(&c["y_pred"]);
        let y = floats(&c["y_true"]);
        let mut est = BinaryStats::default();
        let mut real = BinaryStats::default();
        for i in 0..s.len() {
            est.add_expected(s[i], p[i] == 1.0);
            real.add(Some(s[i]), p[i] == 1.0, y[i] == 1.0);
        }
        let (e, r) = (est.metrics(), real.metrics());
        let want = &c["expected"];
        for (k, v) in [
            ("accuracy", e.accuracy),
            ("precision", e.precision),
            ("recall", e.recall),
            ("f1", e.f1),
        ] {
            close(k, v, want[k].as_f64().unwrap(), 1e-10);
        }
        // On calibrated scores the estimate is near the realised value.
        assert!((e.accuracy - r.accuracy).abs() < 0.02);
        assert!((e.auc_roc.unwrap() - r.auc_roc.unwrap()).abs() < 0.03);
    }

    proptest! {
        #[test]
        fn merge_of_parts_equals_whole(xs in proptest::collection::vec((0.0f64..1.0, any::<bool>(), any::<bool>()), 1..200), cut in 0usize..200) {
            let cut = cut.min(xs.len());
            let (mut a, mut b, mut whole) = (BinaryStats::default(), BinaryStats::default(), BinaryStats::default());
            for (i, (s, p, y)) in xs.iter().enumerate() {
                whole.add(Some(*s), *p, *y);
                if i < cut { &mut a } else { &mut b }.add(Some(*s), *p, *y);
            }
            a.merge(&b);
            let (ma, mw) = (a.metrics(), whole.metrics());
            prop_assert_eq!(ma.tp, mw.tp);
            prop_assert_eq!(ma.fn_, mw.fn_);
            prop_assert_eq!(ma.auc_roc, mw.auc_roc);
            prop_assert!((ma.log_loss.unwrap() - mw.log_loss.unwrap()).abs() < 1e-9);
        }

        #[test]
        fn auc_stays_in_unit_interval(xs in proptest::collection::vec((0.0f64..1.0, any::<bool>()), 2..100)) {
            let mut b = BinaryStats::default();
            for (s, y) in &xs { b.add(Some(*s), *s >= 0.5, *y); }
            if let Some(a) = b.auc() {
                prop_assert!((0.0..=1.0).contains(&a.auc));
                prop_assert!(a.variance >= 0.0);
            }
        }
    }
}
