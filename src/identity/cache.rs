//! The per-worker cache of verified tokens: a repeated token costs a keyed hash, a lookup and a
//! comparison instead of a signature check. Entries are found by (key set, SipHash-1-3 of the
//! token under a per-process random key) and hold the token itself: a hit needs the very same
//! bytes, so a forged token whose hash collides is a miss, never a verified token; a token
//! verified against one location's keys is not taken as verified by another's. (A SHA-256 of the
//! token was the key before: ~19,000 instructions for a 520-byte RS256 token, half of the cached
//! request; the keyed hash is ~1,500, and the exact comparison makes a cryptographic hash
//! unnecessary.) Bounded: at most `capacity` entries and `max_weight` bytes of tokens
//! (the claims kept are a few times a token's size), the oldest evicted first; an entry lives until the token's `exp` (or `max_ttl` without one), never longer. Claims are
//! still checked on every request (they depend on the location and the time), only the
//! signature is not.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Where an entry lives: its key set and the token's keyed hash (the token itself is in the entry).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct CacheKey {
    keyset: u64,
    hash: u64,
}

/// The place of `token` verified against key set `keyset` (a per-configuration id).
fn key(keyset: u64, token: &[u8]) -> CacheKey {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    h.write(token);
    CacheKey { keyset, hash: h.finish() }
}

struct Entry<V> {
    token: Box<[u8]>,
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

    /// The verified value of exactly `token` under `keyset`, while it lives.
    pub fn get(&mut self, keyset: u64, token: &[u8], now: f64) -> Option<Rc<V>> {
        let key = key(keyset, token);
        let entry = self.map.get(&key)?;
        if now >= entry.until {
            self.remove(&key);
            return None;
        }
        (*entry.token == *token).then(|| Rc::clone(&entry.value))
    }

    /// Caches a verified token of `weight` bytes until `min(exp, now + max_ttl)`; an already
    /// expired one, or one heavier than the whole budget, is not cached.
    /// A colliding entry of another token is replaced.
    pub fn insert(&mut self, keyset: u64, token: &[u8], value: Rc<V>, weight: usize, exp: Option<f64>, now: f64) {
        let key = key(keyset, token);
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
        self.map.insert(key, Entry { token: token.into(), value, until, seq: self.seq, weight });
        self.order.push_back((key, self.seq));
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order.retain(|(k, seq)| map.get(k).is_some_and(|e| e.seq == *seq));
        }
    }
}
