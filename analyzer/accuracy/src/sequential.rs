//! Page-Hinkley test for a drop in the mean of the per-prediction
//! correctness stream (1 = correct, 0 = wrong), in label-arrival order: an
//! early warning that needs no full window of labels (pure, no I/O).
//!
//! With x̄ₜ the running mean, mₜ = Σ (x̄ᵢ − xᵢ − δ) grows when the stream
//! falls below its past mean by more than δ; the detector alarms when
//! mₜ − minᵢ mᵢ > λ, then starts afresh.

use serde::{Deserialize, Serialize};

/// The `[accuracy.early_warning]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PageHinkleyConfig {
    pub enabled: bool,
    /// Tolerated drop per observation (δ), in correctness units.
    pub delta: f64,
    /// Alarm threshold (λ) on the cumulative deviation.
    pub lambda: f64,
    /// Observations before the first alarm is possible.
    pub min_observations: u64,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            delta: 0.01,
            lambda: 25.0,
            min_observations: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    config: PageHinkleyConfig,
    n: u64,
    mean: f64,
    cum: f64,
    min_cum: f64,
}

impl PageHinkley {
    pub fn new(config: PageHinkleyConfig) -> Self {
        Self {
            config,
            n: 0,
            mean: 0.0,
            cum: 0.0,
            min_cum: 0.0,
        }
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.config.clone());
    }

    /// Observations since the last reset.
    pub fn observations(&self) -> u64 {
        self.n
    }

    /// The current statistic mₜ − min mᵢ.
    pub fn statistic(&self) -> f64 {
        self.cum - self.min_cum
    }

    /// Adds one observation; `true` when it raises the alarm (the detector
    /// then resets, so the next alarm needs fresh evidence).
    pub fn update(&mut self, x: f64) -> bool {
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.cum += self.mean - x - self.config.delta;
        self.min_cum = self.min_cum.min(self.cum);
        if self.n >= self.config.min_observations && self.statistic() > self.config.lambda {
            self.reset();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// First alarm position on a Bernoulli stream whose success rate falls
    /// from `before` to `after` at `change`.
    fn first_alarm(seed: u64, len: usize, change: usize, before: f64, after: f64) -> Option<usize> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ph = PageHinkley::new(PageHinkleyConfig::default());
        (0..len).find(|&i| {
            let p = if i < change { before } else { after };
            ph.update(if rng.random_bool(p) { 1.0 } else { 0.0 })
        })
    }

    #[test]
    fn fires_after_a_drop_and_never_on_a_stationary_stream() {
        let (len, change) = (10_000, 5_000);
        let mut delays = Vec::new();
        for seed in 0..30 {
            assert_eq!(first_alarm(seed, len, change, 0.9, 0.9), None, "stationary seed {seed}");
            let at = first_alarm(seed, len, change, 0.9, 0.8).expect("drop detected");
            assert!(at >= change, "false alarm before the change, seed {seed}: {at}");
            delays.push(at - change);
        }
        delays.sort_unstable();
        eprintln!("page-hinkley delay, 0.9 -> 0.8 (labelled events): {delays:?}");
        // Detection delay, in labelled events, of a 0.9 → 0.8 drop.
        assert!(delays[delays.len() / 2] < 600, "median delay {delays:?}");
    }
}
