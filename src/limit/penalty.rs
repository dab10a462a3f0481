//! Penalty box (`shield_ban zone=<name> status=401,403 threshold=<n>/<window> ban=<duration>`):
//! responses with a listed status are counted per key in a fixed window opened by the first
//! of them; when the count reaches `threshold` the key is banned until `now + ban` and the
//! count starts over. While banned, further responses are not counted (a ban is not extended
//! by the traffic it rejects). The Lua twin is `redis::scripts::BAN`.

use core::time::Duration;

use super::State;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PenaltyBox {
    pub statuses: Vec<u16>,
    pub threshold: u64,
    pub window: Duration,
    pub ban: Duration,
}

/// What recording one matching response did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Counted; `count` matching responses in the current window.
    Counted { count: u64 },
    /// Banned for `left` (just now, or already).
    Banned { left: Duration },
}

impl PenaltyBox {
    /// Whether a response status counts towards the ban.
    pub fn matches(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }

    /// Records one matching response; returns the new state to store (keep it until
    /// [`expires_at`]) and what happened.
    pub fn record(&self, state: Option<State>, now: u64) -> (State, Recorded) {
        let (count, window_end, banned_until) = match state {
            Some(State::Ban { count, window_end, banned_until }) => (count, window_end, banned_until),
            _ => (0, 0, 0),
        };
        if banned_until > now {
            let left = Duration::from_micros(banned_until - now);
            return (State::Ban { count, window_end, banned_until }, Recorded::Banned { left });
        }
        let (count, window_end) = if window_end > now {
            (count + 1, window_end)
        } else {
            (1, now.saturating_add(self.window.as_micros() as u64))
        };
        if count >= self.threshold {
            let banned_until = now.saturating_add(self.ban.as_micros() as u64);
            return (State::Ban { count: 0, window_end: 0, banned_until }, Recorded::Banned { left: self.ban });
        }
        (State::Ban { count, window_end, banned_until: 0 }, Recorded::Counted { count })
    }
}

/// How long the key stays banned, if it is.
pub fn banned_for(state: Option<State>, now: u64) -> Option<Duration> {
    match state {
        Some(State::Ban { banned_until, .. }) if banned_until > now => Some(Duration::from_micros(banned_until - now)),
        _ => None,
    }
}

/// When a penalty-box state stops mattering (for the store's TTL).
pub fn expires_at(state: State) -> u64 {
    match state {
        State::Ban { window_end, banned_until, .. } => window_end.max(banned_until),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{Clock, FakeClock};

    fn pbox() -> PenaltyBox {
        PenaltyBox { statuses: vec![401, 403], threshold: 3, window: Duration::from_secs(10), ban: Duration::from_secs(60) }
    }

    #[test]
    fn bans_at_threshold_and_ban_expires() {
        let p = pbox();
        let clock = FakeClock::at(1_000_000_000);
        let mut state = None;
        let record = |state: &mut Option<State>, clock: &FakeClock| {
            let (s, r) = p.record(*state, clock.now_us());
            *state = Some(s);
            r
        };
        assert_eq!(record(&mut state, &clock), Recorded::Counted { count: 1 });
        clock.advance(Duration::from_secs(1));
        assert_eq!(record(&mut state, &clock), Recorded::Counted { count: 2 });
        assert_eq!(record(&mut state, &clock), Recorded::Banned { left: Duration::from_secs(60) });
        clock.advance(Duration::from_secs(20));
        assert_eq!(banned_for(state, clock.now_us()), Some(Duration::from_secs(40)));
        assert_eq!(record(&mut state, &clock), Recorded::Banned { left: Duration::from_secs(40) }, "not extended");
        clock.advance(Duration::from_secs(40));
        assert_eq!(banned_for(state, clock.now_us()), None);
        assert_eq!(record(&mut state, &clock), Recorded::Counted { count: 1 }, "count started over");
    }

    #[test]
    fn window_expiry_resets_count() {
        let p = pbox();
        let now = 5_000_000;
        let (s, _) = p.record(None, now);
        let (s, r) = p.record(Some(s), now + 9_999_999);
        assert_eq!(r, Recorded::Counted { count: 2 });
        let (s, r) = p.record(Some(s), now + 10_000_000);
        assert_eq!(r, Recorded::Counted { count: 1 });
        assert_eq!(expires_at(s), now + 20_000_000);
    }

    #[test]
    fn matches_listed_statuses_only() {
        assert!(pbox().matches(403));
        assert!(!pbox().matches(404));
    }
}
