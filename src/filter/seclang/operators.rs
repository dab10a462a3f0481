//! SecLang operators (`@rx`, `@pm`, `@within`, `@eq`...): compiled once at load time, run on
//! one transformed value at a time. `@rx` uses the `regex` crate (finite automata: linear
//! time, no backtracking); a pattern it rejects (backreferences, lookaround, possessive
//! quantifiers) is a load error, never a skipped rule. Operands holding macros
//! (`@ge %{tx.inbound_anomaly_score_threshold}`) are expanded per evaluation.

use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::{Regex, RegexBuilder};

use super::model::LoadErrorKind;
use crate::filter::ip::Cidr;

/// An operand as written: expanded per evaluation only when it holds `%{...}`.
#[derive(Debug, Clone)]
pub struct Operand {
    pub text: String,
    pub dynamic: bool,
}

impl Operand {
    fn new(text: &str) -> Operand {
        Operand { text: text.to_string(), dynamic: text.contains("%{") }
    }

    fn value(&self, expand: &dyn Fn(&str) -> Vec<u8>) -> std::borrow::Cow<'_, [u8]> {
        if self.dynamic {
            expand(&self.text).into()
        } else {
            self.text.as_bytes().into()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    Eq,
    Ge,
    Gt,
    Lt,
    Le,
}

#[derive(Debug, Clone)]
pub enum Operator {
    Rx(Regex),
    /// A pattern built from macros, compiled when the rule runs.
    RxDynamic(Operand),
    Pm(AhoCorasick),
    StrEq(Operand),
    Contains(Operand),
    BeginsWith(Operand),
    EndsWith(Operand),
    Within(Operand),
    Number(Compare, Operand),
    IpMatch(Vec<Cidr>),
    ValidateByteRange(Box<[bool; 256]>),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    DetectSqli,
    DetectXss,
    Unconditional,
    NoMatch,
}

/// A failed operator compile: what kind of load error, and the detail.
pub type CompileError = (LoadErrorKind, String);

pub fn regex(pattern: &str) -> Result<Regex, regex::Error> {
    // ModSecurity compiles with PCRE_DOTALL and without UTF mode: `.` is any byte, `\w` ASCII.
    RegexBuilder::new(&super::pcre::translate(pattern))
        .unicode(false)
        .dot_matches_new_line(true)
        .size_limit(64 << 20)
        .dfa_size_limit(8 << 20)
        .build()
}

/// Compiles `@name argument`; `rule_dir` resolves `@pmFromFile` paths.
pub fn compile(name: &str, arg: &str, rule_dir: &Path) -> Result<Operator, CompileError> {
    let invalid = |d: String| (LoadErrorKind::InvalidValue, d);
    Ok(match name.to_ascii_lowercase().as_str() {
        "rx" if arg.contains("%{") => Operator::RxDynamic(Operand::new(arg)),
        "rx" => Operator::Rx(regex(arg).map_err(|e| (LoadErrorKind::UnsupportedRegex, first_line(&e.to_string())))?),
        "pm" => phrases(arg.split_ascii_whitespace().map(str::to_string).collect())?,
        "pmfromfile" | "pmf" => {
            let mut all = Vec::new();
            for file in arg.split_ascii_whitespace() {
                if file.starts_with("http://") || file.starts_with("https://") {
                    return Err((LoadErrorKind::UnsupportedOperator, format!("@pmFromFile from a URL: {file}")));
                }
                let path = rule_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
                all.extend(
                    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string),
                );
            }
            phrases(all)?
        }
        "streq" => Operator::StrEq(Operand::new(arg)),
        "contains" => Operator::Contains(Operand::new(arg)),
        "beginswith" => Operator::BeginsWith(Operand::new(arg)),
        "endswith" => Operator::EndsWith(Operand::new(arg)),
        "within" => Operator::Within(Operand::new(arg)),
        "eq" => Operator::Number(Compare::Eq, Operand::new(arg)),
        "ge" => Operator::Number(Compare::Ge, Operand::new(arg)),
        "gt" => Operator::Number(Compare::Gt, Operand::new(arg)),
        "lt" => Operator::Number(Compare::Lt, Operand::new(arg)),
        "le" => Operator::Number(Compare::Le, Operand::new(arg)),
        "ipmatch" => Operator::IpMatch(
            arg.split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| Cidr::parse(s.trim()))
                .collect::<Result<_, _>>()
                .map_err(invalid)?,
        ),
        "validatebyterange" => Operator::ValidateByteRange(
            byte_ranges(arg).ok_or_else(|| invalid(format!("invalid byte range \"{arg}\"")))?,
        ),
        "validateurlencoding" => Operator::ValidateUrlEncoding,
        "validateutf8encoding" => Operator::ValidateUtf8Encoding,
        "detectsqli" => Operator::DetectSqli,
        "detectxss" => Operator::DetectXss,
        "unconditionalmatch" => Operator::Unconditional,
        "nomatch" => Operator::NoMatch,
        other => return Err((LoadErrorKind::UnsupportedOperator, format!("@{other}"))),
    })
}

fn first_line(s: &str) -> String {
    s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

fn phrases(list: Vec<String>) -> Result<Operator, CompileError> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(&list)
        .map(Operator::Pm)
        .map_err(|e| (LoadErrorKind::InvalidValue, format!("phrase set: {e}")))
}

fn byte_ranges(arg: &str) -> Option<Box<[bool; 256]>> {
    let mut allowed = Box::new([false; 256]);
    for part in arg.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u8>().ok()?, b.trim().parse::<u8>().ok()?),
            None => {
                let v = part.parse::<u8>().ok()?;
                (v, v)
            }
        };
        if lo > hi {
            return None;
        }
        for b in lo..=hi {
            allowed[usize::from(b)] = true;
        }
    }
    Some(allowed)
}

/// C's `atoi`: leading blanks, a sign, digits; anything else ends the number (0 if none).
pub fn atoi(value: &[u8]) -> i64 {
    let s = value.trim_ascii_start();
    let (negative, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n =
        digits.iter().take_while(|b| b.is_ascii_digit()).take(18).fold(0i64, |acc, &b| acc * 10 + i64::from(b - b'0'));
    if negative {
        -n
    } else {
        n
    }
}

/// Up to ten captures (`TX.0`..`TX.9`) of a match, when the rule asked for `capture`.
pub type Captures = Vec<Vec<u8>>;

impl Operator {
    /// True when the operator matches `value`. `expand` expands macros in dynamic operands;
    /// `captures` (when `Some`) receives the match for `TX.0` and the groups for `TX.1`...
    pub fn matches(&self, value: &[u8], expand: &dyn Fn(&str) -> Vec<u8>, captures: Option<&mut Captures>) -> bool {
        let mut caught: Option<Captures> = None;
        let matched = match self {
            Operator::Rx(re) => rx(re, value, captures.is_some(), &mut caught),
            Operator::RxDynamic(op) => {
                let pattern = String::from_utf8_lossy(&op.value(expand)).into_owned();
                regex(&pattern).is_ok_and(|re| rx(&re, value, captures.is_some(), &mut caught))
            }
            Operator::Pm(ac) => match ac.find(value) {
                Some(m) => {
                    caught = Some(vec![value[m.start()..m.end()].to_vec()]);
                    true
                }
                None => false,
            },
            Operator::StrEq(op) => value == &*op.value(expand),
            Operator::Contains(op) => contains(value, &op.value(expand)),
            Operator::BeginsWith(op) => value.starts_with(&op.value(expand)),
            Operator::EndsWith(op) => value.ends_with(&op.value(expand)),
            Operator::Within(op) => value.is_empty() || contains(&op.value(expand), value),
            Operator::Number(cmp, op) => {
                let (a, b) = (atoi(value), atoi(&op.value(expand)));
                match cmp {
                    Compare::Eq => a == b,
                    Compare::Ge => a >= b,
                    Compare::Gt => a > b,
                    Compare::Lt => a < b,
                    Compare::Le => a <= b,
                }
            }
            Operator::IpMatch(list) => std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .is_some_and(|ip| list.iter().any(|c| c.contains(ip))),
            Operator::ValidateByteRange(allowed) => value.iter().any(|&b| !allowed[usize::from(b)]),
            Operator::ValidateUrlEncoding => invalid_url_encoding(value),
            Operator::ValidateUtf8Encoding => std::str::from_utf8(value).is_err(),
            Operator::DetectSqli => {
                let result = libinjectionrs::detect_sqli(value);
                if result.is_injection() {
                    caught = Some(vec![result
                        .fingerprint
                        .as_ref()
                        .map(|f| f.as_str().as_bytes().to_vec())
                        .unwrap_or_default()]);
                }
                result.is_injection()
            }
            Operator::DetectXss => libinjectionrs::detect_xss(value).is_injection(),
            Operator::Unconditional => true,
            Operator::NoMatch => false,
        };
        if let (true, Some(out), Some(c)) = (matched, captures, caught) {
            *out = c;
        }
        matched
    }
}

fn rx(re: &Regex, value: &[u8], want: bool, caught: &mut Option<Captures>) -> bool {
    // The DFA answers "does it match" fast; groups need the slower engines, so only then.
    if !re.is_match(value) {
        return false;
    }
    if !want {
        return true;
    }
    match re.captures(value) {
        Some(c) => {
            *caught =
                Some((0..c.len().min(10)).map(|i| c.get(i).map_or(Vec::new(), |m| m.as_bytes().to_vec())).collect());
            true
        }
        None => false,
    }
}

/// Substring search, linear time: a long needle in a long haystack goes through Aho-Corasick.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > haystack.len() {
        return false;
    }
    // A direct scan costs at most haystack x needle: fine while that product is small (the
    // common `@within` of a short value in a policy list builds nothing per call).
    if needle.len() <= 16 || needle.len().saturating_mul(haystack.len()) <= 1 << 16 {
        let first = needle[0];
        return haystack.windows(needle.len()).any(|w| w[0] == first && w == needle);
    }
    AhoCorasick::new([needle]).is_ok_and(|ac| ac.is_match(haystack))
}

/// `%` must be followed by two hex digits.
fn invalid_url_encoding(value: &[u8]) -> bool {
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let ok = value.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && value.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, arg: &str) -> Operator {
        compile(name, arg, Path::new(".")).unwrap()
    }

    fn m(o: &Operator, v: &str) -> bool {
        o.matches(v.as_bytes(), &|s| s.replace("%{tx.x}", "GET POST").into_bytes(), None)
    }

    #[test]
    fn rx_is_dotall_bytes_and_captures() {
        let re = op("rx", r"(?i)a.(b)");
        assert!(m(&re, "xA\nB"));
        let mut caps = Vec::new();
        assert!(re.matches(b"zza-b", &|_| Vec::new(), Some(&mut caps)));
        assert_eq!(caps, vec![b"a-b".to_vec(), b"b".to_vec()]);
        assert!(!m(&op("rx", r"^\xff"), "\u{ff}"), "bytes, not code points");
        assert!(op("rx", "x").matches(b"\xffx", &|_| Vec::new(), None));
    }

    #[test]
    fn rx_rejections_are_typed() {
        for p in [r"(a)\1", r"a(?=b)", r"(?<!a)b", "(?>a)"] {
            let e = compile("rx", p, Path::new(".")).unwrap_err();
            assert_eq!(e.0, LoadErrorKind::UnsupportedRegex, "{p}");
        }
        assert_eq!(compile("rbl", "x", Path::new(".")).unwrap_err().0, LoadErrorKind::UnsupportedOperator);
    }

    #[test]
    fn rx_dynamic_expands_macros() {
        let re = op("rx", "^%{tx.x}$");
        assert!(matches!(re, Operator::RxDynamic(_)));
        assert!(m(&re, "GET POST"));
        assert!(!m(&re, "GET"));
    }

    #[test]
    fn phrases_inline_and_from_file() {
        let pm = op("pm", "union select");
        assert!(m(&pm, "1 UNION 2"));
        assert!(!m(&pm, "unio"));
        let dir = std::env::temp_dir().join(format!("seclang-pm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("words.data"), "# comment\n\netc/passwd\n.htaccess\n").unwrap();
        let pmf = compile("pmFromFile", "words.data", &dir).unwrap();
        assert!(m(&pmf, "/ETC/PASSWD"));
        assert!(!m(&pmf, "comment"));
        assert_eq!(compile("pmFromFile", "missing.data", &dir).unwrap_err().0, LoadErrorKind::InvalidValue);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn strings_and_within() {
        assert!(m(&op("streq", "POST"), "POST"));
        assert!(!m(&op("streq", "POST"), "post"));
        assert!(m(&op("contains", "ab"), "xaby"));
        assert!(m(&op("beginsWith", "/adm"), "/admin"));
        assert!(m(&op("endsWith", ".php"), "/x.php"));
        assert!(m(&op("within", "%{tx.x}"), "POST"));
        assert!(!m(&op("within", "%{tx.x}"), "PUT"));
    }

    #[test]
    fn numbers() {
        assert!(m(&op("eq", "0"), ""));
        assert!(m(&op("ge", "5"), " 5"));
        assert!(m(&op("gt", "5"), "6abc"));
        assert!(m(&op("lt", "-1"), "-2"));
        assert!(m(&op("le", "3"), "3"));
        assert_eq!(atoi(b"99999999999999999999999"), 999_999_999_999_999_999);
    }

    #[test]
    fn ip_and_validation() {
        let ip = op("ipMatch", "127.0.0.1,10.0.0.0/8, ::1");
        assert!(m(&ip, "10.2.3.4"));
        assert!(m(&ip, "::1"));
        assert!(!m(&ip, "11.0.0.1"));
        assert!(!m(&ip, "not an ip"));
        let range = op("validateByteRange", "32-126, 9,10");
        assert!(!m(&range, "abc\t"));
        assert!(m(&range, "a\x01"));
        assert!(compile("validateByteRange", "9-3", Path::new(".")).is_err());
        assert!(m(&Operator::ValidateUrlEncoding, "100%"));
        assert!(m(&Operator::ValidateUrlEncoding, "%zz"));
        assert!(!m(&Operator::ValidateUrlEncoding, "%41"));
        assert!(Operator::ValidateUtf8Encoding.matches(b"\xc0\xaf", &|_| Vec::new(), None));
        assert!(!m(&Operator::ValidateUtf8Encoding, "é"));
    }

    #[test]
    fn libinjection() {
        let mut caps = Vec::new();
        assert!(Operator::DetectSqli.matches(b"1' OR '1'='1", &|_| Vec::new(), Some(&mut caps)));
        assert!(!caps[0].is_empty(), "the fingerprint is TX.0");
        assert!(!m(&Operator::DetectSqli, "hello world"));
        assert!(m(&Operator::DetectXss, "<script>alert(1)</script>"));
        assert!(!m(&Operator::DetectXss, "a < b"));
        assert!(m(&Operator::Unconditional, ""));
        assert!(!m(&Operator::NoMatch, "x"));
    }
}
