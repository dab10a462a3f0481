//! The penalty box behind `shield_ban`: failures counted per key in a window, and the ban
//! they earn.

use super::State;

/// Penalty box: counts matching responses per key in a window; `threshold` of them ban the
/// key for `ban_us`. State: [window_start, count, banned_until].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub threshold: u64,
    pub window_us: u64,
    pub ban_us: u64,
}

impl Ban {
    /// Records one matching response; returns the new state.
    pub fn record(&self, state: State, now: u64) -> State {
        let [start, count, until] = state;
        let (start, count) = if now >= start + self.window_us { (now, 1) } else { (start, count + 1) };
        let until = if count >= self.threshold { now + self.ban_us } else { until };
        [start, count, until]
    }

    /// µs left on the ban, if the key is banned.
    pub fn banned_for(state: State, now: u64) -> Option<u64> {
        (state[2] > now).then(|| state[2] - now)
    }

    pub fn ttl_us(&self, state: State, now: u64) -> u64 {
        (state[0] + self.window_us).max(state[2]).saturating_sub(now) + 1_000_000
    }

    /// Until when (µs) the state matters more than a fresh key's: while banned, and while
    /// more than one failure is counted in the window.
    pub fn protected_until_us(&self, state: State) -> u64 {
        let counting = if state[1] >= 2 { state[0] + self.window_us } else { 0 };
        counting.max(state[2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_after_threshold_then_expires() {
        let ban = Ban { threshold: 3, window_us: 60_000_000, ban_us: 300_000_000 };
        let mut s = [0; 3];
        for t in [1, 2] {
            s = ban.record(s, t * 1_000_000);
            assert_eq!(Ban::banned_for(s, t * 1_000_000), None);
        }
        s = ban.record(s, 3_000_000);
        assert_eq!(Ban::banned_for(s, 3_000_000), Some(300_000_000));
        assert_eq!(Ban::banned_for(s, 303_000_000), None, "ban expires");
        let fresh = ban.record(s, 200_000_000);
        assert_eq!(fresh[1], 1, "a new window starts the count again");
    }
}
