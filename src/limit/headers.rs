//! The rate-limit response headers of the strictest decision: the IETF draft's
//! `RateLimit-Policy`/`RateLimit`, the legacy `X-RateLimit-*`, and `Retry-After`.

use super::{Decision, Limit, Outcome};
use crate::parse::ConfError;
use crate::redis::resp::push_dec;

/// `shield_limit_headers on | off | draft | legacy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderMode {
    #[default]
    On,
    Off,
    Draft,
    Legacy,
}

impl HeaderMode {
    const ALL: [HeaderMode; 4] = [HeaderMode::On, HeaderMode::Off, HeaderMode::Draft, HeaderMode::Legacy];

    pub const fn as_str(self) -> &'static str {
        match self {
            HeaderMode::On => "on",
            HeaderMode::Off => "off",
            HeaderMode::Draft => "draft",
            HeaderMode::Legacy => "legacy",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ConfError> {
        Self::ALL.into_iter().find(|m| m.as_str() == value).ok_or_else(|| {
            format!("invalid value \"{value}\", it must be \"on\", \"off\", \"draft\" or \"legacy\"").into()
        })
    }

    /// The header families this mode sends.
    pub const fn header_set(self) -> HeaderSet {
        HeaderSet {
            draft: matches!(self, HeaderMode::On | HeaderMode::Draft),
            legacy: matches!(self, HeaderMode::On | HeaderMode::Legacy),
        }
    }
}

/// Response headers for the strictest decision.
pub struct HeaderSet {
    pub draft: bool,
    pub legacy: bool,
}

/// Rendered rate-limit headers: values side by side in one buffer, no allocation per header.
pub struct Rendered {
    pub buf: Vec<u8>,
    /// (name, start, end) of each value in `buf`.
    pub headers: [(&'static str, usize, usize); 6],
    pub len: usize,
}

impl Rendered {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.headers[..self.len].iter().map(|&(n, a, b)| (n, &self.buf[a..b]))
    }
}

impl HeaderSet {
    /// IETF draft `RateLimit-Policy`/`RateLimit` (structured fields) and legacy
    /// `X-RateLimit-*`, plus `Retry-After` on rejection, rendered into `buf` (cleared first,
    /// so a caller can reuse one buffer for every request).
    pub fn render_into(&self, zone: &str, limit: &Limit, d: &Decision, buf: Vec<u8>) -> Rendered {
        let mut out = Rendered { buf, headers: [("", 0, 0); 6], len: 0 };
        out.buf.clear();
        let reset = secs_ceil(d.reset_us);
        let header = |out: &mut Rendered, name: &'static str, parts: &[Part]| {
            let start = out.buf.len();
            for p in parts {
                match p {
                    Part::Text(t) => out.buf.extend_from_slice(t.as_bytes()),
                    Part::Num(n) => push_dec(&mut out.buf, *n),
                }
            }
            out.headers[out.len] = (name, start, out.buf.len());
            out.len += 1;
        };
        use Part::{Num, Text};
        if self.draft {
            header(
                &mut out,
                "RateLimit-Policy",
                &[Text("\""), Text(zone), Text("\";q="), Num(limit.quota()), Text(";w="), Num(limit.window_secs())],
            );
            header(
                &mut out,
                "RateLimit",
                &[Text("\""), Text(zone), Text("\";r="), Num(d.remaining), Text(";t="), Num(reset)],
            );
        }
        if self.legacy {
            header(&mut out, "X-RateLimit-Limit", &[Num(limit.quota())]);
            header(&mut out, "X-RateLimit-Remaining", &[Num(d.remaining)]);
            header(&mut out, "X-RateLimit-Reset", &[Num(reset)]);
        }
        if d.outcome == Outcome::Rejected && (self.draft || self.legacy) {
            header(&mut out, "Retry-After", &[Num(secs_ceil(d.wait_us).max(1))]);
        }
        out
    }
}

enum Part<'a> {
    Text(&'a str),
    Num(u64),
}

pub fn secs_ceil(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::super::testing::limit;
    use super::super::*;

    /// `(name, value)` pairs, as `render_into` renders them.
    fn render(h: HeaderSet, zone: &str, limit: &Limit, d: &Decision) -> Vec<(&'static str, String)> {
        let r = h.render_into(zone, limit, d, Vec::new());
        r.iter().map(|(n, v)| (n, String::from_utf8_lossy(v).into_owned())).collect()
    }

    #[test]
    fn headers_render_draft_and_legacy() {
        let l = limit("100r/m", 99, 99, Algorithm::Gcra);
        let d = Decision { outcome: Outcome::Rejected, remaining: 0, reset_us: 17_500_000, wait_us: 600_000 };
        let h = render(HeaderSet { draft: true, legacy: true }, "api", &l, &d);
        assert!(h.contains(&("RateLimit-Policy", "\"api\";q=100;w=60".into())));
        assert!(h.contains(&("RateLimit", "\"api\";r=0;t=18".into())));
        assert!(h.contains(&("X-RateLimit-Limit", "100".into())));
        assert!(h.contains(&("Retry-After", "1".into())));
        let none = render(HeaderSet { draft: false, legacy: false }, "api", &l, &d);
        assert!(none.is_empty());
    }

    #[test]
    fn header_modes_parse_spell_and_select_families() {
        for (word, draft, legacy) in
            [("on", true, true), ("off", false, false), ("draft", true, false), ("legacy", false, true)]
        {
            let mode = HeaderMode::parse(word).unwrap();
            assert_eq!(mode.as_str(), word);
            let set = mode.header_set();
            assert_eq!((set.draft, set.legacy), (draft, legacy), "{word}");
        }
        let err = HeaderMode::parse("both").unwrap_err();
        assert_eq!(err.to_string(), "invalid value \"both\", it must be \"on\", \"off\", \"draft\" or \"legacy\"");
        assert_eq!(HeaderMode::default(), HeaderMode::On);
    }
}
