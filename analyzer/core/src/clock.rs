//! Event time. A partition has one [`EventClock`]: the newest event time of
//! its inference stream, moved forward from wall time only while the
//! partition is idle. Each part of the partition (latency, accuracy, drift)
//! keeps a [`Schedule`]: the next boundary of its own interval it has not
//! evaluated yet, and asks it what is due at the clock's time. So every
//! verdict is a function of the partition's event sequence, and a part that
//! failed half-way evaluates what it missed the next time it is asked.

use serde::{Deserialize, Serialize};

/// Evaluations replayed at most when a clock jumps forward; older
/// boundaries are skipped (deterministically).
pub const MAX_CATCH_UP: i64 = 3600;

/// A partition's event-time clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventClock {
    now_ms: i64,
    /// Whether any event (or advance) has set the clock yet.
    started: bool,
}

impl EventClock {
    /// A clock restored at `now_ms` (0: not started).
    pub fn at(now_ms: i64) -> Self {
        Self {
            now_ms,
            started: now_ms != 0,
        }
    }

    /// The partition's time: the newest event time seen, or advanced to.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub fn started(&self) -> bool {
        self.started
    }

    /// An event at `t_ms`: time moves to it when it is newer (an older
    /// event does not move time back).
    pub fn observe(&mut self, t_ms: i64) -> i64 {
        if !self.started || t_ms > self.now_ms {
            self.now_ms = t_ms;
        }
        self.started = true;
        self.now_ms
    }

    /// An idle partition's time follows wall time: moves to `t_ms` when it
    /// is newer. A clock no event has started stays unstarted.
    pub fn advance(&mut self, t_ms: i64) -> bool {
        if self.started && t_ms > self.now_ms {
            self.now_ms = t_ms;
            return true;
        }
        false
    }
}

/// The evaluation boundaries of one part: multiples of its interval, the
/// next of which it has not evaluated yet (0: not started). Serialised as
/// that number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schedule {
    pub next_ms: i64,
}

impl Schedule {
    /// A schedule whose first boundary is the one after `t_ms`.
    pub fn after(t_ms: i64, interval_ms: i64) -> Self {
        Self {
            next_ms: boundary_after(t_ms, interval_ms),
        }
    }

    pub fn started(&self) -> bool {
        self.next_ms != 0
    }

    /// Every boundary up to `now_ms` not evaluated yet, oldest first (at
    /// most [`MAX_CATCH_UP`]; older ones are skipped); starts the schedule
    /// after `now_ms` when it has not started.
    pub fn due_all(&mut self, now_ms: i64, interval_ms: i64) -> Vec<i64> {
        let iv = interval_ms.max(1);
        if self.next_ms == 0 {
            self.next_ms = boundary_after(now_ms, iv);
        }
        if now_ms - self.next_ms > MAX_CATCH_UP * iv {
            self.next_ms = (now_ms.div_euclid(iv) - MAX_CATCH_UP + 1) * iv;
        }
        let mut due = Vec::new();
        while self.next_ms <= now_ms {
            due.push(self.next_ms);
            self.next_ms += iv;
        }
        due
    }

    /// The newest boundary up to `now_ms` when one is due (the ones before
    /// it are passed over); starts the schedule when it has not started.
    pub fn due_newest(&mut self, now_ms: i64, interval_ms: i64) -> Option<i64> {
        let iv = interval_ms.max(1);
        if self.next_ms == 0 {
            self.next_ms = boundary_after(now_ms, iv);
            return None;
        }
        if now_ms < self.next_ms {
            return None;
        }
        let at = now_ms - now_ms.rem_euclid(iv);
        self.next_ms = at + iv;
        Some(at)
    }

    /// The oldest boundary due (a window that `now_ms` closed), the next one
    /// set after `now_ms`: one decision per call, on the window that ended
    /// first.
    pub fn due_first(&mut self, now_ms: i64, interval_ms: i64) -> Option<i64> {
        if self.next_ms == 0 || now_ms < self.next_ms {
            return None;
        }
        let end = self.next_ms;
        self.next_ms = boundary_after(now_ms, interval_ms.max(1));
        Some(end)
    }
}

/// The first multiple of `interval_ms` after `t_ms`.
pub fn boundary_after(t_ms: i64, interval_ms: i64) -> i64 {
    (t_ms.div_euclid(interval_ms) + 1) * interval_ms
}

/// Formats a window length the way the API accepts it: `1m`, `5m`, `1h`, `90s`.
pub fn window_name(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses `30s`, `5m`, `1h` or plain seconds.
pub fn parse_window(text: &str) -> Option<u64> {
    let text = text.trim();
    let (num, mult) = match text.chars().last()? {
        's' => (&text[..text.len() - 1], 1),
        'm' => (&text[..text.len() - 1], 60),
        'h' => (&text[..text.len() - 1], 3600),
        _ => (text, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_forward_only_and_advance_needs_a_start() {
        let mut c = EventClock::default();
        assert!(!c.advance(5_000));
        assert_eq!(c.observe(10_000), 10_000);
        assert_eq!(c.observe(9_000), 10_000);
        assert!(c.advance(12_000));
        assert!(!c.advance(11_000));
        assert_eq!(c.now_ms(), 12_000);
        assert_eq!(EventClock::at(c.now_ms()), c);
    }

    #[test]
    fn schedules_say_what_is_due() {
        let mut all = Schedule::default();
        assert_eq!(all.due_all(1_500, 1_000), Vec::<i64>::new());
        assert_eq!(all.due_all(3_200, 1_000), vec![2_000, 3_000]);
        assert_eq!(all.next_ms, 4_000);
        // A long jump replays at most MAX_CATCH_UP boundaries.
        assert_eq!(all.due_all(10_000_000, 1_000).len() as i64, MAX_CATCH_UP);

        let mut newest = Schedule::default();
        assert_eq!(newest.due_newest(1_500, 1_000), None);
        assert_eq!(newest.due_newest(1_900, 1_000), None);
        assert_eq!(newest.due_newest(4_200, 1_000), Some(4_000));
        assert_eq!(newest.next_ms, 5_000);

        let mut first = Schedule::after(30_000, 60_000);
        assert_eq!(first.due_first(59_999, 60_000), None);
        assert_eq!(first.due_first(200_000, 60_000), Some(60_000));
        assert_eq!(first.next_ms, 240_000);
    }

    #[test]
    fn window_names_round_trip() {
        for s in [30, 60, 300, 3600, 90] {
            assert_eq!(parse_window(&window_name(s)), Some(s));
        }
        assert_eq!(parse_window("5m"), Some(300));
        assert_eq!(parse_window("x"), None);
    }
}
