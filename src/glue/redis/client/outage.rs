//! What the client says about Redis being down: the first failure at once, then one line a
//! second at most with the number of attempts that failed meanwhile, and the recovery with
//! the outage's length (as nginx does for upstream failures).

use ngx::ffi::{NGX_LOG_NOTICE, NGX_LOG_WARN};
use ngx::ngx_log_error;

use super::{cycle_log, PROBE_INTERVAL_MS};
use crate::glue::redis::RedisError;
use crate::redis::throttle::Throttle;

/// Since when Redis is unavailable, and how many attempts failed.
struct Outage {
    since: u64,
    attempts: u64,
}

#[derive(Default)]
pub(super) struct OutageLog {
    outage: Option<Outage>,
    /// Lines about Redis being down.
    throttle: Throttle,
}

impl OutageLog {
    /// A failure at `at` (ms); `why` says what happened.
    pub(super) fn failed(&mut self, target: &str, err: &RedisError, why: &str, at: u64) {
        match &mut self.outage {
            None => {
                self.outage = Some(Outage { since: at, attempts: 1 });
                self.throttle.finish();
                self.throttle.event(at);
                ngx_log_error!(
                    NGX_LOG_WARN,
                    cycle_log(),
                    "shield: redis {target} unavailable: {why} ({err}); requests follow shield_limit_fail, reconnecting every {PROBE_INTERVAL_MS} ms"
                );
            }
            Some(outage) => {
                outage.attempts += 1;
                if let Some(unlogged) = self.throttle.event(at) {
                    ngx_log_error!(
                        NGX_LOG_WARN,
                        cycle_log(),
                        "shield: redis {target} still unavailable after {} ms: {why} ({err}); {} attempts failed since the last line",
                        at.saturating_sub(outage.since),
                        unlogged + 1
                    );
                }
            }
        }
    }

    /// Redis answered again at `at` (ms).
    pub(super) fn recovered(&mut self, target: &str, at: u64) {
        if let Some(outage) = self.outage.take() {
            self.throttle.finish();
            ngx_log_error!(
                NGX_LOG_NOTICE,
                cycle_log(),
                "shield: redis {target} answers again after {} ms ({} failed attempts)",
                at.saturating_sub(outage.since),
                outage.attempts
            );
        }
    }
}
