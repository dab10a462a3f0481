//! Cross-site request forgery, decided from the browser's own headers as Go 1.25's
//! `http.CrossOriginProtection` does, with no token to hand out:
//!
//! 1. GET, HEAD and OPTIONS pass (safe methods must not change state);
//! 2. `Sec-Fetch-Site: same-origin` or `none` (typed URL, bookmark) passes; any other value
//!    (`same-site`, `cross-site`) passes only for a trusted origin or an exempt path;
//! 3. without `Sec-Fetch-Site` (an older browser, or no browser): no `Origin` passes (curl and
//!    server-to-server calls send neither); an `Origin` must be the request's own origin or a
//!    trusted one, or the path exempt. `Origin: null` and an origin with user info never match.
//!
//! "The request's own origin" is one of the configured public origins when there are any (a
//! proxy in front may rewrite `Host` or terminate TLS), else the request's scheme and `Host`.

use crate::headers::cors::normalize_origin;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a state-changing cross-origin request, or an allowed one.
    Pass,
    CrossOrigin,
}

pub struct Request<'a> {
    pub method: &'a str,
    pub sec_fetch_site: Option<&'a str>,
    pub origin: Option<&'a str>,
    /// `http` or `https`.
    pub scheme: &'a str,
    pub host: Option<&'a str>,
    /// The normalised URI path (nginx's `$uri`).
    pub path: &'a str,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Normalised origins this site answers as (`shield_csrf_origins`); empty: scheme + Host.
    pub own_origins: Vec<String>,
    /// Normalised origins allowed to send cross-origin unsafe requests.
    pub trusted: Vec<String>,
    /// Exact paths exempt from the check (`shield_csrf_bypass`).
    pub bypass: Vec<String>,
}

impl Policy {
    /// `trusted_extra`: origins trusted beyond `self.trusted` (the location's CORS allowlist).
    pub fn decide(&self, r: &Request<'_>, trusted_extra: impl Fn(&str) -> bool) -> Verdict {
        if matches!(r.method, "GET" | "HEAD" | "OPTIONS") {
            return Verdict::Pass;
        }
        let exempt = || {
            self.bypass.iter().any(|p| p == r.path)
                || r.origin
                    .and_then(|o| normalize_origin(o).ok())
                    .is_some_and(|o| self.trusted.contains(&o) || trusted_extra(&o))
        };
        match r.sec_fetch_site {
            Some(site) if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") => {
                return Verdict::Pass
            }
            Some(_) => return if exempt() { Verdict::Pass } else { Verdict::CrossOrigin },
            None => {}
        }
        let Some(origin) = r.origin else { return Verdict::Pass };
        // `null` and user info fail normalisation, so they never equal an own origin.
        let own = normalize_origin(origin).is_ok_and(|o| self.is_own(&o, r));
        if own || exempt() {
            Verdict::Pass
        } else {
            Verdict::CrossOrigin
        }
    }

    fn is_own(&self, origin: &str, r: &Request<'_>) -> bool {
        if !self.own_origins.is_empty() {
            return self.own_origins.iter().any(|o| o == origin);
        }
        let Some(host) = r.host else { return false };
        normalize_origin(&format!("{}://{}", r.scheme, host)).is_ok_and(|own| own == origin)
    }
}
