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

use super::directives::{CacheLoc, CacheZone};
use super::store::{self, Found};
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
        let zone = &*mcf.response_cache.zones[zi];
        let Some(ctx) = RequestCtx::get(r) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
        match core::mem::take(&mut ctx.cache.phase) {
            Phase::Start => start(req, &mut ctx.cache, lc, mcf, zone),
            Phase::Waiting { waiter, variant } => {
                let Some(reply) = waiter.reply.borrow_mut().take() else {
                    ctx.cache.phase = Phase::Waiting { waiter, variant };
                    return ngx::ffi::NGX_AGAIN as ngx_int_t;
                };
                waiter.request.set(ptr::null_mut());
                let bytes = reply.unwrap_or_else(|_| {
                    mcf.add(zone.slots.backend_errors, 1);
                    None
                });
                found(req, &mut ctx.cache, mcf, zone, bytes, variant)
            }
            Phase::Done => {
                ctx.cache.phase = Phase::Done;
                NGX_DECLINED as ngx_int_t
            }
        }
    })
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

fn start(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    lc: &CacheLoc,
    mcf: &'static MainConf,
    zone: &CacheZone,
) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    c.phase = Phase::Done;
    let Some(key) = lc.key.and_then(|k| k.eval(rp)).filter(|k| !k.is_empty()) else {
        return NGX_DECLINED as ngx_int_t;
    };
    c.key = key.as_bytes().to_vec();
    let method = r.method as u32;
    if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
        c.invalidate = [NGX_HTTP_POST, NGX_HTTP_PUT, NGX_HTTP_DELETE, NGX_HTTP_PATCH].contains(&method);
        return NGX_DECLINED as ngx_int_t;
    }
    if any_true(rp, lc.bypass.as_deref()) {
        return forward(c, mcf, zone, Forward::Bypass, method == NGX_HTTP_GET);
    }
    let control = request_control(r);
    if control.no_store {
        return forward(c, mcf, zone, Forward::Bypass, false);
    }
    if control.revalidate() {
        return forward(c, mcf, zone, Forward::Request, method == NGX_HTTP_GET);
    }
    let key = c.key.clone();
    match store::get(mcf, zone, &key, rp) {
        Found::Now(bytes) => found(r, c, mcf, zone, bytes, None),
        Found::Later(waiter) => park(r, c, mcf, waiter, None),
    }
}

fn park(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    mcf: &MainConf,
    waiter: std::rc::Rc<store::Waiter>,
    variant: Option<Vec<u8>>,
) -> ngx_int_t {
    c.phase = Phase::Waiting { waiter, variant };
    // The client answers Timeout at its deadline; this backstop only matters if it did not.
    let ms = mcf.redis.timeout_ms().unwrap_or(1000) + 1000;
    store::suspend(r, ms);
    ngx::ffi::NGX_AGAIN as ngx_int_t
}

/// Sends the request on to the content handler (the origin).
fn forward(c: &mut CacheCtx, mcf: &MainConf, zone: &CacheZone, why: Forward, store: bool) -> ngx_int_t {
    let slot = match why {
        Forward::UriMiss | Forward::VaryMiss => zone.slots.misses,
        Forward::Stale | Forward::Request => zone.slots.expired,
        Forward::Bypass | Forward::Method => zone.slots.bypassed,
    };
    mcf.add(slot, 1);
    c.status = Some(CacheStatus::Forwarded(why));
    c.store = store;
    c.phase = Phase::Done;
    NGX_DECLINED as ngx_int_t
}

/// What the backend returned for the primary key (`variant` None) or for a variant.
fn found(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    mcf: &'static MainConf,
    zone: &CacheZone,
    bytes: Option<Vec<u8>>,
    variant: Option<Vec<u8>>,
) -> ngx_int_t {
    let miss = if variant.is_some() { Forward::VaryMiss } else { Forward::UriMiss };
    let store = r.method as u32 == NGX_HTTP_GET;
    let Some(bytes) = bytes else { return forward(c, mcf, zone, miss, store) };
    let expected = variant.as_deref().unwrap_or(&c.key);
    let reuse = match entry::decode(&bytes, zone.max_entry) {
        Some(Entry::Variants { key, names }) if variant.is_none() && key == c.key.as_slice() => {
            let secondary = vary::secondary(&names, |n| request_values(r, n));
            let vkey = keys::variant(&c.key, &secondary);
            let rp: *mut ngx_http_request_t = r;
            return match store::get(mcf, zone, &vkey, rp) {
                Found::Now(bytes) => found(r, c, mcf, zone, bytes, Some(vkey)),
                Found::Later(waiter) => park(r, c, mcf, waiter, Some(vkey)),
            };
        }
        Some(Entry::Response(e)) if e.key == expected => e.stored.reuse(store::now(), &request_control(r)),
        // Corrupt, foreign (a hash collision in Redis) or a marker where a variant should be.
        _ => return forward(c, mcf, zone, miss, store),
    };
    match reuse {
        Reuse::Fresh { ttl, .. } => {
            mcf.add(zone.slots.hits, 1);
            c.status = Some(CacheStatus::Hit { ttl });
            c.entry = bytes;
            r.content_handler = Some(serve);
            NGX_DECLINED as ngx_int_t
        }
        Reuse::Stale { .. } => forward(c, mcf, zone, Forward::Stale, store),
    }
}

/// The content handler of a hit: the stored response, from the request's copy of the entry.
unsafe extern "C" fn serve(r: *mut ngx_http_request_t) -> ngx_int_t {
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
        if set_headers(req, &e, status).is_none() {
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
fn set_headers(r: &mut ngx_http_request_t, e: &ResponseEntry<'_>, status: CacheStatus) -> Option<()> {
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
    let cache_status = pool_str(r.pool, status.header(None, false).as_bytes())?;
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
        let b =
            ngx::ffi::ngx_pcalloc(r.pool, core::mem::size_of::<ngx::ffi::ngx_buf_t>()).cast::<ngx::ffi::ngx_buf_t>();
        let out = ngx::ffi::ngx_alloc_chain_link(r.pool);
        if b.is_null() || out.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*b).pos = body.as_ptr().cast_mut();
        (*b).last = (*b).pos.add(body.len());
        (*b).start = (*b).pos;
        (*b).end = (*b).last;
        (*b).set_memory(1);
        (*b).set_last_buf(1);
        (*b).set_last_in_chain(1);
        *out = ngx::ffi::ngx_chain_t { buf: b, next: ptr::null_mut() };
        ngx::ffi::ngx_http_output_filter(rp, out)
    }
}
