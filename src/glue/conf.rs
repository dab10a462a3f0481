//! Per-location configuration: the `shield_*` directives, their unset → merge → default
//! lifecycle, and the policies resolved once at merge time so requests do no parsing.

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_2MORE, NGX_CONF_FLAG, NGX_CONF_NOARGS,
    NGX_CONF_TAKE1, NGX_CONF_TAKE12, NGX_CONF_TAKE123, NGX_CONF_TAKE2, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SERVER_TOKENS_OFF, NGX_HTTP_SRV_CONF,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use super::Shield;
use ngx::ngx_string;

use super::util::{directive, pool_str, set_once, ComplexValue};
use crate::headers::cache::{CachePolicy, CacheRule};
use crate::headers::cors::{self, CorsPolicy};
use crate::headers::security::{self, CookieFlags, HeaderPolicy, Mode};
use crate::parse::ConfError;

/// A response header ready to send: name in configuration memory, value compiled.
#[derive(Clone, Copy)]
pub struct OutHeader {
    pub name: ngx_str_t,
    pub value: ComplexValue,
    pub tls_only: bool,
}

/// CORS settings as written in one block; inherited field by field.
#[derive(Default)]
pub(crate) struct CorsConf {
    pub(crate) enabled: Option<bool>,
    pub(crate) origins: Option<Vec<String>>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) headers: Option<Vec<String>>,
    pub(crate) expose: Option<Vec<String>>,
    pub(crate) credentials: Option<bool>,
    pub(crate) max_age: Option<u32>,
}

/// Cache settings as written in one block.
#[derive(Default)]
pub(crate) struct CacheConf {
    /// `Some(empty)` is `shield_cache_control off`.
    pub(crate) rules: Option<Vec<CacheRule>>,
    pub(crate) off: bool,
    pub(crate) override_upstream: Option<bool>,
    pub(crate) private_no_store: Option<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    Prometheus,
    Json,
}

#[derive(Default)]
pub struct LocConf {
    pub(crate) headers: HeaderPolicy<ComplexValue>,
    pub(crate) cors: CorsConf,
    pub(crate) cache: CacheConf,
    pub status: Option<StatusFormat>,
    pub limit: super::limit::LimitLoc,
    pub waf: super::filter::WafLoc,
    pub identity: super::identity::IdentityLoc,
    /// The response cache (`shield_cache*`), not to be confused with `cache`, the policy.
    pub response_cache: super::cache::CacheLoc,

    // Resolved at merge time.
    pub out_headers: Vec<OutHeader>,
    pub strip: Vec<ngx_str_t>,
    pub strips_server: bool,
    pub cookie: Option<CookieFlags>,
    pub cors_policy: Option<CorsPolicy>,
    pub cache_policy: Option<CachePolicy>,
}

impl LocConf {
    /// Whether the header filter has anything to do here (the fast path skips it otherwise).
    pub fn filters_headers(&self) -> bool {
        !self.out_headers.is_empty()
            || !self.strip.is_empty()
            || self.cookie.is_some()
            || self.cors_policy.is_some()
            || self.cache_policy.is_some()
    }

    pub fn merge(&mut self, cf: &mut ngx_conf_t, prev: &LocConf) -> Result<(), String> {
        self.headers.merge(&prev.headers);
        let preset = if self.headers.mode == Mode::On {
            security::PRESET
                .iter()
                .map(|(_, v)| Ok((*v, ComplexValue::compile(cf, v)?)))
                .collect::<Result<Vec<_>, String>>()?
        } else {
            Vec::new()
        };
        let effective = self.headers.effective(|v| {
            preset.iter().find(|(s, _)| *s == v).map(|(_, cv)| *cv).expect("preset values are compiled above")
        });
        self.out_headers = effective
            .into_iter()
            .filter_map(|rule| {
                let value = rule.value?;
                let name = pool_str(cf.pool, rule.name.as_bytes())?;
                Some(OutHeader { name, value, tls_only: security::tls_only(&rule.name) })
            })
            .collect();
        self.strip = self.headers.effective_strip().iter().filter_map(|n| pool_str(cf.pool, n.as_bytes())).collect();
        self.cookie = self.headers.effective_cookie();
        self.strips_server = self.strip.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(b"server"));
        if self.strips_server {
            // Hiding the Server header should also hide the version nginx prints in the
            // footer of its own error pages.
            if let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cf) {
                clcf.server_tokens = NGX_HTTP_SERVER_TOKENS_OFF as _;
            }
        }

        self.limit.merge(cf, &prev.limit)?;
        let mcf = Shield::main_conf_mut(cf).ok_or("no main configuration")?;
        self.waf.merge(&prev.waf, mcf)?;
        self.merge_cors(&prev.cors)?;
        self.merge_cache(&prev.cache);
        self.identity.merge(&prev.identity)?;
        self.response_cache.merge(cf, &prev.response_cache)?;
        Ok(())
    }

    fn merge_cors(&mut self, prev: &CorsConf) -> Result<(), String> {
        let c = &mut self.cors;
        c.enabled = c.enabled.or(prev.enabled);
        inherit(&mut c.origins, &prev.origins);
        inherit(&mut c.methods, &prev.methods);
        inherit(&mut c.headers, &prev.headers);
        inherit(&mut c.expose, &prev.expose);
        c.credentials = c.credentials.or(prev.credentials);
        c.max_age = c.max_age.or(prev.max_age);
        if c.enabled != Some(true) {
            self.cors_policy = None;
            return Ok(());
        }
        let mut policy = CorsPolicy {
            credentials: c.credentials.unwrap_or(false),
            methods: c.methods.clone().unwrap_or_else(|| cors::DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()),
            headers: c.headers.clone().unwrap_or_default(),
            expose: c.expose.clone().unwrap_or_default(),
            max_age: c.max_age.unwrap_or(cors::DEFAULT_MAX_AGE),
            ..Default::default()
        };
        for origin in c.origins.as_deref().unwrap_or_default() {
            policy.add_origin(origin).map_err(|e| format!("shield_cors_origins: {e}"))?;
        }
        policy.validate().map_err(|e| format!("shield_cors: {e}"))?;
        self.cors_policy = Some(policy);
        Ok(())
    }

    fn merge_cache(&mut self, prev: &CacheConf) {
        let c = &mut self.cache;
        if c.rules.is_none() {
            c.rules.clone_from(&prev.rules);
        }
        c.override_upstream = c.override_upstream.or(prev.override_upstream);
        c.private_no_store = c.private_no_store.or(prev.private_no_store);
        let rules = c.rules.clone().unwrap_or_default();
        let active = !rules.is_empty() || c.private_no_store == Some(true);
        self.cache_policy = active.then(|| CachePolicy {
            rules,
            override_upstream: c.override_upstream.unwrap_or(false),
            private_no_store: c.private_no_store.unwrap_or(true),
        });
    }
}

fn inherit<T: Clone>(slot: &mut Option<T>, prev: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(prev);
    }
}

// The header, CORS and cache directives are in `headers::directives`.

extern "C" fn set_status(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let format = match args.first().copied() {
            None | Some("prometheus") => StatusFormat::Prometheus,
            Some("json") => StatusFormat::Json,
            Some(other) => return Err(ConfError::InvalidParameter(other.to_string())),
        };
        set_once(&mut lc.status, format)?;
        super::status::set_content_handler(cf);
        Ok(())
    })
}

// --- the command table --------------------------------------------------------------------

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

type Handler = extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

const fn entry(name: ngx_str_t, type_: u32, conf: ngx_uint_t, set: Handler) -> ngx_command_t {
    ngx_command_t { name, type_: type_ as ngx_uint_t, set: Some(set), conf, offset: 0, post: ptr::null_mut() }
}

/// A directive valid in http, server and location blocks.
const fn command(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    entry(name, ANY_LEVEL | args, NGX_HTTP_LOC_CONF_OFFSET, set)
}

/// A directive valid in the http block only.
const fn main_command(name: ngx_str_t, args: u32, set: Handler) -> ngx_command_t {
    entry(name, NGX_HTTP_MAIN_CONF | args, NGX_HTTP_MAIN_CONF_OFFSET, set)
}

use super::{cache, filter, headers, identity, limit, redis};

pub static mut COMMANDS: [ngx_command_t; 74] = [
    command(ngx_string!("shield_headers"), NGX_CONF_FLAG, headers::directives::set_headers),
    command(ngx_string!("shield_header"), NGX_CONF_TAKE2, headers::directives::set_header),
    command(ngx_string!("shield_csp"), NGX_CONF_TAKE1, headers::directives::set_csp),
    command(ngx_string!("shield_csp_report_only"), NGX_CONF_FLAG, headers::directives::set_csp_report_only),
    command(ngx_string!("shield_hsts"), NGX_CONF_1MORE, headers::directives::set_hsts),
    command(ngx_string!("shield_strip_headers"), NGX_CONF_1MORE, headers::directives::set_strip),
    command(ngx_string!("shield_cookie_flags"), NGX_CONF_1MORE, headers::directives::set_cookie_flags),
    command(ngx_string!("shield_cors"), NGX_CONF_FLAG, headers::directives::set_cors),
    command(ngx_string!("shield_cors_origins"), NGX_CONF_1MORE, headers::directives::set_cors_origins),
    command(ngx_string!("shield_cors_methods"), NGX_CONF_1MORE, headers::directives::set_cors_methods),
    command(ngx_string!("shield_cors_headers"), NGX_CONF_1MORE, headers::directives::set_cors_headers),
    command(ngx_string!("shield_cors_expose_headers"), NGX_CONF_1MORE, headers::directives::set_cors_expose),
    command(ngx_string!("shield_cors_credentials"), NGX_CONF_FLAG, headers::directives::set_cors_credentials),
    command(ngx_string!("shield_cors_max_age"), NGX_CONF_TAKE1, headers::directives::set_cors_max_age),
    command(ngx_string!("shield_cache_control"), NGX_CONF_1MORE, headers::directives::set_cache_control),
    command(ngx_string!("shield_cache_override"), NGX_CONF_FLAG, headers::directives::set_cache_override),
    command(ngx_string!("shield_cache_private_no_store"), NGX_CONF_FLAG, headers::directives::set_cache_private),
    main_command(ngx_string!("shield_redis"), NGX_CONF_1MORE, redis::set_redis),
    main_command(ngx_string!("shield_redis_ssl_trusted_certificate"), NGX_CONF_TAKE1, redis::set_ssl_string),
    main_command(ngx_string!("shield_redis_ssl_certificate"), NGX_CONF_TAKE1, redis::set_ssl_string),
    main_command(ngx_string!("shield_redis_ssl_certificate_key"), NGX_CONF_TAKE1, redis::set_ssl_string),
    main_command(ngx_string!("shield_redis_ssl_name"), NGX_CONF_TAKE1, redis::set_ssl_string),
    main_command(ngx_string!("shield_redis_ssl_verify"), NGX_CONF_TAKE1, redis::set_ssl_verify),
    main_command(ngx_string!("shield_limit_zone"), NGX_CONF_2MORE, limit::set_zone),
    command(ngx_string!("shield_limit"), NGX_CONF_1MORE, limit::set_limit),
    command(ngx_string!("shield_limit_status"), NGX_CONF_TAKE1, limit::set_status),
    command(ngx_string!("shield_limit_dry_run"), NGX_CONF_FLAG, limit::set_dry_run),
    command(ngx_string!("shield_limit_log_level"), NGX_CONF_TAKE1, limit::set_log_level),
    command(ngx_string!("shield_limit_fail"), NGX_CONF_TAKE1, limit::set_fail),
    command(ngx_string!("shield_limit_headers"), NGX_CONF_TAKE1, limit::set_headers),
    command(ngx_string!("shield_ban"), NGX_CONF_1MORE, limit::set_ban),
    command(ngx_string!("shield_filter"), NGX_CONF_TAKE1, filter::set_filter),
    command(ngx_string!("shield_filter_paranoia"), NGX_CONF_TAKE1, filter::set_paranoia),
    command(ngx_string!("shield_filter_threshold"), NGX_CONF_TAKE1, filter::set_threshold),
    command(ngx_string!("shield_filter_status"), NGX_CONF_TAKE1, filter::set_status),
    command(ngx_string!("shield_filter_exclude"), NGX_CONF_1MORE, filter::set_exclude),
    command(ngx_string!("shield_filter_rules_file"), NGX_CONF_TAKE1, filter::set_rules_file),
    command(ngx_string!("shield_filter_rule"), NGX_CONF_1MORE, filter::set_rule),
    command(ngx_string!("shield_filter_limits"), NGX_CONF_1MORE, filter::set_limits),
    command(ngx_string!("shield_filter_methods"), NGX_CONF_1MORE, filter::set_methods),
    command(ngx_string!("shield_filter_content_types"), NGX_CONF_1MORE, filter::set_content_types),
    command(ngx_string!("shield_filter_allow"), NGX_CONF_1MORE, filter::set_allow),
    command(ngx_string!("shield_filter_deny"), NGX_CONF_1MORE, filter::set_deny),
    command(ngx_string!("shield_filter_scanners"), NGX_CONF_FLAG, filter::set_scanners),
    command(ngx_string!("shield_filter_audit_log"), NGX_CONF_TAKE1, filter::set_audit_log),
    command(ngx_string!("shield_filter_inspect_headers"), NGX_CONF_1MORE, filter::set_inspect_headers),
    command(ngx_string!("shield_filter_secrules"), NGX_CONF_1MORE, filter::set_secrules),
    command(ngx_string!("shield_jwt"), NGX_CONF_TAKE1, identity::set_jwt),
    command(ngx_string!("shield_jwt_key_file"), NGX_CONF_TAKE1, identity::set_key_file),
    command(ngx_string!("shield_jwt_key_request"), NGX_CONF_1MORE, identity::set_key_request),
    command(ngx_string!("shield_jwt_token"), NGX_CONF_TAKE1, identity::set_token),
    command(ngx_string!("shield_jwt_algorithms"), NGX_CONF_1MORE, identity::set_algorithms),
    command(ngx_string!("shield_jwt_require"), NGX_CONF_1MORE, identity::set_require),
    command(ngx_string!("shield_jwt_leeway"), NGX_CONF_TAKE1, identity::set_leeway),
    command(ngx_string!("shield_jwt_exp"), NGX_CONF_TAKE1, identity::set_exp),
    command(ngx_string!("shield_jwt_cache"), NGX_CONF_FLAG, identity::set_cache),
    command(ngx_string!("shield_csrf"), NGX_CONF_TAKE1, identity::set_csrf),
    command(ngx_string!("shield_csrf_origins"), NGX_CONF_1MORE, identity::set_csrf_origins),
    command(ngx_string!("shield_csrf_trusted_origins"), NGX_CONF_1MORE, identity::set_csrf_trusted),
    command(ngx_string!("shield_csrf_bypass"), NGX_CONF_1MORE, identity::set_csrf_bypass),
    entry(
        ngx_string!("shield_status"),
        NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1,
        NGX_HTTP_LOC_CONF_OFFSET,
        set_status,
    ),
    main_command(ngx_string!("shield_cache_zone"), NGX_CONF_1MORE, cache::set_zone),
    command(ngx_string!("shield_cache"), NGX_CONF_TAKE1, cache::set_cache),
    command(ngx_string!("shield_cache_key"), NGX_CONF_TAKE1, cache::set_key),
    command(ngx_string!("shield_cache_valid"), NGX_CONF_1MORE, cache::set_valid),
    command(ngx_string!("shield_cache_bypass"), NGX_CONF_1MORE, cache::set_bypass),
    command(ngx_string!("shield_cache_no_store"), NGX_CONF_1MORE, cache::set_no_store),
    command(ngx_string!("shield_cache_strip_set_cookie"), NGX_CONF_FLAG, cache::set_strip_set_cookie),
    command(ngx_string!("shield_cache_lock"), NGX_CONF_TAKE12, cache::set_lock),
    command(ngx_string!("shield_cache_purge"), NGX_CONF_TAKE12, cache::set_purge),
    command(ngx_string!("shield_cache_tags_header"), NGX_CONF_TAKE123, cache::set_tags_header),
    command(ngx_string!("shield_cache_use_stale"), NGX_CONF_1MORE, cache::set_use_stale),
    command(ngx_string!("shield_cache_background_update"), NGX_CONF_FLAG, cache::set_background_update),
    ngx_command_t::empty(),
];
