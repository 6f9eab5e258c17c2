//! Progress per assigned partition: how far behind the end of the log the
//! consumer is (lag) and when its position last moved. A partition with
//! messages waiting (lag > 0) whose position has not moved for
//! `stall_after` is stalled: the consume loop logs it, shows it in
//! `/readyz`, and re-seeks the partition to its position (which restarts
//! its fetcher, on the local broker and on Kafka/Redpanda alike). Pure: the
//! loop feeds it positions and watermarks with the time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A partition of one of the two input topics.
pub type Key = (&'static str, i32);

#[derive(Debug, Clone, Copy)]
struct Seen {
    position: i64,
    since: Instant,
    stalled: bool,
}

/// What one look at a partition found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    pub lag: i64,
    /// Time since its position last moved (or since it was first seen).
    pub quiet: Duration,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Moving, caught up, or not quiet for long enough.
    Fine,
    /// Stalled now, for the first time since it last moved: log and
    /// recover.
    Stalled,
    /// Still stalled (already reported).
    StillStalled,
    /// Moving again after a stall.
    Recovered,
}

/// The watcher of every assigned partition.
#[derive(Debug, Default)]
pub struct Watchdog {
    seen: BTreeMap<Key, Seen>,
}

impl Watchdog {
    /// Records `position` and the log's end (`high`) of `key` at `now`.
    pub fn look(&mut self, key: Key, position: i64, high: i64, now: Instant, stall_after: Duration) -> Look {
        let lag = (high - position).max(0);
        let seen = self.seen.entry(key).or_insert(Seen {
            position,
            since: now,
            stalled: false,
        });
        if seen.position != position || lag == 0 {
            let was = seen.stalled;
            *seen = Seen {
                position,
                since: now,
                stalled: false,
            };
            let verdict = if was { Verdict::Recovered } else { Verdict::Fine };
            return Look {
                lag,
                quiet: Duration::ZERO,
                verdict,
            };
        }
        let quiet = now.saturating_duration_since(seen.since);
        let verdict = if quiet < stall_after {
            Verdict::Fine
        } else if seen.stalled {
            Verdict::StillStalled
        } else {
            seen.stalled = true;
            Verdict::Stalled
        };
        Look { lag, quiet, verdict }
    }

    /// Forgets partitions no longer assigned.
    pub fn retain(&mut self, assigned: impl Fn(&Key) -> bool) {
        self.seen.retain(|k, _| assigned(k));
    }

    /// The partitions stalled now.
    pub fn stalled(&self) -> Vec<Key> {
        self.seen.iter().filter(|(_, s)| s.stalled).map(|(k, _)| *k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(60);

    #[test]
    fn a_partition_with_waiting_messages_and_no_movement_stalls_once_then_recovers() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let key = ("inference", 3);
        let mut w = Watchdog::default();
        assert_eq!(w.look(key, 100, 500, at(0), AFTER).verdict, Verdict::Fine);
        let l = w.look(key, 100, 600, at(59), AFTER);
        assert_eq!((l.lag, l.verdict), (500, Verdict::Fine));
        let l = w.look(key, 100, 600, at(60), AFTER);
        assert_eq!((l.quiet, l.verdict), (Duration::from_secs(60), Verdict::Stalled));
        assert_eq!(w.stalled(), vec![key]);
        assert_eq!(w.look(key, 100, 600, at(90), AFTER).verdict, Verdict::StillStalled);
        assert_eq!(w.look(key, 350, 600, at(95), AFTER).verdict, Verdict::Recovered);
        assert!(w.stalled().is_empty());
        assert_eq!(w.look(key, 400, 600, at(200), AFTER).verdict, Verdict::Fine);
    }

    #[test]
    fn a_caught_up_partition_is_never_stalled_however_quiet() {
        let t0 = Instant::now();
        let key = ("labels", 0);
        let mut w = Watchdog::default();
        for s in [0, 100, 1_000, 10_000] {
            let l = w.look(key, 42, 42, t0 + Duration::from_secs(s), AFTER);
            assert_eq!((l.lag, l.verdict), (0, Verdict::Fine));
        }
        w.retain(|_| false);
        assert!(w.stalled().is_empty());
    }
}
