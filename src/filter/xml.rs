//! XML request bodies (`application/xml`, `text/xml`, `+xml`) as inspected values: element
//! text (named by its element), attribute values (named by their attribute), CDATA sections,
//! element and attribute names (`body_names`), and the DOCTYPE declaration as one value (an
//! XXE attempt is in it).
//!
//! A small tokenizer, not a parser: one forward pass, time linear in the body, memory one
//! stack of borrowed element names. Nothing is expanded or fetched: entities stay as written
//! (the rule pipelines decode `&lt;`/`&#60;` like any HTML entity; a `<!ENTITY>` is only text
//! in the DOCTYPE value), no DTD is read. A body that does not tokenize (an unclosed tag or
//! comment, a stray `<`, unbalanced tags) is reported as not XML, and the caller inspects it
//! raw as one value.

use super::extract::{Item, Sink};
use super::rules::target;

/// Elements nested deeper than this make the body "not XML" (inspected raw, whole).
const MAX_DEPTH: usize = 1024;

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':') || b >= 0x80
}

/// The index of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| from + p)
}

/// Streams the values of an XML document to `out`. Returns `false` (having pushed nothing)
/// when the body does not tokenize as XML: the tokens are checked in a first pass that pushes
/// nothing, then streamed, so a caller falling back to the raw body never sees half a document.
pub fn xml<'a>(body: &'a [u8], out: &mut impl Sink<'a>) -> bool {
    if tokens(body, &mut Discard).is_err() {
        return false;
    }
    tokens(body, out).is_ok()
}

struct Discard;

impl<'a> Sink<'a> for Discard {
    fn push(&mut self, _: Item<'a>) {}
}

struct NotXml;

fn tokens<'a>(body: &'a [u8], out: &mut impl Sink<'a>) -> Result<(), NotXml> {
    let mut stack: Vec<&'a [u8]> = Vec::new();
    let mut elements = 0usize;
    let mut i = 0;
    let n = body.len();
    while i < n {
        if body[i] != b'<' {
            // Text up to the next tag, named by the element it is in (outside the root: only
            // whitespace is allowed, as in XML).
            let end = body[i..].iter().position(|&b| b == b'<').map_or(n, |p| i + p);
            let text = &body[i..end];
            match stack.last() {
                Some(name) => {
                    if !text.iter().all(|&b| is_space(b)) {
                        out.push(Item::new(target::BODY_VALUES, *name, text));
                    }
                }
                None if text.iter().all(|&b| is_space(b) || b == 0xEF || b == 0xBB || b == 0xBF) => {}
                None => return Err(NotXml),
            }
            i = end;
            continue;
        }
        let rest = &body[i..];
        if rest.starts_with(b"<!--") {
            i = find(body, i + 4, b"-->").ok_or(NotXml)? + 3;
        } else if rest.starts_with(b"<![CDATA[") {
            let end = find(body, i + 9, b"]]>").ok_or(NotXml)?;
            let name = stack.last().ok_or(NotXml)?;
            out.push(Item::new(target::BODY_VALUES, *name, &body[i + 9..end]));
            i = end + 3;
        } else if rest.starts_with(b"<?") {
            i = find(body, i + 2, b"?>").ok_or(NotXml)? + 2;
        } else if rest.len() >= 9 && rest[..9].eq_ignore_ascii_case(b"<!doctype") {
            // Up to the `>` closing the declaration, past an internal subset in brackets.
            let mut depth = 0usize;
            let mut j = i + 9;
            let mut quote = 0u8;
            loop {
                let b = *body.get(j).ok_or(NotXml)?;
                match (quote, b) {
                    (0, b'"' | b'\'') => quote = b,
                    (q, _) if q != 0 && b == q => quote = 0,
                    (0, b'[') => depth += 1,
                    (0, b']') => depth = depth.saturating_sub(1),
                    (0, b'>') if depth == 0 => break,
                    _ => {}
                }
                j += 1;
            }
            out.push(Item::new(target::BODY_VALUES, &b"!doctype"[..], &body[i..=j]));
            i = j + 1;
        } else if let Some(close) = rest.strip_prefix(b"</") {
            let len = close.iter().take_while(|&&b| is_name_byte(b)).count();
            let name = &close[..len];
            let mut j = i + 2 + len;
            while j < n && is_space(body[j]) {
                j += 1;
            }
            if body.get(j) != Some(&b'>') || stack.pop() != Some(name) {
                return Err(NotXml);
            }
            i = j + 1;
        } else {
            i = start_tag(body, i, &mut stack, out)?;
            elements += 1;
            if stack.len() > MAX_DEPTH {
                return Err(NotXml);
            }
        }
    }
    if stack.is_empty() && elements > 0 {
        Ok(())
    } else {
        Err(NotXml)
    }
}

/// `<name attr="v" ...>` or `<name .../>` at `i`: pushes the names and attribute values,
/// opens the element unless it closes itself, and returns the index after the tag.
fn start_tag<'a>(
    body: &'a [u8],
    i: usize,
    stack: &mut Vec<&'a [u8]>,
    out: &mut impl Sink<'a>,
) -> Result<usize, NotXml> {
    let n = body.len();
    let mut j = i + 1;
    let start = j;
    while j < n && is_name_byte(body[j]) {
        j += 1;
    }
    let name = &body[start..j];
    if name.is_empty() {
        return Err(NotXml);
    }
    out.push(Item::new(target::BODY_NAMES, name, name));
    loop {
        while j < n && is_space(body[j]) {
            j += 1;
        }
        match body.get(j) {
            None => return Err(NotXml),
            Some(b'>') => {
                stack.push(name);
                return Ok(j + 1);
            }
            Some(b'/') if body.get(j + 1) == Some(&b'>') => return Ok(j + 2),
            Some(_) => {}
        }
        let a = j;
        while j < n && is_name_byte(body[j]) {
            j += 1;
        }
        let attr = &body[a..j];
        while j < n && is_space(body[j]) {
            j += 1;
        }
        if attr.is_empty() || body.get(j) != Some(&b'=') {
            return Err(NotXml);
        }
        j += 1;
        while j < n && is_space(body[j]) {
            j += 1;
        }
        let quote = *body.get(j).ok_or(NotXml)?;
        if quote != b'"' && quote != b'\'' {
            return Err(NotXml);
        }
        let end = body[j + 1..].iter().position(|&b| b == quote).ok_or(NotXml)? + j + 1;
        out.push(Item::new(target::BODY_NAMES, attr, attr));
        out.push(Item::new(target::BODY_VALUES, attr, &body[j + 1..end]));
        j = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(body: &[u8]) -> Option<Vec<(u8, String, String)>> {
        let mut out: Vec<Item> = Vec::new();
        if !xml(body, &mut out) {
            assert!(out.is_empty(), "nothing pushed for a body that is not XML");
            return None;
        }
        Some(
            out.iter()
                .map(|i| (i.target, String::from_utf8_lossy(&i.name).into(), String::from_utf8_lossy(&i.value).into()))
                .collect(),
        )
    }

    #[test]
    fn elements_attributes_cdata_and_doctype_become_values() {
        let doc = br#"<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<!-- a comment -->
<order id='7' note="a &amp; b"><item qty="2">shoes</item><empty/><c><![CDATA[<b>raw</b>]]></c>
  <ns:tag xmlns:ns="urn:x">&x;</ns:tag>
</order>"#;
        let v = values(doc).expect("tokenizes");
        assert!(v.contains(&(target::BODY_VALUES, "id".into(), "7".into())), "{v:?}");
        assert!(v.contains(&(target::BODY_VALUES, "note".into(), "a &amp; b".into())), "entities as written");
        assert!(v.contains(&(target::BODY_VALUES, "item".into(), "shoes".into())));
        assert!(v.contains(&(target::BODY_VALUES, "c".into(), "<b>raw</b>".into())));
        assert!(v.contains(&(target::BODY_VALUES, "ns:tag".into(), "&x;".into())), "no entity expansion");
        assert!(v.contains(&(target::BODY_NAMES, "order".into(), "order".into())));
        assert!(v.contains(&(target::BODY_NAMES, "qty".into(), "qty".into())));
        let doctype = v.iter().find(|x| x.1 == "!doctype").expect("doctype");
        assert!(doctype.2.contains("SYSTEM \"file:///etc/passwd\"") && doctype.2.ends_with("]>"), "{doctype:?}");
        assert!(!v.iter().any(|x| x.2.contains("a comment")));
        assert!(!v.iter().any(|x| x.0 == target::BODY_VALUES && x.2.trim().is_empty()), "whitespace text skipped");
    }

    #[test]
    fn malformed_bodies_are_not_xml() {
        for bad in [
            &b"not xml at all"[..],
            b"<a><b></a></b>",
            b"<a>unclosed",
            b"<a attr=unquoted></a>",
            b"<a><!-- never closed </a>",
            b"<a x=\"1></a>",
            b"",
            b"<?xml version=\"1.0\"?>",
            b"<a></a>trailing",
            b"<>",
        ] {
            assert_eq!(values(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "<a>".repeat(MAX_DEPTH + 1), "</a>".repeat(MAX_DEPTH + 1));
        assert_eq!(values(deep.as_bytes()), None, "too deep");
        let ok = format!("{}x{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(values(ok.as_bytes()).is_some());
    }

    #[test]
    fn large_documents_are_linear() {
        // 100k sibling elements and a 1 MB text node: one pass each (no quadratic search).
        let many = format!("<r>{}</r>", "<i a=\"1\">v</i>".repeat(100_000));
        assert_eq!(values(many.as_bytes()).unwrap().len(), 1 + 100_000 * 4);
        let big = format!("<r>{}</r>", "x".repeat(1 << 20));
        assert_eq!(values(big.as_bytes()).unwrap().len(), 2);
    }
}
