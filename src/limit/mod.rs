//! Rate limiting and the penalty box, without nginx: the arithmetic (GCRA and the
//! sliding-window counter as pure functions of a state of three `u64`s per key, the time and
//! the limit's parameters), and what a decision means for the request.
//!
//! - this file: a limit, its decision, and deciding a request against all its limits
//!   (two-phase, the strictest decision, the one-limit fast path);
//! - `gcra`, `window`: the two algorithms; `clock`: time and cross-worker clock skew;
//! - `ban`: the penalty box; `outcome`: a verdict -> what the request gets (status variable,
//!   fail policy, dry run, delay or reject, headers); `headers`: the rate-limit headers;
//! - `bounds`: the configuration limits on every value; `script`: the Redis Lua scripts and
//!   their batching; `cluster`: a request whose keys live in several Redis Cluster slots; `shm_table`: the shared-memory table of the local backend;
//!   `rewrite_scan`: which locations answer in the rewrite phase (`return`).
//!
//! The same math runs in three places and must agree: here (local shared-memory backend and
//! its tests), in the Redis Lua script (`script.rs`, one script for all limits of a
//! request), and in the tests that run both side by side.
//!
//! Time is in microseconds. Time comes from a [`Clock`] so tests advance a fake clock instead
//! of sleeping; the Redis backend uses Redis `TIME` so node clocks don't matter.
//!
//! Semantics follow nginx's `limit_req`: `rate` admits one request every `period / requests`;
//! `burst` lets that many extra requests queue; without `nodelay` queued requests are delayed
//! so they leave at the rate; `delay=N` lets the first N excess requests through at once and
//! delays the rest; `nodelay` delays none. A request beyond the burst is rejected.

mod ban;
pub mod bounds;
mod clock;
pub mod cluster;
mod gcra;
pub mod headers;
pub mod outcome;
pub mod rewrite_scan;
pub mod script;
pub mod shm_table;
mod window;

pub use ban::Ban;
pub use clock::{Clock, FakeClock};
pub use headers::{secs_ceil, HeaderMode, HeaderSet};

use crate::parse::Rate;
use gcra::gcra;
use window::sliding;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Generic cell rate algorithm: one theoretical arrival time per key.
    Gcra,
    /// Two adjacent fixed windows weighted by overlap: no 2x burst at a window boundary.
    SlidingWindow,
}

/// One limit as applied to one request (zone parameters plus `shield_limit`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub algorithm: Algorithm,
    pub rate: Rate,
    pub burst: u64,
    /// Excess requests allowed through without delay (`nodelay` = `burst`).
    pub delay: u64,
    pub cost: u64,
}

impl Limit {
    /// GCRA emission interval T in µs.
    pub fn interval_us(&self) -> u64 {
        (self.rate.interval_nanos() / 1000).max(1)
    }

    pub fn period_us(&self) -> u64 {
        self.rate.period.as_micros() as u64
    }

    /// Requests per window for the sliding window (and the `q=` of RateLimit-Policy).
    pub fn quota(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst + 1,
            Algorithm::SlidingWindow => self.rate.requests + self.burst,
        }
    }

    /// Window of the RateLimit-Policy `w=` parameter, in seconds.
    pub fn window_secs(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => ((self.burst + 1) * self.interval_us()).div_ceil(1_000_000).max(1),
            Algorithm::SlidingWindow => self.rate.period.as_secs().max(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Passed,
    Delayed,
    Rejected,
}

/// The answer for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// How many more requests (of this cost) would be admitted right now.
    pub remaining: u64,
    /// µs until the limit is fully replenished (RateLimit `t=`, X-RateLimit-Reset).
    pub reset_us: u64,
    /// Delayed: µs to wait. Rejected: µs until a retry could pass (Retry-After).
    pub wait_us: u64,
}

impl Decision {
    /// Orders decisions so the strictest wins: rejected > delayed (longer first) > passed
    /// (fewer remaining first).
    pub fn stricter_than(&self, other: &Decision) -> bool {
        (self.outcome, self.wait_us, u64::MAX - self.remaining)
            > (other.outcome, other.wait_us, u64::MAX - other.remaining)
    }
}

pub type State = [u64; 3];

/// Computes the decision and the state to store if the request is admitted. A rejection
/// returns the state unchanged: rejected requests consume nothing.
pub fn check(limit: &Limit, state: State, now_us: u64) -> (Decision, State) {
    match limit.algorithm {
        Algorithm::Gcra => gcra(limit, state, now_us),
        Algorithm::SlidingWindow => sliding(limit, state, now_us),
    }
}

/// How long a key's state must be kept, in µs after `now`, for the math to stay exact.
pub fn ttl_us(limit: &Limit, state: State, now: u64) -> u64 {
    match limit.algorithm {
        Algorithm::Gcra => state[0].saturating_sub(now) + 1_000_000,
        Algorithm::SlidingWindow => 2 * limit.period_us(),
    }
}

/// Until when (µs) forgetting a key's state would change a decision: while it holds more than
/// the one request a fresh key's state holds, the key is being limited. The shared-memory
/// table evicts such a key only after its bucket's idle ones.
pub fn protected_until_us(limit: &Limit, state: State) -> u64 {
    match limit.algorithm {
        Algorithm::Gcra => state[0].saturating_sub(limit.cost.saturating_mul(limit.interval_us())),
        Algorithm::SlidingWindow if state[1].saturating_add(state[2]) > limit.cost => {
            state[0].saturating_add(2 * limit.period_us())
        }
        Algorithm::SlidingWindow => 0,
    }
}

/// The index of the strictest decision (see [`Decision::stricter_than`]); the first wins a
/// tie. This is the one whose headers the response carries.
pub fn strictest(decisions: &[Decision]) -> Option<usize> {
    (0..decisions.len()).reduce(|a, b| if decisions[b].stricter_than(&decisions[a]) { b } else { a })
}

/// Checks every limit of a request and admits it only if all admit it (two-phase: a request
/// rejected by one limit consumes none of the others). Returns each decision, the strictest
/// one's index, and the states to store (None when rejected).
pub fn check_all(limits: &[(Limit, State)], now_us: u64) -> (Vec<Decision>, Option<usize>, Option<Vec<State>>) {
    let results: Vec<(Decision, State)> = limits.iter().map(|(l, s)| check(l, *s, now_us)).collect();
    let decisions: Vec<Decision> = results.iter().map(|(d, _)| *d).collect();
    let rejected = decisions.iter().any(|d| d.outcome == Outcome::Rejected);
    let commit = (!rejected).then(|| results.into_iter().map(|(_, s)| s).collect());
    let strictest = strictest(&decisions);
    (decisions, strictest, commit)
}

/// Decides one request against `limits` whose states are `states` and, if every limit admits
/// it (two-phase), replaces the states with the ones to store; returns whether it did. One
/// limit, the common case, allocates nothing. Every backend decides through this.
pub fn admit(limits: &[Limit], states: &mut [State], now_us: u64) -> (Decisions, bool) {
    if let ([limit], [state]) = (limits, &mut *states) {
        let (d, new) = check(limit, *state, now_us);
        let admitted = d.outcome != Outcome::Rejected;
        if admitted {
            *state = new;
        }
        return (Decisions::One(d), admitted);
    }
    let pairs: Vec<(Limit, State)> = limits.iter().copied().zip(states.iter().copied()).collect();
    let (decisions, _, commit) = check_all(&pairs, now_us);
    let admitted = commit.is_some();
    if let Some(new) = commit {
        states.copy_from_slice(&new);
    }
    (decisions.into(), admitted)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decisions {
    One(Decision),
    Many(Vec<Decision>),
}

impl core::ops::Deref for Decisions {
    type Target = [Decision];
    fn deref(&self) -> &[Decision] {
        match self {
            Decisions::One(d) => core::slice::from_ref(d),
            Decisions::Many(v) => v,
        }
    }
}

impl From<Vec<Decision>> for Decisions {
    fn from(v: Vec<Decision>) -> Self {
        match <[Decision; 1]>::try_from(v) {
            Ok([d]) => Decisions::One(d),
            Err(v) => Decisions::Many(v),
        }
    }
}

#[cfg(test)]
pub(super) mod testing {
    use super::*;
    use crate::parse::rate;

    pub fn limit(r: &str, burst: u64, delay: u64, algorithm: Algorithm) -> Limit {
        Limit { algorithm, rate: rate(r).unwrap(), burst, delay, cost: 1 }
    }

    /// Runs one request through `limit` at the clock's time, committing when admitted.
    pub fn hit(l: &Limit, state: &mut State, clock: &FakeClock) -> Decision {
        let (d, s) = check(l, *state, clock.now_us());
        *state = s;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::testing::limit;
    use super::*;

    #[test]
    fn check_all_is_two_phase_and_reports_strictest() {
        let loose = limit("100r/s", 10, 10, Algorithm::Gcra);
        let strict = limit("1r/m", 0, 0, Algorithm::Gcra);
        let (d, strictest, commit) = check_all(&[(loose, [0; 3]), (strict, [0; 3])], 0);
        assert!(commit.is_some());
        assert_eq!(strictest, Some(1), "fewer remaining");
        let states = commit.unwrap();
        let (d2, strictest2, commit2) = check_all(&[(loose, states[0]), (strict, states[1])], 0);
        assert_eq!(d2[1].outcome, Outcome::Rejected);
        assert_eq!(strictest2, Some(1));
        assert!(commit2.is_none(), "rejected by one: neither is consumed");
        assert_eq!(d[0].remaining, 10);
    }

    #[test]
    fn only_a_limited_key_is_protected_from_eviction() {
        let l = limit("10r/s", 5, 5, Algorithm::Gcra);
        let now = 1_000_000_000;
        let (_, fresh) = check(&l, [0; 3], now);
        assert!(protected_until_us(&l, fresh) <= now, "one request: as a fresh key, nothing to protect");
        let (_, twice) = check(&l, fresh, now);
        assert_eq!(protected_until_us(&l, twice), now + 100_000, "until its debt is one request's");
        let w = limit("10r/s", 0, 0, Algorithm::SlidingWindow);
        assert_eq!(protected_until_us(&w, [now, 0, 1]), 0);
        assert_eq!(protected_until_us(&w, [now, 1, 1]), now + 2_000_000);
        let ban = Ban { threshold: 3, window_us: 60_000_000, ban_us: 300_000_000 };
        assert_eq!(ban.protected_until_us(ban.record([0; 3], now)), 0, "one failure");
        let two = ban.record(ban.record([0; 3], now), now);
        assert_eq!(ban.protected_until_us(two), now + 60_000_000);
        let banned = ban.record(two, now);
        assert_eq!(ban.protected_until_us(banned), now + 300_000_000);
    }
}
