//! Security response headers: the preset, per-block overrides and their merge, HSTS rules,
//! leaky-header stripping and `Set-Cookie` hardening.
//!
//! Unlike nginx's `add_header`, a child block *merges* with its parent: a header set in a
//! `location` overrides the parent's header of the same name and keeps all the others. A header
//! set to `off` removes it, and `shield_headers off` switches the whole feature off.
//!
//! The value type `V` is generic so the glue can store compiled nginx complex values (for
//! `$shield_csp_nonce`) while the tests use plain strings.

use crate::parse::{self, ParseError};

pub const CSP: &str = "Content-Security-Policy";
pub const CSP_REPORT_ONLY: &str = "Content-Security-Policy-Report-Only";
pub const HSTS: &str = "Strict-Transport-Security";

/// HSTS max-age below this (180 days) loses the Observatory's HSTS points.
pub const HSTS_MIN_MAX_AGE: u64 = 15_552_000;
/// hstspreload.org requires at least one year for `preload`.
pub const HSTS_PRELOAD_MIN_MAX_AGE: u64 = 31_536_000;

pub const DEFAULT_CSP: &str =
    "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";
pub const DEFAULT_HSTS: &str = "max-age=31536000; includeSubDomains";

/// The preset `shield_headers on` applies: on its own it scores A+ under the Mozilla HTTP
/// Observatory rules for a plain HTTPS site. COEP is opt-in because it breaks cross-origin
/// embeds that lack CORP/CORS.
pub const PRESET: &[(&str, &str)] = &[
    (CSP, DEFAULT_CSP),
    (HSTS, DEFAULT_HSTS),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    (
        "Permissions-Policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
    ),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
];

/// Response headers that leak implementation details, stripped by default when the preset is on.
pub const DEFAULT_STRIP: &[&str] =
    &["Server", "X-Powered-By", "X-AspNet-Version", "X-AspNetMvc-Version", "X-Runtime", "X-Version", "X-Generator"];

/// One header as configured in one block: `None` means `off` (remove it).
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderRule<V> {
    pub name: String,
    pub value: Option<V>,
}

/// `shield_headers`: unset, or explicitly on/off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Not set anywhere: only explicitly configured headers apply, no preset.
    #[default]
    Unset,
    /// Preset plus explicit overrides.
    On,
    /// Nothing at all, even headers a parent block set.
    Off,
}

/// One block's header configuration, before and after merging with its parent.
#[derive(Debug, Clone)]
pub struct HeaderPolicy<V> {
    pub mode: Mode,
    /// Headers set in this block (after merge: in this block or an ancestor).
    pub rules: Vec<HeaderRule<V>>,
    pub csp_report_only: Option<bool>,
    /// `shield_strip_headers`: replaced whole by a child that sets it, like nginx lists.
    pub strip: Option<Vec<String>>,
    pub cookie: Option<CookieFlags>,
}

impl<V> Default for HeaderPolicy<V> {
    fn default() -> Self {
        Self { mode: Mode::Unset, rules: Vec::new(), csp_report_only: None, strip: None, cookie: None }
    }
}

impl<V: Clone> HeaderPolicy<V> {
    /// Adds a header rule in this block; a second rule for the same name in one block is
    /// reported as a duplicate, like nginx does for repeated directives.
    pub fn set(&mut self, name: &str, value: Option<V>) -> Result<(), ParseError> {
        if self.rules.iter().any(|r| r.name.eq_ignore_ascii_case(name)) {
            return parse::err(format!("header \"{name}\" is duplicate"));
        }
        self.rules.push(HeaderRule { name: name.to_string(), value });
        Ok(())
    }

    /// Inherits from `parent` everything this block did not set itself.
    pub fn merge(&mut self, parent: &Self) {
        if self.mode == Mode::Unset {
            self.mode = parent.mode;
        }
        for rule in &parent.rules {
            if !self.rules.iter().any(|r| r.name.eq_ignore_ascii_case(&rule.name)) {
                self.rules.push(rule.clone());
            }
        }
        self.csp_report_only = self.csp_report_only.or(parent.csp_report_only);
        if self.strip.is_none() {
            self.strip.clone_from(&parent.strip);
        }
        if self.cookie.is_none() {
            self.cookie = parent.cookie;
        }
    }

    /// The headers to send, in order, after the preset and overrides are combined.
    /// `preset` turns a preset value into `V` (the glue compiles it once at merge time).
    pub fn effective(&self, mut preset: impl FnMut(&str) -> V) -> Vec<HeaderRule<V>> {
        let mut out: Vec<HeaderRule<V>> = match self.mode {
            Mode::Off => return Vec::new(),
            Mode::On => {
                PRESET.iter().map(|(n, v)| HeaderRule { name: (*n).to_string(), value: Some(preset(v)) }).collect()
            }
            Mode::Unset => Vec::new(),
        };
        for rule in &self.rules {
            match out.iter_mut().find(|r| r.name.eq_ignore_ascii_case(&rule.name)) {
                Some(slot) => slot.value.clone_from(&rule.value),
                None => out.push(rule.clone()),
            }
        }
        out.retain(|r| r.value.is_some());
        if self.csp_report_only == Some(true) {
            for rule in &mut out {
                if rule.name == CSP {
                    rule.name = CSP_REPORT_ONLY.to_string();
                }
            }
        }
        out
    }

    /// Header names to remove from every response.
    pub fn effective_strip(&self) -> Vec<String> {
        match (self.mode, &self.strip) {
            (Mode::Off, _) => Vec::new(),
            (_, Some(list)) => list.clone(),
            (Mode::On, None) => DEFAULT_STRIP.iter().map(|s| (*s).to_string()).collect(),
            (Mode::Unset, None) => Vec::new(),
        }
    }

    pub fn effective_cookie(&self) -> Option<CookieFlags> {
        match self.mode {
            Mode::Off => None,
            _ => self.cookie.filter(|c| c.any()),
        }
    }
}

/// Whether a header is only ever sent over TLS (RFC 6797: HSTS over plain HTTP is ignored and
/// only invites confusion).
pub fn tls_only(name: &str) -> bool {
    name.eq_ignore_ascii_case(HSTS)
}

/// Parses `shield_hsts max-age=<time> [includeSubDomains] [preload] [force]` into the header
/// value. A max-age under 180 days, or `preload` without one year and includeSubDomains, is a
/// configuration error unless `force` is given.
pub fn parse_hsts(args: &[&str]) -> Result<String, ParseError> {
    let mut max_age = None;
    let (mut subdomains, mut preload, mut force) = (false, false, false);
    for arg in args {
        match parse::param(arg) {
            Some(("max-age", v)) => max_age = Some(parse::time(v)?.as_secs()),
            None if arg.eq_ignore_ascii_case("includeSubDomains") => subdomains = true,
            None if arg.eq_ignore_ascii_case("preload") => preload = true,
            None if arg.eq_ignore_ascii_case("force") => force = true,
            _ => return parse::err(format!("invalid parameter \"{arg}\"")),
        }
    }
    let Some(max_age) = max_age else {
        return parse::err("\"max-age\" parameter is required");
    };
    if !force && max_age < HSTS_MIN_MAX_AGE {
        return parse::err(format!(
            "max-age={max_age} is below {HSTS_MIN_MAX_AGE} (180 days); add \"force\" to allow it"
        ));
    }
    if !force && preload && (max_age < HSTS_PRELOAD_MIN_MAX_AGE || !subdomains) {
        return parse::err(
            "\"preload\" requires max-age of at least 1 year and includeSubDomains; add \"force\" to allow it",
        );
    }
    let mut value = format!("max-age={max_age}");
    if subdomains {
        value.push_str("; includeSubDomains");
    }
    if preload {
        value.push_str("; preload");
    }
    Ok(value)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// `shield_cookie_flags [secure] [httponly] [samesite=lax|strict|none] | off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CookieFlags {
    pub secure: bool,
    pub httponly: bool,
    pub samesite: Option<SameSite>,
}

impl CookieFlags {
    pub fn any(&self) -> bool {
        self.secure || self.httponly || self.samesite.is_some()
    }

    pub fn parse(args: &[&str]) -> Result<Self, ParseError> {
        let mut flags = Self::default();
        if args == ["off"] {
            return Ok(flags);
        }
        for arg in args {
            match parse::param(arg) {
                None if arg.eq_ignore_ascii_case("secure") => flags.secure = true,
                None if arg.eq_ignore_ascii_case("httponly") => flags.httponly = true,
                Some(("samesite", v)) => {
                    flags.samesite = Some(match v.to_ascii_lowercase().as_str() {
                        "lax" => SameSite::Lax,
                        "strict" => SameSite::Strict,
                        "none" => SameSite::None,
                        _ => return parse::err(format!("invalid parameter \"{arg}\"")),
                    })
                }
                _ => return parse::err(format!("invalid parameter \"{arg}\"")),
            }
        }
        if flags.samesite == Some(SameSite::None) && !flags.secure {
            return parse::err("\"samesite=none\" requires \"secure\"");
        }
        Ok(flags)
    }

    /// Returns the hardened `Set-Cookie` value, or `None` when nothing needs adding. Attributes
    /// the upstream already set are kept as they are. `Secure` is only added on TLS requests:
    /// a browser drops a Secure cookie set over plain HTTP.
    pub fn harden(&self, set_cookie: &str, tls: bool) -> Option<String> {
        let has = |attr: &str| {
            set_cookie.split(';').skip(1).any(|a| {
                let name = a.split('=').next().unwrap_or("").trim();
                name.eq_ignore_ascii_case(attr)
            })
        };
        let mut out = set_cookie.trim_end().trim_end_matches(';').to_string();
        let before = out.len();
        if self.secure && tls && !has("Secure") {
            out.push_str("; Secure");
        }
        if self.httponly && !has("HttpOnly") {
            out.push_str("; HttpOnly");
        }
        if let Some(s) = self.samesite {
            if !has("SameSite") {
                out.push_str(match s {
                    SameSite::Lax => "; SameSite=Lax",
                    SameSite::Strict => "; SameSite=Strict",
                    SameSite::None => "; SameSite=None",
                });
            }
        }
        (out.len() != before).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: Mode, rules: &[(&str, Option<&str>)]) -> HeaderPolicy<String> {
        let mut p = HeaderPolicy { mode, ..Default::default() };
        for (n, v) in rules {
            p.set(n, v.map(str::to_string)).unwrap();
        }
        p
    }

    fn names(p: &HeaderPolicy<String>) -> Vec<String> {
        p.effective(str::to_string).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn preset_has_every_observatory_header() {
        let p = policy(Mode::On, &[]);
        let eff = p.effective(str::to_string);
        for (name, _) in PRESET {
            assert!(eff.iter().any(|r| r.name == *name), "{name} missing");
        }
        assert!(!eff.iter().any(|r| r.name == "Cross-Origin-Embedder-Policy"), "COEP is opt-in");
    }

    #[test]
    fn child_overrides_one_header_and_keeps_the_rest() {
        let parent = policy(Mode::On, &[("X-Frame-Options", Some("SAMEORIGIN"))]);
        let mut child = policy(Mode::Unset, &[("Referrer-Policy", Some("no-referrer"))]);
        child.merge(&parent);
        let eff = child.effective(str::to_string);
        let get = |n: &str| eff.iter().find(|r| r.name == n).and_then(|r| r.value.clone());
        assert_eq!(get("X-Frame-Options").as_deref(), Some("SAMEORIGIN"), "parent's kept");
        assert_eq!(get("Referrer-Policy").as_deref(), Some("no-referrer"), "child's wins");
        assert_eq!(get("X-Content-Type-Options").as_deref(), Some("nosniff"), "preset kept");
    }

    #[test]
    fn off_removes_one_header_or_everything() {
        let parent = policy(Mode::On, &[]);
        let mut one_off = policy(Mode::Unset, &[("x-frame-options", None)]);
        one_off.merge(&parent);
        assert!(!names(&one_off).iter().any(|n| n == "X-Frame-Options"));
        assert!(names(&one_off).iter().any(|n| n == "X-Content-Type-Options"));

        let mut all_off = policy(Mode::Off, &[]);
        all_off.merge(&parent);
        assert!(names(&all_off).is_empty());
        assert!(all_off.effective_strip().is_empty());
    }

    #[test]
    fn custom_headers_apply_without_the_preset() {
        let p = policy(Mode::Unset, &[("X-Custom", Some("1"))]);
        assert_eq!(names(&p), vec!["X-Custom".to_string()]);
        assert!(p.effective_strip().is_empty());
    }

    #[test]
    fn duplicate_header_in_one_block_is_an_error() {
        let mut p = policy(Mode::On, &[("X-A", Some("1"))]);
        assert!(p.set("x-a", Some("2".into())).unwrap_err().0.contains("duplicate"));
    }

    #[test]
    fn csp_report_only_renames_the_header() {
        let mut p = policy(Mode::On, &[]);
        p.csp_report_only = Some(true);
        let n = names(&p);
        assert!(n.contains(&CSP_REPORT_ONLY.to_string()) && !n.contains(&CSP.to_string()));
    }

    #[test]
    fn strip_list_defaults_with_preset_and_is_replaced_whole() {
        let parent = policy(Mode::On, &[]);
        assert!(parent.effective_strip().contains(&"X-Powered-By".to_string()));
        let mut child = policy(Mode::Unset, &[]);
        child.strip = Some(vec!["X-Debug".into()]);
        child.merge(&parent);
        assert_eq!(child.effective_strip(), vec!["X-Debug".to_string()]);
    }

    #[test]
    fn hsts_rules() {
        assert_eq!(parse_hsts(&["max-age=1y", "includeSubDomains"]).unwrap(), DEFAULT_HSTS);
        assert!(parse_hsts(&["max-age=1d"]).unwrap_err().0.contains("below"));
        assert_eq!(parse_hsts(&["max-age=1d", "force"]).unwrap(), "max-age=86400");
        assert!(parse_hsts(&["max-age=1y", "preload"]).is_err(), "preload needs subdomains");
        assert_eq!(
            parse_hsts(&["max-age=2y", "includeSubDomains", "preload"]).unwrap(),
            "max-age=63072000; includeSubDomains; preload"
        );
        assert!(parse_hsts(&["includeSubDomains"]).unwrap_err().0.contains("max-age"));
        assert!(parse_hsts(&["max-age=1y", "bogus"]).is_err());
        assert!(tls_only("strict-transport-security") && !tls_only("X-Frame-Options"));
    }

    #[test]
    fn cookie_hardening_adds_only_missing_attributes() {
        let f = CookieFlags::parse(&["secure", "httponly", "samesite=lax"]).unwrap();
        assert_eq!(f.harden("id=1", true).unwrap(), "id=1; Secure; HttpOnly; SameSite=Lax");
        assert_eq!(f.harden("id=1; Path=/", false).unwrap(), "id=1; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(f.harden("id=1; secure; HTTPONLY; SameSite=Strict", true), None);
        assert!(CookieFlags::parse(&["samesite=none"]).is_err(), "None needs Secure");
        assert!(CookieFlags::parse(&["samesite=bogus"]).is_err());
        assert!(!CookieFlags::parse(&["off"]).unwrap().any());
    }

    #[test]
    fn cookie_value_containing_attribute_name_is_not_mistaken() {
        let f = CookieFlags::parse(&["httponly"]).unwrap();
        assert_eq!(f.harden("note=HttpOnly", false).unwrap(), "note=HttpOnly; HttpOnly");
    }
}
