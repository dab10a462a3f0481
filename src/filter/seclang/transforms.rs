//! SecLang transformations (`t:urlDecodeUni`, `t:jsDecode`...): the names the CRS uses,
//! mapped to the decoders of `filter::transform` where one exists and implemented here
//! otherwise. Every function is total (any bytes in, never a panic), linear in its input and
//! cut at `MAX_TRANSFORMED` bytes of output.

use super::decoders::*;
use crate::filter::transform::{self as base, MAX_TRANSFORMED};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecTransform {
    Lowercase,
    Uppercase,
    UrlDecode,
    UrlDecodeUni,
    HtmlEntityDecode,
    JsDecode,
    CssDecode,
    CmdLine,
    RemoveNulls,
    ReplaceNulls,
    CompressWhitespace,
    RemoveWhitespace,
    NormalisePath,
    NormalisePathWin,
    ReplaceComments,
    RemoveComments,
    RemoveCommentsChar,
    Base64Decode,
    Base64DecodeExt,
    HexDecode,
    HexEncode,
    SqlHexDecode,
    Utf8ToUnicode,
    Length,
    Trim,
    TrimLeft,
    TrimRight,
    Sha1,
    EscapeSeqDecode,
}

/// Result of looking a `t:` name up.
pub enum Lookup {
    /// `t:none`: drop the transformations inherited from `SecDefaultAction`.
    None,
    Transform(SecTransform),
    Unknown,
}

/// The `t:` names, ModSecurity's spelling (matched case-insensitively), and both spellings
/// of the path normalisations. The one table of transformations: `lookup` and the tests read it.
pub const NAMES: &[(&str, SecTransform)] = {
    use SecTransform::*;
    &[
        ("lowercase", Lowercase),
        ("uppercase", Uppercase),
        ("urlDecode", UrlDecode),
        ("urlDecodeUni", UrlDecodeUni),
        ("htmlEntityDecode", HtmlEntityDecode),
        ("jsDecode", JsDecode),
        ("cssDecode", CssDecode),
        ("cmdLine", CmdLine),
        ("removeNulls", RemoveNulls),
        ("replaceNulls", ReplaceNulls),
        ("compressWhitespace", CompressWhitespace),
        ("removeWhitespace", RemoveWhitespace),
        ("normalisePath", NormalisePath),
        ("normalizePath", NormalisePath),
        ("normalisePathWin", NormalisePathWin),
        ("normalizePathWin", NormalisePathWin),
        ("replaceComments", ReplaceComments),
        ("removeComments", RemoveComments),
        ("removeCommentsChar", RemoveCommentsChar),
        ("base64Decode", Base64Decode),
        ("base64DecodeExt", Base64DecodeExt),
        ("hexDecode", HexDecode),
        ("hexEncode", HexEncode),
        ("sqlHexDecode", SqlHexDecode),
        ("utf8toUnicode", Utf8ToUnicode),
        ("length", Length),
        ("trim", Trim),
        ("trimLeft", TrimLeft),
        ("trimRight", TrimRight),
        ("sha1", Sha1),
        ("escapeSeqDecode", EscapeSeqDecode),
    ]
};

pub fn lookup(name: &str) -> Lookup {
    if name.eq_ignore_ascii_case("none") {
        return Lookup::None;
    }
    NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map_or(Lookup::Unknown, |&(_, t)| Lookup::Transform(t))
}

impl SecTransform {
    pub fn apply(self, input: &[u8]) -> Vec<u8> {
        use SecTransform::*;
        let input = &input[..input.len().min(MAX_TRANSFORMED)];
        let mut out = match self {
            Lowercase => input.to_ascii_lowercase(),
            Uppercase => input.to_ascii_uppercase(),
            UrlDecode => url_decode_plain(input),
            // The base decoder also reads `%uXXXX` and folds full-width ASCII, as IIS does.
            UrlDecodeUni => base::url_decode(input),
            HtmlEntityDecode => base::html_decode(input),
            JsDecode => js_decode(input, true),
            CssDecode => css_decode(input),
            CmdLine => cmd_line(input),
            RemoveNulls => input.iter().copied().filter(|&b| b != 0).collect(),
            ReplaceNulls => input.iter().map(|&b| if b == 0 { b' ' } else { b }).collect(),
            CompressWhitespace => base::compress_whitespace(input),
            RemoveWhitespace => input.iter().copied().filter(|&b| !is_space(b)).collect(),
            NormalisePath => normalise_path(input, false),
            NormalisePathWin => normalise_path(input, true),
            ReplaceComments => replace_comments(input),
            RemoveComments => base::remove_comments(input),
            RemoveCommentsChar => remove_comment_chars(input),
            Base64Decode => base64_decode(input, false),
            Base64DecodeExt => base64_decode(input, true),
            HexDecode => hex_decode(input),
            HexEncode => input.iter().flat_map(|b| format!("{b:02x}").into_bytes()).collect(),
            SqlHexDecode => sql_hex_decode(input),
            Utf8ToUnicode => utf8_to_unicode(input),
            Length => input.len().to_string().into_bytes(),
            Trim => input.trim_ascii().to_vec(),
            TrimLeft => input.trim_ascii_start().to_vec(),
            TrimRight => input.trim_ascii_end().to_vec(),
            Sha1 => sha1_smol::Sha1::from(input).digest().bytes().to_vec(),
            // ANSI C escapes: the JavaScript ones without `\u`.
            EscapeSeqDecode => js_decode(input, false),
        };
        out.truncate(MAX_TRANSFORMED);
        out
    }
}

pub fn apply_all(chain: &[SecTransform], input: &[u8]) -> Vec<u8> {
    let mut value = input[..input.len().min(MAX_TRANSFORMED)].to_vec();
    for t in chain {
        if t.may_change(&value) {
            value = t.apply(&value);
        }
    }
    value
}

impl SecTransform {
    /// False when the transformation certainly returns its input unchanged: a cheap scan
    /// that spares the copy for the plain values most traffic is made of.
    pub fn may_change(self, input: &[u8]) -> bool {
        use SecTransform::*;
        let any = |pred: fn(&u8) -> bool| input.iter().any(pred);
        match self {
            Lowercase => any(u8::is_ascii_uppercase),
            Uppercase => any(u8::is_ascii_lowercase),
            UrlDecode | UrlDecodeUni => any(|&b| b == b'%' || b == b'+'),
            HtmlEntityDecode => any(|&b| b == b'&'),
            JsDecode | CssDecode | EscapeSeqDecode => any(|&b| b == b'\\'),
            RemoveNulls | ReplaceNulls => any(|&b| b == 0),
            RemoveWhitespace => any(|&b| is_space(b)),
            CompressWhitespace => any(|&b| is_space(b) && b != b' ') || input.windows(2).any(|w| w == b"  "),
            Utf8ToUnicode => any(|&b| b >= 0x80),
            ReplaceComments => input.windows(2).any(|w| w == b"/*"),
            RemoveComments | RemoveCommentsChar => any(|&b| matches!(b, b'/' | b'*' | b'-' | b'#' | b'<')),
            NormalisePath => any(|&b| b == b'.') || input.windows(2).any(|w| w == b"//"),
            NormalisePathWin => any(|&b| b == b'.' || b == b'\\') || input.windows(2).any(|w| w == b"//"),
            SqlHexDecode => input.windows(2).any(|w| w[0] == b'0' && (w[1] | 0x20) == b'x'),
            Trim | TrimLeft | TrimRight => {
                input.first().is_some_and(|&b| b.is_ascii_whitespace())
                    || input.last().is_some_and(|&b| b.is_ascii_whitespace())
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SecTransform::*;
    use super::*;

    fn t(tr: SecTransform, input: &[u8]) -> Vec<u8> {
        tr.apply(input)
    }

    #[test]
    fn names_map_case_insensitively() {
        assert!(matches!(lookup("urlDecodeUni"), Lookup::Transform(UrlDecodeUni)));
        assert!(matches!(lookup("base64decode"), Lookup::Transform(Base64Decode)));
        assert!(matches!(lookup("normalizePathWin"), Lookup::Transform(NormalisePathWin)));
        assert!(matches!(lookup("none"), Lookup::None));
        assert!(matches!(lookup("md5"), Lookup::Unknown));
    }

    #[test]
    fn url_and_html() {
        assert_eq!(t(UrlDecode, b"a%27+b%zz%u0041"), b"a' b%zz%u0041");
        assert_eq!(t(UrlDecodeUni, b"%u0027%uff1c"), b"'<");
        assert_eq!(t(HtmlEntityDecode, b"&lt;&#x3c;&#60"), b"<<<");
        assert_eq!(t(Lowercase, b"SeLeCT"), b"select");
        assert_eq!(t(Uppercase, b"ab"), b"AB");
    }

    #[test]
    fn js_and_css() {
        assert_eq!(t(JsDecode, br"\u0061\x6cert\(1\)\n\101\uff1c\"), b"alert(1)\nA<\\");
        assert_eq!(t(JsDecode, br"\u00"), b"u00");
        assert_eq!(t(CssDecode, b"\\6a \\61vascript\\\nx\\:"), b"javascriptx:");
        assert_eq!(t(CssDecode, b"a\\"), b"a");
    }

    #[test]
    fn cmdline_nulls_whitespace() {
        assert_eq!(t(CmdLine, b"C^at  \"/Etc/P'asswd\";  ls ,x (y)"), b"cat/etc/passwd ls x(y)");
        assert_eq!(t(RemoveNulls, b"a\0b"), b"ab");
        assert_eq!(t(ReplaceNulls, b"a\0b"), b"a b");
        assert_eq!(t(CompressWhitespace, b"a \t\n b"), b"a b");
        assert_eq!(t(RemoveWhitespace, b" a \t b\xa0"), b"ab");
        assert_eq!(t(Trim, b"  a b \n"), b"a b");
        assert_eq!(t(TrimLeft, b"  a "), b"a ");
        assert_eq!(t(TrimRight, b"  a "), b"  a");
    }

    #[test]
    fn paths() {
        assert_eq!(t(NormalisePath, b"/a/./b/../../../etc//passwd"), b"/etc/passwd");
        assert_eq!(t(NormalisePath, b"../../etc/passwd"), b"../../etc/passwd");
        assert_eq!(t(NormalisePath, b"a/b/.."), b"a/");
        assert_eq!(t(NormalisePathWin, b"c:\\windows\\..\\boot.ini"), b"c:/boot.ini");
    }

    #[test]
    fn comments() {
        assert_eq!(t(ReplaceComments, b"un/**/ion/*x"), b"un ion ");
        assert_eq!(t(RemoveComments, b"un/**/ion -- x"), b"un ion  ");
        assert_eq!(t(RemoveCommentsChar, b"<!--a-->/*b*/--c#"), b"abc");
    }

    #[test]
    fn encodings() {
        assert_eq!(t(Base64Decode, b"Li4vZXRjL3Bhc3N3ZA=="), b"../etc/passwd");
        assert_eq!(t(Base64Decode, b"YWJj!ZGVm"), b"abc");
        assert_eq!(t(Base64DecodeExt, b"YW.Jj"), b"abc");
        assert_eq!(t(HexDecode, b"414243zz"), b"ABCzz");
        assert_eq!(t(HexEncode, b"AB"), b"4142");
        assert_eq!(t(SqlHexDecode, b"select 0x414243, 0xZ"), b"select ABC, 0xZ");
        assert_eq!(t(Utf8ToUnicode, "a\u{e9}\u{ff1c}\u{1f600}".as_bytes()), b"a%u00e9%uff1c%uf600");
        assert_eq!(t(Utf8ToUnicode, b"a\xffb"), b"a\xffb");
        assert_eq!(t(Length, b"hello"), b"5");
        assert_eq!(t(Sha1, b"abc").len(), 20);
        assert_eq!(t(EscapeSeqDecode, br"a\nb\x41\101\u0041"), b"a\nbAAu0041");
    }

    #[test]
    fn total_and_bounded_on_awkward_bytes() {
        let all: Vec<SecTransform> = NAMES.iter().map(|&(_, t)| t).collect();
        let alphabet = b"\\%u0xX7/.*-#<!&;\"' \0\xc3\xa9\xff";
        let mut seed = 0x2545f4914f6cdd1du64;
        for len in 0..200 {
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            for &tr in &all {
                assert!(tr.apply(&input).len() <= MAX_TRANSFORMED);
            }
        }
        let huge = vec![b'a'; MAX_TRANSFORMED * 2];
        for len in 0..200 {
            let input: Vec<u8> = (0..len).map(|i| alphabet[(i * 7 + len) % alphabet.len()]).collect();
            for &tr in &all {
                if !tr.may_change(&input) {
                    assert_eq!(tr.apply(&input), input, "{tr:?} said unchanged");
                }
            }
        }
        assert_eq!(apply_all(&[HexEncode], &huge).len(), MAX_TRANSFORMED);
    }
}
