//! Rate-limit core: pure arithmetic, no nginx types, no I/O.
//!
//! - [`gcra`] and [`window`]: the two algorithms, as functions of a stored [`State`], the time
//!   and a [`Limit`]. Rejected requests never change the state (nginx's "rejects not counted").
//! - [`check_all`] / [`commit`]: two-phase accounting for the several limits of one request:
//!   every limit is checked first, and nothing is written unless all of them admit it.
//! - [`store`]: the [`Store`](store::Store) seam with an in-memory store for tests and the
//!   LRU-bounded table the local backend uses; [`lru`] is the bounded map itself (also used
//!   for the per-worker "rejected until" [`DecisionCache`](lru::DecisionCache)).
//! - [`penalty`]: the penalty box (`shield_ban`).
//! - [`headers`]: RateLimit / X-RateLimit / Retry-After values.
//! - [`keys`]: the config hash and the storage key layout shared by Redis and the local table.
//!
//! Time is an integer count of microseconds since the Unix epoch, taken from a [`Clock`]
//! (tests use [`FakeClock`] and advance it). Microseconds rather than nanoseconds because the
//! Redis scripts run the same math on Lua doubles, which are exact only below 2^53.
//!
//! Semantics follow nginx's `limit_req`: `rate` admits one request every `period / requests`;
//! `burst` more may arrive early; without `nodelay` the early ones are delayed so they are
//! served at the rate; `delay=D` lets the first `D` early requests through at once and delays
//! the rest; `nodelay` (= `delay=burst`) delays none. A request beyond the burst is rejected.

pub mod clock;
pub mod gcra;
pub mod headers;
pub mod keys;
pub mod lru;
pub mod penalty;
pub mod store;
pub mod window;

use core::time::Duration;

use crate::parse::Rate;

pub use clock::{Clock, FakeClock, SystemClock};

/// Largest product the math may form. Lua numbers are doubles; keeping every intermediate
/// below 2^50 keeps the Lua results bit-identical to the Rust ones.
pub const MAX_PRODUCT: u64 = 1 << 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Generic cell rate algorithm: one theoretical arrival time per key; supports delays.
    Gcra,
    /// Two adjacent fixed windows weighted by overlap: no 2x burst at a window boundary.
    /// Admits up to `requests + burst` per period and never delays.
    SlidingWindow,
}

impl Algorithm {
    /// Wire code used in the Redis script arguments.
    pub fn code(self) -> u64 {
        match self {
            Algorithm::Gcra => 1,
            Algorithm::SlidingWindow => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("cost must be at least 1")]
    ZeroCost,
    #[error("cost {cost} can never be admitted by a limit of {capacity} requests")]
    CostAboveCapacity { cost: u64, capacity: u64 },
    #[error("rate and burst are too large")]
    TooLarge,
}

/// One limit as applied to one request: the zone's algorithm and rate plus `burst`, `delay`
/// and `cost` from the `shield_limit` that applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub algorithm: Algorithm,
    pub rate: Rate,
    pub burst: u64,
    /// Early (excess) requests served without delay: 0 by default, `burst` for `nodelay`.
    pub delay: u64,
    /// Weight of one request, in requests.
    pub cost: u64,
}

impl Limit {
    /// `burst` with nginx's defaults: delayed excess (`delay=0`) and cost 1.
    pub fn new(algorithm: Algorithm, rate: Rate, burst: u64) -> Limit {
        Limit { algorithm, rate, burst, delay: 0, cost: 1 }
    }

    pub fn nodelay(self) -> Limit {
        Limit { delay: self.burst, ..self }
    }

    pub fn with_delay(self, delay: u64) -> Limit {
        Limit { delay: delay.min(self.burst), ..self }
    }

    pub fn with_cost(self, cost: u64) -> Limit {
        Limit { cost, ..self }
    }

    /// GCRA emission interval T in µs (at least 1).
    pub fn interval_us(&self) -> u64 {
        (self.rate.interval_nanos() / 1000).max(1)
    }

    pub fn period_us(&self) -> u64 {
        (self.rate.period.as_micros() as u64).max(1)
    }

    /// Requests admitted at once from an idle state: GCRA `burst + 1`, window `requests + burst`.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst.saturating_add(1),
            Algorithm::SlidingWindow => self.rate.requests.saturating_add(self.burst),
        }
    }

    /// Most requests admitted in any one period (RateLimit-Policy `q=`).
    pub fn quota(&self) -> u64 {
        self.rate.requests.saturating_add(self.burst)
    }

    /// Rejects limits whose math would leave the exact range of the Lua side, and costs that
    /// could never pass. Directive parsing should call this so `nginx -t` reports it.
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.cost == 0 {
            return Err(LimitError::ZeroCost);
        }
        let capacity = self.capacity();
        if self.cost > capacity {
            return Err(LimitError::CostAboveCapacity { cost: self.cost, capacity });
        }
        let scale = match self.algorithm {
            Algorithm::Gcra => self.interval_us(),
            Algorithm::SlidingWindow => self.period_us(),
        };
        match capacity.checked_add(1).and_then(|c| c.checked_mul(scale)) {
            Some(p) if p <= MAX_PRODUCT => Ok(()),
            _ => Err(LimitError::TooLarge),
        }
    }
}

/// Ordered by strictness: `Rejected > Delayed > Passed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Passed,
    Delayed,
    Rejected,
}

impl Outcome {
    /// Wire code used in the Redis script replies.
    pub fn code(self) -> u64 {
        match self {
            Outcome::Passed => 0,
            Outcome::Delayed => 1,
            Outcome::Rejected => 2,
        }
    }

    pub fn from_code(code: i64) -> Option<Outcome> {
        match code {
            0 => Some(Outcome::Passed),
            1 => Some(Outcome::Delayed),
            2 => Some(Outcome::Rejected),
            _ => None,
        }
    }
}

/// The answer of one limit (or one ban) for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// More requests (of cost 1) that would be admitted right now, after this one.
    pub remaining: u64,
    /// Until the limit is back to its idle state (RateLimit `t=`, X-RateLimit-Reset).
    pub reset_after: Duration,
    /// Rejected: until this request could pass (Retry-After). Zero otherwise.
    pub retry_after: Duration,
    /// Delayed: how long to hold the request. Zero otherwise.
    pub delay: Duration,
}

impl Decision {
    /// Builds a decision from the µs integers both backends compute.
    pub fn from_micros(outcome: Outcome, remaining: u64, reset_us: u64, retry_us: u64, delay_us: u64) -> Decision {
        Decision {
            outcome,
            remaining,
            reset_after: Duration::from_micros(reset_us),
            retry_after: Duration::from_micros(retry_us),
            delay: Duration::from_micros(delay_us),
        }
    }

    /// A ban in force: rejected until it expires.
    pub fn banned(left: Duration) -> Decision {
        Decision {
            outcome: Outcome::Rejected,
            remaining: 0,
            reset_after: left,
            retry_after: left,
            delay: Duration::ZERO,
        }
    }

    /// Rejected beats delayed beats passed; among equals the longer wait wins.
    fn strictness(&self) -> (Outcome, Duration) {
        (self.outcome, self.retry_after.max(self.delay))
    }
}

/// Index of the strictest decision (what the request gets), `None` for an empty slice.
pub fn strictest(decisions: &[Decision]) -> Option<usize> {
    (0..decisions.len()).max_by_key(|&i| decisions[i].strictness())
}

/// The state one key stores. `to_words`/`from_words` give a fixed-size form for shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// GCRA theoretical arrival time, µs.
    Gcra { tat: u64 },
    /// Sliding window: index of the current fixed window (`now / period`) and the counts of
    /// the previous and current windows.
    Window { index: u64, prev: u64, curr: u64 },
    /// Penalty box: matching responses in the window ending at `window_end`, and the ban end.
    Ban { count: u64, window_end: u64, banned_until: u64 },
}

impl State {
    pub fn to_words(self) -> [u64; 4] {
        match self {
            State::Gcra { tat } => [1, tat, 0, 0],
            State::Window { index, prev, curr } => [2, index, prev, curr],
            State::Ban { count, window_end, banned_until } => [3, count, window_end, banned_until],
        }
    }

    pub fn from_words(w: [u64; 4]) -> Option<State> {
        match w[0] {
            1 => Some(State::Gcra { tat: w[1] }),
            2 => Some(State::Window { index: w[1], prev: w[2], curr: w[3] }),
            3 => Some(State::Ban { count: w[1], window_end: w[2], banned_until: w[3] }),
            _ => None,
        }
    }
}

/// One limit applied to one request: its storage key (see [`keys::limit_key`]) and parameters.
/// Both backends take a slice of these: [`store::acquire`] and
/// [`crate::redis::scripts::encode_limit_call`].
#[derive(Debug, Clone, Copy)]
pub struct KeyedLimit<'a> {
    pub key: &'a [u8],
    pub limit: Limit,
}

/// A computed decision plus the write that admits it (`None` when rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub decision: Decision,
    pub update: Option<Update>,
}

/// The new state of one key and when it stops mattering (absolute µs): a store may forget
/// the key after `expires_at`, and Redis gets it as the `PX` of the `SET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub state: State,
    pub expires_at: u64,
}

/// Phase one for one limit: reads `state` (absent or of another algorithm = idle), writes nothing.
pub fn check(limit: &Limit, state: Option<State>, now: u64) -> Checked {
    match limit.algorithm {
        Algorithm::Gcra => {
            let tat = match state {
                Some(State::Gcra { tat }) => tat,
                _ => 0,
            };
            gcra::check(limit, tat, now)
        }
        Algorithm::SlidingWindow => window::check(limit, state, now),
    }
}

/// Phase one for all limits of a request. Returns the decisions in order and, only when no
/// limit rejects, the updates to [`commit`]. A request rejected by one limit thus consumes
/// nothing of the others.
pub fn check_all(limits: &[(Limit, Option<State>)], now: u64) -> (Vec<Decision>, Option<Vec<Update>>) {
    let checked: Vec<Checked> = limits.iter().map(|(limit, state)| check(limit, *state, now)).collect();
    let decisions = checked.iter().map(|c| c.decision).collect();
    let updates = checked.iter().map(|c| c.update).collect::<Option<Vec<_>>>();
    (decisions, updates)
}

/// Phase two: hands every update to `write` (the caller's store), in limit order.
pub fn commit(updates: Vec<Update>, mut write: impl FnMut(usize, Update)) {
    for (i, update) in updates.into_iter().enumerate() {
        write(i, update);
    }
}

/// `a * b / c` rounded down, the way the Lua side computes it (`idiv`).
pub(crate) fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    (u128::from(a) * u128::from(b) / u128::from(c.max(1))) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::rate;

    fn passed(reset_us: u64) -> Decision {
        Decision::from_micros(Outcome::Passed, 0, reset_us, 0, 0)
    }

    #[test]
    fn strictest_prefers_rejected_then_longest_delay() {
        let delayed = |ms| Decision { outcome: Outcome::Delayed, delay: Duration::from_millis(ms), ..passed(0) };
        let rejected = |ms| Decision { outcome: Outcome::Rejected, retry_after: Duration::from_millis(ms), ..passed(0) };
        assert_eq!(strictest(&[]), None);
        assert_eq!(strictest(&[passed(5), delayed(10), delayed(30), passed(9)]), Some(2));
        assert_eq!(strictest(&[delayed(900), rejected(1), passed(0)]), Some(1));
        assert_eq!(strictest(&[rejected(1), rejected(7)]), Some(1));
    }

    #[test]
    fn validate_rejects_impossible_costs_and_huge_products() {
        let l = Limit::new(Algorithm::Gcra, rate("10r/s").unwrap(), 4);
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(l.with_cost(0).validate(), Err(LimitError::ZeroCost));
        assert_eq!(l.with_cost(6).validate(), Err(LimitError::CostAboveCapacity { cost: 6, capacity: 5 }));
        assert_eq!(l.with_cost(5).validate(), Ok(()));
        let huge = Limit::new(Algorithm::SlidingWindow, rate("100000000r/h").unwrap(), 0);
        assert_eq!(huge.validate(), Err(LimitError::TooLarge));
    }

    #[test]
    fn nodelay_and_delay_are_bounded_by_burst() {
        let l = Limit::new(Algorithm::Gcra, rate("1r/s").unwrap(), 5);
        assert_eq!(l.nodelay().delay, 5);
        assert_eq!(l.with_delay(9).delay, 5);
        assert_eq!(l.with_delay(2).delay, 2);
    }

    #[test]
    fn state_words_round_trip() {
        for s in [
            State::Gcra { tat: 7 },
            State::Window { index: 1, prev: 2, curr: 3 },
            State::Ban { count: 4, window_end: 5, banned_until: 6 },
        ] {
            assert_eq!(State::from_words(s.to_words()), Some(s));
        }
        assert_eq!(State::from_words([0; 4]), None);
    }

    #[test]
    fn one_rejection_consumes_nothing() {
        let wide = Limit::new(Algorithm::Gcra, rate("10r/s").unwrap(), 10);
        let narrow = Limit::new(Algorithm::Gcra, rate("1r/s").unwrap(), 0);
        let now = 1_000_000_000;
        let busy = State::Gcra { tat: now + 1_000_000 };
        let (decisions, updates) = check_all(&[(wide, None), (narrow, Some(busy))], now);
        assert_eq!(decisions[0].outcome, Outcome::Passed);
        assert_eq!(decisions[1].outcome, Outcome::Rejected);
        assert!(updates.is_none(), "nothing may be committed");
        let (_, updates) = check_all(&[(wide, None), (narrow, None)], now);
        let mut written = Vec::new();
        commit(updates.expect("both pass"), |i, u| written.push((i, u.state)));
        assert_eq!(written.len(), 2);
    }
}
