//! Value transforms applied before matching: decoding and normalisation. Every function is
//! total (never panics, whatever the bytes), linear in the input, and bounded in output: the
//! engine's transforms stop writing at `MAX_TRANSFORMED` (+ a few bytes of slack, cut off), so
//! a value of any size costs at most that much memory per transformed copy.

use serde::Deserialize;

/// Transformed values are cut at this size: the engine's time and memory per value stay bounded.
pub const MAX_TRANSFORMED: usize = 64 * 1024;
/// Transforms write a little past the cut before stopping: `normalize_path` takes back up to
/// two bytes it wrote, so the kept prefix is exactly the full transform's prefix.
const SLACK: usize = 8;
const BOUND: usize = MAX_TRANSFORMED + SLACK;
/// URL decoding is repeated until stable, at most this many passes (double encoding).
const MAX_URL_PASSES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// `%XX`, `%uXXXX` and `+` (repeated: double encoding).
    UrlDecode,
    /// One level of URL decoding: the value as the application sees it, so what is still
    /// encoded after it was encoded twice on purpose.
    UrlDecodeOnce,
    /// `&lt;`, `&#60;`, `&#x3c;` (with or without `;`).
    HtmlDecode,
    Lowercase,
    /// SQL/C comments (`/* */`, `/*! */`, `-- `, `#`) become a space.
    RemoveComments,
    /// Runs of whitespace become one space.
    CompressWhitespace,
    /// NUL, tab, CR, LF removed (browsers ignore them inside URLs and keywords).
    RemoveControls,
    /// `\` to `/`, `//` to `/`, `/./` removed (`../` kept: that is what rules look for).
    NormalizePath,
    /// Standard base64; a value that is not (whole) base64 becomes empty.
    Base64Decode,
    /// JavaScript escapes: `\uXXXX`, `\u{X..}`, `\xHH`, octal `\NNN`, `\n \r \t \b \f \v \a`;
    /// a backslash before any other byte is dropped (`\'` is `'`).
    JsDecode,
}

impl Transform {
    pub fn parse(name: &str) -> Option<Transform> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }

    pub fn apply(self, input: &[u8]) -> Vec<u8> {
        self.apply_if_changed(input).unwrap_or_else(|| input[..input.len().min(MAX_TRANSFORMED)].to_vec())
    }

    /// The transformed value, or `None` when the transform would return its input unchanged
    /// (checked with a cheap scan, so the common case allocates nothing).
    pub fn apply_if_changed(self, input: &[u8]) -> Option<Vec<u8>> {
        self.apply_known(input, self.leaves_unchanged(input))
    }

    /// [`Transform::apply_if_changed`] of a value whose [`Traits`] are known: no scan.
    pub fn apply_if_changed_given(self, input: &[u8], traits: Traits) -> Option<Vec<u8>> {
        self.apply_known(input, traits.unchanged_by(self))
    }

    /// Whether the transform returns `input` as it is (a scan of `input`).
    fn leaves_unchanged(self, input: &[u8]) -> bool {
        let any = |pred: fn(&u8) -> bool| input.iter().any(pred);
        match self {
            Transform::UrlDecode | Transform::UrlDecodeOnce => !any(|&b| b == b'%' || b == b'+'),
            Transform::HtmlDecode => !any(|&b| b == b'&'),
            Transform::Lowercase => !any(u8::is_ascii_uppercase),
            // Exactly what starts a comment: a value without one is copied as it is.
            Transform::RemoveComments => !any(|&b| b == b'#') && !input.windows(2).any(|w| w == b"/*" || w == b"--"),
            Transform::CompressWhitespace => {
                !input.windows(2).any(|w| w[0].is_ascii_whitespace() && w[1].is_ascii_whitespace())
                    && !any(|&b| b != b' ' && (b.is_ascii_whitespace() || b == 0x0b || b == 0xa0))
            }
            Transform::RemoveControls => !any(|&b| matches!(b, 0 | b'\t' | b'\r' | b'\n')),
            Transform::NormalizePath => {
                !any(|&b| b == b'\\') && !input.windows(2).any(|w| w == b"//") && !input.windows(3).any(|w| w == b"/./")
            }
            Transform::Base64Decode => false,
            Transform::JsDecode => !any(|&b| b == b'\\'),
        }
    }

    fn apply_known(self, input: &[u8], unchanged: bool) -> Option<Vec<u8>> {
        if unchanged && input.len() <= MAX_TRANSFORMED {
            return None;
        }
        let mut out = match self {
            Transform::UrlDecode => url_decode_repeated(input),
            Transform::UrlDecodeOnce => url_decode_to(input, BOUND),
            Transform::HtmlDecode => html_decode_to(input, BOUND),
            Transform::Lowercase => input[..input.len().min(BOUND)].to_ascii_lowercase(),
            Transform::RemoveComments => remove_comments_to(input, BOUND),
            Transform::CompressWhitespace => compress_whitespace_to(input, BOUND),
            Transform::RemoveControls => {
                input.iter().copied().filter(|b| !matches!(b, 0 | b'\t' | b'\r' | b'\n')).take(BOUND).collect()
            }
            Transform::NormalizePath => normalize_path_to(input, BOUND),
            Transform::Base64Decode => base64_decode_to(input, BOUND).unwrap_or_default(),
            Transform::JsDecode => super::jsdecode::js_decode_to(input, BOUND),
        };
        out.truncate(MAX_TRANSFORMED);
        Some(out)
    }
}

/// What every transform's "would it change this value?" check needs, from one pass over a
/// value: the engine computes it once per inspected value instead of one scan per transform
/// and pipeline (most values are left unchanged by most transforms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits(u8);

impl Traits {
    const URL: u8 = 1; // % or +
    const AMP: u8 = 2;
    const UPPER: u8 = 4;
    const COMMENT: u8 = 8; // /* -- #
    const WHITESPACE: u8 = 16; // two ASCII whitespace in a row, or whitespace other than ' ', or 0x0b/0xa0
    const CONTROL: u8 = 32; // NUL, tab, CR, LF
    const PATH: u8 = 64; // \ or // or /./
    const BACKSLASH: u8 = 128;

    pub fn of(value: &[u8]) -> Traits {
        let mut t = 0u8;
        let mut prev_ws = false;
        let (mut prev, mut prev2) = (0u8, 0u8);
        for &b in value {
            let ws = b.is_ascii_whitespace();
            t |= match b {
                b'%' | b'+' => Self::URL,
                b'&' => Self::AMP,
                b'A'..=b'Z' => Self::UPPER,
                b'#' => Self::COMMENT,
                b'*' if prev == b'/' => Self::COMMENT,
                b'-' if prev == b'-' => Self::COMMENT,
                0 => Self::CONTROL,
                b'\t' | b'\r' | b'\n' => Self::CONTROL | Self::WHITESPACE,
                0x0b | 0xa0 | 0x0c => Self::WHITESPACE,
                b'\\' => Self::PATH | Self::BACKSLASH,
                _ => 0,
            };
            if ws && prev_ws {
                t |= Self::WHITESPACE;
            }
            if b == b'/' && (prev == b'/' || (prev == b'.' && prev2 == b'/')) {
                t |= Self::PATH;
            }
            prev_ws = ws;
            (prev2, prev) = (prev, b);
        }
        Traits(t)
    }

    /// Whether `transform` returns a value of these traits unchanged.
    pub fn unchanged_by(self, transform: Transform) -> bool {
        let flag = match transform {
            Transform::UrlDecode | Transform::UrlDecodeOnce => Self::URL,
            Transform::HtmlDecode => Self::AMP,
            Transform::Lowercase => Self::UPPER,
            Transform::RemoveComments => Self::COMMENT,
            Transform::CompressWhitespace => Self::WHITESPACE,
            Transform::RemoveControls => Self::CONTROL,
            Transform::NormalizePath => Self::PATH,
            Transform::Base64Decode => return false,
            Transform::JsDecode => Self::BACKSLASH,
        };
        self.0 & flag == 0
    }
}

pub fn apply_all(pipeline: &[Transform], input: &[u8]) -> Vec<u8> {
    let mut value = input[..input.len().min(MAX_TRANSFORMED)].to_vec();
    for t in pipeline {
        value = t.apply(&value);
    }
    value
}

pub(super) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One pass of URL decoding. Invalid escapes are kept as they are. `%uXXXX` (IIS) becomes
/// the code point's UTF-8 (or `?` for surrogates); full-width ASCII folds to ASCII.
pub fn url_decode(input: &[u8]) -> Vec<u8> {
    url_decode_to(input, usize::MAX)
}

/// [`url_decode`], stopping once `max` bytes are written.
fn url_decode_to(input: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().min(max));
    let mut i = 0;
    while i < input.len() && out.len() < max {
        let b = input[i];
        if b == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b == b'%' {
            if let (Some(h), Some(l)) = (input.get(i + 1).and_then(|&c| hex(c)), input.get(i + 2).and_then(|&c| hex(c)))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            if matches!(input.get(i + 1), Some(b'u' | b'U')) {
                let digits: Option<Vec<u8>> = (2..6).map(|k| input.get(i + k).and_then(|&c| hex(c))).collect();
                if let Some(d) = digits {
                    let cp = d.iter().fold(0u32, |acc, &x| acc << 4 | u32::from(x));
                    push_code_point(&mut out, cp);
                    i += 6;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

pub(super) fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    // Full-width forms (U+FF01..U+FF5E) are how `%uff0e%uff0e%u2215` smuggles `../`.
    let cp = match cp {
        0xFF01..=0xFF5E => cp - 0xFF01 + 0x21,
        0x2215 | 0x2044 => u32::from(b'/'),
        _ => cp,
    };
    match char::from_u32(cp) {
        Some(c) => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        None => out.push(b'?'),
    }
}

fn url_decode_repeated(input: &[u8]) -> Vec<u8> {
    let mut value = fold_overlong(&url_decode_to(input, BOUND));
    for _ in 1..MAX_URL_PASSES {
        if !value.contains(&b'%') {
            break;
        }
        let next = fold_overlong(&url_decode_to(&value, BOUND));
        if next == value {
            break;
        }
        value = next;
    }
    value
}

/// Overlong UTF-8 encodings of `.`, `/` and `\` (`%c0%ae`, `%c0%af`, `%c1%9c`, `%e0%80%ae`)
/// decode to the ASCII they pretend not to be.
fn fold_overlong(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i..] {
            [0xC0, b @ 0x80..=0xBF, ..] | [0xC1, b @ 0x80..=0xBF, ..] => {
                out.push(((input[i] & 0x1F) << 6) | (b & 0x3F));
                i += 2;
            }
            [0xE0, 0x80, b @ 0x80..=0xBF, ..] => {
                out.push(b & 0x3F);
                i += 3;
            }
            _ => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

/// True if the input has a `%` not followed by two hex digits (or `u` and four).
pub fn has_invalid_percent(input: &[u8]) -> bool {
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let two =
                input.get(i + 1).and_then(|&c| hex(c)).is_some() && input.get(i + 2).and_then(|&c| hex(c)).is_some();
            let uni = matches!(input.get(i + 1), Some(b'u' | b'U'))
                && (2..6).all(|k| input.get(i + k).and_then(|&c| hex(c)).is_some());
            if !two && !uni {
                return true;
            }
            i += if uni { 6 } else { 3 };
        } else {
            i += 1;
        }
    }
    false
}

const ENTITIES: &[(&[u8], u8)] = &[
    (b"lt", b'<'),
    (b"gt", b'>'),
    (b"quot", b'"'),
    (b"apos", b'\''),
    (b"amp", b'&'),
    (b"colon", b':'),
    (b"lpar", b'('),
    (b"rpar", b')'),
    (b"sol", b'/'),
    (b"bsol", b'\\'),
    (b"tab", b'\t'),
    (b"newline", b'\n'),
    (b"nbsp", b' '),
    (b"grave", b'`'),
    (b"equals", b'='),
    (b"period", b'.'),
    (b"semi", b';'),
    (b"comma", b','),
];

pub fn html_decode(input: &[u8]) -> Vec<u8> {
    html_decode_to(input, usize::MAX)
}

fn html_decode_to(input: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().min(max));
    let mut i = 0;
    while i < input.len() && out.len() < max {
        if input[i] == b'&' {
            if let Some((decoded, used)) = entity(&input[i + 1..]) {
                out.extend_from_slice(&decoded);
                i += 1 + used;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Decodes the entity body after `&`; returns the bytes and how many input bytes it used.
fn entity(rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    if let Some(num) = rest.strip_prefix(b"#") {
        let (radix, digits_start) = match num.first() {
            Some(b'x' | b'X') => (16, 1),
            _ => (10, 0),
        };
        let digits: &[u8] = &num[digits_start..];
        let len = digits
            .iter()
            .take(8)
            .take_while(|b| if radix == 16 { b.is_ascii_hexdigit() } else { b.is_ascii_digit() })
            .count();
        if len == 0 {
            return None;
        }
        // Leading zeros padding is a classic evasion: &#0000106; is 'j'.
        let value = core::str::from_utf8(&digits[..len]).ok().and_then(|s| u32::from_str_radix(s, radix).ok())?;
        let mut used = 1 + digits_start + len;
        if num.get(digits_start + len) == Some(&b';') {
            used += 1;
        }
        let mut buf = Vec::new();
        push_code_point(&mut buf, value);
        return Some((buf, used));
    }
    let name_len = rest.iter().take(10).take_while(|b| b.is_ascii_alphabetic()).count();
    let name = rest[..name_len].to_ascii_lowercase();
    let &(_, b) = ENTITIES.iter().find(|(n, _)| *n == name.as_slice())?;
    let used = name_len + usize::from(rest.get(name_len) == Some(&b';'));
    Some((vec![b], used))
}

pub fn remove_comments(input: &[u8]) -> Vec<u8> {
    remove_comments_to(input, usize::MAX)
}

fn remove_comments_to(input: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().min(max));
    let mut i = 0;
    while i < input.len() && out.len() < max {
        match &input[i..] {
            [b'/', b'*', ..] => {
                // MySQL's `/*! ... */` executes its content: keep it, drop the markers.
                let body_start = if input.get(i + 2) == Some(&b'!') { i + 3 } else { usize::MAX };
                let end = input[i + 2..].windows(2).position(|w| w == b"*/").map(|p| i + 2 + p);
                if body_start != usize::MAX {
                    let stop = end.unwrap_or(input.len());
                    let digits = input[body_start..stop].iter().take_while(|b| b.is_ascii_digit()).count();
                    out.push(b' ');
                    out.extend_from_slice(&input[body_start + digits..stop]);
                }
                out.push(b' ');
                i = end.map_or(input.len(), |e| e + 2);
            }
            [b'-', b'-', ..] | [b'#', ..] => {
                out.push(b' ');
                i = input[i..].iter().position(|&b| b == b'\n').map_or(input.len(), |p| i + p);
            }
            _ => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

pub fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    compress_whitespace_to(input, usize::MAX)
}

fn compress_whitespace_to(input: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().min(max));
    let mut space = false;
    for &b in input {
        if out.len() >= max {
            break;
        }
        if b.is_ascii_whitespace() || b == 0x0b || b == 0xa0 {
            if !space {
                out.push(b' ');
            }
            space = true;
        } else {
            out.push(b);
            space = false;
        }
    }
    out
}

pub fn normalize_path(input: &[u8]) -> Vec<u8> {
    normalize_path_to(input, usize::MAX)
}

fn normalize_path_to(input: &[u8], max: usize) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len().min(max));
    for &b in input {
        if out.len() >= max {
            break;
        }
        let b = if b == b'\\' { b'/' } else { b };
        if b == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(b);
        if out.ends_with(b"/./") {
            out.truncate(out.len() - 2);
        }
    }
    out
}

/// Strict standard base64 (padding optional); `None` unless the whole input is base64 of at
/// least 8 characters.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    base64_decode_to(input, usize::MAX)
}

fn base64_decode_to(input: &[u8], max: usize) -> Option<Vec<u8>> {
    let input = input.trim_ascii();
    let body = input.strip_suffix(b"==").or_else(|| input.strip_suffix(b"=")).unwrap_or(input);
    if body.len() < 8 || !body.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/') {
        return None;
    }
    let mut out = Vec::with_capacity((body.len() * 3 / 4).min(max));
    let (mut acc, mut bits) = (0u32, 0);
    for &c in body {
        if out.len() >= max {
            break;
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn traits_agree_with_each_transforms_own_scan() {
        use super::{Traits, Transform::*};
        let all = [
            UrlDecode,
            UrlDecodeOnce,
            HtmlDecode,
            Lowercase,
            RemoveComments,
            CompressWhitespace,
            RemoveControls,
            NormalizePath,
            Base64Decode,
            JsDecode,
        ];
        let alphabet = b"aZ %+&/-#.*\\\t\r\n\x00\x0b\x0c\xa0'1";
        // Every string of up to 3 bytes over an alphabet holding each trigger byte, and a
        // fixed-seed sample of longer ones.
        let mut inputs: Vec<Vec<u8>> = vec![vec![]];
        for len in 1..=3 {
            let mut next = Vec::new();
            for v in inputs.iter().filter(|v| v.len() == len - 1) {
                for &b in alphabet {
                    let mut w = v.clone();
                    w.push(b);
                    next.push(w);
                }
            }
            inputs.extend(next);
        }
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..2000 {
            let len = (x % 12) as usize + 4;
            let v = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            inputs.push(v);
        }
        for v in &inputs {
            let traits = Traits::of(v);
            for t in all {
                assert_eq!(traits.unchanged_by(t), t.leaves_unchanged(v), "{t:?} on {v:?}");
                // And the checks are sound: what they call unchanged, the transform returns as is.
                if t.leaves_unchanged(v) {
                    assert_eq!(&t.apply(v), v, "{t:?} changes {v:?}");
                }
            }
        }
    }

    use super::*;
    use Transform::*;

    #[test]
    fn url_decoding_handles_double_unicode_and_overlong() {
        assert_eq!(url_decode(b"a%20b+c%zz%4"), b"a b c%zz%4");
        assert_eq!(apply_all(&[UrlDecode], b"%252e%252e%252f"), b"../");
        assert_eq!(apply_all(&[UrlDecode], b"%u002e%u002e%u2215"), b"../");
        assert_eq!(apply_all(&[UrlDecode], b"%uff0e%uff0e/"), b"../");
        assert_eq!(apply_all(&[UrlDecode], b"%c0%ae%c0%ae%c0%af"), b"../");
        assert_eq!(apply_all(&[UrlDecode], b"%e0%80%ae"), b".");
        assert!(has_invalid_percent(b"100%"));
        assert!(has_invalid_percent(b"%g1"));
        assert!(!has_invalid_percent(b"%41%u0041"));
    }

    #[test]
    fn html_entities_named_decimal_hex_padded_unterminated() {
        assert_eq!(html_decode(b"&lt;script&gt;"), b"<script>");
        assert_eq!(html_decode(b"&#106;&#x61;&#X76&#0000097"), b"java");
        assert_eq!(html_decode(b"a &amp b &bogus; &#;"), b"a & b &bogus; &#;");
        assert_eq!(html_decode(b"&#99999999999;"), b"?999;", "digits are bounded");
    }

    #[test]
    fn comments_whitespace_path() {
        assert_eq!(remove_comments(b"un/**/ion sel/*x*/ect"), b"un ion sel ect");
        assert_eq!(remove_comments(b"/*!50000union*/ select -- rest"), b" union  select  ");
        assert_eq!(remove_comments(b"a/* unterminated"), b"a ");
        assert_eq!(compress_whitespace(b"a \t\n b"), b"a b");
        assert_eq!(normalize_path(b"..\\..//./etc/passwd"), b"../../etc/passwd");
        assert_eq!(RemoveControls.apply(b"jav\tas\ncript"), b"javascript");
        assert_eq!(Base64Decode.apply(b"Li4vZXRjL3Bhc3N3ZA=="), b"../etc/passwd");
        assert_eq!(Base64Decode.apply(b"not base64!"), b"");
    }

    #[test]
    fn transforms_are_total_on_arbitrary_bytes() {
        // A deterministic sweep of awkward inputs: every transform must return, bounded.
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..300 {
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b"%u&#;x/*-\\.c0ae\xc0\xe0\x80"[(seed % 18) as usize]
                })
                .collect();
            for t in [
                UrlDecode,
                UrlDecodeOnce,
                HtmlDecode,
                Lowercase,
                RemoveComments,
                CompressWhitespace,
                RemoveControls,
                NormalizePath,
                Base64Decode,
                JsDecode,
            ] {
                assert!(t.apply(&input).len() <= MAX_TRANSFORMED);
            }
        }
        // Stopping early keeps exactly the prefix the whole transform would have kept.
        let long: Vec<u8> =
            b"a%41B &lt;x/**/y -- z\n./\\\\ \t".iter().copied().cycle().take(MAX_TRANSFORMED * 3).collect();
        for t in [
            UrlDecode,
            HtmlDecode,
            RemoveComments,
            CompressWhitespace,
            RemoveControls,
            NormalizePath,
            Lowercase,
            JsDecode,
        ] {
            let full = match t {
                UrlDecode => url_decode(&long),
                HtmlDecode => html_decode(&long),
                RemoveComments => remove_comments(&long),
                CompressWhitespace => compress_whitespace(&long),
                NormalizePath => normalize_path(&long),
                JsDecode => super::super::jsdecode::js_decode(&long),
                RemoveControls => long.iter().copied().filter(|b| !matches!(b, 0 | b'\t' | b'\r' | b'\n')).collect(),
                _ => long.to_ascii_lowercase(),
            };
            let bounded = t.apply(&long);
            assert_eq!(bounded.len(), MAX_TRANSFORMED, "{t:?}");
            if t != UrlDecode {
                assert_eq!(bounded[..], full[..MAX_TRANSFORMED], "{t:?}");
            }
        }
        let huge = vec![b'%'; MAX_TRANSFORMED * 2];
        assert!(apply_all(&[UrlDecode, HtmlDecode], &huge).len() <= MAX_TRANSFORMED);
        assert_eq!(Transform::parse("url_decode"), Some(UrlDecode));
        assert_eq!(Transform::parse("nope"), None);
    }
}
