//! Key naming: the logical cache key of a variant, and the name an entry gets in Redis.

/// A variant's logical key: the primary key and the secondary key (see `vary::secondary`),
/// separated by a NUL, which no evaluated `shield_cache_key` of a request line contains.
pub fn variant(primary: &[u8], secondary: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(primary.len() + 1 + secondary.len());
    k.extend_from_slice(primary);
    k.push(0);
    k.extend_from_slice(secondary);
    k
}

/// `shield:cache:<zone>:<sha1 of the key, hex>`: bounded whatever the key's length, the same
/// on every node. The entry itself records the whole key, so a collision is a miss.
pub fn redis_name(zone: &str, key: &[u8]) -> Vec<u8> {
    let mut name = format!("shield:cache:{zone}:").into_bytes();
    name.extend_from_slice(sha1_smol::Sha1::from(key).digest().to_string().as_bytes());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_bounded_and_distinct() {
        assert_eq!(redis_name("api", b"k"), redis_name("api", b"k"));
        assert_ne!(redis_name("api", b"k"), redis_name("web", b"k"));
        assert_ne!(redis_name("api", b"k"), redis_name("api", &variant(b"k", b"")));
        assert_eq!(redis_name("api", &[b'x'; 10_000]).len(), "shield:cache:api:".len() + 40);
        assert_eq!(variant(b"a", b"b"), b"a\0b");
    }
}
