//! Cache-Control / Expires policy per location, per response content type and per file
//! extension, with the private-response rule: a response to a request carrying
//! `Authorization`, or one that sets a cookie, gets `no-store` — the classic way a shared cache
//! leaks one user's page or session to the next.

use crate::parse::{self, ParseError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// Lower-case extensions without the dot; empty = any.
    pub exts: Vec<String>,
    /// Lower-case media types; `text/*` matches a whole type; empty = any.
    pub types: Vec<String>,
    pub cache_control: String,
}

impl CacheRule {
    /// Parses `shield_cache_control <value> [ext=a,b] [type=t/x,t/*]`.
    pub fn parse(args: &[&str]) -> Result<Self, ParseError> {
        let (value, params) = args.split_first().ok_or_else(|| ParseError("no value".into()))?;
        parse::header_value(value)?;
        if value.is_empty() {
            return parse::err("empty Cache-Control value");
        }
        let mut rule = CacheRule { exts: Vec::new(), types: Vec::new(), cache_control: (*value).to_string() };
        for p in params {
            let list = |v: &str| -> Vec<String> {
                v.split(',').filter(|s| !s.is_empty()).map(|s| s.trim_start_matches('.').to_ascii_lowercase()).collect()
            };
            match parse::param(p) {
                Some(("ext", v)) if !list(v).is_empty() => rule.exts = list(v),
                Some(("type", v)) if !list(v).is_empty() => rule.types = list(v),
                _ => return parse::err(format!("invalid parameter \"{p}\"")),
            }
        }
        Ok(rule)
    }

    fn matches(&self, ext: Option<&str>, content_type: Option<&str>) -> bool {
        let ext_ok = self.exts.is_empty() || ext.is_some_and(|e| self.exts.iter().any(|x| x.eq_ignore_ascii_case(e)));
        let mime = content_type.map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let type_ok = self.types.is_empty()
            || mime.as_deref().is_some_and(|m| {
                self.types.iter().any(|t| match t.strip_suffix("/*") {
                    Some(major) => m.split('/').next() == Some(major),
                    None => t == m,
                })
            });
        ext_ok && type_ok
    }
}

#[derive(Debug, Clone, Default)]
pub struct CachePolicy {
    /// First match wins; a rule without `ext=`/`type=` is the location's default.
    pub rules: Vec<CacheRule>,
    /// Replace an upstream's own Cache-Control (default: keep it). The decision then owns
    /// `Expires` too: the glue drops any other copy.
    pub override_upstream: bool,
    /// Force `no-store` on private responses (default: on).
    pub private_no_store: bool,
}

/// Facts about one response the policy decides on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Response<'a> {
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    pub request_has_authorization: bool,
    pub sets_cookie: bool,
    /// The response came with its own `Cache-Control` (an upstream's); one that nginx's
    /// `expires` or `add_header` added in this location does not count: the policy replaces it.
    pub has_cache_control: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub cache_control: String,
    /// `Expires` = now + this many seconds; `Some(0)` means already expired.
    pub expires_in: Option<u64>,
}

pub const PRIVATE_NO_STORE: &str = "no-store";

impl CachePolicy {
    /// What to set, or `None` to leave the response alone.
    pub fn decide(&self, resp: &Response<'_>) -> Option<Decision> {
        if self.private_no_store && (resp.request_has_authorization || resp.sets_cookie) {
            return Some(Decision { cache_control: PRIVATE_NO_STORE.into(), expires_in: Some(0) });
        }
        if resp.has_cache_control && !self.override_upstream {
            return None;
        }
        let ext = extension(resp.path);
        let rule = self.rules.iter().find(|r| r.matches(ext, resp.content_type))?;
        Some(Decision { cache_control: rule.cache_control.clone(), expires_in: expires_for(&rule.cache_control) })
    }
}

/// The file extension of the last path segment, if any.
pub fn extension(path: &str) -> Option<&str> {
    let last = path.rsplit('/').next()?;
    let (stem, ext) = last.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then_some(ext)
}

/// `Expires` for HTTP/1.0 caches, derived from the Cache-Control value: max-age → now+age;
/// no-store/no-cache → already expired.
fn expires_for(cache_control: &str) -> Option<u64> {
    let mut expired = false;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if let Some(age) = lower.strip_prefix("max-age=") {
            return parse::number(age.trim_matches('"'));
        }
        expired |= lower == "no-store" || lower == "no-cache";
    }
    expired.then_some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CachePolicy {
        CachePolicy {
            rules: vec![
                CacheRule::parse(&["public, max-age=31536000, immutable", "ext=js,css,woff2"]).unwrap(),
                CacheRule::parse(&["no-cache", "type=text/html"]).unwrap(),
                CacheRule::parse(&["public, max-age=300", "type=image/*"]).unwrap(),
                CacheRule::parse(&["private, max-age=60"]).unwrap(),
            ],
            override_upstream: false,
            private_no_store: true,
        }
    }

    fn decide(p: &CachePolicy, path: &str, ct: Option<&str>) -> Option<Decision> {
        p.decide(&Response { path, content_type: ct, ..Default::default() })
    }

    #[test]
    fn rules_match_by_extension_type_or_default() {
        let p = policy();
        let js = decide(&p, "/assets/app.3f9a.js", Some("application/javascript")).unwrap();
        assert_eq!(js.cache_control, "public, max-age=31536000, immutable");
        assert_eq!(js.expires_in, Some(31_536_000));
        let html = decide(&p, "/index.html", Some("text/html; charset=utf-8")).unwrap();
        assert_eq!(html, Decision { cache_control: "no-cache".into(), expires_in: Some(0) });
        assert_eq!(decide(&p, "/a.png", Some("image/png")).unwrap().cache_control, "public, max-age=300");
        assert_eq!(decide(&p, "/api/x", Some("application/json")).unwrap().cache_control, "private, max-age=60");
    }

    #[test]
    fn private_responses_get_no_store() {
        let p = policy();
        let auth = Response { path: "/app.js", request_has_authorization: true, ..Default::default() };
        assert_eq!(p.decide(&auth).unwrap().cache_control, "no-store");
        let cookie = Response { path: "/app.js", sets_cookie: true, has_cache_control: true, ..Default::default() };
        assert_eq!(p.decide(&cookie).unwrap().cache_control, "no-store", "even over upstream's header");
        let off = CachePolicy { private_no_store: false, ..policy() };
        assert_eq!(off.decide(&auth).unwrap().cache_control, "public, max-age=31536000, immutable");
    }

    #[test]
    fn upstream_header_kept_unless_override() {
        let mut p = policy();
        let r = Response { path: "/x.js", has_cache_control: true, ..Default::default() };
        assert_eq!(p.decide(&r), None);
        p.override_upstream = true;
        assert!(p.decide(&r).is_some());
    }

    #[test]
    fn parse_rejects_bad_params() {
        assert!(CacheRule::parse(&["max-age=1", "ext="]).is_err());
        assert!(CacheRule::parse(&["max-age=1", "foo=bar"]).is_err());
        assert!(CacheRule::parse(&["a\nb"]).is_err());
        assert_eq!(CacheRule::parse(&["x", "ext=.JS"]).unwrap().exts, vec!["js"]);
    }

    #[test]
    fn extension_of_last_segment_only() {
        assert_eq!(extension("/a.b/c"), None);
        assert_eq!(extension("/x/.hidden"), None);
        assert_eq!(extension("/x/app.min.js"), Some("js"));
    }
}
