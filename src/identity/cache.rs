//! The per-worker cache of verified tokens: a repeated token costs a SHA-256 and a hash lookup
//! instead of a signature check. Keyed by SHA-256 of (key set, token), so a forged token cannot
//! collide with a cached one, and a token verified against one location's keys is not taken as
//! verified by another's. Bounded: at most `capacity` entries and `max_weight` bytes of tokens
//! (the claims kept are a few times a token's size), the oldest evicted first; an entry lives until the token's `exp` (or `max_ttl` without one), never longer. Claims are
//! still checked on every request (they depend on the location and the time), only the
//! signature is not.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use ring::digest;

pub type CacheKey = [u8; 32];

/// The cache key of `token` verified against key set `keyset` (a per-configuration id).
pub fn key(keyset: u64, token: &[u8]) -> CacheKey {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&keyset.to_le_bytes());
    ctx.update(token);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

struct Entry<V> {
    value: Rc<V>,
    /// Unix seconds after which the entry is gone.
    until: f64,
    /// Insertion number, to tell this entry's place in `order` from a stale one.
    seq: u64,
    weight: usize,
}

pub struct TokenCache<V> {
    map: HashMap<CacheKey, Entry<V>>,
    /// Insertion order, oldest first; may hold stale (replaced or expired) places.
    pub(super) order: VecDeque<(CacheKey, u64)>,
    capacity: usize,
    max_weight: usize,
    weight: usize,
    max_ttl: f64,
    seq: u64,
}

impl<V> TokenCache<V> {
    pub fn new(capacity: usize, max_weight: usize, max_ttl_secs: u64) -> Self {
        TokenCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            max_weight,
            weight: 0,
            max_ttl: max_ttl_secs as f64,
            seq: 0,
        }
    }

    /// Bytes of tokens held.
    pub fn weight(&self) -> usize {
        self.weight
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.map.remove(key) {
            self.weight -= e.weight;
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&mut self, key: &CacheKey, now: f64) -> Option<Rc<V>> {
        let entry = self.map.get(key)?;
        if now >= entry.until {
            self.remove(key);
            return None;
        }
        Some(Rc::clone(&entry.value))
    }

    /// Caches a verified token of `weight` bytes until `min(exp, now + max_ttl)`; an already
    /// expired one, or one heavier than the whole budget, is not cached.
    pub fn insert(&mut self, key: CacheKey, value: Rc<V>, weight: usize, exp: Option<f64>, now: f64) {
        let until = exp.map_or(now + self.max_ttl, |e| e.min(now + self.max_ttl));
        if self.capacity == 0 || until <= now || weight > self.max_weight {
            return;
        }
        self.remove(&key);
        while self.map.len() >= self.capacity || self.weight + weight > self.max_weight {
            let Some((old, seq)) = self.order.pop_front() else { break };
            if self.map.get(&old).is_some_and(|e| e.seq == seq) {
                self.remove(&old);
            }
        }
        self.seq += 1;
        self.weight += weight;
        self.map.insert(key, Entry { value, until, seq: self.seq, weight });
        self.order.push_back((key, self.seq));
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order.retain(|(k, seq)| map.get(k).is_some_and(|e| e.seq == *seq));
        }
    }
}
