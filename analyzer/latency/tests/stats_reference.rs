//! The test statistics of `stats` against scipy on stored fixtures
//! (`fixtures/gen_stats.py` generates `fixtures/stats.json`), and their
//! invariants by proptest.

use mlwatch_analyzer_core::sketch::DDSketch;
use mlwatch_analyzer_latency::stats::{
    binom_cdf, binom_ppf, binom_sf, quantile_increase, quantile_rank_interval, rate_increase, wilson_interval,
};
use mlwatch_analyzer_latency::versions::{chi2_homogeneity, psi};
use proptest::prelude::*;
use serde_json::Value;

fn fixture(name: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(include_str!("fixtures/stats.json")).expect("fixture json");
    v[name].as_array().expect("section").clone()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn binomial_test_matches_scipy_binomtest_greater() {
    for c in fixture("binomtest") {
        let got = binom_sf(u(&c["k"]), u(&c["n"]), f(&c["p"]));
        let want = f(&c["pvalue"]);
        // Relative where it matters (small p-values), absolute near 1.
        let tol = 1e-9 + 1e-7 * want;
        assert!((got - want).abs() <= tol, "{c}: got {got}");
    }
}

#[test]
fn binomial_quantile_matches_scipy_binom_ppf() {
    for c in fixture("binom_ppf") {
        let got = binom_ppf(f(&c["q"]), u(&c["n"]), f(&c["p"]));
        assert_eq!(got, u(&c["k"]), "{c}");
    }
}

#[test]
fn wilson_matches_scipy_proportion_ci() {
    for c in fixture("wilson") {
        let (lo, hi) = wilson_interval(u(&c["k"]), u(&c["n"]), f(&c["confidence"]));
        assert!((lo - f(&c["low"])).abs() < 1e-8, "{c}: {lo}");
        assert!((hi - f(&c["high"])).abs() < 1e-8, "{c}: {hi}");
    }
}

#[test]
fn quantile_rank_interval_matches_scipy() {
    for c in fixture("quantile_ci") {
        let (l, h) = quantile_rank_interval(u(&c["n"]), f(&c["q"]), f(&c["confidence"]));
        assert_eq!(l, c["lower_rank"].as_u64(), "{c}");
        assert_eq!(h, c["upper_rank"].as_u64(), "{c}");
    }
}

fn counts(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(u).collect()
}

#[test]
fn chi_square_matches_scipy() {
    for c in fixture("chi2") {
        let got = chi2_homogeneity(&counts(&c["a"]), &counts(&c["b"]));
        let want = f(&c["pvalue"]);
        assert!((got - want).abs() <= 1e-10 + 1e-7 * want, "{c}: got {got}");
    }
}

#[test]
fn psi_matches_numpy() {
    for c in fixture("psi") {
        let got = psi(&counts(&c["a"]), &counts(&c["b"]));
        assert!((got - f(&c["psi"])).abs() < 1e-10, "{c}: got {got}");
    }
}

#[test]
fn error_burst_is_significant_and_stationary_is_not() {
    // 0.5 % over 10 minutes at 100 events/s as the baseline; 10 s at 5 %.
    let t = rate_increase((50, 1000), (300, 60_000), 2.0, 0.005, 0.999, 200).unwrap();
    assert!(t.significant, "{t:?}");
    let t = rate_increase((6, 1000), (300, 60_000), 2.0, 0.005, 0.999, 200).unwrap();
    assert!(!t.significant, "{t:?}");
    assert!(rate_increase((6, 100), (300, 60_000), 2.0, 0.005, 0.999, 200).is_none());
}

#[test]
fn quantile_shift_is_significant() {
    let mut base = DDSketch::default();
    let mut cur = DDSketch::default();
    let mut same = DDSketch::default();
    for i in 0..3000 {
        let x = 10.0 + (i % 100) as f64;
        base.add(x);
        same.add(x);
        cur.add(x * 1.3);
    }
    let t = quantile_increase(&cur, &base, 0.5, 1.1, 0.999, 100).unwrap();
    assert!(t.significant, "{t:?}");
    let t = quantile_increase(&same, &base, 0.5, 1.1, 0.999, 100).unwrap();
    assert!(!t.significant, "{t:?}");
}

proptest! {
    /// The cdf and the survival function add up, the ppf inverts the cdf,
    /// and the quantile ranks bracket the expected rank.
    #[test]
    fn binomial_invariants(n in 1u64..5000, p in 0.001f64..0.999, q in 0.001f64..0.999) {
        let k = binom_ppf(q, n, p);
        prop_assert!(binom_cdf(k, n, p) >= q - 1e-12);
        if k > 0 {
            prop_assert!(binom_cdf(k - 1, n, p) < q + 1e-12);
        }
        let s = binom_cdf(k, n, p) + binom_sf(k + 1, n, p);
        prop_assert!((s - 1.0).abs() < 1e-9);
        let (l, h) = quantile_rank_interval(n, p, 0.99);
        let mid = p * n as f64;
        if let Some(l) = l { prop_assert!(l as f64 <= mid + 1.0); }
        if let Some(h) = h { prop_assert!(h as f64 >= mid); }
    }

    /// The Wilson interval holds the observed proportion and narrows with n.
    #[test]
    fn wilson_holds_the_estimate(k in 0u64..1000, extra in 0u64..100_000) {
        let n = k + extra.max(1);
        let (lo, hi) = wilson_interval(k, n, 0.999);
        let p = k as f64 / n as f64;
        prop_assert!(lo <= p + 1e-12 && p <= hi + 1e-12);
        let (lo4, hi4) = wilson_interval(4 * k, 4 * n, 0.999);
        prop_assert!(hi4 - lo4 <= hi - lo + 1e-12);
    }
}
