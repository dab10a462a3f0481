//! Each zone's shared-memory table and the local decision: limits and bans checked (and
//! committed when everything admits) under the zone locks.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use ngx::ffi::{ngx_int_t, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_calloc, ngx_slab_pool_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK};
use ngx::ngx_log_error;

use super::directives::Zone;
use crate::glue::util::guard;
use crate::glue::MainConf;
use crate::limit::shm_table::{KeyHash, Slot, Table};
use crate::limit::{self as rate, Ban, Decisions, Limit, Outcome, State};

/// Header of a zone's shared memory; the table's slots follow it.
#[repr(C)]
pub(super) struct ZoneShm {
    pub(super) key_hash: u64,
    pub(super) slots: usize,
}

/// Allocates the zone's table, or reuses the previous cycle's on reload when the key is the
/// same (so limits survive `nginx -s reload`); a changed key is refused, as limit_req does.
pub(super) extern "C" fn zone_init(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    guard(ptr::null_mut(), "limit zone init", NGX_ERROR as ngx_int_t, || {
        // SAFETY: data was set to our Zone in set_zone; old is the previous cycle's ZoneShm or
        // NULL; shm.addr starts with the slab pool.
        unsafe {
            let shm_zone = &mut *zone;
            let z = &mut *shm_zone.data.cast::<Zone>();
            let mut h = crate::status::metrics::Fnv::default();
            h.write(z.key_source.as_bytes());
            let old = old.cast::<ZoneShm>();
            z.pool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();
            if !old.is_null() {
                if (*old).key_hash != h.0 {
                    ngx_log_error!(
                        NGX_LOG_EMERG,
                        shm_zone.shm.log,
                        "shield_limit_zone \"{}\" uses the \"{}\" key while previously it used another key",
                        z.name,
                        z.key_source
                    );
                    return NGX_ERROR as ngx_int_t;
                }
                z.shm = old;
                shm_zone.data = old.cast();
                return NGX_OK as ngx_int_t;
            }
            let pool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();
            // Leave room for the slab allocator's own pages.
            let mut slots = (shm_zone.shm.size.saturating_sub(16 * 4096)) / size_of::<Slot>();
            let mut mem = ptr::null_mut::<ZoneShm>();
            while slots >= crate::limit::shm_table::WAYS && mem.is_null() {
                mem = ngx_slab_calloc(pool, size_of::<ZoneShm>() + slots * size_of::<Slot>()).cast();
                if mem.is_null() {
                    slots = slots * 9 / 10;
                }
            }
            if mem.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*mem).key_hash = h.0;
            (*mem).slots = slots;
            z.shm = mem;
            shm_zone.data = mem.cast();
            NGX_OK as ngx_int_t
        }
    })
}

// --- shared-memory tables -------------------------------------------------------------------

/// Holds the locks of several zones (taken in zone order, so workers never deadlock) and
/// releases them on drop, even on panic.
struct Locked<'a> {
    /// One zone (the common case, no allocation) or several, sorted.
    pub(super) one: Option<&'a Zone>,
    pub(super) zones: Vec<&'a Zone>,
}

impl<'a> Locked<'a> {
    pub(super) fn one(zone: &'a Zone) -> Option<Self> {
        if zone.shm.is_null() {
            return None;
        }
        // SAFETY: as in new().
        unsafe { ngx_shmtx_lock(&mut (*pool_of(zone)).mutex) };
        Some(Locked { one: Some(zone), zones: Vec::new() })
    }

    pub(super) fn new(mut zones: Vec<&'a Zone>) -> Option<Self> {
        zones.sort_by_key(|z| z.shm as usize);
        zones.dedup_by_key(|z| z.shm as usize);
        if zones.iter().any(|z| z.shm.is_null()) {
            return None;
        }
        for z in &zones {
            // SAFETY: the slab pool (and its mutex) sits at the start of the zone's memory,
            // which contains z.shm.
            unsafe { ngx_shmtx_lock(&mut (*pool_of(z)).mutex) };
        }
        Some(Locked { one: None, zones })
    }

    pub(super) fn table(&self, zone: &Zone) -> Table<'_> {
        // SAFETY: the zone is locked; the slots follow the header (see zone_init).
        let slots = unsafe { core::slice::from_raw_parts_mut(zone.shm.add(1).cast::<Slot>(), (*zone.shm).slots) };
        Table::new(slots).expect("zone_init allocates whole buckets")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        for z in self.one.iter().chain(self.zones.iter().rev()) {
            // SAFETY: locked in new().
            unsafe { ngx_shmtx_unlock(&mut (*pool_of(z)).mutex) };
        }
    }
}

fn pool_of(z: &Zone) -> *mut ngx_slab_pool_t {
    z.pool
}

pub(super) fn now_us() -> u64 {
    let t = ngx::ffi::ngx_timeofday();
    t.sec as u64 * 1_000_000 + t.msec as u64 * 1000
}

/// One limit of one request, with its evaluated key.
#[derive(Clone, Copy)]
pub(super) struct Applied {
    pub(super) zone: usize,
    pub(super) limit: Limit,
    /// Evaluated in the request pool: valid as long as the request (and so as this state).
    pub(super) key: &'static [u8],
}

#[derive(Clone, Copy)]
pub(super) struct AppliedBan {
    pub(super) zone: usize,
    pub(super) key: &'static [u8],
}

fn ban_hash(key: &[u8]) -> KeyHash {
    KeyHash::of(&[b"\0ban", key])
}

/// Decides limits and bans on the local tables; commits only if everything admits.
pub(super) fn decide_local(mcf: &MainConf, limits: &[Applied], bans: &[AppliedBan], commit: bool) -> Option<Verdict> {
    let zones = &mcf.limits.zones;
    if let ([a], []) = (limits, bans) {
        // The common case, one limit and no ban: no intermediate collections.
        let locked = Locked::one(&zones[a.zone])?;
        let now = now_us();
        let h = KeyHash::of(&[a.key]);
        let mut t = locked.table(&zones[a.zone]);
        let (decision, state) = rate::check(&a.limit, t.get(h, now / 1000).unwrap_or([0; 3]), now);
        if commit && decision.outcome != Outcome::Rejected {
            let ttl = rate::ttl_us(&a.limit, state, now);
            t.put(h, state, now / 1000, (now + ttl) / 1000);
        }
        return Some(Verdict::Decisions(Decisions::One(decision)));
    }
    let locked = Locked::new(limits.iter().map(|a| &*zones[a.zone]).chain(bans.iter().map(|b| &*zones[b.zone])).collect())?;
    let now = now_us();
    for b in bans {
        let mut t = locked.table(&zones[b.zone]);
        if let Some(state) = t.get(ban_hash(b.key), now / 1000) {
            if state[2] > now {
                return Some(Verdict::Banned(b.zone, state[2] - now));
            }
        }
    }
    let hashes: Vec<KeyHash> = limits.iter().map(|a| KeyHash::of(&[a.key])).collect();
    let pairs: Vec<(Limit, State)> = limits
        .iter()
        .zip(&hashes)
        .map(|(a, h)| (a.limit, locked.table(&zones[a.zone]).get(*h, now / 1000).unwrap_or([0; 3])))
        .collect();
    let (decisions, _, states) = rate::check_all(&pairs, now);
    if let (true, Some(states)) = (commit, states) {
        for ((a, h), s) in limits.iter().zip(&hashes).zip(states) {
            let ttl = rate::ttl_us(&a.limit, s, now);
            locked.table(&zones[a.zone]).put(*h, s, now / 1000, (now + ttl) / 1000);
        }
    }
    Some(Verdict::Decisions(Decisions::Many(decisions)))
}

pub(super) fn record_ban_local(mcf: &MainConf, zone: usize, ban: &Ban, key: &[u8]) {
    let z = &*mcf.limits.zones[zone];
    let Some(locked) = Locked::one(z) else { return };
    let now = now_us();
    let mut t = locked.table(z);
    let state = t.get(ban_hash(key), now / 1000).unwrap_or([0; 3]);
    let new = ban.record(state, now);
    t.put(ban_hash(key), new, now / 1000, (now + ban.ttl_us(new, now)) / 1000);
}

pub(super) enum Verdict {
    Banned(usize, u64),
    Decisions(Decisions),
}
