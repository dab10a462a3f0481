//! Cache tags on nginx's side: `shield_cache_tags_header` names the response header listing
//! an entry's tags; storing records the entry in each tag's index, purging by tag drops (or
//! marks stale) every entry the tags' indexes name. No SCAN, no KEYS.
//!
//! - **Redis**: per tag a sorted set `shield:cache:<zone>:tag:<tag>` of entry names (the
//!   SHA-1 of the key), scored by the entry's expiry in Redis's clock. Adding (a script on the
//!   one key) drops the members already expired, refuses a new member past
//!   `max_tag_entries` (the entry is then not stored), and extends the set's own expiry to
//!   its longest-lived member: it can neither leak nor grow without bound. The entry is
//!   stored only once every tag recorded it. Every command names one key, so nothing spans
//!   Redis Cluster slots; a purge asks each tag's set for its live members, then drops each
//!   entry where it lives.
//! - **The zone**: a node per tag listing its entries' keys and expiries (`shm::put_tagged`).
//!
//! Work that follows a Redis reply (the store after the tags, the drops after the sets
//! answered) is queued with `glue::util::later` and runs from a posted event: a reply's callback runs
//! inside the client, which must not be re-entered.

use core::ffi::{c_char, c_void};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ngx::ffi::{ngx_command_t, ngx_conf_t};

use super::coalesce::{Leadership, Outcome};
use super::directives::{Backend, CacheZone, TagsHeader};
use super::store::{self, Waiter};
use super::{shm, Plan};
use crate::cache::keys;
use crate::cache::tags::{self, Limits};
use crate::glue::redis::{self, RedisError};
use crate::glue::util::{directive, later, set_once};
use crate::glue::{LocConf, MainConf};
use crate::limit::script::Script;
use crate::parse::{self, ConfError};
use crate::redis::resp::{Bound, Reply};

/// KEYS: the tag's set. ARGV: member, its entry's lifetime in ms, the cap. 1 when recorded,
/// 0 when the set is full.
const ADD_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not old and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
if not old or tonumber(old) < now + ttl then redis.call('ZADD', KEYS[1], now + ttl, ARGV[1]) end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

/// KEYS: the tag's set. ARGV: 1 to drop the set (a hard purge). Its live members.
const MEMBERS_SCRIPT: &str = r#"
local t = redis.call('TIME')
local m = redis.call('ZRANGEBYSCORE', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), '+inf')
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
return m
"#;

/// KEYS: an entry; ARGV[1]: a new store stamp (`store.rs`). Soft purge (`entry::mark_stale`): a
/// response entry's lifetime set to 0 in place (its TTL kept) and its stamp replaced, so no
/// node's local copy passes for current; anything else dropped. 1 when there was an entry.
pub const SOFT_PURGE_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if #v >= 7 and string.sub(v, 1, 4) == 'SHC\1' and string.byte(v, 5) == 1 then
  local at = 17 + string.byte(v, 6) + 256 * string.byte(v, 7)
  if #v >= at + 4 then
    redis.call('SETRANGE', KEYS[1], at, '\0\0\0\0')
    -- A new store stamp (store.rs): other nodes' local copies of the entry are not current.
    if #v >= at + 4 + 16 and string.find(string.sub(v, -16), '^%x+$') then
      redis.call('SETRANGE', KEYS[1], #v - 16, ARGV[1])
    end
    return 1
  end
end
redis.call('DEL', KEYS[1])
return 1
"#;

struct Scripts {
    add: Script,
    members: Script,
    soft: Script,
}

/// Made on first use, as `store.rs`'s check script is.
fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        add: Script::new(ADD_SCRIPT),
        members: Script::new(MEMBERS_SCRIPT),
        soft: Script::new(SOFT_PURGE_SCRIPT),
    })
}

pub fn soft_script() -> &'static Script {
    &scripts().soft
}

/// `shield_cache_tags_header name [max_tags=32] [max_length=128] | off;`
pub extern "C" fn set_tags_header(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        if args[0] == "off" {
            if let Some(a) = args.get(1) {
                return Err(ConfError::InvalidParameter(a.to_string()));
            }
            return set_once(&mut lc.response_cache.tags, None);
        }
        let name = parse::header_name(args[0])?.to_ascii_lowercase();
        let mut limits = Limits::default();
        for arg in &args[1..] {
            match parse::param(arg) {
                Some(("max_tags", v)) => {
                    limits.max_tags = parse::bounded("max_tags", v, 1, tags::MAX_TAGS as u64)? as usize
                }
                Some(("max_length", v)) => {
                    limits.max_len = parse::bounded("max_length", v, 1, tags::MAX_TAG_LEN as u64)? as usize
                }
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        set_once(&mut lc.response_cache.tags, Some(TagsHeader { name, limits }))
    })
}

// --- storing ----------------------------------------------------------------------------------

/// Stores a planned entry (and its `Vary` marker) under `key`, recording its tags first;
/// ends the flight this request leads once the entry is on its way.
pub fn store(mcf: &'static MainConf, zone: &'static CacheZone, key: &[u8], plan: Plan, leader: Option<Leadership>) {
    let Plan { builder, variants, keep_for, tags, .. } = plan;
    let data = builder.finish();
    let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(2);
    let entry_key = match variants {
        Some((names, vkey)) => {
            let Some(marker) = crate::cache::entry::variants(key, &names) else { return };
            puts.push((key.to_vec(), marker));
            puts.push((vkey.clone(), data));
            vkey
        }
        None => {
            puts.push((key.to_vec(), data));
            key.to_vec()
        }
    };
    put_all(mcf, zone, puts, &entry_key, keep_for, tags, leader);
}

/// A revalidated entry (the origin's 304 merged into `fields`) stored again under `key`, its
/// tags (as the merged fields list them) recorded again with its new lifetime, so the index
/// never expires before the entry. Not stored when the tags break the location's bounds.
pub fn restore(
    mcf: &'static MainConf,
    zone: &'static CacheZone,
    lc: &super::CacheLoc,
    key: &[u8],
    data: &[u8],
    keep_for: u32,
    fields: &crate::cache::revalidate::Fields<'_>,
) {
    let tags = match lc.tags.as_ref().and_then(Option::as_ref) {
        Some(t) => match tags::parse(crate::cache::revalidate::values(fields, t.name.as_bytes()), t.limits) {
            Ok(list) => list.into_iter().map(<[u8]>::to_vec).collect(),
            Err(e) => return mcf.add(zone.slots.tag_rejects[e as usize], 1),
        },
        None => Vec::new(),
    };
    put_all(mcf, zone, vec![(key.to_vec(), data.to_vec())], key, keep_for, tags, None);
}

/// Stores `puts` (the last one the tagged entry, `entry_key`), recording `tags` first.
fn put_all(
    mcf: &'static MainConf,
    zone: &'static CacheZone,
    puts: Vec<(Vec<u8>, Vec<u8>)>,
    entry_key: &[u8],
    keep_for: u32,
    tags: Vec<Vec<u8>>,
    leader: Option<Leadership>,
) {
    let done = move |leader: Option<Leadership>| {
        if let Some(l) = leader {
            l.release(Outcome::Retry);
        }
    };
    if tags.is_empty() {
        for (k, d) in &puts {
            store::put(mcf, zone, k, d, keep_for);
        }
        return done(leader);
    }
    if zone.backend(mcf) == Backend::Local {
        let expires = store::now() + i64::from(keep_for);
        // The marker first: the tagged entry is the variant, which must not outlive its index.
        for (k, d) in &puts[..puts.len() - 1] {
            store::put(mcf, zone, k, d, keep_for);
        }
        let (k, d) = &puts[puts.len() - 1];
        return match shm::put_tagged(zone, k, d, expires, &tags) {
            Ok(()) => {
                mcf.add(zone.slots.stores, 1);
                mcf.add(zone.slots.stored_bytes, d.len() as u64);
                done(leader)
            }
            Err(why) => {
                if matches!(why, shm::TagFailure::Full) {
                    mcf.add(zone.slots.tag_rejects[2], 1);
                }
                mcf.add(zone.slots.store_failures, 1);
            }
        };
    }
    let Some(client) = redis::client() else { return mcf.add(zone.slots.store_failures, 1) };
    // Once every tag answered: the entry is stored if every one recorded it.
    type Puts = (Vec<(Vec<u8>, Vec<u8>)>, Option<Leadership>);
    struct Pending {
        left: Cell<usize>,
        ok: Cell<bool>,
        full: Cell<bool>,
        job: RefCell<Option<Puts>>,
    }
    let pending = Rc::new(Pending {
        left: Cell::new(tags.len()),
        ok: Cell::new(true),
        full: Cell::new(false),
        job: RefCell::new(Some((puts, leader))),
    });
    let member = keys::hash(entry_key);
    let ttl_ms = (u64::from(keep_for) * 1000).to_string();
    let cap = zone.max_tag_entries.to_string();
    for tag in &tags {
        let name = keys::redis_tag_name(&zone.name, tag);
        let cmd = scripts().add.evalsha(core::slice::from_ref(&name), &[member.clone(), ttl_ms.clone(), cap.clone()]);
        let p = pending.clone();
        let callback = Box::new(move |reply: Result<Reply, RedisError>| {
            match reply {
                Ok(Reply::Integer(1)) => {}
                Ok(Reply::Integer(0)) => {
                    p.ok.set(false);
                    p.full.set(true);
                }
                _ => p.ok.set(false),
            }
            p.left.set(p.left.get() - 1);
            if p.left.get() > 0 {
                return;
            }
            let Some((puts, leader)) = p.job.borrow_mut().take() else { return };
            let (ok, full) = (p.ok.get(), p.full.get());
            // From a posted event: storing (and a leader's lock release) sends to Redis.
            later(Box::new(move || {
                if !ok {
                    mcf.add(zone.slots.store_failures, 1);
                    if full {
                        mcf.add(zone.slots.tag_rejects[2], 1);
                    }
                    return drop(leader);
                }
                for (k, d) in &puts {
                    store::put(mcf, zone, k, d, keep_for);
                }
                done(leader)
            }));
        });
        if let Err((e, callback)) = client.send(&name, &cmd, Bound::SIMPLE, Some(&scripts().add), callback) {
            callback(Err(e));
        }
    }
}

// --- purging ----------------------------------------------------------------------------------

/// Purges the entries of `tag_list` (`soft`: marks them stale). A zone answers at once (the
/// count); with Redis the count goes to `waiter` (as decimal digits) once every entry's drop
/// is confirmed. `Err` when Redis is unavailable.
pub fn purge(
    mcf: &'static MainConf,
    zone: &'static CacheZone,
    tag_list: &[Vec<u8>],
    soft: bool,
    waiter: &Rc<Waiter>,
) -> Result<Option<u64>, ()> {
    if zone.backend(mcf) == Backend::Local {
        let n = shm::purge_tags(zone, tag_list, soft);
        mcf.add(zone.slots.tag_purged, n);
        return Ok(Some(n));
    }
    let client = redis::client().ok_or(())?;
    struct Gather {
        left: Cell<usize>,
        failed: Cell<bool>,
        members: RefCell<Vec<Vec<u8>>>,
        waiter: Rc<Waiter>,
    }
    let g = Rc::new(Gather {
        left: Cell::new(tag_list.len()),
        failed: Cell::new(false),
        members: RefCell::new(Vec::new()),
        waiter: waiter.clone(),
    });
    let bound = members_bound(zone.max_tag_entries);
    let zone_name: &'static str = &zone.name;
    let tag_purged = zone.slots.tag_purged;
    for tag in tag_list {
        let name = keys::redis_tag_name(zone_name, tag);
        let cmd = scripts().members.evalsha(core::slice::from_ref(&name), &[if soft { "0" } else { "1" }.to_string()]);
        let g2 = g.clone();
        let callback = Box::new(move |reply: Result<Reply, RedisError>| {
            match reply {
                Ok(Reply::Array(Some(items))) => {
                    let mut m = g2.members.borrow_mut();
                    for item in items {
                        match item {
                            // Only entry names (40 hex digits) are ever added.
                            Reply::Bulk(Some(b)) if b.len() == 40 && b.iter().all(u8::is_ascii_hexdigit) => {
                                if !m.contains(&b) {
                                    m.push(b);
                                }
                            }
                            _ => g2.failed.set(true),
                        }
                    }
                }
                _ => g2.failed.set(true),
            }
            g2.left.set(g2.left.get() - 1);
            if g2.left.get() > 0 {
                return;
            }
            if g2.failed.get() {
                return deliver(&g2.waiter, Err(RedisError::Protocol("a tag's set could not be read")));
            }
            let members = core::mem::take(&mut *g2.members.borrow_mut());
            let waiter = g2.waiter.clone();
            later(Box::new(move || drop_members(mcf, zone_name, tag_purged, members, soft, waiter)));
        });
        if let Err((e, callback)) = client.send(&name, &cmd, bound, Some(&scripts().members), callback) {
            callback(Err(e));
        }
    }
    Ok(None)
}

/// A members reply: up to `cap` 40-byte names per tag.
fn members_bound(cap: usize) -> Bound {
    Bound { bytes: Bound::ERROR_LINE + 16 + cap * (40 + 8 + 2), elements: cap }
}

/// Drops (or marks stale) each entry named, each where it lives; counts those that were there.
fn drop_members(
    mcf: &'static MainConf,
    zone: &'static str,
    counter: usize,
    members: Vec<Vec<u8>>,
    soft: bool,
    waiter: Rc<Waiter>,
) {
    if members.is_empty() {
        return deliver(&waiter, Ok(0));
    }
    let Some(client) = redis::client() else { return deliver(&waiter, Err(RedisError::Down)) };
    struct Drops {
        left: Cell<usize>,
        found: Cell<u64>,
        failed: Cell<bool>,
    }
    let d = Rc::new(Drops { left: Cell::new(members.len()), found: Cell::new(0), failed: Cell::new(false) });
    for m in members {
        let name = keys::redis_name_of(zone, &String::from_utf8_lossy(&m));
        let mut cmd = Vec::with_capacity(96);
        let script = if soft {
            cmd = soft_script().evalsha(core::slice::from_ref(&name), &[super::store::new_stamp_string()]);
            Some(soft_script())
        } else {
            crate::redis::resp::encode_command(&mut cmd, &[b"DEL", &name]);
            None
        };
        let (d2, w2) = (d.clone(), waiter.clone());
        let callback = Box::new(move |reply: Result<Reply, RedisError>| {
            match reply {
                Ok(Reply::Integer(n)) => d2.found.set(d2.found.get() + u64::from(n > 0)),
                _ => d2.failed.set(true),
            }
            d2.left.set(d2.left.get() - 1);
            if d2.left.get() == 0 {
                mcf.add(counter, d2.found.get());
                match d2.failed.get() {
                    true => deliver(&w2, Err(RedisError::Protocol("an entry could not be purged"))),
                    false => deliver(&w2, Ok(d2.found.get())),
                }
            }
        });
        if let Err((e, callback)) = client.send(&name, &cmd, Bound::SIMPLE, script, callback) {
            callback(Err(e));
        }
    }
}

fn deliver(waiter: &Rc<Waiter>, result: Result<u64, RedisError>) {
    *waiter.reply.borrow_mut() = Some(result.map(|n| Some(n.to_string().into_bytes())));
    store::wake(waiter.request.get());
}
