//! The sliding-window counter: two adjacent fixed windows weighted by their overlap with the
//! last period, so there is no double burst at a window boundary.

use super::clock::observed_now;
use super::{Decision, Limit, Outcome, State};

/// Sliding window. State: [window start, previous window's count, current window's count].
/// A window start ahead of this worker's clock (written by a worker whose clock is ahead)
/// means that window has begun: decide at its start.
pub(super) fn sliding(limit: &Limit, state: State, now: u64) -> (Decision, State) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{hit, limit};
    use super::super::*;

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
}
