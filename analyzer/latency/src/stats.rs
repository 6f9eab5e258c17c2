//! The test statistics of the baseline-relative rules and the version
//! comparison (pure, no I/O), each checked against scipy on stored fixtures
//! (`tests/fixtures/stats_reference.json`, made by
//! `tests/fixtures/stats_reference.py`).
//!
//! The special functions (ln Γ, the normal quantile) are the drift crate's.
//!
//! - Error rates: the exact one-sided binomial test
//!   ([`binom_sf`] = `scipy.stats.binomtest(k, n, p, alternative="greater").pvalue`)
//!   of the window's errors against the baseline's rate, taken at the upper
//!   end of its Wilson interval ([`wilson_interval`] =
//!   `binomtest(k, n).proportion_ci(confidence, method="wilson")`) and times
//!   the minimum effect.
//! - Latency quantiles: distribution-free confidence intervals from order
//!   statistics ([`quantile_rank_interval`], ranks from `scipy.stats.binom.ppf`),
//!   read from a DDSketch and widened by its relative accuracy α.

use mlwatch_analyzer_core::sketch::DDSketch;
use mlwatch_analyzer_drift::stats::{ln_gamma, z_from_ln_p};

/// The regularised incomplete beta function `I_x(a, b)` (continued fraction,
/// modified Lentz).
pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_inc(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..10_000 {
        let m = f64::from(m);
        let num = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        f *= d * c;
        let num = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = d * c;
        f *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    (ln_front.exp() * f / a).clamp(0.0, 1.0)
}

/// `P(X ≥ k)` for `X ~ Binomial(n, p)`: the p-value of the one-sided exact
/// binomial test of `k` successes in `n` against rate `p`.
pub fn binom_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let p = p.clamp(0.0, 1.0);
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    beta_inc(k as f64, (n - k + 1) as f64, p)
}

/// `P(X ≤ k)` for `X ~ Binomial(n, p)`.
pub fn binom_cdf(k: u64, n: u64, p: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    1.0 - binom_sf(k + 1, n, p)
}

/// The smallest `k` with `P(X ≤ k) ≥ q` (`scipy.stats.binom.ppf`).
pub fn binom_ppf(q: f64, n: u64, p: f64) -> u64 {
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if binom_cdf(mid, n, p) >= q {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The two-sided Wilson score interval of a proportion `k / n` at
/// `confidence` (e.g. 0.999); `(0, 1)` when `n = 0`.
pub fn wilson_interval(k: u64, n: u64, confidence: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    // z = Φ⁻¹(1 − β/2): the z whose upper tail is β/2.
    let z = z_from_ln_p(((1.0 - confidence) / 2.0).ln());
    let n = n as f64;
    let p = k as f64 / n;
    let denom = 1.0 + z * z / n;
    let centre = p + z * z / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (((centre - half) / denom).max(0.0), ((centre + half) / denom).min(1.0))
}

/// The 1-based ranks `(l, u)` of the order statistics that bound the
/// `q`-quantile of a sample of `n` with two-sided `confidence`:
/// `P(x₍ₗ₎ ≤ ξ_q) ≥ 1 − β/2` and `P(x₍ᵤ₎ ≥ ξ_q) ≥ 1 − β/2`, β = 1 − confidence.
/// `l = binom.ppf(β/2, n, q)` (`None` when 0: no lower bound from so few
/// samples) and `u = binom.ppf(1 − β/2, n, q) + 1` (`None` when above `n`).
pub fn quantile_rank_interval(n: u64, q: f64, confidence: f64) -> (Option<u64>, Option<u64>) {
    let beta = 1.0 - confidence;
    let l = binom_ppf(beta / 2.0, n, q);
    let u = binom_ppf(1.0 - beta / 2.0, n, q) + 1;
    ((l >= 1).then_some(l), (u <= n).then_some(u))
}

/// A confidence interval of the `q`-quantile of the values in `sketch`:
/// the order statistics of [`quantile_rank_interval`] read from the sketch
/// and widened by its relative accuracy (`× (1 − α)` below, `× (1 + α)`
/// above). An end is `None` when the sample is too small to bound it.
pub fn quantile_interval(sketch: &DDSketch, q: f64, confidence: f64) -> (Option<f64>, Option<f64>) {
    let n = sketch.count();
    if n == 0 {
        return (None, None);
    }
    let (l, u) = quantile_rank_interval(n, q, confidence);
    let a = sketch.alpha();
    (
        l.and_then(|r| sketch.rank_value(r - 1)).map(|v| v * (1.0 - a)),
        u.and_then(|r| sketch.rank_value(r - 1)).map(|v| v * (1.0 + a)),
    )
}

/// Whether `current` is a significant increase of a rate over `baseline`:
/// the baseline's Wilson upper bound (at `confidence`) times `min_factor`
/// (at least `baseline + min_delta`) is the null rate, and the one-sided
/// binomial test of `current` against it must reject at `1 − confidence`.
/// Returns `(p_value, null_rate)`; `None` with fewer than `min_samples`
/// events on either side.
pub fn rate_increase(
    current: (u64, u64),
    baseline: (u64, u64),
    min_factor: f64,
    min_delta: f64,
    confidence: f64,
    min_samples: u64,
) -> Option<RateTest> {
    let (k, n) = current;
    let (bk, bn) = baseline;
    if n < min_samples.max(1) || bn < min_samples.max(1) {
        return None;
    }
    let (_, hi) = wilson_interval(bk, bn, confidence);
    let p0 = (hi * min_factor).max(hi + min_delta).min(1.0);
    let p_value = binom_sf(k, n, p0);
    Some(RateTest {
        rate: k as f64 / n as f64,
        baseline_rate: bk as f64 / bn as f64,
        null_rate: p0,
        p_value,
        significant: p_value < 1.0 - confidence,
    })
}

/// The outcome of [`rate_increase`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateTest {
    pub rate: f64,
    pub baseline_rate: f64,
    /// The rate tested against: baseline upper bound × minimum effect.
    pub null_rate: f64,
    pub p_value: f64,
    pub significant: bool,
}

/// The outcome of [`quantile_increase`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantileTest {
    pub value: f64,
    pub baseline_value: f64,
    /// Lower confidence bound of the current quantile.
    pub lower: f64,
    /// Upper confidence bound of the baseline quantile.
    pub baseline_upper: f64,
    pub significant: bool,
}

/// Whether the `q`-quantile of `current` is above `min_factor` times that
/// of `baseline` beyond doubt: the lower confidence bound of the current
/// quantile exceeds `min_factor` × the upper bound of the baseline's (each
/// at `confidence`, so a false alarm on equal distributions needs one of
/// the two intervals to miss: at most `1 − confidence` per decision).
/// `None` with fewer than `min_samples` on either side or when a bound
/// does not exist for the sample sizes.
pub fn quantile_increase(
    current: &DDSketch,
    baseline: &DDSketch,
    q: f64,
    min_factor: f64,
    confidence: f64,
    min_samples: u64,
) -> Option<QuantileTest> {
    if current.count() < min_samples.max(1) || baseline.count() < min_samples.max(1) {
        return None;
    }
    let (lower, _) = quantile_interval(current, q, confidence);
    let (_, upper) = quantile_interval(baseline, q, confidence);
    let (lower, upper) = (lower?, upper?);
    Some(QuantileTest {
        value: current.quantile(q)?,
        baseline_value: baseline.quantile(q)?,
        lower,
        baseline_upper: upper,
        significant: lower > min_factor * upper,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_exact_values() {
        // P(X ≥ 1), n = 1: p.
        assert!((binom_sf(1, 1, 0.3) - 0.3).abs() < 1e-14);
        // P(X ≥ 2), n = 2, p = 0.5: 0.25.
        assert!((binom_sf(2, 2, 0.5) - 0.25).abs() < 1e-14);
        assert_eq!(binom_sf(0, 10, 0.1), 1.0);
        assert_eq!(binom_sf(11, 10, 0.1), 0.0);
    }
}
