//! Revalidating a stale entry (RFC 9111 §4.3): the validators a conditional request carries,
//! and the stored headers updated by a 304's (§3.2, §4.3.4).

/// The header fields a 304 may not change in the stored response: its body's own description.
const KEPT: [&[u8]; 3] = [b"content-type", b"content-length", b"content-encoding"];

pub type Fields<'a> = [(&'a [u8], &'a [u8])];

/// All values of `name` (case-insensitive).
pub fn values<'a>(fields: &Fields<'a>, name: &[u8]) -> Vec<&'a [u8]> {
    fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|&(_, v)| v).collect()
}

/// The stored response's `ETag` and `Last-Modified`, to send as `If-None-Match` and
/// `If-Modified-Since`.
pub fn validators<'a>(fields: &Fields<'a>) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    (values(fields, b"etag").first().copied(), values(fields, b"last-modified").first().copied())
}

/// The stored fields updated with a 304's: every field the 304 carries replaces the stored
/// ones of that name (all of them), except those describing the stored body.
pub fn merge<'a>(stored: &Fields<'a>, fresh: &Fields<'a>) -> Vec<(&'a [u8], &'a [u8])> {
    let updates = |name: &[u8]| {
        !KEPT.iter().any(|k| name.eq_ignore_ascii_case(k)) && fresh.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let mut merged: Vec<_> = stored.iter().filter(|(n, _)| !updates(n)).copied().collect();
    merged.extend(fresh.iter().filter(|(n, _)| updates(n)).copied());
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validators_of_the_stored_response() {
        let f: [(&[u8], &[u8]); 2] = [(b"ETag", b"\"v1\""), (b"Last-Modified", b"Mon, 01 Jan 2024 00:00:00 GMT")];
        assert_eq!(validators(&f), (Some(&b"\"v1\""[..]), Some(&b"Mon, 01 Jan 2024 00:00:00 GMT"[..])));
        assert_eq!(validators(&[]), (None, None));
    }

    #[test]
    fn a_304_replaces_same_named_fields_but_not_the_bodys_description() {
        let stored: [(&[u8], &[u8]); 5] = [
            (b"Content-Type", b"text/plain"),
            (b"Cache-Control", b"max-age=1"),
            (b"X-A", b"1"),
            (b"X-A", b"2"),
            (b"ETag", b"\"v1\""),
        ];
        let fresh: [(&[u8], &[u8]); 3] =
            [(b"cache-control", b"max-age=60"), (b"x-a", b"3"), (b"Content-Type", b"text/html")];
        let merged = merge(&stored, &fresh);
        assert_eq!(values(&merged, b"cache-control"), vec![&b"max-age=60"[..]]);
        assert_eq!(values(&merged, b"x-a"), vec![&b"3"[..]], "all stored values of the name replaced");
        assert_eq!(values(&merged, b"content-type"), vec![&b"text/plain"[..]], "the body's type stays");
        assert_eq!(values(&merged, b"etag"), vec![&b"\"v1\""[..]], "untouched fields stay");
    }
}
