//! Response headers on nginx's side: the header filter that applies the security headers,
//! cookie hardening, CORS response headers and cache policy (`filter`), and the rewrite-phase
//! CORS preflight answer (`preflight`).

pub mod directives;
pub mod filter;
pub mod preflight;

use crate::status::metrics::Registry;

/// Slots of the header, CORS and cache counters.
pub struct Slots {
    pub headers_applied: usize,
    pub cookies_hardened: usize,
    pub preflight_allowed: usize,
    pub preflight_denied: usize,
    pub cache_set: usize,
    pub cache_no_store: usize,
}

impl Slots {
    pub fn register(reg: &mut Registry) -> Self {
        const PREFLIGHT: &str = "shield_cors_preflight_total";
        const PREFLIGHT_HELP: &str = "CORS preflight requests answered by the module.";
        const CACHE: &str = "shield_cache_policy_total";
        const CACHE_HELP: &str = "Responses whose Cache-Control the module set.";
        Slots {
            headers_applied: reg.counter("shield_headers_applied_total", "Responses given security headers.", &[]),
            cookies_hardened: reg.counter("shield_cookies_hardened_total", "Set-Cookie headers hardened.", &[]),
            preflight_allowed: reg.counter(PREFLIGHT, PREFLIGHT_HELP, &[("result", "allowed")]),
            preflight_denied: reg.counter(PREFLIGHT, PREFLIGHT_HELP, &[("result", "denied")]),
            cache_set: reg.counter(CACHE, CACHE_HELP, &[("action", "policy")]),
            cache_no_store: reg.counter(CACHE, CACHE_HELP, &[("action", "private_no_store")]),
        }
    }
}
