//! Bounded metric cardinality: label values that come from clients (model
//! names, versions, endpoints) become series only up to a configured number
//! of distinct tuples; later new ones are folded into one overflow series
//! and counted, so 50,000 model names cannot grow `/metrics` or the
//! process without bound.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus::{IntCounterVec, Opts, Registry};

/// The label value of the series new tuples fold into once a cap is full.
pub const OVERFLOW: &str = "_overflow";

/// `mlwatch_metric_series_folded_total{label}`: observations whose label
/// values were folded into [`OVERFLOW`], by the capped label set.
pub fn folded_counter(registry: &Registry) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(
        Opts::new(
            "mlwatch_metric_series_folded_total",
            "Observations whose client-given label values were folded into the _overflow series (the cap on distinct values was reached), by label set",
        ),
        &["label"],
    )?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// What [`LabelCap::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted<'a, const N: usize> {
    pub values: [&'a str; N],
    /// The tuple was new beyond the cap: `values` are all [`OVERFLOW`].
    pub folded: bool,
}

/// Admits up to `max` distinct tuples of label values; a tuple seen before
/// keeps its own series, a new one beyond the cap becomes all-[`OVERFLOW`].
pub struct LabelCap {
    max: usize,
    name: &'static str,
    seen: Mutex<HashSet<Box<str>>>,
    folded: IntCounterVec,
}

impl LabelCap {
    /// `name` is the `label` value of the folded counter (e.g.
    /// `model_version`).
    pub fn new(max: usize, name: &'static str, folded: IntCounterVec) -> Self {
        Self {
            max,
            name,
            seen: Mutex::new(HashSet::new()),
            folded,
        }
    }

    /// The label values to use for `values`: themselves while they fit
    /// under the cap (or were admitted before), else all [`OVERFLOW`];
    /// `folded` says which.
    pub fn admit<'a, const N: usize>(&self, values: [&'a str; N]) -> Admitted<'a, N> {
        let key = values.join("\u{1f}");
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(key.as_str()) {
            return Admitted { values, folded: false };
        }
        if seen.len() < self.max {
            seen.insert(key.into_boxed_str());
            return Admitted { values, folded: false };
        }
        Admitted {
            values: [OVERFLOW; N],
            folded: true,
        }
    }

    /// Counts `n` observations folded into the overflow series.
    pub fn count_folded(&self, n: u64) {
        self.folded.with_label_values(&[self.name]).inc_by(n);
    }

    /// Distinct tuples admitted so far.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_tuples_beyond_the_cap_fold_and_are_counted_while_known_ones_keep_their_series() {
        let registry = Registry::new();
        let cap = LabelCap::new(2, "model_version", folded_counter(&registry).unwrap());
        assert_eq!(cap.admit(["a", "v1"]).values, ["a", "v1"]);
        assert_eq!(cap.admit(["b", "v1"]).values, ["b", "v1"]);
        let folded = cap.admit(["c", "v1"]);
        assert!(folded.folded);
        assert_eq!(folded.values, [OVERFLOW, OVERFLOW]);
        cap.count_folded(3);
        assert!(!cap.admit(["a", "v1"]).folded);
        assert!(cap.admit(["a", "v2"]).folded);
        cap.count_folded(2);
        assert_eq!(cap.len(), 2);
        let text = crate::admin::render(&registry);
        assert!(
            text.contains("mlwatch_metric_series_folded_total{label=\"model_version\"} 5"),
            "{text}"
        );
    }
}
