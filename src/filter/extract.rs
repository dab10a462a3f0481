//! Turning a request into the values the engine inspects: query arguments, cookies, and
//! bodies (urlencoded, JSON, multipart, XML: see `xml`). Parsers never panic, run in time linear in their
//! input, and hand each value to a [`Sink`] as they find it, borrowed from the input (only a
//! JSON string with escapes, a multipart name and a JSON key path are copied, and dropped
//! once inspected): every value is seen, and memory does not grow with the number of values.

use std::borrow::Cow;

use super::rules::target;

/// Where extracted values go: the engine's inspection, or a `Vec` in tests.
pub trait Sink<'a> {
    fn push(&mut self, item: Item<'a>);
}

impl<'a> Sink<'a> for Vec<Item<'a>> {
    fn push(&mut self, item: Item<'a>) {
        Vec::push(self, item);
    }
}

/// A JSON key is also inspected joined to its parent's (`constructor.prototype`), when both
/// together are at most this long.
const MAX_KEY_PATH: usize = 256;

/// One inspected value: where it came from, its name (arg/cookie/header/field name), and
/// its raw bytes (decoding happens in the rule pipelines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    pub target: u8,
    pub name: Cow<'a, [u8]>,
    pub value: Cow<'a, [u8]>,
}

impl<'a> Item<'a> {
    pub fn new(target: u8, name: impl Into<Cow<'a, [u8]>>, value: impl Into<Cow<'a, [u8]>>) -> Self {
        Item { target, name: name.into(), value: value.into() }
    }
}

/// `a=1&b=2` pairs, undecoded; a name without `=` has an empty value.
pub fn pairs(raw: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    raw.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &p[p.len()..]),
    })
}

/// Query arguments as names (`args_names`) and values (`args`).
pub fn query<'a>(raw: &'a [u8], out: &mut impl Sink<'a>) {
    for (name, value) in pairs(raw) {
        out.push(Item::new(target::ARG_NAMES, name, name));
        out.push(Item::new(target::ARG_VALUES, name, value));
    }
}

/// Request headers not inspected by default (`shield_filter_inspect_headers all`): set by
/// browsers and proxies to fixed grammars (content negotiation, caching, connection
/// management, fetch metadata, client hints), or credentials (`Authorization`: a token is not
/// application input, and should not land in an audit log). `Cookie` is inspected cookie by
/// cookie instead.
pub const NOISE_HEADERS: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "authorization",
    "cache-control",
    "connection",
    "content-length",
    "cookie",
    "dnt",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "keep-alive",
    "pragma",
    "priority",
    "proxy-authorization",
    "sec-gpc",
    "te",
    "upgrade-insecure-requests",
];

/// Whether a header is one of [`NOISE_HEADERS`] or fetch metadata / client hints
/// (`Sec-Fetch-*`, `Sec-CH-*`).
pub fn noise_header(name: &[u8]) -> bool {
    let prefixed = |p: &[u8]| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    prefixed(b"sec-fetch-")
        || prefixed(b"sec-ch-")
        || NOISE_HEADERS.iter().any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Whether `referer` is a page of the site `host` names (`Host`, port included as sent): its
/// authority (after `http(s)://` or `ftp(s)://`, up to `/ ? #`) is the host, or a subdomain of it.
pub fn same_site_referer(referer: &[u8], host: &[u8]) -> bool {
    let lower = referer.to_ascii_lowercase();
    let Some(rest) = [&b"http://"[..], b"https://", b"ftp://", b"ftps://"].iter().find_map(|s| lower.strip_prefix(*s))
    else {
        return false;
    };
    let end = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = host.trim_ascii().to_ascii_lowercase();
    !host.is_empty()
        && (authority == host.as_slice()
            || (authority.len() > host.len()
                && authority.ends_with(&host)
                && authority[authority.len() - host.len() - 1] == b'.'))
}

/// `Cookie: a=1; b=2`: each cookie's name (`cookies_names`) and value (`cookies`).
pub fn cookies<'a>(header: &'a [u8], out: &mut impl Sink<'a>) {
    for part in header.split(|&b| b == b';') {
        let part = part.trim_ascii();
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &part[part.len()..]),
        };
        out.push(Item::new(target::COOKIE_NAMES, name, name));
        out.push(Item::new(target::COOKIES, name, value));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    UrlEncoded,
    Json,
    Multipart,
    Xml,
    Other,
}

pub fn body_kind(content_type: &[u8]) -> BodyKind {
    let ct = content_type.to_ascii_lowercase();
    let mime = ct.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
    match mime {
        b"application/x-www-form-urlencoded" => BodyKind::UrlEncoded,
        b"multipart/form-data" => BodyKind::Multipart,
        m if m == b"application/json" || m.ends_with(b"+json") => BodyKind::Json,
        m if m == b"application/xml" || m == b"text/xml" || m.ends_with(b"+xml") => BodyKind::Xml,
        _ => BodyKind::Other,
    }
}

/// Body fields. A body that does not parse as its declared type is inspected as one raw value
/// (an attacker gains nothing by sending broken JSON).
pub fn body<'a>(content_type: &[u8], body: &'a [u8], out: &mut impl Sink<'a>) {
    match body_kind(content_type) {
        BodyKind::UrlEncoded => {
            for (name, value) in pairs(body) {
                out.push(Item::new(target::BODY_NAMES, name, name));
                out.push(Item::new(target::BODY_VALUES, name, value));
            }
        }
        // Validated first without building anything (serde's IgnoredAny), then streamed.
        BodyKind::Json if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => json(body, out),
        BodyKind::Multipart if multipart(content_type, body, &mut *out) => {}
        BodyKind::Xml if super::xml::xml(body, &mut *out) => {}
        _ => out.push(Item::new(target::BODY_VALUES, &b""[..], body)),
    }
}

/// A container being read: its name (the key it sits under, inherited by an array's values),
/// and for an object the key whose value comes next.
struct Frame<'a> {
    object: bool,
    expect_key: bool,
    name: Cow<'a, [u8]>,
    key: Cow<'a, [u8]>,
}

/// Every key (`body_names`, also joined to its parent's) and string value (`body`, named by
/// its key) of a valid JSON document, in one pass; numbers, booleans and null are skipped.
fn json<'a>(text: &'a [u8], out: &mut impl Sink<'a>) {
    let mut stack: Vec<Frame<'a>> = Vec::new();
    let current_name = |stack: &[Frame<'a>]| match stack.last() {
        Some(f) if f.object => f.key.clone(),
        Some(f) => f.name.clone(),
        None => Cow::Borrowed(&b""[..]),
    };
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'{' | b'[' => {
                let name = current_name(&stack);
                stack.push(Frame { object: text[i] == b'{', expect_key: true, name, key: Cow::Borrowed(&b""[..]) });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                if let Some(f) = stack.last_mut() {
                    f.expect_key = true;
                }
                i += 1;
            }
            b'"' => {
                let (value, end) = json_string(text, i + 1);
                i = end;
                match stack.last_mut() {
                    Some(f) if f.object && f.expect_key => {
                        out.push(Item::new(target::BODY_NAMES, value.clone(), value.clone()));
                        if !f.name.is_empty() && f.name.len() + value.len() < MAX_KEY_PATH {
                            let path = [&f.name[..], b".", &value[..]].concat();
                            out.push(Item::new(target::BODY_NAMES, path.clone(), path));
                        }
                        f.key = value;
                        f.expect_key = false;
                    }
                    _ => out.push(Item::new(target::BODY_VALUES, current_name(&stack), value)),
                }
            }
            _ => i += 1,
        }
    }
}

/// The string starting after the quote at `start`: its value (borrowed unless it has
/// escapes) and the index after its closing quote.
fn json_string(text: &[u8], start: usize) -> (Cow<'_, [u8]>, usize) {
    let mut i = start;
    let mut escaped = false;
    while i < text.len() && text[i] != b'"' {
        if text[i] == b'\\' {
            escaped = true;
            i += 1;
        }
        i += 1;
    }
    let end = i.min(text.len());
    let raw = &text[start..end];
    let value = if escaped { Cow::Owned(json_unescape(raw)) } else { Cow::Borrowed(raw) };
    (value, end + 1)
}

fn json_unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let hex4 = |at: usize| {
        raw.get(at..at + 4).and_then(|h| core::str::from_utf8(h).ok()).and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    while i < raw.len() {
        if raw[i] != b'\\' || i + 1 >= raw.len() {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let simple = match raw[i + 1] {
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            other => Some(other),
        };
        if let Some(b) = simple {
            out.push(b);
            i += 2;
            continue;
        }
        let Some(mut cp) = hex4(i + 2) else {
            out.push(b'?');
            i += 2;
            continue;
        };
        i += 6;
        if (0xD800..0xDC00).contains(&cp) && raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u') {
            if let Some(low @ 0xDC00..=0xDFFF) = hex4(i + 2) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                i += 6;
            }
        }
        let mut buf = [0u8; 4];
        out.extend_from_slice(char::from_u32(cp).unwrap_or('?').encode_utf8(&mut buf).as_bytes());
    }
    out
}

/// multipart/form-data: field names, file names, and the content of non-file parts.
fn multipart<'a>(content_type: &[u8], body: &'a [u8], out: &mut impl Sink<'a>) -> bool {
    let Some(boundary) = param(content_type, b"boundary") else { return false };
    if boundary.is_empty() || boundary.len() > 200 {
        return false;
    }
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(&boundary);
    let mut parts = 0;
    let mut rest = body;
    while let Some(start) = find(rest, &delimiter) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(head_end) = find(rest, b"\r\n\r\n") else { break };
        let head = &rest[..head_end];
        let content_start = head_end + 4;
        let content_end = find(&rest[content_start..], &delimiter).map_or(rest.len(), |e| content_start + e);
        let content =
            rest[content_start..content_end].strip_suffix(b"\r\n").unwrap_or(&rest[content_start..content_end]);
        let disposition = head
            .split(|&b| b == b'\n')
            .find(|l| l.len() > 20 && l[..20].eq_ignore_ascii_case(b"content-disposition:"))
            .unwrap_or(b"");
        let name = param(disposition, b"name").unwrap_or_default();
        out.push(Item::new(target::BODY_NAMES, name.clone(), name.clone()));
        match param(disposition, b"filename") {
            Some(filename) => out.push(Item::new(target::BODY_VALUES, name, filename)),
            None => out.push(Item::new(target::BODY_VALUES, name, content)),
        }
        rest = &rest[content_end..];
        parts += 1;
    }
    parts > 0
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `key=value` or `key="value"` from a header parameter list.
fn param(header: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    for part in header.split(|&b| b == b';').skip(1) {
        let part = part.trim_ascii();
        let Some(eq) = part.iter().position(|&b| b == b'=') else { continue };
        if part[..eq].trim_ascii().eq_ignore_ascii_case(key) {
            let v = part[eq + 1..].trim_ascii();
            let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
            return Some(v.to_vec());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(items: &[Item]) -> Vec<(u8, String, String)> {
        items
            .iter()
            .map(|i| (i.target, String::from_utf8_lossy(&i.name).into(), String::from_utf8_lossy(&i.value).into()))
            .collect()
    }

    #[test]
    fn noise_headers_are_the_listed_ones_in_any_case() {
        for h in [
            "Accept",
            "ACCEPT-ENCODING",
            "Authorization",
            "Sec-Fetch-Site",
            "sec-ch-ua-platform",
            "Cookie",
            "If-None-Match",
        ] {
            assert!(noise_header(h.as_bytes()), "{h}");
        }
        for h in
            ["Content-Type", "X-Foo", "User-Agent", "Referer", "Host", "Origin", "X-Forwarded-For", "Sec-", "Acceptx"]
        {
            assert!(!noise_header(h.as_bytes()), "{h}");
        }
    }

    #[test]
    fn same_site_referers() {
        assert!(same_site_referer(b"https://shop.example.com/cart?x=1", b"shop.example.com"));
        assert!(same_site_referer(b"HTTP://Shop.Example.com", b"shop.example.com"));
        assert!(same_site_referer(b"https://www.example.com/", b"example.com"), "a subdomain");
        assert!(same_site_referer(b"http://localhost:8080/a", b"localhost:8080"));
        for (referer, host) in [
            (&b"https://evilexample.com/"[..], &b"example.com"[..]),
            (b"https://example.com.evil.net/", b"example.com"),
            (b"https://evil.net/?u=https://example.com/", b"example.com"),
            (b"example.com/page", b"example.com"),
            (b"https://example.com/", b""),
            (b"http://localhost:9999/", b"localhost:8080"),
        ] {
            assert!(!same_site_referer(referer, host), "{:?}", String::from_utf8_lossy(referer));
        }
    }

    #[test]
    fn query_and_cookies() {
        let mut out = Vec::new();
        query(b"a=1&flag&=x&b=%27", &mut out);
        let v = values(&out);
        assert!(v.contains(&(target::ARG_VALUES, "a".into(), "1".into())));
        assert!(v.contains(&(target::ARG_VALUES, "flag".into(), "".into())));
        assert!(v.contains(&(target::ARG_VALUES, "b".into(), "%27".into())));
        out.clear();
        cookies(b"sid=abc; theme=dark;bare", &mut out);
        assert_eq!(values(&out)[2], (target::COOKIE_NAMES, "theme".into(), "theme".into()));
        assert_eq!(values(&out)[3], (target::COOKIES, "theme".into(), "dark".into()));
        assert_eq!(out.len(), 6, "a name and a value per cookie");
    }

    #[test]
    fn json_bodies_yield_keys_and_string_values_recursively() {
        let mut out = Vec::new();
        body(b"application/json; charset=utf-8", br#"{"q":"x","n":1,"deep":{"list":["a",{"k'":"b"}]}}"#, &mut out);
        let v = values(&out);
        assert!(v.contains(&(target::BODY_VALUES, "q".into(), "x".into())));
        assert!(v.contains(&(target::BODY_VALUES, "list".into(), "a".into())));
        assert!(v.contains(&(target::BODY_NAMES, "k'".into(), "k'".into())));
        assert!(v.contains(&(target::BODY_VALUES, "k'".into(), "b".into())));
        out.clear();
        body(b"application/json", b"{broken", &mut out);
        assert_eq!(values(&out), vec![(target::BODY_VALUES, "".into(), "{broken".into())]);
        let deep = "[".repeat(10_000);
        out.clear();
        body(b"application/json", deep.as_bytes(), &mut out); // invalid (unclosed) and deep
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn multipart_fields_and_filenames() {
        let body_bytes = b"--XyZ\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello there\r\n--XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.php\"\r\nContent-Type: application/octet-stream\r\n\r\n<?php binary\r\n--XyZ--\r\n";
        let mut out = Vec::new();
        body(b"multipart/form-data; boundary=XyZ", body_bytes, &mut out);
        let v = values(&out);
        assert!(v.contains(&(target::BODY_VALUES, "comment".into(), "hello there".into())));
        assert!(v.contains(&(target::BODY_VALUES, "upload".into(), "a.php".into())));
        assert!(!v.iter().any(|(_, _, val)| val.contains("binary")), "file content is not a field value");
        out.clear();
        body(b"multipart/form-data", b"garbage", &mut out);
        assert_eq!(out.len(), 1, "unparseable multipart is inspected raw");
    }

    #[test]
    fn every_value_is_extracted_borrowed_unless_escaped() {
        let mut out = Vec::new();
        let many = "a=1&".repeat(5000);
        query(many.as_bytes(), &mut out);
        assert_eq!(out.len(), 10_000, "no cap: the 5000th argument is inspected too");
        let mut fields: String = (0..3000).map(|i| format!("\"k{i}\":\"v\",")).collect();
        fields.push_str(&format!(r#""deep":{}{{"q":"x' or 1=1"}}{}"#, "[".repeat(40), "]".repeat(40)));
        out.clear();
        let text = format!("{{{fields}}}");
        body(b"application/json", text.as_bytes(), &mut out);
        assert!(
            values(&out).contains(&(target::BODY_VALUES, "q".into(), "x' or 1=1".into())),
            "past 1024 items and 32 levels"
        );
        assert!(
            out.iter().filter(|i| i.target == target::BODY_VALUES).all(|i| matches!(i.value, Cow::Borrowed(_))),
            "no escapes, no copies"
        );
        out.clear();
        body(
            b"application/json",
            br#"{"a\u0027b":"\u003cscript\u003e \ud83d\ude00 \n\"","constructor":{"prototype":{"isAdmin":true}}}"#,
            &mut out,
        );
        let v = values(&out);
        assert!(v.contains(&(target::BODY_NAMES, "a'b".into(), "a'b".into())), "{v:?}");
        assert!(v.contains(&(target::BODY_VALUES, "a'b".into(), "<script> \u{1F600} \n\"".into())), "{v:?}");
        assert!(
            v.contains(&(target::BODY_NAMES, "constructor.prototype".into(), "constructor.prototype".into())),
            "{v:?}"
        );
    }
}
