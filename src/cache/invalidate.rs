//! Invalidation by an unsafe request (RFC 9111 §4.4): a non-error response to POST, PUT,
//! DELETE or PATCH invalidates its target URI and the URIs in its `Location` and
//! `Content-Location` fields, but only those of the same origin (scheme, host and port) as
//! the request — another origin's entries are not its to drop.
//!
//! The glue stores entries under the evaluated `shield_cache_key`; a target URI gets its key
//! by replacing the request's URI inside the request's key ([`key_for`]), which works for any
//! key built around `$request_uri` (the default `$scheme$host$request_uri` is).

/// At most this many URIs are invalidated besides the request's own.
pub const MAX_TARGETS: usize = 4;

/// The request-targets (path and query) of `values` (the `Location` and `Content-Location`
/// values) that share the request's origin: `scheme` (`http`/`https`), `authority` (its `Host`,
/// with any port) and `path` (the request's URI, for relative references).
pub fn targets<'a>(
    scheme: &str,
    authority: &[u8],
    path: &[u8],
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for v in values {
        if out.len() == MAX_TARGETS {
            break;
        }
        if let Some(t) = target(scheme, authority, path, v) {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

fn target(scheme: &str, authority: &[u8], base: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    let value = trim(value);
    if value.is_empty() || value.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return None;
    }
    // The fragment is the client's, never part of a request.
    let value = &value[..value.iter().position(|&b| b == b'#').unwrap_or(value.len())];
    let rest = match scheme_of(value) {
        Some(s) => {
            if !s.eq_ignore_ascii_case(scheme.as_bytes()) {
                return None;
            }
            value[s.len() + 1..].strip_prefix(b"//")?
        }
        None => match value.strip_prefix(b"//") {
            Some(rest) => rest,
            None => return Some(remove_dots(&resolve(base, value))),
        },
    };
    let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
    if !same_authority(scheme, &rest[..end], authority) {
        return None;
    }
    let path = &rest[end..];
    let path = if path.first() == Some(&b'/') { path.to_vec() } else { [b"/", path].concat() };
    Some(remove_dots(&path))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    &v[start..end]
}

/// The scheme of an absolute URI (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn scheme_of(v: &[u8]) -> Option<&[u8]> {
    let colon = v.iter().position(|&b| b == b':')?;
    let s = &v[..colon];
    let valid = s.first().is_some_and(u8::is_ascii_alphabetic)
        && s.iter().all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    valid.then_some(s)
}

/// Host and port compared as the origin does: case-insensitive, the scheme's default port
/// implied. Userinfo never matches (it is no part of the request's `Host`).
fn same_authority(scheme: &str, a: &[u8], b: &[u8]) -> bool {
    if a.contains(&b'@') || b.contains(&b'@') {
        return false;
    }
    let default = if scheme.eq_ignore_ascii_case("https") { &b":443"[..] } else { &b":80"[..] };
    let norm = |x: &[u8]| x.strip_suffix(default).unwrap_or(x).to_ascii_lowercase();
    !a.is_empty() && norm(a) == norm(b)
}

/// A relative reference against the request's path (RFC 3986 §5.2.2, the parts that matter
/// for a request-target).
fn resolve(base: &[u8], rel: &[u8]) -> Vec<u8> {
    let base = &base[..base.iter().position(|&b| b == b'?').unwrap_or(base.len())];
    if rel.first() == Some(&b'/') {
        return rel.to_vec();
    }
    if rel.first() == Some(&b'?') {
        return [base, rel].concat();
    }
    let dir = base.iter().rposition(|&b| b == b'/').map_or(&b"/"[..], |i| &base[..=i]);
    [dir, rel].concat()
}

/// RFC 3986 §5.2.4 on the path part; the query is kept as it is.
fn remove_dots(target: &[u8]) -> Vec<u8> {
    let q = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
    let (path, query) = target.split_at(q);
    let mut segments: Vec<&[u8]> = Vec::new();
    let parts: Vec<&[u8]> = path.split(|&b| b == b'/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            b"." => trailing = i == last,
            b".." => {
                segments.pop();
                trailing = i == last;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = Vec::with_capacity(target.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    out
}

/// The key of `target` for a location whose key, for the request `request_uri`, is `key`:
/// the last occurrence of the request's URI in its key replaced by `target`. `None` when the
/// key does not contain it (a key not built on `$request_uri`).
pub fn key_for(key: &[u8], request_uri: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    if request_uri.is_empty() || request_uri.len() > key.len() {
        return None;
    }
    let at = (0..=key.len() - request_uri.len()).rev().find(|&i| &key[i..i + request_uri.len()] == request_uri)?;
    Some([&key[..at], target, &key[at + request_uri.len()..]].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[&str]) -> Vec<String> {
        targets("http", b"Example.com", b"/a/b?x=1", values.iter().map(|v| v.as_bytes()))
            .into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect()
    }

    #[test]
    fn same_origin_uris_are_targets() {
        assert_eq!(t(&["/b"]), ["/b"]);
        assert_eq!(t(&["http://example.com/c?q=1#frag"]), ["/c?q=1"]);
        assert_eq!(t(&["HTTP://EXAMPLE.COM:80"]), ["/"]);
        assert_eq!(t(&["//example.com/d"]), ["/d"]);
        assert_eq!(t(&["c"]), ["/a/c"], "relative to the request's directory");
        assert_eq!(t(&["../e/./f"]), ["/e/f"]);
        assert_eq!(t(&["?y=2"]), ["/a/b?y=2"]);
        assert_eq!(t(&["/b", "/b"]), ["/b"], "once");
    }

    #[test]
    fn other_origins_and_junk_are_not() {
        assert!(t(&["http://other.example/b"]).is_empty());
        assert!(t(&["https://example.com/b"]).is_empty(), "another scheme is another origin");
        assert!(t(&["http://example.com:8080/b"]).is_empty(), "another port");
        assert!(t(&["http://user@example.com/b"]).is_empty());
        assert!(t(&["mailto:x@example.com", "", "/a b", "http:/b"]).is_empty());
        let https = targets("https", b"example.com:443", b"/", [&b"https://example.com/x"[..]]);
        assert_eq!(https, [b"/x".to_vec()]);
    }

    #[test]
    fn targets_are_bounded() {
        let many: Vec<String> = (0..10).map(|i| format!("/p{i}")).collect();
        assert_eq!(t(&many.iter().map(String::as_str).collect::<Vec<_>>()).len(), MAX_TARGETS);
    }

    #[test]
    fn keys_replace_the_request_uri() {
        assert_eq!(key_for(b"httpexample.com/a", b"/a", b"/b").as_deref(), Some(&b"httpexample.com/b"[..]));
        assert_eq!(key_for(b"/a|/a|v", b"/a", b"/c").as_deref(), Some(&b"/a|/c|v"[..]), "the last occurrence");
        assert_eq!(key_for(b"static-key", b"/a", b"/b"), None);
        assert_eq!(key_for(b"x", b"", b"/b"), None);
    }
}
