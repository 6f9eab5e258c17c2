//! Bounded history per series, without I/O: what the web UI draws over the
//! last hour, day and week (docs/ui.md).
//!
//! Each series (model, version, segment) keeps a table of named columns
//! (`p99_ms`, `accuracy`, `drift.amount.psi`, ...) sampled on the
//! partition's event clock every `step_secs` (default one minute) in a
//! fine ring (default 1440 rows: a day), and the mean of every
//! `coarse_every` fine rows (default 10) in a coarse ring (default 1008
//! rows: a week at ten minutes). Values are `f32` rounded to four
//! significant digits (what a chart can show), stored column by column;
//! a missing value is `NaN` in memory and `null` in JSON. The whole
//! history is part of the partition's checkpoint, so it survives restarts
//! and moves with the partition.
//!
//! The caller decides what to sample: [`PartitionHistory::due`] says
//! whether the clock passed the next step, [`PartitionHistory::record`]
//! takes one row per series.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `[history]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Keep a history per series (served by `GET /v1/models/{m}/history`).
    pub enabled: bool,
    /// Seconds of event time between two samples of the fine ring.
    pub step_secs: u64,
    /// Rows of the fine ring (1440 steps of 60 s: a day).
    pub fine_points: usize,
    /// Fine rows averaged into one coarse row (10: ten minutes).
    pub coarse_every: usize,
    /// Rows of the coarse ring (1008 rows of ten minutes: a week).
    pub coarse_points: usize,
    /// Most columns one series keeps (drift columns are added per feature;
    /// the rest are dropped and counted in `dropped_columns`).
    pub max_columns: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            step_secs: 60,
            fine_points: 1440,
            coarse_every: 10,
            coarse_points: 1008,
            max_columns: 96,
        }
    }
}

impl HistoryConfig {
    /// Checks the values the types cannot.
    pub fn validate(&self) -> Result<(), mlwatch_analyzer_core::Error> {
        let bad = |key: &str, reason: &str| {
            Err(mlwatch_analyzer_core::Error::Config {
                key: format!("history.{key}"),
                reason: reason.into(),
            })
        };
        if self.step_secs == 0 {
            return bad("step_secs", "must be at least 1");
        }
        if self.coarse_every == 0 || self.coarse_every > self.fine_points {
            return bad("coarse_every", "must be from 1 to fine_points");
        }
        if self.fine_points == 0 || self.coarse_points == 0 {
            return bad("fine_points", "fine_points and coarse_points must be at least 1");
        }
        Ok(())
    }

    fn step_ms(&self) -> i64 {
        i64::try_from(self.step_secs.max(1)).unwrap_or(60) * 1000
    }
}

/// Rounds to four significant digits (non-finite values become `NaN`).
pub fn round4(v: f64) -> f32 {
    if !v.is_finite() {
        return f32::NAN;
    }
    if v == 0.0 {
        return 0.0;
    }
    let magnitude = v.abs().log10().floor() as i32;
    let scale = 10f64.powi(3 - magnitude);
    ((v * scale).round() / scale) as f32
}

/// `NaN` ⇄ `null` in JSON.
mod nan_as_null {
    use super::*;

    pub fn serialize<S: Serializer>(v: &VecDeque<f32>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<f32>, D::Error> {
        let v: Vec<Option<f32>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }
}

/// One column of a series' table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(with = "nan_as_null")]
    fine: VecDeque<f32>,
    #[serde(with = "nan_as_null")]
    coarse: VecDeque<f32>,
}

/// Which ring of a column a range reads.
type Pick = fn(&Column) -> &VecDeque<f32>;

/// The history of one series.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesHistory {
    pub model: String,
    pub model_version: String,
    pub segment: String,
    /// Times (event time, ms) of the fine rows, oldest first.
    fine_t: VecDeque<i64>,
    /// Times of the coarse rows: the end of each averaged span.
    coarse_t: VecDeque<i64>,
    columns: Vec<Column>,
    /// Fine rows not yet averaged into a coarse row.
    #[serde(default)]
    pending: usize,
    /// Column values refused because `max_columns` was reached.
    #[serde(default)]
    pub dropped_columns: u64,
}

/// Which ring a range is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    Fine,
    Coarse,
}

/// A range of a series' history, as served.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRange {
    pub model: String,
    pub model_version: String,
    pub segment: String,
    pub resolution: Resolution,
    pub step_secs: u64,
    /// Event times of the rows (ms).
    pub t: Vec<i64>,
    /// Column name → one value per row (`null`: not measured then).
    pub columns: std::collections::BTreeMap<String, Vec<Option<f32>>>,
}

impl SeriesHistory {
    fn new(model: &str, model_version: &str, segment: &str) -> Self {
        Self {
            model: model.into(),
            model_version: model_version.into(),
            segment: segment.into(),
            ..Self::default()
        }
    }

    fn is(&self, model: &str, model_version: &str, segment: &str) -> bool {
        self.model == model && self.model_version == model_version && self.segment == segment
    }

    /// Rows in the fine ring.
    pub fn len(&self) -> usize {
        self.fine_t.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fine_t.is_empty()
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let rows = self.fine_t.capacity() * 8 + self.coarse_t.capacity() * 8;
        let cols: usize = self
            .columns
            .iter()
            .map(|c| std::mem::size_of::<Column>() + c.name.capacity() + (c.fine.capacity() + c.coarse.capacity()) * 4)
            .sum();
        rows + cols + self.model.capacity() + self.model_version.capacity() + self.segment.capacity()
    }

    fn column(&mut self, name: &str, max: usize) -> Option<&mut Column> {
        if let Some(i) = self.columns.iter().position(|c| c.name == name) {
            return Some(&mut self.columns[i]);
        }
        if self.columns.len() >= max {
            self.dropped_columns += 1;
            return None;
        }
        // A new column is padded with gaps to the rows before it.
        self.columns.push(Column {
            name: name.into(),
            fine: std::iter::repeat_n(f32::NAN, self.fine_t.len()).collect(),
            coarse: std::iter::repeat_n(f32::NAN, self.coarse_t.len()).collect(),
        });
        self.columns.last_mut()
    }

    /// Appends one fine row at `t_ms` (replacing the newest row when it has
    /// the same time); every fine row completes a coarse one after
    /// `coarse_every` rows.
    fn push(&mut self, config: &HistoryConfig, t_ms: i64, values: &[(String, f64)]) {
        if self.fine_t.back().is_some_and(|&last| last >= t_ms) {
            return; // the clock never goes back; a repeat is ignored
        }
        // Exact capacities: a ring never grows past its bound plus the row
        // pushed before the oldest is dropped.
        reserve(&mut self.fine_t, config.fine_points + 1);
        self.fine_t.push_back(t_ms);
        for c in &mut self.columns {
            reserve(&mut c.fine, config.fine_points + 1);
            c.fine.push_back(f32::NAN);
        }
        for (name, v) in values {
            if let Some(c) = self.column(name, config.max_columns) {
                *c.fine.back_mut().expect("a row was pushed") = round4(*v);
            }
        }
        if self.fine_t.len() > config.fine_points {
            self.fine_t.pop_front();
            for c in &mut self.columns {
                c.fine.pop_front();
            }
        }
        self.pending += 1;
        if self.pending >= config.coarse_every {
            self.roll_up(config, t_ms);
        }
    }

    /// Averages the last `pending` fine rows into a coarse row.
    fn roll_up(&mut self, config: &HistoryConfig, t_ms: i64) {
        let n = self.pending.min(self.fine_t.len());
        self.pending = 0;
        if n == 0 {
            return;
        }
        reserve(&mut self.coarse_t, config.coarse_points + 1);
        self.coarse_t.push_back(t_ms);
        for c in &mut self.columns {
            reserve(&mut c.coarse, config.coarse_points + 1);
            let (sum, count) = c
                .fine
                .iter()
                .rev()
                .take(n)
                .filter(|v| v.is_finite())
                .fold((0.0f64, 0u32), |(s, k), v| (s + f64::from(*v), k + 1));
            c.coarse.push_back(if count == 0 {
                f32::NAN
            } else {
                round4(sum / f64::from(count))
            });
        }
        if self.coarse_t.len() > config.coarse_points {
            self.coarse_t.pop_front();
            for c in &mut self.columns {
                c.coarse.pop_front();
            }
        }
    }

    /// The rows of the last `range_ms` before `now_ms`: from the fine ring
    /// when it spans that long, else from the coarse ring.
    pub fn range(&self, config: &HistoryConfig, now_ms: i64, range_ms: i64) -> SeriesRange {
        let fine_span = config.step_ms().saturating_mul(config.fine_points as i64);
        let (resolution, times, pick): (_, &VecDeque<i64>, Pick) = if range_ms <= fine_span {
            (Resolution::Fine, &self.fine_t, |c| &c.fine)
        } else {
            (Resolution::Coarse, &self.coarse_t, |c| &c.coarse)
        };
        let from = now_ms.saturating_sub(range_ms);
        let skip = times.iter().take_while(|&&t| t < from).count();
        SeriesRange {
            model: self.model.clone(),
            model_version: self.model_version.clone(),
            segment: self.segment.clone(),
            resolution,
            step_secs: match resolution {
                Resolution::Fine => config.step_secs,
                Resolution::Coarse => config.step_secs * config.coarse_every as u64,
            },
            t: times.iter().skip(skip).copied().collect(),
            columns: self
                .columns
                .iter()
                .map(|c| {
                    let values = pick(c).iter().skip(skip).map(|v| v.is_finite().then_some(*v)).collect();
                    (c.name.clone(), values)
                })
                .collect(),
        }
    }
}

/// Makes room for one more value without growing past `bound` values
/// (a `VecDeque` doubles its capacity when full).
fn reserve<T>(ring: &mut VecDeque<T>, bound: usize) {
    if ring.len() == ring.capacity() {
        let want = (ring.len() * 2).max(16).min(bound.max(ring.len() + 1));
        ring.reserve_exact(want - ring.len());
    }
}

/// One sample of one series, as the caller collects it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub model: String,
    pub model_version: String,
    pub segment: String,
    pub values: Vec<(String, f64)>,
}

impl Sample {
    pub fn new(model: &str, model_version: &str, segment: &str) -> Self {
        Self {
            model: model.into(),
            model_version: model_version.into(),
            segment: segment.into(),
            values: Vec::new(),
        }
    }

    /// Adds a value when there is one.
    pub fn put(&mut self, name: impl Into<String>, value: Option<f64>) {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.values.push((name.into(), v));
        }
    }
}

/// The histories of one partition's series (checkpointed with it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionHistory {
    /// Event time of the last row (ms); 0 before the first.
    #[serde(default)]
    last_ms: i64,
    #[serde(default)]
    series: Vec<SeriesHistory>,
}

impl PartitionHistory {
    /// The step-aligned time of a row taken at `now_ms`, when the clock
    /// reached a step after the last row.
    pub fn due(&self, config: &HistoryConfig, now_ms: i64) -> Option<i64> {
        if !config.enabled {
            return None;
        }
        let step = config.step_ms();
        let t = now_ms.div_euclid(step) * step;
        (t > self.last_ms).then_some(t)
    }

    /// Records one row per sample at `t_ms` (from [`Self::due`]).
    pub fn record(&mut self, config: &HistoryConfig, t_ms: i64, samples: &[Sample]) {
        self.last_ms = self.last_ms.max(t_ms);
        for s in samples {
            let i = match self
                .series
                .iter()
                .position(|h| h.is(&s.model, &s.model_version, &s.segment))
            {
                Some(i) => i,
                None => {
                    self.series
                        .push(SeriesHistory::new(&s.model, &s.model_version, &s.segment));
                    self.series.len() - 1
                }
            };
            self.series[i].push(config, t_ms, &s.values);
        }
    }

    /// The series of `model` (only `model_version` when given).
    pub fn of<'a>(&'a self, model: &'a str, model_version: Option<&'a str>) -> impl Iterator<Item = &'a SeriesHistory> {
        self.series
            .iter()
            .filter(move |h| h.model == model && model_version.is_none_or(|v| v == h.model_version))
    }

    /// Approximate heap bytes and series count.
    pub fn size(&self) -> (usize, usize) {
        (
            self.series.iter().map(SeriesHistory::heap_bytes).sum(),
            self.series.len(),
        )
    }
}

/// Parses a served range: `1h`, `1d`, `1w` (or any `Ns`/`Nm`/`Nh`/`Nd`/`Nw`).
pub fn parse_range(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HistoryConfig {
        HistoryConfig {
            step_secs: 60,
            fine_points: 30,
            coarse_every: 10,
            coarse_points: 5,
            ..HistoryConfig::default()
        }
    }

    fn sample(v: f64) -> Sample {
        let mut s = Sample::new("fraud", "v4", "");
        s.put("p99_ms", Some(v));
        s
    }

    #[test]
    fn rounding_keeps_four_significant_digits() {
        assert_eq!(round4(123.456), 123.5);
        assert_eq!(round4(0.000_123_456), 0.000_123_5);
        assert_eq!(round4(-98_765.0), -98_770.0);
        assert_eq!(round4(0.0), 0.0);
        assert!(round4(f64::NAN).is_nan());
        assert!(round4(f64::INFINITY).is_nan());
    }

    #[test]
    fn rows_are_taken_once_per_step_and_the_rings_stay_bounded() {
        let c = config();
        let mut h = PartitionHistory::default();
        let t0 = 1_800_000_000_000i64;
        let mut rows = 0;
        // 200 minutes, polled every 15 s.
        for i in 0..800i64 {
            let now = t0 + i * 15_000;
            if let Some(t) = h.due(&c, now) {
                h.record(&c, t, &[sample(i as f64)]);
                rows += 1;
            }
        }
        assert_eq!(rows, 200);
        let s = &h.series[0];
        assert_eq!(s.len(), 30);
        assert_eq!(s.coarse_t.len(), 5);
        assert!(s.fine_t.iter().all(|t| t % 60_000 == 0));
        // The coarse rows are means of ten fine rows: sample values are
        // the poll index 4k for minute k, so the last span's mean is the
        // mean of 4·190 … 4·199.
        let last = *s.columns[0].coarse.back().unwrap();
        assert_eq!(last, round4((190..200).map(|k| 4.0 * k as f64).sum::<f64>() / 10.0));
    }

    #[test]
    fn a_range_is_served_from_the_ring_that_spans_it() {
        let c = config();
        let mut h = PartitionHistory::default();
        let t0 = 1_800_000_000_000i64;
        for k in 0..100 {
            let t = t0 + k * 60_000;
            h.record(&c, t, &[sample(k as f64)]);
        }
        let now = t0 + 99 * 60_000;
        let s = &h.series[0];
        let hour = s.range(&c, now, 10 * 60_000);
        assert_eq!(hour.resolution, Resolution::Fine);
        assert_eq!(hour.t.len(), 11);
        assert_eq!(hour.columns["p99_ms"].last(), Some(&Some(99.0)));
        let long = s.range(&c, now, 1000 * 60_000);
        assert_eq!(long.resolution, Resolution::Coarse);
        assert_eq!(long.step_secs, 600);
        assert_eq!(long.t.len(), 5);
    }

    #[test]
    fn new_columns_are_padded_and_missing_values_are_null() {
        let c = config();
        let mut h = PartitionHistory::default();
        h.record(&c, 60_000, &[sample(1.0)]);
        let mut s = sample(2.0);
        s.put("drift.amount.psi", Some(0.3));
        s.put("accuracy", None);
        h.record(&c, 120_000, &[s]);
        let r = h.series[0].range(&c, 120_000, 1_800_000);
        assert_eq!(r.columns["drift.amount.psi"], vec![None, Some(0.3)]);
        assert!(!r.columns.contains_key("accuracy"));
        let limited = HistoryConfig {
            max_columns: 1,
            ..c.clone()
        };
        h.record(
            &limited,
            180_000,
            &[{
                let mut s = sample(3.0);
                s.put("drift.country.psi", Some(0.1));
                s
            }],
        );
        assert_eq!(h.series[0].dropped_columns, 1);
    }

    #[test]
    fn the_history_round_trips_through_json_with_gaps() {
        let c = config();
        let mut h = PartitionHistory::default();
        h.record(&c, 60_000, &[sample(1.5)]);
        let mut s = sample(2.5);
        s.put("accuracy", Some(0.93));
        h.record(&c, 120_000, &[s]);
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains("null"), "{json}");
        let back: PartitionHistory = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        // An old checkpoint has no history at all.
        let empty: PartitionHistory = serde_json::from_str("{}").unwrap();
        assert!(empty.series.is_empty());
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("1h"), Some(3_600_000));
        assert_eq!(parse_range("1d"), Some(86_400_000));
        assert_eq!(parse_range("1w"), Some(604_800_000));
        assert_eq!(parse_range("0h"), None);
        assert_eq!(parse_range("h"), None);
        assert_eq!(parse_range("1y"), None);
        assert_eq!(parse_range(""), None);
    }

    #[test]
    fn bad_config_names_the_key() {
        let c = HistoryConfig {
            coarse_every: 0,
            ..HistoryConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("history.coarse_every"));
    }
}
