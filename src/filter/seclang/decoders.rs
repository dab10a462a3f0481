//! The decoders behind the SecLang transformations that `filter::transform` does not
//! already have (jsDecode, cssDecode, cmdLine, normalisePath, base64 as ModSecurity reads it,
//! hex, SQL hex, utf8toUnicode...). Each is total, linear, and allocates one output.

pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0xa0)
}

pub(super) fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

pub(super) fn hex_at(input: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = input.get(at..at + n)?;
    digits.iter().try_fold(0u32, |acc, &c| Some(acc << 4 | u32::from(hex(c)?)))
}

/// ModSecurity's `urlDecode`: one pass, `%XX` and `+`, invalid escapes kept.
pub(super) fn url_decode_plain(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if hex_at(input, i + 1, 2).is_some() => {
                out.push(hex_at(input, i + 1, 2).unwrap_or(0) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A `\uXXXX` code point as ModSecurity writes it: the low byte, with full-width ASCII
/// (U+FF01..U+FF5E) folded to ASCII.
pub(super) fn unicode_low_byte(cp: u32) -> u8 {
    if (0xFF01..=0xFF5E).contains(&cp) {
        (cp - 0xFF01 + 0x21) as u8
    } else {
        (cp & 0xFF) as u8
    }
}

/// JavaScript escapes: `\xHH`, `\uHHHH`, `\0`-`\377` octal, `\n` and friends, `\c` → `c`.
pub(super) fn js_decode(input: &[u8], unicode: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let next = input[i + 1];
        if unicode && matches!(next, b'u' | b'U') {
            if let Some(cp) = hex_at(input, i + 2, 4) {
                out.push(unicode_low_byte(cp));
                i += 6;
                continue;
            }
        }
        if matches!(next, b'x' | b'X') {
            if let Some(v) = hex_at(input, i + 2, 2) {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        if (b'0'..=b'7').contains(&next) {
            let digits = input[i + 1..].iter().take(3).take_while(|b| (b'0'..=b'7').contains(b)).count();
            let digits = if digits == 3 && next > b'3' { 2 } else { digits };
            let v = input[i + 1..i + 1 + digits].iter().fold(0u32, |acc, &b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 1 + digits;
            continue;
        }
        out.push(match next {
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            other => other,
        });
        i += 2;
    }
    out
}

/// CSS escapes: `\` and 1-6 hex digits (one following blank eaten), `\` newline removed,
/// `\` and any other character is the character.
pub(super) fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= input.len() {
            break;
        }
        let digits = input[i + 1..].iter().take(6).take_while(|&&b| hex(b).is_some()).count();
        if digits > 0 {
            let cp = hex_at(input, i + 1, digits).unwrap_or(0);
            out.push(unicode_low_byte(cp));
            i += 1 + digits;
            if input.get(i).is_some_and(|&b| is_space(b)) {
                i += 1;
            }
        } else if input[i + 1] == b'\n' {
            i += 2;
        } else {
            out.push(input[i + 1]);
            i += 2;
        }
    }
    out
}

/// Windows/Unix command-line normalisation: `\ " ' ^` deleted, `,` and `;` become spaces,
/// runs of blanks become one, blanks before `/` and `(` dropped, lower case.
pub(super) fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        match b {
            b'\\' | b'"' | b'\'' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => space = true,
            b'/' | b'(' => {
                space = false;
                out.push(b);
            }
            _ => {
                if space && !out.is_empty() {
                    out.push(b' ');
                }
                space = false;
                out.push(b.to_ascii_lowercase());
            }
        }
    }
    out
}

/// Resolves `.` and `..` segments and collapses `//`; with `windows`, `\` is a separator.
pub(super) fn normalise_path(input: &[u8], windows: bool) -> Vec<u8> {
    let input: Vec<u8> =
        if windows { input.iter().map(|&b| if b == b'\\' { b'/' } else { b }).collect() } else { input.to_vec() };
    let absolute = input.first() == Some(&b'/');
    let trailing = input.last() == Some(&b'/') || input.ends_with(b"/.") || input.ends_with(b"/..");
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in input.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if parts.last().is_some_and(|p| *p != b"..") {
                    parts.pop();
                } else if !absolute {
                    parts.push(seg);
                }
            }
            _ => parts.push(seg),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&parts.join(&b'/'));
    if trailing && !out.ends_with(b"/") && !parts.is_empty() {
        out.push(b'/');
    }
    out
}

/// `/* ... */` becomes one space (an unterminated comment too).
pub(super) fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(b"/*") {
            out.push(b' ');
            i = input[i + 2..].windows(2).position(|w| w == b"*/").map_or(input.len(), |p| i + 2 + p + 2);
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// The comment markers themselves (`/*`, `*/`, `<!--`, `-->`, `--`, `#`) removed.
pub(super) fn remove_comment_chars(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        let skip =
            [&b"<!--"[..], b"-->", b"/*", b"*/", b"--", b"#"].iter().find(|m| rest.starts_with(m)).map(|m| m.len());
        match skip {
            Some(n) => i += n,
            None => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

/// Base64 as ModSecurity decodes it: stops at the first character outside the alphabet
/// (`ext`: skips such characters instead), padding optional.
pub(super) fn base64_decode(input: &[u8], ext: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ if ext => continue,
            _ => break,
        };
        acc = (acc << 6 | u32::from(v)) & 0xFFFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Pairs of hex digits to bytes; anything else is kept.
pub(super) fn hex_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 2 + 1);
    let mut i = 0;
    while i < input.len() {
        match hex_at(input, i, 2) {
            Some(v) => {
                out.push(v as u8);
                i += 2;
            }
            None => {
                out.push(input[i]);
                i += 1;
            }
        }
    }
    out
}

/// `0x414243` (SQL hex literals) to `ABC`; everything else kept.
pub(super) fn sql_hex_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if matches!(input[i..], [b'0', b'x' | b'X', a, b, ..] if hex(a).is_some() && hex(b).is_some()) {
            i += 2;
            while let Some(v) = hex_at(input, i, 2) {
                out.push(v as u8);
                i += 2;
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// Multi-byte UTF-8 sequences become `%uXXXX` (so rules written for `%u` evasions see them);
/// invalid bytes are kept.
pub(super) fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    for chunk in input.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_ascii() {
                out.push(c as u8);
            } else {
                out.extend_from_slice(format!("%u{:04x}", u32::from(c) & 0xFFFF).as_bytes());
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}
