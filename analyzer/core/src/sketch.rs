//! A mergeable quantile sketch with a relative-error guarantee (DDSketch,
//! Masson, Rim & Lee, VLDB 2019).
//!
//! Positive values fall into logarithmic buckets `(γ^(i-1), γ^i]` with
//! `γ = (1 + α) / (1 - α)`; a quantile is answered with the bucket's
//! midpoint `2γ^i / (γ + 1)`, which is within relative error `α` of the true
//! order statistic at the same rank. Values below [`MIN_VALUE`] count as 0.
//! Two sketches with the same `α` merge by adding bucket counts, so the
//! merge of sketches equals the sketch of the union exactly.

/// Values at or below this are counted in the zero bucket.
pub const MIN_VALUE: f64 = 1e-9;

/// The relative accuracy mlwatch uses for latency: 0.5 %, which keeps every
/// reported quantile within 1 % of the exact one with room to spare.
pub const DEFAULT_ALPHA: f64 = 0.005;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DDSketch {
    gamma_ln: f64,
    alpha: f64,
    /// Count of values ≤ MIN_VALUE.
    zero: u64,
    /// Index of `bins[0]`.
    offset: i32,
    bins: Vec<u64>,
    count: u64,
}

impl Default for DDSketch {
    fn default() -> Self {
        Self::new(DEFAULT_ALPHA)
    }
}

impl DDSketch {
    pub fn new(alpha: f64) -> Self {
        assert!(alpha > 0.0 && alpha < 1.0, "alpha must be in (0, 1)");
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Self {
            gamma_ln: gamma.ln(),
            alpha,
            zero: 0,
            offset: 0,
            bins: Vec::new(),
            count: 0,
        }
    }

    /// The stated relative accuracy.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn index(&self, x: f64) -> i32 {
        (x.ln() / self.gamma_ln).ceil() as i32
    }

    fn value(&self, index: i32) -> f64 {
        let gamma = self.gamma_ln.exp();
        2.0 * (self.gamma_ln * f64::from(index)).exp() / (gamma + 1.0)
    }

    /// Adds one value (negative and non-finite values are ignored).
    pub fn add(&mut self, x: f64) {
        self.add_n(x, 1);
    }

    /// Adds `n` copies of a value.
    pub fn add_n(&mut self, x: f64, n: u64) {
        if !x.is_finite() || x < 0.0 || n == 0 {
            return;
        }
        self.count += n;
        if x <= MIN_VALUE {
            self.zero += n;
            return;
        }
        let i = self.index(x);
        self.bin_mut(i);
        let pos = (i - self.offset) as usize;
        self.bins[pos] += n;
    }

    fn bin_mut(&mut self, i: i32) {
        if self.bins.is_empty() {
            self.offset = i;
            self.bins.push(0);
            return;
        }
        if i < self.offset {
            let grow = (self.offset - i) as usize;
            let mut bins = vec![0; grow + self.bins.len()];
            bins[grow..].copy_from_slice(&self.bins);
            self.bins = bins;
            self.offset = i;
        } else {
            let pos = (i - self.offset) as usize;
            if pos >= self.bins.len() {
                self.bins.resize(pos + 1, 0);
            }
        }
    }

    /// The lowest and highest bin index in use (`None` without bins).
    pub fn index_range(&self) -> Option<(i32, i32)> {
        (!self.bins.is_empty()).then(|| (self.offset, self.offset + self.bins.len() as i32 - 1))
    }

    /// Makes room for bins `lo..=hi` with at most one allocation, so that
    /// merging sketches within that range does not reallocate.
    pub fn reserve_range(&mut self, lo: i32, hi: i32) {
        if lo > hi {
            return;
        }
        let (new_lo, new_hi) = match self.index_range() {
            None => (lo, hi),
            Some((a, b)) => (a.min(lo), b.max(hi)),
        };
        let len = (new_hi - new_lo + 1) as usize;
        if self.bins.is_empty() {
            self.offset = new_lo;
            self.bins = vec![0; len];
            return;
        }
        if new_lo < self.offset {
            let shift = (self.offset - new_lo) as usize;
            let mut bins = vec![0; len];
            bins[shift..shift + self.bins.len()].copy_from_slice(&self.bins);
            self.bins = bins;
            self.offset = new_lo;
        } else if len > self.bins.len() {
            self.bins.resize(len, 0);
        }
    }

    /// Adds another sketch's counts (same alpha required).
    pub fn merge(&mut self, other: &DDSketch) {
        debug_assert!(
            (self.alpha - other.alpha).abs() < 1e-12,
            "merging sketches of different accuracy"
        );
        if other.count == 0 {
            return;
        }
        self.zero += other.zero;
        self.count += other.count;
        if other.bins.is_empty() {
            return;
        }
        let lo = other.offset;
        let hi = other.offset + other.bins.len() as i32 - 1;
        self.bin_mut(lo);
        self.bin_mut(hi);
        for (k, c) in other.bins.iter().enumerate() {
            let pos = (other.offset + k as i32 - self.offset) as usize;
            self.bins[pos] += c;
        }
    }

    /// Removes the counts of a sketch that was merged into this one (same
    /// alpha required); exact inverse of [`DDSketch::merge`], with empty end
    /// bins trimmed so the result equals the sketch of what remains.
    pub fn subtract(&mut self, other: &DDSketch) {
        if other.count == 0 {
            return;
        }
        self.zero = self.zero.saturating_sub(other.zero);
        self.count = self.count.saturating_sub(other.count);
        for (k, c) in other.bins.iter().enumerate() {
            let pos = other.offset + k as i32 - self.offset;
            if let Some(b) = usize::try_from(pos).ok().and_then(|p| self.bins.get_mut(p)) {
                *b = b.saturating_sub(*c);
            }
        }
        let lead = self.bins.iter().take_while(|c| **c == 0).count();
        if lead == self.bins.len() {
            self.bins.clear();
            self.offset = 0;
            return;
        }
        let trail = self.bins.iter().rev().take_while(|c| **c == 0).count();
        self.bins.truncate(self.bins.len() - trail);
        if lead > 0 {
            self.bins.drain(..lead);
            self.offset += lead as i32;
        }
    }

    /// The value at quantile `q` in [0, 1] (rank `q·(n−1)`, rounded down),
    /// within relative error `alpha`. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        self.rank_value((q * (self.count - 1) as f64).floor() as u64)
    }

    /// The value of the order statistic of 0-based `rank` (0 = smallest),
    /// within relative error `alpha`. `None` when `rank` is not below the
    /// count.
    pub fn rank_value(&self, rank: u64) -> Option<f64> {
        if rank >= self.count {
            return None;
        }
        if rank < self.zero {
            return Some(0.0);
        }
        let mut seen = self.zero;
        for (k, c) in self.bins.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(self.value(self.offset + k as i32));
            }
        }
        self.bins
            .last()
            .map(|_| self.value(self.offset + self.bins.len() as i32 - 1))
    }

    /// Approximate bytes used (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn quantiles_within_relative_error() {
        let mut s = DDSketch::default();
        let mut xs: Vec<f64> = (1..=10_000).map(|i| (f64::from(i) * 0.37).powf(1.3)).collect();
        for &x in &xs {
            s.add(x);
        }
        xs.sort_by(f64::total_cmp);
        for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let got = s.quantile(q).unwrap();
            let want = exact(&xs, q);
            assert!(
                (got - want).abs() <= DEFAULT_ALPHA * want + 1e-12,
                "q={q} got={got} want={want}"
            );
        }
    }

    #[test]
    fn merge_equals_union() {
        let mut a = DDSketch::default();
        let mut b = DDSketch::default();
        let mut u = DDSketch::default();
        for i in 0..500 {
            let x = f64::from(i).mul_add(1.7, 0.0);
            if i % 3 == 0 {
                a.add(x);
            } else {
                b.add(x * 40.0);
            }
            u.add(if i % 3 == 0 { x } else { x * 40.0 });
        }
        a.merge(&b);
        for q in [0.1, 0.5, 0.99] {
            assert_eq!(a.quantile(q), u.quantile(q));
        }
        assert_eq!(a.count(), u.count());
    }

    #[test]
    fn empty_and_zero() {
        let mut s = DDSketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.add(0.0);
        s.add(f64::NAN);
        s.add(-1.0);
        assert_eq!(s.count(), 1);
        assert_eq!(s.quantile(0.99), Some(0.0));
    }
}
