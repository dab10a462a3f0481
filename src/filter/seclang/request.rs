//! The request as SecLang rules see it: the raw parts (method, URI, protocol, headers, body,
//! client address) and the variables derived from them once per request (ARGS_GET from the
//! query, ARGS_POST from a urlencoded, JSON or multipart body, cookies, files, XML text).
//! Names and values are URL-decoded the way ModSecurity decodes arguments.

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query string.
    pub uri: String,
    pub protocol: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub remote_addr: String,
}

/// One value of a variable: the key inside its collection (empty for scalars) and the value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Bounds on what one request can make the parsers produce.
const MAX_ARGS: usize = 1024;
const MAX_JSON_DEPTH: usize = 64;
/// Header lines kept per multipart part.
const MAX_PART_HEADERS: usize = 16;

/// Everything derived from the request once, before phase 1 (`body_processor` may still be
/// changed by `ctl:requestBodyProcessor` before phase 2 parses the body).
#[derive(Debug, Default)]
pub struct Parsed {
    pub args_get: Vec<Entry>,
    pub args_post: Vec<Entry>,
    pub cookies: Vec<Entry>,
    pub files: Vec<Entry>,
    /// Per file part: field name -> its size in bytes (FILES_SIZES, FILES_COMBINED_SIZE).
    pub file_sizes: Vec<Entry>,
    /// Every header line of every multipart part, keyed by the part's field name
    /// (MULTIPART_PART_HEADERS), as ModSecurity gives them.
    pub part_headers: Vec<Entry>,
    pub xml: Vec<Entry>,
    pub body_processor: String,
    pub body_error: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    pub fn path(&self) -> &str {
        self.uri.split_once('?').map_or(self.uri.as_str(), |(p, _)| p)
    }

    pub fn query(&self) -> &str {
        self.uri.split_once('?').map_or("", |(_, q)| q)
    }

    /// Phase-1 view: query arguments, cookies, the body processor chosen by Content-Type.
    pub fn parse_headers(&self) -> Parsed {
        let mut p = Parsed { args_get: form(self.query().as_bytes()), ..Parsed::default() };
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("cookie") {
                for part in value.split(|&b| b == b';') {
                    let part = part.trim_ascii();
                    if part.is_empty() {
                        continue;
                    }
                    let (k, v) = split_once(part, b'=');
                    p.cookies.push((k.to_vec(), v.to_vec()));
                }
            }
        }
        let ct = self.header("content-type").map(|v| v.to_ascii_lowercase()).unwrap_or_default();
        p.body_processor = if ct.starts_with(b"application/x-www-form-urlencoded") {
            "URLENCODED"
        } else if ct.starts_with(b"multipart/form-data") {
            "MULTIPART"
        } else if ct.windows(4).any(|w| w == b"json") {
            "JSON"
        } else if ct.windows(3).any(|w| w == b"xml") {
            "XML"
        } else {
            ""
        }
        .to_string();
        p
    }

    /// Phase-2 view: the body parsed by the processor in `p`.
    pub fn parse_body(&self, p: &mut Parsed) {
        if self.body.is_empty() {
            return;
        }
        match p.body_processor.as_str() {
            "URLENCODED" => p.args_post = form(&self.body),
            "JSON" => match serde_json::from_slice::<serde_json::Value>(&self.body) {
                Ok(v) => flatten_json(b"json", &v, 0, &mut p.args_post),
                Err(_) => p.body_error = true,
            },
            "MULTIPART" => {
                let ct = self.header("content-type").unwrap_or_default();
                p.body_error = !multipart(ct, &self.body, p);
            }
            "XML" => p.body_error = !xml_text(&self.body, &mut p.xml),
            _ => {}
        }
    }
}

fn split_once(s: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == sep) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, b""),
    }
}

fn decode(s: &[u8]) -> Vec<u8> {
    super::transforms::SecTransform::UrlDecode.apply(s)
}

/// `a=1&b=2` to decoded pairs.
pub fn form(s: &[u8]) -> Vec<Entry> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .take(MAX_ARGS)
        .map(|p| {
            let (k, v) = split_once(p, b'=');
            (decode(k), decode(v))
        })
        .collect()
}

/// JSON to ModSecurity's names: `{"a":{"b":[1]}}` gives `json.a.b.0 = 1`.
fn flatten_json(prefix: &[u8], v: &serde_json::Value, depth: usize, out: &mut Vec<Entry>) {
    if out.len() >= MAX_ARGS || depth > MAX_JSON_DEPTH {
        return;
    }
    let child = |k: &str| [prefix, b".", k.as_bytes()].concat();
    match v {
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| flatten_json(&child(k), v, depth + 1, out)),
        serde_json::Value::Array(list) => {
            list.iter().enumerate().for_each(|(i, v)| flatten_json(&child(&i.to_string()), v, depth + 1, out))
        }
        serde_json::Value::String(s) => out.push((prefix.to_vec(), s.as_bytes().to_vec())),
        serde_json::Value::Null => out.push((prefix.to_vec(), Vec::new())),
        other => out.push((prefix.to_vec(), other.to_string().into_bytes())),
    }
}

/// A minimal multipart/form-data reader: fields become arguments, file parts give FILES
/// (field name → file name) and their sizes, every part's header lines
/// MULTIPART_PART_HEADERS. False when the body does not follow its boundary.
fn multipart(content_type: &[u8], body: &[u8], p: &mut Parsed) -> bool {
    let ct = String::from_utf8_lossy(content_type);
    let Some(boundary) =
        ct.split(';').find_map(|p| p.trim().strip_prefix("boundary=")).map(|b| b.trim_matches('"').to_string())
    else {
        return false;
    };
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        parts.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
        if parts.len() > MAX_ARGS {
            break;
        }
    }
    if parts.is_empty() {
        return false;
    }
    for part in parts.into_iter().skip(1) {
        // Lines end in CRLF, or (as ModSecurity also accepts) a bare LF.
        let part = part.strip_prefix(b"\r\n").or_else(|| part.strip_prefix(b"\n")).unwrap_or(part);
        let Some((split, sep)) = [&b"\r\n\r\n"[..], b"\n\n", b"\n\r\n"]
            .iter()
            .filter_map(|sep| find(part, sep).map(|at| (at, sep.len())))
            .min()
        else {
            continue;
        };
        let (head, content) = (&part[..split], &part[split + sep..]);
        let content = content.strip_suffix(b"\r\n").or_else(|| content.strip_suffix(b"\n")).unwrap_or(content);
        let head = String::from_utf8_lossy(head).to_string();
        let Some(disposition) = head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
        else {
            continue;
        };
        let param = |key: &str| {
            disposition
                .split(';')
                .find_map(|p| p.trim().strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('"').to_string()))
        };
        let Some(name) = param("name") else { continue };
        for line in head.lines().filter(|l| !l.is_empty()).take(MAX_PART_HEADERS) {
            if p.part_headers.len() < MAX_ARGS {
                p.part_headers.push((name.clone().into_bytes(), line.as_bytes().to_vec()));
            }
        }
        match param("filename") {
            Some(file) => {
                p.file_sizes.push((name.clone().into_bytes(), content.len().to_string().into_bytes()));
                p.files.push((name.into_bytes(), file.into_bytes()));
            }
            None => p.args_post.push((name.into_bytes(), content.to_vec())),
        }
    }
    true
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    aho_corasick::AhoCorasick::new([needle]).ok()?.find(hay).map(|m| m.start())
}

/// `XML:/*` as ModSecurity gives it for the whole document: the text content of every
/// element, and attribute values. A linear scan, not a validating parser; false on a body
/// that does not look like XML at all.
fn xml_text(body: &[u8], out: &mut Vec<Entry>) -> bool {
    let mut i = 0;
    let mut text = Vec::new();
    let mut saw_tag = false;
    while i < body.len() && out.len() < MAX_ARGS {
        if body[i] == b'<' {
            saw_tag = true;
            let end = body[i..].iter().position(|&b| b == b'>').map_or(body.len(), |p| i + p);
            let tag = &body[i + 1..end];
            if tag.starts_with(b"![CDATA[") {
                let close = find(&body[i..], b"]]>").map_or(body.len(), |p| i + p);
                text.extend_from_slice(&body[(i + 9).min(close)..close]);
                i = close + 3;
                continue;
            }
            // Attribute values: every quoted string inside the tag.
            let mut q = 0;
            while q < tag.len() {
                if tag[q] == b'"' || tag[q] == b'\'' {
                    let quote = tag[q];
                    let close = tag[q + 1..].iter().position(|&b| b == quote).map_or(tag.len(), |p| q + 1 + p);
                    out.push((b"/*".to_vec(), tag[q + 1..close].to_vec()));
                    q = close + 1;
                } else {
                    q += 1;
                }
            }
            i = end + 1;
        } else {
            text.push(body[i]);
            i += 1;
        }
    }
    let text = super::transforms::SecTransform::HtmlEntityDecode.apply(text.trim_ascii());
    if !text.is_empty() {
        out.push((b"/*".to_vec(), text));
    }
    saw_tag
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ct: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            uri: "/a/b.php?x=1&y=%27a+b".into(),
            protocol: "HTTP/1.1".into(),
            headers: vec![("Content-Type".into(), ct.into()), ("Cookie".into(), b"sid=abc; theme=dark".to_vec())],
            body: body.into(),
            remote_addr: "127.0.0.1".into(),
        }
    }

    #[test]
    fn query_cookies_and_processor() {
        let r = req("application/x-www-form-urlencoded", "p=%3Cb%3E");
        let mut p = r.parse_headers();
        assert_eq!(p.args_get, vec![(b"x".to_vec(), b"1".to_vec()), (b"y".to_vec(), b"'a b".to_vec())]);
        assert_eq!(p.cookies[1], (b"theme".to_vec(), b"dark".to_vec()));
        assert_eq!(p.body_processor, "URLENCODED");
        r.parse_body(&mut p);
        assert_eq!(p.args_post, vec![(b"p".to_vec(), b"<b>".to_vec())]);
        assert_eq!(r.path(), "/a/b.php");
    }

    #[test]
    fn json_bodies_flatten() {
        let r = req("application/json", r#"{"a":{"b":[1,"x"]},"c":null}"#);
        let mut p = r.parse_headers();
        r.parse_body(&mut p);
        let names: Vec<String> = p.args_post.iter().map(|(k, _)| String::from_utf8_lossy(k).into()).collect();
        assert_eq!(names, vec!["json.a.b.0", "json.a.b.1", "json.c"]);
        let bad = req("application/json", "{");
        let mut p = bad.parse_headers();
        bad.parse_body(&mut p);
        assert!(p.body_error);
    }

    #[test]
    fn multipart_fields_and_files() {
        let body = "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--XX\r\nContent-Disposition: form-data; name=\"up\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--XX--\r\n";
        let r = req("multipart/form-data; boundary=XX", body);
        let mut p = r.parse_headers();
        r.parse_body(&mut p);
        assert!(!p.body_error);
        assert_eq!(p.args_post, vec![(b"a".to_vec(), b"hello".to_vec())]);
        assert_eq!(p.files, vec![(b"up".to_vec(), b"x.php".to_vec())]);
        assert_eq!(p.file_sizes, vec![(b"up".to_vec(), b"5".to_vec())]);
        let headers: Vec<(&[u8], &[u8])> = p.part_headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        assert_eq!(
            headers,
            vec![
                (&b"a"[..], &b"Content-Disposition: form-data; name=\"a\""[..]),
                (b"up", b"Content-Disposition: form-data; name=\"up\"; filename=\"x.php\""),
                (b"up", b"Content-Type: text/plain"),
            ]
        );
    }

    #[test]
    fn multipart_with_bare_lf_lines() {
        let body = "--XX\nContent-Disposition: form-data; name=\"u\"\nContent-Type: text/plain; charset=utf-7\n\n+ADw-\n--XX--\n";
        let r = req("multipart/form-data; boundary=XX", body);
        let mut p = r.parse_headers();
        r.parse_body(&mut p);
        assert_eq!(p.args_post, vec![(b"u".to_vec(), b"+ADw-".to_vec())]);
        assert_eq!(p.part_headers.len(), 2);
        assert_eq!(p.part_headers[1].1, b"Content-Type: text/plain; charset=utf-7");
    }

    #[test]
    fn xml_text_and_attributes() {
        let r = req("text/xml", "<a x='1'><b>hi &lt;</b><![CDATA[<c>]]></a>");
        let mut p = r.parse_headers();
        r.parse_body(&mut p);
        let values: Vec<&[u8]> = p.xml.iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(values, vec![&b"1"[..], b"hi <<c>"]);
    }
}
