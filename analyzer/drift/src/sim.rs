//! Synthetic event streams for the drift simulation test, the benchmark and
//! the demo: 20 numeric and 5 categorical features, with drift injected at
//! a known event. Deterministic for a given seed.

use super::profile::{BuildOptions, Profile, ProfileBuilder, Value};

/// A small deterministic generator (SplitMix64) with Box-Muller normals.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * v;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }

    /// An index drawn with the given cumulative probabilities.
    pub fn pick(&mut self, cumulative: &[f64]) -> usize {
        let u = self.uniform();
        cumulative.iter().position(|c| u < *c).unwrap_or(cumulative.len() - 1)
    }
}

/// A change applied to one feature from the drift point on.
#[derive(Debug, Clone, PartialEq)]
pub enum Drift {
    /// Numeric: mean moves by this many standard deviations.
    MeanShift(f64),
    /// Numeric: standard deviation multiplied by this factor.
    Scale(f64),
    /// Categorical: this share of values becomes a category never seen.
    NewCategory(f64),
    /// Categorical: this much probability moves from the first category to
    /// the last.
    FrequencyShift(f64),
}

/// The stream: 20 numeric features `n00..n19` (normal, mean `10 i`, std
/// `1 + i / 10`), 5 categorical `c0..c4` over `k` categories each, and a
/// prediction score; drifts start at event `drift_at`.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub numeric: usize,
    pub categorical: usize,
    pub drift_at: u64,
    /// (feature name, drift) pairs.
    pub drifts: Vec<(String, Drift)>,
}

pub const CATEGORIES: [&str; 5] = ["a", "b", "c", "d", "e"];
const BASE_SHARES: [f64; 5] = [0.35, 0.25, 0.2, 0.12, 0.08];

impl Scenario {
    /// 20 numeric + 5 categorical features, no drift.
    pub fn stationary() -> Self {
        Self {
            numeric: 20,
            categorical: 5,
            drift_at: u64::MAX,
            drifts: Vec::new(),
        }
    }

    pub fn numeric_name(i: usize) -> String {
        format!("n{i:02}")
    }

    pub fn categorical_name(i: usize) -> String {
        format!("c{i}")
    }

    /// A stream generator with its own seed.
    pub fn stream(&self, seed: u64) -> Stream {
        let drift = |name: &str| self.drifts.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone());
        Stream {
            rng: Rng::new(seed),
            drift_at: self.drift_at,
            event: 0,
            numeric: (0..self.numeric).map(|i| drift(&Self::numeric_name(i))).collect(),
            categorical: (0..self.categorical)
                .map(|i| drift(&Self::categorical_name(i)))
                .collect(),
            names_numeric: (0..self.numeric).map(Self::numeric_name).collect(),
            names_categorical: (0..self.categorical).map(Self::categorical_name).collect(),
            values: Vec::new(),
            cats: Vec::new(),
        }
    }

    /// A reference profile from `rows` stationary events.
    pub fn profile(&self, model: &str, rows: u64, seed: u64) -> Profile {
        let mut b = ProfileBuilder::new(BuildOptions::new(model, 1)).expect("default options are valid");
        let mut s = Scenario {
            drifts: Vec::new(),
            ..self.clone()
        }
        .stream(seed);
        for _ in 0..rows {
            let e = s.next_event();
            b.start_row();
            for (name, v) in e.features() {
                b.add_feature(name, v);
            }
            b.add_prediction("score", Value::Number(e.score));
        }
        b.finish().expect("simulated profile is valid")
    }
}

/// Generates events one at a time, reusing its buffers.
pub struct Stream {
    rng: Rng,
    drift_at: u64,
    event: u64,
    numeric: Vec<Option<Drift>>,
    categorical: Vec<Option<Drift>>,
    names_numeric: Vec<String>,
    names_categorical: Vec<String>,
    values: Vec<f64>,
    cats: Vec<&'static str>,
}

/// One generated event, borrowed from its [`Stream`].
pub struct Event<'a> {
    names_numeric: &'a [String],
    names_categorical: &'a [String],
    values: &'a [f64],
    cats: &'a [&'static str],
    pub score: f64,
}

impl<'a> Event<'a> {
    /// The event's features as `(name, value)`.
    pub fn features(&self) -> impl Iterator<Item = (&'a str, Value<'a>)> + '_ {
        let nums = self
            .names_numeric
            .iter()
            .zip(self.values)
            .map(|(n, v)| (n.as_str(), Value::Number(*v)));
        let cats = self
            .names_categorical
            .iter()
            .zip(self.cats)
            .map(|(n, c)| (n.as_str(), Value::Text(c)));
        nums.chain(cats)
    }
}

impl Stream {
    pub fn next_event(&mut self) -> Event<'_> {
        let drifted = self.event >= self.drift_at;
        self.event += 1;
        self.values.clear();
        self.cats.clear();
        let mut logit = 0.0;
        for (i, d) in self.numeric.iter().enumerate() {
            let (mean, std) = (10.0 * i as f64, 1.0 + i as f64 / 10.0);
            let mut z = self.rng.normal();
            match (drifted, d) {
                (true, Some(Drift::MeanShift(s))) => z += s,
                (true, Some(Drift::Scale(f))) => z *= f,
                _ => {}
            }
            // The score depends on n00 and n03, so drift in n03 moves the
            // prediction distribution too.
            if i == 0 || i == 3 {
                logit += 0.8 * z;
            }
            self.values.push(mean + std * z);
        }
        for d in &self.categorical {
            let mut shares = BASE_SHARES;
            let mut new_share = 0.0;
            match (drifted, d) {
                (true, Some(Drift::FrequencyShift(s))) => {
                    shares[0] -= s;
                    shares[4] += s;
                }
                (true, Some(Drift::NewCategory(s))) => new_share = *s,
                _ => {}
            }
            if new_share > 0.0 && self.rng.uniform() < new_share {
                self.cats.push("zz_new");
                continue;
            }
            let mut acc = 0.0;
            let cumulative = shares.map(|s| {
                acc += s;
                acc
            });
            self.cats.push(CATEGORIES[self.rng.pick(&cumulative)]);
        }
        let score = 1.0 / (1.0 + (-logit).exp());
        Event {
            names_numeric: &self.names_numeric,
            names_categorical: &self.names_categorical,
            values: &self.values,
            cats: &self.cats,
            score,
        }
    }
}
