//! Limits and bans in a location that answers in the rewrite phase (`return`, a redirecting
//! `rewrite`). Such an answer comes before the preaccess phase, where the limiter normally
//! runs, so in those locations the limiter runs in the rewrite phase instead: its handler,
//! registered by this dynamic module after the rewrite module's, runs before the rewrite
//! module's codes (nginx runs a phase's handlers in reverse order of registration).
//!
//! Found at merge time from the rewrite module's compiled codes (`crate::limit::rewrite_scan`):
//! - a location whose codes can answer runs the limiter in the rewrite phase; a key using a
//!   variable that the location's own `set` assigns is refused (it would be read before
//!   `set` runs; `map` variables are evaluated when read, so they work);
//! - a server{}-level `return` runs before any location is chosen: with limits or bans at
//!   the server level (set there or inherited from http) it is refused, as those could never
//!   apply to what it answers.

use core::ffi::CStr;
use core::mem::size_of;

use ngx::ffi::{
    ngx_array_t, ngx_conf_t, ngx_http_conf_ctx_t, ngx_http_phases_NGX_HTTP_REWRITE_PHASE, ngx_http_request_t,
    ngx_http_script_regex_end_code, ngx_http_script_return_code, ngx_http_script_set_var_code, ngx_int_t, ngx_uint_t,
    NGX_DECLINED, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, NgxHttpCoreModule};

use super::directives::LimitLoc;
use crate::glue::util::guard;
use crate::glue::{MainConf, Shield};
use crate::limit::rewrite_scan::{scan, CodeAddrs, Scan};

/// `ngx_http_rewrite_loc_conf_t` (ngx_http_rewrite_module.c, the same from 1.0 to 1.28):
/// only `codes` is read.
#[repr(C)]
struct RewriteLocConf {
    codes: *mut ngx_array_t,
    stack_size: ngx_uint_t,
    log: ngx_int_t,
    uninitialized_variable_warn: ngx_int_t,
}

/// What the rewrite module's codes of the block being merged (`cf->ctx`) do. Found by name
/// in the cycle's modules, so an nginx built without the rewrite module loads this one too.
fn scan_block(cf: &ngx_conf_t) -> Scan {
    // SAFETY: during merge, cf->cycle's module list is complete and NULL-terminated, and
    // cf->ctx is the http configuration context whose loc_conf is the block being merged
    // (ngx_http_merge_servers / ngx_http_merge_locations set it); the rewrite module's slot
    // holds its ngx_http_rewrite_loc_conf_t, merged before ours (a static module comes
    // first). Its codes array holds nelts * size bytes of pointer-aligned words.
    unsafe {
        let mut m = (*cf.cycle).modules;
        while !(*m).is_null() && CStr::from_ptr((**m).name) != c"ngx_http_rewrite_module" {
            m = m.add(1);
        }
        if (*m).is_null() {
            return Scan::default();
        }
        let ctx = cf.ctx.cast::<ngx_http_conf_ctx_t>();
        let rlcf = (*(*ctx).loc_conf.add((**m).ctx_index)).cast::<RewriteLocConf>();
        let Some(codes) = rlcf.as_ref().and_then(|c| c.codes.as_ref()) else { return Scan::default() };
        let bytes = codes.nelts * codes.size;
        let words = core::slice::from_raw_parts(codes.elts.cast::<usize>(), bytes / size_of::<usize>());
        let addrs = CodeAddrs {
            return_code: ngx_http_script_return_code as *const () as usize,
            regex_end_code: ngx_http_script_regex_end_code as *const () as usize,
            set_var_code: ngx_http_script_set_var_code as *const () as usize,
        };
        scan(words, &addrs)
    }
}

/// At merge: where this block's limiter runs, and the refusals above.
/// `own`: the block has its own `shield_limit`/`shield_ban` (not only inherited ones).
pub(super) fn resolve(cf: &mut ngx_conf_t, lc: &mut LimitLoc, own: bool) -> Result<(), String> {
    lc.in_rewrite = false;
    if !lc.active() {
        return Ok(());
    }
    let codes = scan_block(cf);
    if !codes.answers {
        return Ok(());
    }
    let cscf = NgxHttpCoreModule::server_conf(cf).ok_or("no server configuration")?;
    // SAFETY: cf->ctx is the http configuration context during merge (see scan_block).
    let block = unsafe { (*cf.ctx.cast::<ngx_http_conf_ctx_t>()).loc_conf };
    // SAFETY: cscf->ctx is the server's own context, set when its server{} was parsed.
    if core::ptr::eq(block, unsafe { (*cscf.ctx).loc_conf }) {
        // SAFETY: file_name is the NUL-terminated name nginx keeps for the server's block.
        let file = unsafe { CStr::from_ptr(cscf.file_name.cast()) }.to_string_lossy();
        if !own {
            // Limits inherited from http{} by a server that answers with `return` (the usual
            // port-80 redirect server): refusing would break that common layout, so it loads,
            // and the warning says its answers are not limited.
            ngx::ngx_conf_log_error!(
                NGX_LOG_WARN,
                cf,
                "\"return\" at the server{{}} level (server in {file}:{}) answers before any location: the \
                 \"shield_limit\"/\"shield_ban\" inherited from http{{}} do not apply to what it answers",
                cscf.line
            );
            return Ok(());
        }
        return Err(format!(
            "\"return\" at the server{{}} level (server in {file}:{}) answers before any location, so the \
             \"shield_limit\"/\"shield_ban\" of that level can never apply to it; move the \"return\" into a \
             location (e.g. \"location / {{ return ...; }}\")",
            cscf.line
        ));
    }
    let mcf = Shield::main_conf(cf).ok_or("no main configuration")?;
    if let Some((zone, var)) = key_assigned_by_set(mcf, lc, &codes.assigned) {
        // merge runs at the end of http{}: the location's name says where.
        let location = NgxHttpCoreModule::location_conf(cf).map(|c| c.name.to_string()).unwrap_or_default();
        return Err(format!(
            "the key of zone \"{zone}\" uses \"${var}\", which \"set\" assigns in a location that answers with \
             \"return\" (location \"{location}\"): there the limiter runs before \"set\"; build the key with \"map\" \
             instead"
        ));
    }
    lc.in_rewrite = true;
    Ok(())
}

/// The first (zone name, variable) among this block's limits and bans whose key reads a
/// variable `set` assigns here.
fn key_assigned_by_set<'a>(mcf: &'a MainConf, lc: &LimitLoc, assigned: &[usize]) -> Option<(&'a str, &'a str)> {
    let zones = lc.limits.iter().flatten().map(|l| l.zone).chain(lc.bans.iter().flatten().map(|b| b.zone));
    zones.map(|z| &*mcf.limits.zones[z]).find_map(|z| {
        let (name, _) = z.key_vars.iter().find(|(_, index)| assigned.contains(index))?;
        Some((z.name.as_str(), name.as_str()))
    })
}

pub fn install(cf: &mut ngx_conf_t) -> Result<(), ()> {
    let cmcf = NgxHttpCoreModule::main_conf_mut(cf).ok_or(())?;
    // SAFETY: the phase handler arrays are initialised by the core module before any
    // postconfiguration runs; the pushed slot is ours to fill.
    unsafe {
        let phase = &mut cmcf.phases[ngx_http_phases_NGX_HTTP_REWRITE_PHASE as usize].handlers;
        let slot = ngx::ffi::ngx_array_push(phase).cast::<ngx::ffi::ngx_http_handler_pt>();
        if slot.is_null() {
            return Err(());
        }
        *slot = Some(rewrite_phase);
    }
    Ok(())
}

extern "C" fn rewrite_phase(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls phase handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "limit rewrite phase", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        if !core::ptr::eq(r, req.main) {
            return NGX_DECLINED as ngx_int_t;
        }
        match Shield::location_conf(req) {
            Some(lc) if lc.limit.in_rewrite => super::request::preaccess(req),
            _ => NGX_DECLINED as ngx_int_t,
        }
    })
}
