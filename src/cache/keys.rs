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
    redis_name_of(zone, &hash(key))
}

/// The hex SHA-1 that names a key's entry: what a tag's set records.
pub fn hash(key: &[u8]) -> String {
    sha1_smol::Sha1::from(key).digest().to_string()
}

/// The entry name of a [`hash`].
pub fn redis_name_of(zone: &str, hash: &str) -> Vec<u8> {
    format!("shield:cache:{zone}:{hash}").into_bytes()
}

/// `shield:cache:<zone>:tag:<tag>`: the set of the entries (their [`hash`]es) carrying the
/// tag. One key per command, so nothing spans Redis Cluster slots.
pub fn redis_tag_name(zone: &str, tag: &[u8]) -> Vec<u8> {
    let mut name = format!("shield:cache:{zone}:tag:").into_bytes();
    name.extend_from_slice(tag);
    name
}

/// The zone's key of a tag's node (the local backend): no `shield_cache_key` starts with 0x02.
pub fn shm_tag_key(tag: &[u8]) -> Vec<u8> {
    variant(b"\x02tag", tag)
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
        assert_eq!(redis_name_of("api", &hash(b"k")), redis_name("api", b"k"));
        assert_eq!(redis_tag_name("api", b"t1"), b"shield:cache:api:tag:t1");
        assert_ne!(shm_tag_key(b"t"), variant(b"\x01lock", b"t"));
    }
}
