//! `shield_cache_lock`: concurrent misses for one key wait for one origin fetch — in the
//! worker, and across workers and nodes.
//!
//! - **In the worker**, the first miss for a key opens a *flight*; later misses join it and
//!   park (non-cancelable timer: their `timeout`). The flight ends with `Retry` (the entry
//!   was stored: members look up again and are served from the cache) or `Go` (nothing was
//!   stored, or the fetch failed: members go to the origin themselves).
//! - **Across workers and nodes**, the flight's opener takes a lock in the backend (`SET NX PX`
//!   in Redis, a lock entry in the zone) that expires after `timeout`. Holding it, the opener
//!   is the *leader* and fetches; the leader's store (or its failure) ends the flight and drops
//!   the lock. Not holding it, the opener *polls* the backend every [`POLL_MS`] until the
//!   entry appears (`Retry`) or the lock is gone or `timeout` passes (`Go`): one poller per key
//!   per worker, whatever the number of waiting requests.
//!
//! A leader that ends without storing (its request freed, the response not storable or too
//! large) ends the flight with `Go` from its `Drop`, so no member waits longer than needed.

use core::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use ngx::ffi::ngx_http_request_t;

use super::directives::{Backend, CacheZone};
use super::store;
use crate::cache::keys;
use crate::glue::redis;
use crate::glue::MainConf;
use crate::redis::resp::{encode_command, Bound, Reply};

/// How often a worker that does not hold the lock looks for the leader's entry.
pub const POLL_MS: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Retry,
    Go,
}

/// A request waiting in a flight.
pub struct Member {
    pub request: Cell<*mut ngx_http_request_t>,
    pub outcome: Cell<Option<Outcome>>,
}

struct Flight {
    members: Vec<Rc<Member>>,
}

type FlightKey = (usize, Vec<u8>);

static mut FLIGHTS: Option<HashMap<FlightKey, Flight>> = None;

fn flights() -> &'static mut HashMap<FlightKey, Flight> {
    // SAFETY: nginx workers are single-threaded; FLIGHTS is only touched from the event loop.
    unsafe { (*core::ptr::addr_of_mut!(FLIGHTS)).get_or_insert_with(HashMap::new) }
}

/// Joins the flight for `key` if one is open in this worker.
pub fn join(zone: usize, key: &[u8], r: *mut ngx_http_request_t) -> Option<Rc<Member>> {
    let flight = flights().get_mut(&(zone, key.to_vec()))?;
    let m = Rc::new(Member { request: Cell::new(r), outcome: Cell::new(None) });
    flight.members.push(m.clone());
    Some(m)
}

/// Whether a flight for `key` is open in this worker (its fetch is under way).
pub fn is_open(zone: usize, key: &[u8]) -> bool {
    flights().contains_key(&(zone, key.to_vec()))
}

/// Opens the flight for `key` (the caller then leads or polls).
pub fn open(zone: usize, key: &[u8]) {
    flights().insert((zone, key.to_vec()), Flight { members: Vec::new() });
}

/// Ends the flight: every member still waiting is woken with `outcome`.
pub fn end(zone: usize, key: &[u8], outcome: Outcome) -> usize {
    let Some(flight) = flights().remove(&(zone, key.to_vec())) else { return 0 };
    for m in &flight.members {
        m.outcome.set(Some(outcome));
        store::wake(m.request.get());
    }
    flight.members.len()
}

fn lock_key(key: &[u8]) -> Vec<u8> {
    keys::variant(b"\x01lock", key)
}

/// The lock for `key` is taken by the request holding it; `Drop` (or [`Leadership::release`])
/// ends the flight and releases the lock.
pub struct Leadership {
    pub mcf: &'static MainConf,
    pub zone: &'static CacheZone,
    pub zone_index: usize,
    pub key: Vec<u8>,
    pub outcome: Outcome,
}

impl Leadership {
    pub fn release(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        release_lock(self.mcf, self.zone, &self.key);
        end(self.zone_index, &self.key, self.outcome);
    }
}

fn release_lock(mcf: &MainConf, zone: &CacheZone, key: &[u8]) {
    store::delete(mcf, zone, &lock_key(key));
}

pub enum Acquired {
    Held,
    NotHeld,
    /// The backend failed: no coalescing for this request.
    Failed,
    /// The Redis `SET NX` is out: `Ok(Some(_))` in the reply means the lock is ours.
    Later(Rc<store::Waiter>),
}

/// Redis: asks whether the lock for `key` is still held (`EXISTS`); the reply is `Some` while
/// it is. A poller of another node that sees it gone stops waiting at once (the holder stored
/// the entry first, or stored nothing), instead of waiting for the lock's timeout. `None`
/// without Redis (the zone's pollers read the zone).
pub fn lock_held(mcf: &MainConf, zone: &CacheZone, key: &[u8], r: *mut ngx_http_request_t) -> Option<store::Found> {
    if zone.backend(mcf) == Backend::Local {
        return None;
    }
    let Some(client) = redis::client() else { return Some(store::Found::Now(None)) };
    let name = keys::redis_name(&zone.name, &lock_key(key));
    let mut cmd = Vec::with_capacity(96);
    encode_command(&mut cmd, &[b"EXISTS", &name]);
    let waiter = store::Waiter::new(r);
    let callback = store::deliver_to(&waiter, |reply| match reply {
        Reply::Integer(n) => Ok((n > 0).then(Vec::new)),
        _ => Err(redis::RedisError::Protocol("EXISTS answered with no integer")),
    });
    Some(match client.send(&name, &cmd, Bound::SIMPLE, None, callback) {
        Ok(()) => store::Found::Later(waiter),
        Err(_) => store::Found::Now(None),
    })
}

/// Tries to take the cross-worker lock for `key` for `timeout_ms`.
pub fn acquire(mcf: &MainConf, zone: &CacheZone, key: &[u8], timeout_ms: u64, r: *mut ngx_http_request_t) -> Acquired {
    let lock = lock_key(key);
    if zone.backend(mcf) == Backend::Local {
        let until = store::now() + timeout_ms.div_ceil(1000) as i64;
        return if super::shm::insert_if_absent(zone, &lock, b"", until) { Acquired::Held } else { Acquired::NotHeld };
    }
    let Some(client) = redis::client() else { return Acquired::Failed };
    let mut cmd = Vec::with_capacity(96);
    let ms = timeout_ms.to_string();
    let name = keys::redis_name(&zone.name, &lock);
    encode_command(&mut cmd, &[b"SET", &name, b"1", b"NX", b"PX", ms.as_bytes()]);
    let waiter = store::Waiter::new(r);
    let callback = store::deliver_to(&waiter, |reply| match reply {
        Reply::Simple(_) => Ok(Some(Vec::new())),
        Reply::Bulk(None) => Ok(None),
        _ => Err(redis::RedisError::Protocol("SET NX answered with neither OK nor nil")),
    });
    match client.send(&name, &cmd, Bound::SIMPLE, None, callback) {
        Ok(()) => Acquired::Later(waiter),
        Err(_) => Acquired::Failed,
    }
}

/// Whether the lock for `key` is still held, for pollers of the zone (Redis pollers wait for
/// the entry or their timeout instead).
pub fn held_locally(zone: &CacheZone, key: &[u8]) -> bool {
    super::shm::get(zone, &lock_key(key), store::now()).is_some()
}
