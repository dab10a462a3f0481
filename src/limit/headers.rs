//! Response header values for rate limits.
//!
//! - IETF draft (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "api";q=100;w=60`
//!   and `RateLimit: "api";r=42;t=18`, one list member per limit applied to the request.
//! - Legacy `X-RateLimit-Limit` / `-Remaining` / `-Reset` (seconds from now) for the most
//!   constraining limit only, since those fields hold a single value.
//! - `Retry-After` (delta seconds) on rejection.
//!
//! `q` is the most a limit admits in one period (`requests + burst`), `w` that period in
//! seconds, `r` the requests admitted right now, `t` the seconds until the limit is idle.

use core::time::Duration;

use super::{strictest, Decision, Limit, Outcome};

/// Seconds, rounded up, so a client that waits that long is never early.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `Retry-After` value: seconds rounded up, at least 1.
pub fn retry_after(d: &Decision) -> String {
    ceil_secs(d.retry_after).max(1).to_string()
}

/// A structured-field string (RFC 8941 sf-string): quotes, with `"` and `\` escaped and
/// anything that is not visible ASCII dropped, so a zone name can never split a header.
fn sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// One limit as seen by one request, for header formatting.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    pub zone: &'a str,
    pub limit: &'a Limit,
    pub decision: &'a Decision,
}

/// `RateLimit-Policy` field value listing every applied limit.
pub fn policy(applied: &[Applied<'_>]) -> String {
    let mut out = String::new();
    for (i, a) in applied.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        sf_string(&mut out, a.zone);
        out.push_str(&format!(";q={};w={}", a.limit.quota(), a.limit.rate.period.as_secs().max(1)));
    }
    out
}

/// `RateLimit` field value listing every applied limit's current state.
pub fn ratelimit(applied: &[Applied<'_>]) -> String {
    let mut out = String::new();
    for (i, a) in applied.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        sf_string(&mut out, a.zone);
        out.push_str(&format!(";r={};t={}", a.decision.remaining, ceil_secs(a.decision.reset_after)));
    }
    out
}

/// Which limit the single-valued legacy headers describe: the strictest outcome if any limit
/// delayed or rejected, else the one with the fewest remaining requests.
pub fn most_constraining(applied: &[Applied<'_>]) -> Option<usize> {
    let decisions: Vec<Decision> = applied.iter().map(|a| *a.decision).collect();
    let i = strictest(&decisions)?;
    if decisions[i].outcome != Outcome::Passed {
        return Some(i);
    }
    (0..applied.len()).min_by_key(|&i| decisions[i].remaining)
}

/// Every header for one request: the draft pair, the legacy triple and, when the request is
/// rejected, `Retry-After`. Empty when no limit applied.
pub fn all(applied: &[Applied<'_>]) -> Vec<(&'static str, String)> {
    let Some(i) = most_constraining(applied) else {
        return Vec::new();
    };
    let main = &applied[i];
    let mut headers = vec![
        ("RateLimit-Policy", policy(applied)),
        ("RateLimit", ratelimit(applied)),
        ("X-RateLimit-Limit", main.limit.quota().to_string()),
        ("X-RateLimit-Remaining", main.decision.remaining.to_string()),
        ("X-RateLimit-Reset", ceil_secs(main.decision.reset_after).to_string()),
    ];
    if main.decision.outcome == Outcome::Rejected {
        headers.push(("Retry-After", retry_after(main.decision)));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Algorithm;
    use crate::parse::rate;

    fn decision(outcome: Outcome, remaining: u64, reset_ms: u64, retry_ms: u64) -> Decision {
        Decision::from_micros(outcome, remaining, reset_ms * 1000, retry_ms * 1000, 0)
    }

    #[test]
    fn draft_headers_list_every_limit() {
        let api = Limit::new(Algorithm::SlidingWindow, rate("100r/m").unwrap(), 0);
        let burst = Limit::new(Algorithm::Gcra, rate("10r/s").unwrap(), 5);
        let (d1, d2) = (decision(Outcome::Passed, 42, 17_001, 0), decision(Outcome::Passed, 3, 200, 0));
        let applied = [
            Applied { zone: "api", limit: &api, decision: &d1 },
            Applied { zone: "b\"x", limit: &burst, decision: &d2 },
        ];
        assert_eq!(policy(&applied), r#""api";q=100;w=60, "b\"x";q=15;w=1"#);
        assert_eq!(ratelimit(&applied), r#""api";r=42;t=18, "b\"x";r=3;t=1"#);
        let h = all(&applied);
        assert_eq!(h[2], ("X-RateLimit-Limit", "15".to_string()), "fewest remaining");
        assert_eq!(h[3], ("X-RateLimit-Remaining", "3".to_string()));
        assert_eq!(h.len(), 5, "no Retry-After when passed");
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one() {
        let l = Limit::new(Algorithm::Gcra, rate("1r/s").unwrap(), 0);
        let rejected = decision(Outcome::Rejected, 0, 900, 1);
        assert_eq!(retry_after(&rejected), "1");
        assert_eq!(retry_after(&decision(Outcome::Rejected, 0, 0, 1001)), "2");
        assert_eq!(retry_after(&decision(Outcome::Rejected, 0, 0, 0)), "1");
        let passed = decision(Outcome::Passed, 99, 0, 0);
        let applied = [Applied { zone: "a", limit: &l, decision: &passed }, Applied { zone: "b", limit: &l, decision: &rejected }];
        let h = all(&applied);
        assert_eq!(h.last(), Some(&("Retry-After", "1".to_string())));
        assert_eq!(h[3].1, "0", "legacy headers describe the rejecting limit");
        assert!(all(&[]).is_empty());
    }

    #[test]
    fn zone_names_cannot_inject_header_bytes() {
        let mut s = String::new();
        sf_string(&mut s, "a\r\nX: y\\");
        assert_eq!(s, r#""aX: y\\""#);
    }
}
