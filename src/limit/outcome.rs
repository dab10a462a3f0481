//! What a verdict means for the request, decided once and without nginx: the
//! `$shield_limit_status` word, whether the request goes on, is delayed or is answered (and
//! with which status), which decision's rate-limit headers it carries, and what is logged.
//! The glue executes the [`Plan`]; the operator's controls (`shield_limit_fail`,
//! `shield_limit_dry_run`, `shield_limit_status`, `shield_limit_headers`) enter as [`Policy`].

use super::headers::HeaderMode;
use super::{strictest, Algorithm, Decision, Decisions, Limit, Outcome};
use crate::parse::{ConfError, Rate};

/// `$shield_limit_status`, spelled as `$limit_req_status` spells its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitStatus {
    Passed,
    Delayed,
    Rejected,
    DelayedDryRun,
    RejectedDryRun,
    /// The backend failed and the fail policy answered.
    Error,
}

impl LimitStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            LimitStatus::Passed => "PASSED",
            LimitStatus::Delayed => "DELAYED",
            LimitStatus::Rejected => "REJECTED",
            LimitStatus::DelayedDryRun => "DELAYED_DRY_RUN",
            LimitStatus::RejectedDryRun => "REJECTED_DRY_RUN",
            LimitStatus::Error => "ERROR",
        }
    }
}

/// `shield_limit_fail open | closed | local`: what a request gets when Redis fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailPolicy {
    /// Not limited.
    Open,
    /// Refused with 503.
    Closed,
    /// Decided by the zone's shared-memory table.
    #[default]
    Local,
}

impl FailPolicy {
    const ALL: [FailPolicy; 3] = [FailPolicy::Open, FailPolicy::Closed, FailPolicy::Local];

    pub const fn as_str(self) -> &'static str {
        match self {
            FailPolicy::Open => "open",
            FailPolicy::Closed => "closed",
            FailPolicy::Local => "local",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ConfError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == value)
            .ok_or_else(|| format!("invalid value \"{value}\", it must be \"open\", \"closed\" or \"local\"").into())
    }
}

/// A backend's answer for one request: banned by a zone (µs left), or one decision per limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Banned(usize, u64),
    Decisions(Decisions),
}

/// The location's controls, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub dry_run: bool,
    /// `shield_limit_status`.
    pub status: u16,
    pub headers: HeaderMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// On to the next handler.
    Continue,
    /// Answer with this status.
    Respond(u16),
    /// Park the request this long, then go on.
    Delay { ms: u64 },
}

/// Whose rate-limit headers the response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersFrom {
    /// The ban (see [`ban_headers`]).
    Ban,
    /// This decision (index in the verdict's decisions): the strictest.
    Decision(usize),
}

/// A line for the error log. Banned and rejected lines go at `shield_limit_log_level`, a
/// delay one level quieter (as `limit_req` does), failures at `warn`, throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Log {
    Banned { zone: usize, secs: u64 },
    Rejected { decision: usize, dry_run: bool, wait_ms: u64 },
    Delayed { decision: usize, wait_ms: u64 },
    FailedOpen,
    FailedClosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub status: LimitStatus,
    pub action: Action,
    pub headers: Option<HeadersFrom>,
    pub log: Option<Log>,
}

impl Plan {
    const fn new(status: LimitStatus, action: Action) -> Plan {
        Plan { status, action, headers: None, log: None }
    }
}

/// A Redis failure, under the fail policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Decide on the local tables, then [`plan`] that verdict (or [`UNDECIDED`]).
    DecideLocally,
    Answer(Plan),
}

pub fn on_failure(fail: FailPolicy) -> OnFailure {
    match fail {
        FailPolicy::Local => OnFailure::DecideLocally,
        FailPolicy::Open => {
            OnFailure::Answer(Plan { log: Some(Log::FailedOpen), ..Plan::new(LimitStatus::Error, Action::Continue) })
        }
        FailPolicy::Closed => OnFailure::Answer(Plan {
            log: Some(Log::FailedClosed),
            ..Plan::new(LimitStatus::Error, Action::Respond(503))
        }),
    }
}

/// No decision could be taken at all (the local tables are not ready): the request passes.
pub const UNDECIDED: Plan = Plan::new(LimitStatus::Error, Action::Continue);

/// The plan for a verdict. The strictest decision is the one whose outcome, headers and log
/// line the request gets.
pub fn plan(verdict: &Verdict, policy: &Policy) -> Plan {
    let headers = |from| (policy.headers != HeaderMode::Off).then_some(from);
    let reject = |dry_run| {
        if dry_run {
            Plan::new(LimitStatus::RejectedDryRun, Action::Continue)
        } else {
            Plan::new(LimitStatus::Rejected, Action::Respond(policy.status))
        }
    };
    let decisions = match verdict {
        Verdict::Banned(zone, left_us) => {
            return Plan {
                headers: headers(HeadersFrom::Ban),
                log: Some(Log::Banned { zone: *zone, secs: super::secs_ceil(*left_us) }),
                ..reject(policy.dry_run)
            };
        }
        Verdict::Decisions(d) => d,
    };
    let Some(i) = strictest(decisions) else { return Plan::new(LimitStatus::Passed, Action::Continue) };
    let d = decisions[i];
    let wait_ms = d.wait_us / 1000;
    let plan = match (d.outcome, policy.dry_run) {
        (Outcome::Passed, _) => Plan::new(LimitStatus::Passed, Action::Continue),
        (Outcome::Rejected, dry_run) => {
            Plan { log: Some(Log::Rejected { decision: i, dry_run, wait_ms }), ..reject(dry_run) }
        }
        (Outcome::Delayed, true) => Plan::new(LimitStatus::DelayedDryRun, Action::Continue),
        (Outcome::Delayed, false) => Plan {
            log: Some(Log::Delayed { decision: i, wait_ms }),
            ..Plan::new(LimitStatus::Delayed, Action::Delay { ms: wait_ms.max(1) })
        },
    };
    Plan { headers: headers(HeadersFrom::Decision(i)), ..plan }
}

/// The limit and decision a ban's headers render: nothing remaining, retry when it ends.
pub fn ban_headers(rate: Rate, left_us: u64) -> (Limit, Decision) {
    let limit = Limit { algorithm: Algorithm::Gcra, rate, burst: 0, delay: 0, cost: 1 };
    (limit, Decision { outcome: Outcome::Rejected, remaining: 0, reset_us: left_us, wait_us: left_us })
}

/// The `shield_limit_requests_total` outcome a decision counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Passed,
    Delayed,
    Rejected,
    DryRunRejected,
}

impl Counter {
    pub const fn of(outcome: Outcome, dry_run: bool) -> Counter {
        match (outcome, dry_run) {
            (Outcome::Passed, _) => Counter::Passed,
            (Outcome::Delayed, _) => Counter::Delayed,
            (Outcome::Rejected, false) => Counter::Rejected,
            (Outcome::Rejected, true) => Counter::DryRunRejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { dry_run: false, status: 429, headers: HeaderMode::On };
    const DRY: Policy = Policy { dry_run: true, ..POLICY };

    fn d(outcome: Outcome, remaining: u64, wait_us: u64) -> Decision {
        Decision { outcome, remaining, reset_us: 1_000_000, wait_us }
    }

    fn one(outcome: Outcome, wait_us: u64) -> Verdict {
        Verdict::Decisions(Decisions::One(d(outcome, 3, wait_us)))
    }

    #[test]
    fn statuses_are_spelled_as_limit_req_spells_them() {
        let all = [
            (LimitStatus::Passed, "PASSED"),
            (LimitStatus::Delayed, "DELAYED"),
            (LimitStatus::Rejected, "REJECTED"),
            (LimitStatus::DelayedDryRun, "DELAYED_DRY_RUN"),
            (LimitStatus::RejectedDryRun, "REJECTED_DRY_RUN"),
            (LimitStatus::Error, "ERROR"),
        ];
        for (status, word) in all {
            assert_eq!(status.as_str(), word);
        }
    }

    #[test]
    fn fail_policies_parse_and_spell() {
        for word in ["open", "closed", "local"] {
            assert_eq!(FailPolicy::parse(word).unwrap().as_str(), word);
        }
        let err = FailPolicy::parse("maybe").unwrap_err().to_string();
        assert_eq!(err, "invalid value \"maybe\", it must be \"open\", \"closed\" or \"local\"");
        assert_eq!(FailPolicy::default(), FailPolicy::Local);
    }

    #[test]
    fn a_failure_follows_the_fail_policy() {
        assert_eq!(on_failure(FailPolicy::Local), OnFailure::DecideLocally);
        let open = Plan { log: Some(Log::FailedOpen), ..Plan::new(LimitStatus::Error, Action::Continue) };
        assert_eq!(on_failure(FailPolicy::Open), OnFailure::Answer(open));
        let closed = Plan { log: Some(Log::FailedClosed), ..Plan::new(LimitStatus::Error, Action::Respond(503)) };
        assert_eq!(on_failure(FailPolicy::Closed), OnFailure::Answer(closed));
        assert_eq!((UNDECIDED.status, UNDECIDED.action, UNDECIDED.log), (LimitStatus::Error, Action::Continue, None));
    }

    #[test]
    fn a_ban_rejects_with_the_configured_status_or_passes_in_dry_run() {
        let ban = Verdict::Banned(2, 1_500_000);
        let p = plan(&ban, &Policy { status: 403, ..POLICY });
        assert_eq!((p.status, p.action), (LimitStatus::Rejected, Action::Respond(403)));
        assert_eq!(p.headers, Some(HeadersFrom::Ban));
        assert_eq!(p.log, Some(Log::Banned { zone: 2, secs: 2 }), "seconds rounded up");
        let p = plan(&ban, &DRY);
        assert_eq!((p.status, p.action), (LimitStatus::RejectedDryRun, Action::Continue));
        assert_eq!(p.log, Some(Log::Banned { zone: 2, secs: 2 }), "a dry run still logs");
        let quiet = plan(&ban, &Policy { headers: HeaderMode::Off, ..POLICY });
        assert_eq!(quiet.headers, None);
        let (limit, dec) = ban_headers(crate::parse::rate("1r/s").unwrap(), 1_500_000);
        assert_eq!((limit.quota(), dec.remaining, dec.wait_us), (1, 0, 1_500_000));
    }

    #[test]
    fn no_limit_decided_passes_without_headers() {
        let p = plan(&Verdict::Decisions(Decisions::Many(Vec::new())), &POLICY);
        assert_eq!(p, Plan::new(LimitStatus::Passed, Action::Continue));
    }

    #[test]
    fn passed_continues_with_headers_and_no_log() {
        let p = plan(&one(Outcome::Passed, 0), &POLICY);
        assert_eq!(
            p,
            Plan { headers: Some(HeadersFrom::Decision(0)), ..Plan::new(LimitStatus::Passed, Action::Continue) }
        );
        assert_eq!(plan(&one(Outcome::Passed, 0), &DRY).status, LimitStatus::Passed);
    }

    #[test]
    fn rejected_answers_the_status_or_passes_in_dry_run_and_logs_both() {
        let p = plan(&one(Outcome::Rejected, 2_500_000), &POLICY);
        assert_eq!((p.status, p.action), (LimitStatus::Rejected, Action::Respond(429)));
        assert_eq!(p.log, Some(Log::Rejected { decision: 0, dry_run: false, wait_ms: 2500 }));
        let p = plan(&one(Outcome::Rejected, 2_500_000), &DRY);
        assert_eq!((p.status, p.action), (LimitStatus::RejectedDryRun, Action::Continue));
        assert_eq!(p.log, Some(Log::Rejected { decision: 0, dry_run: true, wait_ms: 2500 }));
        assert_eq!(p.headers, Some(HeadersFrom::Decision(0)), "a dry run still sends the headers");
    }

    #[test]
    fn delayed_parks_at_least_a_millisecond_or_passes_in_dry_run() {
        let p = plan(&one(Outcome::Delayed, 250_000), &POLICY);
        assert_eq!((p.status, p.action), (LimitStatus::Delayed, Action::Delay { ms: 250 }));
        assert_eq!(p.log, Some(Log::Delayed { decision: 0, wait_ms: 250 }));
        let p = plan(&one(Outcome::Delayed, 400), &POLICY);
        assert_eq!(p.action, Action::Delay { ms: 1 }, "a sub-millisecond delay still parks");
        let p = plan(&one(Outcome::Delayed, 250_000), &DRY);
        assert_eq!((p.status, p.action, p.log), (LimitStatus::DelayedDryRun, Action::Continue, None));
    }

    #[test]
    fn the_strictest_decision_decides_and_sends_its_headers() {
        let many = Verdict::Decisions(Decisions::Many(vec![
            d(Outcome::Passed, 5, 0),
            d(Outcome::Delayed, 2, 100_000),
            d(Outcome::Rejected, 0, 50_000),
            d(Outcome::Passed, 1, 0),
        ]));
        let p = plan(&many, &POLICY);
        assert_eq!((p.status, p.headers), (LimitStatus::Rejected, Some(HeadersFrom::Decision(2))));
        let off = plan(&many, &Policy { headers: HeaderMode::Draft, ..POLICY });
        assert_eq!(off.headers, Some(HeadersFrom::Decision(2)), "any mode but off sends headers");
        let passed = Verdict::Decisions(Decisions::Many(vec![d(Outcome::Passed, 5, 0), d(Outcome::Passed, 1, 0)]));
        assert_eq!(plan(&passed, &POLICY).headers, Some(HeadersFrom::Decision(1)), "fewest remaining");
    }

    #[test]
    fn counters_by_outcome_and_dry_run() {
        assert_eq!(Counter::of(Outcome::Passed, true), Counter::Passed);
        assert_eq!(Counter::of(Outcome::Delayed, true), Counter::Delayed);
        assert_eq!(Counter::of(Outcome::Rejected, false), Counter::Rejected);
        assert_eq!(Counter::of(Outcome::Rejected, true), Counter::DryRunRejected);
    }
}
