//! Serving a stale entry when the origin fails (RFC 5861 `stale-if-error`, and
//! `shield_cache_use_stale` for the statuses the operator names).
//!
//! A request forwarded because its entry was stale keeps the entry. When the origin's answer
//! (or nginx's own 502/504 when the origin cannot be reached) is an error the entry may stand
//! in for, the header filter replaces the response's status and headers with the entry's,
//! and the body filter discards the error's body (marking its buffers consumed, so the origin
//! side frees them as usual) and sends the entry's body instead.

use core::ptr;

use ngx::ffi::{ngx_chain_t, ngx_http_request_t};

use super::lookup::{body_chain, set_headers};
use super::CacheCtx;
use crate::cache::entry::{self, Entry};
use crate::cache::policy::Reuse;
use crate::cache::status::{CacheStatus, Forward};
use crate::glue::util::headers;

/// Whether `r`'s error response is to be replaced by the kept stale entry; if so, replaces
/// its status and headers. `None` only on allocation failure.
pub fn substitute(r: &mut ngx_http_request_t, c: &mut CacheCtx, use_stale: &[u16], max_entry: usize) -> Option<bool> {
    if c.status != Some(CacheStatus::Forwarded(Forward::Stale)) || c.entry.is_empty() {
        return Some(false);
    }
    let status = if r.err_status != 0 { r.err_status } else { r.headers_out.status } as u16;
    let Some(Entry::Response(e)) = entry::decode(&c.entry, max_entry) else { return Some(false) };
    let now = super::store::now();
    if !e.stored.serve_on_error(now, status, use_stale) {
        return Some(false);
    }
    let expired_for = match e.stored.reuse(now, &Default::default()) {
        Reuse::Stale { expired_for, .. } => expired_for,
        Reuse::Fresh { .. } => 0,
    };
    clear(r);
    let cache_status = CacheStatus::Stale { expired_for };
    set_headers(r, &e, &cache_status.header(Some(status), false))?;
    c.status = Some(cache_status);
    c.substituted = true;
    c.plan = None;
    c.leader = None;
    Some(true)
}

/// Drops the error's status line and headers.
pub(super) fn clear(r: &mut ngx_http_request_t) {
    r.err_status = 0;
    let out = &mut r.headers_out;
    for h in headers(&out.headers) {
        // SAFETY: live elements of the response header list; hash 0 removes one.
        unsafe { (*h).hash = 0 };
    }
    out.status_line.len = 0;
    for p in [
        &mut out.content_length,
        &mut out.content_encoding,
        &mut out.location,
        &mut out.refresh,
        &mut out.last_modified,
        &mut out.content_range,
        &mut out.accept_ranges,
        &mut out.www_authenticate,
        &mut out.expires,
        &mut out.etag,
    ] {
        *p = ptr::null_mut();
    }
    out.last_modified_time = -1;
    out.charset.len = 0;
    out.content_type.len = 0;
    out.content_type_len = 0;
}

/// The body filter's part: consumes the error's buffers; the first call sends the entry's
/// body in their place. Returns the chain to pass on.
pub fn replace_body(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    chain: *mut ngx_chain_t,
    max_entry: usize,
) -> *mut ngx_chain_t {
    let mut cl = chain;
    // SAFETY: a body filter's chain is a valid NULL-terminated list of buffers.
    unsafe {
        while !cl.is_null() {
            let b = (*cl).buf;
            (*b).pos = (*b).last;
            (*b).file_pos = (*b).file_last;
            cl = (*cl).next;
        }
    }
    if c.body_sent {
        return ptr::null_mut();
    }
    c.body_sent = true;
    let Some(Entry::Response(e)) = entry::decode(&c.entry, max_entry) else { return ptr::null_mut() };
    // The body points into c.entry, which lives until the request is freed.
    let body: &'static [u8] = unsafe { core::slice::from_raw_parts(e.body.as_ptr(), e.body.len()) };
    body_chain(r, body)
}
