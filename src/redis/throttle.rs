//! Log throttling for failures that repeat: the first is logged, the ones that follow within a
//! second are counted, and the next line (at most one a second) carries the count. A Redis
//! outage under load fails every request and every reconnect attempt; logging each one made
//! 53 MB of error.log in 3 s. Pure: time is passed in.

/// One kind of repeated failure, per worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// When the last line was written (ms), if any.
    last_ms: Option<u64>,
    /// Failures since that line that were not logged.
    suppressed: u64,
}

impl Throttle {
    pub const INTERVAL_MS: u64 = 1000;

    /// A failure at `now_ms`: `Some(n)` if it is to be logged now, `n` being how many were
    /// not logged since the previous line; `None` if it is only counted.
    pub fn event(&mut self, now_ms: u64) -> Option<u64> {
        if self.last_ms.is_some_and(|last| now_ms < last + Self::INTERVAL_MS) {
            self.suppressed += 1;
            return None;
        }
        self.last_ms = Some(now_ms);
        Some(core::mem::take(&mut self.suppressed))
    }

    /// The failures not logged yet, for a closing line (e.g. "Redis answers again"); the next
    /// failure is then logged at once.
    pub fn finish(&mut self) -> u64 {
        self.last_ms = None;
        core::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_at_most_one_line_a_second_with_a_count() {
        let mut t = Throttle::default();
        assert_eq!(t.event(10_000), Some(0), "the first failure is logged");
        let logged: Vec<(u64, u64)> = (1..=3500).filter_map(|i| t.event(10_000 + i).map(|n| (10_000 + i, n))).collect();
        // 3.5 s of one failure a millisecond: one line a second, each counting what it hid.
        assert_eq!(logged, [(11_000, 999), (12_000, 999), (13_000, 999)]);
        assert_eq!(t.finish(), 500);
        assert_eq!(t.event(13_001), Some(0), "after a closing line, the next failure is logged");
    }
}
