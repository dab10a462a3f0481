//! The zone's backend, as the request side sees it: `get` answers at once (shared memory) or
//! later (Redis, the request parked meanwhile); `put` and `delete` never wait.
//!
//! Redis failures fail open: a lookup that fails or times out is a miss (the request goes to
//! the origin), a store that fails is counted. The worker's one pipelined client carries the
//! commands (`glue::redis::client`), each reply bounded by what the command can return.

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

/// Bytes of a GET reply around an entry of `max_entry` bytes: the bulk header and CRLFs.
fn get_bound(max_entry: usize) -> Bound {
    Bound { bytes: max_entry + 32 + Bound::ERROR_LINE, elements: 0 }
}

pub fn now() -> i64 {
    ngx::ffi::ngx_timeofday().sec
}

pub fn get(mcf: &MainConf, zone: &CacheZone, key: &[u8], r: *mut ngx_http_request_t) -> Found {
    if zone.backend(mcf) == Backend::Local {
        return Found::Now(shm::get(zone, key, now()));
    }
    let Some(client) = redis::client() else { return Found::Now(None) };
    let mut cmd = Vec::with_capacity(64);
    let name = keys::redis_name(&zone.name, key);
    encode_command(&mut cmd, &[b"GET", &name]);
    let waiter = Waiter::new(r);
    let callback = deliver_to(&waiter, |reply| match reply {
        Reply::Bulk(v) => Ok(v),
        Reply::Error(e) => Err(RedisError::Server(e)),
        _ => Err(RedisError::Protocol("GET answered with neither a bulk nor nil")),
    });
    match client.send(&name, &cmd, get_bound(zone.max_entry), None, callback) {
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
    encode_command(&mut cmd, &[b"SET", &name, data, b"PX", ms.as_bytes()]);
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
