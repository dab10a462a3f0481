//! CORS policy: origin allowlist (exact scheme+host+port, or anchored regex), preflight
//! decisions and the headers of an actual cross-origin response.
//!
//! The request's `Origin` is only ever echoed back when it is on the list; `*` is only sent when
//! the operator listed `*` without credentials. `null` is refused at configuration time: sandboxed
//! iframes and `file:` pages all send it, so allowing it allows everyone.

use regex::Regex;

use crate::parse::{self, ParseError};

/// Request headers a browser may send without listing them in a preflight (Fetch standard).
const SAFELISTED_HEADERS: &[&str] = &["accept", "accept-language", "content-language", "content-type"];
pub const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "POST"];
pub const DEFAULT_MAX_AGE: u32 = 600;

#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    /// Normalised `scheme://host[:port]` (default ports dropped).
    pub origins: Vec<String>,
    pub patterns: Vec<Regex>,
    pub any: bool,
    pub credentials: bool,
    /// Upper-case method names.
    pub methods: Vec<String>,
    /// Lower-case header names; `*` allows any (only without credentials, per the Fetch spec).
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub max_age: u32,
}

/// The CORS headers of an actual response: the module owns them in a CORS location, so any
/// copy from an upstream or from nginx's `add_header` is removed before the module's go in.
pub const ACTUAL_HEADERS: &[&str] =
    &["Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers"];

/// The CORS headers of a preflight answer, owned the same way.
pub const PREFLIGHT_HEADERS: &[&str] = &[
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Expose-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Max-Age",
];

/// What an actual response's CORS headers depend on, for `Vary`.
pub const ACTUAL_VARY: &[&str] = &["Origin"];

/// What a preflight answer depends on: a shared cache must not answer one preflight with
/// another's allowed methods or headers.
pub const PREFLIGHT_VARY: &[&str] = &["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"];

/// The names of `wanted` that none of the response's `Vary` values lists yet (ASCII
/// case-insensitive, comma-separated tokens), in `wanted`'s order.
pub fn missing_vary<'a, 'v>(existing: impl IntoIterator<Item = &'v [u8]>, wanted: &[&'a str]) -> Vec<&'a str> {
    let mut missing = wanted.to_vec();
    for value in existing {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            missing.retain(|w| !w.as_bytes().eq_ignore_ascii_case(token));
        }
    }
    missing
}

/// What to do with a preflight request.
#[derive(Debug, PartialEq, Eq)]
pub enum Preflight {
    /// Answer 204 with these headers.
    Allow(Vec<(&'static str, String)>),
    /// Answer 403 without any CORS header.
    Deny,
}

impl CorsPolicy {
    /// Adds one `shield_cors_origins` argument: an exact origin, `*`, or `~regex` (anchored).
    pub fn add_origin(&mut self, arg: &str) -> Result<(), ParseError> {
        if arg == "*" {
            self.any = true;
        } else if let Some(pattern) = arg.strip_prefix('~') {
            let anchored = format!("^(?:{pattern})$");
            let re =
                Regex::new(&anchored).map_err(|e| ParseError(format!("invalid origin pattern \"{pattern}\": {e}")))?;
            self.patterns.push(re);
        } else {
            self.origins.push(normalize_origin(arg)?);
        }
        Ok(())
    }

    /// Checks combinations that are only wrong together; called once the block is complete.
    pub fn validate(&self) -> Result<(), ParseError> {
        if self.any && self.credentials {
            return parse::err("\"*\" origin cannot be used with credentials");
        }
        if self.credentials && self.headers.iter().any(|h| h == "*") {
            return parse::err("\"*\" headers cannot be used with credentials");
        }
        Ok(())
    }

    pub fn is_allowed(&self, origin: &str) -> bool {
        if self.any {
            return true;
        }
        let Ok(normal) = normalize_origin(origin) else {
            return false;
        };
        self.origins.contains(&normal) || self.patterns.iter().any(|p| p.is_match(&normal))
    }

    /// Value of `Access-Control-Allow-Origin` for an allowed origin.
    fn allow_origin_value(&self, origin: &str) -> String {
        if self.any && !self.credentials {
            "*".to_string()
        } else {
            origin.to_string()
        }
    }

    /// Headers for an actual (non-preflight) cross-origin response, or none when the origin
    /// is not allowed. `Vary: Origin` is added by the caller on every response regardless.
    pub fn response_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        if !self.is_allowed(origin) {
            return Vec::new();
        }
        let mut out = vec![("Access-Control-Allow-Origin", self.allow_origin_value(origin))];
        if self.credentials {
            out.push(("Access-Control-Allow-Credentials", "true".into()));
        }
        if !self.expose.is_empty() {
            out.push(("Access-Control-Expose-Headers", self.expose.join(", ")));
        }
        out
    }

    /// Decides a preflight: origin, requested method and every requested header must be allowed.
    pub fn preflight(&self, origin: &str, method: &str, request_headers: Option<&str>) -> Preflight {
        if !self.is_allowed(origin) {
            return Preflight::Deny;
        }
        let method = method.trim();
        if !self.methods.iter().any(|m| m == method) {
            return Preflight::Deny;
        }
        let requested: Vec<String> = request_headers
            .unwrap_or("")
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let any_header = self.headers.iter().any(|h| h == "*");
        for h in &requested {
            let ok = any_header || SAFELISTED_HEADERS.contains(&h.as_str()) || self.headers.iter().any(|a| a == h);
            if !ok {
                return Preflight::Deny;
            }
        }
        let mut out = vec![
            ("Access-Control-Allow-Origin", self.allow_origin_value(origin)),
            ("Access-Control-Allow-Methods", self.methods.join(", ")),
        ];
        if !requested.is_empty() {
            out.push(("Access-Control-Allow-Headers", requested.join(", ")));
        }
        if self.credentials {
            out.push(("Access-Control-Allow-Credentials", "true".into()));
        }
        out.push(("Access-Control-Max-Age", self.max_age.to_string()));
        Preflight::Allow(out)
    }
}

/// Normalises `scheme://host[:port]`: lower-case scheme and host, default port dropped. Paths,
/// queries, user info, `null` and non-http(s) schemes are rejected.
pub fn normalize_origin(origin: &str) -> Result<String, ParseError> {
    let invalid = || ParseError(format!("invalid origin \"{origin}\""));
    if origin.eq_ignore_ascii_case("null") {
        return parse::err("\"null\" origin is not allowed: sandboxed and file: pages all send it");
    }
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return Err(invalid()),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return Err(invalid());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (rest, None), // bare IPv6: invalid below
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(invalid());
    }
    let host_ok = host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b) || b == b'_');
    if !host_ok {
        return Err(invalid());
    }
    let host = host.to_ascii_lowercase();
    match port {
        None => Ok(format!("{scheme}://{host}")),
        Some(p) if p == default_port => Ok(format!("{scheme}://{host}")),
        Some(p) => match parse::number(p) {
            Some(n) if (1..=65535).contains(&n) => Ok(format!("{scheme}://{host}:{n}")),
            _ => Err(invalid()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> CorsPolicy {
        let mut p = CorsPolicy {
            methods: DEFAULT_METHODS.iter().map(|m| (*m).to_string()).collect(),
            headers: vec!["x-api-key".into()],
            max_age: DEFAULT_MAX_AGE,
            ..Default::default()
        };
        for o in origins {
            p.add_origin(o).unwrap();
        }
        p
    }

    #[test]
    fn origins_normalise_scheme_host_and_default_port() {
        assert_eq!(normalize_origin("HTTPS://App.Example.com:443").unwrap(), "https://app.example.com");
        assert_eq!(normalize_origin("http://localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(normalize_origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        for bad in ["example.com", "ftp://x", "https://x/path", "https://u@x", "https://x:99999", "https://"] {
            assert!(normalize_origin(bad).is_err(), "{bad}");
        }
        assert!(normalize_origin("null").unwrap_err().0.contains("null"));
    }

    #[test]
    fn only_listed_origins_are_allowed_and_port_matters() {
        let p = policy(&["https://app.example.com"]);
        assert!(p.is_allowed("https://app.example.com"));
        assert!(p.is_allowed("https://APP.example.com:443"));
        assert!(!p.is_allowed("https://app.example.com:8443"));
        assert!(!p.is_allowed("http://app.example.com"));
        assert!(!p.is_allowed("https://app.example.com.evil.com"));
        assert!(!p.is_allowed("null"));
    }

    #[test]
    fn regex_origins_are_anchored() {
        let p = policy(&[r"~https://[a-z0-9-]+\.example\.com"]);
        assert!(p.is_allowed("https://shop.example.com"));
        assert!(!p.is_allowed("https://shop.example.com.evil.net"));
        assert!(!p.is_allowed("https://evil.net/?https://shop.example.com"));
    }

    #[test]
    fn star_with_credentials_is_a_config_error() {
        let mut p = policy(&["*"]);
        p.credentials = true;
        assert!(p.validate().is_err());
    }

    #[test]
    fn actual_response_echoes_only_allowed_origin() {
        let mut p = policy(&["https://a.example"]);
        p.credentials = true;
        p.expose = vec!["X-Request-Id".into()];
        let h = p.response_headers("https://a.example");
        assert!(h.contains(&("Access-Control-Allow-Origin", "https://a.example".into())));
        assert!(h.contains(&("Access-Control-Allow-Credentials", "true".into())));
        assert!(h.contains(&("Access-Control-Expose-Headers", "X-Request-Id".into())));
        assert!(p.response_headers("https://b.example").is_empty());
        assert_eq!(policy(&["*"]).response_headers("https://b.example")[0].1, "*");
    }

    #[test]
    fn vary_lists_only_what_is_missing_once() {
        assert_eq!(missing_vary([], PREFLIGHT_VARY), PREFLIGHT_VARY);
        let existing: [&[u8]; 2] = [b"Accept-Encoding, origin", b"access-control-request-method"];
        assert_eq!(missing_vary(existing, PREFLIGHT_VARY), ["Access-Control-Request-Headers"]);
        assert!(missing_vary([b"Origin".as_slice()], ACTUAL_VARY).is_empty());
        assert_eq!(missing_vary([b"Origins".as_slice()], ACTUAL_VARY), ["Origin"], "whole tokens only");
    }

    #[test]
    fn preflight_checks_method_and_headers() {
        let p = policy(&["https://a.example"]);
        match p.preflight("https://a.example", "POST", Some("X-API-Key, Content-Type")) {
            Preflight::Allow(h) => {
                assert!(h.contains(&("Access-Control-Allow-Methods", "GET, HEAD, POST".into())));
                assert!(h.contains(&("Access-Control-Allow-Headers", "x-api-key, content-type".into())));
                assert!(h.contains(&("Access-Control-Max-Age", "600".into())));
            }
            Preflight::Deny => panic!("should allow"),
        }
        assert_eq!(p.preflight("https://a.example", "DELETE", None), Preflight::Deny);
        assert_eq!(p.preflight("https://a.example", "GET", Some("X-Other")), Preflight::Deny);
        assert_eq!(p.preflight("https://evil.example", "GET", None), Preflight::Deny);
    }
}
