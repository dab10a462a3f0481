//! The values a limit can be configured with, checked at `nginx -t`, and the combinations
//! refused there instead of being silently reinterpreted.
//!
//! Why these bounds: time is in µs in a `u64` here, and in a Lua number (a double, exact up to
//! 2^53 ≈ 9.0e15) in the Redis script. The largest products are a GCRA tolerance
//! `(burst + 1) × interval` and a sliding window's `quota × period`. With a rate of at most
//! 1000000 requests per unit (an interval of at least 1 µs) and a burst and cost of at most
//! 1000000, the slowest rate (1r/h: 3.6e9 µs) gives a tolerance of 3.6e15 µs, and a
//! sliding window's quota (rate + burst ≤ 2000000) × 3.6e9 µs gives 7.2e15: both, added to
//! today's time in µs (1.8e15), stay exact in the script and far from `u64::MAX`.

use crate::parse::{ConfError, Rate};

use super::{Algorithm, Limit};

/// Requests per unit (`r/s`, `r/m` or `r/h`) of `rate=`.
pub const MAX_RATE: u64 = 1_000_000;
/// `burst=` and `delay=`.
pub const MAX_BURST: u64 = 1_000_000;
/// `cost=`; also at most the limit's quota, or no request could ever pass.
pub const MAX_COST: u64 = 1_000_000;
/// `shield_ban threshold=N/...`.
pub const MAX_BAN_THRESHOLD: u64 = 1_000_000;
/// `shield_ban`'s window and ban time: 1 ms to 365 days.
pub const MAX_BAN_TIME_MS: u64 = 365 * 86_400_000;
/// `shield_limit_zone zone=name:size`: 32k (room for the slab allocator and a few buckets)
/// to 16g.
pub const MIN_ZONE_SIZE: usize = 32 * 1024;
pub const MAX_ZONE_SIZE: usize = 16 << 30;

/// A zone's `rate=`, within [`MAX_RATE`].
pub fn rate(raw: &str, rate: Rate) -> Result<Rate, ConfError> {
    if rate.requests > MAX_RATE {
        return Err(ConfError::OutOfRange { what: "rate", value: raw.to_string(), min: 1, max: MAX_RATE });
    }
    Ok(rate)
}

/// `shield_limit`'s parameters as written, before they make a [`Limit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitParams<'a> {
    pub burst: u64,
    /// `delay=N` as written, if given.
    pub delay: Option<(u64, &'a str)>,
    pub nodelay: bool,
    pub cost: (u64, &'a str),
}

/// The limit a `shield_limit` applies with a zone's algorithm and rate; refuses what the
/// algorithm would ignore or could never admit. Burst, delay and cost were range-checked by
/// the parser (`parse::bounded` with the bounds above).
pub fn limit(algorithm: Algorithm, rate: Rate, p: LimitParams) -> Result<Limit, ConfError> {
    let delay = match (p.delay, p.nodelay) {
        (Some(_), true) => return Err("\"delay\" and \"nodelay\" exclude each other".into()),
        (Some(_), false) if algorithm == Algorithm::SlidingWindow => {
            return Err("\"delay\" has no effect with \"algorithm=sliding_window\", which never delays".into())
        }
        (Some((d, raw)), false) if d > p.burst => {
            return Err(ConfError::OutOfRange { what: "delay", value: raw.to_string(), min: 0, max: p.burst })
        }
        (Some((d, _)), false) => d,
        (None, true) => p.burst,
        (None, false) => 0,
    };
    let limit = Limit { algorithm, rate, burst: p.burst, delay, cost: p.cost.0 };
    let quota = limit.quota().min(MAX_COST);
    if limit.cost > quota {
        return Err(ConfError::OutOfRange { what: "cost", value: p.cost.1.to_string(), min: 1, max: quota });
    }
    Ok(limit)
}

/// `shield_ban`'s times (`threshold=N/window`, `ban=`), within 1 ms and [`MAX_BAN_TIME_MS`].
pub fn ban_time(what: &'static str, raw: &str, ms: u64) -> Result<u64, ConfError> {
    if !(1..=MAX_BAN_TIME_MS).contains(&ms) {
        return Err(format!("invalid {what} \"{raw}\", it must be between 1ms and 365d").into());
    }
    Ok(ms * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{check, Outcome};
    use crate::parse::{bounded, rate as parse_rate};

    fn params(burst: u64, delay: Option<u64>, nodelay: bool, cost: u64) -> LimitParams<'static> {
        LimitParams { burst, delay: delay.map(|d| (d, "d")), nodelay, cost: (cost, "c") }
    }

    #[test]
    fn refused_combinations() {
        let r = parse_rate("10r/s").unwrap();
        let gcra = |p| limit(Algorithm::Gcra, r, p);
        assert!(gcra(params(5, Some(2), true, 1)).is_err(), "nodelay with delay");
        assert!(gcra(params(5, Some(6), false, 1)).is_err(), "delay above burst");
        assert!(
            limit(Algorithm::SlidingWindow, r, params(5, Some(2), false, 1)).is_err(),
            "delay with a sliding window"
        );
        assert!(gcra(params(5, None, false, 7)).is_err(), "a cost above burst + 1 could never pass");
        assert!(
            limit(Algorithm::SlidingWindow, r, params(5, None, false, 15)).is_ok(),
            "a window's quota is rate + burst"
        );
        assert_eq!(gcra(params(5, None, true, 1)).unwrap().delay, 5, "nodelay lets the burst through");
        assert_eq!(gcra(params(5, Some(5), false, 6)).unwrap().delay, 5);
    }

    #[test]
    fn parser_bounds_refuse_overflowing_values() {
        assert!(bounded("burst", "18446744073709551615", 0, MAX_BURST).is_err());
        assert!(bounded("burst", "18446744073709551616", 0, MAX_BURST).is_err(), "beyond u64");
        assert!(bounded("cost", "0", 1, MAX_COST).is_err());
        assert!(rate("2000000r/s", parse_rate("2000000r/s").unwrap()).is_err());
        assert!(ban_time("ban", "0", 0).is_err());
        assert!(ban_time("ban", "366d", 366 * 86_400_000).is_err());
    }

    #[test]
    fn the_extremes_stay_exact() {
        // The slowest rate with the largest burst and cost, decided at a time far ahead.
        let slow = Limit {
            algorithm: Algorithm::Gcra,
            rate: parse_rate("1r/h").unwrap(),
            burst: MAX_BURST,
            delay: MAX_BURST,
            cost: MAX_COST,
        };
        let now = 4_000_000_000_000_000; // year 2096, in µs
        let (d, s) = check(&slow, [0; 3], now);
        assert_eq!((d.outcome, d.remaining), (Outcome::Passed, 0), "a cost of the whole burst + 1 passes once");
        assert!(s[0] < 1 << 53, "a Lua number holds the schedule exactly: {}", s[0]);
        let (d, _) = check(&slow, s, now);
        assert_eq!((d.outcome, d.wait_us), (Outcome::Rejected, (2 * MAX_COST - MAX_BURST - 1) * 3_600_000_000));
        let window = Limit {
            algorithm: Algorithm::SlidingWindow,
            rate: parse_rate("1000000r/h").unwrap(),
            burst: MAX_BURST,
            delay: 0,
            cost: 1,
        };
        assert!(window.quota() * window.period_us() < 1 << 53);
        let (d, _) = check(&window, [0; 3], now);
        assert_eq!((d.outcome, d.remaining), (Outcome::Passed, 2 * MAX_BURST - 1));
    }
}
