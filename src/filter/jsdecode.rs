//! The `js_decode` transform: JavaScript string escapes (`\uXXXX`, `\u{X..}`, `\xHH`, octal,
//! `\n`-style), as a browser or Node.js would read them, so `\u003cscript\u003e` is matched as
//! `<script>`. Total, linear, bounded like every transform (see `transform`).

use super::transform::{hex, push_code_point};

/// The whole decoded value, unbounded (tests compare the engine's bounded copy with it).
#[cfg(test)]
pub fn js_decode(input: &[u8]) -> Vec<u8> {
    js_decode_to(input, usize::MAX)
}

/// The value of up to `max` hex digits at `at`, and how many there were.
fn hex_run(input: &[u8], at: usize, max: usize) -> (u32, usize) {
    let mut value = 0u32;
    let mut len = 0;
    while len < max {
        match input.get(at + len).and_then(|&c| hex(c)) {
            Some(d) => value = value << 4 | u32::from(d),
            None => break,
        }
        len += 1;
    }
    (value, len)
}

pub(super) fn js_decode_to(input: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().min(max));
    let mut i = 0;
    while i < input.len() && out.len() < max {
        let b = input[i];
        let Some(&next) = input.get(i + 1).filter(|_| b == b'\\') else {
            out.push(b);
            i += 1;
            continue;
        };
        match next {
            b'u' if input.get(i + 2) == Some(&b'{') => {
                let (cp, len) = hex_run(input, i + 3, 6);
                if len > 0 && input.get(i + 3 + len) == Some(&b'}') {
                    push_code_point(&mut out, cp);
                    i += 4 + len;
                } else {
                    i += 2; // `\u` not followed by an escape: the `u` stays
                    out.push(b'u');
                }
            }
            b'u' => match hex_run(input, i + 2, 4) {
                (mut cp, 4) => {
                    i += 6;
                    if (0xD800..0xDC00).contains(&cp) && input.get(i..i + 2) == Some(b"\\u") {
                        if let (low @ 0xDC00..=0xDFFF, 4) = hex_run(input, i + 2, 4) {
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                            i += 6;
                        }
                    }
                    push_code_point(&mut out, cp);
                }
                _ => {
                    out.push(b'u');
                    i += 2;
                }
            },
            b'x' => match hex_run(input, i + 2, 2) {
                (v, 2) => {
                    out.push(v as u8);
                    i += 4;
                }
                _ => {
                    out.push(b'x');
                    i += 2;
                }
            },
            b'0'..=b'7' => {
                let mut v = 0u32;
                let mut len = 0;
                while len < 3 && matches!(input.get(i + 1 + len), Some(b'0'..=b'7')) && v * 8 + 7 <= 0xFF {
                    v = v * 8 + u32::from(input[i + 1 + len] - b'0');
                    len += 1;
                }
                out.push(v as u8);
                i += 1 + len;
            }
            _ => {
                out.push(match next {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'v' => 0x0b,
                    b'a' => 0x07,
                    other => other,
                });
                i += 2;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::transform::Transform;

    #[test]
    fn js_escapes_decode() {
        assert_eq!(js_decode(br"\u003cscript\u003ealert(1)\u003c/script\u003e"), b"<script>alert(1)</script>");
        assert_eq!(js_decode(br"\x3cimg\x20src=x\x3e \74\076 \u{3c}"), b"<img src=x> <> <");
        assert_eq!(js_decode(br"a\nb\tc\'d\\e\/f\q"), b"a\nb\tc'd\\e/fq");
        assert_eq!(js_decode("\\ud83d\\ude00 \\uff1c".as_bytes()), "\u{1F600} !".replace('!', "<").as_bytes());
        assert_eq!(js_decode(br"\u12 \xZ \u{} \"), br"u12 xZ u{} \", "broken escapes keep their letter");
        assert_eq!(js_decode(br"\0\400"), b"\x00\x200", "octal stops at 0xff");
        assert_eq!(Transform::parse("js_decode"), Some(Transform::JsDecode));
    }
}
