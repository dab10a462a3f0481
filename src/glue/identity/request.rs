//! The request side: verification once per request, on first need (a `$shield_jwt_*` read, the
//! limiter evaluating a claim-keyed zone, or the enforcement handler), the per-worker token
//! cache, and the rewrite-phase handler that answers 401/403 and checks CSRF.
//!
//! The handler is registered last of the module's rewrite-phase handlers, so it runs first
//! (nginx runs a phase's handlers in reverse order of registration): before the WAF, before the
//! CORS preflight answer (which it lets through: a preflight carries no credentials), before a
//! limiter in that phase, and before the location's own `return`.

use core::ptr;
use std::cell::RefCell;
use std::rc::Rc;

use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_REWRITE_PHASE, ngx_http_request_t,
    ngx_int_t, NGX_DECLINED, NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_OPTIONS,
    NGX_HTTP_UNAUTHORIZED, NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_log_error;
use serde_json::{Map, Value};

use super::jwks::{self, Fetch};
use super::{keyset_id, status_index, CsrfMode, CsrfPolicy, JwtMode, JwtPolicy, KeySource, LoadedKeys};
use crate::glue::headers::filter::{is_tls, request_header};
use crate::glue::util::{guard, push_header, static_str};
use crate::glue::{LocConf, RequestCtx, Shield};
use crate::identity::cache::TokenCache;
use crate::identity::claims::{self, Status};
use crate::identity::csrf::{self, Verdict};
use crate::identity::{token, verify};

/// Bounds of the per-worker token cache: entries, bytes of tokens (their parsed claims take a
/// few times that), and the longest an entry lives without an `exp`.
pub const CACHE_ENTRIES: usize = 4096;
pub const CACHE_MAX_BYTES: usize = 4 << 20;
pub const CACHE_MAX_TTL_SECS: u64 = 600;

/// A token whose signature verified: its claims, kept in the cache and the request.
pub struct Verified {
    pub claims: Map<String, Value>,
}

pub struct Outcome {
    pub status: Status,
    /// The claims when the status is VALID.
    pub claims: Option<Rc<Verified>>,
}

#[derive(Default)]
pub struct IdentityCtx {
    /// The outcome and the policy it was reached under: after an internal redirect to a
    /// location with other rules, the token is judged again by those.
    /// The key set's generation too: a set fetched mid-request judges the token again.
    jwt: Option<(*const JwtPolicy, u64, Outcome)>,
    pub csrf: Option<&'static str>,
    pub fetch: Fetch,
}

thread_local! {
    static CACHE: RefCell<TokenCache<Verified>> = RefCell::new(TokenCache::new(CACHE_ENTRIES, CACHE_MAX_BYTES, CACHE_MAX_TTL_SECS));
}

pub fn install(cf: &mut ngx_conf_t) -> Result<(), ()> {
    let cmcf = NgxHttpCoreModule::main_conf_mut(cf).ok_or(())?;
    let phase = ngx_http_phases_NGX_HTTP_REWRITE_PHASE as usize;
    // SAFETY: phase handler arrays are initialised by the core module before any
    // postconfiguration runs; the pushed slot is ours to fill.
    unsafe {
        let slot = ngx_array_push(&mut cmcf.phases[phase].handlers).cast::<ngx_http_handler_pt>();
        if slot.is_null() {
            return Err(());
        }
        *slot = Some(rewrite_phase);
    }
    Ok(())
}

pub(super) fn now() -> f64 {
    let t = ngx::ffi::ngx_timeofday();
    t.sec as f64 + f64::from(t.msec as u32) / 1000.0
}

fn log(r: &ngx_http_request_t) -> *mut ngx::ffi::ngx_log_t {
    // SAFETY: a live request has a live connection.
    unsafe { (*r.connection).log }
}

/// The request's verification outcome under its location's policy, computed on first call.
/// `None` where `shield_jwt` is off.
pub fn outcome(r: *mut ngx_http_request_t) -> Option<&'static Outcome> {
    // SAFETY: nginx hands variable and phase handlers a live request.
    let req = unsafe { &*r };
    let policy = Shield::location_conf(req)?.identity.jwt.as_ref()?;
    let ctx = RequestCtx::get(r)?;
    let mcf = Shield::main_conf(req)?;
    let here = Rc::as_ptr(policy);
    let (generation, keys) = match &policy.source {
        KeySource::File(keys) => (1, Some(Rc::clone(keys))),
        KeySource::Fetched(kr) => jwks::current(mcf, *kr).map_or((0, None), |(g, k)| (g, Some(k))),
    };
    if !ctx.identity.jwt.as_ref().is_some_and(|(under, g, _)| ptr::eq(*under, here) && *g == generation) {
        let out = evaluate(req, policy, keys.as_deref());
        mcf.add(mcf.identity.jwt[status_index(out.status)], 1);
        ctx.identity.jwt = Some((here, generation, out));
    }
    ctx.identity.jwt.as_ref().map(|(_, _, out)| out)
}

pub(super) fn token_bytes<'a>(r: &'a ngx_http_request_t, policy: &JwtPolicy) -> Option<&'a [u8]> {
    let raw = match policy.token {
        // The value lives in the request pool.
        Some(cv) => {
            let s = cv.eval(ptr::from_ref(r).cast_mut())?;
            // SAFETY: an evaluated complex value points at `len` bytes in the request pool.
            let bytes: &'a [u8] = if s.len == 0 { &[] } else { unsafe { core::slice::from_raw_parts(s.data, s.len) } };
            token::strip_bearer(bytes)
        }
        None => token::bearer(request_header(r, "authorization")?.as_bytes())?,
    };
    (!raw.is_empty()).then_some(raw)
}

fn evaluate(r: &ngx_http_request_t, policy: &JwtPolicy, keys: Option<&LoadedKeys>) -> Outcome {
    let Some(raw) = token_bytes(r, policy) else { return Outcome { status: Status::Missing, claims: None } };
    let Some(keys) = keys else { return failed(r, Status::Invalid, "no key set fetched yet") };
    let now = now();
    let mcf = Shield::main_conf(r);
    let id = policy.file_keyset_id.unwrap_or_else(|| keyset_id(&keys.digest, &policy.algorithms));
    let cached = if policy.cache { CACHE.with(|c| c.borrow_mut().get(id, raw, now)) } else { None };
    let verified = match cached {
        Some(v) => {
            if let Some(mcf) = mcf {
                mcf.add(mcf.identity.cache_hits, 1);
            }
            v
        }
        None => {
            if let Some(mcf) = mcf {
                mcf.add(mcf.identity.signature_checks, 1);
            }
            let parsed = match token::parse(raw) {
                Ok(t) => t,
                Err(e) => return failed(r, Status::Invalid, e.as_str()),
            };
            if let Err(e) = verify::verify(&keys.keys, &policy.algorithms, &parsed) {
                let reason = match (&e, &parsed.header.kid) {
                    (verify::Rejected::UnknownKid, Some(kid)) => {
                        format!("unknown kid \"{kid}\" (not in {})", keys.path)
                    }
                    (verify::Rejected::Algorithm, _) => format!("algorithm \"{}\" not allowed", parsed.header.alg),
                    _ => e.as_str().to_string(),
                };
                return failed(r, Status::Invalid, &reason);
            }
            let exp = claims::expiry(&parsed.claims);
            let v = Rc::new(Verified { claims: parsed.claims });
            if policy.cache {
                CACHE.with(|c| c.borrow_mut().insert(id, raw, Rc::clone(&v), raw.len(), exp, now));
            }
            v
        }
    };
    match policy.rules.check(&verified.claims, now) {
        Ok(()) => Outcome { status: Status::Valid, claims: Some(verified) },
        Err(f) => failed(r, f.status(), &f.describe()),
    }
}

fn failed(r: &ngx_http_request_t, status: Status, reason: &str) -> Outcome {
    ngx_log_error!(NGX_LOG_INFO, log(r), "shield: JWT {}: {reason}", status.as_str());
    Outcome { status, claims: None }
}

extern "C" fn rewrite_phase(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "identity rewrite phase", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        // Subrequests share the main request's verdict; an error page shows a failure, it is
        // not checked again.
        if !ptr::eq(r, req.main) || req.error_page() != 0 {
            return NGX_DECLINED as ngx_int_t;
        }
        let Some(lc) = Shield::location_conf(req) else { return NGX_DECLINED as ngx_int_t };
        if let Some(p) = &lc.identity.csrf_policy {
            if let Some(rc) = check_csrf(req, lc, p) {
                return rc;
            }
        }
        let Some(p) = lc.identity.jwt.as_ref().filter(|p| p.mode != JwtMode::Off) else {
            return NGX_DECLINED as ngx_int_t;
        };
        if is_cors_preflight(req, lc) {
            return NGX_DECLINED as ngx_int_t;
        }
        if let KeySource::Fetched(kr) = p.source {
            if let Some(rc) = jwks::ensure(req, p, kr) {
                return rc;
            }
        }
        match p.mode {
            JwtMode::On => enforce(req),
            _ => NGX_DECLINED as ngx_int_t,
        }
    })
}

fn is_cors_preflight(r: &ngx_http_request_t, lc: &LocConf) -> bool {
    lc.cors_policy.is_some()
        && r.method == NGX_HTTP_OPTIONS as usize
        && request_header(r, "access-control-request-method").is_some()
}

fn enforce(r: &mut ngx_http_request_t) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    let Some(out) = outcome(rp) else { return NGX_DECLINED as ngx_int_t };
    // RFC 6750 §3: no error code when the request had no token at all.
    let (code, challenge) = match out.status {
        Status::Valid => return NGX_DECLINED as ngx_int_t,
        Status::Missing => (NGX_HTTP_UNAUTHORIZED, "Bearer"),
        Status::Expired | Status::Invalid => (NGX_HTTP_UNAUTHORIZED, "Bearer error=\"invalid_token\""),
        Status::Forbidden => (NGX_HTTP_FORBIDDEN, "Bearer error=\"insufficient_scope\""),
    };
    if let Some(mcf) = Shield::main_conf(r) {
        mcf.add(mcf.identity.jwt_rejected[status_index(out.status)], 1);
    }
    match push_header(&mut r.headers_out.headers, static_str("WWW-Authenticate"), static_str(challenge)) {
        Some(h) => r.headers_out.www_authenticate = h,
        None => return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
    }
    code as ngx_int_t
}

fn check_csrf(r: &ngx_http_request_t, lc: &LocConf, p: &CsrfPolicy) -> Option<ngx_int_t> {
    let request = csrf::Request {
        method: r.method_name.to_str().unwrap_or(""),
        sec_fetch_site: request_header(r, "sec-fetch-site"),
        origin: request_header(r, "origin"),
        scheme: if is_tls(r) { "https" } else { "http" },
        host: request_header(r, "host"),
        path: r.uri.to_str().unwrap_or(""),
    };
    let cors = lc.cors_policy.as_ref().filter(|_| p.trust_cors);
    // The CORS allowlist's exact origins and patterns; its `*` trusts no one for CSRF.
    let trusted_by_cors =
        |o: &str| cors.is_some_and(|c| c.origins.iter().any(|x| x == o) || c.patterns.iter().any(|re| re.is_match(o)));
    let verdict = p.policy.decide(&request, trusted_by_cors);
    let origin = request.origin.unwrap_or("-");
    let site = request.sec_fetch_site.unwrap_or("-");
    let ctx = RequestCtx::get(ptr::from_ref(r).cast_mut())?;
    let mcf = Shield::main_conf(r)?;
    match (verdict, p.mode) {
        (Verdict::Pass, _) | (_, CsrfMode::Off) => {
            ctx.identity.csrf = Some("PASSED");
            None
        }
        (Verdict::CrossOrigin, CsrfMode::Report) => {
            ctx.identity.csrf = Some("REPORTED");
            mcf.add(mcf.identity.csrf_reported, 1);
            ngx_log_error!(
                NGX_LOG_WARN,
                log(r),
                "shield: cross-origin request reported, origin: {origin}, sec-fetch-site: {site}"
            );
            None
        }
        (Verdict::CrossOrigin, CsrfMode::On) => {
            ctx.identity.csrf = Some("REJECTED");
            mcf.add(mcf.identity.csrf_rejected, 1);
            ngx_log_error!(
                NGX_LOG_WARN,
                log(r),
                "shield: cross-origin request rejected, origin: {origin}, sec-fetch-site: {site}"
            );
            Some(NGX_HTTP_FORBIDDEN as ngx_int_t)
        }
    }
}
