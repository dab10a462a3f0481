//! Turning a request into the values the engine inspects: query arguments, cookies, and
//! bodies (urlencoded, JSON, multipart). Parsers never panic and are bounded: at most
//! `MAX_ITEMS` values per request and JSON nesting of `MAX_DEPTH`.

use std::borrow::Cow;

use super::rules::target;

pub const MAX_ITEMS: usize = 1024;
const MAX_DEPTH: usize = 32;

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
    raw.split(|&b| b == b'&').filter(|p| !p.is_empty()).take(MAX_ITEMS).map(|p| match p.iter().position(|&b| b == b'=') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (p, &p[p.len()..]),
    })
}

/// Query arguments as names (`args_names`) and values (`args`).
pub fn query<'a>(raw: &'a [u8], out: &mut Vec<Item<'a>>) {
    for (name, value) in pairs(raw) {
        push(out, Item::new(target::ARG_NAMES, name, name));
        push(out, Item::new(target::ARG_VALUES, name, value));
    }
}

/// `Cookie: a=1; b=2`.
pub fn cookies<'a>(header: &'a [u8], out: &mut Vec<Item<'a>>) {
    for part in header.split(|&b| b == b';').take(MAX_ITEMS) {
        let part = part.trim_ascii();
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &part[part.len()..]),
        };
        push(out, Item::new(target::COOKIES, name, value));
    }
}

fn push<'a>(out: &mut Vec<Item<'a>>, item: Item<'a>) {
    if out.len() < MAX_ITEMS {
        out.push(item);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    UrlEncoded,
    Json,
    Multipart,
    Other,
}

pub fn body_kind(content_type: &[u8]) -> BodyKind {
    let ct = content_type.to_ascii_lowercase();
    let mime = ct.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
    match mime {
        b"application/x-www-form-urlencoded" => BodyKind::UrlEncoded,
        b"multipart/form-data" => BodyKind::Multipart,
        m if m == b"application/json" || m.ends_with(b"+json") => BodyKind::Json,
        _ => BodyKind::Other,
    }
}

/// Body fields. A body that does not parse as its declared type is inspected as one raw value
/// (an attacker gains nothing by sending broken JSON).
pub fn body<'a>(content_type: &[u8], body: &'a [u8], out: &mut Vec<Item<'a>>) {
    match body_kind(content_type) {
        BodyKind::UrlEncoded => {
            for (name, value) in pairs(body) {
                push(out, Item::new(target::BODY_NAMES, name, name));
                push(out, Item::new(target::BODY_VALUES, name, value));
            }
        }
        BodyKind::Json => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => json(&v, b"", 0, out),
            Err(_) => push(out, Item::new(target::BODY_VALUES, &b""[..], body)),
        },
        BodyKind::Multipart => {
            if !multipart(content_type, body, out) {
                push(out, Item::new(target::BODY_VALUES, &b""[..], body));
            }
        }
        BodyKind::Other => push(out, Item::new(target::BODY_VALUES, &b""[..], body)),
    }
}

fn json<'a>(v: &serde_json::Value, name: &[u8], depth: usize, out: &mut Vec<Item<'a>>) {
    if depth > MAX_DEPTH || out.len() >= MAX_ITEMS {
        return;
    }
    match v {
        serde_json::Value::String(s) => push(out, Item::new(target::BODY_VALUES, name.to_vec(), s.as_bytes().to_vec())),
        serde_json::Value::Array(items) => {
            for item in items {
                json(item, name, depth + 1, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, item) in map {
                push(out, Item::new(target::BODY_NAMES, k.as_bytes().to_vec(), k.as_bytes().to_vec()));
                json(item, k.as_bytes(), depth + 1, out);
            }
        }
        _ => {}
    }
}

/// multipart/form-data: field names, file names, and the content of non-file parts.
fn multipart<'a>(content_type: &[u8], body: &'a [u8], out: &mut Vec<Item<'a>>) -> bool {
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
        let content = rest[content_start..content_end].strip_suffix(b"\r\n").unwrap_or(&rest[content_start..content_end]);
        let disposition = head
            .split(|&b| b == b'\n')
            .find(|l| l.len() > 20 && l[..20].eq_ignore_ascii_case(b"content-disposition:"))
            .unwrap_or(b"");
        let name = param(disposition, b"name").unwrap_or_default();
        push(out, Item::new(target::BODY_NAMES, name.clone(), name.clone()));
        match param(disposition, b"filename") {
            Some(filename) => push(out, Item::new(target::BODY_VALUES, name, filename)),
            None => push(out, Item::new(target::BODY_VALUES, name, content)),
        }
        rest = &rest[content_end..];
        parts += 1;
        if parts >= MAX_ITEMS {
            break;
        }
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
        items.iter().map(|i| (i.target, String::from_utf8_lossy(&i.name).into(), String::from_utf8_lossy(&i.value).into())).collect()
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
        assert_eq!(values(&out)[1], (target::COOKIES, "theme".into(), "dark".into()));
        assert_eq!(out.len(), 3);
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
    fn items_are_bounded() {
        let mut out = Vec::new();
        let many = "a=1&".repeat(5000);
        query(many.as_bytes(), &mut out);
        assert_eq!(out.len(), MAX_ITEMS);
    }
}
