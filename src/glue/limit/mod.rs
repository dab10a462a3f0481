//! Rate limiting and the penalty box, on nginx's side. The arithmetic lives in the core
//! (`crate::limit`); this folder owns what needs nginx:
//!
//! - `directives`: `shield_redis`, `shield_limit_zone`, `shield_limit`, `shield_ban` and the
//!   `shield_limit_*` controls, and the configuration they build (`LimitMain`, `LimitLoc`,
//!   `Zone`).
//! - `zone`: each zone's shared-memory table (always allocated: it is the local backend, and
//!   the fallback when Redis fails), and the local decision taken under the zone locks.
//! - `batch`: the per-worker state: every request that reaches the limiter in one turn of the
//!   event loop goes to Redis in one script call (`script::Batch`), sent by a posted event
//!   through the worker's pipelined connection; and the cache of Redis rejections.
//! - `park`: suspending a request on a non-cancelable timer (so a graceful reload or quit
//!   waits for it, and it never waits longer than the timeout) and waking it.
//! - `rewrite`: in a location that answers with `return`, the limiter runs in the rewrite
//!   phase, before that answer; the configurations this cannot serve are refused.
//! - `request`: the request's state machine (preaccess handler, `finish`), the response's
//!   rate-limit headers, and the log phase that counts responses for `shield_ban` without
//!   delaying the response.

mod batch;
mod directives;
mod park;
mod request;
mod rewrite;
mod zone;

pub use batch::init_process;
pub use directives::{set_ban, set_dry_run, set_fail, set_headers, set_limit, set_log_level, set_status, set_zone};
pub use directives::{LimitLoc, LimitMain};
pub use request::{has_headers, log_phase, preaccess, recycle, response_headers, status_variable, LimitCtx};
pub use rewrite::install;
