//! Cache tags, for purging every entry that carries one: the origin lists an entry's tags in a
//! response header (`Cache-Tag`, `Surrogate-Key`), a purge names the tags to drop. Both are
//! parsed here, with the bounds that keep the tag index finite.
//!
//! Tags are separated by commas and/or whitespace (`a, b c` is three tags); empty items are
//! skipped, duplicates kept once, case is significant. A tag is any bytes but separators and
//! control characters. A header breaking the bounds (too many tags, one too long) makes the
//! response unstorable: storing it with some of its tags dropped would let it escape a purge.

/// The directive's ranges: `max_tags=` 1..=[`MAX_TAGS`], `max_length=` 1..=[`MAX_TAG_LEN`].
pub const MAX_TAGS: usize = 128;
pub const MAX_TAG_LEN: usize = 1024;
pub const DEFAULT_MAX_TAGS: usize = 32;
pub const DEFAULT_MAX_TAG_LEN: usize = 128;
/// Entries one tag indexes (`shield_cache_zone ... max_tag_entries=`): default and range.
pub const DEFAULT_TAG_ENTRIES: usize = 10_000;
pub const MAX_TAG_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_tags: usize,
    pub max_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_tags: DEFAULT_MAX_TAGS, max_len: DEFAULT_MAX_TAG_LEN }
    }
}

/// Why a tag header was refused; the discriminant indexes the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagError {
    TooMany = 0,
    TooLong = 1,
}

impl TagError {
    /// The `reason` label of `shield_cache_tag_rejects_total`.
    pub fn reason(self) -> &'static str {
        match self {
            TagError::TooMany => "too_many",
            TagError::TooLong => "too_long",
        }
    }
}

fn separator(b: u8) -> bool {
    b == b',' || b == b' ' || b == b'\t'
}

/// The tags of every line of the header (`values`), in order of first appearance.
pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>, limits: Limits) -> Result<Vec<&'a [u8]>, TagError> {
    let mut tags: Vec<&[u8]> = Vec::new();
    for value in values {
        for tag in value.split(|&b| separator(b)) {
            // Control characters never belong to a tag (a header value has none anyway).
            let tag = trim_controls(tag);
            if tag.is_empty() || tags.contains(&tag) {
                continue;
            }
            if tag.len() > limits.max_len {
                return Err(TagError::TooLong);
            }
            if tags.len() == limits.max_tags {
                return Err(TagError::TooMany);
            }
            tags.push(tag);
        }
    }
    Ok(tags)
}

fn trim_controls(tag: &[u8]) -> &[u8] {
    let start = tag.iter().position(|&b| b > 0x20 && b != 0x7f).unwrap_or(tag.len());
    let end = tag.iter().rposition(|&b| b > 0x20 && b != 0x7f).map_or(start, |e| e + 1);
    &tag[start..end]
}

/// A shared-memory tag node's member list: per member its expiry (Unix seconds, `i64`) and its
/// key (`u16` length-prefixed), appended.
pub fn members(list: &[u8]) -> impl Iterator<Item = (&[u8], i64)> {
    let mut rest = list;
    core::iter::from_fn(move || {
        let expires = i64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let n = usize::from(u16::from_le_bytes(rest.get(8..10)?.try_into().ok()?));
        let m = rest.get(10..10 + n)?;
        rest = &rest[10 + n..];
        Some((m, expires))
    })
}

/// Appends a member (keys are at most `entry::MAX_KEY` bytes, well below 64 KB).
pub fn push_member(list: &mut Vec<u8>, key: &[u8], expires: i64) {
    let n = key.len().min(usize::from(u16::MAX));
    list.extend_from_slice(&expires.to_le_bytes());
    list.extend_from_slice(&(n as u16).to_le_bytes());
    list.extend_from_slice(&key[..n]);
}

/// The member list with `key` added (expiring at `expires`, or later if it was there with a
/// later expiry) and the members expired by `now` dropped; `None` when it would exceed `cap`
/// members (the caller does not store the entry: it would escape a purge of the tag).
pub fn add_member(list: &[u8], key: &[u8], expires: i64, now: i64, cap: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(list.len() + key.len() + 10);
    let (mut n, mut expires) = (0, expires);
    for (m, e) in members(list) {
        if m == key {
            expires = expires.max(e);
        } else if e > now {
            push_member(&mut out, m, e);
            n += 1;
        }
    }
    if n >= cap {
        return None;
    }
    push_member(&mut out, key, expires);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str], l: Limits) -> Result<Vec<String>, TagError> {
        parse(v.iter().map(|s| s.as_bytes()), l)
            .map(|t| t.into_iter().map(|t| String::from_utf8(t.to_vec()).unwrap()).collect())
    }

    #[test]
    fn commas_and_spaces_separate_and_duplicates_count_once() {
        let got = p(&["a, b  c,,d", "b e\t f", " "], Limits::default()).unwrap();
        assert_eq!(got, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(p(&["Product-1 product-1"], Limits::default()).unwrap(), ["Product-1", "product-1"]);
        assert!(p(&[], Limits::default()).unwrap().is_empty());
    }

    #[test]
    fn bounds_reject_rather_than_truncate() {
        let l = Limits { max_tags: 2, max_len: 3 };
        assert_eq!(p(&["a b"], l).unwrap(), ["a", "b"]);
        assert_eq!(p(&["a b a b"], l).unwrap(), ["a", "b"], "duplicates do not count");
        assert_eq!(p(&["a b", "c"], l), Err(TagError::TooMany));
        assert_eq!(p(&["abcd"], l), Err(TagError::TooLong));
        assert_eq!(p(&["abc"], l).unwrap(), ["abc"]);
        assert_eq!(TagError::TooMany.reason(), "too_many");
    }

    #[test]
    fn control_characters_never_belong_to_a_tag() {
        assert_eq!(p(&["\x01a\x7f b"], Limits::default()).unwrap(), ["a", "b"]);
    }

    #[test]
    fn member_lists_round_trip_and_tolerate_truncation() {
        let mut list = Vec::new();
        for (i, k) in [&b"k1"[..], b"", b"a longer key"].into_iter().enumerate() {
            push_member(&mut list, k, i as i64);
        }
        assert_eq!(members(&list).collect::<Vec<_>>(), [(&b"k1"[..], 0), (&b""[..], 1), (&b"a longer key"[..], 2)]);
        for n in 0..list.len() {
            assert!(members(&list[..n]).count() <= 3);
        }
    }

    #[test]
    fn adding_drops_expired_members_keeps_the_later_expiry_and_respects_the_cap() {
        let mut list = Vec::new();
        push_member(&mut list, b"old", 100);
        push_member(&mut list, b"live", 300);
        let added = add_member(&list, b"new", 400, 200, 2).unwrap();
        assert_eq!(members(&added).collect::<Vec<_>>(), [(&b"live"[..], 300), (&b"new"[..], 400)]);
        assert_eq!(add_member(&added, b"third", 400, 200, 2), None, "full: two live members");
        let again = add_member(&added, b"live", 250, 200, 2).unwrap();
        assert_eq!(
            members(&again).collect::<Vec<_>>(),
            [(&b"new"[..], 400), (&b"live"[..], 300)],
            "a member counts once"
        );
    }
}
