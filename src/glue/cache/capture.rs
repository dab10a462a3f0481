//! The header and body filters that store forwarded responses. Both sit at the top of the
//! chain (the module is last in nginx's module list), so they see the origin's response before
//! any other filter changes it — nginx's headers filter, gzip, the not-modified filter — and a
//! hit, served through the same chain, gets the same treatment the original did.
//!
//! The header filter decides (RFC 9111 storability, `shield_cache_no_store`, `max_entry`
//! against `Content-Length`) and writes the entry's head; the body filter copies each buffer
//! as it passes, gives up once the entry would exceed `max_entry` (the response itself is never
//! held back), and stores the entry after the last buffer has been passed on.

use core::ptr;

use ngx::ffi::{
    ngx_chain_t, ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt, ngx_http_request_t,
    ngx_http_top_body_filter, ngx_http_top_header_filter, ngx_int_t, ngx_parse_http_time, NGX_ERROR,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use super::directives::CacheZone;
use super::lookup::{any_true, request_values};
use super::{store, CacheCtx, Plan};
use crate::cache::control::ResponseControl;
use crate::cache::entry::Builder;
use crate::cache::policy::{self, Exchange, Stored};
use crate::cache::status::CacheStatus;
use crate::cache::{invalidate, keys, tags, vary};
use crate::glue::util::{guard, headers, pool_str, push_header, static_str};
use crate::glue::{MainConf, RequestCtx, Shield};

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

pub fn install() {
    // SAFETY: filter chains are linked single-threaded during configuration.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = ngx_http_top_body_filter;
        ngx_http_top_body_filter = Some(body_filter);
    }
}

/// Headers the entry never keeps: hop-by-hop ones, and those nginx writes itself when it
/// serves the entry (length, date, server) or that are computed per hit (Age).
const NOT_STORED: [&[u8]; 12] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"content-length",
    b"date",
    b"server",
    b"age",
    b"set-cookie",
];

extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "cache header filter", NGX_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        let ours = |c: &RequestCtx| c.cache.status.is_some() || c.cache.invalidate;
        if (ptr::eq(r, req.main) || super::background::is_refresh(r)) && RequestCtx::peek(r).is_some_and(ours) {
            if let (Some(ctx), Some(lc), Some(mcf)) =
                (RequestCtx::get(r), Shield::location_conf(req), Shield::main_conf(req))
            {
                if let Some(zone) = lc.response_cache.zone().map(|zi| &*mcf.response_cache.zones[zi]) {
                    if on_response(req, &mut ctx.cache, &lc.response_cache, mcf, zone).is_none() {
                        return NGX_ERROR as ngx_int_t;
                    }
                }
            }
        }
        // SAFETY: install() saved the next filter; nginx's chain always ends in a real filter.
        unsafe { NEXT_HEADER_FILTER.map_or(NGX_ERROR as ngx_int_t, |f| f(r)) }
    })
}

/// `None` only on allocation failure.
fn on_response(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    lc: &super::CacheLoc,
    mcf: &'static MainConf,
    zone: &'static CacheZone,
) -> Option<()> {
    let status = r.headers_out.status as u16;
    if c.invalidate {
        // RFC 9111 §4.4: a non-error response to an unsafe method invalidates the URI.
        if (200..400).contains(&status) {
            store::delete(mcf, zone, &c.key);
            mcf.add(zone.slots.invalidations, 1);
            // And the same-origin URIs of its Location and Content-Location.
            for key in invalidated_keys(r, &c.key) {
                store::delete(mcf, zone, &key);
                mcf.add(zone.slots.invalidations, 1);
            }
        }
        return Some(());
    }
    if super::revalidate::on_304(r, c, lc, mcf, zone)? {
        return Some(());
    }
    if c.refresh {
        super::background::on_response(r, c, lc, zone);
        return Some(());
    }
    if super::stale::substitute(r, c, lc.use_stale.as_deref().unwrap_or_default(), zone.max_entry)? {
        mcf.add(zone.slots.stale, 1);
        return Some(());
    }
    let Some(CacheStatus::Forwarded(why)) = c.status else { return Some(()) };
    let stored = c.store && !any_true(r, lc.no_store.as_deref()) && plan(r, c, lc, zone).is_some();
    if !stored {
        // Nothing will be stored: the flight this request leads, if any, ends now (its
        // members go to the origin).
        c.leader = None;
    }
    let value = pool_str(r.pool, CacheStatus::Forwarded(why).header(Some(status), stored).as_bytes())?;
    push_header(&mut r.headers_out.headers, static_str("Cache-Status"), value)?;
    Some(())
}

/// The keys of the same-origin URIs in the response's `Location` and `Content-Location`
/// (RFC 9111 §4.4), other than the request's own.
fn invalidated_keys(r: &ngx_http_request_t, key: &[u8]) -> Vec<Vec<u8>> {
    // SAFETY: the request line and Host live in the request pool; the connection is live.
    let (uri, host, https) = unsafe {
        let host = r.headers_in.host.as_ref().map(|h| h.value.as_bytes()).unwrap_or_default();
        (r.unparsed_uri.as_bytes(), host, !(*r.connection).ssl.is_null())
    };
    let values = response_values(r, b"location").into_iter().chain(response_values(r, b"content-location"));
    let scheme = if https { "https" } else { "http" };
    invalidate::targets(scheme, host, uri, values)
        .iter()
        .filter(|t| t.as_slice() != uri)
        .filter_map(|t| invalidate::key_for(key, uri, t))
        .collect()
}

/// The response's values of a header.
fn response_values<'a>(r: &ngx_http_request_t, name: &[u8]) -> Vec<&'a [u8]> {
    headers(&r.headers_out.headers)
        .filter(|&h| crate::glue::util::is_header(h, name))
        // SAFETY: response header strings live in the request pool for the request's life.
        .map(|h| unsafe { core::slice::from_raw_parts((*h).value.data, (*h).value.len) })
        .collect()
}

pub(super) fn http_time(v: &[u8]) -> Option<i64> {
    // SAFETY: ngx_parse_http_time only reads `len` bytes.
    let t = unsafe { ngx_parse_http_time(v.as_ptr().cast_mut(), v.len()) };
    (t != -1).then_some(t)
}

/// The facts storing decides on, from a response's fields (`values` of a name) and the
/// request; and the response's `Vary`.
pub(super) fn exchange<'a>(
    r: &ngx_http_request_t,
    status: u16,
    values: impl Fn(&[u8]) -> Vec<&'a [u8]>,
    last_modified: Option<i64>,
) -> (Exchange, vary::Vary) {
    let vary = vary::parse(values(b"vary").into_iter());
    let x = Exchange {
        status,
        control: ResponseControl::parse(values(b"cache-control").into_iter()),
        expires: values(b"expires").first().map(|v| http_time(v)),
        date: values(b"date").first().and_then(|v| http_time(v)),
        last_modified,
        age: values(b"age").first().map_or(0, |v| crate::cache::control::delta_seconds(Some(v))),
        request_authorization: !r.headers_in.authorization.is_null(),
        set_cookie: !values(b"set-cookie").is_empty(),
        vary_star: vary == vary::Vary::Uncacheable,
        validator: last_modified.is_some() || !values(b"etag").is_empty(),
    };
    (x, vary)
}

/// The response's fields an entry keeps (see [`NOT_STORED`]).
pub(super) fn stored_fields<'a>(r: &ngx_http_request_t) -> Vec<(&'a [u8], &'a [u8])> {
    headers(&r.headers_out.headers)
        .filter_map(|h| {
            // SAFETY: live elements of the response header list; hash 0 marks a removed one.
            let (hash, name, value) = unsafe { ((*h).hash, &(*h).key, &(*h).value) };
            if hash == 0 || name.len == 0 {
                return None;
            }
            // SAFETY: as above; the strings live in the request pool.
            let (name, value) = unsafe {
                (core::slice::from_raw_parts(name.data, name.len), core::slice::from_raw_parts(value.data, value.len))
            };
            (!NOT_STORED.iter().any(|n| name.eq_ignore_ascii_case(n))).then_some((name, value))
        })
        .collect()
}

/// How long past its lifetime the location keeps entries (`shield_cache_use_stale`).
pub(super) fn grace(lc: &super::CacheLoc) -> u32 {
    if lc.use_stale.as_ref().is_some_and(|s| !s.is_empty()) || lc.use_stale_updating {
        policy::USE_STALE_GRACE
    } else {
        0
    }
}

/// Decides whether the response is stored and, if so, starts its entry in `c.plan`.
pub(super) fn plan(r: &ngx_http_request_t, c: &mut CacheCtx, lc: &super::CacheLoc, zone: &CacheZone) -> Option<()> {
    let out = &r.headers_out;
    if out.content_length_n > zone.max_entry as i64 {
        return None;
    }
    let now = store::now();
    let last_modified = (out.last_modified_time > 0).then_some(out.last_modified_time);
    let (x, vary) = exchange(r, out.status as u16, |n| response_values(r, n), last_modified);
    let freshness = policy::assess(&x, &lc.rules, now).ok()?;
    let variants = match vary {
        vary::Vary::Names(names) => {
            let secondary = vary::secondary(&names, |n| request_values(r, n));
            let vkey = keys::variant(&c.key, &secondary);
            Some((names, vkey))
        }
        _ => None,
    };
    let entry_key = variants.as_ref().map_or(c.key.as_slice(), |(_, k)| k.as_slice());
    // SAFETY: the content type lives in the request pool.
    let content_type = unsafe { core::slice::from_raw_parts(out.content_type.data, out.content_type.len) };
    let content_type = (!content_type.is_empty()).then_some((&b"Content-Type"[..], content_type));
    let kept = stored_fields(r);
    let stored = Stored { stored_at: now, freshness };
    let fields = content_type.into_iter().chain(kept.iter().copied());
    let builder = Builder::new(entry_key, x.status, &stored, fields, zone.max_entry)?;
    let tags = match lc.tags.as_ref().and_then(Option::as_ref) {
        Some(t) => match tags::parse(response_values(r, t.name.as_bytes()), t.limits) {
            Ok(list) => list.into_iter().map(<[u8]>::to_vec).collect(),
            Err(e) => {
                // Stored without some of its tags, it would escape their purge.
                let mcf = Shield::main_conf(r)?;
                mcf.add(zone.slots.tag_rejects[e as usize], 1);
                return None;
            }
        },
        None => Vec::new(),
    };
    // An entry with a validator stays past its lifetime too: it can be revalidated (a 304
    // instead of the whole body).
    let keep_for = freshness.keep_for(grace(lc), x.validator);
    c.plan = Some(Plan { builder, variants, keep_for, body_done: false, tags });
    Some(())
}

extern "C" fn body_filter(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls body filters with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "cache body filter", NGX_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        let main = ptr::eq(r, req.main);
        if main && RequestCtx::peek(r).is_some_and(|c| c.cache.substituted) {
            let max_entry = Shield::location_conf(req)
                .and_then(|lc| lc.response_cache.zone())
                .and_then(|zi| Shield::main_conf(req).map(|m| m.response_cache.zones[zi].max_entry))
                .unwrap_or(0);
            let Some(ctx) = RequestCtx::get(r) else { return NGX_ERROR as ngx_int_t };
            let out = super::stale::replace_body(req, &mut ctx.cache, chain, max_entry);
            // SAFETY: install() saved the next filter.
            return unsafe { NEXT_BODY_FILTER.map_or(NGX_ERROR as ngx_int_t, |f| f(r, out)) };
        }
        if !main && super::background::is_refresh(r) {
            return super::background::body(req, chain);
        }
        let capturing = main && RequestCtx::peek(r).is_some_and(|c| c.cache.plan.is_some());
        if capturing {
            if let Some(ctx) = RequestCtx::get(r) {
                copy(&mut ctx.cache, chain);
            }
        }
        // SAFETY: install() saved the next filter.
        let rc = unsafe { NEXT_BODY_FILTER.map_or(NGX_ERROR as ngx_int_t, |f| f(r, chain)) };
        if capturing && rc != NGX_ERROR as ngx_int_t {
            finish(req);
        }
        rc
    })
}

/// Copies the chain's bytes into the plan; drops the plan when it cannot hold them.
pub(super) fn copy(c: &mut CacheCtx, chain: *mut ngx_chain_t) {
    let Some(plan) = c.plan.as_mut() else { return };
    let mut cl = chain;
    let mut ok = true;
    // SAFETY: a body filter's chain is a valid NULL-terminated list of buffers.
    unsafe {
        while !cl.is_null() && ok {
            let b = (*cl).buf;
            if (*b).temporary() != 0 || (*b).memory() != 0 || (*b).mmap() != 0 {
                let len = (*b).last.offset_from((*b).pos) as usize;
                ok = len == 0 || plan.builder.push(core::slice::from_raw_parts((*b).pos, len));
            } else if (*b).in_file() != 0 {
                ok = read_file(plan, b);
            }
            if (*b).last_buf() != 0 {
                plan.body_done = true;
            }
            cl = (*cl).next;
        }
    }
    if !ok {
        c.plan = None;
        c.leader = None;
    }
}

/// A buffer the origin's response was spooled to (a proxy temporary file): read back from
/// the page cache it was just written to, as nginx's own output chain does without sendfile.
///
/// # Safety
/// `b` is a live file buffer of the chain.
unsafe fn read_file(plan: &mut Plan, b: *mut ngx::ffi::ngx_buf_t) -> bool {
    // SAFETY: the caller's contract; file and its fd are open while the buffer is in flight.
    unsafe {
        let (mut pos, last) = ((*b).file_pos, (*b).file_last);
        let fd = (*(*b).file).fd;
        let mut chunk = [0u8; 16 * 1024];
        while pos < last {
            let want = ((last - pos) as usize).min(chunk.len());
            let n = libc::pread(fd, chunk.as_mut_ptr().cast(), want, pos);
            if n <= 0 || !plan.builder.push(&chunk[..n as usize]) {
                return false;
            }
            pos += n as i64;
        }
    }
    true
}

/// After the last buffer went on: stores the entry (and the variants marker).
pub(super) fn finish(r: &mut ngx_http_request_t) {
    let Some(ctx) = RequestCtx::get(r) else { return };
    let c = &mut ctx.cache;
    if !c.plan.as_ref().is_some_and(|p| p.body_done) {
        return;
    }
    let Some(plan) = c.plan.take() else { return };
    let (Some(lc), Some(mcf)) = (Shield::location_conf(r), Shield::main_conf(r)) else { return };
    let Some(zone) = lc.response_cache.zone().map(|zi| &*mcf.response_cache.zones[zi]) else { return };
    // Recording the tags (if any) first; the flight ends once the entry is on its way.
    super::tags::store(mcf, zone, &c.key, plan, c.leader.take());
}
