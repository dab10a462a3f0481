//! A stale entry answering at once while one refresh fetches its replacement: RFC 5861
//! `stale-while-revalidate`, `shield_cache_use_stale updating` and
//! `shield_cache_background_update` (nginx's `proxy_cache_background_update`).
//!
//! An entry that may answer while it is refreshed (`Stored::serve_while_revalidating`) takes
//! the key's lock — the one `shield_cache_lock` uses, taken here whether or not that directive
//! is on, so one refresh runs per key across workers and nodes:
//!
//! - **held**, background update on: a background subrequest (`NGX_HTTP_SUBREQUEST_BACKGROUND`)
//!   cloned at this phase, so it goes straight to the location's content handler (the origin),
//!   carries the entry's validators and stores what comes back; the client gets the stale
//!   entry at once (STALE);
//! - **held**, background update off: this request goes to the origin (EXPIRED), as for any
//!   stale entry, and its response replaces the entry;
//! - **not held**: a refresh or fetch is under way (in this worker, another or another node):
//!   the stale entry answers at once (UPDATING).
//!
//! The refresh's response reaches no client: the filters copy it into the entry and consume
//! its buffers. A 304 updates the entry (`revalidate`); a server error is never stored over it
//! (`policy::refresh_replaces`): the entry keeps answering within its window and a later
//! request starts another refresh. The refresh's store, or its end without one, releases the
//! lock. As with nginx's background update, the client's connection is only reused or closed
//! once the refresh is done (the client has its whole response before).

use core::ptr;

use ngx::ffi::{
    ngx_chain_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_list_part_t, ngx_list_push, ngx_palloc,
    ngx_table_elt_t, ngx_uint_t, NGX_DECLINED, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_SUBREQUEST_BACKGROUND, NGX_HTTP_SUBREQUEST_CLONE, NGX_OK,
};

use super::coalesce::{self, Acquired, Leadership, Outcome};
use super::directives::{CacheZone, DEFAULT_LOCK_TIMEOUT_MS};
use super::lookup::{any_true, serve, Lookup};
use super::{CacheCtx, CacheLoc, Phase};
use crate::cache::entry::{self, Entry};
use crate::cache::policy;
use crate::cache::revalidate;
use crate::cache::status::{CacheStatus, Forward};
use crate::glue::redis::RedisError;
use crate::glue::util::{headers, is_header, pool_str, push_header, static_str};
use crate::glue::RequestCtx;

/// Request headers the refresh does not inherit: the client's own conditions and ranges (the
/// refresh validates the entry, with the entry's validators).
const NOT_INHERITED: [&[u8]; 6] =
    [b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range", b"range"];

impl Lookup<'_> {
    /// `bytes`, stale by `expired_for` seconds, may answer while it is refreshed; `key` is the
    /// entry's own key (a variant's, with `Vary`).
    pub(super) fn stale_while_revalidating(&mut self, bytes: Vec<u8>, key: Vec<u8>, expired_for: u32) -> ngx_int_t {
        self.c.entry = bytes;
        let zi = self.c.zone_index;
        if coalesce::is_open(zi, &key) {
            return self.serve_stale(expired_for, false);
        }
        coalesce::open(zi, &key);
        self.c.swr = Some(expired_for);
        let ms = self.lc.lock_ms().unwrap_or(DEFAULT_LOCK_TIMEOUT_MS);
        let rp = self.rp();
        match coalesce::acquire(self.mcf, self.zone, &key, ms, rp) {
            Acquired::Held => self.stale_locked(key, true),
            Acquired::NotHeld => self.stale_locked(key, false),
            Acquired::Failed => {
                self.c.swr = None;
                coalesce::end(zi, &key, Outcome::Go);
                self.forward_stale()
            }
            Acquired::Later(waiter) => {
                self.c.phase = Phase::Locking { waiter, key, why: Forward::Stale };
                self.park(self.redis_wait_ms())
            }
        }
    }

    /// Redis answered the `SET NX` for a stale entry's lock.
    pub(super) fn stale_lock_replied(
        &mut self,
        key: Vec<u8>,
        reply: Option<Result<Option<Vec<u8>>, RedisError>>,
    ) -> ngx_int_t {
        match reply {
            Some(Ok(held)) => self.stale_locked(key, held.is_some()),
            Some(Err(_)) | None => {
                self.mcf.add(self.zone.slots.backend_errors, 1);
                self.c.swr = None;
                coalesce::end(self.c.zone_index, &key, Outcome::Go);
                self.forward_stale()
            }
        }
    }

    fn stale_locked(&mut self, key: Vec<u8>, held: bool) -> ngx_int_t {
        let expired_for = self.c.swr.take().unwrap_or(0);
        let zi = self.c.zone_index;
        if !held {
            coalesce::end(zi, &key, Outcome::Go);
            return self.serve_stale(expired_for, false);
        }
        let leader = Leadership { mcf: self.mcf, zone: self.zone, zone_index: zi, key, outcome: Outcome::Go };
        if !self.lc.background_update() {
            self.c.leader = Some(leader);
            return self.forward_stale();
        }
        let (primary, entry) = (self.c.key.clone(), self.c.entry.clone());
        let started = spawn(self.r, &primary, &entry, zi, self.zone.max_entry, leader).is_some();
        if started {
            self.mcf.add(self.zone.slots.background_updates, 1);
        }
        self.serve_stale(expired_for, started)
    }

    /// The stale entry answers this request.
    fn serve_stale(&mut self, expired_for: u32, started: bool) -> ngx_int_t {
        self.mcf.add(self.zone.slots.updating, 1);
        self.c.status = Some(CacheStatus::WhileRevalidating { expired_for, started });
        self.c.phase = Phase::Done;
        self.r.content_handler = Some(serve);
        NGX_DECLINED as ngx_int_t
    }

    /// The stale entry's usual way: to the origin with its validators.
    fn forward_stale(&mut self) -> ngx_int_t {
        let Some(conditional) =
            super::revalidate::add_validators(self.r, &self.c.entry, self.zone.max_entry, self.c.revalidating)
        else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        self.c.revalidating = conditional;
        self.forward(Forward::Stale, true)
    }
}

/// Starts the refresh of `entry` (stored under the primary `key`) as a background subrequest
/// of `r` holding `leader`. `None` when it could not be started (the lock is then released).
fn spawn(
    r: &mut ngx_http_request_t,
    key: &[u8],
    entry: &[u8],
    zone_index: usize,
    max_entry: usize,
    leader: Leadership,
) -> Option<()> {
    let mut sr: *mut ngx_http_request_t = ptr::null_mut();
    let flags = (NGX_HTTP_SUBREQUEST_BACKGROUND | NGX_HTTP_SUBREQUEST_CLONE) as ngx_uint_t;
    let rp: *mut ngx_http_request_t = r;
    // SAFETY: r is the live main request; nginx copies the uri and args structures (their bytes
    // live in the request pool, which the subrequest shares).
    let rc = unsafe {
        ngx_http_subrequest(rp, ptr::addr_of_mut!(r.uri), ptr::addr_of_mut!(r.args), &mut sr, ptr::null_mut(), flags)
    };
    if rc != NGX_OK as ngx_int_t || sr.is_null() {
        return None;
    }
    // SAFETY: a live subrequest, allocated from r's pool.
    let s = unsafe { &mut *sr };
    if s.method as u32 != NGX_HTTP_GET {
        // A HEAD's refresh fetches the body the entry needs.
        s.method = NGX_HTTP_GET as ngx_uint_t;
        s.method_name = static_str("GET");
    }
    let revalidating = own_headers(r, s, entry, max_entry)?;
    let ctx = RequestCtx::get(sr)?;
    let c = &mut ctx.cache;
    c.key = key.to_vec();
    c.entry = entry.to_vec();
    c.store = true;
    c.status = Some(CacheStatus::Forwarded(Forward::Stale));
    c.revalidating = revalidating;
    c.zone_index = zone_index;
    c.leader = Some(leader);
    c.refresh = true;
    Some(())
}

/// Gives the refresh its own list of request headers: the client's, but for its conditions
/// and ranges, plus the entry's validators; whether it carries any.
fn own_headers(main: &ngx_http_request_t, sr: &mut ngx_http_request_t, entry: &[u8], max_entry: usize) -> Option<bool> {
    const N: usize = 20;
    let size = core::mem::size_of::<ngx_table_elt_t>();
    // SAFETY: pool allocation; the list is set up as ngx_list_init does.
    unsafe {
        let elts = ngx_palloc(sr.pool, N * size);
        if elts.is_null() {
            return None;
        }
        let list = &mut sr.headers_in.headers;
        list.part = ngx_list_part_t { elts, nelts: 0, next: ptr::null_mut() };
        list.last = ptr::addr_of_mut!(list.part);
        list.size = size;
        list.nalloc = N as ngx_uint_t;
        list.pool = sr.pool;
    }
    let inherited = headers(&main.headers_in.headers).filter(|&h| {
        // SAFETY: live elements of the main request's header list.
        (unsafe { (*h).hash != 0 }) && !NOT_INHERITED.iter().any(|n| is_header(h, n))
    });
    for h in inherited {
        // SAFETY: ngx_list_push returns room for one element; the copy keeps the element's
        // hash and lower-case key, which the proxy module matches its own headers by.
        unsafe {
            let slot = ngx_list_push(&mut sr.headers_in.headers).cast::<ngx_table_elt_t>();
            if slot.is_null() {
                return None;
            }
            slot.write(h.read());
        }
    }
    let hin = &mut sr.headers_in;
    for p in [&mut hin.if_modified_since, &mut hin.if_unmodified_since, &mut hin.if_match, &mut hin.if_none_match] {
        *p = ptr::null_mut();
    }
    hin.range = ptr::null_mut();
    hin.if_range = ptr::null_mut();
    let Some(Entry::Response(e)) = entry::decode(entry, max_entry) else { return Some(false) };
    let (etag, last_modified) = revalidate::validators(&e.headers);
    for (name, value) in [("If-None-Match", etag), ("If-Modified-Since", last_modified)] {
        if let Some(v) = value {
            let v = pool_str(sr.pool, v)?;
            push_header(&mut sr.headers_in.headers, static_str(name), v)?;
        }
    }
    Some(etag.is_some() || last_modified.is_some())
}

/// Whether `r` is a refresh subrequest.
pub fn is_refresh(r: *mut ngx_http_request_t) -> bool {
    // SAFETY: filters are called with live requests.
    !ptr::eq(r, unsafe { (*r).main }) && RequestCtx::peek(r).is_some_and(|c| c.cache.refresh)
}

/// The refresh's response headers (a 304 was handled before, by `revalidate`): stored unless
/// it is a server error or not storable; either way the lock goes once there is nothing to
/// wait for.
pub fn on_response(r: &mut ngx_http_request_t, c: &mut CacheCtx, lc: &CacheLoc, zone: &CacheZone) {
    let status = if r.err_status != 0 { r.err_status } else { r.headers_out.status } as u16;
    let rp: *mut ngx_http_request_t = r;
    let storable = policy::refresh_replaces(status)
        && !any_true(rp, lc.no_store.as_deref())
        && super::capture::plan(r, c, lc, zone).is_some();
    if !storable {
        c.plan = None;
        c.leader = None;
    }
}

/// The refresh's body filter: copies the body into the entry, consumes the buffers (nothing is
/// sent to the client) and stores the entry after the last one.
pub fn body(r: &mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    let Some(ctx) = RequestCtx::get(rp) else { return NGX_ERROR as ngx_int_t };
    if ctx.cache.plan.is_some() {
        super::capture::copy(&mut ctx.cache, chain);
    }
    let mut last = false;
    let mut cl = chain;
    // SAFETY: a body filter's chain is a valid NULL-terminated list of buffers.
    unsafe {
        while !cl.is_null() {
            let b = (*cl).buf;
            last |= (*b).last_buf() != 0 || (*b).last_in_chain() != 0;
            (*b).pos = (*b).last;
            (*b).file_pos = (*b).file_last;
            cl = (*cl).next;
        }
    }
    if !last {
        return NGX_OK as ngx_int_t;
    }
    if let Some(plan) = ctx.cache.plan.as_mut() {
        plan.body_done = true;
    }
    super::capture::finish(r);
    if let Some(ctx) = RequestCtx::get(rp) {
        ctx.cache.leader = None;
    }
    NGX_OK as ngx_int_t
}
