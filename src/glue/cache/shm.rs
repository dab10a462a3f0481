//! The local backend: entries in the zone's shared memory, shared by the node's workers, with
//! LRU eviction when the slab allocator runs out of room.
//!
//! Layout: a header (bucket count, LRU list, the hash secret), the bucket array, then one slab
//! allocation per entry: a [`Node`] followed by the key and the entry bytes. Every operation
//! holds the slab pool's mutex throughout (the ngx crate's guard releases it even on a panic);
//! lookups copy the entry out, so no pointer into the zone outlives the lock. Pointers are
//! plain: nginx maps a zone at the same address in every worker, and a reload that keeps the
//! zone keeps its mapping.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use ngx::core::SlabPool;
use ngx::ffi::{
    ngx_int_t, ngx_shm_zone_t, ngx_slab_alloc_locked, ngx_slab_calloc, ngx_slab_free_locked, ngx_slab_pool_t,
    NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};
use ngx::ngx_log_error;

use super::directives::CacheZone;
use crate::cache::{entry, keys, tags};
use crate::glue::util::guard;
use crate::limit::shm_table::HashKey;

const SIGNATURE: u64 = 0x5348_4341_4348_4531; // "SHCACHE1"

#[repr(C)]
struct Node {
    lru_prev: *mut Node,
    lru_next: *mut Node,
    chain: *mut Node,
    hash: u64,
    /// Unix seconds after which the entry is dropped.
    expires: i64,
    key_len: u32,
    data_len: u32,
}

/// The zone's header, at the start of its first slab allocation.
#[repr(C)]
pub struct ShmCache {
    signature: u64,
    pool: *mut ngx_slab_pool_t,
    buckets: *mut *mut Node,
    n_buckets: usize,
    /// Sentinel of the LRU list: `lru_next` is the most recently used.
    lru: Node,
    entries: usize,
    secret: HashKey,
}

pub extern "C" fn zone_init(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    guard(ptr::null_mut(), "cache zone init", NGX_ERROR as ngx_int_t, || {
        // SAFETY: data was set to our CacheZone in set_zone; `old` is the previous cycle's
        // ShmCache or NULL; shm.addr starts with the slab pool.
        unsafe {
            let shm_zone = &mut *zone;
            let z = &mut *shm_zone.data.cast::<CacheZone>();
            z.pool = SlabPool::from_shm_zone(shm_zone);
            let old = old.cast::<ShmCache>();
            if !old.is_null() && (*old).signature == SIGNATURE {
                (*(*old).pool).set_log_nomem(0);
                z.shm = old;
                shm_zone.data = old.cast();
                return NGX_OK as ngx_int_t;
            }
            let pool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();
            // A full zone is the normal state of a cache: an allocation that fails makes room
            // by eviction, so it is no `[crit]` (nginx's own file cache does the same).
            (*pool).set_log_nomem(0);
            // One bucket per 4 KB of zone: chains stay short for entries of that size or more.
            let n_buckets = (shm_zone.shm.size / 4096).next_power_of_two().max(64);
            let mem = ngx_slab_calloc(pool, size_of::<ShmCache>() + n_buckets * size_of::<*mut Node>());
            let mut secret = [0u8; 16];
            if mem.is_null() || getrandom::fill(&mut secret).is_err() {
                ngx_log_error!(NGX_LOG_EMERG, shm_zone.shm.log, "shield_cache_zone \"{}\" cannot be set up", z.name);
                return NGX_ERROR as ngx_int_t;
            }
            let c = mem.cast::<ShmCache>();
            (*c).signature = SIGNATURE;
            (*c).pool = pool;
            (*c).buckets = c.add(1).cast();
            (*c).n_buckets = n_buckets;
            let sentinel = ptr::addr_of_mut!((*c).lru);
            (*c).lru.lru_prev = sentinel;
            (*c).lru.lru_next = sentinel;
            let (a, b) = secret.split_at(8);
            (*c).secret = HashKey([
                u64::from_le_bytes(a.try_into().unwrap_or_default()),
                u64::from_le_bytes(b.try_into().unwrap_or_default()),
            ]);
            z.shm = c;
            shm_zone.data = c.cast();
            NGX_OK as ngx_int_t
        }
    })
}

/// The zone locked: the borrow proves it while the operations below run.
struct Locked<'z> {
    c: &'z mut ShmCache,
    _guard: ngx::core::slab::LockedSlabPool,
}

impl<'z> Locked<'z> {
    fn new(zone: &'z CacheZone) -> Option<Locked<'z>> {
        let guard = zone.pool.as_ref()?.lock();
        // SAFETY: shm was set up by zone_init; the lock is held for the life of this value.
        let c = unsafe { zone.shm.as_mut()? };
        Some(Locked { c, _guard: guard })
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.c.secret.hash(&[key]).0
    }

    fn bucket(&mut self, hash: u64) -> *mut *mut Node {
        // SAFETY: the bucket array has n_buckets slots (a power of two).
        unsafe { self.c.buckets.add(hash as usize & (self.c.n_buckets - 1)) }
    }

    /// The node for `key` and the link that points at it.
    fn find(&mut self, key: &[u8]) -> Option<(*mut *mut Node, *mut Node)> {
        let hash = self.hash(key);
        let mut link = self.bucket(hash);
        // SAFETY: chains hold live nodes allocated by `insert`; each has key_len key bytes
        // after it. Bounded: a chain never holds more than every entry.
        unsafe {
            for _ in 0..=self.c.entries {
                let node = *link;
                if node.is_null() {
                    return None;
                }
                if (*node).hash == hash && node_key(node) == key {
                    return Some((link, node));
                }
                link = ptr::addr_of_mut!((*node).chain);
            }
        }
        None
    }

    fn unlink_lru(node: *mut Node) {
        // SAFETY: node is in the LRU list (every live node is).
        unsafe {
            (*(*node).lru_prev).lru_next = (*node).lru_next;
            (*(*node).lru_next).lru_prev = (*node).lru_prev;
        }
    }

    fn push_front(&mut self, node: *mut Node) {
        let sentinel = ptr::addr_of_mut!(self.c.lru);
        // SAFETY: sentinel and node are live; node is not in the list.
        unsafe {
            (*node).lru_prev = sentinel;
            (*node).lru_next = (*sentinel).lru_next;
            (*(*sentinel).lru_next).lru_prev = node;
            (*sentinel).lru_next = node;
        }
    }

    /// Unlinks `node` (found at `link`) and frees it.
    fn remove(&mut self, link: *mut *mut Node, node: *mut Node) {
        Self::unlink_lru(node);
        // SAFETY: link points at node; the pool is locked.
        unsafe {
            *link = (*node).chain;
            ngx_slab_free_locked(self.c.pool, node.cast());
        }
        self.c.entries -= 1;
    }

    /// Evicts the least recently used entry; false when there is none. A tag's node whose
    /// entries are still there goes to the front instead (hits do not touch it), unless every
    /// node is such a tag node: then it goes, and its entries with it, so none escapes a purge.
    fn evict_one(&mut self) -> bool {
        let sentinel = ptr::addr_of_mut!(self.c.lru);
        for round in 0..=self.c.entries {
            // SAFETY: the list is well formed; its tail is a live node unless it is the sentinel.
            let tail = unsafe { (*sentinel).lru_prev };
            if ptr::eq(tail, sentinel) {
                return false;
            }
            // SAFETY: as above.
            let key = unsafe { node_key(tail) }.to_vec();
            if key.starts_with(&keys::shm_tag_key(b"")) {
                // SAFETY: as above.
                let list = unsafe { node_data(tail) }.to_vec();
                let live = tags::members(&list).any(|(m, _)| self.find(m).is_some());
                if live && round < self.c.entries {
                    Self::unlink_lru(tail);
                    self.push_front(tail);
                    continue;
                }
                for (m, _) in tags::members(&list) {
                    if let Some((link, node)) = self.find(m) {
                        self.remove(link, node);
                    }
                }
            }
            return match self.find(&key) {
                Some((link, node)) => {
                    self.remove(link, node);
                    true
                }
                None => false,
            };
        }
        false
    }
}

/// The key bytes of a node.
///
/// # Safety
/// `node` is a live node written by `put`.
unsafe fn node_key<'a>(node: *mut Node) -> &'a [u8] {
    // SAFETY: the caller's contract; the key follows the node header.
    unsafe { core::slice::from_raw_parts(node.add(1).cast::<u8>(), (*node).key_len as usize) }
}

/// The data bytes of a node.
///
/// # Safety
/// `node` is a live node written by `put`.
unsafe fn node_data<'a>(node: *mut Node) -> &'a mut [u8] {
    // SAFETY: the caller's contract; the data follows the key.
    unsafe {
        let data = node.add(1).cast::<u8>().add((*node).key_len as usize);
        core::slice::from_raw_parts_mut(data, (*node).data_len as usize)
    }
}

/// The entry stored under `key`, unless it expired (`now` in Unix seconds).
pub fn get(zone: &CacheZone, key: &[u8], now: i64) -> Option<Vec<u8>> {
    let mut l = Locked::new(zone)?;
    let (link, node) = l.find(key)?;
    // SAFETY: node is live under the lock; its data follows the key.
    unsafe {
        if (*node).expires <= now {
            l.remove(link, node);
            return None;
        }
        Locked::unlink_lru(node);
        l.push_front(node);
        let data = node.add(1).cast::<u8>().add((*node).key_len as usize);
        Some(core::slice::from_raw_parts(data, (*node).data_len as usize).to_vec())
    }
}

/// Stores `data` under `key` until `expires`, evicting least recently used entries for room.
/// False when it cannot fit even in an emptied zone.
pub fn put(zone: &CacheZone, key: &[u8], data: &[u8], expires: i64) -> bool {
    let Some(mut l) = Locked::new(zone) else { return false };
    if let Some((link, node)) = l.find(key) {
        l.remove(link, node);
    }
    l.insert(key, data, expires)
}

/// Stores `data` under `key` unless a live entry is there: the zone's lock primitive.
pub fn insert_if_absent(zone: &CacheZone, key: &[u8], data: &[u8], expires: i64) -> bool {
    let Some(mut l) = Locked::new(zone) else { return false };
    if let Some((link, node)) = l.find(key) {
        // SAFETY: node is live under the lock.
        if unsafe { (*node).expires } > store_now() {
            return false;
        }
        l.remove(link, node);
    }
    l.insert(key, data, expires)
}

fn store_now() -> i64 {
    super::store::now()
}

impl Locked<'_> {
    fn insert(&mut self, key: &[u8], data: &[u8], expires: i64) -> bool {
        let (Ok(key_len), Ok(data_len)) = (u32::try_from(key.len()), u32::try_from(data.len())) else { return false };
        let size = size_of::<Node>() + key.len() + data.len();
        // SAFETY: the pool is locked; a NULL allocation is retried after each eviction, at
        // most once per entry.
        let node = unsafe {
            let mut node = ngx_slab_alloc_locked(self.c.pool, size).cast::<Node>();
            while node.is_null() && self.evict_one() {
                node = ngx_slab_alloc_locked(self.c.pool, size).cast::<Node>();
            }
            node
        };
        if node.is_null() {
            return false;
        }
        let hash = self.hash(key);
        let bucket = self.bucket(hash);
        // SAFETY: node has room for the header, the key and the data; the bucket slot is live.
        unsafe {
            node.write(Node {
                lru_prev: ptr::null_mut(),
                lru_next: ptr::null_mut(),
                chain: *bucket,
                hash,
                expires,
                key_len,
                data_len,
            });
            let bytes = node.add(1).cast::<u8>();
            ptr::copy_nonoverlapping(key.as_ptr(), bytes, key.len());
            ptr::copy_nonoverlapping(data.as_ptr(), bytes.add(key.len()), data.len());
            *bucket = node;
        }
        self.push_front(node);
        self.c.entries += 1;
        true
    }
}

/// Drops the entry stored under `key`; whether there was one.
pub fn delete(zone: &CacheZone, key: &[u8]) -> bool {
    let Some(mut l) = Locked::new(zone) else { return false };
    match l.find(key) {
        Some((link, node)) => {
            l.remove(link, node);
            true
        }
        None => false,
    }
}

/// Why a tagged entry was not stored.
pub enum TagFailure {
    /// A tag's node holds `max_tag_entries` live entries already.
    Full,
    /// No room in the zone, even after eviction.
    NoRoom,
}

/// Stores `data` under `key` until `expires` and records `key` in each tag's node, all under
/// one lock: either the entry is stored and every tag's node lists it, or nothing is stored.
pub fn put_tagged(
    zone: &CacheZone,
    key: &[u8],
    data: &[u8],
    expires: i64,
    tag_list: &[Vec<u8>],
) -> Result<(), TagFailure> {
    let Some(mut l) = Locked::new(zone) else { return Err(TagFailure::NoRoom) };
    let now = store_now();
    let mut nodes = Vec::with_capacity(tag_list.len());
    for tag in tag_list {
        let tk = keys::shm_tag_key(tag);
        // SAFETY: nodes found under the lock are live.
        let (old, old_expires) = match l.find(&tk) {
            Some((_, n)) => unsafe { (node_data(n).to_vec(), (*n).expires) },
            None => (Vec::new(), 0),
        };
        let list = tags::add_member(&old, key, expires, now, zone.max_tag_entries).ok_or(TagFailure::Full)?;
        nodes.push((tk, list, expires.max(old_expires)));
    }
    if let Some((link, node)) = l.find(key) {
        l.remove(link, node);
    }
    if !l.insert(key, data, expires) {
        return Err(TagFailure::NoRoom);
    }
    for (tk, list, until) in nodes {
        if let Some((link, node)) = l.find(&tk) {
            l.remove(link, node);
        }
        if !l.insert(&tk, &list, until) {
            if let Some((link, node)) = l.find(key) {
                l.remove(link, node);
            }
            return Err(TagFailure::NoRoom);
        }
    }
    Ok(())
}

/// Soft purge: marks the entry under `key` stale (a `Vary` marker is dropped); whether there
/// was one.
pub fn mark_stale(zone: &CacheZone, key: &[u8]) -> bool {
    let Some(mut l) = Locked::new(zone) else { return false };
    mark_locked(&mut l, key)
}

fn mark_locked(l: &mut Locked<'_>, key: &[u8]) -> bool {
    let Some((link, node)) = l.find(key) else { return false };
    // SAFETY: node is live under the lock.
    if !entry::mark_stale(unsafe { node_data(node) }) {
        l.remove(link, node);
    }
    true
}

/// Drops (or, `soft`, marks stale) every entry carrying one of `tag_list`; how many there were.
/// A hard purge drops the tags' nodes too; a soft one keeps them (the entries are still there).
pub fn purge_tags(zone: &CacheZone, tag_list: &[Vec<u8>], soft: bool) -> u64 {
    let Some(mut l) = Locked::new(zone) else { return 0 };
    let mut n = 0;
    for tag in tag_list {
        let Some((link, node)) = l.find(&keys::shm_tag_key(tag)) else { continue };
        // SAFETY: node is live under the lock.
        let list = unsafe { node_data(node) }.to_vec();
        if !soft {
            l.remove(link, node);
        }
        for (m, _) in tags::members(&list) {
            let done = match soft {
                true => mark_locked(&mut l, m),
                false => match l.find(m) {
                    Some((link, node)) => {
                        l.remove(link, node);
                        true
                    }
                    None => false,
                },
            };
            n += u64::from(done);
        }
    }
    n
}
