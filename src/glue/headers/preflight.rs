//! Request-phase handlers.
//!
//! The CORS preflight is answered in the rewrite phase: before access-phase authentication
//! (a browser's preflight carries no credentials) and, because handlers registered later run
//! first within a phase, before a location's own `return`.

use core::ptr;

use ngx::ffi::{
    ngx_array_push, ngx_conf_t, ngx_http_discard_request_body, ngx_http_handler_pt, ngx_http_phases_NGX_HTTP_LOG_PHASE,
    ngx_http_phases_NGX_HTTP_PREACCESS_PHASE, ngx_http_phases_NGX_HTTP_REWRITE_PHASE, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, NGX_DECLINED, NGX_HTTP_FORBIDDEN, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_NO_CONTENT, NGX_HTTP_OPTIONS, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use super::filter::request_header;
use crate::glue::util::guard;
use crate::glue::{RequestCtx, Shield};
use crate::headers::cors::Preflight;

pub fn install(cf: &mut ngx_conf_t) -> Result<(), ()> {
    add_handler(cf, ngx_http_phases_NGX_HTTP_REWRITE_PHASE as usize, rewrite_phase)?;
    add_handler(cf, ngx_http_phases_NGX_HTTP_PREACCESS_PHASE as usize, preaccess_phase)?;
    add_handler(cf, ngx_http_phases_NGX_HTTP_LOG_PHASE as usize, log_phase)
}

extern "C" fn preaccess_phase(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "preaccess phase", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        if !ptr::eq(r, req.main) {
            return NGX_DECLINED as ngx_int_t;
        }
        crate::glue::limit::preaccess(req)
    })
}

extern "C" fn log_phase(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "log phase", NGX_OK as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        if ptr::eq(r, req.main) {
            crate::glue::limit::log_phase(req);
        }
        NGX_OK as ngx_int_t
    })
}

pub(crate) fn add_handler(
    cf: &mut ngx_conf_t,
    phase: usize,
    handler: extern "C" fn(*mut ngx_http_request_t) -> ngx_int_t,
) -> Result<(), ()> {
    let cmcf = NgxHttpCoreModule::main_conf_mut(cf).ok_or(())?;
    // SAFETY: phase handler arrays are initialised by the core module before any
    // postconfiguration runs; the pushed slot is ours to fill.
    unsafe {
        let slot = ngx_array_push(&mut cmcf.phases[phase].handlers).cast::<ngx_http_handler_pt>();
        if slot.is_null() {
            return Err(());
        }
        *slot = Some(handler);
    }
    Ok(())
}

extern "C" fn rewrite_phase(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "rewrite phase", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        if !ptr::eq(r, req.main) {
            return NGX_DECLINED as ngx_int_t;
        }
        if let Some(rc) = crate::glue::filter::rewrite(req) {
            return rc;
        }
        cors_preflight(req).unwrap_or(NGX_DECLINED as ngx_int_t)
    })
}

/// `None` when this is not a preflight for a CORS-enabled location.
fn cors_preflight(r: &mut ngx_http_request_t) -> Option<ngx_int_t> {
    let policy = Shield::location_conf(r)?.cors_policy.as_ref()?;
    if r.method != NGX_HTTP_OPTIONS as usize {
        return None;
    }
    let origin = request_header(r, "origin")?;
    let method = request_header(r, "access-control-request-method")?;
    let request_headers = request_header(r, "access-control-request-headers");
    let rp: *mut ngx_http_request_t = r;
    RequestCtx::get(rp)?.preflight = true;
    let mcf = Shield::main_conf(r)?;
    match policy.preflight(origin, method, request_headers) {
        Preflight::Deny => {
            mcf.add(mcf.slots.preflight_denied, 1);
            Some(NGX_HTTP_FORBIDDEN as ngx_int_t)
        }
        // The header filter writes the answer's CORS headers (it replaces any `add_header` copy).
        Preflight::Allow(_) => {
            // SAFETY: r is live; a preflight has no meaningful body.
            if unsafe { ngx_http_discard_request_body(rp) } != NGX_OK as ngx_int_t {
                return Some(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
            }
            mcf.add(mcf.slots.preflight_allowed, 1);
            r.headers_out.status = NGX_HTTP_NO_CONTENT as usize;
            r.headers_out.content_length_n = 0;
            r.set_header_only(1);
            // SAFETY: r is live; a header-only response is complete once the header is sent,
            // and the phase checker finalizes the request with this result.
            Some(unsafe { ngx_http_send_header(rp) })
        }
    }
}
