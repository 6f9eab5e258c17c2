//! Sliding event-time windows of latency statistics.
//!
//! A window of length `W` is a ring of slots of length `W / slots`; each
//! slot keeps a [`DDSketch`] and exact moments of the events whose event time
//! falls in it. A query at time `now` merges the slots that overlap
//! `(now − W, now]`. Events older than the oldest slot still kept (beyond the
//! allowed lateness) are counted as late, never silently dropped.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use mlwatch_analyzer_core::sketch::DDSketch;

/// Exact moments and a sketch of one slot or of a merged window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub sketch: DDSketch,
    pub count: u64,
    pub errors: u64,
    pub slow: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn add(&mut self, latency_ms: f64, error: bool, slow: bool) {
        if self.count == 0 {
            self.min = latency_ms;
            self.max = latency_ms;
        } else {
            self.min = self.min.min(latency_ms);
            self.max = self.max.max(latency_ms);
        }
        self.count += 1;
        self.errors += u64::from(error);
        self.slow += u64::from(slow);
        self.sum += latency_ms;
        self.sum_sq += latency_ms * latency_ms;
        self.sketch.add(latency_ms);
    }

    pub fn merge(&mut self, other: &Stats) {
        self.merge_moments(other);
        self.sketch.merge(&other.sketch);
    }

    /// Merges everything but the sketch.
    pub fn merge_moments(&mut self, other: &Stats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            self.min = other.min;
            self.max = other.max;
        } else {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
        }
        self.count += other.count;
        self.errors += other.errors;
        self.slow += other.slow;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// Mean and sample standard deviation (ddof 1); zeros when empty.
    pub fn mean_std(&self) -> (f64, f64) {
        let n = self.count as f64;
        let mean = if self.count > 0 { self.sum / n } else { 0.0 };
        let var = if self.count > 1 {
            ((self.sum_sq - n * mean * mean) / (n - 1.0)).max(0.0)
        } else {
            0.0
        };
        (mean, var.sqrt())
    }

    /// The summary a user sees, over a window of `window_ms`.
    pub fn summary(&self, window_ms: i64) -> Summary {
        let n = self.count as f64;
        let (mean, std) = self.mean_std();
        let q = |p: f64| self.sketch.quantile(p).unwrap_or(0.0);
        let rate = |k: u64| if self.count > 0 { k as f64 / n } else { 0.0 };
        Summary {
            count: self.count,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            mean_ms: mean,
            std_ms: std,
            min_ms: if self.count > 0 { self.min } else { 0.0 },
            max_ms: if self.count > 0 { self.max } else { 0.0 },
            throughput_rps: n / (window_ms as f64 / 1000.0),
            error_rate: rate(self.errors),
            slow_request_rate: rate(self.slow),
            relative_error: self.sketch.alpha(),
        }
    }
}

/// Window statistics as served by the API and exported as gauges.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub mean_ms: f64,
    pub std_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub throughput_rps: f64,
    pub error_rate: f64,
    pub slow_request_rate: f64,
    /// Relative error bound of the quantiles.
    pub relative_error: f64,
}

/// One sliding window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlidingWindow {
    window_ms: i64,
    slot_ms: i64,
    /// Extra slots kept beyond the window for late events.
    lateness_slots: i64,
    /// (slot index = event_time / slot_ms, stats), ascending.
    slots: VecDeque<(i64, Stats)>,
    late: u64,
    /// The merged sketch of the slots in `(running_hi − n, running_hi]`
    /// (n = slots per window), kept up to date on every add: a query at the
    /// newest slot costs one copy instead of a merge of every slot. Bin
    /// counts are integers, so adding and subtracting slots is exact.
    running: DDSketch,
    running_hi: Option<i64>,
}

impl SlidingWindow {
    /// A window of `window_ms` made of `slots` slots, accepting events up to
    /// `lateness_ms` behind the newest slot.
    pub fn new(window_ms: i64, slots: i64, lateness_ms: i64) -> Self {
        let slots = slots.max(1);
        let slot_ms = (window_ms / slots).max(1);
        Self {
            window_ms,
            slot_ms,
            lateness_slots: lateness_ms.div_euclid(slot_ms) + 1,
            slots: VecDeque::new(),
            late: 0,
            running: DDSketch::default(),
            running_hi: None,
        }
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Events that arrived too late to be placed in their slot.
    pub fn late(&self) -> u64 {
        self.late
    }

    fn keep_slots(&self) -> i64 {
        self.window_ms / self.slot_ms + self.lateness_slots
    }

    /// Adds an event. Returns false (and counts it late) when its slot was
    /// already evicted.
    pub fn add(&mut self, event_ms: i64, latency_ms: f64, error: bool, slow: bool) -> bool {
        let idx = event_ms.div_euclid(self.slot_ms);
        let newest = self.slots.back().map(|(i, _)| *i);
        if let Some(newest) = newest
            && idx <= newest - self.keep_slots()
        {
            self.late += 1;
            return false;
        }
        match self.slots.binary_search_by_key(&idx, |(i, _)| *i) {
            Ok(pos) => self.slots[pos].1.add(latency_ms, error, slow),
            Err(pos) => {
                let mut s = Stats::default();
                s.add(latency_ms, error, slow);
                self.slots.insert(pos, (idx, s));
            }
        }
        let n = self.slots_per_window();
        let hi = match self.running_hi {
            Some(hi) if idx > hi => {
                // Slots leaving the running range as it slides to `idx`.
                for (i, s) in &self.slots {
                    if *i > hi - n && *i <= idx - n {
                        self.running.subtract(&s.sketch);
                    }
                }
                idx
            }
            Some(hi) => hi,
            None => idx,
        };
        self.running_hi = Some(hi);
        if idx > hi - n {
            self.running.add(latency_ms);
        }
        let newest = self.slots.back().map(|(i, _)| *i).unwrap_or(idx);
        while let Some((front, _)) = self.slots.front() {
            if *front <= newest - self.keep_slots() {
                self.slots.pop_front();
            } else {
                break;
            }
        }
        true
    }

    /// The slot length, in milliseconds.
    pub fn slot_ms(&self) -> i64 {
        self.slot_ms
    }

    /// Merged statistics of the slots in `(from_ms, to_ms]` that are still
    /// kept (a reference period inside the window).
    pub fn stats_range(&self, from_ms: i64, to_ms: i64) -> Stats {
        self.merged(from_ms.div_euclid(self.slot_ms), to_ms.div_euclid(self.slot_ms))
    }

    fn slots_per_window(&self) -> i64 {
        self.window_ms / self.slot_ms
    }

    /// Merged statistics of the slots in `(now − window, now]`: exact
    /// moments summed from the slots, the sketch from the running merge
    /// when `now` is at or after the newest slot.
    pub fn stats(&self, now_ms: i64) -> Stats {
        let hi = now_ms.div_euclid(self.slot_ms);
        let lo = hi - self.slots_per_window();
        let in_range = || self.slots.iter().filter(move |(i, _)| *i > lo && *i <= hi);
        match self.running_hi {
            Some(rhi) if hi >= rhi => {
                let mut out = Stats::default();
                for (_, s) in in_range() {
                    out.merge_moments(s);
                }
                out.sketch = self.running.clone();
                for (i, s) in &self.slots {
                    if *i > rhi - self.slots_per_window() && *i <= lo {
                        out.sketch.subtract(&s.sketch);
                    }
                }
                out
            }
            _ => self.merged(lo, hi),
        }
    }

    /// Merges the slots in `(lo, hi]` from scratch.
    fn merged(&self, lo: i64, hi: i64) -> Stats {
        let in_range = || self.slots.iter().filter(move |(i, _)| *i > lo && *i <= hi);
        let mut out = Stats::default();
        // One allocation for the merged sketch's bins.
        if let Some((a, b)) = in_range()
            .filter_map(|(_, s)| s.sketch.index_range())
            .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
        {
            out.sketch.reserve_range(a, b);
        }
        for (_, s) in in_range() {
            out.merge(s);
        }
        out
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.running.heap_bytes()
            + self
                .slots
                .iter()
                .map(|(_, s)| std::mem::size_of::<(i64, Stats)>() + s.sketch.heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides_and_counts_late() {
        let mut w = SlidingWindow::new(10_000, 10, 0);
        for t in 0..20 {
            assert!(w.add(t * 1000, 10.0 + t as f64, t % 5 == 0, t >= 18));
        }
        let s = w.stats(19_999);
        assert_eq!(s.count, 10);
        assert_eq!(s.min, 20.0);
        assert_eq!(s.max, 29.0);
        assert_eq!(s.errors, 2);
        assert_eq!(s.slow, 2);
        assert!(!w.add(1_000, 1.0, false, false));
        assert_eq!(w.late(), 1);
        let summary = s.summary(10_000);
        assert!((summary.throughput_rps - 1.0).abs() < 1e-9);
        assert!((summary.mean_ms - 24.5).abs() < 1e-9);
    }
}
