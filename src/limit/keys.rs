//! Config hash and the storage key layout, shared by the Redis and local backends.
//!
//! ```text
//! shield:{<zone>:<key>}:l:<config hash, 16 hex>   limit state (GCRA TAT, or window counts)
//! shield:{<zone>:<key>}:b:<zone hash, 16 hex>     penalty box: ban marker (PX = ban left)
//! shield:{<zone>:<key>}:n:<zone hash, 16 hex>     penalty box: matching-response count
//! ```
//!
//! The `{...}` part is a Redis Cluster hash tag, so all keys of one zone and client key live
//! in one slot. The limit key carries the config hash, so a reload that changes a zone's
//! algorithm or rate starts from fresh state instead of misreading the old one; ban keys
//! carry only the zone name's hash, so a reload keeps bans in force. Every suffix has the same
//! length, so two different (zone, key, kind) triples can never produce the same bytes.

use super::{Algorithm, Limit};

pub const PREFIX: &[u8] = b"shield:{";

/// 64-bit FNV-1a: stable across builds and hosts (unlike `std`'s `DefaultHasher`), which
/// matters because the hash names Redis keys that all nginx nodes share.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn write(mut self, bytes: &[u8]) -> Fnv1a {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// Length-prefixed, so ("ab","c") and ("a","bc") hash differently.
    pub fn field(self, bytes: &[u8]) -> Fnv1a {
        self.write(&(bytes.len() as u64).to_le_bytes()).write(bytes)
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Hash of what a limit's stored state means: zone name, algorithm, rate and burst.
pub fn config_hash(zone: &str, limit: &Limit) -> u64 {
    let algorithm: &[u8] = match limit.algorithm {
        Algorithm::Gcra => b"gcra",
        Algorithm::SlidingWindow => b"sliding",
    };
    Fnv1a::default()
        .field(zone.as_bytes())
        .field(algorithm)
        .field(&limit.rate.requests.to_le_bytes())
        .field(&(limit.rate.period.as_micros() as u64).to_le_bytes())
        .field(&limit.burst.to_le_bytes())
        .finish()
}

fn zone_hash(zone: &str) -> u64 {
    Fnv1a::default().field(zone.as_bytes()).finish()
}

fn build(zone: &str, key: &[u8], kind: u8, hash: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + zone.len() + key.len() + 22);
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(zone.as_bytes());
    out.push(b':');
    out.extend_from_slice(key);
    out.extend_from_slice(&[b'}', b':', kind, b':']);
    out.extend_from_slice(format!("{hash:016x}").as_bytes());
    out
}

/// Key of one limit's state for one client key.
pub fn limit_key(zone: &str, key: &[u8], config_hash: u64) -> Vec<u8> {
    build(zone, key, b'l', config_hash)
}

/// Penalty box: the key whose presence (with its TTL) is the ban.
pub fn ban_key(zone: &str, key: &[u8]) -> Vec<u8> {
    build(zone, key, b'b', zone_hash(zone))
}

/// Penalty box: the count of matching responses in the current window.
pub fn ban_count_key(zone: &str, key: &[u8]) -> Vec<u8> {
    build(zone, key, b'n', zone_hash(zone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::rate;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(Fnv1a::default().finish(), 0xcbf29ce484222325);
        assert_eq!(Fnv1a::default().write(b"a").finish(), 0xaf63dc4c8601ec8c);
        assert_eq!(Fnv1a::default().write(b"foobar").finish(), 0x85944171f73967e8);
    }

    #[test]
    fn config_hash_changes_with_what_the_state_means() {
        let l = Limit::new(Algorithm::Gcra, rate("10r/s").unwrap(), 5);
        let h = config_hash("api", &l);
        assert_eq!(h, config_hash("api", &l.nodelay().with_cost(2)), "delay and cost don't change state");
        assert_ne!(h, config_hash("api2", &l));
        assert_ne!(h, config_hash("api", &Limit { burst: 6, ..l }));
        assert_ne!(h, config_hash("api", &Limit { rate: rate("10r/m").unwrap(), ..l }));
        assert_ne!(h, config_hash("api", &Limit { algorithm: Algorithm::SlidingWindow, ..l }));
    }

    #[test]
    fn keys_carry_hash_tag_and_fixed_suffix() {
        let k = limit_key("api", b"1.2.3.4", 0xab);
        assert_eq!(k, b"shield:{api:1.2.3.4}:l:00000000000000ab");
        let b = ban_key("login", b"\x7f\x00\x00\x01");
        assert!(b.starts_with(b"shield:{login:\x7f\x00\x00\x01}:b:"));
        assert_eq!(b.len(), ban_count_key("login", b"\x7f\x00\x00\x01").len());
    }
}
