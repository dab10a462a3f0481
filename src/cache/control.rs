//! `Cache-Control` directives (RFC 9111 §5.2) of a response and of a request, parsed from one
//! or more header values. Unknown directives are ignored, as the RFC requires; a malformed
//! delta-seconds value makes its directive count as present with value 0, the conservative
//! reading (RFC 9111 §1.2.2: a cache treats an invalid freshness as stale).

/// A delta-seconds value saturates here (RFC 9111 §1.2.2 suggests 2^31).
pub const MAX_DELTA: u32 = 1 << 31;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub max_age: Option<u32>,
    pub s_maxage: Option<u32>,
    pub stale_while_revalidate: Option<u32>,
    pub stale_if_error: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestControl {
    pub no_store: bool,
    /// `no-cache`, or `Pragma: no-cache` without any `Cache-Control`.
    pub no_cache: bool,
    pub max_age: Option<u32>,
    pub min_fresh: Option<u32>,
}

impl RequestControl {
    /// The request insists on a response validated by the origin.
    pub fn revalidate(&self) -> bool {
        self.no_cache || self.max_age == Some(0)
    }
}

/// Each directive of the values: lower-cased name, optional value with quotes removed.
fn directives<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = (String, Option<&'a [u8]>)> {
    values.flat_map(|v| v.split(|&b| b == b',')).filter_map(|d| {
        let d = trim(d);
        if d.is_empty() {
            return None;
        }
        let (name, value) = match d.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&d[..i]), Some(unquote(trim(&d[i + 1..])))),
            None => (d, None),
        };
        Some((String::from_utf8_lossy(name).to_ascii_lowercase(), value))
    })
}

pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

/// delta-seconds: digits only, saturating at [`MAX_DELTA`]; anything else is 0.
pub fn delta_seconds(v: Option<&[u8]>) -> u32 {
    let Some(v) = v.filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit)) else { return 0 };
    v.iter()
        .try_fold(0u32, |n, &d| n.checked_mul(10)?.checked_add(u32::from(d - b'0')))
        .unwrap_or(MAX_DELTA)
        .min(MAX_DELTA)
}

impl ResponseControl {
    pub fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut c = ResponseControl::default();
        for (name, value) in directives(values) {
            match name.as_str() {
                "no-store" => c.no_store = true,
                // `no-cache="field"` only forbids reusing that field unvalidated; treated
                // here like plain no-cache, the stricter reading.
                "no-cache" => c.no_cache = true,
                "private" => c.private = true,
                "public" => c.public = true,
                "must-revalidate" => c.must_revalidate = true,
                "proxy-revalidate" => c.proxy_revalidate = true,
                // A duplicated directive is invalid (RFC 9111 §4.2.1): the lowest wins, the
                // safe side.
                "max-age" => c.max_age = Some(min_opt(c.max_age, delta_seconds(value))),
                "s-maxage" => c.s_maxage = Some(min_opt(c.s_maxage, delta_seconds(value))),
                "stale-while-revalidate" => {
                    c.stale_while_revalidate = Some(min_opt(c.stale_while_revalidate, delta_seconds(value)))
                }
                "stale-if-error" => c.stale_if_error = Some(min_opt(c.stale_if_error, delta_seconds(value))),
                _ => {}
            }
        }
        c
    }
}

fn min_opt(old: Option<u32>, new: u32) -> u32 {
    old.map_or(new, |o| o.min(new))
}

impl RequestControl {
    /// `cache_control`: the request's Cache-Control values; `pragma`: its Pragma values,
    /// which count only when there is no Cache-Control (RFC 9111 §5.4).
    pub fn parse<'a>(cache_control: &[&'a [u8]], pragma: &[&'a [u8]]) -> Self {
        let mut c = RequestControl::default();
        for (name, value) in directives(cache_control.iter().copied()) {
            match name.as_str() {
                "no-store" => c.no_store = true,
                "no-cache" => c.no_cache = true,
                "max-age" => c.max_age = Some(min_opt(c.max_age, delta_seconds(value))),
                "min-fresh" => c.min_fresh = Some(delta_seconds(value).max(c.min_fresh.unwrap_or(0))),
                _ => {}
            }
        }
        if cache_control.is_empty() && directives(pragma.iter().copied()).any(|(n, _)| n == "no-cache") {
            c.no_cache = true;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(v: &str) -> ResponseControl {
        ResponseControl::parse(core::iter::once(v.as_bytes()))
    }

    #[test]
    fn response_directives_are_case_insensitive_and_spread_over_values() {
        let c = ResponseControl::parse([&b"Public, MAX-AGE=60"[..], b"s-maxage=\"30\", stale-if-error=5"].into_iter());
        assert!(c.public && !c.private);
        assert_eq!((c.max_age, c.s_maxage, c.stale_if_error), (Some(60), Some(30), Some(5)));
        assert!(resp("private=\"set-cookie\"").private);
        assert!(resp("no-store").no_store && resp(" no-cache ").no_cache);
        assert_eq!(resp("must-revalidate, stale-while-revalidate=10").stale_while_revalidate, Some(10));
        assert_eq!(resp("x-unknown=1, ,").max_age, None);
    }

    #[test]
    fn invalid_and_huge_delta_seconds() {
        assert_eq!(resp("max-age=abc").max_age, Some(0), "invalid counts as stale");
        assert_eq!(resp("max-age=-1").max_age, Some(0));
        assert_eq!(resp("max-age=").max_age, Some(0));
        assert_eq!(resp("max-age=99999999999999999999").max_age, Some(MAX_DELTA));
        assert_eq!(resp("max-age=60, max-age=10").max_age, Some(10), "duplicates: the lowest");
    }

    #[test]
    fn request_directives_and_pragma() {
        let r = RequestControl::parse(&[b"no-cache"], &[]);
        assert!(r.revalidate() && !r.no_store);
        assert!(RequestControl::parse(&[b"max-age=0"], &[]).revalidate());
        assert!(!RequestControl::parse(&[b"max-age=5"], &[]).revalidate());
        assert!(RequestControl::parse(&[b"no-store"], &[]).no_store);
        assert!(RequestControl::parse(&[], &[b"no-cache"]).no_cache, "Pragma without Cache-Control");
        assert!(!RequestControl::parse(&[b"max-age=5"], &[b"no-cache"]).no_cache, "Cache-Control wins");
        assert_eq!(RequestControl::parse(&[b"min-fresh=7"], &[]).min_fresh, Some(7));
    }
}
