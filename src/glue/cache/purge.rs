//! `shield_cache_purge`: drops entries on every node sharing the backend, or (`soft`) marks
//! them stale, so the next request revalidates them (or may be served them stale should the
//! origin fail) and none is served as fresh.
//!
//! - `shield_cache_purge on [soft];` in a cached location: a `PURGE` request purges the entry
//!   of its own URL (its `shield_cache_key`, evaluated as for a GET);
//! - `shield_cache_purge zone=name [soft];` makes a location a purge endpoint: `PURGE`,
//!   `DELETE` or `POST` with `?key=<the exact key, URL-encoded>` (what `$shield_cache_key`
//!   showed), or `?tag=<tags>` (comma- or space-separated, URL-encoded): every entry stored
//!   with one of them (see `tags`).
//!
//! Dropping the primary key also drops every `Vary` variant (they are only reachable through
//! it); a soft purge of it drops it too (a `Vary` marker has no freshness to take away). A
//! tag names the very entries (variants) that carried it. The answer waits for the backend,
//! so once a client has it, no node serves the entries as fresh: 200 `{"purged":true}`, 404
//! `{"purged":false}` when there was none (by tag: `{"purged":true,"entries":N}`), 502 when
//! Redis failed. Access to purging is the operator's to restrict (`allow`/`deny`, `auth_*`):
//! the access phase runs before.

use ngx::ffi::{
    ngx_http_arg, ngx_http_request_t, ngx_int_t, ngx_str_t, ngx_unescape_uri, NGX_DECLINED, NGX_HTTP_BAD_GATEWAY,
    NGX_HTTP_BAD_REQUEST, NGX_HTTP_DELETE, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_POST, NGX_OK,
};

use super::directives::{Backend, CacheZone, Purge};
use super::store::{self, Waiter};
use super::{CacheCtx, Phase};
use crate::cache::keys;
use crate::cache::tags::{self, Limits};
use crate::glue::redis::{self, RedisError};
use crate::glue::util::{guard, send_body};
use crate::glue::{MainConf, RequestCtx};
use crate::redis::resp::{encode_command, Bound, Reply};

/// What a purge names.
pub enum Target {
    /// `PURGE` of a cached location's URL.
    Url(Vec<u8>),
    /// `?key=` at an endpoint.
    Key(Vec<u8>),
    /// `?tag=` at an endpoint.
    Tags(Vec<Vec<u8>>),
}

pub struct PurgeRequest {
    target: Target,
    soft: bool,
}

/// A purge's tags: up to the largest `max_tags` a header may carry, of any allowed length.
const PURGE_LIMITS: Limits = Limits { max_tags: tags::MAX_TAGS, max_len: tags::MAX_TAG_LEN };

/// What this request purges, if it is a purge: the endpoint's `?key=` or `?tag=`, or
/// `location_key` for `PURGE` in a cached location. `Err` is the status to answer a malformed
/// purge with.
pub fn key(
    r: &mut ngx_http_request_t,
    purge: Option<Purge>,
    location_key: &[u8],
) -> Option<Result<PurgeRequest, ngx_int_t>> {
    let method = r.method as u32;
    let is_purge_method = r.method_name.as_bytes() == b"PURGE";
    match purge? {
        Purge::Endpoint { .. } if !(is_purge_method || method == NGX_HTTP_DELETE || method == NGX_HTTP_POST) => {
            Some(Err(NGX_HTTP_NOT_ALLOWED as ngx_int_t))
        }
        Purge::Endpoint { soft, .. } => {
            let bad = NGX_HTTP_BAD_REQUEST as ngx_int_t;
            let target = match (arg(r, b"key"), arg(r, b"tag")) {
                (Some(k), None) => Ok(Target::Key(k)),
                (None, Some(t)) => match tags::parse([t.as_slice()], PURGE_LIMITS) {
                    Ok(list) if !list.is_empty() => Ok(Target::Tags(list.into_iter().map(<[u8]>::to_vec).collect())),
                    _ => Err(bad),
                },
                _ => Err(bad),
            };
            Some(target.map(|target| PurgeRequest { target, soft }))
        }
        Purge::ByUrl { soft } if is_purge_method && !location_key.is_empty() => {
            Some(Ok(PurgeRequest { target: Target::Url(location_key.to_vec()), soft }))
        }
        Purge::ByUrl { .. } | Purge::Off => None,
    }
}

/// An argument, URL-decoded; `None` when absent or empty.
fn arg(r: &mut ngx_http_request_t, name: &[u8]) -> Option<Vec<u8>> {
    let mut value = ngx_str_t::default();
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

/// Purges; the request then waits for Redis (`Phase::Purging`) or is answered.
pub fn begin(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    mcf: &'static MainConf,
    zone: &'static CacheZone,
    p: &PurgeRequest,
) -> ngx_int_t {
    let kind = match p.target {
        Target::Url(_) => 0,
        Target::Key(_) => 1,
        Target::Tags(_) => 2,
    };
    mcf.add(zone.slots.purges[kind][usize::from(p.soft)], 1);
    let rp: *mut ngx_http_request_t = r;
    let key = match &p.target {
        Target::Url(k) | Target::Key(k) => k,
        Target::Tags(list) => {
            let waiter = Waiter::new(rp);
            c.tag_purge = true;
            return match super::tags::purge(mcf, zone, list, p.soft, &waiter) {
                Ok(Some(n)) => respond(r, c, Some(n)),
                Ok(None) => park(r, c, mcf, waiter, 2),
                Err(()) => respond(r, c, None),
            };
        }
    };
    if zone.backend(mcf) == Backend::Local {
        let found = if p.soft { super::shm::mark_stale(zone, key) } else { super::shm::delete(zone, key) };
        return respond(r, c, Some(u64::from(found)));
    }
    let Some(client) = redis::client() else { return respond(r, c, None) };
    let name = keys::redis_name(&zone.name, key);
    let (cmd, script) = if p.soft {
        let script = super::tags::soft_script();
        (script.evalsha(core::slice::from_ref(&name), &[store::new_stamp_string()]), Some(script))
    } else {
        let mut cmd = Vec::with_capacity(96);
        encode_command(&mut cmd, &[b"DEL", &name]);
        (cmd, None)
    };
    let waiter = Waiter::new(rp);
    let callback = store::deliver_to(&waiter, |reply| match reply {
        Reply::Integer(n) => Ok(Some(u64::from(n > 0).to_string().into_bytes())),
        _ => Err(RedisError::Protocol("a purge answered with no integer")),
    });
    if client.send(&name, &cmd, Bound::SIMPLE, script, callback).is_err() {
        return respond(r, c, None);
    }
    park(r, c, mcf, waiter, 1)
}

/// Waits for the purge's `steps` Redis round trips.
fn park(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    mcf: &MainConf,
    waiter: std::rc::Rc<Waiter>,
    steps: u64,
) -> ngx_int_t {
    c.phase = Phase::Purging { waiter };
    let ms = steps * mcf.redis.timeout_ms().unwrap_or(1000) as u64 + 1000;
    store::suspend(r, ms as ngx::ffi::ngx_msec_t);
    ngx::ffi::NGX_AGAIN as ngx_int_t
}

/// The Redis reply came (or did not): answer.
pub fn replied(r: &mut ngx_http_request_t, c: &mut CacheCtx, waiter: &Waiter) -> ngx_int_t {
    waiter.request.set(core::ptr::null_mut());
    let reply = waiter.reply.borrow_mut().take();
    let purged = match reply {
        Some(Ok(n)) => n.and_then(|d| core::str::from_utf8(&d).ok()?.parse().ok()),
        Some(Err(_)) | None => None,
    };
    respond(r, c, purged)
}

/// `purged`: how many entries there were; `None` when the backend failed.
fn respond(r: &mut ngx_http_request_t, c: &mut CacheCtx, purged: Option<u64>) -> ngx_int_t {
    c.phase = Phase::Done;
    let Some(n) = purged else { return NGX_HTTP_BAD_GATEWAY as ngx_int_t };
    c.purged = Some(n > 0);
    c.purged_entries = Some(n);
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
        let Some(c) = RequestCtx::peek(r).map(|c| &c.cache) else { return NGX_HTTP_BAD_GATEWAY as ngx_int_t };
        let n = c.purged_entries.unwrap_or(0);
        let status = if n > 0 { 200 } else { 404 };
        let body = match c.tag_purge {
            true => format!("{{\"purged\":{},\"entries\":{n}}}\n", n > 0),
            false => format!("{{\"purged\":{}}}\n", n > 0),
        };
        send_body(req, status, "application/json", body.as_bytes())
    })
}
