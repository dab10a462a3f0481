//! GCRA (generic cell rate algorithm): one theoretical arrival time per key, nginx
//! `limit_req`'s semantics for `burst`, `delay` and `nodelay`.

use super::clock::observed_now;
use super::{Decision, Limit, Outcome, State};

/// GCRA. State: [theoretical arrival time, time of the last write, 0] (the Redis backend
/// stores only the first: one clock, Redis `TIME`). Arithmetic saturates: configuration
/// bounds keep every value far below `u64::MAX` (see `bounds`), saturation only guards them.
pub(super) fn gcra(limit: &Limit, state: State, now: u64) -> (Decision, State) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{hit, limit};
    use super::super::*;

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
}
