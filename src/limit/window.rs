//! Sliding-window counter: the count of the current fixed window plus the previous window's
//! count weighted by how much of it still overlaps the sliding window. Unlike a fixed window
//! it admits no 2x burst around a window boundary.
//!
//! With period `P`, time into the current window `e` and quota `Q = requests + burst`, a
//! request of cost `c` is admitted when `prev*(P-e) + (curr+c)*P <= Q*P` (all in integers:
//! no rounding differs between Rust and Lua). The window algorithm never delays.

use super::{mul_div, Checked, Decision, Limit, Outcome, State, Update};

pub fn check(limit: &Limit, state: Option<State>, now: u64) -> Checked {
    let p = limit.period_us();
    let quota = limit.capacity();
    let index = now / p;
    let elapsed = now - index * p;
    let (prev, curr) = match state {
        Some(State::Window { index: i, prev, curr }) if i == index => (prev, curr),
        Some(State::Window { index: i, curr, .. }) if i.wrapping_add(1) == index => (curr, 0),
        _ => (0, 0),
    };
    // Everything below is scaled by P so the weighting needs no division.
    let used = prev * (p - elapsed) + curr * p;
    let budget = quota * p;
    let after = used + limit.cost * p;
    if after > budget {
        let decision = Decision::from_micros(
            Outcome::Rejected,
            budget.saturating_sub(used) / p,
            reset_after(p, elapsed, prev, curr),
            retry_after(limit, p, elapsed, prev, curr),
            0,
        );
        return Checked { decision, update: None };
    }
    let curr = curr + limit.cost;
    Checked {
        decision: Decision::from_micros(Outcome::Passed, (budget - after) / p, reset_after(p, elapsed, prev, curr), 0, 0),
        // The counts matter until the end of the next window, when this one becomes "prev"
        // and fully slides out.
        update: Some(Update { state: State::Window { index, prev, curr }, expires_at: now - elapsed + 2 * p }),
    }
}

/// Until every counted request has slid out of the window.
fn reset_after(p: u64, elapsed: u64, prev: u64, curr: u64) -> u64 {
    if curr > 0 {
        2 * p - elapsed
    } else if prev > 0 {
        p - elapsed
    } else {
        0
    }
}

/// Until the weighted count leaves room for `cost`: later in this window if the previous
/// window's share alone is in the way, else in the next window, when `curr` becomes `prev`.
fn retry_after(limit: &Limit, p: u64, elapsed: u64, prev: u64, curr: u64) -> u64 {
    let quota = limit.capacity();
    if let Some(room) = quota.checked_sub(curr + limit.cost) {
        // prev*(P-e) <= room*P  <=>  e >= P - room*P/prev; prev > 0 since we were rejected.
        return (p - mul_div(room, p, prev)).saturating_sub(elapsed);
    }
    let to_next = p - elapsed;
    match quota.checked_sub(limit.cost) {
        Some(_) if curr == 0 => to_next,
        Some(room) => to_next + p.saturating_sub(mul_div(room, p, curr)),
        // A cost above the quota never passes (`Limit::validate` refuses it); say one period.
        None => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{Algorithm, Clock, FakeClock};
    use crate::parse::rate;
    use core::time::Duration;

    /// Starts exactly on a one-minute boundary.
    const START: u64 = 28_333_333 * 60_000_000;

    struct Counter {
        limit: Limit,
        state: Option<State>,
        clock: FakeClock,
    }

    impl Counter {
        fn new(r: &str, burst: u64) -> Counter {
            let limit = Limit::new(Algorithm::SlidingWindow, rate(r).unwrap(), burst);
            Counter { limit, state: None, clock: FakeClock::at(START) }
        }

        fn hit(&mut self) -> Decision {
            let c = check(&self.limit, self.state, self.clock.now_us());
            if let Some(u) = c.update {
                self.state = Some(u.state);
            }
            c.decision
        }

        fn admitted(&mut self, n: usize) -> usize {
            (0..n).filter(|_| self.hit().outcome == Outcome::Passed).count()
        }
    }

    #[test]
    fn admits_quota_within_one_window() {
        let mut c = Counter::new("10r/m", 0);
        assert_eq!(c.admitted(25), 10);
    }

    #[test]
    fn no_double_burst_at_window_boundary() {
        let mut c = Counter::new("10r/m", 0);
        c.clock.advance(Duration::from_secs(59));
        assert_eq!(c.admitted(10), 10, "end of the first window");
        c.clock.advance(Duration::from_secs(2));
        // One second into the next window the previous one still weighs 59/60 of its 10.
        assert_eq!(c.admitted(10), 0);
        c.clock.advance(Duration::from_secs(30));
        // 31 s in: previous weighs 29/60 * 10 = 4.83, so 5 fit.
        assert_eq!(c.admitted(10), 5);
    }

    #[test]
    fn steady_flow_never_exceeds_quota_in_any_sixty_second_span() {
        let mut c = Counter::new("10r/m", 0);
        let mut log = Vec::new();
        for step in 0..600u64 {
            if c.hit().outcome == Outcome::Passed {
                log.push(step);
            }
            c.clock.advance(Duration::from_millis(500));
        }
        // Steps are 0.5 s; a sliding 60 s span is 120 steps.
        for (i, &s) in log.iter().enumerate() {
            let in_span = log[i..].iter().take_while(|&&t| t < s + 120).count();
            assert!(in_span <= 10, "{in_span} admitted in 60s from step {s}");
        }
        // 300 s at 10r/m: a steady flow gets most of the 50 (the weighting is conservative).
        assert!(log.len() >= 45, "steady flow keeps the rate: {}", log.len());
    }

    #[test]
    fn burst_adds_to_quota_and_cost_weighs() {
        let mut c = Counter::new("10r/m", 5);
        assert_eq!(c.admitted(20), 15);
        let mut heavy = Counter::new("10r/m", 0);
        heavy.limit = heavy.limit.with_cost(4);
        assert_eq!(heavy.admitted(5), 2);
        let d = heavy.hit();
        assert_eq!(d.remaining, 2);
    }

    #[test]
    fn remaining_reset_retry() {
        let mut c = Counter::new("10r/m", 0);
        c.clock.advance(Duration::from_secs(15));
        let first = c.hit();
        assert_eq!(first.remaining, 9);
        assert_eq!(first.reset_after, Duration::from_secs(105), "until the next window ends");
        c.admitted(9);
        let rejected = c.hit();
        assert_eq!(rejected.outcome, Outcome::Rejected);
        assert_eq!(rejected.remaining, 0);
        // Next window: prev = 10 must weigh <= 9, i.e. e >= 6 s into it: 45 s + 6 s.
        assert_eq!(rejected.retry_after, Duration::from_secs(51));
        c.clock.advance(rejected.retry_after - Duration::from_micros(1));
        assert_eq!(c.hit().outcome, Outcome::Rejected, "one µs early");
        c.clock.advance(Duration::from_micros(1));
        assert_eq!(c.hit().outcome, Outcome::Passed, "exactly at retry_after");
    }

    #[test]
    fn retry_within_the_same_window_when_prev_blocks() {
        let mut c = Counter::new("10r/m", 0);
        c.clock.advance(Duration::from_secs(59));
        c.admitted(10);
        c.clock.advance(Duration::from_secs(31));
        c.admitted(10); // 5 pass
        let r = c.hit();
        assert_eq!(r.outcome, Outcome::Rejected);
        c.clock.advance(r.retry_after);
        assert_eq!(c.hit().outcome, Outcome::Passed);
    }

    #[test]
    fn stale_state_two_windows_old_is_idle() {
        let mut c = Counter::new("10r/m", 0);
        c.admitted(10);
        c.clock.advance(Duration::from_secs(120));
        assert_eq!(c.admitted(12), 10);
    }
}
