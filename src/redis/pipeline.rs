//! The replies a pipelined connection waits for, in order, each with its own absolute deadline
//! and size bound. Pure bookkeeping (time is passed in); the connection is in `glue/redis`.
//!
//! `timeout` is a deadline per reply, fixed when the command is queued: bytes trickling in do
//! not extend it. At its deadline a waiter is answered (`Timeout`) alone, and the reply, when it
//! comes, is dropped: one slow reply from a healthy Redis fails only the requests it was
//! answering, not those pipelined behind it. The connection itself is given up when the
//! overdue reply at the head has started but stalls (a server dripping bytes: Redis writes a
//! reply at once), when the connection's own setup is not answered in time, or when the head
//! stays unanswered for [`STALL_GRACE_MS`] past its deadline (a stopped Redis).

use std::collections::VecDeque;

use super::resp::Bound;

/// How long an overdue reply that has not started may still come before the connection is
/// taken for dead.
pub const STALL_GRACE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// AUTH or SELECT on a new connection: must be answered OK, in time.
    Setup,
    /// The PING that proves a new connection works.
    Probe,
    /// The question to a sentinel: where is the primary?
    Discover,
    /// A caller's command.
    Command,
}

#[derive(Debug)]
pub struct Entry<T> {
    pub kind: Kind,
    /// The caller; None for setup, and once answered or timed out (the reply is then dropped).
    pub waiter: Option<T>,
    pub bound: Bound,
    pub queued_at: u64,
    pub deadline: u64,
}

impl<T> Entry<T> {
    /// Someone still waits for this reply: a caller, or the connection's setup.
    fn awaited(&self) -> bool {
        self.waiter.is_some() || self.kind != Kind::Command
    }
}

/// Why the connection must be given up at a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    SetupUnanswered,
    Stalled,
    Dead,
}

impl core::fmt::Display for Overdue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Overdue::SetupUnanswered => "no answer to the connection's setup in time",
            Overdue::Stalled => "reply stalled past its deadline",
            Overdue::Dead => "no reply long past the deadline",
        })
    }
}

#[derive(Debug)]
pub struct Pipeline<T> {
    entries: VecDeque<Entry<T>>,
    timeout_ms: u64,
}

impl<T> Pipeline<T> {
    pub fn new(timeout_ms: u64) -> Pipeline<T> {
        Pipeline { entries: VecDeque::new(), timeout_ms }
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// A command queued at `now`: its reply is due by `now + timeout`.
    pub fn push(&mut self, kind: Kind, waiter: Option<T>, bound: Bound, now: u64) {
        self.entries.push_back(Entry { kind, waiter, bound, queued_at: now, deadline: now + self.timeout_ms });
    }

    /// The same caller waits for another command's reply (a NOSCRIPT retry), by its deadline.
    pub fn requeue(&mut self, entry: Entry<T>) {
        self.entries.push_back(entry);
    }

    /// The bound of the reply expected next.
    pub fn next_bound(&self) -> Option<Bound> {
        self.entries.front().map(|e| e.bound)
    }

    /// The entry the reply just decoded answers.
    pub fn pop(&mut self) -> Option<Entry<T>> {
        self.entries.pop_front()
    }

    /// At `now`: the waiters whose deadline passed (to be answered `Timeout`), and whether the
    /// connection must go. `reply_started`: bytes of the head's reply have arrived.
    pub fn expire(&mut self, now: u64, reply_started: bool) -> (Vec<T>, Option<Overdue>) {
        let expired = self.entries.iter_mut().filter(|e| e.deadline <= now).filter_map(|e| e.waiter.take()).collect();
        let overdue = match self.entries.front() {
            Some(head) if head.deadline <= now => {
                if head.kind != Kind::Command {
                    Some(Overdue::SetupUnanswered)
                } else if reply_started {
                    Some(Overdue::Stalled)
                } else if now >= head.deadline + STALL_GRACE_MS {
                    Some(Overdue::Dead)
                } else {
                    None
                }
            }
            _ => None,
        };
        (expired, overdue)
    }

    /// When [`Pipeline::expire`] has something to do next: an awaited reply's deadline, or the
    /// end of an overdue head's grace.
    pub fn next_due(&self) -> Option<u64> {
        let deadline = self.entries.iter().filter(|e| e.awaited()).map(|e| e.deadline).min();
        let grace = self.entries.front().filter(|e| !e.awaited()).map(|e| e.deadline + STALL_GRACE_MS);
        deadline.into_iter().chain(grace).min()
    }

    /// Empties the pipeline (the connection is gone): the callers still waiting.
    pub fn take_waiters(&mut self) -> Vec<T> {
        self.entries.drain(..).filter_map(|e| e.waiter).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline<&'static str> {
        Pipeline::new(50)
    }

    #[test]
    fn a_deadline_is_absolute_and_a_stalled_reply_drops_the_connection() {
        let mut p = pipeline();
        p.push(Kind::Command, Some("a"), Bound::SIMPLE, 1000);
        assert_eq!(p.next_due(), Some(1050));
        // Bytes arriving (the reply has started) do not move the deadline.
        assert_eq!(p.expire(1049, true), (vec![], None));
        assert_eq!(p.next_due(), Some(1050));
        assert_eq!(p.expire(1050, true), (vec!["a"], Some(Overdue::Stalled)));
    }

    #[test]
    fn a_slow_reply_fails_only_its_own_waiters_and_keeps_the_connection() {
        let mut p = pipeline();
        p.push(Kind::Command, Some("slow"), Bound::SIMPLE, 1000);
        p.push(Kind::Command, Some("next"), Bound::SIMPLE, 1030);
        assert_eq!(p.expire(1050, false), (vec!["slow"], None), "only the overdue waiter");
        // Next: the second deadline (the head's grace ends later).
        assert_eq!(p.next_due(), Some(1080));
        // The slow reply comes at 1060: it answers nobody; the next one is still awaited.
        let late = p.pop().unwrap();
        assert_eq!(late.waiter, None);
        assert_eq!(p.next_bound(), Some(Bound::SIMPLE));
        assert_eq!(p.pop().unwrap().waiter, Some("next"));
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn an_overdue_head_that_never_starts_drops_the_connection_after_the_grace() {
        let mut p = pipeline();
        p.push(Kind::Command, Some("a"), Bound::SIMPLE, 1000);
        assert_eq!(p.expire(1050, false), (vec!["a"], None));
        assert_eq!(p.next_due(), Some(1050 + STALL_GRACE_MS));
        assert_eq!(p.expire(1049 + STALL_GRACE_MS, false), (vec![], None));
        assert_eq!(p.expire(1050 + STALL_GRACE_MS, false), (vec![], Some(Overdue::Dead)));
    }

    #[test]
    fn setup_must_be_answered_in_time_and_retries_keep_their_deadline() {
        let mut p = pipeline();
        p.push(Kind::Probe, None, Bound::SIMPLE, 1000);
        p.push(Kind::Command, Some("a"), Bound::integers(3), 1010);
        assert_eq!(p.next_due(), Some(1050), "the probe is awaited too");
        assert_eq!(p.expire(1050, false), (vec![], Some(Overdue::SetupUnanswered)));
        assert_eq!(p.take_waiters(), vec!["a"]);
        // A NOSCRIPT retry goes to the back with the deadline it had.
        p.push(Kind::Command, Some("b"), Bound::SIMPLE, 2000);
        p.push(Kind::Command, Some("c"), Bound::SIMPLE, 2020);
        let b = p.pop().unwrap();
        p.requeue(b);
        assert_eq!(p.next_due(), Some(2050));
        assert_eq!(p.expire(2050, false), (vec!["b"], None));
    }
}
