//! The storage seam and the local backend.
//!
//! [`acquire`] is the local twin of the Redis limit script: the same check-all-then-commit-all
//! over the same keys, with bans folded in, returning decisions in the same order (limits,
//! then bans). [`MemoryStore`] is an unbounded map for tests; [`LruStore`] is bounded and is
//! what a worker uses as the fallback table when Redis is unavailable.

use std::collections::HashMap;

use super::lru::Lru;
use super::penalty::{self, PenaltyBox, Recorded};
use super::{check, Decision, KeyedLimit, Outcome, State};

pub trait Store {
    /// The state of `key`, or `None` if absent or expired at `now` (µs).
    fn get(&mut self, key: &[u8], now: u64) -> Option<State>;
    /// Stores `state`; it may be forgotten after `expires_at` (µs).
    fn set(&mut self, key: &[u8], state: State, expires_at: u64);
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    expires_at: u64,
}

impl Entry {
    fn live(self, now: u64) -> Option<State> {
        (self.expires_at > now).then_some(self.state)
    }
}

/// A plain `HashMap` store for tests.
#[derive(Default)]
pub struct MemoryStore {
    map: HashMap<Box<[u8]>, Entry>,
}

impl MemoryStore {
    /// Keys not yet expired at `now`, for tests that check nothing was written.
    pub fn live_keys(&self, now: u64) -> usize {
        self.map.values().filter(|e| e.live(now).is_some()).count()
    }
}

impl Store for MemoryStore {
    fn get(&mut self, key: &[u8], now: u64) -> Option<State> {
        self.map.get(key).and_then(|e| e.live(now))
    }

    fn set(&mut self, key: &[u8], state: State, expires_at: u64) {
        self.map.insert(key.into(), Entry { state, expires_at });
    }
}

/// A store holding at most `capacity` keys: when full, the least recently used key is
/// forgotten (for a rate limit that means the client starts afresh, the same trade-off
/// nginx's `limit_req` makes when its zone is full).
pub struct LruStore {
    lru: Lru<Box<[u8]>, Entry>,
}

impl LruStore {
    pub fn new(capacity: usize) -> LruStore {
        LruStore { lru: Lru::new(capacity) }
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lru.is_empty()
    }
}

impl Store for LruStore {
    fn get(&mut self, key: &[u8], now: u64) -> Option<State> {
        let k: Box<[u8]> = key.into();
        let entry = *self.lru.get(&k)?;
        let state = entry.live(now);
        if state.is_none() {
            self.lru.remove(&k);
        }
        state
    }

    fn set(&mut self, key: &[u8], state: State, expires_at: u64) {
        self.lru.insert(key.into(), Entry { state, expires_at });
    }
}

/// Checks all `limits` and `bans` (ban keys, see [`super::keys::ban_key`]) of one request at
/// `now` and commits the limits only if none rejects. Returns one decision per limit, then
/// one per ban key (`Passed` when not banned); pick the answer with [`super::strictest`].
pub fn acquire<S: Store + ?Sized>(store: &mut S, now: u64, limits: &[KeyedLimit<'_>], bans: &[&[u8]]) -> Vec<Decision> {
    let mut decisions = Vec::with_capacity(limits.len() + bans.len());
    let mut updates = Vec::with_capacity(limits.len());
    for l in limits {
        let checked = check(&l.limit, store.get(l.key, now), now);
        decisions.push(checked.decision);
        updates.push(checked.update);
    }
    let mut banned = false;
    for key in bans {
        decisions.push(match penalty::banned_for(store.get(key, now), now) {
            Some(left) => {
                banned = true;
                Decision::banned(left)
            }
            None => Decision::from_micros(Outcome::Passed, 0, 0, 0, 0),
        });
    }
    if !banned && updates.iter().all(Option::is_some) {
        for (l, update) in limits.iter().zip(updates.into_iter().flatten()) {
            store.set(l.key, update.state, update.expires_at);
        }
    }
    decisions
}

/// Records one response whose status the penalty box counts, under its ban key.
pub fn record_ban<S: Store + ?Sized>(store: &mut S, ban_key: &[u8], pbox: &PenaltyBox, now: u64) -> Recorded {
    let (state, recorded) = pbox.record(store.get(ban_key, now), now);
    store.set(ban_key, state, penalty::expires_at(state));
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::keys::{ban_key, config_hash, limit_key};
    use crate::limit::{strictest, Algorithm, Limit};
    use crate::parse::rate;
    use core::time::Duration;

    const NOW: u64 = 1_700_000_000_000_000;

    #[test]
    fn rejection_by_one_limit_writes_nothing() {
        let a = Limit::new(Algorithm::Gcra, rate("100r/s").unwrap(), 100).nodelay();
        let b = Limit::new(Algorithm::SlidingWindow, rate("2r/m").unwrap(), 0);
        let (ka, kb) = (limit_key("a", b"k", config_hash("a", &a)), limit_key("b", b"k", config_hash("b", &b)));
        let limits = [KeyedLimit { key: &ka, limit: a }, KeyedLimit { key: &kb, limit: b }];
        let mut store = MemoryStore::default();
        for _ in 0..2 {
            let d = acquire(&mut store, NOW, &limits, &[]);
            assert_eq!(strictest(&d).map(|i| d[i].outcome), Some(Outcome::Passed));
        }
        let before = store.get(&ka, NOW);
        for _ in 0..50 {
            let d = acquire(&mut store, NOW, &limits, &[]);
            assert_eq!(d[1].outcome, Outcome::Rejected);
        }
        assert_eq!(store.get(&ka, NOW), before, "limit a untouched by b's rejections");
        assert_eq!(acquire(&mut store, NOW, &limits[..1], &[])[0].remaining, 98);
    }

    #[test]
    fn ban_rejects_without_consuming_and_expires() {
        let l = Limit::new(Algorithm::Gcra, rate("1r/s").unwrap(), 0);
        let key = limit_key("z", b"k", config_hash("z", &l));
        let bkey = ban_key("login", b"k");
        let pbox = PenaltyBox { statuses: vec![401], threshold: 2, window: Duration::from_secs(5), ban: Duration::from_secs(30) };
        let mut store = LruStore::new(16);
        record_ban(&mut store, &bkey, &pbox, NOW);
        assert_eq!(record_ban(&mut store, &bkey, &pbox, NOW), Recorded::Banned { left: Duration::from_secs(30) });
        let limits = [KeyedLimit { key: &key, limit: l }];
        let d = acquire(&mut store, NOW + 1_000_000, &limits, &[&bkey]);
        assert_eq!(d[1], Decision::banned(Duration::from_secs(29)));
        assert_eq!(store.get(&key, NOW), None, "banned request consumed nothing");
        let d = acquire(&mut store, NOW + 30_000_000, &limits, &[&bkey]);
        assert_eq!((d[0].outcome, d[1].outcome), (Outcome::Passed, Outcome::Passed));
    }

    #[test]
    fn lru_store_is_bounded_and_expires() {
        let mut s = LruStore::new(2);
        for k in 0..5u8 {
            s.set(&[k], State::Gcra { tat: 1 }, 100);
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(&[4], 99), Some(State::Gcra { tat: 1 }));
        assert_eq!(s.get(&[4], 100), None);
        assert_eq!(s.len(), 1);
    }
}
