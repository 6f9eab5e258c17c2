//! Properties: the merge of sketches equals the sketch of the union, and a
//! window's statistics do not depend on arrival order or slot boundaries.

use mlwatch_analyzer_core::sketch::DDSketch;
use mlwatch_analyzer_latency::window::{SlidingWindow, Stats};
use proptest::prelude::*;

fn latency() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), 1e-6..1e-3f64, 0.01..10.0f64, 10.0..10_000.0f64, 1e4..1e7f64,]
}

fn sketch_of(xs: &[f64]) -> DDSketch {
    let mut s = DDSketch::default();
    for x in xs {
        s.add(*x);
    }
    s
}

proptest! {
    #[test]
    fn merge_of_sketches_is_sketch_of_union(
        parts in prop::collection::vec(prop::collection::vec(latency(), 0..200), 1..6)
    ) {
        let union: Vec<f64> = parts.iter().flatten().copied().collect();
        let mut merged = DDSketch::default();
        for p in &parts {
            merged.merge(&sketch_of(p));
        }
        let whole = sketch_of(&union);
        prop_assert_eq!(merged.count(), whole.count());
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            prop_assert_eq!(merged.quantile(q), whole.quantile(q));
        }
        prop_assert_eq!(merged, whole);
    }

    #[test]
    fn merge_is_commutative(a in prop::collection::vec(latency(), 0..100), b in prop::collection::vec(latency(), 0..100)) {
        let mut ab = sketch_of(&a);
        ab.merge(&sketch_of(&b));
        let mut ba = sketch_of(&b);
        ba.merge(&sketch_of(&a));
        prop_assert_eq!(ab, ba);
    }

    #[test]
    fn window_stats_equal_stats_of_events_in_range(
        events in prop::collection::vec((0i64..60_000, latency(), any::<bool>()), 1..300),
        seed in any::<u64>(),
    ) {
        // Arrival order is a permutation of event-time order; lateness
        // covers the whole span, so nothing is late.
        let mut shuffled = events.clone();
        let mut r = seed;
        for i in (1..shuffled.len()).rev() {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (r >> 33) as usize % (i + 1));
        }
        let mut w = SlidingWindow::new(60_000, 30, 60_000);
        for (t, x, e) in &shuffled {
            prop_assert!(w.add(*t, *x, *e, *x > 1000.0));
        }
        let got = w.stats(59_999);
        let mut want = Stats::default();
        for (t, x, e) in &events {
            if *t > -1 && *t <= 59_999 {
                want.add(*x, *e, *x > 1000.0);
            }
        }
        prop_assert_eq!(got.count, want.count);
        prop_assert_eq!(got.errors, want.errors);
        prop_assert_eq!(got.slow, want.slow);
        prop_assert_eq!(got.min, want.min);
        prop_assert_eq!(got.max, want.max);
        prop_assert_eq!(&got.sketch, &want.sketch);
        prop_assert!((got.sum - want.sum).abs() <= 1e-9 * want.sum.abs().max(1.0));
    }
}

proptest! {
    /// The running merge kept while the window slides answers like a merge
    /// from scratch of the events in range, at any query time.
    #[test]
    fn sliding_window_matches_events_in_range_at_any_time(
        events in prop::collection::vec((0i64..200_000, latency()), 1..400),
        seed in any::<u64>(),
        offsets in prop::collection::vec(-20_000i64..90_000, 1..5),
    ) {
        let mut arrival = events.clone();
        // Roughly in order, with local disorder (as a partition delivers).
        let mut r = seed;
        arrival.sort_by_cached_key(|(t, _)| {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            t + (r >> 40) as i64 % 5_000
        });
        let mut w = SlidingWindow::new(60_000, 30, 300_000);
        for (t, x) in &arrival {
            prop_assert!(w.add(*t, *x, false, false));
        }
        let max_t = events.iter().map(|e| e.0).max().unwrap();
        for off in offsets {
            let now = max_t + off;
            let hi = now.div_euclid(2_000);
            let mut want = Stats::default();
            for (t, x) in &events {
                let i = t.div_euclid(2_000);
                if i > hi - 30 && i <= hi {
                    want.add(*x, false, false);
                }
            }
            let got = w.stats(now);
            prop_assert_eq!(got.count, want.count);
            prop_assert_eq!(&got.sketch, &want.sketch, "now {}", now);
        }
    }
}
