//! `$shield_*` variables for `log_format`, header values and `sub_filter`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t, ngx_str_t, NGX_ERROR,
    NGX_OK,
};
use ngx::ngx_string;

use super::util::{guard, pool_str};
use super::RequestCtx;

type Getter = unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_http_variable_value_t, usize) -> ngx_int_t;

const VARIABLES: &[(ngx_str_t, Getter)] = &[
    (ngx_string!("shield_csp_nonce"), csp_nonce),
    (ngx_string!("shield_limit_status"), limit_status),
    (ngx_string!("shield_filter_status"), filter_status),
    (ngx_string!("shield_filter_score"), filter_score),
    (ngx_string!("shield_filter_rules"), filter_rules),
    (ngx_string!("shield_cache_status"), cache_status),
    (ngx_string!("shield_cache_key"), cache_key),
];

pub fn register(cf: &mut ngx_conf_t) -> Status {
    for (name, get) in VARIABLES {
        let mut name = *name;
        // SAFETY: cf is live; the variable entry is owned by the core module's hash.
        let var = unsafe { ngx_http_add_variable(cf, &mut name, 0) };
        if var.is_null() {
            return Status::NGX_ERROR;
        }
        // SAFETY: non-null entry just returned for us to fill.
        unsafe { (*var).get_handler = Some(*get) };
    }
    Status::NGX_OK
}

fn set_value(v: *mut ngx_http_variable_value_t, s: ngx_str_t) {
    // SAFETY: nginx passes a valid value slot to get handlers.
    unsafe {
        (*v).set_len(s.len as u32);
        (*v).set_valid(1);
        (*v).set_no_cacheable(0);
        (*v).set_not_found(0);
        (*v).data = s.data;
    }
}

/// A fresh 128-bit random nonce per request, base64-encoded, stable within the request so the
/// CSP header and the page (via `sub_filter`, SSI or an upstream header) agree.
unsafe extern "C" fn csp_nonce(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, _: usize) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_csp_nonce", NGX_ERROR as ngx_int_t, || {
        let Some(ctx) = RequestCtx::get(r) else { return NGX_ERROR as ngx_int_t };
        if ctx.nonce.is_none() {
            let mut raw = [0u8; 16];
            if getrandom::fill(&mut raw).is_err() {
                return NGX_ERROR as ngx_int_t;
            }
            let mut encoded = [0u8; 24];
            let Ok(len) = STANDARD.encode_slice(raw, &mut encoded) else { return NGX_ERROR as ngx_int_t };
            // SAFETY: r is live; the nonce lives in its pool.
            ctx.nonce = pool_str(unsafe { (*r).pool }, &encoded[..len]);
        }
        match ctx.nonce {
            Some(nonce) => {
                set_value(v, nonce);
                NGX_OK as ngx_int_t
            }
            None => NGX_ERROR as ngx_int_t,
        }
    })
}

/// PASSED, DELAYED, REJECTED, DELAYED_DRY_RUN, REJECTED_DRY_RUN or ERROR; empty when no
/// limit applied to the request.
unsafe extern "C" fn limit_status(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_limit_status", NGX_ERROR as ngx_int_t, || {
        match super::limit::status_variable(r) {
            Some(s) => set_value(v, super::util::static_str(s)),
            // SAFETY: nginx passes a valid value slot.
            None => unsafe { (*v).set_not_found(1) },
        }
        NGX_OK as ngx_int_t
    })
}

/// Sets `v` to `value` (copied into the request pool), or "not found" for `None`.
fn set_owned(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, value: Option<String>) -> ngx_int_t {
    match value {
        // SAFETY: r is live; the copy lives in its pool.
        Some(s) => match pool_str(unsafe { (*r).pool }, s.as_bytes()) {
            Some(ns) => set_value(v, ns),
            None => return NGX_ERROR as ngx_int_t,
        },
        // SAFETY: nginx passes a valid value slot.
        None => unsafe { (*v).set_not_found(1) },
    }
    NGX_OK as ngx_int_t
}

/// PASSED, BLOCKED, DETECTED or ALLOWED (allowlisted address); empty when not inspected.
unsafe extern "C" fn filter_status(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_filter_status", NGX_ERROR as ngx_int_t, || {
        match super::filter::status_variable(r) {
            Some(s) => set_value(v, super::util::static_str(s)),
            // SAFETY: nginx passes a valid value slot.
            None => unsafe { (*v).set_not_found(1) },
        }
        NGX_OK as ngx_int_t
    })
}

unsafe extern "C" fn filter_score(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_filter_score", NGX_ERROR as ngx_int_t, || set_owned(r, v, super::filter::score_variable(r)))
}

/// Matched rule ids, comma-separated (or the hygiene check's code).
unsafe extern "C" fn filter_rules(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_filter_rules", NGX_ERROR as ngx_int_t, || set_owned(r, v, super::filter::rules_variable(r)))
}

/// HIT, MISS, EXPIRED, REVALIDATE or BYPASS; empty when the response cache did not handle it.
unsafe extern "C" fn cache_status(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_cache_status", NGX_ERROR as ngx_int_t, || {
        match super::cache::status_variable(r) {
            Some(s) => set_value(v, super::util::static_str(s)),
            // SAFETY: nginx passes a valid value slot.
            None => unsafe { (*v).set_not_found(1) },
        }
        NGX_OK as ngx_int_t
    })
}

/// The evaluated `shield_cache_key`.
unsafe extern "C" fn cache_key(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, _: usize) -> ngx_int_t {
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_cache_key", NGX_ERROR as ngx_int_t, || {
        match super::cache::key_variable(r) {
            // The key lives in the request context, as long as the request.
            Some(k) => set_value(v, ngx_str_t { len: k.len(), data: k.as_ptr().cast_mut() }),
            // SAFETY: nginx passes a valid value slot.
            None => unsafe { (*v).set_not_found(1) },
        }
        NGX_OK as ngx_int_t
    })
}
