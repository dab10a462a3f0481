//! PCRE spellings the `regex` crate reads differently, rewritten into its syntax with the
//! same meaning (one linear pass; nothing here makes a pattern need backtracking):
//! - a `{` that does not open a counted repetition (`{`, `{{.*?}}`, `\s+{`) is a literal;
//! - inside a class, `[` is a literal (`[![\x5c]`) and a `]` right after `[` or `[^` too;
//! - escaped punctuation (`\<`, `\~`, `\&`...) is the character: written as `\xHH`, since
//!   the crate reads `\<`/`\>` as word boundaries and refuses some escapes in classes;
//! - non-ASCII literals are their UTF-8 bytes (`\xE2\x80\x99`), as PCRE without UTF mode
//!   sees them (inside a class: each byte a member);
//! - possessive quantifiers (`*+`, `++`, `?+`, `{n}+`) become greedy ones: in an automaton
//!   there is no backtracking to forbid, and the CRS uses them only where the next item
//!   cannot match what the repetition consumed, so the set of matched inputs is the same.
//!
//! Backreferences, lookaround and atomic groups are left as they are, so the crate rejects
//! them and the rule becomes a load error.

pub fn translate(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    let mut in_class = false;
    // Position just after `[` / `[^`, where `]` is a literal.
    let mut class_start = false;
    let mut after_quantifier = false;
    while i < chars.len() {
        let c = chars[i];
        let was_quantifier = std::mem::replace(&mut after_quantifier, false);
        let at_class_start = std::mem::replace(&mut class_start, false);
        match c {
            '\\' if i + 1 < chars.len() => {
                let n = chars[i + 1];
                if let Some((value, len)) = braced_hex(&chars[i..]) {
                    // `\x{bc}`: in PCRE without UTF mode (ModSecurity's), the byte 0xBC.
                    match u8::try_from(value) {
                        Ok(b) => out.push_str(&format!("\\x{b:02X}")),
                        Err(_) => push_bytes(&mut out, char::from_u32(value).unwrap_or('\u{FFFD}')),
                    }
                    i += len;
                    continue;
                }
                if n.is_ascii_punctuation() || !n.is_ascii() {
                    push_bytes(&mut out, n);
                } else {
                    out.push('\\');
                    out.push(n);
                }
                i += 2;
                continue;
            }
            _ if !c.is_ascii() => push_bytes(&mut out, c),
            '[' if in_class => {
                if let Some(len) = posix_class(&chars[i..]) {
                    out.extend(&chars[i..i + len]);
                    i += len;
                    continue;
                }
                out.push_str("\\[");
            }
            ']' if in_class && at_class_start => out.push_str("\\]"),
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            _ if in_class => {
                if c == '^' && out.ends_with('[') && !out.ends_with("\\[") {
                    class_start = true;
                }
                out.push(c);
            }
            '[' => {
                in_class = true;
                class_start = true;
                out.push('[');
            }
            '+' if was_quantifier => {}
            '*' | '+' => {
                out.push(c);
                after_quantifier = true;
            }
            '?' => {
                out.push('?');
                // `(?` opens a group; `x??` is lazy, `x?+` possessive.
                after_quantifier = !out[..out.len() - 1].ends_with('(') && !was_quantifier;
            }
            '{' => match counted_repetition(&chars[i..]) {
                Some(len) => {
                    out.extend(&chars[i..i + len]);
                    i += len;
                    after_quantifier = true;
                    continue;
                }
                None => out.push_str("\\{"),
            },
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

fn push_bytes(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("\\x{b:02X}"));
    }
}

/// `\x{HH...}`: the code point and the escape's length in chars.
fn braced_hex(s: &[char]) -> Option<(u32, usize)> {
    if s.get(1) != Some(&'x') || s.get(2) != Some(&'{') {
        return None;
    }
    let close = s.iter().position(|&c| c == '}')?;
    let digits: String = s[3..close].iter().collect();
    if digits.is_empty() || digits.len() > 6 {
        return None;
    }
    Some((u32::from_str_radix(&digits, 16).ok()?, close + 1))
}

/// `{n}`, `{n,}`, `{n,m}`: the length in chars, when `s` starts with one.
fn counted_repetition(s: &[char]) -> Option<usize> {
    let close = s.iter().position(|&c| c == '}')?;
    let body: String = s[1..close].iter().collect();
    let (lo, hi) = match body.split_once(',') {
        Some((lo, hi)) => (lo, Some(hi)),
        None => (body.as_str(), None),
    };
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    (digits(lo) && hi.is_none_or(|h| h.is_empty() || digits(h))).then_some(close + 1)
}

/// `[:alpha:]` and friends inside a class.
fn posix_class(s: &[char]) -> Option<usize> {
    if s.get(1) != Some(&':') {
        return None;
    }
    let end = s.iter().skip(2).position(|&c| c == ':').map(|p| p + 2)?;
    (s.get(end + 1) == Some(&']') && s[2..end].iter().all(|c| c.is_ascii_alphabetic())).then_some(end + 2)
}

#[cfg(test)]
mod tests {
    use super::translate;

    fn ok(p: &str) -> regex::bytes::Regex {
        super::super::operators::regex(p).unwrap_or_else(|e| panic!("{p} -> {}: {e}", translate(p)))
    }

    #[test]
    fn literal_braces_and_counted_repetitions() {
        assert_eq!(translate("a{2,3}b{c}"), "a{2,3}b\\{c\\}");
        assert!(ok(r"{{.*?}}").is_match(b"{{x}}"));
        assert!(ok(r"^\(\s*\)\s+{").is_match(b"() {"));
        assert!(ok(r"a{2}").is_match(b"aa"));
    }

    #[test]
    fn classes_with_brackets_and_escapes() {
        let re = ok(r"^[^\[\]{}![\x5c]+$");
        assert!(re.is_match(b"abc"));
        assert!(!re.is_match(b"a[b"));
        assert!(!re.is_match(b"a\\b"));
        let re = ok(r"[\<\>\~\&]");
        assert!(re.is_match(b"<") && re.is_match(b"~") && !re.is_match(b"a"));
        assert!(ok(r"[]a]").is_match(b"]"));
        assert!(ok(r"[^]a]").is_match(b"b"));
        assert!(ok(r"[[:digit:]]").is_match(b"5"));
        assert!(ok(r"\<a\>").is_match(b"<a>"));
    }

    #[test]
    fn non_ascii_is_bytes() {
        let re = ok("[´’]");
        assert!(re.is_match("’".as_bytes()));
        assert!(re.is_match(b"\xe2"), "each byte of the class member is a member, as in PCRE");
        assert!(ok("a’").is_match("a’".as_bytes()));
    }

    #[test]
    fn braced_hex_escapes_are_bytes() {
        assert_eq!(translate(r"\x{bc}[^>\x{be}]"), r"\xBC[^>\xBE]");
        let re = ok(r"^[A-Z_a-z\x7f-\x{ff}]+$");
        assert!(re.is_match(b"a\xe9") && !re.is_match(b"a-"));
        assert!(ok(r"\x{c2}\x{b4}").is_match("´".as_bytes()));
    }

    #[test]
    fn possessive_becomes_greedy_lazy_stays() {
        assert_eq!(translate(r"\s*+;a++b?+c{2}+"), r"\s*;a+b?c{2}");
        assert_eq!(translate(r"a+?(?:b)??"), r"a+?(?:b)??");
        assert!(ok(r"[^?\w\s=.,;)(]++\s*?x").is_match(b"%% x"));
    }

    #[test]
    fn non_linear_constructs_still_rejected() {
        for p in [r"(a)\1", r"a(?=b)", r"(?<!a)b", "(?>a)"] {
            assert!(super::super::operators::regex(p).is_err(), "{p}");
        }
    }
}
