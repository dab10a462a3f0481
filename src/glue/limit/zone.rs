//! Each zone's shared-memory table and the local decision: limits and bans checked (and
//! committed when everything admits) under the zone locks.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use ngx::core::slab::{LockedSlabPool, SlabPool};
use ngx::ffi::{ngx_int_t, ngx_shm_zone_t, ngx_slab_calloc, NGX_ERROR, NGX_LOG_EMERG, NGX_OK};
use ngx::ngx_log_error;

use super::directives::Zone;
use crate::glue::util::guard;
use crate::glue::MainConf;
use crate::limit::outcome::Verdict;
use crate::limit::shm_table::{zone_layout, HashKey, KeyHash, Slot, Table, WAYS, ZONE_MAGIC};
use crate::limit::{self as rate, Ban, Decisions, Limit, State};

/// Header of a zone's shared memory; the table's slots follow it.
#[repr(C)]
pub(super) struct ZoneShm {
    /// `ZONE_MAGIC` then [`LAYOUT`]: always the first two words, whatever follows.
    magic: u64,
    layout: u64,
    key_hash: u64,
    slots: usize,
    /// The table's hash key: random, drawn when the zone is created, kept across reloads.
    secret: HashKey,
}

/// This build's layout, checked before a reload reuses a zone.
const LAYOUT: u64 = zone_layout(size_of::<ZoneShm>());

/// Allocates the zone's table, or reuses the previous cycle's on reload when the key is the
/// same (so limits, bans and the table's secret survive `nginx -s reload`); a changed key is
/// refused, as limit_req does. So is a zone laid out by another build of the module: it could
/// not be read, nor replaced under the old workers still using it. (nginx already gives
/// another build fresh zones: a zone's tag is the module's address, which differs between two
/// loaded builds; the header's magic and layout words keep the guard should that change.)
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
            z.pool = SlabPool::from_shm_zone(shm_zone);
            if !old.is_null() {
                // The layout word is read only once the magic says the zone has one.
                if (*old).magic != ZONE_MAGIC || (*old).layout != LAYOUT {
                    ngx_log_error!(
                        NGX_LOG_EMERG,
                        shm_zone.shm.log,
                        "shield_limit_zone \"{}\" was laid out by an incompatible version of the module; restart \
                         nginx, or rename or resize the zone, to use this version",
                        z.name
                    );
                    return NGX_ERROR as ngx_int_t;
                }
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
            let mut secret = [0u8; 16];
            if let Err(e) = getrandom::fill(&mut secret) {
                ngx_log_error!(
                    NGX_LOG_EMERG,
                    shm_zone.shm.log,
                    "shield_limit_zone \"{}\": no random secret for its table: {e}",
                    z.name
                );
                return NGX_ERROR as ngx_int_t;
            }
            let pool = shm_zone.shm.addr.cast();
            // Leave room for the slab allocator's own pages (ngx_os_init set the page size
            // before any configuration was read): 16 pages, or half of a small zone.
            let reserve = (16 * ngx::ffi::ngx_pagesize).min(shm_zone.shm.size / 2);
            let mut slots = (shm_zone.shm.size - reserve) / size_of::<Slot>();
            let mut mem = ptr::null_mut::<ZoneShm>();
            // The first sizes tried may not fit: that is expected, not worth nginx's [crit]
            // "ngx_slab_alloc() failed: no memory" line.
            let slab: *mut ngx::ffi::ngx_slab_pool_t = pool;
            (*slab).set_log_nomem(0);
            while slots >= WAYS && mem.is_null() {
                mem = ngx_slab_calloc(pool, size_of::<ZoneShm>() + slots * size_of::<Slot>()).cast();
                if mem.is_null() {
                    slots = slots * 9 / 10;
                }
            }
            (*slab).set_log_nomem(1);
            if mem.is_null() {
                ngx_log_error!(
                    NGX_LOG_EMERG,
                    shm_zone.shm.log,
                    "shield_limit_zone \"{}\" is too small for its table",
                    z.name
                );
                return NGX_ERROR as ngx_int_t;
            }
            (*mem).magic = ZONE_MAGIC;
            (*mem).layout = LAYOUT;
            (*mem).key_hash = h.0;
            (*mem).slots = slots;
            let (a, b) = secret.split_at(8);
            (*mem).secret = HashKey([
                u64::from_le_bytes(a.try_into().unwrap_or_default()),
                u64::from_le_bytes(b.try_into().unwrap_or_default()),
            ]);
            z.shm = mem;
            shm_zone.data = mem.cast();
            NGX_OK as ngx_int_t
        }
    })
}

/// Holds the locks of the zones a request touches (taken in address order, so workers never
/// deadlock) through ngx's slab-pool guards, which release them on drop, even on panic.
struct Locked {
    /// Never read: holding them is the point.
    _guards: Guards,
}

#[allow(dead_code)] // the guards are held for their Drop, which unlocks
enum Guards {
    /// One zone, the common case: no allocation.
    One(LockedSlabPool),
    Many(Vec<LockedSlabPool>),
}

impl Locked {
    fn new<'a>(zones: impl Iterator<Item = &'a Zone> + Clone) -> Option<Self> {
        let mut all = zones.clone();
        let first = all.next()?;
        if first.shm.is_null() || all.clone().any(|z| z.shm.is_null()) {
            return None;
        }
        if all.all(|z| ptr::eq(z.shm, first.shm)) {
            return Some(Locked { _guards: Guards::One(first.pool.as_ref()?.lock()) });
        }
        let mut sorted: Vec<&Zone> = zones.collect();
        sorted.sort_by_key(|z| z.shm as usize);
        sorted.dedup_by_key(|z| z.shm as usize);
        let guards = sorted.iter().map(|z| z.pool.as_ref().map(SlabPool::lock)).collect::<Option<_>>()?;
        Some(Locked { _guards: Guards::Many(guards) })
    }

    /// The zone's table; the borrow of `self` proves the zone is locked.
    fn table<'t>(&'t self, zone: &'t Zone) -> Table<'t> {
        // SAFETY: the zone is locked (it was among those `new` locked: callers pass only
        // those); the slots follow the header (see zone_init).
        let slots = unsafe { core::slice::from_raw_parts_mut(zone.shm.add(1).cast::<Slot>(), (*zone.shm).slots) };
        Table::new(slots).expect("zone_init allocates whole buckets")
    }
}

/// A key's hash in `zone`'s table, with the zone's secret.
fn key_hash(zone: &Zone, parts: &[&[u8]]) -> KeyHash {
    // SAFETY: zone.shm is initialised (callers checked it through Locked::new); the secret is
    // written once, before any worker starts, and only read afterwards.
    unsafe { (*zone.shm).secret }.hash(parts)
}

fn ban_hash(zone: &Zone, key: &[u8]) -> KeyHash {
    key_hash(zone, &[b"\0ban", key])
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

/// Decides limits and bans on the local tables; commits only if everything admits.
pub(super) fn decide_local(mcf: &MainConf, limits: &[Applied], bans: &[AppliedBan], commit: bool) -> Option<Verdict> {
    let zones = &mcf.limits.zones;
    let locked = Locked::new(limits.iter().map(|a| &*zones[a.zone]).chain(bans.iter().map(|b| &*zones[b.zone])))?;
    let now = now_us();
    for b in bans {
        let zone = &zones[b.zone];
        let state = locked.table(zone).get(ban_hash(zone, b.key), now / 1000);
        if let Some(left) = state.and_then(|s| Ban::banned_for(s, now)) {
            return Some(Verdict::Banned(b.zone, left));
        }
    }
    let decisions = match limits {
        // One limit, the common case: no intermediate collections.
        [a] => decide_limits(
            &locked,
            mcf,
            limits,
            &[a.limit],
            &[key_hash(&zones[a.zone], &[a.key])],
            &mut [[0; 3]],
            now,
            commit,
        ),
        _ => {
            let list: Vec<Limit> = limits.iter().map(|a| a.limit).collect();
            let hashes: Vec<KeyHash> = limits.iter().map(|a| key_hash(&zones[a.zone], &[a.key])).collect();
            decide_limits(&locked, mcf, limits, &list, &hashes, &mut vec![[0; 3]; limits.len()], now, commit)
        }
    };
    Some(Verdict::Decisions(decisions))
}

/// Reads the limits' states, decides, and stores the new states when admitted and `commit`.
#[allow(clippy::too_many_arguments)] // the parallel slices let one limit live on the stack
fn decide_limits(
    locked: &Locked,
    mcf: &MainConf,
    applied: &[Applied],
    limits: &[Limit],
    hashes: &[KeyHash],
    states: &mut [State],
    now: u64,
    commit: bool,
) -> Decisions {
    let zones = &mcf.limits.zones;
    for ((s, a), h) in states.iter_mut().zip(applied).zip(hashes) {
        *s = locked.table(&zones[a.zone]).get(*h, now / 1000).unwrap_or([0; 3]);
    }
    let (decisions, admitted) = rate::admit(limits, states, now);
    if commit && admitted {
        for ((s, a), h) in states.iter().zip(applied).zip(hashes) {
            let expires = now + rate::ttl_us(&a.limit, *s, now);
            locked.table(&zones[a.zone]).put(
                *h,
                *s,
                now / 1000,
                expires / 1000,
                rate::protected_until_us(&a.limit, *s) / 1000,
            );
        }
    }
    decisions
}

pub(super) fn record_ban_local(mcf: &MainConf, zone: usize, ban: &Ban, key: &[u8]) {
    let z = &*mcf.limits.zones[zone];
    let Some(locked) = Locked::new(core::iter::once(z)) else { return };
    let now = now_us();
    let h = ban_hash(z, key);
    let mut t = locked.table(z);
    let state = t.get(h, now / 1000).unwrap_or([0; 3]);
    let new = ban.record(state, now);
    t.put(h, new, now / 1000, (now + ban.ttl_us(new, now)) / 1000, ban.protected_until_us(new) / 1000);
}
