//! The stored entry's binary format, the same in shared memory and in Redis, so nodes of any
//! backend read each other's entries.
//!
//! ```text
//! "SHC" 1 | kind u8 | key_len u16 | key
//! kind 1 (response): status u16 | stored_at i64 | lifetime u32 | initial_age u32
//!                    | stale_while_revalidate u32 | stale_if_error u32 | flags u8
//!                    | n_headers u16 | n x (name_len u16 | name | value_len u16 | value)
//!                    | body_len u32 | body
//! kind 2 (variants): n_names u8 | n x (name_len u8 | lower-case name)
//! ```
//! Integers are little-endian. Decoding is total and bounded: every length is checked against
//! what is left and against the limits below, names must be header tokens and values free of
//! CR, LF and NUL (a hostile entry must not split a response), and nothing may follow the last
//! field. Anything else is `None`: the caller treats it as a miss.

use super::policy::{Freshness, Source, Stored};

const MAGIC: [u8; 4] = *b"SHC\x01";
const KIND_RESPONSE: u8 = 1;
const KIND_VARIANTS: u8 = 2;

pub const MAX_KEY: usize = 4096;
pub const MAX_HEADERS: usize = 128;
pub const MAX_NAME: usize = 256;
pub const MAX_VALUE: usize = 16 * 1024;
pub const MAX_VARY_NAMES: usize = 16;

/// A decoded response entry, borrowing the bytes it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseEntry<'a> {
    pub key: &'a [u8],
    pub status: u16,
    pub stored: Stored,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    Response(ResponseEntry<'a>),
    /// What the primary key holds for a response with `Vary`: the request headers that select
    /// a variant, each variant being stored under [`super::keys::variant`].
    Variants {
        key: &'a [u8],
        names: Vec<&'a [u8]>,
    },
}

pub fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub fn is_field_value(value: &[u8]) -> bool {
    !value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

/// A response entry being built: the head when the response's headers are known, the body as
/// it passes, at most `limit` bytes in all.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
    body_len_at: usize,
    limit: usize,
}

impl Builder {
    /// `None` when the head alone (key, headers) breaks the format's limits or `limit`.
    pub fn new<'h>(
        key: &[u8],
        status: u16,
        stored: &Stored,
        headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
        limit: usize,
    ) -> Option<Builder> {
        if key.len() > MAX_KEY {
            return None;
        }
        let mut buf = Vec::with_capacity(256);
        head(&mut buf, KIND_RESPONSE, key);
        buf.extend_from_slice(&status.to_le_bytes());
        let f = &stored.freshness;
        buf.extend_from_slice(&stored.stored_at.to_le_bytes());
        for v in [f.lifetime, f.initial_age, f.stale_while_revalidate, f.stale_if_error] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.push(u8::from(f.must_revalidate));
        let count_at = buf.len();
        buf.extend_from_slice(&[0, 0]);
        let mut n = 0u16;
        for (name, value) in headers {
            if usize::from(n) == MAX_HEADERS || name.len() > MAX_NAME || value.len() > MAX_VALUE {
                return None;
            }
            if !is_token(name) || !is_field_value(value) {
                return None;
            }
            buf.extend_from_slice(&(name.len() as u16).to_le_bytes());
            buf.extend_from_slice(name);
            buf.extend_from_slice(&(value.len() as u16).to_le_bytes());
            buf.extend_from_slice(value);
            n += 1;
        }
        buf[count_at..count_at + 2].copy_from_slice(&n.to_le_bytes());
        let body_len_at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        (buf.len() <= limit).then_some(Builder { buf, body_len_at, limit })
    }

    /// Appends body bytes; false (and the builder is spent) once the entry would exceed its
    /// limit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.buf.len() + bytes.len() > self.limit {
            self.buf = Vec::new();
            self.limit = 0;
            return false;
        }
        self.buf.extend_from_slice(bytes);
        true
    }

    pub fn finish(mut self) -> Vec<u8> {
        let body_len = (self.buf.len() - self.body_len_at - 4) as u32;
        self.buf[self.body_len_at..self.body_len_at + 4].copy_from_slice(&body_len.to_le_bytes());
        self.buf
    }
}

fn head(buf: &mut Vec<u8>, kind: u8, key: &[u8]) {
    buf.extend_from_slice(&MAGIC);
    buf.push(kind);
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
}

/// The variants marker for `key`; `names` lower-case tokens (see `vary::names`).
pub fn variants(key: &[u8], names: &[String]) -> Option<Vec<u8>> {
    if key.len() > MAX_KEY || names.len() > MAX_VARY_NAMES || names.iter().any(|n| n.len() > 255) {
        return None;
    }
    let mut buf = Vec::new();
    head(&mut buf, KIND_VARIANTS, key);
    buf.push(names.len() as u8);
    for n in names {
        buf.push(n.len() as u8);
        buf.extend_from_slice(n.as_bytes());
    }
    Some(buf)
}

/// Soft purge: the entry made stale in place (its lifetime set to 0), everything else kept, so
/// the next request revalidates it (or, the origin failing, may be served it stale) but is
/// never served it as fresh. False for anything but a response entry (a `Vary` marker has no
/// freshness of its own: the caller drops it). Redis does the same in `SOFT_PURGE_SCRIPT`.
pub fn mark_stale(bytes: &mut [u8]) -> bool {
    let Some(at) = lifetime_offset(bytes) else { return false };
    bytes[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    true
}

/// Where a response entry's lifetime is: after magic, kind, key length, key, status and
/// `stored_at`.
fn lifetime_offset(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 7 || bytes[..4] != MAGIC || bytes[4] != KIND_RESPONSE {
        return None;
    }
    let at = 7 + usize::from(u16::from_le_bytes([bytes[5], bytes[6]])) + 2 + 8;
    (bytes.len() >= at + 4).then_some(at)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Decodes an entry; `max_body` bounds the body. `None` for anything malformed.
pub fn decode(bytes: &[u8], max_body: usize) -> Option<Entry<'_>> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC {
        return None;
    }
    let kind = r.u8()?;
    let key_len = usize::from(r.u16()?);
    if key_len > MAX_KEY {
        return None;
    }
    let key = r.take(key_len)?;
    let entry = match kind {
        KIND_RESPONSE => {
            let status = r.u16()?;
            if !(200..=599).contains(&status) {
                return None;
            }
            let stored_at = r.i64()?;
            let (lifetime, initial_age, swr, sie) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
            let flags = r.u8()?;
            if flags > 1 {
                return None;
            }
            let n = usize::from(r.u16()?);
            if n > MAX_HEADERS {
                return None;
            }
            let mut headers = Vec::with_capacity(n);
            for _ in 0..n {
                let name_len = usize::from(r.u16()?);
                let name = r.take(name_len).filter(|n| n.len() <= MAX_NAME && is_token(n))?;
                let value_len = usize::from(r.u16()?);
                let value = r.take(value_len).filter(|v| v.len() <= MAX_VALUE && is_field_value(v))?;
                headers.push((name, value));
            }
            let body_len = r.u32()? as usize;
            if body_len > max_body {
                return None;
            }
            let body = r.take(body_len)?;
            let freshness = Freshness {
                lifetime,
                initial_age,
                stale_while_revalidate: swr,
                stale_if_error: sie,
                must_revalidate: flags == 1,
                // Not recorded: only storing needs to know it.
                source: Source::Configured,
            };
            Entry::Response(ResponseEntry { key, status, stored: Stored { stored_at, freshness }, headers, body })
        }
        KIND_VARIANTS => {
            let n = usize::from(r.u8()?);
            if n > MAX_VARY_NAMES {
                return None;
            }
            let mut names = Vec::with_capacity(n);
            for _ in 0..n {
                let len = usize::from(r.u8()?);
                names.push(r.take(len).filter(|n| is_token(n) && !n.iter().any(u8::is_ascii_uppercase))?);
            }
            Entry::Variants { key, names }
        }
        _ => return None,
    };
    r.0.is_empty().then_some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> Stored {
        Stored {
            stored_at: 1_700_000_000,
            freshness: Freshness {
                lifetime: 60,
                initial_age: 3,
                stale_while_revalidate: 7,
                stale_if_error: 9,
                must_revalidate: true,
                source: Source::Configured,
            },
        }
    }

    fn sample() -> Vec<u8> {
        let headers: [(&[u8], &[u8]); 2] = [(b"Content-Type", b"text/plain"), (b"ETag", b"\"v1\"")];
        let mut b = Builder::new(b"httplocalhost/a", 200, &stored(), headers.into_iter(), 1024).unwrap();
        assert!(b.push(b"hello ") && b.push(b"world"));
        b.finish()
    }

    #[test]
    fn response_round_trip() {
        let bytes = sample();
        let Some(Entry::Response(e)) = decode(&bytes, 1024) else { panic!("not a response") };
        assert_eq!((e.key, e.status, e.body), (&b"httplocalhost/a"[..], 200, &b"hello world"[..]));
        assert_eq!(e.stored, stored());
        assert_eq!(e.headers, vec![(&b"Content-Type"[..], &b"text/plain"[..]), (&b"ETag"[..], &b"\"v1\""[..])]);
        assert!(decode(&bytes, 10).is_none(), "body above the reader's bound");
    }

    #[test]
    fn variants_round_trip() {
        let bytes = variants(b"k", &["accept-encoding".into(), "x-lang".into()]).unwrap();
        assert_eq!(decode(&bytes, 0), Some(Entry::Variants { key: b"k", names: vec![b"accept-encoding", b"x-lang"] }));
        assert!(variants(b"k", &vec!["a".to_string(); MAX_VARY_NAMES + 1]).is_none());
    }

    #[test]
    fn builder_enforces_its_limit_and_the_header_rules() {
        let none = core::iter::empty();
        let mut b = Builder::new(b"k", 200, &stored(), none, 60).unwrap();
        assert!(b.push(&[0; 10]));
        assert!(!b.push(&[0; 100]), "over the limit");
        let split: [(&[u8], &[u8]); 1] = [(b"X", b"a\r\nSet-Cookie: x")];
        assert!(Builder::new(b"k", 200, &stored(), split.into_iter(), 1024).is_none());
        let bad_name: [(&[u8], &[u8]); 1] = [(b"X Y", b"a")];
        assert!(Builder::new(b"k", 200, &stored(), bad_name.into_iter(), 1024).is_none());
    }

    #[test]
    fn mark_stale_zeroes_the_lifetime_and_nothing_else() {
        let mut bytes = sample();
        assert!(mark_stale(&mut bytes));
        let Some(Entry::Response(e)) = decode(&bytes, 1024) else { panic!("not a response") };
        assert_eq!(e.stored.freshness.lifetime, 0);
        assert_eq!(
            (e.stored.stored_at, e.stored.freshness.stale_if_error, e.body),
            (1_700_000_000, 9, &b"hello world"[..])
        );
        let now = e.stored.stored_at;
        assert!(matches!(e.stored.reuse(now, &Default::default()), crate::cache::policy::Reuse::Stale { .. }));
        let mut marker = variants(b"k", &["x-lang".into()]).unwrap();
        assert!(!mark_stale(&mut marker), "a Vary marker is no response");
        for n in 0..sample().len() {
            let mut cut = sample()[..n].to_vec();
            let _ = mark_stale(&mut cut); // never out of bounds
        }
    }

    #[test]
    fn every_truncation_and_any_extra_byte_is_rejected() {
        let bytes = sample();
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], 1024).is_none(), "truncated at {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode(&long, 1024).is_none());
    }

    #[test]
    fn corrupted_bytes_never_panic_and_never_inject_headers() {
        let bytes = sample();
        // Every single-byte change: decodes to something well-formed, or to nothing.
        for i in 0..bytes.len() {
            for v in [0u8, 1, 0x0a, 0x0d, 0x7f, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                if let Some(Entry::Response(e)) = decode(&b, 1024) {
                    assert!(e.headers.iter().all(|(n, v)| is_token(n) && is_field_value(v)));
                }
            }
        }
        // Pseudo-random garbage behind a valid magic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let mut b = MAGIC.to_vec();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            let _ = decode(&b, 1 << 20);
        }
    }
}
