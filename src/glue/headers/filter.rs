//! The header filters: the module's security headers, header stripping, cookie hardening,
//! rate-limit headers, CORS response headers and cache policy, applied to every response of a
//! main request — nginx's own error pages included, since they pass through the same chain.
//!
//! **Where in the chain.** nginx calls header filters from the top of a stack, and each module's
//! postconfiguration pushes its filter on top: a module initialised later runs earlier. A
//! dynamic module is appended to the module list, so its filter would run *before* nginx's
//! headers filter (`add_header`, `expires`) and never see what that adds. Hence two filters:
//! - [`install`] is called by `ngx_http_shield_headers_filter_module`, which the library's
//!   `ngx_module_order` places just before `ngx_http_headers_filter_module` in the module list:
//!   its filter is pushed first and so runs right *after* nginx's headers filter, seeing the
//!   response as `add_header` and `expires` left it. Everything is applied there.
//! - [`install_snapshot`] is called by `ngx_http_shield_module` (last in the list, top of the
//!   chain): it notes, before nginx's headers filter runs, whether the response came with its own
//!   `Cache-Control` (an upstream's), which the cache policy keeps unless told to override;
//!   one that only `expires` or `add_header` put there is replaced.
//!
//! Each header the module sets *replaces* any copy already in the response — an upstream's or
//! `add_header`'s, with or without `always` — so a response never carries two values.

use core::ptr;

use ngx::ffi::{
    ngx_http_output_header_filter_pt, ngx_http_request_t, ngx_http_time, ngx_http_top_header_filter, ngx_int_t,
    ngx_str_t, ngx_time, NGX_ERROR, NGX_HTTP_NO_CONTENT,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, Request};

use crate::glue::conf::LocConf;
use crate::glue::util::{find_header, guard, headers, is_header, pool_str, push_header, remove_headers, static_str};
use crate::glue::MainConf;
use crate::glue::{RequestCtx, Shield};
use crate::headers::{cache, cors};

static mut NEXT_SNAPSHOT_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

/// Pushes the filter that applies everything; see the module comment for its place.
pub fn install(_cf: &mut ngx::ffi::ngx_conf_t) -> Result<(), ()> {
    // SAFETY: filter chains are linked single-threaded during configuration, like every
    // nginx filter module does in its postconfiguration.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
    }
    Ok(())
}

/// Pushes the filter that runs before nginx's headers filter.
pub fn install_snapshot(_cf: &mut ngx::ffi::ngx_conf_t) -> Result<(), ()> {
    // SAFETY: as in install().
    unsafe {
        NEXT_SNAPSHOT_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(snapshot_filter);
    }
    Ok(())
}

extern "C" fn snapshot_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "header filter", NGX_ERROR as ngx_int_t, || {
        // SAFETY: as above; main and conf pointers are valid for a live request.
        let req = unsafe { &mut *r };
        let cache_policy =
            ptr::eq(r, req.main) && Shield::location_conf(req).is_some_and(|lc| lc.cache_policy.is_some());
        // A header is sent once per request, so the flag (default false) is only ever set here.
        if cache_policy && find_header(&req.headers_out.headers, b"cache-control").is_some() {
            let Some(ctx) = RequestCtx::get(r) else { return NGX_ERROR as ngx_int_t };
            ctx.own_cache_control = true;
        }
        // SAFETY: install_snapshot() saved the next filter; nginx's chain ends in a real filter.
        unsafe { NEXT_SNAPSHOT_FILTER.map_or(NGX_ERROR as ngx_int_t, |f| f(r)) }
    })
}

extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "header filter", NGX_ERROR as ngx_int_t, || {
        // SAFETY: as above; main and conf pointers are valid for a live request.
        let req = unsafe { &mut *r };
        if ptr::eq(r, req.main) {
            let lc = Shield::location_conf(req);
            if let Some(lc) = lc.filter(|lc| lc.filters_headers() || crate::glue::limit::has_headers(r)) {
                if apply(req, lc).is_none() {
                    return NGX_ERROR as ngx_int_t;
                }
            }
        }
        // SAFETY: install() saved the next filter; nginx's chain always ends in a real filter.
        unsafe { NEXT_HEADER_FILTER.map_or(NGX_ERROR as ngx_int_t, |f| f(r)) }
    })
}

/// A request header's value, through ngx's own header iterator (request headers are read,
/// never changed, so it fits; response headers need the element itself, see `util`). The value
/// lives in the request pool, as long as the request, so it is not tied to the borrow of `r`.
pub fn request_header<'a>(r: &ngx_http_request_t, name: &str) -> Option<&'a str> {
    // SAFETY: Request is a transparent wrapper of ngx_http_request_t; r is live, and the header
    // list and its strings stay in the request pool until the request is freed.
    let req: &'a Request = unsafe { &*ptr::from_ref(r).cast::<Request>() };
    let (_, value) = req.headers_in_iterator().find(|(key, _)| key.as_bytes().eq_ignore_ascii_case(name.as_bytes()))?;
    value.to_str().ok()
}

pub(crate) fn is_tls(r: &ngx_http_request_t) -> bool {
    #[cfg(ngx_feature = "http_ssl")]
    {
        // SAFETY: the connection outlives its requests.
        !unsafe { (*r.connection).ssl }.is_null()
    }
    #[cfg(not(ngx_feature = "http_ssl"))]
    {
        let _ = r;
        false
    }
}

/// `None` only on allocation failure.
fn apply(r: &mut ngx_http_request_t, lc: &LocConf) -> Option<()> {
    let mcf = Shield::main_conf(r);
    let tls = is_tls(r);
    let rp: *mut ngx_http_request_t = r;

    // One pass over the response's headers drops every copy we replace or strip.
    for h in headers(&r.headers_out.headers) {
        // SAFETY: h is a live element of the response header list.
        let key = unsafe { (*h).key };
        let ours = lc.out_headers.iter().any(|o| (tls || !o.tls_only) && same_name(o.name, key))
            || lc.strip.iter().any(|&n| same_name(n, key));
        if ours {
            // SAFETY: as above; nginx skips elements whose hash is 0.
            unsafe { (*h).hash = 0 };
        }
    }
    for h in &lc.out_headers {
        if h.tls_only && !tls {
            continue;
        }
        let value = h.value.eval(rp)?;
        push_header(&mut r.headers_out.headers, h.name, value)?;
    }
    if !lc.out_headers.is_empty() {
        count(mcf, |s| s.headers_applied);
    }
    if lc.strips_server {
        suppress_server_header(r)?;
    }

    if let Some(flags) = &lc.cookie {
        for h in headers(&r.headers_out.headers).filter(|&h| is_header(h, b"set-cookie")) {
            // SAFETY: h is a live element of the response header list.
            let value = unsafe { (*h).value };
            let Ok(text) = value.to_str() else { continue };
            if let Some(hardened) = flags.harden(text, tls) {
                // SAFETY: as above; the new value lives in the request pool.
                unsafe { (*h).value = pool_str(r.pool, hardened.as_bytes())? };
                count(mcf, |s| s.cookies_hardened);
            }
        }
    }

    if let Some(mcf) = mcf {
        if let Some(rendered) = crate::glue::limit::response_headers(rp, lc, mcf) {
            // One pass drops any copies (an upstream's own rate-limit headers), then ours go in.
            for h in headers(&r.headers_out.headers) {
                if rendered.iter().any(|(name, _)| is_header(h, name.as_bytes())) {
                    // SAFETY: h is a live element of the response header list.
                    unsafe { (*h).hash = 0 };
                }
            }
            // All values in one pool copy.
            let all = pool_str(r.pool, &rendered.buf)?;
            for &(name, start, end) in &rendered.headers[..rendered.len] {
                // SAFETY: start..end lies within the copied buffer.
                let value = ngx_str_t { len: end - start, data: unsafe { all.data.add(start) } };
                push_header(&mut r.headers_out.headers, static_str(name), value)?;
            }
            crate::glue::limit::recycle(rendered);
        }
    }
    if let Some(policy) = &lc.cors_policy {
        apply_cors(r, policy)?;
    }
    if let Some(policy) = &lc.cache_policy {
        apply_cache(r, policy, mcf)?;
    }
    Some(())
}

fn same_name(a: ngx_str_t, b: ngx_str_t) -> bool {
    a.len == b.len && a.as_bytes().eq_ignore_ascii_case(b.as_bytes())
}

/// nginx writes its own `Server: nginx[/version]` unless `headers_out.server` is set; a
/// removed (hash 0) element there makes it write none.
fn suppress_server_header(r: &mut ngx_http_request_t) -> Option<()> {
    if r.headers_out.server.is_null() {
        let h = push_header(&mut r.headers_out.headers, static_str("Server"), static_str(""))?;
        // SAFETY: h was just pushed.
        unsafe { (*h).hash = 0 };
        r.headers_out.server = h;
    } else {
        // SAFETY: server points into the header list.
        unsafe { (*r.headers_out.server).hash = 0 };
    }
    Some(())
}

fn apply_cors(r: &mut ngx_http_request_t, policy: &cors::CorsPolicy) -> Option<()> {
    let rp: *mut ngx_http_request_t = r;
    let preflight = RequestCtx::peek(rp).is_some_and(|ctx| ctx.preflight);
    let (owned, vary) = if preflight {
        (cors::PREFLIGHT_HEADERS, cors::PREFLIGHT_VARY)
    } else {
        (cors::ACTUAL_HEADERS, cors::ACTUAL_VARY)
    };
    add_vary(r, vary)?;
    // The module owns CORS here: an upstream's own Allow-* headers could reflect any origin, and
    // `add_header Access-Control-Allow-Origin` beside ours makes browsers refuse both.
    for name in owned {
        remove_headers(&r.headers_out.headers, name.as_bytes());
    }
    let Some(origin) = request_header(r, "origin") else {
        return Some(());
    };
    let headers = if preflight {
        // The rewrite-phase handler answered 204 when the policy allows this preflight; the
        // same request, under the same policy, gets the same answer here.
        if r.headers_out.status != NGX_HTTP_NO_CONTENT as usize {
            return Some(());
        }
        let method = request_header(r, "access-control-request-method")?;
        match policy.preflight(origin, method, request_header(r, "access-control-request-headers")) {
            cors::Preflight::Allow(headers) => headers,
            cors::Preflight::Deny => return Some(()),
        }
    } else {
        policy.response_headers(origin)
    };
    for (name, value) in headers {
        let value = pool_str(r.pool, value.as_bytes())?;
        push_header(&mut r.headers_out.headers, static_str(name), value)?;
    }
    Some(())
}

/// Adds one `Vary` header with those of `names` the response does not vary on yet.
fn add_vary(r: &mut ngx_http_request_t, names: &[&str]) -> Option<()> {
    let existing = headers(&r.headers_out.headers).filter(|&h| is_header(h, b"vary")).map(|h| {
        // SAFETY: h is a live element of the response header list, which outlives this scan.
        unsafe { (*h).value.as_bytes() }
    });
    let missing = cors::missing_vary(existing, names);
    if missing.is_empty() {
        return Some(());
    }
    let value = pool_str(r.pool, missing.join(", ").as_bytes())?;
    push_header(&mut r.headers_out.headers, static_str("Vary"), value).map(|_| ())
}

fn apply_cache(r: &mut ngx_http_request_t, policy: &cache::CachePolicy, mcf: Option<&MainConf>) -> Option<()> {
    let rp: *mut ngx_http_request_t = r;
    let path = r.uri.to_str().unwrap_or("");
    let content_type = r.headers_out.content_type.to_str().ok().filter(|s| !s.is_empty());
    let resp = cache::Response {
        path,
        content_type,
        request_has_authorization: !r.headers_in.authorization.is_null(),
        // Whoever set it (an upstream or `add_header Set-Cookie`), a cookie makes it private.
        sets_cookie: find_header(&r.headers_out.headers, b"set-cookie").is_some(),
        // Noted before nginx's headers filter: `expires` and `add_header` do not count.
        has_cache_control: RequestCtx::peek(rp).is_some_and(|ctx| ctx.own_cache_control),
    };
    let private = resp.request_has_authorization || resp.sets_cookie;
    // Long-lived rules are for successful responses: caching a 404 for a year is a bug.
    if r.headers_out.status >= 400 && !private {
        return Some(());
    }
    let Some(decision) = policy.decide(&resp) else {
        return Some(());
    };
    count(mcf, |s| if decision.cache_control == cache::PRIVATE_NO_STORE { s.cache_no_store } else { s.cache_set });
    // The decision owns both: an `Expires` left from `expires` or an upstream would contradict it.
    remove_headers(&r.headers_out.headers, b"cache-control");
    remove_headers(&r.headers_out.headers, b"expires");
    r.headers_out.expires = ptr::null_mut();
    let value = pool_str(r.pool, decision.cache_control.as_bytes())?;
    push_header(&mut r.headers_out.headers, static_str("Cache-Control"), value)?;
    if let Some(secs) = decision.expires_in {
        let value = if secs == 0 { static_str("Thu, 01 Jan 1970 00:00:01 GMT") } else { http_time(r, secs)? };
        r.headers_out.expires = push_header(&mut r.headers_out.headers, static_str("Expires"), value)?;
    }
    Some(())
}

/// `now + secs` as an HTTP date, in the request pool.
fn http_time(r: &ngx_http_request_t, secs: u64) -> Option<ngx_str_t> {
    const LEN: usize = "Mon, 28 Sep 1970 06:00:00 GMT".len();
    let buf = pool_str(r.pool, &[0u8; LEN])?;
    let when = ngx_time().saturating_add(secs.min(i64::MAX as u64 / 2) as _);
    // SAFETY: buf has room for exactly one HTTP date.
    unsafe { ngx_http_time(buf.data, when) };
    Some(buf)
}

fn count(mcf: Option<&MainConf>, slot: impl FnOnce(&crate::glue::headers::Slots) -> usize) {
    if let Some(mcf) = mcf {
        mcf.add(slot(&mcf.slots), 1);
    }
}

extern "C" fn filter_module_postconfiguration(cf: *mut ngx::ffi::ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx calls this with a valid cf, once per configuration cycle.
    guard(unsafe { (*cf).log }, "postconfiguration", NGX_ERROR as ngx_int_t, || match install(unsafe { &mut *cf }) {
        Ok(()) => ngx::ffi::NGX_OK as ngx_int_t,
        Err(()) => NGX_ERROR as ngx_int_t,
    })
}

static NGX_HTTP_SHIELD_HEADERS_FILTER_MODULE_CTX: ngx::ffi::ngx_http_module_t = ngx::ffi::ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: Some(filter_module_postconfiguration),
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: None,
    merge_loc_conf: None,
};

/// The second module of this library: no directives and no configuration of its own, only the
/// header filter, placed in the module list by `ngx_module_order` (see `glue/mod.rs`). It reads
/// `ngx_http_shield_module`'s configuration.
#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_shield_headers_filter_module: ngx::ffi::ngx_module_t = ngx::ffi::ngx_module_t {
    ctx: ptr::addr_of!(NGX_HTTP_SHIELD_HEADERS_FILTER_MODULE_CTX) as _,
    commands: ptr::null_mut(),
    type_: ngx::ffi::NGX_HTTP_MODULE as _,
    ..ngx::ffi::ngx_module_t::default()
};
