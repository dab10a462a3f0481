//! Time for the rate math: a [`Clock`] in µs (nginx's cached time in the glue, a fake one in
//! tests, so tests advance time instead of sleeping), and how a worker's clock is reconciled
//! with a state another worker's clock wrote.

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
pub(super) fn observed_now(seen: u64, now: u64) -> Option<u64> {
    match seen.checked_sub(now) {
        Some(ahead) if ahead > MAX_CLOCK_SKEW_US => None,
        Some(_) => Some(seen),
        None => Some(now),
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
