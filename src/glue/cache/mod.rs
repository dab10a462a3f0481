//! The response cache on nginx's side. The rules live in the core (`crate::cache`); this
//! folder owns what needs nginx:
//!
//! - `directives`: `shield_cache_zone`, `shield_cache`, `shield_cache_key`,
//!   `shield_cache_valid`, `shield_cache_bypass`, `shield_cache_no_store`,
//!   `shield_cache_strip_set_cookie`, and the configuration they build;
//! - `shm`: the local backend, entries in the zone's shared memory with LRU eviction;
//! - `store`: the backend a zone uses (Redis through the worker's shared client when
//!   `shield_redis` is set, else the zone), and parking a request while Redis answers;
//! - `coalesce`: `shield_cache_lock`, one origin fetch per key in the worker and across
//!   workers and nodes;
//! - `purge`: `shield_cache_purge`, dropping an entry by URL (`PURGE` in a cached location) or
//!   by exact key (a purge endpoint), on every node sharing the backend;
//! - `tags`: `shield_cache_tags_header` (the directive and its index), the tag index (a sorted set per tag in Redis, a tag
//!   node in the zone), purging by tag, and the work that must not run inside a Redis reply's
//!   callback, run from a posted event instead;
//! - `lookup`: the precontent handler (after access checks, before the content handler) that
//!   finds the entry and decides hit or forward, and the content handler that serves a hit;
//! - `revalidate`: a stale entry's validators sent to the origin, its 304 merged (REVALIDATED);
//! - `background`: a stale entry answering at once while one refresh fetches its
//!   replacement (`stale-while-revalidate`, `shield_cache_use_stale updating`,
//!   `shield_cache_background_update`);
//! - `stale`: a kept stale entry standing in for an origin's error (`stale-if-error`,
//!   `shield_cache_use_stale`);
//! - `capture`: the header and body filters, first in the chain, that copy a forwarded
//!   response as it passes (bounded by `max_entry`) and store it once the client has it all.

mod background;
mod capture;
mod coalesce;
mod directives;
mod lookup;
mod purge;
mod revalidate;
mod shm;
mod stale;
mod store;
mod tags;

pub use tags::set_tags_header;

use std::rc::Rc;

use ngx::ffi::{ngx_conf_t, ngx_http_request_t};

pub use directives::{
    check, set_background_update, set_bypass, set_cache, set_key, set_lock, set_no_store, set_purge,
    set_strip_set_cookie, set_use_stale, set_valid, set_zone, CacheLoc, CacheMain,
};

use crate::cache::entry::Builder;
use crate::cache::status::{CacheStatus, Forward};

/// Where a request is in the cache's hands.
#[derive(Default)]
enum Phase {
    #[default]
    Start,
    /// A Redis GET is out; `variant` is set for the second lookup of a response with `Vary`.
    Waiting {
        waiter: Rc<store::Waiter>,
        variant: Option<Vec<u8>>,
    },
    /// The flight for `key` is this request's; the Redis `SET NX` for its lock is out.
    Locking {
        waiter: Rc<store::Waiter>,
        key: Vec<u8>,
        why: Forward,
    },
    /// The flight for `key` is this request's, another worker or node holds the lock: this
    /// request polls for the entry (`pending`: a Redis GET is out; with `lock`, the Redis
    /// question whether the lock is still held, asked before the entry).
    Polling {
        key: Vec<u8>,
        why: Forward,
        since_ms: u64,
        pending: Option<Rc<store::Waiter>>,
        lock: bool,
    },
    /// A purge's Redis DEL is out.
    Purging {
        waiter: Rc<store::Waiter>,
    },
    /// Waiting in another request's flight.
    Joined {
        member: Rc<coalesce::Member>,
        why: Forward,
    },
    Done,
}

impl Phase {
    /// Whether a parked request has what it waited for; `timedout`: its timer fired, which
    /// turns a missing Redis reply into `Timeout`.
    fn ready(&self, timedout: bool) -> bool {
        let replied = |w: &store::Waiter| {
            if timedout && w.reply.borrow().is_none() {
                *w.reply.borrow_mut() = Some(Err(crate::glue::redis::RedisError::Timeout));
            }
            w.reply.borrow().is_some()
        };
        match self {
            Phase::Waiting { waiter, .. } | Phase::Locking { waiter, .. } | Phase::Purging { waiter } => {
                replied(waiter)
            }
            Phase::Polling { pending: Some(w), .. } => replied(w),
            Phase::Polling { pending: None, .. } => timedout,
            Phase::Joined { member, .. } => timedout || member.outcome.get().is_some(),
            Phase::Start | Phase::Done => true,
        }
    }
}

/// What a forwarded response is stored as, decided by the header filter.
struct Plan {
    builder: Builder,
    /// The `Vary` names, and the entry's own key (a variant's) when there are any.
    variants: Option<(Vec<String>, Vec<u8>)>,
    keep_for: u32,
    body_done: bool,
    /// The entry's tags (`shield_cache_tags_header`), recorded in the tag index on store.
    tags: Vec<Vec<u8>>,
}

/// Per-request cache state, part of `RequestCtx`.
#[derive(Default)]
pub struct CacheCtx {
    phase: Phase,
    status: Option<CacheStatus>,
    /// The evaluated `shield_cache_key` (the primary key).
    key: Vec<u8>,
    /// The entry a hit is served from (or the stale entry a forwarded request keeps for
    /// `stale-if-error`); kept to the end of the request, since the response's headers and
    /// body point into it.
    entry: Vec<u8>,
    /// The response may be stored (a GET that was forwarded, not `no-store`d).
    store: bool,
    /// An unsafe method: a successful response invalidates the key.
    invalidate: bool,
    plan: Option<Plan>,
    /// The zone's index, for the flight this request may own.
    zone_index: usize,
    /// The response is the kept stale entry standing in for the origin's error; its body was
    /// sent.
    substituted: bool,
    /// The forwarded request carries the stale entry's validators.
    revalidating: bool,
    body_sent: bool,
    /// A purge's result: whether an entry was there.
    purged: Option<bool>,
    /// A purge by tag's result: the entries it dropped (or marked stale).
    purged_entries: Option<u64>,
    /// The purge is by tag (its answer counts entries).
    tag_purge: bool,
    /// Waited in a flight: looks up once more, never coalesces again.
    collapsed: bool,
    /// This request holds the key's lock and fetches for its flight.
    leader: Option<coalesce::Leadership>,
    /// The lock being taken is for a stale entry that may answer while it is refreshed; the
    /// entry's seconds past its lifetime.
    swr: Option<u32>,
    /// This is the background subrequest refreshing a stale entry (see `background`).
    refresh: bool,
}

impl Drop for CacheCtx {
    fn drop(&mut self) {
        match &self.phase {
            Phase::Waiting { waiter, .. } | Phase::Purging { waiter } => waiter.request.set(core::ptr::null_mut()),
            Phase::Joined { member, .. } => member.request.set(core::ptr::null_mut()),
            Phase::Locking { waiter, key, .. } => {
                waiter.request.set(core::ptr::null_mut());
                coalesce::end(self.zone_index, key, coalesce::Outcome::Go);
            }
            Phase::Polling { key, pending, .. } => {
                if let Some(w) = pending {
                    w.request.set(core::ptr::null_mut());
                }
                coalesce::end(self.zone_index, key, coalesce::Outcome::Go);
            }
            Phase::Start | Phase::Done => {}
        }
    }
}

/// Installs the precontent handler and the filters (called from the module's
/// postconfiguration; the filters then sit at the top of the chain).
pub fn install(cf: &mut ngx_conf_t) -> Result<(), ()> {
    lookup::install(cf)?;
    capture::install();
    Ok(())
}

/// `$shield_cache_status`: HIT, MISS, EXPIRED, REVALIDATE, REVALIDATED, BYPASS, COLLAPSED,
/// STALE or UPDATING; empty when the cache did not handle the request.
pub fn status_variable(r: *mut ngx_http_request_t) -> Option<&'static str> {
    crate::glue::RequestCtx::peek(r)?.cache.status.as_ref().map(CacheStatus::variable)
}

/// `$shield_cache_key`: the evaluated key; it lives as long as the request.
pub fn key_variable(r: *mut ngx_http_request_t) -> Option<&'static [u8]> {
    let ctx = crate::glue::RequestCtx::peek(r)?;
    (!ctx.cache.key.is_empty()).then_some(ctx.cache.key.as_slice())
}
