//! A fixed-size, pointer-free hash table for shared memory: the local rate-limit backend's
//! per-key state.
//!
//! Shared memory is mapped at the same address in every worker, but the table must also
//! survive `nginx -s reload` and never allocate on a request path, so it is one flat array of
//! fixed-size slots with no pointers at all:
//! - keys are stored as a 128-bit hash (two independent 64-bit hashes), not as bytes: a false
//!   match needs a 2^-128 collision, and every slot has the same size;
//! - the table is set-associative: a key lives in one bucket of `WAYS` slots; when the bucket
//!   is full the least recently used slot of that bucket is evicted (LRU per bucket — O(1),
//!   bounded, and with 8 ways close to global LRU in practice);
//! - a slot also expires by time: `expires_at` lets a lookup treat an idle key as absent.
//!
//! The caller holds the zone's mutex around every call.

pub const WAYS: usize = 8;

/// One slot. `repr(C)` and plain integers only: it lives in shared memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    pub h1: u64,
    pub h2: u64,
    /// Algorithm state (e.g. GCRA's theoretical arrival time, or a sliding window's counts).
    pub state: [u64; 3],
    /// Last use, for LRU; 0 marks an empty slot.
    pub touched: u64,
    /// The state is meaningless after this time (ms); 0 = never.
    pub expires_at: u64,
}

/// A key's two hashes. Both are FNV-1a variants with different offsets, so they are
/// independent enough for a 128-bit identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub u64, pub u64);

impl KeyHash {
    pub fn of(parts: &[&[u8]]) -> KeyHash {
        let mut a: u64 = 0xcbf2_9ce4_8422_2325;
        let mut b: u64 = 0x6c62_272e_07bb_0142;
        for part in parts {
            for &byte in *part {
                a = (a ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                b = (b ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x9e37_79b9);
            }
            // Separator, so ("ab","c") and ("a","bc") differ.
            a = (a ^ 0xff).wrapping_mul(0x0100_0000_01b3);
            b = (b ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3 ^ 0x9e37_79b9);
        }
        // 0 marks empty slots, so never produce it.
        KeyHash(a | 1, b)
    }
}

/// A view of the table over caller-provided memory.
pub struct Table<'a> {
    slots: &'a mut [Slot],
}

impl<'a> Table<'a> {
    /// `slots.len()` is rounded down to whole buckets; at least one bucket is required.
    pub fn new(slots: &'a mut [Slot]) -> Option<Self> {
        let usable = slots.len() / WAYS * WAYS;
        (usable > 0).then(|| Table { slots: &mut slots[..usable] })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn bucket(&mut self, key: KeyHash) -> &mut [Slot] {
        let buckets = self.slots.len() / WAYS;
        let b = (key.1 % buckets as u64) as usize;
        &mut self.slots[b * WAYS..(b + 1) * WAYS]
    }

    /// The live state of `key`, if present and not expired at `now_ms`.
    pub fn get(&mut self, key: KeyHash, now_ms: u64) -> Option<[u64; 3]> {
        let bucket = self.bucket(key);
        let slot = bucket.iter_mut().find(|s| s.touched != 0 && s.h1 == key.0 && s.h2 == key.1)?;
        if slot.expires_at != 0 && slot.expires_at <= now_ms {
            *slot = Slot::default();
            return None;
        }
        slot.touched = now_ms.max(1);
        Some(slot.state)
    }

    /// Stores `state` for `key` until `expires_at`; returns true if another key was evicted.
    pub fn put(&mut self, key: KeyHash, state: [u64; 3], now_ms: u64, expires_at: u64) -> bool {
        let bucket = self.bucket(key);
        let entry = Slot { h1: key.0, h2: key.1, state, touched: now_ms.max(1), expires_at };
        if let Some(slot) = bucket.iter_mut().find(|s| s.touched != 0 && s.h1 == key.0 && s.h2 == key.1) {
            *slot = entry;
            return false;
        }
        // An empty or expired slot first; otherwise evict the least recently used.
        let free = bucket.iter().position(|s| s.touched == 0 || (s.expires_at != 0 && s.expires_at <= now_ms));
        let (index, evicted) = match free {
            Some(i) => (i, false),
            None => {
                let lru = (0..WAYS).min_by_key(|&i| bucket[i].touched).unwrap_or(0);
                (lru, true)
            }
        };
        bucket[index] = entry;
        evicted
    }

    pub fn remove(&mut self, key: KeyHash) {
        let bucket = self.bucket(key);
        if let Some(slot) = bucket.iter_mut().find(|s| s.touched != 0 && s.h1 == key.0 && s.h2 == key.1) {
            *slot = Slot::default();
        }
    }

    /// Live entries (for metrics and tests).
    pub fn len(&self, now_ms: u64) -> usize {
        self.slots.iter().filter(|s| s.touched != 0 && (s.expires_at == 0 || s.expires_at > now_ms)).count()
    }

    pub fn is_empty(&self, now_ms: u64) -> bool {
        self.len(now_ms) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> KeyHash {
        KeyHash::of(&[b"zone", &i.to_le_bytes()])
    }

    #[test]
    fn put_get_overwrite_remove() {
        let mut mem = vec![Slot::default(); 64];
        let mut t = Table::new(&mut mem).unwrap();
        assert_eq!(t.get(key(1), 10), None);
        assert!(!t.put(key(1), [1, 2, 3], 10, 0));
        assert_eq!(t.get(key(1), 11), Some([1, 2, 3]));
        t.put(key(1), [4, 5, 6], 12, 0);
        assert_eq!(t.get(key(1), 13), Some([4, 5, 6]));
        assert_eq!(t.len(13), 1);
        t.remove(key(1));
        assert_eq!(t.get(key(1), 14), None);
    }

    #[test]
    fn entries_expire() {
        let mut mem = vec![Slot::default(); 8];
        let mut t = Table::new(&mut mem).unwrap();
        t.put(key(1), [7, 0, 0], 100, 200);
        assert_eq!(t.get(key(1), 199), Some([7, 0, 0]));
        assert_eq!(t.get(key(1), 200), None);
    }

    #[test]
    fn full_bucket_evicts_least_recently_used() {
        let mut mem = vec![Slot::default(); WAYS]; // a single bucket
        let mut t = Table::new(&mut mem).unwrap();
        for i in 0..WAYS as u64 {
            assert!(!t.put(key(i), [i, 0, 0], 10 + i, 0));
        }
        // Touch key 0 so key 1 becomes the least recently used.
        assert!(t.get(key(0), 100).is_some());
        assert!(t.put(key(99), [99, 0, 0], 101, 0), "a full bucket evicts");
        assert_eq!(t.get(key(1), 102), None, "LRU victim");
        assert!(t.get(key(0), 102).is_some(), "recently used survives");
        assert_eq!(t.len(102), WAYS, "bounded");
    }

    #[test]
    fn capacity_is_bounded_under_many_keys() {
        let mut mem = vec![Slot::default(); 1000];
        let mut t = Table::new(&mut mem).unwrap();
        assert_eq!(t.capacity(), 1000 / WAYS * WAYS);
        for i in 0..100_000u64 {
            t.put(key(i), [i, 0, 0], i + 1, 0);
        }
        assert_eq!(t.len(200_000), t.capacity());
        // The most recent keys are all present.
        for i in 99_990..100_000u64 {
            assert_eq!(t.get(key(i), 200_001).map(|s| s[0]), Some(i));
        }
    }

    #[test]
    fn hash_separates_parts_and_is_never_zero() {
        assert_ne!(KeyHash::of(&[b"ab", b"c"]), KeyHash::of(&[b"a", b"bc"]));
        assert_ne!(KeyHash::of(&[b""]).0, 0);
        assert!(Table::new(&mut [Slot::default(); 3]).is_none());
    }
}
