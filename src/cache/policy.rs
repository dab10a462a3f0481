//! What a shared cache may store, for how long, and whether a stored response may be reused
//! (RFC 9111 §3, §4.2; RFC 5861 for the stale windows). Pure: times are Unix seconds passed in.

use super::control::{RequestControl, ResponseControl};

/// Statuses cacheable by heuristic freshness (RFC 9110 §15.1), 206 aside: ranges are not
/// stored.
const HEURISTIC_STATUSES: [u16; 11] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501];
/// The Last-Modified heuristic gives 10% of the document's age, at most a day.
pub const HEURISTIC_CAP: u32 = 86_400;
/// How long past its lifetime an entry is kept where `shield_cache_use_stale` may serve it,
/// or where it has a validator (it can be revalidated: a 304 instead of the whole body).
pub const USE_STALE_GRACE: u32 = 600;
/// No entry is kept longer than a year, whatever the response says.
pub const MAX_LIFETIME: u32 = 365 * 86_400;

/// One `shield_cache_valid [code ...] time`: `statuses` empty means the default list
/// (200, 301, 302), as `proxy_cache_valid` does; `any` is represented by `any`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    pub statuses: Vec<u16>,
    pub any: bool,
    pub seconds: u32,
}

impl Valid {
    pub const DEFAULT_STATUSES: [u16; 3] = [200, 301, 302];

    fn covers(&self, status: u16) -> bool {
        self.any
            || if self.statuses.is_empty() {
                Self::DEFAULT_STATUSES.contains(&status)
            } else {
                self.statuses.contains(&status)
            }
    }
}

/// The location's storing rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// In configuration order; the first that covers the status wins.
    pub valid: Vec<Valid>,
    /// Store responses that set cookies, without their `Set-Cookie` headers.
    pub strip_set_cookie: bool,
}

/// The facts about one request/response pair that decide storing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exchange {
    pub status: u16,
    pub control: ResponseControl,
    /// `Expires`: `Some(None)` when present but not a valid date (already expired).
    pub expires: Option<Option<i64>>,
    pub date: Option<i64>,
    pub last_modified: Option<i64>,
    /// The response's `Age`, in seconds.
    pub age: u32,
    pub request_authorization: bool,
    pub set_cookie: bool,
    pub vary_star: bool,
    /// The response has a validator (`ETag` or `Last-Modified`).
    pub validator: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it.
    Authorization,
    SetCookie,
    VaryStar,
    /// `no-cache` without a validator: every reuse needs revalidation, which without a
    /// validator is a whole new response; storing would only cost memory.
    NoCache,
    /// No explicit freshness, no heuristic and no `shield_cache_valid` for the status, or a
    /// lifetime of zero without a stale window.
    NoFreshness,
}

/// Where an entry's lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    SMaxage,
    MaxAge,
    Expires,
    Heuristic,
    Configured,
}

/// How long a stored response stays fresh and may then be served stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub lifetime: u32,
    pub initial_age: u32,
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    /// `must-revalidate` / `proxy-revalidate` / `s-maxage` / `no-cache`: never served stale.
    pub must_revalidate: bool,
    pub source: Source,
}

impl Freshness {
    /// Seconds the store keeps the entry: while fresh, then through its stale windows, or
    /// `grace` (a location that serves stale on errors keeps entries that long past their
    /// lifetime); an entry with a validator (`revalidatable`) is kept [`USE_STALE_GRACE`]
    /// past its lifetime even when it may never be served stale, to be revalidated.
    pub fn keep_for(&self, grace: u32, revalidatable: bool) -> u32 {
        let windows = self.stale_while_revalidate.max(self.stale_if_error).max(grace);
        let stale = if self.must_revalidate { 0 } else { windows };
        let stale = if revalidatable { stale.max(USE_STALE_GRACE) } else { stale };
        self.lifetime.saturating_add(stale).saturating_sub(self.initial_age).clamp(1, MAX_LIFETIME)
    }
}

/// Decides whether the response may be stored, and its freshness. `now` is when it arrived.
pub fn assess(x: &Exchange, rules: &Rules, now: i64) -> Result<Freshness, NotStored> {
    let c = &x.control;
    if !(200..=599).contains(&x.status) || x.status == 206 || x.status == 304 {
        return Err(NotStored::Status);
    }
    if c.no_store {
        return Err(NotStored::NoStore);
    }
    if c.private {
        return Err(NotStored::Private);
    }
    // RFC 9111 §3.5: a shared cache reuses an authenticated response only when told to.
    if x.request_authorization && !(c.public || c.s_maxage.is_some() || c.must_revalidate) {
        return Err(NotStored::Authorization);
    }
    if x.set_cookie && !rules.strip_set_cookie {
        return Err(NotStored::SetCookie);
    }
    if x.vary_star {
        return Err(NotStored::VaryStar);
    }
    // RFC 9111 §5.2.2.4: storable, but never reused without a successful revalidation: stored
    // already stale (lifetime 0) and never served stale.
    if c.no_cache && !x.validator {
        return Err(NotStored::NoCache);
    }
    let date = x.date.unwrap_or(now);
    let (lifetime, source) = if c.no_cache {
        (0, Source::MaxAge)
    } else if let Some(s) = c.s_maxage {
        (s, Source::SMaxage)
    } else if let Some(m) = c.max_age {
        (m, Source::MaxAge)
    } else if let Some(expires) = x.expires {
        let secs = expires.map_or(0, |e| e.saturating_sub(date).clamp(0, i64::from(MAX_LIFETIME)));
        (secs as u32, Source::Expires)
    } else if let Some(lm) = x.last_modified.filter(|&lm| lm < date && HEURISTIC_STATUSES.contains(&x.status)) {
        let tenth = (date - lm) / 10;
        (tenth.clamp(0, i64::from(HEURISTIC_CAP)) as u32, Source::Heuristic)
    } else if let Some(v) = rules.valid.iter().find(|v| v.covers(x.status)) {
        (v.seconds, Source::Configured)
    } else {
        return Err(NotStored::NoFreshness);
    };
    let f = Freshness {
        lifetime: lifetime.min(MAX_LIFETIME),
        initial_age: x.age,
        stale_while_revalidate: c.stale_while_revalidate.unwrap_or(0),
        stale_if_error: c.stale_if_error.unwrap_or(0),
        // s-maxage implies proxy-revalidate for a shared cache (RFC 9111 §5.2.2.10).
        must_revalidate: c.must_revalidate || c.proxy_revalidate || c.s_maxage.is_some() || c.no_cache,
        source,
    };
    let stale_window = !f.must_revalidate && (f.stale_while_revalidate > 0 || f.stale_if_error > 0);
    if f.lifetime <= f.initial_age && !stale_window && !c.no_cache {
        return Err(NotStored::NoFreshness);
    }
    Ok(f)
}

/// A stored response's timing, as the entry records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub stored_at: i64,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it: `ttl` seconds of freshness left (> 0).
    Fresh { age: u32, ttl: u32 },
    /// Past its lifetime (or too old for the request): forward the request.
    Stale { age: u32, expired_for: u32 },
}

impl Stored {
    /// The response's current age (RFC 9111 §4.2.3, with the response delay taken as zero).
    pub fn age(&self, now: i64) -> u32 {
        let resident = now.saturating_sub(self.stored_at).clamp(0, i64::from(u32::MAX)) as u32;
        self.freshness.initial_age.saturating_add(resident)
    }

    pub fn reuse(&self, now: i64, request: &RequestControl) -> Reuse {
        let age = self.age(now);
        let lifetime = self.freshness.lifetime;
        let fresh = age < lifetime
            && request.max_age.is_none_or(|m| age <= m)
            && request.min_fresh.is_none_or(|m| lifetime - age >= m)
            && !request.revalidate();
        if fresh {
            Reuse::Fresh { age, ttl: lifetime - age }
        } else {
            Reuse::Stale { age, expired_for: age.saturating_sub(lifetime) }
        }
    }
}

/// Origin statuses that count as an error for `stale-if-error` (RFC 5861 §4), and for
/// `shield_cache_use_stale error` (nginx's own 502/504 when the origin cannot be reached).
pub const ERROR_STATUSES: [u16; 4] = [500, 502, 503, 504];

impl Stored {
    /// Whether the stale entry may answer a request whose origin failed with `status`:
    /// within the response's `stale-if-error` window, or whenever the location allows it
    /// for that status (`use_stale`), unless the response demanded revalidation.
    pub fn serve_on_error(&self, now: i64, status: u16, use_stale: &[u16]) -> bool {
        if self.freshness.must_revalidate {
            return false;
        }
        let Reuse::Stale { expired_for, .. } = self.reuse(now, &RequestControl::default()) else { return true };
        let window = ERROR_STATUSES.contains(&status) && expired_for <= self.freshness.stale_if_error;
        window || use_stale.contains(&status)
    }
}

impl Stored {
    /// Whether the stale entry may answer at once while one refresh fetches its replacement,
    /// and if so how long it has been stale: within the response's `stale-while-revalidate`
    /// window (RFC 5861 §3), or whenever the location allows it (`updating`: `shield_cache_use_stale
    /// updating`, bounded by how long the entry is kept). Never for a response that demanded
    /// revalidation, nor for a request that limits the age it accepts (`max-age`, `min-fresh`,
    /// `no-cache`): only the origin can satisfy those.
    pub fn serve_while_revalidating(&self, now: i64, request: &RequestControl, updating: bool) -> Option<u32> {
        let limited = request.max_age.is_some() || request.min_fresh.is_some() || request.revalidate();
        if self.freshness.must_revalidate || limited {
            return None;
        }
        let Reuse::Stale { expired_for, .. } = self.reuse(now, &RequestControl::default()) else { return None };
        let swr = self.freshness.stale_while_revalidate;
        (updating || (swr > 0 && expired_for <= swr)).then_some(expired_for)
    }
}

/// Whether a background refresh's response replaces the stale entry: never a server error
/// (the stale entry is worth more than a stored 5xx; it keeps answering within its window).
pub fn refresh_replaces(status: u16) -> bool {
    status < 500
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn ok(cc: &str) -> Exchange {
        Exchange { status: 200, control: ResponseControl::parse(core::iter::once(cc.as_bytes())), ..Default::default() }
    }

    fn rules() -> Rules {
        Rules { valid: vec![Valid { statuses: vec![404], any: false, seconds: 60 }], strip_set_cookie: false }
    }

    #[test]
    fn freshness_precedence_s_maxage_max_age_expires_heuristic_configured() {
        let mut x = ok("max-age=100, s-maxage=50");
        x.expires = Some(Some(NOW + 1000));
        x.last_modified = Some(NOW - 10_000);
        let f = assess(&x, &rules(), NOW).unwrap();
        assert_eq!((f.lifetime, f.source, f.must_revalidate), (50, Source::SMaxage, true));
        x.control.s_maxage = None;
        assert_eq!(assess(&x, &rules(), NOW).unwrap().lifetime, 100);
        x.control.max_age = None;
        assert_eq!(assess(&x, &rules(), NOW).unwrap().source, Source::Expires);
        assert_eq!(assess(&x, &rules(), NOW).unwrap().lifetime, 1000);
        x.expires = None;
        let f = assess(&x, &rules(), NOW).unwrap();
        assert_eq!((f.lifetime, f.source), (1000, Source::Heuristic), "10% of the document's age");
        x.last_modified = None;
        assert_eq!(assess(&x, &rules(), NOW), Err(NotStored::NoFreshness), "200 not in shield_cache_valid 404");
        x.status = 404;
        assert_eq!(assess(&x, &rules(), NOW).unwrap().source, Source::Configured);
    }

    #[test]
    fn expires_against_date_and_invalid_expires() {
        let mut x = ok("");
        x.date = Some(NOW - 30);
        x.expires = Some(Some(NOW + 30));
        assert_eq!(assess(&x, &rules(), NOW).unwrap().lifetime, 60, "Expires - Date");
        x.expires = Some(None);
        assert_eq!(assess(&x, &rules(), NOW), Err(NotStored::NoFreshness), "invalid Expires is already stale");
    }

    #[test]
    fn heuristic_only_for_heuristic_statuses_and_capped() {
        let mut x = ok("");
        x.last_modified = Some(NOW - 100 * 86_400);
        assert_eq!(assess(&x, &Rules::default(), NOW).unwrap().lifetime, HEURISTIC_CAP);
        x.status = 302;
        assert_eq!(assess(&x, &Rules::default(), NOW), Err(NotStored::NoFreshness));
    }

    #[test]
    fn refusals() {
        let r = Rules::default();
        assert_eq!(assess(&ok("no-store, max-age=60"), &r, NOW), Err(NotStored::NoStore));
        assert_eq!(assess(&ok("private, max-age=60"), &r, NOW), Err(NotStored::Private));
        assert_eq!(assess(&ok("no-cache, max-age=60"), &r, NOW), Err(NotStored::NoCache), "no validator");
        assert_eq!(assess(&ok("max-age=0"), &r, NOW), Err(NotStored::NoFreshness));
        for status in [100, 101, 206, 304, 600] {
            assert_eq!(assess(&Exchange { status, ..ok("max-age=60") }, &r, NOW), Err(NotStored::Status));
        }
        assert!(assess(&Exchange { status: 500, ..ok("max-age=60") }, &r, NOW).is_ok(), "explicit freshness");
        let cookie = Exchange { set_cookie: true, ..ok("max-age=60") };
        assert_eq!(assess(&cookie, &r, NOW), Err(NotStored::SetCookie));
        assert!(assess(&cookie, &Rules { strip_set_cookie: true, ..Rules::default() }, NOW).is_ok());
        assert_eq!(assess(&Exchange { vary_star: true, ..ok("max-age=60") }, &r, NOW), Err(NotStored::VaryStar));
    }

    #[test]
    fn authorization_needs_public_s_maxage_or_must_revalidate() {
        let r = Rules::default();
        let auth = |cc| Exchange { request_authorization: true, ..ok(cc) };
        assert_eq!(assess(&auth("max-age=60"), &r, NOW), Err(NotStored::Authorization));
        assert!(assess(&auth("public, max-age=60"), &r, NOW).is_ok());
        assert!(assess(&auth("s-maxage=60"), &r, NOW).is_ok());
        assert!(assess(&auth("must-revalidate, max-age=60"), &r, NOW).is_ok());
    }

    #[test]
    fn configured_default_statuses_and_any() {
        let default = Rules { valid: vec![Valid { statuses: vec![], any: false, seconds: 9 }], ..Rules::default() };
        for (status, stored) in [(200, true), (301, true), (302, true), (404, false)] {
            assert_eq!(assess(&Exchange { status, ..ok("") }, &default, NOW).is_ok(), stored, "{status}");
        }
        let any = Rules { valid: vec![Valid { statuses: vec![], any: true, seconds: 9 }], ..Rules::default() };
        assert!(assess(&Exchange { status: 503, ..ok("") }, &any, NOW).is_ok());
    }

    #[test]
    fn age_reuse_and_request_limits() {
        let mut x = ok("max-age=100");
        x.age = 10;
        let stored = Stored { stored_at: NOW, freshness: assess(&x, &Rules::default(), NOW).unwrap() };
        let none = RequestControl::default();
        assert_eq!(stored.reuse(NOW + 5, &none), Reuse::Fresh { age: 15, ttl: 85 });
        assert_eq!(stored.reuse(NOW + 90, &none), Reuse::Stale { age: 100, expired_for: 0 });
        assert_eq!(stored.reuse(NOW + 120, &none), Reuse::Stale { age: 130, expired_for: 30 });
        assert_eq!(stored.reuse(NOW - 50, &none), Reuse::Fresh { age: 10, ttl: 90 }, "clock went back");
        let max_age = RequestControl { max_age: Some(12), ..Default::default() };
        assert!(matches!(stored.reuse(NOW + 5, &max_age), Reuse::Stale { .. }));
        let min_fresh = RequestControl { min_fresh: Some(86), ..Default::default() };
        assert!(matches!(stored.reuse(NOW + 5, &min_fresh), Reuse::Stale { .. }));
        let no_cache = RequestControl { no_cache: true, ..Default::default() };
        assert!(matches!(stored.reuse(NOW + 5, &no_cache), Reuse::Stale { .. }));
    }

    #[test]
    fn stale_if_error_window_use_stale_and_must_revalidate() {
        let f = |cc| Stored { stored_at: NOW, freshness: assess(&ok(cc), &Rules::default(), NOW).unwrap() };
        let sie = f("max-age=10, stale-if-error=20");
        assert!(sie.serve_on_error(NOW + 25, 503, &[]), "5 s past its lifetime, within 20");
        assert!(!sie.serve_on_error(NOW + 31, 503, &[]), "past the window");
        assert!(!sie.serve_on_error(NOW + 25, 404, &[]), "404 is no error");
        assert!(sie.serve_on_error(NOW + 1000, 502, &[502]), "use_stale has no window");
        assert!(!sie.serve_on_error(NOW + 1000, 503, &[502]));
        let strict = f("max-age=10, stale-if-error=20, must-revalidate");
        assert!(!strict.serve_on_error(NOW + 25, 503, &[503]), "must-revalidate forbids stale");
    }

    #[test]
    fn keep_for_covers_stale_windows_unless_must_revalidate() {
        let f = assess(&ok("max-age=60, stale-while-revalidate=30, stale-if-error=100"), &Rules::default(), NOW);
        assert_eq!(f.unwrap().keep_for(0, false), 160);
        let f = assess(&ok("max-age=60, stale-if-error=100, must-revalidate"), &Rules::default(), NOW).unwrap();
        assert_eq!(f.keep_for(USE_STALE_GRACE, false), 60, "not even for use_stale");
        assert_eq!(f.keep_for(0, true), 60 + USE_STALE_GRACE, "but to be revalidated");
        let f = assess(&ok("max-age=0, stale-if-error=100"), &Rules::default(), NOW).unwrap();
        assert_eq!(f.keep_for(0, false), 100, "a stale window alone is worth storing");
        assert_eq!(f.keep_for(USE_STALE_GRACE, false), 600);
    }

    #[test]
    fn no_cache_with_a_validator_is_stored_stale_and_never_served_stale() {
        let x = Exchange { validator: true, ..ok("no-cache, max-age=60, stale-while-revalidate=30") };
        let f = assess(&x, &Rules::default(), NOW).unwrap();
        assert_eq!((f.lifetime, f.must_revalidate), (0, true));
        assert_eq!(f.keep_for(0, true), USE_STALE_GRACE, "kept to be revalidated");
        let stored = Stored { stored_at: NOW, freshness: f };
        let none = RequestControl::default();
        assert!(matches!(stored.reuse(NOW, &none), Reuse::Stale { .. }), "revalidated before every reuse");
        assert_eq!(stored.serve_while_revalidating(NOW + 1, &none, true), None, "not even with updating");
        assert!(!stored.serve_on_error(NOW + 1, 503, &[503]));
        let plain = Exchange { validator: true, ..ok("no-cache") };
        assert_eq!(assess(&plain, &Rules::default(), NOW).map(|f| f.lifetime), Ok(0));
    }

    #[test]
    fn stale_while_revalidate_window_and_use_stale_updating() {
        let f = |cc| Stored { stored_at: NOW, freshness: assess(&ok(cc), &Rules::default(), NOW).unwrap() };
        let none = RequestControl::default();
        let swr = f("max-age=10, stale-while-revalidate=20");
        assert_eq!(swr.serve_while_revalidating(NOW + 5, &none, false), None, "fresh: a plain hit");
        assert_eq!(swr.serve_while_revalidating(NOW + 10, &none, false), Some(0), "just stale");
        assert_eq!(swr.serve_while_revalidating(NOW + 30, &none, false), Some(20), "the window's last second");
        assert_eq!(swr.serve_while_revalidating(NOW + 31, &none, false), None, "past the window");
        assert_eq!(swr.serve_while_revalidating(NOW + 31, &none, true), Some(21), "updating has no window");
        let plain = f("max-age=10");
        assert_eq!(plain.serve_while_revalidating(NOW + 11, &none, false), None, "no window without the directive");
        assert_eq!(plain.serve_while_revalidating(NOW + 11, &none, true), Some(1));
        let strict = f("max-age=10, stale-while-revalidate=20, must-revalidate");
        assert_eq!(strict.serve_while_revalidating(NOW + 11, &none, true), None, "must-revalidate");
        for request in [
            RequestControl { max_age: Some(100), ..Default::default() },
            RequestControl { min_fresh: Some(1), ..Default::default() },
            RequestControl { no_cache: true, ..Default::default() },
        ] {
            assert_eq!(swr.serve_while_revalidating(NOW + 11, &request, false), None, "{request:?}");
        }
    }

    #[test]
    fn a_refresh_never_stores_a_server_error() {
        assert!(refresh_replaces(200) && refresh_replaces(404) && refresh_replaces(304));
        assert!(!refresh_replaces(500) && !refresh_replaces(503));
    }
}
