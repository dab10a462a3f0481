//! Rate-limit arithmetic: GCRA and the sliding-window counter, as pure functions of a state
//! (three `u64`s per key), the time and the limit's parameters.
//!
//! The same math runs in three places and must agree: here (local shared-memory backend and
//! its tests), in the Redis Lua script (`redis_script.rs`, one script for all limits of a
//! request), and in the tests that run both side by side.
//!
//! Time is in microseconds. Time comes from a [`Clock`] so tests advance a fake clock instead
//! of sleeping; the Redis backend uses Redis `TIME` so node clocks don't matter.
//!
//! Semantics follow nginx's `limit_req`: `rate` admits one request every `period / requests`;
//! `burst` lets that many extra requests queue; without `nodelay` queued requests are delayed
//! so they leave at the rate; `delay=N` lets the first N excess requests through at once and
//! delays the rest; `nodelay` delays none. A request beyond the burst is rejected.

pub mod bounds;
pub mod rewrite_scan;
pub mod script;
pub mod shm_table;

use crate::parse::Rate;
use crate::redis::resp::push_dec;

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

/// Workers decide with their own cached clocks, which may lag each other by a loop iteration
/// (or by `timer_resolution`). A state written by a worker whose clock is ahead carries that
/// worker's time; a lagging worker decides at that time instead of its own, so the other's
/// clock is never counted as debt. A state further ahead than this (limit_req's threshold) is
/// not skew but a clock stepped back: its times mean nothing now and it counts as fresh (a
/// state kept would stay ahead of every later request and never expire, as rejections store
/// nothing).
pub const MAX_CLOCK_SKEW_US: u64 = 60_000_000;

/// The time to decide at, given when the state was last written (`seen`) and this worker's
/// clock; None when the clock stepped back.
fn observed_now(seen: u64, now: u64) -> Option<u64> {
    match seen.checked_sub(now) {
        Some(ahead) if ahead > MAX_CLOCK_SKEW_US => None,
        Some(_) => Some(seen),
        None => Some(now),
    }
}

/// GCRA. State: [theoretical arrival time, time of the last write, 0] (the Redis backend
/// stores only the first: one clock, Redis `TIME`). Arithmetic saturates: configuration
/// bounds keep every value far below `u64::MAX` (see `bounds`), saturation only guards them.
fn gcra(limit: &Limit, state: State, now: u64) -> (Decision, State) {
    let (now, state) = match observed_now(state[1], now) {
        Some(seen) => (seen, state),
        None => (now, [0; 3]),
    };
    let t = limit.interval_us();
    let increment = limit.cost.saturating_mul(t);
    let tolerance = (limit.burst.saturating_add(1)).saturating_mul(t);
    let tat = state[0].max(now);
    let new_tat = tat.saturating_add(increment);
    let ahead = new_tat - now; // how far the schedule runs ahead of now, this request included
    if ahead > tolerance {
        let decision =
            Decision { outcome: Outcome::Rejected, remaining: 0, reset_us: tat - now, wait_us: ahead - tolerance };
        return (decision, state);
    }
    // Excess requests, as nginx counts them: those beyond the one the rate allows now.
    let excess_us = ahead.saturating_sub(t);
    let free_us = limit.delay.saturating_mul(t);
    let (outcome, wait_us) =
        if excess_us > free_us { (Outcome::Delayed, excess_us - free_us) } else { (Outcome::Passed, 0) };
    let remaining = (tolerance - ahead) / t / limit.cost.max(1);
    (Decision { outcome, remaining, reset_us: ahead, wait_us }, [new_tat, now, 0])
}

/// Sliding window. State: [window start, previous window's count, current window's count].
/// A window start ahead of this worker's clock (written by a worker whose clock is ahead)
/// means that window has begun: decide at its start.
fn sliding(limit: &Limit, state: State, now: u64) -> (Decision, State) {
    let (now, state) = match observed_now(state[0], now) {
        Some(seen) => (seen, state),
        None => (now, [0; 3]),
    };
    let w = limit.period_us().max(1);
    let quota = limit.quota();
    let window = now - now % w;
    let [mut start, mut previous, mut current] = state;
    if start != window {
        // Roll forward: the current window becomes the previous one if adjacent.
        previous = if start.saturating_add(w) == window { current } else { 0 };
        current = 0;
        start = window;
    }
    let elapsed = now - window;
    // Weighted count, in fixed point (×w) to stay exact in integers.
    let weighted = previous.saturating_mul(w - elapsed).saturating_add(current.saturating_mul(w));
    let needed = weighted.saturating_add(limit.cost.saturating_mul(w));
    let reset_us = w - elapsed + if current > 0 { w } else { 0 };
    let allowed = quota.saturating_mul(w);
    if needed > allowed {
        // Time until the previous window's weight has decayed enough for this request.
        let wait_us = if previous == 0 {
            w - elapsed
        } else {
            let excess = needed - allowed; // must drop this much weight, at `previous` per µs
            excess.div_ceil(previous).min(w - elapsed)
        };
        let decision = Decision { outcome: Outcome::Rejected, remaining: 0, reset_us, wait_us: wait_us.max(1) };
        return (decision, [start, previous, current]);
    }
    let used = (weighted / w).saturating_add(limit.cost);
    let remaining = quota.saturating_sub(used) / limit.cost.max(1);
    (
        Decision { outcome: Outcome::Passed, remaining, reset_us, wait_us: 0 },
        [start, previous, current.saturating_add(limit.cost)],
    )
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

/// A clock in µs. The real one is the nginx cached time; tests use [`FakeClock`].
pub trait Clock {
    fn now_us(&self) -> u64;
}

#[derive(Debug, Default)]
pub struct FakeClock(pub std::cell::Cell<u64>);

impl FakeClock {
    pub fn advance_ms(&self, ms: u64) {
        self.0.set(self.0.get() + ms * 1000);
    }
}

impl Clock for FakeClock {
    fn now_us(&self) -> u64 {
        self.0.get()
    }
}

/// Decisions in limit order; one limit, the common case, needs no allocation.
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

/// Response headers for the strictest decision.
pub struct HeaderSet {
    pub draft: bool,
    pub legacy: bool,
}

/// Rendered rate-limit headers: values side by side in one buffer, no allocation per header.
pub struct Rendered {
    pub buf: Vec<u8>,
    /// (name, start, end) of each value in `buf`.
    pub headers: [(&'static str, usize, usize); 6],
    pub len: usize,
}

impl Rendered {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.headers[..self.len].iter().map(|&(n, a, b)| (n, &self.buf[a..b]))
    }
}

impl HeaderSet {
    /// IETF draft `RateLimit-Policy`/`RateLimit` (structured fields) and legacy
    /// `X-RateLimit-*`, plus `Retry-After` on rejection, rendered into `buf` (cleared first,
    /// so a caller can reuse one buffer for every request).
    pub fn render_into(&self, zone: &str, limit: &Limit, d: &Decision, buf: Vec<u8>) -> Rendered {
        let mut out = Rendered { buf, headers: [("", 0, 0); 6], len: 0 };
        out.buf.clear();
        let reset = secs_ceil(d.reset_us);
        let header = |out: &mut Rendered, name: &'static str, parts: &[Part]| {
            let start = out.buf.len();
            for p in parts {
                match p {
                    Part::Text(t) => out.buf.extend_from_slice(t.as_bytes()),
                    Part::Num(n) => push_dec(&mut out.buf, *n),
                }
            }
            out.headers[out.len] = (name, start, out.buf.len());
            out.len += 1;
        };
        use Part::{Num, Text};
        if self.draft {
            header(
                &mut out,
                "RateLimit-Policy",
                &[Text("\""), Text(zone), Text("\";q="), Num(limit.quota()), Text(";w="), Num(limit.window_secs())],
            );
            header(
                &mut out,
                "RateLimit",
                &[Text("\""), Text(zone), Text("\";r="), Num(d.remaining), Text(";t="), Num(reset)],
            );
        }
        if self.legacy {
            header(&mut out, "X-RateLimit-Limit", &[Num(limit.quota())]);
            header(&mut out, "X-RateLimit-Remaining", &[Num(d.remaining)]);
            header(&mut out, "X-RateLimit-Reset", &[Num(reset)]);
        }
        if d.outcome == Outcome::Rejected && (self.draft || self.legacy) {
            header(&mut out, "Retry-After", &[Num(secs_ceil(d.wait_us).max(1))]);
        }
        out
    }
}

enum Part<'a> {
    Text(&'a str),
    Num(u64),
}

pub fn secs_ceil(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::rate;

    fn limit(r: &str, burst: u64, delay: u64, algorithm: Algorithm) -> Limit {
        Limit { algorithm, rate: rate(r).unwrap(), burst, delay, cost: 1 }
    }

    /// `(name, value)` pairs, as `render_into` renders them.
    fn render(h: HeaderSet, zone: &str, limit: &Limit, d: &Decision) -> Vec<(&'static str, String)> {
        let r = h.render_into(zone, limit, d, Vec::new());
        r.iter().map(|(n, v)| (n, String::from_utf8_lossy(v).into_owned())).collect()
    }

    /// Runs one request through `limit` at the clock's time, committing when admitted.
    fn hit(l: &Limit, state: &mut State, clock: &FakeClock) -> Decision {
        let (d, s) = check(l, *state, clock.now_us());
        *state = s;
        d
    }

    #[test]
    fn gcra_without_burst_admits_one_per_interval() {
        let l = limit("10r/s", 0, 0, Algorithm::Gcra);
        let clock = FakeClock::default();
        clock.advance_ms(1_000_000);
        let mut s = [0; 3];
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Passed);
        let d = hit(&l, &mut s, &clock);
        assert_eq!(d.outcome, Outcome::Rejected);
        assert_eq!(d.wait_us, 100_000, "next slot in one interval");
        clock.advance_ms(99);
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Rejected, "window edge: 1 ms early");
        clock.advance_ms(1);
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Passed, "window edge: exactly on time");
    }

    #[test]
    fn gcra_burst_nodelay_admits_burst_plus_one_then_rate() {
        let l = limit("100r/h", 99, 99, Algorithm::Gcra);
        let clock = FakeClock::default();
        let mut s = [0; 3];
        let admitted = (0..300).filter(|_| hit(&l, &mut s, &clock).outcome == Outcome::Passed).count();
        assert_eq!(admitted, 100, "exactly the quota");
        clock.advance_ms(36_000); // one interval
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Passed);
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Rejected);
    }

    #[test]
    fn gcra_burst_without_nodelay_delays_excess_at_the_rate() {
        let l = limit("10r/s", 5, 0, Algorithm::Gcra);
        let clock = FakeClock::default();
        let mut s = [0; 3];
        let first = hit(&l, &mut s, &clock);
        assert_eq!((first.outcome, first.wait_us), (Outcome::Passed, 0));
        for i in 1..=5 {
            let d = hit(&l, &mut s, &clock);
            assert_eq!(d.outcome, Outcome::Delayed);
            assert_eq!(d.wait_us, i * 100_000, "excess request {i} leaves at the rate");
        }
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Rejected, "beyond the burst");
    }

    #[test]
    fn gcra_delay_threshold_lets_first_excess_through() {
        let l = limit("10r/s", 5, 2, Algorithm::Gcra);
        let clock = FakeClock::default();
        let mut s = [0; 3];
        let outcomes: Vec<_> = (0..7).map(|_| hit(&l, &mut s, &clock)).collect();
        assert_eq!(outcomes[0].outcome, Outcome::Passed);
        assert_eq!(outcomes[1].outcome, Outcome::Passed);
        assert_eq!(outcomes[2].outcome, Outcome::Passed, "2 excess without delay");
        assert_eq!((outcomes[3].outcome, outcomes[3].wait_us), (Outcome::Delayed, 100_000));
        assert_eq!(outcomes[5].outcome, Outcome::Delayed);
        assert_eq!(outcomes[6].outcome, Outcome::Rejected);
    }

    #[test]
    fn gcra_remaining_reset_and_cost() {
        let mut l = limit("60r/m", 9, 9, Algorithm::Gcra);
        let clock = FakeClock::default();
        let mut s = [0; 3];
        let d = hit(&l, &mut s, &clock);
        assert_eq!((d.remaining, d.reset_us), (9, 1_000_000));
        l.cost = 3;
        let d = hit(&l, &mut s, &clock);
        assert_eq!((d.remaining, d.reset_us), (2, 4_000_000), "cost 3: 6 left = 2 more requests");
        assert_eq!(l.quota(), 10);
        assert_eq!(l.window_secs(), 10);
    }

    #[test]
    fn rejected_requests_consume_nothing() {
        let l = limit("1r/s", 0, 0, Algorithm::Gcra);
        let clock = FakeClock::default();
        let mut s = [0; 3];
        hit(&l, &mut s, &clock);
        let before = s;
        for _ in 0..100 {
            assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Rejected);
        }
        assert_eq!(s, before, "a flood does not push the schedule out");
        clock.advance_ms(1000);
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Passed);
    }

    #[test]
    fn a_lagging_worker_clock_is_not_debt() {
        // 100000r/s burst 1000: a 10 ms tolerance. Worker A's clock runs 20 ms ahead of B's.
        let l = limit("100000r/s", 1000, 1000, Algorithm::Gcra);
        let (a, b) = (FakeClock::default(), FakeClock::default());
        b.advance_ms(1_000_000);
        a.advance_ms(1_000_020);
        let mut s = [0; 3];
        for i in 0..200 {
            let clock = if i % 2 == 0 { &a } else { &b };
            let d = hit(&l, &mut s, clock);
            assert_eq!(d.outcome, Outcome::Passed, "request {i}: 200 of a 1001 burst");
        }
        // The lagging worker still sees the real debt: 1001 in one instant fill the burst.
        let admitted = (0..1000).filter(|_| hit(&l, &mut s, &b).outcome == Outcome::Passed).count();
        assert_eq!(admitted, 801, "exactly the quota, whoever's clock");
    }

    #[test]
    fn a_clock_stepped_back_forgets_the_state_instead_of_locking_the_key() {
        let l = limit("1r/s", 4, 4, Algorithm::Gcra);
        let clock = FakeClock::default();
        clock.advance_ms(10_000_000);
        let mut s = [0; 3];
        for _ in 0..5 {
            hit(&l, &mut s, &clock);
        }
        assert_eq!(hit(&l, &mut s, &clock).outcome, Outcome::Rejected);
        // The system clock goes back an hour: the state's times mean nothing any more.
        let back = FakeClock::default();
        back.advance_ms(10_000_000 - 3_600_000);
        let admitted = (0..10).filter(|_| hit(&l, &mut s, &back).outcome == Outcome::Passed).count();
        assert_eq!(admitted, 5, "a fresh quota, not an hour locked out");
    }

    #[test]
    fn sliding_window_started_by_a_worker_ahead_is_not_reset() {
        let l = limit("10r/s", 0, 0, Algorithm::SlidingWindow);
        let (a, b) = (FakeClock::default(), FakeClock::default());
        a.advance_ms(100_000); // A has entered a new window
        b.advance_ms(99_995); // B still sees the end of the previous one
        let mut s = [0; 3];
        let admitted =
            (0..20).filter(|i| hit(&l, &mut s, if i % 2 == 0 { &a } else { &b }).outcome == Outcome::Passed).count();
        assert_eq!(admitted, 10, "one quota, not a fresh window per clock");
    }

    #[test]
    fn sliding_window_has_no_boundary_double_burst() {
        let l = limit("10r/m", 0, 0, Algorithm::SlidingWindow);
        let clock = FakeClock::default();
        clock.advance_ms(60_000 * 1000);
        clock.advance_ms(59_000); // 1 s before a window boundary
        let mut s = [0; 3];
        let first = (0..20).filter(|_| hit(&l, &mut s, &clock).outcome == Outcome::Passed).count();
        assert_eq!(first, 10);
        clock.advance_ms(2_000); // 1 s after the boundary: a fixed window would admit 10 more
        let second = (0..20).filter(|_| hit(&l, &mut s, &clock).outcome == Outcome::Passed).count();
        assert_eq!(second, 0, "previous window still weighs ~98%");
        clock.advance_ms(30_000); // half way: previous window weighs ~48%
        let third = (0..20).filter(|_| hit(&l, &mut s, &clock).outcome == Outcome::Passed).count();
        assert_eq!(third, 5);
        clock.advance_ms(120_000); // two windows later: fresh
        let fresh = (0..20).filter(|_| hit(&l, &mut s, &clock).outcome == Outcome::Passed).count();
        assert_eq!(fresh, 10);
    }

    #[test]
    fn sliding_window_rejection_says_when_to_retry() {
        let l = limit("2r/s", 0, 0, Algorithm::SlidingWindow);
        let clock = FakeClock::default();
        clock.advance_ms(10_000);
        let mut s = [0; 3];
        hit(&l, &mut s, &clock);
        let d = hit(&l, &mut s, &clock);
        assert_eq!((d.outcome, d.remaining), (Outcome::Passed, 0));
        let r = hit(&l, &mut s, &clock);
        assert_eq!(r.outcome, Outcome::Rejected);
        assert_eq!(r.wait_us, 1_000_000, "no previous window: wait for the next one");
    }

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

    #[test]
    fn headers_render_draft_and_legacy() {
        let l = limit("100r/m", 99, 99, Algorithm::Gcra);
        let d = Decision { outcome: Outcome::Rejected, remaining: 0, reset_us: 17_500_000, wait_us: 600_000 };
        let h = render(HeaderSet { draft: true, legacy: true }, "api", &l, &d);
        assert!(h.contains(&("RateLimit-Policy", "\"api\";q=100;w=60".into())));
        assert!(h.contains(&("RateLimit", "\"api\";r=0;t=18".into())));
        assert!(h.contains(&("X-RateLimit-Limit", "100".into())));
        assert!(h.contains(&("Retry-After", "1".into())));
        let none = render(HeaderSet { draft: false, legacy: false }, "api", &l, &d);
        assert!(none.is_empty());
    }
}
