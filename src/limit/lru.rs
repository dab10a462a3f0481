//! A bounded LRU map: fixed capacity, O(1) get/insert/remove, no growth past the capacity.
//!
//! Entries live in a slab allocated once; a doubly linked list of slab indices keeps the use
//! order and a `HashMap` (SipHash, so keys chosen by clients cannot force collisions) finds
//! them. Inserting into a full map evicts the least recently used entry.

use std::collections::HashMap;
use std::hash::Hash;

const NIL: u32 = u32::MAX;

struct Node<K, V> {
    key: K,
    value: V,
    prev: u32,
    next: u32,
}

pub struct Lru<K, V> {
    map: HashMap<K, u32>,
    nodes: Vec<Node<K, V>>,
    /// Slab slots freed by `remove`, reused before the slab grows.
    free: Vec<u32>,
    head: u32,
    tail: u32,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// A map holding at most `capacity` entries (at least 1, at most `u32::MAX - 1`).
    pub fn new(capacity: usize) -> Lru<K, V> {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        Lru {
            map: HashMap::with_capacity(capacity),
            nodes: Vec::with_capacity(capacity),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Looks a key up and marks it most recently used.
    pub fn get(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_front(i);
        Some(&mut self.nodes[i as usize].value)
    }

    /// Looks a key up without touching the use order.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|&i| &self.nodes[i as usize].value)
    }

    /// Inserts or replaces; returns the entry evicted to make room, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(&i) = self.map.get(&key) {
            self.nodes[i as usize].value = value;
            self.unlink(i);
            self.push_front(i);
            return None;
        }
        let mut evicted = None;
        let i = if self.map.len() >= self.capacity {
            // Reuse the least recently used slot in place.
            let i = self.tail;
            self.unlink(i);
            let node = &mut self.nodes[i as usize];
            self.map.remove(&node.key);
            let old_key = core::mem::replace(&mut node.key, key.clone());
            let old_value = core::mem::replace(&mut node.value, value);
            evicted = Some((old_key, old_value));
            i
        } else if let Some(i) = self.free.pop() {
            let node = &mut self.nodes[i as usize];
            node.key = key.clone();
            node.value = value;
            i
        } else {
            self.nodes.push(Node { key: key.clone(), value, prev: NIL, next: NIL });
            (self.nodes.len() - 1) as u32
        };
        self.map.insert(key, i);
        self.push_front(i);
        evicted
    }

    /// Removes a key. The slot's old key and value stay in the slab until it is reused
    /// (`V` is dropped then), which keeps `remove` free of `Default` bounds.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.map.remove(key) {
            Some(i) => {
                self.unlink(i);
                self.free.push(i);
                true
            }
            None => false,
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old_head = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old_head;
        }
        match old_head {
            NIL => self.tail = i,
            h => self.nodes[h as usize].prev = i,
        }
        self.head = i;
    }
}

/// Key of the per-worker decision cache: the zone's config hash (a reload with another rate
/// gives another hash, so stale answers are never used) and the limited key's bytes.
pub type DecisionKey = (u64, Box<[u8]>);

/// The per-worker "over limit until T" cache: once Redis rejects a key, further requests of
/// that key are rejected locally until `retry_after` has passed, so a flood from a rejected
/// client costs no Redis round trips.
pub struct DecisionCache {
    lru: Lru<DecisionKey, u64>,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache { lru: Lru::new(capacity) }
    }

    /// Remembers that `key` is rejected until `until` (µs).
    pub fn reject_until(&mut self, config_hash: u64, key: &[u8], until: u64) {
        self.lru.insert((config_hash, key.into()), until);
    }

    /// How long `key` is still known to be rejected; forgets expired entries.
    pub fn rejected_for(&mut self, config_hash: u64, key: &[u8], now: u64) -> Option<core::time::Duration> {
        let k: DecisionKey = (config_hash, key.into());
        let until = *self.lru.get(&k)?;
        if until > now {
            return Some(core::time::Duration::from_micros(until - now));
        }
        self.lru.remove(&k);
        None
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_never_grows() {
        let mut lru = Lru::new(3);
        for k in 0..3 {
            assert_eq!(lru.insert(k, k * 10), None);
        }
        assert_eq!(lru.get(&0), Some(&mut 0), "0 is now most recent");
        assert_eq!(lru.insert(3, 30), Some((1, 10)));
        assert_eq!(lru.insert(4, 40), Some((2, 20)));
        assert_eq!(lru.peek(&0), Some(&0));
        assert_eq!(lru.len(), 3);
        for k in 5..1000 {
            lru.insert(k, k);
            assert!(lru.len() <= 3);
        }
        assert!(lru.nodes.len() <= 3 && lru.map.len() <= 3);
        assert_eq!(lru.peek(&999), Some(&999));
        assert_eq!(lru.peek(&996), None);
    }

    #[test]
    fn replace_and_remove_reuse_slots() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("a", 2);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.peek(&"a"), Some(&2));
        assert!(lru.remove(&"a"));
        assert!(!lru.remove(&"a"));
        assert!(lru.is_empty());
        lru.insert("b", 3);
        lru.insert("c", 4);
        assert_eq!(lru.nodes.len(), 2, "freed slot reused");
        assert_eq!(lru.insert("d", 5), Some(("b", 3)));
        assert_eq!(lru.capacity(), 2);
    }

    #[test]
    fn order_survives_mixed_operations() {
        let mut lru = Lru::new(4);
        for k in 0..4 {
            lru.insert(k, ());
        }
        lru.remove(&2);
        lru.get(&0);
        lru.insert(9, ());
        lru.insert(10, ());
        // Use order oldest first was 1, 3, 0, 9: inserting 10 evicts 1.
        assert!(lru.peek(&1).is_none());
        assert_eq!(lru.insert(11, ()), Some((3, ())));
        assert_eq!(lru.insert(12, ()), Some((0, ())));
    }

    #[test]
    fn decision_cache_expires_and_separates_configs() {
        let mut cache = DecisionCache::new(2);
        cache.reject_until(1, b"k", 100);
        assert_eq!(cache.rejected_for(1, b"k", 40), Some(core::time::Duration::from_micros(60)));
        assert_eq!(cache.rejected_for(2, b"k", 40), None, "other config hash");
        assert_eq!(cache.rejected_for(1, b"k", 100), None);
        assert!(cache.is_empty(), "expired entry forgotten");
        for k in 0..10u8 {
            cache.reject_until(1, &[k], 1000);
        }
        assert_eq!(cache.len(), 2);
    }
}
