//! Drift statistics on binned counts (pure functions, no state).
//!
//! Every function takes bin counts (or atoms) rather than raw values, so the
//! reference never has to be kept as rows. Where a statistic is defined on
//! bins (PSI, chi-square, Jensen-Shannon) the value is exact for those bins;
//! KS and Wasserstein are computed from bins and come with an error bound
//! (see `docs/drift.md`).

/// Floor applied to bin shares in PSI so that empty bins stay finite.
pub const PSI_EPSILON: f64 = 1e-4;

/// Largest |z| reported; beyond it the tail probability underflows anyway.
pub const Z_CAP: f64 = 50.0;

/// Population Stability Index: `Σ (q − p) ln(q / p)` over shares, each share
/// floored at [`PSI_EPSILON`]. `reference` and `current` are bin counts of
/// equal length.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let (rt, ct) = (total(reference), total(current));
    if rt <= 0.0 || ct <= 0.0 {
        return 0.0;
    }
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let p = (r / rt).max(PSI_EPSILON);
            let q = (c / ct).max(PSI_EPSILON);
            (q - p) * (q / p).ln()
        })
        .sum()
}

/// Jensen-Shannon distance with base-2 logarithms (in [0, 1]), as
/// `scipy.spatial.distance.jensenshannon(p, q, base=2)`.
pub fn js_distance(reference: &[f64], current: &[f64]) -> f64 {
    let (rt, ct) = (total(reference), total(current));
    if rt <= 0.0 || ct <= 0.0 {
        return 0.0;
    }
    let mut div = 0.0;
    for (r, c) in reference.iter().zip(current) {
        let p = r / rt;
        let q = c / ct;
        let m = 0.5 * (p + q);
        if p > 0.0 {
            div += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            div += 0.5 * q * (q / m).log2();
        }
    }
    div.max(0.0).sqrt()
}

/// Result of a chi-square test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ChiSquare {
    pub statistic: f64,
    pub df: u32,
    pub p_value: f64,
    /// Natural log of the p-value (finite where `p_value` underflows).
    pub ln_p_value: f64,
}

/// Two-sample chi-square test of homogeneity on a 2 × k table of counts
/// (no continuity correction), as `scipy.stats.chi2_contingency([a, b],
/// correction=False)` after dropping columns that are empty in both rows.
pub fn chi2_two_sample(a: &[f64], b: &[f64]) -> ChiSquare {
    let (at, bt) = (total(a), total(b));
    let t = at + bt;
    let mut stat = 0.0;
    let mut cols = 0u32;
    if at > 0.0 && bt > 0.0 {
        for (x, y) in a.iter().zip(b) {
            let col = x + y;
            if col <= 0.0 {
                continue;
            }
            cols += 1;
            let ea = col * at / t;
            let eb = col * bt / t;
            stat += (x - ea) * (x - ea) / ea + (y - eb) * (y - eb) / eb;
        }
    }
    let df = cols.saturating_sub(1);
    if df == 0 {
        return ChiSquare {
            statistic: 0.0,
            df,
            p_value: 1.0,
            ln_p_value: 0.0,
        };
    }
    let ln_p = chi2_ln_sf(stat, df as f64);
    ChiSquare {
        statistic: stat,
        df,
        p_value: ln_p.exp(),
        ln_p_value: ln_p,
    }
}

/// Natural log of the chi-square survival function `P(X > x)`, `X ~ χ²(df)`.
pub fn chi2_ln_sf(x: f64, df: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    ln_gamma_q(0.5 * df, 0.5 * x)
}

/// KS statistic from cumulative shares evaluated at the same points.
pub fn ks_from_cdfs(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| (r - c).abs())
        .fold(0.0, f64::max)
}

/// Two-sided KS p-value from the asymptotic Kolmogorov distribution with
/// effective size `m n / (m + n)`, as `scipy.stats.kstwobign.sf(sqrt(en) d)`.
pub fn ks_p_value(d: f64, m: f64, n: f64) -> f64 {
    if m <= 0.0 || n <= 0.0 {
        return 1.0;
    }
    kolmogorov_sf((m * n / (m + n)).sqrt() * d)
}

/// Survival function of the Kolmogorov distribution.
pub fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // P(K ≤ x) = √(2π)/x Σ exp(−(2k−1)² π² / (8x²)), fast for small x.
        let mut cdf = 0.0;
        for k in 1..=20 {
            let j = (2 * k - 1) as f64;
            cdf += (-j * j * std::f64::consts::PI * std::f64::consts::PI / (8.0 * x * x)).exp();
        }
        (1.0 - (2.0 * std::f64::consts::PI).sqrt() / x * cdf).clamp(0.0, 1.0)
    } else {
        let mut sf = 0.0;
        for k in 1..=100 {
            let kf = k as f64;
            let term = (-2.0 * kf * kf * x * x).exp();
            sf += if k % 2 == 1 { term } else { -term };
            if term < 1e-300 {
                break;
            }
        }
        (2.0 * sf).clamp(0.0, 1.0)
    }
}

/// First Wasserstein distance between two weighted atom sets `(position,
/// weight)`; weights are normalised, positions need not be sorted.
pub fn wasserstein(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let (wa, wb): (f64, f64) = (a.iter().map(|x| x.1).sum(), b.iter().map(|x| x.1).sum());
    if wa <= 0.0 || wb <= 0.0 {
        return 0.0;
    }
    let mut pts: Vec<(f64, f64)> = a
        .iter()
        .filter(|x| x.1 > 0.0)
        .map(|&(x, w)| (x, w / wa))
        .chain(b.iter().filter(|x| x.1 > 0.0).map(|&(x, w)| (x, -w / wb)))
        .collect();
    pts.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut diff = 0.0;
    let mut dist = 0.0;
    for pair in pts.windows(2) {
        diff += pair[0].1;
        dist += diff.abs() * (pair[1].0 - pair[0].0);
    }
    dist
}

/// The z-score whose standard normal upper tail equals `exp(ln_p)`, capped
/// at ±[`Z_CAP`]; it is standard normal when the p-value is uniform.
pub fn z_from_ln_p(ln_p: f64) -> f64 {
    if ln_p.is_nan() {
        return 0.0;
    }
    let p = ln_p.exp();
    const P_LOW: f64 = 0.02425;
    let z = if p < P_LOW {
        -acklam_tail(ln_p)
    } else if p > 1.0 - P_LOW {
        acklam_tail((-p).ln_1p())
    } else {
        -acklam_central(p)
    };
    z.clamp(-Z_CAP, Z_CAP)
}

/// Acklam's rational approximation of Φ⁻¹(p) for the lower tail, written in
/// terms of `ln p` so it stays finite where `p` underflows.
fn acklam_tail(ln_p: f64) -> f64 {
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let q = (-2.0 * ln_p).sqrt();
    (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
        / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
}

fn acklam_central(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    let q = p - 0.5;
    let r = q * q;
    (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
        / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// ln Q(a, x), the log of the regularised upper incomplete gamma function.
fn ln_gamma_q(a: f64, x: f64) -> f64 {
    const EPS: f64 = 1e-15;
    const TINY: f64 = 1e-300;
    let prefix = -x + a * x.ln() - ln_gamma(a);
    if x < a + 1.0 {
        // Series for P, then Q = 1 − P.
        let mut ap = a;
        let mut del = 1.0 / a;
        let mut sum = del;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * EPS {
                break;
            }
        }
        let p = (prefix + sum.ln()).exp();
        (-p).ln_1p()
    } else {
        // Continued fraction for Q (modified Lentz).
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < EPS {
                break;
            }
        }
        prefix + h.ln()
    }
}

/// Average run length of a one-sided CUSUM `S = max(0, S + z − k)` with
/// threshold `h` on i.i.d. N(0, 1) input (Siegmund's approximation).
pub fn cusum_arl0(k: f64, h: f64) -> f64 {
    let b = h + 1.166;
    if k <= 0.0 {
        return b * b;
    }
    let x = 2.0 * k * b;
    (x.exp() - x - 1.0) / (2.0 * k * k)
}

/// The CUSUM threshold `h` whose in-control average run length is `arl0`.
pub fn cusum_threshold(k: f64, arl0: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1.0);
    while cusum_arl0(k, hi) < arl0 && hi < 1e6 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if cusum_arl0(k, mid) < arl0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn total(x: &[f64]) -> f64 {
    x.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(101.0) - 363.739_375_555_563_5).abs() < 1e-9);
    }

    #[test]
    fn chi2_sf_known_values() {
        // scipy.stats.chi2.sf(x, df)
        let cases = [
            (3.841_458_820_694_124, 1.0, 0.05),
            (16.918_977_604_620_45, 9.0, 0.05),
            (100.0, 9.0, 1.573_517_630_375_387_6e-17),
            (2.0, 9.0, 0.991_467_606_628_813_5),
        ];
        for (x, df, want) in cases {
            let got = chi2_ln_sf(x, df).exp();
            assert!(
                (got - want).abs() <= 1e-9 * want,
                "chi2.sf({x}, {df}) = {got}, want {want}"
            );
        }
        // Far tail stays finite in log space.
        assert!(chi2_ln_sf(5000.0, 9.0) < -2400.0);
    }

    #[test]
    fn z_from_ln_p_inverts_normal_tail() {
        // scipy.stats.norm.isf(p)
        for (p, z) in [
            (0.5, 0.0),
            (0.05, 1.644_853_626_951_472_2),
            (0.975, -1.959_963_984_540_054),
            (1e-10, 6.361_340_902_404_056),
        ] {
            let got = z_from_ln_p(f64::ln(p));
            assert!((got - z).abs() < 1e-6, "isf({p}) = {got}, want {z}");
        }
        assert_eq!(z_from_ln_p(-1e9), Z_CAP);
    }

    #[test]
    fn kolmogorov_sf_both_branches() {
        // scipy.stats.kstwobign.sf
        for (x, want) in [
            (0.5, 0.963_945_243_664_875_1),
            (1.0, 0.269_999_671_677_354_56),
            (1.358_098_8, 0.049_999_956_358_897_264),
            (2.0, 6.709_252_557_796_953e-4),
        ] {
            let got = kolmogorov_sf(x);
            assert!((got - want).abs() < 1e-7, "kstwobign.sf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn cusum_threshold_inverts_arl() {
        let h = cusum_threshold(1.0, 1e6);
        assert!((cusum_arl0(1.0, h) / 1e6 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn cusum_arl_matches_simulation() {
        // Measured in-control run length of the CUSUM on N(0,1) input is
        // within 15 % of Siegmund's approximation.
        let (k, target) = (1.0, 300.0);
        let h = cusum_threshold(k, target);
        let mut rng = crate::sim::Rng::new(7);
        let runs = 400;
        let mut total_len = 0u64;
        for _ in 0..runs {
            let mut s: f64 = 0.0;
            let mut len = 0u64;
            loop {
                len += 1;
                s = (s + rng.normal() - k).max(0.0);
                if s >= h {
                    break;
                }
            }
            total_len += len;
        }
        let arl = total_len as f64 / runs as f64;
        assert!((arl / target - 1.0).abs() < 0.15, "measured arl {arl}, target {target}");
    }

    proptest::proptest! {
        #[test]
        fn scores_are_bounded_and_symmetric(
            pairs in proptest::collection::vec((0u32..1000, 0u32..1000), 2..20)
        ) {
            let a: Vec<f64> = pairs.iter().map(|p| p.0 as f64).collect();
            let b: Vec<f64> = pairs.iter().map(|p| p.1 as f64).collect();
            let js = js_distance(&a, &b);
            proptest::prop_assert!((0.0..=1.0 + 1e-12).contains(&js));
            proptest::prop_assert!((js - js_distance(&b, &a)).abs() < 1e-12);
            proptest::prop_assert!(psi(&a, &b) >= 0.0);
            let (x, y) = (chi2_two_sample(&a, &b), chi2_two_sample(&b, &a));
            proptest::prop_assert!(x.statistic >= 0.0 && (0.0..=1.0).contains(&x.p_value));
            proptest::prop_assert!((x.statistic - y.statistic).abs() <= 1e-9 * x.statistic.max(1.0));
            let z = z_from_ln_p(x.ln_p_value);
            proptest::prop_assert!(z.is_finite());
        }
    }

    #[test]
    fn identical_distributions_score_zero() {
        let a = [10.0, 20.0, 30.0];
        assert_eq!(psi(&a, &a), 0.0);
        assert_eq!(js_distance(&a, &a), 0.0);
        assert_eq!(chi2_two_sample(&a, &a).statistic, 0.0);
        assert_eq!(wasserstein(&[(1.0, 1.0), (2.0, 1.0)], &[(1.0, 5.0), (2.0, 5.0)]), 0.0);
        assert!((wasserstein(&[(0.0, 1.0)], &[(3.0, 1.0)]) - 3.0).abs() < 1e-12);
    }
}
