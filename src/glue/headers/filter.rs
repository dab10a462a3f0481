//! The header filter: applies the location's security headers, header stripping, cookie
//! hardening, CORS response headers and cache policy to every response of a main request —
//! nginx's own error pages included, since they pass through the same filter chain.
//!
//! Each header we set *replaces* any copy already in the response (an upstream's, say), so a
//! response never carries two conflicting values.

use core::ptr;

use ngx::ffi::{
    ngx_http_output_header_filter_pt, ngx_http_request_t, ngx_http_time, ngx_http_top_header_filter,
    ngx_int_t, ngx_str_t, ngx_time, NGX_ERROR,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};

use crate::glue::conf::LocConf;
use crate::glue::MainConf;
use crate::glue::util::{find_header, headers, is_header, pool_str, push_header, remove_headers, static_str};
use crate::glue::{RequestCtx, Shield};
use crate::headers::cache;

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

pub fn install(_cf: &mut ngx::ffi::ngx_conf_t) -> Result<(), ()> {
    // SAFETY: filter chains are linked single-threaded during configuration, like every
    // nginx filter module does in its postconfiguration.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
    }
    Ok(())
}

fn next(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: install() saved the next filter; nginx's chain always ends in a real filter.
    unsafe { NEXT_HEADER_FILTER.map_or(NGX_ERROR as ngx_int_t, |f| f(r)) }
}

extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request.
    let log = unsafe { (*(*r).connection).log };
    crate::glue::util::guard(log, "header filter", NGX_ERROR as ngx_int_t, || {
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
        next(r)
    })
}

fn is_tls(r: &ngx_http_request_t) -> bool {
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

fn apply_cors(r: &mut ngx_http_request_t, policy: &crate::headers::cors::CorsPolicy) -> Option<()> {
    let vary_has_origin = headers(&r.headers_out.headers).filter(|&h| is_header(h, b"vary")).any(|h| {
        // SAFETY: h is a live header element.
        let v = unsafe { (*h).value };
        v.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"origin"))
    });
    if !vary_has_origin {
        push_header(&mut r.headers_out.headers, static_str("Vary"), static_str("Origin"))?;
    }
    let rp: *mut ngx_http_request_t = r;
    if RequestCtx::peek(rp).is_some_and(|ctx| ctx.preflight) {
        // The preflight handler already answered, with or (when refused) without CORS headers.
        return Some(());
    }
    // The module owns CORS here: an upstream's own Allow-* headers could reflect any origin.
    for name in ["Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"] {
        remove_headers(&r.headers_out.headers, name.as_bytes());
    }
    let Some(origin) = find_header(&r.headers_in.headers, b"origin") else {
        return Some(());
    };
    // SAFETY: origin is a live request header element.
    let Ok(origin) = (unsafe { &(*origin).value }).to_str() else {
        return Some(());
    };
    for (name, value) in policy.response_headers(origin) {
        let value = pool_str(r.pool, value.as_bytes())?;
        push_header(&mut r.headers_out.headers, static_str(name), value)?;
    }
    Some(())
}

fn apply_cache(r: &mut ngx_http_request_t, policy: &cache::CachePolicy, mcf: Option<&MainConf>) -> Option<()> {
    let path = r.uri.to_str().unwrap_or("");
    let content_type = r.headers_out.content_type.to_str().ok().filter(|s| !s.is_empty());
    let resp = cache::Response {
        path,
        content_type,
        request_has_authorization: !r.headers_in.authorization.is_null(),
        sets_cookie: find_header(&r.headers_out.headers, b"set-cookie").is_some(),
        has_cache_control: find_header(&r.headers_out.headers, b"cache-control").is_some(),
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
    remove_headers(&r.headers_out.headers, b"cache-control");
    let value = pool_str(r.pool, decision.cache_control.as_bytes())?;
    push_header(&mut r.headers_out.headers, static_str("Cache-Control"), value)?;
    if let Some(secs) = decision.expires_in {
        remove_headers(&r.headers_out.headers, b"expires");
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
