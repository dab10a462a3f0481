//! The engine's fast path, derived from the compiled rules instead of claimed by hand.
//!
//! Most inspected values are plain words (`[A-Za-z0-9_-]`): ids, tokens, names. A pipeline may
//! skip them only when no rule in it can match anything such a value can become. That is
//! decided at engine build time, soundly (over-approximating, never guessing):
//! 1. [`image`]: the bytes a transform pipeline can output from inputs drawn from a byte set
//!    (lowercasing maps letters, `--` becomes a comment and so a space, base64 decoding or a
//!    `%` can produce any byte...);
//! 2. [`can_match_over`]: whether a rule's regex matches some string made only of those bytes,
//!    read from its syntax tree with every look-around (`\b`, `^`, `$`) taken as satisfiable.
//!
//! If (2) says no for every rule of a pipeline, no plain value can match there after any
//! transform, and skipping it loses nothing. A rule that could match (`information_schema`,
//! `__proto__`, `whoami`) keeps plain values scanned by its pipeline.

use regex_syntax::hir::{Class, Hir, HirKind};

use super::transform::Transform;

/// A set of byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSet([bool; 256]);

impl ByteSet {
    pub const ALL: ByteSet = ByteSet([true; 256]);

    pub fn of(pred: impl Fn(u8) -> bool) -> ByteSet {
        let mut set = [false; 256];
        for (b, slot) in set.iter_mut().enumerate() {
            *slot = pred(b as u8);
        }
        ByteSet(set)
    }

    pub fn contains(&self, b: u8) -> bool {
        self.0[b as usize]
    }

    fn any(&self, pred: impl Fn(u8) -> bool) -> bool {
        (0..=255u8).any(|b| self.contains(b) && pred(b))
    }

    fn map(&self, f: impl Fn(u8) -> u8) -> ByteSet {
        let mut out = ByteSet([false; 256]);
        for b in 0..=255u8 {
            if self.contains(b) {
                out.0[f(b) as usize] = true;
            }
        }
        out
    }

    fn with(mut self, b: u8) -> ByteSet {
        self.0[b as usize] = true;
        self
    }

    fn without(&self, pred: impl Fn(u8) -> bool) -> ByteSet {
        ByteSet::of(|b| self.contains(b) && !pred(b))
    }
}

/// The values the fast path considers: only `[A-Za-z0-9_-]`.
pub fn plain() -> ByteSet {
    ByteSet::of(is_plain_byte)
}

pub fn is_plain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn is_space(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0x0b || b == 0xa0
}

/// Every byte `t` can output for inputs made of bytes in `input` (a superset is fine).
fn step(t: Transform, input: ByteSet) -> ByteSet {
    match t {
        // `%XX`, `%uXXXX` and overlong UTF-8 folding can produce any byte; `+` a space.
        Transform::UrlDecode | Transform::UrlDecodeOnce => {
            if input.contains(b'%') || input.any(|b| b >= 0x80) {
                ByteSet::ALL
            } else if input.contains(b'+') {
                input.with(b' ')
            } else {
                input
            }
        }
        Transform::HtmlDecode => {
            if input.contains(b'&') {
                ByteSet::ALL
            } else {
                input
            }
        }
        Transform::Lowercase => input.map(|b| b.to_ascii_lowercase()),
        // Comments (`/* */`, `-- `, `#`) become a space; `/*!` keeps its content.
        Transform::RemoveComments => {
            if input.contains(b'/') || input.contains(b'-') || input.contains(b'#') {
                input.with(b' ')
            } else {
                input
            }
        }
        Transform::CompressWhitespace => {
            if input.any(is_space) {
                input.without(is_space).with(b' ')
            } else {
                input
            }
        }
        Transform::RemoveControls => input.without(|b| matches!(b, 0 | b'\t' | b'\r' | b'\n')),
        Transform::NormalizePath => {
            if input.contains(b'\\') {
                input.without(|b| b == b'\\').with(b'/')
            } else {
                input
            }
        }
        // `\uXXXX`, `\xHH` and octal escapes can produce any byte.
        Transform::JsDecode => {
            if input.contains(b'\\') {
                ByteSet::ALL
            } else {
                input
            }
        }
        // Anything base64 decodes to arbitrary bytes (plain words are base64 too).
        Transform::Base64Decode => {
            if input.any(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/') {
                ByteSet::ALL
            } else {
                ByteSet([false; 256])
            }
        }
    }
}

/// Every byte a pipeline can output for inputs made of bytes in `input`.
pub fn image(pipeline: &[Transform], input: ByteSet) -> ByteSet {
    pipeline.iter().fold(input, |set, &t| step(t, set))
}

/// Parses `pattern` exactly as the engine compiles it (bytes, no Unicode).
pub fn parse(pattern: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new().unicode(false).utf8(false).build().parse(pattern).map_err(|e| e.to_string())
}

/// Whether `hir` matches some string made only of bytes in `alphabet`. Look-arounds are
/// taken as satisfiable, so `false` is a proof and `true` only a possibility.
pub fn can_match_over(hir: &Hir, alphabet: &ByteSet) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(lit) => lit.0.iter().all(|&b| alphabet.contains(b)),
        HirKind::Class(Class::Bytes(class)) => {
            class.ranges().iter().any(|r| (r.start()..=r.end()).any(|b| alphabet.contains(b)))
        }
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .any(|r| (u32::from(r.start())..=u32::from(r.end()).min(255)).any(|c| alphabet.contains(c as u8))),
        HirKind::Repetition(rep) => rep.min == 0 || can_match_over(&rep.sub, alphabet),
        HirKind::Capture(cap) => can_match_over(&cap.sub, alphabet),
        HirKind::Concat(parts) => parts.iter().all(|p| can_match_over(p, alphabet)),
        HirKind::Alternation(alts) => alts.iter().any(|a| can_match_over(a, alphabet)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Transform::*;

    fn matches_plain(pipeline: &[Transform], pattern: &str) -> bool {
        can_match_over(&parse(pattern).unwrap(), &image(pipeline, plain()))
    }

    #[test]
    fn images_follow_the_transforms() {
        let sql = image(&[UrlDecode, HtmlDecode, Lowercase, RemoveComments, CompressWhitespace], plain());
        assert!(sql.contains(b'a') && sql.contains(b'_') && sql.contains(b' '), "`a--b` becomes `a `");
        assert!(!sql.contains(b'A') && !sql.contains(b'\'') && !sql.contains(b'('));
        assert_eq!(image(&[UrlDecodeOnce, Base64Decode], plain()), ByteSet::ALL, "plain words are base64");
        assert_eq!(image(&[UrlDecode], ByteSet::of(|b| b == b'%')), ByteSet::ALL);
        assert_eq!(
            image(&[Lowercase, NormalizePath], plain()),
            ByteSet::of(|b| is_plain_byte(b) && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn rules_that_can_match_plain_words_are_found() {
        assert!(matches_plain(&[Lowercase], r"__proto__"));
        assert!(matches_plain(&[Lowercase], r"\binformation_schema\b|\bpg_catalog\b"));
        assert!(matches_plain(&[Lowercase], r"^\s*(?:whoami|ls)\s*$"), "\\s* may be empty");
        assert!(matches_plain(&[Lowercase], r"(?i:[a-z-]+)"));
        assert!(
            matches_plain(&[Lowercase, RemoveComments], r"\bselect\b.{1,100}?\bfrom\b"),
            "`select--x` leaves a space"
        );
        assert!(!matches_plain(&[Lowercase], r"<script\b"));
        assert!(!matches_plain(&[Lowercase], r"['`]\s*\|\|"));
        assert!(!matches_plain(&[Lowercase], r"\bunion\b ?\( ?select\b|\.\./"), "needs a parenthesis or a dot");
        assert!(!matches_plain(&[Lowercase], r"[A-Z]{3}"), "lowercased before matching");
        assert!(matches_plain(&[], r"[A-Z]{3}"));
    }
}
