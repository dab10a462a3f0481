//! Key sets fetched from a JWKS endpoint (`shield_jwt_key_request`): when a worker should fetch,
//! from the state every worker shares, and how long a fetched set is fresh. The glue keeps the
//! set and these times in shared memory; this is the arithmetic, with the clock passed in.
//!
//! - No set yet: fetch (a request cannot be verified without one), even if another request is
//!   fetching (each waits for its own rather than being refused); after a failed fetch, not
//!   before the retry time (an endpoint that is down is not asked on every request).
//! - A fetch in flight elsewhere (not timed out): use the current set, fetch nothing.
//! - The set is due for refresh (ahead of the endpoint's `max-age`): fetch; meanwhile the
//!   current set keeps serving, and after a failed fetch it is kept (the last good set).
//! - A token names a `kid` the set lacks: fetch, at most once per `cooldown`.

/// Largest JWKS document kept (bytes).
pub const MAX_JWKS_LEN: usize = 64 * 1024;
/// Freshness bounds for a fetched set, whatever the endpoint's `Cache-Control` says.
pub const MIN_TTL_SECS: u64 = 1;
pub const MAX_TTL_SECS: u64 = 86_400;
/// Freshness without `Cache-Control: max-age`.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// A fetch taking longer than this no longer blocks another worker's.
pub const FETCH_TIMEOUT_SECS: f64 = 10.0;
pub const DEFAULT_COOLDOWN_SECS: u64 = 30;
pub const MAX_COOLDOWN_SECS: u64 = 3600;

/// The shared state, in seconds since the epoch (0: never).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct State {
    pub has_keys: bool,
    pub refresh_at: f64,
    pub fetching_until: f64,
    pub kid_refetch_after: f64,
}

/// Whether this request should fetch the set now.
pub fn should_fetch(s: &State, now: f64, unknown_kid: bool) -> bool {
    if !s.has_keys {
        return now >= s.refresh_at;
    }
    if now < s.fetching_until {
        return false;
    }
    now >= s.refresh_at || (unknown_kid && now >= s.kid_refetch_after)
}

/// The next refresh after a successful fetch whose set is fresh for `ttl` seconds: a quarter
/// of the lifetime early (at most a minute), so the set is replaced before it goes stale.
pub fn refresh_after_success(now: f64, ttl: u64) -> f64 {
    let ttl = ttl as f64;
    now + ttl - (ttl / 4.0).min(60.0)
}

/// The next attempt after a failed fetch: soon, but no sooner than the cooldown allows.
pub fn refresh_after_failure(now: f64, cooldown: u64) -> f64 {
    now + (cooldown as f64).clamp(1.0, 10.0)
}

/// Freshness from a `Cache-Control` value: `max-age` (bounded), the minimum for `no-store` /
/// `no-cache`, the default without either.
pub fn ttl(cache_control: Option<&str>) -> u64 {
    let Some(cc) = cache_control else { return DEFAULT_TTL_SECS };
    let mut ttl = None;
    for directive in cc.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return MIN_TTL_SECS;
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            ttl = crate::parse::number(v.trim_matches('"')).or(Some(MIN_TTL_SECS));
        }
    }
    ttl.unwrap_or(DEFAULT_TTL_SECS).clamp(MIN_TTL_SECS, MAX_TTL_SECS)
}
