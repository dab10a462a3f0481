//! `$shield_jwt_status`, `$shield_jwt_claim_<name>` (a prefix variable) and
//! `$shield_csrf_status`. Reading a JWT variable verifies the token if nothing has yet.

use ngx::core::Status as NgxStatus;
use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t, ngx_str_t, NGX_ERROR,
    NGX_HTTP_VAR_NOCACHEABLE, NGX_HTTP_VAR_PREFIX, NGX_OK,
};
use ngx::ngx_string;

use super::request::outcome;
use crate::glue::util::{guard, pool_str, static_str};
use crate::glue::RequestCtx;
use crate::identity::lookup;
use crate::identity::Status;

const CLAIM_PREFIX: &str = "shield_jwt_claim_";

type Getter = unsafe extern "C" fn(*mut ngx_http_request_t, *mut ngx_http_variable_value_t, usize) -> ngx_int_t;

pub fn register(cf: &mut ngx_conf_t) -> NgxStatus {
    let vars: [(ngx_str_t, Getter, u32); 3] = [
        (ngx_string!("shield_jwt_status"), jwt_status, NGX_HTTP_VAR_NOCACHEABLE),
        (ngx_string!("shield_csrf_status"), csrf_status, NGX_HTTP_VAR_NOCACHEABLE),
        (ngx_string!("shield_jwt_claim_"), jwt_claim, NGX_HTTP_VAR_PREFIX | NGX_HTTP_VAR_NOCACHEABLE),
    ];
    for (mut name, get, flags) in vars {
        // SAFETY: cf is live; the variable entry is owned by the core module's hash.
        let var = unsafe { ngx_http_add_variable(cf, &mut name, flags as _) };
        if var.is_null() {
            return NgxStatus::NGX_ERROR;
        }
        // SAFETY: non-null entry just returned for us to fill.
        unsafe { (*var).get_handler = Some(get) };
    }
    NgxStatus::NGX_OK
}

fn set(v: *mut ngx_http_variable_value_t, s: Option<ngx_str_t>) -> ngx_int_t {
    // SAFETY: nginx passes a valid value slot to get handlers.
    unsafe {
        match s {
            Some(s) => {
                (*v).set_len(s.len as u32);
                (*v).set_valid(1);
                (*v).set_no_cacheable(1);
                (*v).set_not_found(0);
                (*v).data = s.data;
            }
            None => (*v).set_not_found(1),
        }
    }
    NGX_OK as ngx_int_t
}

/// VALID, MISSING, EXPIRED, INVALID or FORBIDDEN; not found where `shield_jwt` is off.
unsafe extern "C" fn jwt_status(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, _: usize) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_jwt_status", NGX_ERROR as ngx_int_t, || {
        set(v, outcome(r).map(|o| static_str(o.status.as_str())))
    })
}

/// A claim of a VALID token (see `identity::lookup` for how the name is resolved); not found
/// otherwise, so an unverified request has an empty key and is not limited by it.
unsafe extern "C" fn jwt_claim(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_jwt_claim_", NGX_ERROR as ngx_int_t, || {
        // SAFETY: for a prefix variable nginx passes the full variable name as `data`.
        let name = unsafe { (*(data as *const ngx_str_t)).to_str().unwrap_or("") };
        let Some(suffix) = name.get(CLAIM_PREFIX.len()..) else { return set(v, None) };
        let text = outcome(r)
            .filter(|o| o.status == Status::Valid)
            .and_then(|o| o.claims.as_ref())
            .and_then(|c| lookup::variable(&c.claims, suffix))
            .map(lookup::render);
        let Some(text) = text else { return set(v, None) };
        // SAFETY: r is live; the copy lives in its pool.
        match pool_str(unsafe { (*r).pool }, text.as_bytes()) {
            Some(s) => set(v, Some(s)),
            None => NGX_ERROR as ngx_int_t,
        }
    })
}

/// PASSED, REJECTED or REPORTED; not found where `shield_csrf` is off.
unsafe extern "C" fn csrf_status(r: *mut ngx_http_request_t, v: *mut ngx_http_variable_value_t, _: usize) -> ngx_int_t {
    // SAFETY: nginx calls variable handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "$shield_csrf_status", NGX_ERROR as ngx_int_t, || {
        set(v, RequestCtx::peek(r).and_then(|c| c.identity.csrf).map(static_str))
    })
}
