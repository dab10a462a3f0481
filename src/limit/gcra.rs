//! GCRA on one theoretical arrival time (TAT) per key.
//!
//! With emission interval `T` and capacity `C = (burst + 1) * T`, a request of cost `c` at
//! `now` is admitted when `max(tat, now) + c*T - now <= C`; the new TAT is that sum. How far
//! the request's slot lies ahead of `now` (`max(tat, now) - now`, in units of `T`) is nginx's
//! `excess`: beyond `delay` requests, the request is held until its slot is `delay*T` away.
//! The Lua twin lives in `redis::scripts` and must stay line-for-line equivalent.

use super::{Checked, Decision, Limit, Outcome, State, Update};

pub fn check(limit: &Limit, stored_tat: u64, now: u64) -> Checked {
    let t = limit.interval_us();
    let capacity = limit.burst.saturating_add(1).saturating_mul(t);
    let tat = stored_tat.max(now);
    let new_tat = tat.saturating_add(limit.cost.saturating_mul(t));
    let allow_at = new_tat.saturating_sub(capacity);
    if allow_at > now {
        let remaining = capacity.saturating_sub(tat - now) / t;
        let decision = Decision::from_micros(Outcome::Rejected, remaining, tat - now, allow_at - now, 0);
        return Checked { decision, update: None };
    }
    let delay = (tat - now).saturating_sub(limit.delay.saturating_mul(t));
    let outcome = if delay > 0 { Outcome::Delayed } else { Outcome::Passed };
    let remaining = (capacity - (new_tat - now)) / t;
    Checked {
        decision: Decision::from_micros(outcome, remaining, new_tat - now, 0, delay),
        update: Some(Update { state: State::Gcra { tat: new_tat }, expires_at: new_tat }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{Algorithm, Clock, FakeClock};
    use crate::parse::rate;
    use core::time::Duration;

    const START: u64 = 1_700_000_000_000_000;

    /// Runs requests against one key, committing admitted ones like a store would.
    struct Bucket {
        limit: Limit,
        tat: u64,
        clock: FakeClock,
    }

    impl Bucket {
        fn new(limit: Limit) -> Bucket {
            Bucket { limit, tat: 0, clock: FakeClock::at(START) }
        }

        fn hit(&mut self) -> Decision {
            let checked = check(&self.limit, self.tat, self.clock.now_us());
            if let Some(Update { state: State::Gcra { tat }, .. }) = checked.update {
                self.tat = tat;
            }
            checked.decision
        }

        fn outcomes(&mut self, n: usize) -> Vec<Outcome> {
            (0..n).map(|_| self.hit().outcome).collect()
        }
    }

    fn gcra(r: &str, burst: u64) -> Limit {
        Limit::new(Algorithm::Gcra, rate(r).unwrap(), burst)
    }

    use Outcome::{Delayed as D, Passed as P, Rejected as R};

    #[test]
    fn no_burst_admits_one_per_interval() {
        let mut b = Bucket::new(gcra("10r/s", 0));
        assert_eq!(b.outcomes(3), [P, R, R]);
        b.clock.advance(Duration::from_millis(99));
        assert_eq!(b.outcomes(1), [R]);
        b.clock.advance(Duration::from_millis(1));
        assert_eq!(b.outcomes(2), [P, R]);
    }

    #[test]
    fn burst_without_nodelay_delays_excess_at_the_rate() {
        let mut b = Bucket::new(gcra("10r/s", 3));
        let delays: Vec<_> = (0..4).map(|_| b.hit()).map(|d| (d.outcome, d.delay.as_millis())).collect();
        assert_eq!(delays, [(P, 0), (D, 100), (D, 200), (D, 300)]);
        assert_eq!(b.hit().outcome, R, "burst exhausted");
    }

    #[test]
    fn nodelay_serves_burst_at_once() {
        let mut b = Bucket::new(gcra("10r/s", 3).nodelay());
        assert_eq!(b.outcomes(5), [P, P, P, P, R]);
        b.clock.advance(Duration::from_millis(100));
        assert_eq!(b.outcomes(2), [P, R]);
    }

    #[test]
    fn delay_lets_first_excess_through_then_delays() {
        let mut b = Bucket::new(gcra("10r/s", 4).with_delay(2));
        let got: Vec<_> = (0..6).map(|_| b.hit()).map(|d| (d.outcome, d.delay.as_millis())).collect();
        assert_eq!(got, [(P, 0), (P, 0), (P, 0), (D, 100), (D, 200), (R, 0)]);
    }

    #[test]
    fn cost_takes_several_slots() {
        let mut b = Bucket::new(gcra("10r/s", 4).nodelay().with_cost(2));
        assert_eq!(b.outcomes(3), [P, P, R], "five slots hold two requests of two");
        b.clock.advance(Duration::from_millis(100));
        assert_eq!(b.outcomes(2), [P, R]);
        b.clock.advance(Duration::from_millis(100));
        assert_eq!(b.outcomes(1), [R], "one slot free, cost two");
        b.clock.advance(Duration::from_millis(100));
        assert_eq!(b.outcomes(1), [P]);
    }

    #[test]
    fn remaining_reset_and_retry_values() {
        let mut b = Bucket::new(gcra("10r/s", 4).nodelay());
        let first = b.hit();
        assert_eq!(first.remaining, 4);
        assert_eq!(first.reset_after, Duration::from_millis(100));
        for _ in 0..4 {
            b.hit();
        }
        let rejected = b.hit();
        assert_eq!(rejected.outcome, R);
        assert_eq!(rejected.remaining, 0);
        assert_eq!(rejected.reset_after, Duration::from_millis(500));
        assert_eq!(rejected.retry_after, Duration::from_millis(100));
        b.clock.advance(Duration::from_millis(250));
        let later = b.hit();
        assert_eq!(later.outcome, P);
        assert_eq!(later.remaining, 1, "two slots freed, one used now");
        assert_eq!(later.reset_after, Duration::from_millis(350));
    }

    #[test]
    fn idle_key_is_full_again_after_reset() {
        let mut b = Bucket::new(gcra("1r/s", 2).nodelay());
        assert_eq!(b.outcomes(4), [P, P, P, R]);
        b.clock.advance(Duration::from_secs(3));
        assert_eq!(b.outcomes(4), [P, P, P, R]);
    }

    #[test]
    fn rate_per_minute_admits_exactly_rate_plus_burst_over_a_period() {
        let mut b = Bucket::new(gcra("60r/m", 9).nodelay());
        let mut admitted = 0;
        for _ in 0..600 {
            admitted += b.outcomes(1).iter().filter(|&&o| o == P).count();
            b.clock.advance(Duration::from_millis(100));
        }
        assert_eq!(admitted, 60 + 9);
    }
}
