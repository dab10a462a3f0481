//! The request side: the precontent handler that decides hit or forward (after the access
//! phase, so `allow`/`deny` and `auth_*` still apply to hits), and the content handler that
//! serves a hit.
//!
//! A hit sets the request's content handler to [`serve`], replacing the location's
//! (`proxy_pass`), so the stored response goes through the whole filter chain like any other:
//! `add_header`, the security headers, gzip, and nginx's not-modified filter, which answers a
//! client's conditional request with 304 from the stored `ETag` / `Last-Modified`.

use core::ptr;

use ngx::ffi::{
    ngx_conf_t, ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t, ngx_parse_http_time, ngx_str_t,
    NGX_DECLINED, NGX_ERROR, NGX_HTTP_DELETE, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_PATCH, NGX_HTTP_POST, NGX_HTTP_PUT, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use super::coalesce::{self, Acquired, Leadership, Outcome};
use super::directives::{Backend, CacheLoc, CacheZone};
use super::store::{self, now_ms, Found};
use super::{CacheCtx, Phase};
use crate::cache::control::RequestControl;
use crate::cache::entry::{self, Entry, ResponseEntry};
use crate::cache::policy::Reuse;
use crate::cache::status::{CacheStatus, Forward};
use crate::cache::{keys, vary};
use crate::glue::util::{guard, headers, is_header, pool_str, push_header, static_str};
use crate::glue::{MainConf, RequestCtx, Shield};

pub fn install(cf: &mut ngx_conf_t) -> Result<(), ()> {
    crate::glue::headers::preflight::add_handler(
        cf,
        ngx::ffi::ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE as usize,
        precontent_phase,
    )
}

extern "C" fn precontent_phase(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "cache precontent", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        if !ptr::eq(r, req.main) {
            return NGX_DECLINED as ngx_int_t;
        }
        let Some(lc) = Shield::location_conf(req).map(|lc| &lc.response_cache) else {
            return NGX_DECLINED as ngx_int_t;
        };
        let (Some(zi), Some(mcf)) = (lc.zone(), Shield::main_conf(req)) else { return NGX_DECLINED as ngx_int_t };
        let Some(ctx) = RequestCtx::get(r) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
        let mut q = Lookup { r: req, c: &mut ctx.cache, lc, mcf, zone: &mcf.response_cache.zones[zi] };
        q.c.zone_index = zi;
        q.step()
    })
}

/// One request's lookup, with everything its steps need.
pub(super) struct Lookup<'a> {
    pub(super) r: &'a mut ngx_http_request_t,
    pub(super) c: &'a mut CacheCtx,
    pub(super) lc: &'a CacheLoc,
    pub(super) mcf: &'static MainConf,
    pub(super) zone: &'static CacheZone,
}

/// A Redis reply as the bytes it carried; a failure is counted and is a miss (fail open).
fn bytes_of(mcf: &MainConf, zone: &CacheZone, w: &store::Waiter) -> Option<Vec<u8>> {
    match w.reply.borrow_mut().take() {
        Some(Ok(bytes)) => bytes,
        Some(Err(_)) | None => {
            mcf.add(zone.slots.backend_errors, 1);
            None
        }
    }
}

impl Lookup<'_> {
    pub(super) fn rp(&mut self) -> *mut ngx_http_request_t {
        ptr::from_mut(self.r)
    }

    fn step(&mut self) -> ngx_int_t {
        match core::mem::take(&mut self.c.phase) {
            Phase::Start => self.start(),
            Phase::Purging { waiter } => super::purge::replied(self.r, self.c, &waiter),
            Phase::Waiting { waiter, variant } => {
                waiter.request.set(ptr::null_mut());
                let bytes = bytes_of(self.mcf, self.zone, &waiter);
                self.found(bytes, variant)
            }
            Phase::Locking { waiter, key, why } => {
                waiter.request.set(ptr::null_mut());
                let reply = waiter.reply.borrow_mut().take();
                if self.c.swr.is_some() {
                    return self.stale_lock_replied(key, reply);
                }
                match reply {
                    Some(Ok(Some(_))) => self.lead(key, why),
                    Some(Ok(None)) => self.poll_later(key, why, now_ms()),
                    Some(Err(_)) | None => {
                        self.mcf.add(self.zone.slots.backend_errors, 1);
                        coalesce::end(self.c.zone_index, &key, Outcome::Go);
                        self.forward(why, true)
                    }
                }
            }
            Phase::Polling { key, why, since_ms, pending, lock } => match pending {
                // The answer whether the lock is still held: if so, wait on (up to the
                // timeout); if it is gone, the entry, once more, decides (`polled` forwards).
                Some(w) if lock => {
                    w.request.set(ptr::null_mut());
                    match bytes_of(self.mcf, self.zone, &w) {
                        Some(_) => self.waited(key, why, since_ms),
                        None => self.poll_entry(key, why, since_ms),
                    }
                }
                Some(w) => {
                    w.request.set(ptr::null_mut());
                    let bytes = bytes_of(self.mcf, self.zone, &w);
                    self.polled(key, why, since_ms, bytes)
                }
                None => {
                    let rp = self.rp();
                    match coalesce::lock_held(self.mcf, self.zone, &key, rp) {
                        None | Some(Found::Now(_)) => self.poll_entry(key, why, since_ms),
                        Some(Found::Later(w)) => {
                            self.c.phase = Phase::Polling { key, why, since_ms, pending: Some(w), lock: true };
                            self.park(self.redis_wait_ms())
                        }
                    }
                }
            },
            Phase::Joined { member, why } => {
                member.request.set(ptr::null_mut());
                match member.outcome.get() {
                    Some(Outcome::Retry) => {
                        self.c.collapsed = true;
                        self.lookup()
                    }
                    // Nothing stored, or this request's own timeout: to the origin.
                    Some(Outcome::Go) | None => self.forward(why, true),
                }
            }
            Phase::Done => {
                self.c.phase = Phase::Done;
                NGX_DECLINED as ngx_int_t
            }
        }
    }

    fn start(&mut self) -> ngx_int_t {
        let rp = self.rp();
        self.c.phase = Phase::Done;
        let key = self.lc.key.and_then(|k| k.eval(rp)).filter(|k| !k.is_empty());
        self.c.key = key.map(|k| k.as_bytes().to_vec()).unwrap_or_default();
        match super::purge::key(self.r, self.lc.purge, &self.c.key) {
            Some(Ok(key)) => return super::purge::begin(self.r, self.c, self.mcf, self.zone, &key),
            Some(Err(status)) => return status,
            None if self.c.key.is_empty() => return NGX_DECLINED as ngx_int_t,
            None => {}
        }
        let method = self.r.method as u32;
        if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
            self.c.invalidate = [NGX_HTTP_POST, NGX_HTTP_PUT, NGX_HTTP_DELETE, NGX_HTTP_PATCH].contains(&method);
            return NGX_DECLINED as ngx_int_t;
        }
        if any_true(rp, self.lc.bypass.as_deref()) {
            return self.forward(Forward::Bypass, true);
        }
        let control = request_control(self.r);
        if control.no_store {
            return self.forward(Forward::Bypass, false);
        }
        if control.revalidate() {
            return self.forward(Forward::Request, true);
        }
        self.lookup()
    }

    fn lookup(&mut self) -> ngx_int_t {
        let (rp, key) = (self.rp(), self.c.key.clone());
        match store::get(self.mcf, self.zone, &key, rp) {
            Found::Now(bytes) => self.found(bytes, None),
            Found::Later(waiter) => {
                self.c.phase = Phase::Waiting { waiter, variant: None };
                self.park(self.redis_wait_ms())
            }
        }
    }

    /// The client answers Timeout at its deadline; this backstop only matters if it did not.
    pub(super) fn redis_wait_ms(&self) -> u64 {
        self.mcf.redis.timeout_ms().unwrap_or(1000) as u64 + 1000
    }

    pub(super) fn park(&mut self, ms: u64) -> ngx_int_t {
        store::suspend(self.r, ms as ngx::ffi::ngx_msec_t);
        ngx::ffi::NGX_AGAIN as ngx_int_t
    }

    /// Sends the request on to the content handler (the origin); `store`: a GET's response
    /// may be stored.
    pub(super) fn forward(&mut self, why: Forward, store: bool) -> ngx_int_t {
        let slots = &self.zone.slots;
        let slot = match why {
            Forward::UriMiss | Forward::VaryMiss => slots.misses,
            Forward::Stale | Forward::Request => slots.expired,
            Forward::Bypass => slots.bypassed,
        };
        self.mcf.add(slot, 1);
        self.c.status = Some(CacheStatus::Forwarded(why));
        self.c.store = store && self.r.method as u32 == NGX_HTTP_GET;
        self.c.phase = Phase::Done;
        NGX_DECLINED as ngx_int_t
    }

    /// A miss for `key`: coalesced with the other misses for it when `shield_cache_lock` is on,
    /// else forwarded.
    fn miss(&mut self, why: Forward, key: Vec<u8>) -> ngx_int_t {
        let Some(lock_ms) = self.lc.lock_ms() else { return self.forward(why, true) };
        if self.c.collapsed || self.r.method as u32 != NGX_HTTP_GET {
            return self.forward(why, true);
        }
        let (zi, rp) = (self.c.zone_index, self.rp());
        if let Some(member) = coalesce::join(zi, &key, rp) {
            self.c.phase = Phase::Joined { member, why };
            return self.park(lock_ms);
        }
        coalesce::open(zi, &key);
        match coalesce::acquire(self.mcf, self.zone, &key, lock_ms, rp) {
            Acquired::Held => self.lead(key, why),
            Acquired::NotHeld => self.poll_later(key, why, now_ms()),
            Acquired::Failed => {
                coalesce::end(zi, &key, Outcome::Go);
                self.forward(why, true)
            }
            Acquired::Later(waiter) => {
                self.c.phase = Phase::Locking { waiter, key, why };
                self.park(self.redis_wait_ms())
            }
        }
    }

    /// This request holds the lock: it fetches, and its store ends the flight.
    fn lead(&mut self, key: Vec<u8>, why: Forward) -> ngx_int_t {
        self.c.leader = Some(Leadership {
            mcf: self.mcf,
            zone: self.zone,
            zone_index: self.c.zone_index,
            key,
            outcome: Outcome::Go,
        });
        self.forward(why, true)
    }

    fn poll_later(&mut self, key: Vec<u8>, why: Forward, since_ms: u64) -> ngx_int_t {
        self.c.phase = Phase::Polling { key, why, since_ms, pending: None, lock: false };
        self.park(coalesce::POLL_MS)
    }

    /// Looks for the leader's entry (Redis: the lock was found gone, or could not be asked).
    fn poll_entry(&mut self, key: Vec<u8>, why: Forward, since_ms: u64) -> ngx_int_t {
        let rp = self.rp();
        match store::get(self.mcf, self.zone, &key, rp) {
            Found::Now(bytes) => self.polled(key, why, since_ms, bytes),
            Found::Later(w) => {
                self.c.phase = Phase::Polling { key, why, since_ms, pending: Some(w), lock: false };
                self.park(self.redis_wait_ms())
            }
        }
    }

    /// The lock is still held elsewhere: wait on, up to the lock's timeout.
    fn waited(&mut self, key: Vec<u8>, why: Forward, since_ms: u64) -> ngx_int_t {
        if now_ms().saturating_sub(since_ms) >= self.lc.lock_ms().unwrap_or(0) {
            coalesce::end(self.c.zone_index, &key, Outcome::Go);
            return self.forward(why, true);
        }
        self.poll_later(key, why, since_ms)
    }

    /// A poll's result: the leader's entry ends the flight; otherwise wait on, up to the
    /// lock's timeout (or, in the zone, while the lock is held).
    fn polled(&mut self, key: Vec<u8>, why: Forward, since_ms: u64, bytes: Option<Vec<u8>>) -> ngx_int_t {
        let zi = self.c.zone_index;
        let arrived = bytes.as_deref().and_then(|b| entry::decode(b, self.zone.max_entry)).is_some_and(|e| match e {
            Entry::Response(e) => {
                matches!(e.stored.reuse(store::now(), &RequestControl::default()), Reuse::Fresh { .. })
            }
            Entry::Variants { .. } => true,
        });
        if arrived {
            let n = coalesce::end(zi, &key, Outcome::Retry);
            self.mcf.add(self.zone.slots.collapsed, n as u64);
            self.c.collapsed = true;
            return self.lookup();
        }
        let waited = now_ms().saturating_sub(since_ms);
        let timeout = self.lc.lock_ms().unwrap_or(0);
        // Redis pollers look for the entry once the lock is gone (or could not be asked):
        // no entry then means the holder stored nothing.
        let lock_gone = self.zone.backend(self.mcf) != Backend::Local || !coalesce::held_locally(self.zone, &key);
        if waited >= timeout || lock_gone {
            coalesce::end(zi, &key, Outcome::Go);
            return self.forward(why, true);
        }
        self.poll_later(key, why, since_ms)
    }

    /// What the backend returned for the primary key (`variant` None) or for a variant.
    fn found(&mut self, bytes: Option<Vec<u8>>, variant: Option<Vec<u8>>) -> ngx_int_t {
        let miss = if variant.is_some() { Forward::VaryMiss } else { Forward::UriMiss };
        let expected = variant.clone().unwrap_or_else(|| self.c.key.clone());
        let Some(bytes) = bytes else { return self.miss(miss, expected) };
        let reuse = match entry::decode(&bytes, self.zone.max_entry) {
            Some(Entry::Variants { key, names }) if variant.is_none() && key == self.c.key.as_slice() => {
                let secondary = vary::secondary(&names, |n| request_values(self.r, n));
                let vkey = keys::variant(&self.c.key, &secondary);
                let rp = self.rp();
                return match store::get(self.mcf, self.zone, &vkey, rp) {
                    Found::Now(bytes) => self.found(bytes, Some(vkey)),
                    Found::Later(waiter) => {
                        self.c.phase = Phase::Waiting { waiter, variant: Some(vkey) };
                        self.park(self.redis_wait_ms())
                    }
                };
            }
            Some(Entry::Response(e)) if e.key == expected.as_slice() => {
                e.stored.reuse(store::now(), &request_control(self.r))
            }
            // Corrupt, foreign (a hash collision in Redis) or a marker where a variant should be.
            _ => return self.miss(miss, expected),
        };
        match reuse {
            Reuse::Fresh { ttl, .. } => {
                self.mcf.add(self.zone.slots.hits, 1);
                self.c.status = Some(match self.c.collapsed {
                    true => CacheStatus::Collapsed(miss),
                    false => CacheStatus::Hit { ttl },
                });
                self.c.entry = bytes;
                self.r.content_handler = Some(serve);
                NGX_DECLINED as ngx_int_t
            }
            Reuse::Stale { .. } => {
                let now = store::now();
                let control = request_control(self.r);
                let updating = self.lc.use_stale_updating;
                let swr = match entry::decode(&bytes, self.zone.max_entry) {
                    Some(Entry::Response(e)) => e.stored.serve_while_revalidating(now, &control, updating),
                    _ => None,
                };
                if let Some(expired_for) = swr {
                    return self.stale_while_revalidating(bytes, expected, expired_for);
                }
                // Kept: should the origin fail, it may answer instead (see `stale`); its
                // validators go to the origin, whose 304 it then answers (see `revalidate`).
                let Some(conditional) =
                    super::revalidate::add_validators(self.r, &bytes, self.zone.max_entry, self.c.revalidating)
                else {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
                };
                self.c.revalidating = conditional;
                self.c.entry = bytes;
                self.miss(Forward::Stale, expected)
            }
        }
    }
}

/// Values of a request header (all of its lines), in the request pool.
pub(super) fn request_values<'a>(r: &ngx_http_request_t, name: &[u8]) -> Vec<&'a [u8]> {
    headers(&r.headers_in.headers)
        .filter(|&h| is_header(h, name))
        // SAFETY: request header values live in the request pool for the request's life.
        .map(|h| unsafe { (*h).value.as_bytes() })
        .map(|v| unsafe { core::slice::from_raw_parts(v.as_ptr(), v.len()) })
        .collect()
}

fn request_control(r: &ngx_http_request_t) -> RequestControl {
    RequestControl::parse(&request_values(r, b"cache-control"), &request_values(r, b"pragma"))
}

/// A predicate of `shield_cache_bypass` / `shield_cache_no_store` holds for `r`.
pub(super) fn any_true(r: *mut ngx_http_request_t, predicates: Option<&[crate::glue::util::ComplexValue]>) -> bool {
    predicates.unwrap_or_default().iter().any(|p| p.eval(r).is_some_and(|v| !v.is_empty() && v.as_bytes() != b"0"))
}

/// The content handler of a hit: the stored response, from the request's copy of the entry.
pub(super) unsafe extern "C" fn serve(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "cache serve", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        // SAFETY: as above.
        let rc = unsafe { ngx_http_discard_request_body(r) };
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        let Some(ctx) = RequestCtx::peek(r) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
        let c = &ctx.cache;
        let max = Shield::location_conf(req)
            .and_then(|lc| lc.response_cache.zone())
            .and_then(|zi| Shield::main_conf(req).map(|m| m.response_cache.zones[zi].max_entry))
            .unwrap_or(0);
        let (Some(Entry::Response(e)), Some(status)) = (entry::decode(&c.entry, max), c.status) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        if set_headers(req, &e, &status.header(None, false)).is_none() {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        send(req, e.body)
    })
}

fn out_str(s: &[u8]) -> ngx_str_t {
    ngx_str_t { len: s.len(), data: s.as_ptr().cast_mut() }
}

/// The stored status and headers, plus `Age` and `Cache-Status`. The strings point into the
/// entry, which the request context keeps until the request is freed.
pub(super) fn set_headers(r: &mut ngx_http_request_t, e: &ResponseEntry<'_>, cache_status: &str) -> Option<()> {
    let out = &mut r.headers_out;
    out.status = usize::from(e.status);
    out.content_length_n = e.body.len() as _;
    for &(name, value) in &e.headers {
        if name.eq_ignore_ascii_case(b"content-type") {
            out.content_type = out_str(value);
            out.content_type_len = value.len();
            continue;
        }
        if name.eq_ignore_ascii_case(b"last-modified") {
            // Given to nginx as a time: its header filter writes it, and its not-modified filter
            // compares If-Modified-Since with it.
            // SAFETY: ngx_parse_http_time only reads `len` bytes.
            let t = unsafe { ngx_parse_http_time(value.as_ptr().cast_mut(), value.len()) };
            if t != -1 {
                out.last_modified_time = t;
                continue;
            }
        }
        let h = push_header(&mut out.headers, out_str(name), out_str(value))?;
        if name.eq_ignore_ascii_case(b"etag") {
            out.etag = h;
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            out.content_encoding = h;
        } else if name.eq_ignore_ascii_case(b"location") {
            out.location = h;
        }
    }
    let age = e.stored.age(store::now());
    let mut digits = Vec::with_capacity(10);
    crate::redis::resp::push_dec(&mut digits, u64::from(age));
    let age = pool_str(r.pool, &digits)?;
    let cache_status = pool_str(r.pool, cache_status.as_bytes())?;
    let out = &mut r.headers_out;
    push_header(&mut out.headers, static_str("Age"), age)?;
    push_header(&mut out.headers, static_str("Cache-Status"), cache_status)?;
    Some(())
}

fn send(r: &mut ngx_http_request_t, body: &[u8]) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    // SAFETY: r is live; the buffer points into the entry the request context keeps, in memory
    // nginx only reads.
    unsafe {
        let rc = ngx::ffi::ngx_http_send_header(rp);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 || body.is_empty() {
            return if body.is_empty() && rc == NGX_OK as ngx_int_t {
                ngx::ffi::ngx_http_send_special(rp, 1)
            } else {
                rc
            };
        }
        let out = body_chain(r, body);
        if out.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        ngx::ffi::ngx_http_output_filter(rp, out)
    }
}

/// A chain of one memory buffer over `body` (which must outlive the request's output), the
/// last of the response.
pub(super) fn body_chain(r: &mut ngx_http_request_t, body: &[u8]) -> *mut ngx::ffi::ngx_chain_t {
    // SAFETY: pool allocations for the request; the buffer only points at `body`, which nginx
    // only reads.
    unsafe {
        let b =
            ngx::ffi::ngx_pcalloc(r.pool, core::mem::size_of::<ngx::ffi::ngx_buf_t>()).cast::<ngx::ffi::ngx_buf_t>();
        let out = ngx::ffi::ngx_alloc_chain_link(r.pool);
        if b.is_null() || out.is_null() {
            return ptr::null_mut();
        }
        (*b).pos = body.as_ptr().cast_mut();
        (*b).last = (*b).pos.add(body.len());
        (*b).start = (*b).pos;
        (*b).end = (*b).last;
        (*b).set_memory(1);
        (*b).set_last_buf(1);
        (*b).set_last_in_chain(1);
        *out = ngx::ffi::ngx_chain_t { buf: b, next: ptr::null_mut() };
        out
    }
}
