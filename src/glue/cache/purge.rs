//! `shield_cache_purge`: drops an entry on every node sharing the backend.
//!
//! - `shield_cache_purge on;` in a cached location: a `PURGE` request drops the entry of its
//!   own URL (its `shield_cache_key`, evaluated as for a GET);
//! - `shield_cache_purge zone=name;` makes a location a purge endpoint: `PURGE`, `DELETE` or
//!   `POST` with `?key=<the exact key, URL-encoded>` (what `$shield_cache_key` showed).
//!
//! Dropping the primary key also drops every `Vary` variant (they are only reachable through
//! it). The answer waits for the backend, so once a client has it, no node serves the entry:
//! 200 `{"purged":true}`, 404 `{"purged":false}` when there was none, 502 when Redis failed.
//! Access to purging is the operator's to restrict (`allow`/`deny`, `auth_*`): the access
//! phase runs before.

use ngx::ffi::{
    ngx_http_arg, ngx_http_request_t, ngx_int_t, ngx_str_t, ngx_unescape_uri, NGX_DECLINED, NGX_HTTP_BAD_GATEWAY,
    NGX_HTTP_BAD_REQUEST, NGX_HTTP_DELETE, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_POST, NGX_OK,
};

use super::directives::{Backend, CacheZone, Purge};
use super::store::{self, Waiter};
use super::{CacheCtx, Phase};
use crate::cache::keys;
use crate::glue::redis::{self, RedisError};
use crate::glue::util::{guard, send_body};
use crate::glue::{MainConf, RequestCtx};
use crate::redis::resp::{encode_command, Bound, Reply};

/// What this request purges, if it is a purge: the endpoint's `?key=`, or `location_key` for
/// `PURGE` in a cached location. `Err` is the status to answer a malformed purge with.
pub fn key(
    r: &mut ngx_http_request_t,
    purge: Option<Purge>,
    location_key: &[u8],
) -> Option<Result<Vec<u8>, ngx_int_t>> {
    let method = r.method as u32;
    let is_purge_method = r.method_name.as_bytes() == b"PURGE";
    match purge? {
        Purge::Endpoint(_) if !(is_purge_method || method == NGX_HTTP_DELETE || method == NGX_HTTP_POST) => {
            Some(Err(NGX_HTTP_NOT_ALLOWED as ngx_int_t))
        }
        Purge::Endpoint(_) => Some(arg_key(r).ok_or(NGX_HTTP_BAD_REQUEST as ngx_int_t)),
        Purge::ByUrl if is_purge_method && !location_key.is_empty() => Some(Ok(location_key.to_vec())),
        Purge::ByUrl | Purge::Off => None,
    }
}

/// `?key=`, URL-decoded.
fn arg_key(r: &mut ngx_http_request_t) -> Option<Vec<u8>> {
    let mut value = ngx_str_t::default();
    let name = b"key";
    // SAFETY: r is live; ngx_http_arg points `value` into the request's args.
    let rc = unsafe { ngx_http_arg(r, name.as_ptr().cast_mut(), name.len(), &mut value) };
    if rc != NGX_OK as ngx_int_t || value.len == 0 {
        return None;
    }
    let mut out = vec![0u8; value.len];
    let (mut dst, mut src) = (out.as_mut_ptr(), value.data);
    // SAFETY: unescaping never grows the string: `out` has room for all of it.
    unsafe { ngx_unescape_uri(&mut dst, &mut src, value.len, 0) };
    // SAFETY: dst moved forward within `out`.
    let len = unsafe { dst.offset_from(out.as_ptr()) } as usize;
    out.truncate(len);
    Some(out)
}

/// Drops the entry; the request then waits for Redis (`Phase::Purging`) or is answered.
pub fn begin(r: &mut ngx_http_request_t, c: &mut CacheCtx, mcf: &MainConf, zone: &CacheZone, key: &[u8]) -> ngx_int_t {
    mcf.add(zone.slots.purges, 1);
    if zone.backend(mcf) == Backend::Local {
        return respond(r, c, Some(super::shm::delete(zone, key)));
    }
    let Some(client) = redis::client() else { return respond(r, c, None) };
    let mut cmd = Vec::with_capacity(96);
    let name = keys::redis_name(&zone.name, key);
    encode_command(&mut cmd, &[b"DEL", &name]);
    let rp: *mut ngx_http_request_t = r;
    let waiter = Waiter::new(rp);
    let callback = store::deliver_to(&waiter, |reply| match reply {
        Reply::Integer(n) => Ok((n > 0).then(Vec::new)),
        _ => Err(RedisError::Protocol("DEL answered with no integer")),
    });
    if client.send(&name, &cmd, Bound::SIMPLE, None, callback).is_err() {
        return respond(r, c, None);
    }
    c.phase = Phase::Purging { waiter };
    let ms = mcf.redis.timeout_ms().unwrap_or(1000) as u64 + 1000;
    store::suspend(r, ms as ngx::ffi::ngx_msec_t);
    ngx::ffi::NGX_AGAIN as ngx_int_t
}

/// The Redis reply came (or did not): answer.
pub fn replied(r: &mut ngx_http_request_t, c: &mut CacheCtx, waiter: &Waiter) -> ngx_int_t {
    waiter.request.set(core::ptr::null_mut());
    let reply = waiter.reply.borrow_mut().take();
    let purged = match reply {
        Some(Ok(found)) => Some(found.is_some()),
        Some(Err(_)) | None => None,
    };
    respond(r, c, purged)
}

/// `purged`: whether there was an entry; `None` when the backend failed.
fn respond(r: &mut ngx_http_request_t, c: &mut CacheCtx, purged: Option<bool>) -> ngx_int_t {
    c.phase = Phase::Done;
    let Some(purged) = purged else { return NGX_HTTP_BAD_GATEWAY as ngx_int_t };
    c.purged = Some(purged);
    r.content_handler = Some(answer);
    NGX_DECLINED as ngx_int_t
}

unsafe extern "C" fn answer(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "cache purge", NGX_HTTP_BAD_GATEWAY as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        // SAFETY: as above.
        let rc = unsafe { ngx::ffi::ngx_http_discard_request_body(r) };
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        match RequestCtx::peek(r).and_then(|c| c.cache.purged) {
            Some(true) => send_body(req, 200, "application/json", b"{\"purged\":true}\n"),
            _ => send_body(req, 404, "application/json", b"{\"purged\":false}\n"),
        }
    })
}
