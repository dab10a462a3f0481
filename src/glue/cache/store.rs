//! The zone's backend, as the request side sees it: `get` answers at once (shared memory) or
//! later (Redis, the request parked meanwhile); `put` and `delete` never wait.
//!
//! Redis failures fail open: a lookup that fails or times out is a miss (the request goes to
//! the origin), a store that fails is counted. The worker's one pipelined client carries the
//! commands (`glue::redis::client`), each reply bounded by what the command can return.
//!
//! **Node-local copies of large entries.** Moving a large entry out of Redis costs Redis far
//! more than the entry's check (a 64 KB GET: ~24 µs of redis-server CPU here; the check: ~2 µs),
//! so with Redis every entry of [`LOCAL_COPY_MIN`] bytes or more is also kept in the zone's
//! shared memory, and each Redis value ends with a random stamp (16 hex digits) that changes
//! with every store. A lookup with a local copy sends one script (`VALIDATE_SCRIPT`) that
//! compares the stamp at the end of the Redis value with the copy's: the same, Redis answers 1
//! and the copy is served; another (a newer store from any node), Redis answers the whole
//! value in the same round trip; none (purged, expired), a miss. So a purge or a store on one
//! node is seen by the next request on every node, as without copies.

use core::ptr;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ngx::ffi::{ngx_http_block_reading, ngx_http_core_run_phases, ngx_http_request_t, ngx_http_test_reading};
use ngx::ffi::{ngx_post_event, ngx_posted_events};

use super::directives::{Backend, CacheZone};
use super::shm;
use crate::cache::keys;
use crate::glue::redis::{self, RedisError};
use crate::glue::util::guard;
use crate::glue::MainConf;
use crate::redis::resp::{encode_command, Bound, Reply};

/// A parked request and the Redis reply it waits for. The request side clears `request` when
/// its context goes away, so a late reply never touches a freed request.
pub struct Waiter {
    pub request: Cell<*mut ngx_http_request_t>,
    pub reply: RefCell<Option<Result<Option<Vec<u8>>, RedisError>>>,
}

impl Waiter {
    pub fn new(r: *mut ngx_http_request_t) -> Rc<Waiter> {
        Rc::new(Waiter { request: Cell::new(r), reply: RefCell::new(None) })
    }
}

/// A client callback that hands `map`'s reading of the reply to `waiter` and wakes its request.
pub fn deliver_to(
    waiter: &Rc<Waiter>,
    map: impl FnOnce(Reply) -> Result<Option<Vec<u8>>, RedisError> + 'static,
) -> Box<dyn FnOnce(Result<Reply, RedisError>)> {
    let w = waiter.clone();
    Box::new(move |reply: Result<Reply, RedisError>| {
        *w.reply.borrow_mut() = Some(reply.and_then(map));
        wake(w.request.get());
    })
}

pub enum Found {
    Now(Option<Vec<u8>>),
    /// A Redis GET is out: park the request until the waiter has its reply.
    Later(Rc<Waiter>),
}

/// Bytes of a GET reply around an entry of `max_entry` bytes: the bulk header, the stamp and
/// CRLFs.
fn get_bound(max_entry: usize) -> Bound {
    Bound { bytes: max_entry + STAMP + 32 + Bound::ERROR_LINE, elements: 0 }
}

/// Entries this large (or larger) keep a node-local copy with a Redis backend (see above).
pub const LOCAL_COPY_MIN: usize = 8 * 1024;
/// The stamp's length at the end of every Redis value: 16 hex digits of a random u64.
const STAMP: usize = 16;
/// A local copy is dropped after this long unused by the zone's LRU or this age, whichever
/// comes first (every use is checked against Redis anyway).
const LOCAL_COPY_SECS: i64 = 600;

/// KEYS[1] the entry, ARGV[1] the local copy's stamp: 1 if Redis holds that very store, the
/// whole value if it holds another, nil if none.
const VALIDATE_SCRIPT: &str = r#"
local tail = redis.call('GETRANGE', KEYS[1], -16, -1)
if tail == ARGV[1] then return 1 end
if tail == '' then return false end
return redis.call('GET', KEYS[1])
"#;

fn validate_script() -> &'static crate::limit::script::Script {
    static SCRIPT: std::sync::OnceLock<crate::limit::script::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| crate::limit::script::Script::new(VALIDATE_SCRIPT))
}

/// The zone's shared-memory name of `key`'s local copy (apart from the lock's and, with the
/// local backend, the entries' own names).
fn local_name(key: &[u8]) -> Vec<u8> {
    let mut n = Vec::with_capacity(key.len() + 6);
    n.extend_from_slice(b"copy\0");
    n.extend_from_slice(key);
    n
}

/// A new stamp, as text (the soft purge's script writes it over the old one).
pub fn new_stamp_string() -> String {
    String::from_utf8_lossy(&new_stamp()).into_owned()
}

/// A new random stamp.
fn new_stamp() -> [u8; STAMP] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut raw = [0u8; 8];
    if getrandom::fill(&mut raw).is_err() {
        // No entropy: still distinct per store within this process.
        raw = (now() as u64 ^ u64::from(std::process::id()) << 40 ^ next_count() << 20).to_le_bytes();
    }
    let mut out = [0u8; STAMP];
    for (i, b) in raw.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
}

fn next_count() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A Redis value: the entry then its stamp. The entry alone, if it has one.
fn unstamped(mut value: Vec<u8>) -> Option<Vec<u8>> {
    let len = value.len().checked_sub(STAMP)?;
    if !value[len..].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    value.truncate(len);
    Some(value)
}

/// The worker's monotonic clock, in ms.
pub fn now_ms() -> u64 {
    // SAFETY: nginx updates ngx_current_msec on the worker's only thread.
    unsafe { ngx::ffi::ngx_current_msec as u64 }
}

pub fn now() -> i64 {
    ngx::ffi::ngx_timeofday().sec
}

pub fn get(mcf: &'static MainConf, zone: &'static CacheZone, key: &[u8], r: *mut ngx_http_request_t) -> Found {
    if zone.backend(mcf) == Backend::Local {
        return Found::Now(shm::get(zone, key, now()));
    }
    let Some(client) = redis::client() else { return Found::Now(None) };
    let name = keys::redis_name(&zone.name, key);
    let copy_name = local_name(key);
    // A local copy: its entry and stamp.
    let copy = shm::get(zone, &copy_name, now()).filter(|c| c.len() > STAMP);
    let waiter = Waiter::new(r);
    let keep_copy = move |value: &[u8]| {
        if value.len() >= LOCAL_COPY_MIN + STAMP {
            shm::put(zone, &copy_name, value, now() + LOCAL_COPY_SECS);
        }
    };
    let (cmd, script) = match &copy {
        Some(c) => {
            let stamp = String::from_utf8_lossy(&c[c.len() - STAMP..]).into_owned();
            (validate_script().evalsha(core::slice::from_ref(&name), &[stamp]), Some(validate_script()))
        }
        None => {
            let mut cmd = Vec::with_capacity(64);
            encode_command(&mut cmd, &[b"GET", &name]);
            (cmd, None)
        }
    };
    let deliver = deliver_to(&waiter, move |reply| match reply {
        // The local copy is what Redis holds.
        Reply::Integer(1) => Ok(copy.and_then(unstamped)),
        Reply::Bulk(Some(v)) => {
            keep_copy(&v);
            Ok(unstamped(v))
        }
        Reply::Bulk(None) => Ok(None),
        Reply::Error(e) => Err(RedisError::Server(e)),
        _ => Err(RedisError::Protocol("GET answered with neither a bulk nor nil")),
    });
    let sent_ms = now_ms();
    let callback: Box<dyn FnOnce(Result<Reply, RedisError>)> = Box::new(move |reply| {
        if reply.is_ok() {
            mcf.observe(&zone.slots.redis_latency, now_ms().saturating_sub(sent_ms));
        }
        deliver(reply)
    });
    match client.send(&name, &cmd, get_bound(zone.max_entry), script, callback) {
        Ok(()) => Found::Later(waiter),
        Err(_) => {
            mcf.add(zone.slots.backend_errors, 1);
            Found::Now(None)
        }
    }
}

/// Stores `data` under `key` for `keep_for` seconds; failures only count.
pub fn put(mcf: &'static MainConf, zone: &'static CacheZone, key: &[u8], data: &[u8], keep_for: u32) {
    let len = data.len() as u64;
    let count = move |ok: bool| {
        if ok {
            mcf.add(zone.slots.stores, 1);
            mcf.add(zone.slots.stored_bytes, len);
        } else {
            mcf.add(zone.slots.store_failures, 1);
        }
    };
    if zone.backend(mcf) == Backend::Local {
        return count(shm::put(zone, key, data, now() + i64::from(keep_for)));
    }
    let Some(client) = redis::client() else { return count(false) };
    let mut cmd = Vec::with_capacity(data.len() + 128);
    let ms = (u64::from(keep_for) * 1000).to_string();
    let name = keys::redis_name(&zone.name, key);
    let mut value = Vec::with_capacity(data.len() + STAMP);
    value.extend_from_slice(data);
    value.extend_from_slice(&new_stamp());
    if value.len() >= LOCAL_COPY_MIN + STAMP {
        shm::put(zone, &local_name(key), &value, now() + LOCAL_COPY_SECS.min(i64::from(keep_for)));
    } else {
        shm::delete(zone, &local_name(key));
    }
    encode_command(&mut cmd, &[b"SET", &name, &value, b"PX", ms.as_bytes()]);
    let callback = Box::new(move |reply: Result<Reply, RedisError>| count(matches!(reply, Ok(Reply::Simple(_)))));
    if client.send(&name, &cmd, Bound::SIMPLE, None, callback).is_err() {
        count(false);
    }
}

/// Drops the entry under `key`, on every node when the backend is Redis.
pub fn delete(mcf: &MainConf, zone: &CacheZone, key: &[u8]) {
    if zone.backend(mcf) == Backend::Local {
        shm::delete(zone, key);
        return;
    }
    shm::delete(zone, &local_name(key));
    let Some(client) = redis::client() else { return };
    let mut cmd = Vec::with_capacity(64);
    let name = keys::redis_name(&zone.name, key);
    encode_command(&mut cmd, &[b"DEL", &name]);
    let _ = client.send(&name, &cmd, Bound::SIMPLE, None, Box::new(|_| {}));
}

/// Parks the request until it is woken (a Redis reply, the end of a flight) or `ms` pass. The
/// timer is non-cancelable, so a graceful reload or quit waits for the request.
pub fn suspend(r: &mut ngx_http_request_t, ms: ngx::ffi::ngx_msec_t) {
    r.read_event_handler = Some(ngx_http_test_reading);
    r.write_event_handler = Some(resume_after_redis);
    // SAFETY: the connection is live while its request is.
    unsafe {
        let wev = (*r.connection).write;
        (*wev).set_cancelable(0);
        if (*wev).timer_set() != 0 {
            ngx::ffi::ngx_del_timer(wev);
        }
        ngx::ffi::ngx_add_timer(wev, ms);
    }
}

pub fn wake(r: *mut ngx_http_request_t) {
    if r.is_null() {
        return;
    }
    // SAFETY: r is non-null only while the request is alive (see Waiter).
    unsafe {
        let wev = (*(*r).connection).write;
        if (*wev).timer_set() != 0 {
            ngx::ffi::ngx_del_timer(wev);
        }
        ngx_post_event(wev, ptr::addr_of_mut!(ngx_posted_events));
    }
}

unsafe extern "C" fn resume_after_redis(r: *mut ngx_http_request_t) {
    guard(unsafe { (*(*r).connection).log }, "cache resume", (), || {
        // SAFETY: nginx calls the write event handler with the live request.
        let timedout = unsafe { (*(*(*r).connection).write).timedout() } != 0;
        if let Some(ctx) = crate::glue::RequestCtx::get(r) {
            if !ctx.cache.phase.ready(timedout) {
                return; // the socket became writable: keep waiting
            }
        }
        // SAFETY: as above; the phases run again from the cache's precontent handler.
        unsafe {
            let wev = (*(*r).connection).write;
            if (*wev).timer_set() != 0 {
                ngx::ffi::ngx_del_timer(wev);
            }
            (*wev).set_timedout(0);
            (*r).read_event_handler = Some(ngx_http_block_reading);
            (*r).write_event_handler = Some(ngx_http_core_run_phases);
            ngx_http_core_run_phases(r);
        }
    })
}
