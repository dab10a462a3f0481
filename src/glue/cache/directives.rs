//! The cache's directives and the configuration they build: zones (http level) and, per
//! location, which zone, the key, the validity rules and the bypass/no-store predicates,
//! merged the nginx way (unset → parent's → default; lists inherited whole).

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_shared_memory_add};
use ngx::http::HttpModuleMainConf;

use super::shm::{zone_init, ShmCache};
use crate::cache::policy::{Rules, Valid, MAX_LIFETIME};
use crate::cache::tags::{self, Limits};
use crate::glue::util::{directive, pool_str, set_once, ComplexValue};
use crate::glue::{LocConf, MainConf, Shield};
use crate::parse::{self, ConfError};
use crate::status::metrics::Registry;

/// Zone sizes: room for a few entries at least; at most what `shield_limit_zone` allows.
pub const MIN_ZONE_SIZE: usize = 256 * 1024;
pub const MAX_ZONE_SIZE: usize = 16 << 30;
/// `max_entry`: a whole stored response (head and body), 1 KB to 64 MB and at most a quarter
/// of the zone; by default 1 MB (or a quarter of a smaller zone).
pub const MIN_ENTRY: usize = 1024;
pub const MAX_ENTRY: usize = 64 << 20;
pub const DEFAULT_ENTRY: usize = 1 << 20;
pub const DEFAULT_KEY: &str = "$scheme$host$request_uri";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Redis,
    Local,
}

pub struct ZoneSlots {
    pub hits: usize,
    pub misses: usize,
    pub expired: usize,
    pub bypassed: usize,
    pub stores: usize,
    pub store_failures: usize,
    pub stored_bytes: usize,
    pub invalidations: usize,
    pub stale: usize,
    /// `shield_cache_purges_total` by kind (url, key, tag) and mode (hard, soft).
    pub purges: [[usize; 2]; 3],
    pub tag_purged: usize,
    /// `shield_cache_tag_rejects_total` by reason (too_many, too_long, full).
    pub tag_rejects: [usize; 3],
    pub backend_errors: usize,
    pub collapsed: usize,
    pub updating: usize,
    pub background_updates: usize,
    /// `shield_cache_redis_latency_seconds`: from a lookup's command to its reply (ms).
    pub redis_latency: crate::status::metrics::Histogram,
}

pub struct CacheZone {
    pub name: String,
    /// Entries larger than this (head and body) are not stored.
    pub max_entry: usize,
    /// Entries one tag indexes (`max_tag_entries=`).
    pub max_tag_entries: usize,
    /// Explicit `backend=`; otherwise Redis when `shield_redis` is set.
    pub backend: Option<Backend>,
    /// Set by zone_init.
    pub shm: *mut ShmCache,
    pub pool: Option<ngx::core::SlabPool>,
    pub slots: ZoneSlots,
}

impl CacheZone {
    pub fn backend(&self, mcf: &MainConf) -> Backend {
        match (self.backend, mcf.redis.target.is_some()) {
            (Some(b), _) => b,
            (None, true) => Backend::Redis,
            (None, false) => Backend::Local,
        }
    }
}

#[derive(Default)]
pub struct CacheMain {
    // Boxed: the shared-memory zone keeps each zone's address until its init runs.
    #[allow(clippy::vec_box)]
    pub zones: Vec<Box<CacheZone>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Purge {
    Off,
    /// `PURGE` requests of this cached location drop their own entry (`soft`: mark it stale).
    ByUrl {
        soft: bool,
    },
    /// This location is a purge endpoint for the zone: `?key=` names the entry, `?tag=` the
    /// tags whose entries go.
    Endpoint {
        zone: usize,
        soft: bool,
    },
}

/// `shield_cache_tags_header`: the response header listing an entry's tags, and its bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagsHeader {
    pub name: String,
    pub limits: Limits,
}

#[derive(Default)]
pub struct CacheLoc {
    /// `Some(None)` is `shield_cache off`.
    pub zone: Option<Option<usize>>,
    pub key: Option<ComplexValue>,
    pub valid: Option<Vec<Valid>>,
    pub bypass: Option<Vec<ComplexValue>>,
    pub no_store: Option<Vec<ComplexValue>>,
    pub strip_set_cookie: Option<bool>,
    /// `shield_cache_use_stale`: the origin statuses a stale entry answers instead.
    pub use_stale: Option<Vec<u16>>,
    /// `shield_cache_use_stale updating`: a stale entry answers while it is being refreshed
    /// (set with `use_stale`, inherited with it).
    pub use_stale_updating: bool,
    /// `shield_cache_background_update on | off`.
    pub background_update: Option<bool>,
    /// `shield_cache_purge`: `on` (PURGE by URL here), `zone=` (a purge endpoint by key), `off`.
    pub purge: Option<Purge>,
    /// `shield_cache_lock`: the lock's timeout in ms, `Some(None)` for `off`.
    pub lock: Option<Option<u64>>,
    /// `shield_cache_tags_header`; `Some(None)` is `off`.
    pub tags: Option<Option<TagsHeader>>,
    /// Resolved at merge.
    pub rules: Rules,
}

impl CacheLoc {
    pub fn merge(&mut self, cf: &mut ngx_conf_t, prev: &CacheLoc) -> Result<(), String> {
        if self.zone.is_none() {
            self.zone = prev.zone;
        }
        if self.key.is_none() {
            self.key = match prev.key {
                Some(k) => Some(k),
                None if self.zone.flatten().is_some() => Some(ComplexValue::compile(cf, DEFAULT_KEY)?),
                None => None,
            };
        }
        if self.valid.is_none() {
            self.valid.clone_from(&prev.valid);
        }
        if self.bypass.is_none() {
            self.bypass.clone_from(&prev.bypass);
        }
        if self.no_store.is_none() {
            self.no_store.clone_from(&prev.no_store);
        }
        self.strip_set_cookie = self.strip_set_cookie.or(prev.strip_set_cookie);
        self.lock = self.lock.or(prev.lock);
        self.purge = self.purge.or(prev.purge);
        if self.tags.is_none() {
            self.tags.clone_from(&prev.tags);
        }
        if self.use_stale.is_none() {
            self.use_stale.clone_from(&prev.use_stale);
            self.use_stale_updating = prev.use_stale_updating;
        }
        self.background_update = self.background_update.or(prev.background_update);
        self.rules = Rules {
            valid: self.valid.clone().unwrap_or_default(),
            strip_set_cookie: self.strip_set_cookie.unwrap_or(false),
        };
        Ok(())
    }

    /// `shield_cache_lock`'s timeout, when on.
    pub fn lock_ms(&self) -> Option<u64> {
        self.lock.flatten()
    }

    pub fn background_update(&self) -> bool {
        self.background_update.unwrap_or(false)
    }

    /// The zone this location caches in, or purges (a purge endpoint).
    pub fn zone(&self) -> Option<usize> {
        match self.purge {
            Some(Purge::Endpoint { zone, .. }) => Some(zone),
            _ => self.zone.flatten(),
        }
    }
}

fn main_conf(cf: &mut ngx_conf_t) -> Result<&'static mut MainConf, ConfError> {
    Shield::main_conf_mut(cf).ok_or_else(|| "no main configuration".into())
}

fn zone_slots(reg: &mut Registry, zone: &str) -> ZoneSlots {
    const LOOKUPS: &str = "shield_cache_requests_total";
    const LOOKUPS_HELP: &str = "Requests a shield_cache zone handled, by cache status.";
    let mut status = |s| reg.counter(LOOKUPS, LOOKUPS_HELP, &[("zone", zone), ("status", s)]);
    let (hits, misses, expired, bypassed) = (status("hit"), status("miss"), status("expired"), status("bypass"));
    let updating = status("updating");
    let z = &[("zone", zone)];
    ZoneSlots {
        hits,
        misses,
        expired,
        bypassed,
        stores: reg.counter("shield_cache_stores_total", "Responses stored.", z),
        store_failures: reg.counter(
            "shield_cache_store_failures_total",
            "Responses that could not be stored (no room, backend error).",
            z,
        ),
        stored_bytes: reg.counter("shield_cache_stored_bytes_total", "Bytes of entries stored.", z),
        invalidations: reg.counter(
            "shield_cache_invalidations_total",
            "Entries invalidated by a successful unsafe request.",
            z,
        ),
        collapsed: reg.counter(
            "shield_cache_collapsed_total",
            "Requests that waited for another request's origin fetch (shield_cache_lock).",
            z,
        ),
        stale: reg.counter(
            "shield_cache_stale_total",
            "Stale entries served because the origin failed (stale-if-error, shield_cache_use_stale).",
            z,
        ),
        purges: ["url", "key", "tag"].map(|kind| {
            ["hard", "soft"].map(|mode| {
                reg.counter(
                    "shield_cache_purges_total",
                    "Purge requests (shield_cache_purge), by what they name and whether they drop or mark stale.",
                    &[("zone", zone), ("kind", kind), ("mode", mode)],
                )
            })
        }),
        tag_purged: reg.counter(
            "shield_cache_tag_purged_entries_total",
            "Entries dropped or marked stale by purges by tag.",
            z,
        ),
        tag_rejects: ["too_many", "too_long", "full"].map(|reason| {
            reg.counter(
                "shield_cache_tag_rejects_total",
                "Responses not stored because of their tags (too many, one too long, a tag's index full).",
                &[("zone", zone), ("reason", reason)],
            )
        }),
        updating,
        background_updates: reg.counter(
            "shield_cache_background_updates_total",
            "Background refreshes of stale entries started (shield_cache_background_update).",
            z,
        ),
        redis_latency: reg.histogram(
            "shield_cache_redis_latency_seconds",
            "Redis lookup latency of the cache (GET or the local copy's check), from command to reply.",
            z,
            &[1, 2, 5, 10, 25, 50, 100, 250],
            1000,
        ),
        backend_errors: reg.counter(
            "shield_cache_backend_errors_total",
            "Lookups answered as misses because the Redis backend failed.",
            z,
        ),
    }
}

/// `shield_cache_zone zone=name:size [max_entry=1m] [max_tag_entries=10000] [backend=redis|local];`
pub extern "C" fn set_zone(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, mcf: &mut MainConf, args| {
        let (mut name, mut size, mut max_entry, mut backend) = (None, 0, None, None);
        let mut max_tag_entries = tags::DEFAULT_TAG_ENTRIES;
        for arg in args {
            match parse::param(arg) {
                Some(("zone", v)) => {
                    let (n, s) = v.split_once(':').ok_or_else(|| format!("invalid zone size \"{v}\""))?;
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                        return Err(format!("invalid zone name \"{n}\"").into());
                    }
                    size = parse::size(s).map_err(|_| format!("invalid zone size \"{v}\""))?;
                    if size > MAX_ZONE_SIZE {
                        return Err(format!("invalid zone size \"{v}\", it must be at most 16g").into());
                    }
                    name = Some(n.to_string());
                }
                Some(("max_entry", v)) => {
                    let n = parse::size(v).map_err(|_| format!("invalid max_entry \"{v}\""))?;
                    if !(MIN_ENTRY..=MAX_ENTRY).contains(&n) {
                        return Err(format!("invalid max_entry \"{v}\", it must be between 1k and 64m").into());
                    }
                    max_entry = Some(n);
                }
                Some(("max_tag_entries", v)) => {
                    max_tag_entries = parse::bounded("max_tag_entries", v, 1, tags::MAX_TAG_ENTRIES as u64)? as usize;
                }
                Some(("backend", "redis")) => backend = Some(Backend::Redis),
                Some(("backend", "local")) => backend = Some(Backend::Local),
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let name = name.ok_or(ConfError::MissingParameter("zone"))?;
        if size < MIN_ZONE_SIZE {
            return Err(format!("zone \"{name}\" is too small, it must be at least 256k").into());
        }
        // Unset: 1m, or a quarter of a smaller zone.
        let max_entry = max_entry.unwrap_or(DEFAULT_ENTRY.min(size / 4));
        if max_entry > size / 4 {
            return Err(format!("max_entry of zone \"{name}\" must be at most a quarter of its size").into());
        }
        if mcf.response_cache.zones.iter().any(|z| z.name == name) {
            return Err(format!("zone \"{name}\" is duplicate").into());
        }
        let slots = zone_slots(&mut mcf.registry, &name);
        let mut zone = Box::new(CacheZone {
            name: name.clone(),
            max_entry,
            max_tag_entries,
            backend,
            shm: ptr::null_mut(),
            pool: None,
            slots,
        });
        // nginx keeps this pointer (it does not copy the name): it must live in the cycle's pool.
        let mut shm_name = pool_str(cf.pool, format!("shield_cache_{name}").as_bytes()).ok_or("out of memory")?;
        // SAFETY: cf is live; the module address tags the zone.
        let shm = unsafe {
            ngx_shared_memory_add(
                cf,
                &mut shm_name,
                size,
                ptr::addr_of_mut!(crate::glue::ngx_http_shield_module).cast(),
            )
        };
        // SAFETY: NULL or a zone owned by the cycle.
        let shm = unsafe { shm.as_mut() }.ok_or("cannot add shared memory zone")?;
        if !shm.data.is_null() {
            return Err(format!("zone \"{name}\" is duplicate").into());
        }
        shm.init = Some(zone_init);
        shm.data = ptr::from_mut(&mut *zone).cast();
        mcf.response_cache.zones.push(zone);
        Ok(())
    })
}

/// After the whole configuration is read: `backend=redis` needs `shield_redis`.
pub fn check(mcf: &MainConf) -> Result<(), String> {
    match mcf.response_cache.zones.iter().find(|z| z.backend == Some(Backend::Redis)) {
        Some(z) if mcf.redis.target.is_none() => {
            Err(format!("shield_cache_zone \"{}\" has \"backend=redis\" but there is no \"shield_redis\"", z.name))
        }
        _ => Ok(()),
    }
}

/// `shield_cache zone=name | off;`
pub extern "C" fn set_cache(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let zone = match parse::param(args[0]) {
            None if args[0] == "off" => None,
            Some(("zone", name)) => {
                let mcf = main_conf(cf)?;
                let i =
                    mcf.response_cache.zones.iter().position(|z| z.name == name).ok_or_else(|| {
                        format!("unknown zone \"{name}\" (declare it with shield_cache_zone before use)")
                    })?;
                Some(i)
            }
            _ => return Err(ConfError::InvalidParameter(args[0].to_string())),
        };
        set_once(&mut lc.response_cache.zone, zone)
    })
}

/// `shield_cache_key string;`
pub extern "C" fn set_key(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        if args[0].is_empty() {
            return Err("empty key".into());
        }
        let key = ComplexValue::compile(cf, args[0])?;
        set_once(&mut lc.response_cache.key, key)
    })
}

/// `shield_cache_valid [code ... | any] time;`
pub extern "C" fn set_valid(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let (time, codes) = args.split_last().ok_or(ConfError::MissingParameter("time"))?;
        let secs = parse::time(time)?.as_secs();
        if !(1..=u64::from(MAX_LIFETIME)).contains(&secs) {
            return Err(format!("invalid time \"{time}\", it must be between 1s and 365d").into());
        }
        let mut valid = Valid { statuses: Vec::new(), any: false, seconds: secs as u32 };
        for code in codes {
            if *code == "any" {
                valid.any = true;
            } else {
                valid.statuses.push(parse::status(code, 200, 599)?);
            }
        }
        lc.response_cache.valid.get_or_insert_with(Vec::new).push(valid);
        Ok(())
    })
}

fn predicates(cf: &mut ngx_conf_t, args: &[&str]) -> Result<Vec<ComplexValue>, ConfError> {
    args.iter().map(|a| ComplexValue::compile(cf, a).map_err(ConfError::Other)).collect()
}

/// `shield_cache_bypass string ...;` — a non-empty value other than "0" sends the request to
/// the origin (its response may still be stored).
pub extern "C" fn set_bypass(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let p = predicates(cf, args)?;
        lc.response_cache.bypass.get_or_insert_with(Vec::new).extend(p);
        Ok(())
    })
}

/// `shield_cache_no_store string ...;` — evaluated with the response: a non-empty value other
/// than "0" keeps it out of the cache.
pub extern "C" fn set_no_store(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let p = predicates(cf, args)?;
        lc.response_cache.no_store.get_or_insert_with(Vec::new).extend(p);
        Ok(())
    })
}

/// `shield_cache_strip_set_cookie on | off;` — off (the default): a response with
/// `Set-Cookie` is not stored; on: it is stored without its `Set-Cookie` headers.
pub extern "C" fn set_strip_set_cookie(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.response_cache.strip_set_cookie, parse::flag(args[0])?)
    })
}

/// `shield_cache_lock`'s timeout: how long requests wait for another's fetch.
pub const LOCK_TIMEOUT_MS: (u64, u64) = (1, 60_000);
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 5000;

/// `shield_cache_lock on [timeout=5s] | off;`
pub extern "C" fn set_lock(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let on = parse::flag(args[0])?;
        let mut timeout = DEFAULT_LOCK_TIMEOUT_MS;
        for arg in &args[1..] {
            match parse::param(arg) {
                Some(("timeout", v)) if on => {
                    let ms = parse::time(v)?.as_millis();
                    if !(u128::from(LOCK_TIMEOUT_MS.0)..=u128::from(LOCK_TIMEOUT_MS.1)).contains(&ms) {
                        return Err(format!("invalid timeout \"{v}\", it must be between 1ms and 60s").into());
                    }
                    timeout = ms as u64;
                }
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        set_once(&mut lc.response_cache.lock, on.then_some(timeout))
    })
}

/// `shield_cache_purge on | off | zone=name [soft];`
pub extern "C" fn set_purge(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let soft = match args.get(1) {
            None => false,
            Some(&"soft") if args[0] != "off" => true,
            Some(a) => return Err(ConfError::InvalidParameter(a.to_string())),
        };
        let purge = match parse::param(args[0]) {
            None if args[0] == "on" => Purge::ByUrl { soft },
            None if args[0] == "off" => Purge::Off,
            Some(("zone", name)) => {
                let mcf = main_conf(cf)?;
                let i =
                    mcf.response_cache.zones.iter().position(|z| z.name == name).ok_or_else(|| {
                        format!("unknown zone \"{name}\" (declare it with shield_cache_zone before use)")
                    })?;
                Purge::Endpoint { zone: i, soft }
            }
            _ => return Err(ConfError::InvalidParameter(args[0].to_string())),
        };
        set_once(&mut lc.response_cache.purge, purge)
    })
}

/// `shield_cache_use_stale error | timeout | updating | http_500 | http_502 | http_503 | http_504 ... | off;`
/// — `error` is nginx's 502 when the origin cannot be reached, `timeout` its 504; `updating`
/// serves a stale entry while it is being refreshed.
pub extern "C" fn set_use_stale(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let mut statuses = Vec::new();
        for arg in args {
            let status = match *arg {
                "off" if args.len() == 1 => continue,
                "updating" => {
                    lc.response_cache.use_stale_updating = true;
                    continue;
                }
                "error" => 502,
                "timeout" => 504,
                "http_500" => 500,
                "http_502" => 502,
                "http_503" => 503,
                "http_504" => 504,
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            };
            statuses.push(status);
        }
        set_once(&mut lc.response_cache.use_stale, statuses)
    })
}

/// `shield_cache_background_update on | off;` — on: a stale entry that may be served while it
/// is refreshed (`stale-while-revalidate`, `shield_cache_use_stale updating`) answers at once
/// and a background subrequest refreshes it.
pub extern "C" fn set_background_update(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.response_cache.background_update, parse::flag(args[0])?)
    })
}
