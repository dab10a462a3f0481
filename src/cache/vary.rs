//! `Vary` (RFC 9111 §4.1): the request headers a response names select which stored variant
//! a later request gets. The secondary key is built from those headers' values, normalised so
//! that requests the origin would answer alike share a variant.

use super::control::trim;
use super::entry::{is_token, MAX_VARY_NAMES};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`, or one naming nothing.
    None,
    /// The request headers named, lower-case, deduplicated, sorted.
    Names(Vec<String>),
    /// `Vary: *`, or more names than an entry records: never served from cache.
    Uncacheable,
}

/// Reads the response's `Vary` values.
pub fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vary {
    let mut names: Vec<String> = Vec::new();
    for name in values.flat_map(|v| v.split(|&b| b == b',')).map(trim).filter(|n| !n.is_empty()) {
        if name == b"*" || !is_token(name) {
            return Vary::Uncacheable;
        }
        names.push(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    names.sort();
    names.dedup();
    match names.len() {
        0 => Vary::None,
        n if n > MAX_VARY_NAMES => Vary::Uncacheable,
        _ => Vary::Names(names),
    }
}

/// The content codings this cache tells apart; any other coding the client accepts does not
/// change the variant (an origin picks among these).
const CODINGS: [&[u8]; 5] = [b"br", b"deflate", b"gzip", b"identity", b"zstd"];

/// `Accept-Encoding` as the set of known codings the client accepts (q > 0), sorted.
fn accept_encoding(values: &[&[u8]]) -> Vec<u8> {
    let mut accepted = [false; CODINGS.len()];
    for item in values.iter().flat_map(|v| v.split(|&b| b == b',')) {
        let mut parts = item.split(|&b| b == b';');
        let coding = trim(parts.next().unwrap_or_default()).to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = trim(p);
            p.len() >= 2 && p[..2].eq_ignore_ascii_case(b"q=") && trim(&p[2..]).iter().all(|&b| b == b'0' || b == b'.')
        });
        if let Some(i) = CODINGS.iter().position(|c| *c == coding.as_slice()) {
            accepted[i] = !refused;
        } else if coding == b"*" && !refused {
            // "*" accepts whatever was not named: the common codings.
            for (i, c) in CODINGS.iter().enumerate() {
                if *c == b"gzip" || *c == b"br" {
                    accepted[i] = true;
                }
            }
        }
    }
    let chosen: Vec<&[u8]> = CODINGS.iter().zip(accepted).filter(|(_, a)| *a).map(|(c, _)| *c).collect();
    chosen.join(&b","[..])
}

/// The secondary key: for each name, `name:value\n`, the request's values of that header
/// joined by commas (an absent header and an empty one differ: `name\n`).
pub fn secondary<'a>(names: &[impl AsRef<[u8]>], header: impl Fn(&[u8]) -> Vec<&'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        let name = name.as_ref();
        out.extend_from_slice(name);
        let values = header(name);
        if !values.is_empty() {
            out.push(b':');
            if name == b"accept-encoding" {
                out.extend_from_slice(&accept_encoding(&values));
            } else {
                let trimmed: Vec<&[u8]> = values.iter().map(|v| trim(v)).collect();
                out.extend_from_slice(&trimmed.join(&b","[..]));
            }
        }
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vary(v: &str) -> Vary {
        parse(core::iter::once(v.as_bytes()))
    }

    #[test]
    fn names_are_normalised_and_star_is_uncacheable() {
        assert_eq!(
            vary("Accept-Encoding, x-lang, accept-encoding"),
            Vary::Names(vec!["accept-encoding".into(), "x-lang".into()])
        );
        assert_eq!(vary(""), Vary::None);
        assert_eq!(vary("*"), Vary::Uncacheable);
        assert_eq!(vary("Accept, *"), Vary::Uncacheable);
        assert_eq!(vary("bad name"), Vary::Uncacheable);
        let many = (0..=MAX_VARY_NAMES).map(|i| format!("h{i}")).collect::<Vec<_>>().join(",");
        assert_eq!(vary(&many), Vary::Uncacheable);
    }

    fn key(names: &[&str], headers: &[(&'static str, &'static str)]) -> Vec<u8> {
        secondary(names, |n: &[u8]| {
            headers.iter().filter(|(k, _)| k.as_bytes().eq_ignore_ascii_case(n)).map(|(_, v)| v.as_bytes()).collect()
        })
    }

    #[test]
    fn accept_encoding_is_a_set_of_known_codings() {
        let ae = |v| key(&["accept-encoding"], &[("Accept-Encoding", v)]);
        assert_eq!(ae("gzip, deflate, br"), ae("br,gzip , deflate"));
        assert_eq!(ae("gzip;q=1.0, x-custom"), ae("gzip"));
        assert_ne!(ae("gzip"), ae("br"));
        assert_eq!(ae("gzip, br;q=0"), ae("gzip"), "q=0 refuses");
        assert_eq!(ae("*"), ae("gzip, br"));
        assert_eq!(key(&["accept-encoding"], &[]), b"accept-encoding\n");
    }

    #[test]
    fn other_headers_select_by_value_and_absence_differs_from_empty() {
        let lang = |h: &[(&'static str, &'static str)]| key(&["x-lang"], h);
        assert_ne!(lang(&[("X-Lang", "en")]), lang(&[("X-Lang", "fr")]));
        assert_eq!(lang(&[("X-Lang", " en ")]), lang(&[("x-lang", "en")]));
        assert_ne!(lang(&[]), lang(&[("X-Lang", "")]));
        assert_eq!(lang(&[("X-Lang", "a"), ("X-Lang", "b")]), b"x-lang:a,b\n");
    }
}
