//! Identity on nginx's side. This folder owns:
//! - `directives`: `shield_jwt*` and `shield_csrf*` (keys read at `nginx -t`, every value
//!   bounded);
//! - `request`: the lazy, once-per-request verification (the first read of a `$shield_jwt_*`
//!   variable or the enforcement handler runs it; the limiter's key can be a claim whichever
//!   phase it runs in), the per-worker token cache, the rewrite-phase enforcement (401/403)
//!   and the CSRF check;
//! - `variables`: `$shield_jwt_status`, `$shield_jwt_claim_<name>`, `$shield_csrf_status`;
//! - this file: the per-location configuration, its merge, and the metrics slots.

mod directives;
mod jwks;
mod request;
mod variables;

use std::rc::Rc;

pub use directives::*;
pub use request::IdentityCtx;

/// Postconfiguration: the rewrite-phase handler, and the JWKS zone when one is configured.
pub fn install(cf: &mut ngx::ffi::ngx_conf_t) -> Result<(), ()> {
    jwks::init_zone(cf)?;
    request::install(cf)
}
pub use variables::register as register_variables;

use crate::glue::util::ComplexValue;
use crate::identity::claims::{Rules, Status, MAX_LEEWAY_SECS};
use crate::identity::csrf;
use crate::identity::keys::KeySet;
use crate::identity::verify::{Alg, DEFAULT_ALGS};
use crate::status::metrics::Registry;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JwtMode {
    Off,
    /// Verify when a token is present; never answer 401/403 (variables tell the outcome).
    Optional,
    On,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CsrfMode {
    Off,
    /// Count and log, never block.
    Report,
    On,
}

/// A key file as loaded at configuration time.
pub struct LoadedKeys {
    pub path: String,
    pub keys: KeySet,
    /// Digest of the file's bytes; with the algorithm list it names the token cache's key set.
    pub digest: [u8; 32],
}

/// A `shield_jwt_key_request`: the key set of slot `slot` in the shared JWKS zone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyRequest {
    pub slot: usize,
    pub cooldown_secs: u64,
}

#[derive(Clone)]
pub enum KeySource {
    File(Rc<LoadedKeys>),
    Fetched(KeyRequest),
}

/// What a request needs to verify a token here, resolved once at merge time.
pub struct JwtPolicy {
    pub mode: JwtMode,
    pub source: KeySource,
    /// The token cache's name for (key file, algorithms); a fetched set's is per set.
    pub file_keyset_id: Option<u64>,
    pub token: Option<ComplexValue>,
    pub algorithms: Vec<Alg>,
    pub rules: Rules,
    pub cache: bool,
}

pub struct CsrfPolicy {
    pub mode: CsrfMode,
    pub policy: csrf::Policy,
    /// Trust the location's `shield_cors_origins` (when no `shield_csrf_trusted_origins`).
    pub trust_cors: bool,
}

#[derive(Default)]
pub struct IdentityLoc {
    mode: Option<JwtMode>,
    /// `shield_jwt_key_file` or `shield_jwt_key_request`, inherited whole.
    source: Option<KeySource>,
    token: Option<ComplexValue>,
    algorithms: Option<Vec<Alg>>,
    /// `shield_jwt_require` rules of this block and its parents.
    require: Option<Rules>,
    leeway: Option<u64>,
    require_exp: Option<bool>,
    cache: Option<bool>,
    csrf: Option<CsrfMode>,
    csrf_origins: Option<Vec<String>>,
    csrf_trusted: Option<Vec<String>>,
    csrf_bypass: Option<Vec<String>>,
    /// A `shield_jwt*` / `shield_csrf*` directive appears in this very block.
    jwt_here: bool,
    csrf_here: bool,
    // Resolved at merge time.
    pub jwt: Option<Rc<JwtPolicy>>,
    pub csrf_policy: Option<Rc<CsrfPolicy>>,
}

fn inherit<T: Clone>(slot: &mut Option<T>, prev: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(prev);
    }
}

impl IdentityLoc {
    pub fn merge(&mut self, prev: &IdentityLoc) -> Result<(), String> {
        inherit(&mut self.mode, &prev.mode);
        inherit(&mut self.source, &prev.source);
        inherit(&mut self.token, &prev.token);
        inherit(&mut self.algorithms, &prev.algorithms);
        // Rules add up down the tree: a location that adds a role rule keeps its server's
        // iss/aud checks (nginx's usual "inherit only when unset" would silently drop them).
        match (&mut self.require, &prev.require) {
            (Some(own), Some(parent)) => own.extend_from(parent),
            (own @ None, parent) => own.clone_from(parent),
            (Some(_), None) => {}
        }
        inherit(&mut self.leeway, &prev.leeway);
        inherit(&mut self.require_exp, &prev.require_exp);
        inherit(&mut self.cache, &prev.cache);
        inherit(&mut self.csrf, &prev.csrf);
        inherit(&mut self.csrf_origins, &prev.csrf_origins);
        inherit(&mut self.csrf_trusted, &prev.csrf_trusted);
        inherit(&mut self.csrf_bypass, &prev.csrf_bypass);
        self.merge_jwt(prev)?;
        self.merge_csrf(prev);
        Ok(())
    }

    fn merge_jwt(&mut self, prev: &IdentityLoc) -> Result<(), String> {
        let mode = self.mode.unwrap_or(JwtMode::Off);
        if mode == JwtMode::Off {
            self.jwt = None;
            return Ok(());
        }
        let source =
            self.source.clone().ok_or("\"shield_jwt\" needs \"shield_jwt_key_file\" or \"shield_jwt_key_request\"")?;
        let algorithms = self.algorithms.clone().unwrap_or_else(|| DEFAULT_ALGS.to_vec());
        let mut rules = self.require.clone().unwrap_or_default();
        rules.leeway_secs = self.leeway.unwrap_or(0).min(MAX_LEEWAY_SECS);
        rules.require_exp = self.require_exp.unwrap_or(true);
        let cache = self.cache.unwrap_or(true);
        // A block that sets nothing of its own shares its parent's policy.
        if !self.jwt_here {
            if let Some(p) = &prev.jwt {
                self.jwt = Some(Rc::clone(p));
                return Ok(());
            }
        }
        let file_keyset_id = match &source {
            KeySource::File(keys) => Some(keyset_id(&keys.digest, &algorithms)),
            KeySource::Fetched(_) => None,
        };
        self.jwt =
            Some(Rc::new(JwtPolicy { mode, source, file_keyset_id, token: self.token, algorithms, rules, cache }));
        Ok(())
    }

    fn merge_csrf(&mut self, prev: &IdentityLoc) {
        let mode = self.csrf.unwrap_or(CsrfMode::Off);
        if mode == CsrfMode::Off {
            self.csrf_policy = None;
            return;
        }
        let policy = csrf::Policy {
            own_origins: self.csrf_origins.clone().unwrap_or_default(),
            trusted: self.csrf_trusted.clone().unwrap_or_default(),
            bypass: self.csrf_bypass.clone().unwrap_or_default(),
        };
        let trust_cors = self.csrf_trusted.is_none();
        if !self.csrf_here {
            if let Some(p) = &prev.csrf_policy {
                self.csrf_policy = Some(Rc::clone(p));
                return;
            }
        }
        self.csrf_policy = Some(Rc::new(CsrfPolicy { mode, policy, trust_cors }));
    }
}

/// The token cache's name for what a cached verification proved: these keys, these algorithms.
pub fn keyset_id(digest: &[u8; 32], algorithms: &[Alg]) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(digest);
    for a in algorithms {
        ctx.update(a.name().as_bytes());
        ctx.update(b",");
    }
    let d = ctx.finish();
    u64::from_le_bytes(d.as_ref()[..8].try_into().expect("SHA-256 is 32 bytes"))
}

/// Metric slots, registered with the other features' at configuration start.
pub struct IdentitySlots {
    /// `shield_jwt_requests_total{status}`, indexed like `Status::ALL`.
    pub jwt: [usize; 5],
    /// `shield_jwt_rejected_total{status}`.
    pub jwt_rejected: [usize; 5],
    pub signature_checks: usize,
    pub cache_hits: usize,
    /// `shield_csrf_requests_total{outcome}`: rejected, reported.
    pub csrf_rejected: usize,
    pub csrf_reported: usize,
    pub jwks_fetches: usize,
    pub jwks_fetch_failures: usize,
    /// `shield_jwt_key_request` URIs, one shared-memory slot each (in this order).
    pub key_requests: Vec<String>,
    /// The JWKS zone's slots, set by its init (`jwks`).
    pub jwks: *mut jwks::JwksShm,
}

impl IdentitySlots {
    pub fn register(reg: &mut Registry) -> Self {
        const JWT: &str = "shield_jwt_requests_total";
        const JWT_HELP: &str = "Requests whose bearer token was examined, by outcome.";
        const REJECTED: &str = "shield_jwt_rejected_total";
        const REJECTED_HELP: &str = "Requests answered 401 or 403 by shield_jwt, by outcome.";
        const CSRF: &str = "shield_csrf_requests_total";
        const CSRF_HELP: &str = "Cross-origin state-changing requests caught by shield_csrf.";
        const JWKS: &str = "shield_jwt_key_fetches_total";
        const JWKS_HELP: &str = "JWKS fetches by shield_jwt_key_request.";
        let by_status = |reg: &mut Registry, name, help| {
            Status::ALL.map(|s| reg.counter(name, help, &[("status", &s.as_str().to_ascii_lowercase())]))
        };
        IdentitySlots {
            jwt: by_status(reg, JWT, JWT_HELP),
            jwt_rejected: by_status(reg, REJECTED, REJECTED_HELP),
            signature_checks: reg.counter(
                "shield_jwt_signature_checks_total",
                "Token signatures checked (tokens not found in the per-worker cache).",
                &[],
            ),
            cache_hits: reg.counter(
                "shield_jwt_cache_hits_total",
                "Tokens found verified in the per-worker cache.",
                &[],
            ),
            csrf_rejected: reg.counter(CSRF, CSRF_HELP, &[("outcome", "rejected")]),
            csrf_reported: reg.counter(CSRF, CSRF_HELP, &[("outcome", "reported")]),
            jwks_fetches: reg.counter(JWKS, JWKS_HELP, &[("result", "ok")]),
            jwks_fetch_failures: reg.counter(JWKS, JWKS_HELP, &[("result", "failed")]),
            key_requests: Vec::new(),
            jwks: core::ptr::null_mut(),
        }
    }
}

pub fn status_index(s: Status) -> usize {
    Status::ALL.iter().position(|x| *x == s).unwrap_or(0)
}
