//! Revalidating a stale entry with the origin (RFC 9111 §4.3): the forwarded request carries
//! the entry's validators; a 304 is merged into the entry, which is stored again and answers
//! the client (REVALIDATED) in place of the 304, through the same substitution as `stale`.
//! A client's own conditional request is forwarded as it is (its 304 is the client's).

use ngx::ffi::ngx_http_request_t;

use super::capture::{exchange, grace, http_time, stored_fields};
use super::directives::CacheZone;
use super::lookup::{request_values, set_headers};
use super::{coalesce, store, CacheCtx, CacheLoc};
use crate::cache::entry::{self, Builder, Entry};
use crate::cache::policy::{self, Stored};
use crate::cache::revalidate;
use crate::cache::status::CacheStatus;
use crate::glue::util::{pool_str, push_header, static_str};
use crate::glue::MainConf;

/// Adds the stale entry's validators to the request (which goes to the origin); whether it
/// did. `added`: an earlier lookup of this request did (it waited in a flight and looked up
/// again): they are not added twice, nor mistaken for the client's own. `None` only on
/// allocation failure.
pub fn add_validators(r: &mut ngx_http_request_t, stale: &[u8], max_entry: usize, added: bool) -> Option<bool> {
    if added {
        return Some(true);
    }
    let conditional =
        !request_values(r, b"if-none-match").is_empty() || !request_values(r, b"if-modified-since").is_empty();
    let Some(Entry::Response(e)) = entry::decode(stale, max_entry) else { return Some(false) };
    let (etag, last_modified) = revalidate::validators(&e.headers);
    if conditional || (etag.is_none() && last_modified.is_none()) {
        return Some(false);
    }
    for (name, value) in [("If-None-Match", etag), ("If-Modified-Since", last_modified)] {
        if let Some(v) = value {
            let v = pool_str(r.pool, v)?;
            push_header(&mut r.headers_in.headers, static_str(name), v)?;
        }
    }
    Some(true)
}

/// The origin answered the revalidation: on a 304, the merged entry replaces the response
/// (and is stored when it may be). Whether it did; `None` only on allocation failure.
pub fn on_304(
    r: &mut ngx_http_request_t,
    c: &mut CacheCtx,
    lc: &CacheLoc,
    mcf: &'static MainConf,
    zone: &'static CacheZone,
) -> Option<bool> {
    if !c.revalidating || r.headers_out.status != 304 {
        return Some(false);
    }
    let Some(Entry::Response(old)) = entry::decode(&c.entry, zone.max_entry) else { return Some(false) };
    let fresh = stored_fields(r);
    let merged = revalidate::merge(&old.headers, &fresh);
    let last_modified = revalidate::values(&merged, b"last-modified").first().and_then(|v| http_time(v));
    let (x, _) = exchange(r, old.status, |n| revalidate::values(&merged, n), last_modified);
    let now = store::now();
    let assessed = policy::assess(&x, &lc.rules, now);
    // The 304 validated the body whatever its new freshness: it answers this client anyway.
    let freshness = assessed.unwrap_or(old.stored.freshness);
    let stored = Stored { stored_at: now, freshness };
    let rebuilt = Builder::new(old.key, old.status, &stored, merged.iter().copied(), zone.max_entry)
        .and_then(|mut b| b.push(old.body).then_some(b));
    let (bytes, storable) = match rebuilt {
        Some(b) => (b.finish(), assessed.is_ok() && c.store),
        None => (c.entry.clone(), false),
    };
    if storable {
        super::tags::restore(mcf, zone, lc, old.key, &bytes, freshness.keep_for(grace(lc), x.validator), &merged);
    }
    c.entry = bytes;
    let Some(Entry::Response(e)) = entry::decode(&c.entry, zone.max_entry) else { return Some(false) };
    super::stale::clear(r);
    set_headers(r, &e, &CacheStatus::Revalidated.header(None, storable))?;
    c.status = Some(CacheStatus::Revalidated);
    c.substituted = true;
    c.plan = None;
    if let Some(leader) = c.leader.take() {
        leader.release(if storable { coalesce::Outcome::Retry } else { coalesce::Outcome::Go });
    }
    Some(true)
}
