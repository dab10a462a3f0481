//! A fixed-size, pointer-free hash table for shared memory: the local rate-limit backend's
//! per-key state.
//!
//! Shared memory is mapped at the same address in every worker, but the table must also
//! survive `nginx -s reload` and never allocate on a request path, so it is one flat array of
//! fixed-size slots with no pointers at all:
//! - keys are stored as a 128-bit keyed hash (SipHash-1-3 with a secret per zone, see
//!   [`HashKey`]), not as bytes: a false match needs a 2^-128 collision, every slot has the
//!   same size, and nobody without the secret can compute which bucket a key lands in, so
//!   keys that collide with a victim's cannot be found offline;
//! - the table is set-associative: a key lives in one bucket of `WAYS` slots; when the bucket
//!   is full, the least recently used *idle* slot of that bucket is evicted (LRU per bucket —
//!   O(1), bounded, and with 8 ways close to global LRU in practice). A slot whose state
//!   matters (a key being limited, counted towards a ban or banned: `protected_until`) is
//!   evicted only when every slot of its bucket matters, so a flood of fresh keys cannot
//!   free a limited or banned key while idle ones are there to go first;
//! - a slot also expires by time: `expires_at` lets a lookup treat an idle key as absent.
//!
//! The caller holds the zone's mutex around every call.

pub const WAYS: usize = 8;

/// The first word of a zone's header, whatever its layout: says the zone is this module's.
/// A zone from before the word existed has its key hash there, which matches with
/// probability 2^-64.
pub const ZONE_MAGIC: u64 = 0x5d1e_1d5a_f3c9_a7b1;

/// The table's layout version: a zone written by a build with another layout must not be
/// read by this one, should a reload ever hand it over (nginx's zone tag prevents it today:
/// see the glue's `zone_init`).
/// Bump it whenever [`Slot`], [`WAYS`], the hashing or the zone header changes.
pub const LAYOUT_VERSION: u64 = 1;

/// The second word of a zone's header: the layout version with the sizes that define the
/// layout folded in (so a changed size is caught even if the version was not bumped).
pub const fn zone_layout(header_size: usize) -> u64 {
    (LAYOUT_VERSION << 32) | ((core::mem::size_of::<Slot>() as u64) << 16) | ((WAYS as u64) << 8) | header_size as u64
}

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
    /// Until this time (ms) forgetting the state would change a decision (the key is limited
    /// or banned): evicted only after every idle slot of its bucket.
    pub protected_until: u64,
}

/// A key's 128-bit keyed hash: its identity in the table, and (second half) its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub u64, pub u64);

/// A table's 128-bit secret: drawn from the OS when the zone is created, kept in the zone's
/// shared memory (so every worker and every reload uses the same one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct HashKey(pub [u64; 2]);

impl HashKey {
    /// A key's hash: each part with its length first, so ("ab","c") and ("a","bc") differ.
    pub fn hash(&self, parts: &[&[u8]]) -> KeyHash {
        let mut h = Sip13::new(self.0, true);
        for part in parts {
            h.write(&(part.len() as u32).to_le_bytes());
            h.write(part);
        }
        let (a, b) = h.finish128();
        // 0 marks empty slots, so never produce it.
        KeyHash(a | 1, b)
    }
}

/// SipHash-1-3 (one compression round, three finalization rounds: the variant Rust's std
/// uses for HashMap), written from the SipHash paper; `wide` is its 128-bit output mode.
struct Sip13 {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    len: u64,
}

impl Sip13 {
    fn new([k0, k1]: [u64; 2], wide: bool) -> Sip13 {
        let v1 = k1 ^ 0x646f_7261_6e64_6f6d;
        Sip13 {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                if wide { v1 ^ 0xee } else { v1 },
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.v;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.v[0] ^= m;
    }

    fn write(&mut self, bytes: &[u8]) {
        self.len += bytes.len() as u64;
        for &b in bytes {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
            if self.ntail == 8 {
                let m = self.tail;
                self.compress(m);
                (self.tail, self.ntail) = (0, 0);
            }
        }
    }

    fn last_block(&mut self, wide: bool) {
        let b = (self.len & 0xff) << 56 | self.tail;
        self.compress(b);
        self.v[2] ^= if wide { 0xee } else { 0xff };
        for _ in 0..3 {
            self.round();
        }
    }

    fn fold(&self) -> u64 {
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }

    #[cfg(test)]
    fn finish64(mut self) -> u64 {
        self.last_block(false);
        self.fold()
    }

    fn finish128(mut self) -> (u64, u64) {
        self.last_block(true);
        let first = self.fold();
        self.v[1] ^= 0xdd;
        for _ in 0..3 {
            self.round();
        }
        (first, self.fold())
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

    /// Stores `state` for `key` until `expires_at`, protected from eviction until
    /// `protected_until`; returns true if another key was evicted.
    pub fn put(&mut self, key: KeyHash, state: [u64; 3], now_ms: u64, expires_at: u64, protected_until: u64) -> bool {
        let bucket = self.bucket(key);
        let entry = Slot { h1: key.0, h2: key.1, state, touched: now_ms.max(1), expires_at, protected_until };
        if let Some(slot) = bucket.iter_mut().find(|s| s.touched != 0 && s.h1 == key.0 && s.h2 == key.1) {
            *slot = entry;
            return false;
        }
        // An empty or expired slot first; otherwise evict the least recently used idle slot,
        // or, when every slot is protected, the least recently used.
        let free = bucket.iter().position(|s| s.touched == 0 || (s.expires_at != 0 && s.expires_at <= now_ms));
        let (index, evicted) = match free {
            Some(i) => (i, false),
            None => {
                let lru =
                    (0..WAYS).min_by_key(|&i| (bucket[i].protected_until > now_ms, bucket[i].touched)).unwrap_or(0);
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

    #[test]
    fn the_zone_layout_word_changes_with_every_size() {
        assert_ne!(zone_layout(40), zone_layout(48), "the header size is part of it");
        assert_eq!(zone_layout(40) >> 32, LAYOUT_VERSION);
        assert_eq!((zone_layout(40) >> 16) & 0xffff, core::mem::size_of::<Slot>() as u64);
        assert_eq!((zone_layout(40) >> 8) & 0xff, WAYS as u64);
    }

    const SECRET: HashKey = HashKey([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210]);

    fn key(i: u64) -> KeyHash {
        SECRET.hash(&[b"zone", &i.to_le_bytes()])
    }

    #[test]
    fn put_get_overwrite_remove() {
        let mut mem = vec![Slot::default(); 64];
        let mut t = Table::new(&mut mem).unwrap();
        assert_eq!(t.get(key(1), 10), None);
        assert!(!t.put(key(1), [1, 2, 3], 10, 0, 0));
        assert_eq!(t.get(key(1), 11), Some([1, 2, 3]));
        t.put(key(1), [4, 5, 6], 12, 0, 0);
        assert_eq!(t.get(key(1), 13), Some([4, 5, 6]));
        assert_eq!(t.len(13), 1);
        t.remove(key(1));
        assert_eq!(t.get(key(1), 14), None);
    }

    #[test]
    fn entries_expire() {
        let mut mem = vec![Slot::default(); 8];
        let mut t = Table::new(&mut mem).unwrap();
        t.put(key(1), [7, 0, 0], 100, 200, 0);
        assert_eq!(t.get(key(1), 199), Some([7, 0, 0]));
        assert_eq!(t.get(key(1), 200), None);
    }

    #[test]
    fn full_bucket_evicts_least_recently_used() {
        let mut mem = vec![Slot::default(); WAYS]; // a single bucket
        let mut t = Table::new(&mut mem).unwrap();
        for i in 0..WAYS as u64 {
            assert!(!t.put(key(i), [i, 0, 0], 10 + i, 0, 0));
        }
        // Touch key 0 so key 1 becomes the least recently used.
        assert!(t.get(key(0), 100).is_some());
        assert!(t.put(key(99), [99, 0, 0], 101, 0, 0), "a full bucket evicts");
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
            t.put(key(i), [i, 0, 0], i + 1, 0, 0);
        }
        assert_eq!(t.len(200_000), t.capacity());
        // The most recent keys are all present.
        for i in 99_990..100_000u64 {
            assert_eq!(t.get(key(i), 200_001).map(|s| s[0]), Some(i));
        }
    }

    #[test]
    fn hash_separates_parts_depends_on_the_secret_and_is_never_zero() {
        assert_ne!(SECRET.hash(&[b"ab", b"c"]), SECRET.hash(&[b"a", b"bc"]));
        assert_ne!(SECRET.hash(&[b""]).0, 0);
        assert_ne!(SECRET.hash(&[b"10.0.0.1"]), HashKey([1, 2]).hash(&[b"10.0.0.1"]), "another zone, other buckets");
        assert!(Table::new(&mut [Slot::default(); 3]).is_none());
    }

    #[test]
    fn siphash13_matches_the_std_implementation() {
        // std's DefaultHasher is SipHash-1-3 with a zero key (an implementation detail of
        // today's std, good enough as a cross-check of the rounds and the padding).
        use std::hash::Hasher;
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 63] {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut std_hasher = std::collections::hash_map::DefaultHasher::new();
            std_hasher.write(&data);
            let mut ours = Sip13::new([0, 0], false);
            ours.write(&data[..len / 2]);
            ours.write(&data[len / 2..]);
            assert_eq!(ours.finish64(), std_hasher.finish(), "{len} bytes, written in two parts");
        }
    }

    #[test]
    fn a_flood_of_fresh_keys_does_not_evict_a_limited_or_banned_key() {
        let mut mem = vec![Slot::default(); WAYS]; // a single bucket: every key collides
        let mut t = Table::new(&mut mem).unwrap();
        let (limited, banned) = (SECRET.hash(&[b"victim"]), SECRET.hash(&[b"\0ban", b"attacker"]));
        t.put(limited, [1, 0, 0], 10, 0, 50_000);
        t.put(banned, [2, 0, 0], 11, 0, 90_000);
        for i in 0..10_000u64 {
            t.put(key(i), [0, 0, 0], 100 + i, 0, 0);
        }
        assert_eq!(t.get(limited, 10_100).map(|s| s[0]), Some(1), "the limited key stays");
        assert_eq!(t.get(banned, 10_100).map(|s| s[0]), Some(2), "the banned key stays");
        // Its protection over, the limited key is idle: once the flood keys are gone, it goes
        // before the protected ones.
        for i in 0..WAYS as u64 - 1 {
            t.put(key(50_000 + i), [0, 0, 0], 60_000 + i, 0, 100_000);
        }
        assert_eq!(t.get(limited, 60_100), None, "protection ended, so it was evicted first");
        assert_eq!(t.get(banned, 60_100).map(|s| s[0]), Some(2));
        // Once every slot is protected, the least recently used goes, as before.
        t.put(key(70_000), [0, 0, 0], 70_000, 0, 100_000);
        assert_eq!(t.len(70_001), WAYS, "bounded");
    }
}
