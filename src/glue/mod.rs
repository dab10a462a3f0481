//! The nginx side of the module: the module table and its configuration lifecycle.
//!
//! - `cache`: the response cache (directives, shm and Redis stores, lookup, capture filters);
//! - `conf`: per-location configuration, its directives and merge;
//! - `filter`: the header filter (security headers, CORS response headers, cache policy);
//! - `phases`: request-phase handlers (CORS preflight);
//! - `status`: the metrics registry in shared memory and the `shield_status` handler;
//! - `variables`: `$shield_*` variables;
//! - `util`: the panic guard, directive error reporting and header helpers.

mod cache;
mod conf;
mod filter;
mod headers;
mod identity;
mod limit;
mod main_conf;
mod redis;
mod status;
mod util;
mod variables;

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::core::{Pool, Status};
use ngx::ffi::{ngx_conf_t, ngx_http_module_t, ngx_http_request_t, ngx_int_t, ngx_module_t, NGX_HTTP_MODULE};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

pub use conf::LocConf;
pub use main_conf::{MainConf, ShmMetrics};

pub struct Shield;

impl HttpModule for Shield {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module table is a static that nginx only mutates while loading it.
        unsafe { &*ptr::addr_of!(ngx_http_shield_module) }
    }
}

// SAFETY: create_main_conf / create_loc_conf below allocate exactly these types.
unsafe impl HttpModuleMainConf for Shield {
    type MainConf = MainConf;
}
unsafe impl HttpModuleLocationConf for Shield {
    type LocationConf = LocConf;
}

extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: nginx calls this with a valid cf.
    util::guard(unsafe { (*cf).log }, "preconfiguration", Status::NGX_ERROR.0, || {
        // SAFETY: as above.
        let cf = unsafe { &mut *cf };
        if variables::register(cf) != Status::NGX_OK || identity::register_variables(cf) != Status::NGX_OK {
            return Status::NGX_ERROR.0;
        }
        Status::NGX_OK.0
    })
}

extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    util::guard(unsafe { (*cf).log }, "postconfiguration", Status::NGX_ERROR.0, || {
        // SAFETY: nginx calls this with a valid cf, once per configuration cycle.
        let cf = unsafe { &mut *cf };
        // The limiter's rewrite handler first: a phase runs its handlers in reverse order of
        // registration, so the filter and CORS preflight (rewrite phase) still come before it.
        if headers::filter::install_snapshot(cf).is_err()
            || limit::install(cf).is_err()
            || headers::preflight::install(cf).is_err()
            || status::init_zone(cf).is_err()
            || cache::install(cf).is_err()
            // Last, so that it runs first in the rewrite phase (identity::request says why).
            || identity::install(cf).is_err()
        {
            return Status::NGX_ERROR.0;
        }
        if let Some(Err(e)) = Shield::main_conf(cf).map(cache::check) {
            ngx::ngx_conf_log_error!(ngx::ffi::NGX_LOG_EMERG, cf, "{e}");
            return Status::NGX_ERROR.0;
        }
        if let Some(mcf) = Shield::main_conf_mut(cf) {
            if let Err(e) = redis::postconfiguration(cf, mcf) {
                ngx::ngx_conf_log_error!(ngx::ffi::NGX_LOG_EMERG, cf, "{e}");
                return Status::NGX_ERROR.0;
            }
        }
        Status::NGX_OK.0
    })
}

extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    util::guard(unsafe { (*cf).log }, "create_main_conf", ptr::null_mut(), || {
        // SAFETY: cf->pool lives as long as the configuration; allocate registers a drop cleanup.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(MainConf::default()).cast()
    })
}

extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    util::guard(unsafe { (*cf).log }, "create_loc_conf", ptr::null_mut(), || {
        // SAFETY: as in create_main_conf.
        let pool = unsafe { Pool::from_ngx_pool((*cf).pool) };
        pool.allocate(LocConf::default()).cast()
    })
}

extern "C" fn merge_loc_conf(cf: *mut ngx_conf_t, prev: *mut c_void, conf: *mut c_void) -> *mut c_char {
    util::guard(unsafe { (*cf).log }, "merge_loc_conf", ngx::core::NGX_CONF_ERROR, || {
        // SAFETY: both pointers were allocated by create_loc_conf as LocConf; nginx merges a
        // parent into a distinct child.
        let (prev, conf, cf) = unsafe { (&*prev.cast::<LocConf>(), &mut *conf.cast::<LocConf>(), &mut *cf) };
        match conf.merge(cf, prev) {
            Ok(()) => ngx::core::NGX_CONF_OK,
            Err(err) => {
                ngx::ngx_conf_log_error!(ngx::ffi::NGX_LOG_EMERG, cf, "{err}");
                ngx::core::NGX_CONF_ERROR
            }
        }
    })
}

extern "C" fn init_process(cycle: *mut ngx::ffi::ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx calls this with the worker's cycle.
    util::guard(unsafe { (*cycle).log }, "init_process", Status::NGX_ERROR.0, || {
        // SAFETY: the cycle is live for the worker's lifetime, and so is its configuration.
        if let Some(mcf) = Shield::main_conf(unsafe { &*cycle }) {
            redis::init_process(mcf);
            limit::init_process();
        }
        Status::NGX_OK.0
    })
}

extern "C" fn exit_process(cycle: *mut ngx::ffi::ngx_cycle_t) {
    util::guard(unsafe { (*cycle).log }, "exit_process", (), redis::exit_process)
}

static NGX_HTTP_SHIELD_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(preconfiguration),
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

// The three symbols nginx's `load_module` reads from a dynamic module (`ngx_load_module` in
// nginx.c, the same in 1.22 and 1.28): the modules, their names, and the order list
// `ngx_add_module` places them by. ngx's `ngx_modules!` macro always exports an empty order,
// so they are written out here.
//
// Order list semantics (`ngx_add_module`): a module whose name is in the list goes before the
// first already-loaded module named after it; one not in the list is appended. So
// `ngx_http_shield_module` is appended as before (its phase handlers keep their place: after
// every static module, hence first within a phase), and the filter module goes just before
// `ngx_http_headers_filter_module`, so its header filter runs after `add_header`/`expires`.
//
// The arrays are NULL-terminated arrays of pointers, the C types `ngx_module_t *[]` and
// `char *[]` nginx declares; the names are 'static NUL-terminated literals. nginx only reads
// them (it writes through the module pointers, into the modules, which are `static mut` for
// that); `CPtrs` exists only to make such arrays `Sync`.

#[repr(transparent)]
pub struct CPtrs<T, const N: usize>([*const T; N]);

// SAFETY: the pointers are to statics and string literals that live for the whole process; no
// Rust code reads or writes through them, and nginx reads the arrays from one thread while
// loading the configuration.
unsafe impl<T, const N: usize> Sync for CPtrs<T, N> {}

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static ngx_modules: CPtrs<ngx_module_t, 3> = CPtrs([
    ptr::addr_of!(ngx_http_shield_module),
    ptr::addr_of!(headers::filter::ngx_http_shield_headers_filter_module),
    ptr::null(),
]);

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static ngx_module_names: CPtrs<c_char, 3> =
    CPtrs([c"ngx_http_shield_module".as_ptr(), c"ngx_http_shield_headers_filter_module".as_ptr(), ptr::null()]);

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static ngx_module_order: CPtrs<c_char, 3> =
    CPtrs([c"ngx_http_shield_headers_filter_module".as_ptr(), c"ngx_http_headers_filter_module".as_ptr(), ptr::null()]);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_shield_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(NGX_HTTP_SHIELD_MODULE_CTX) as _,
    // SAFETY: the command table is a static array terminated by an empty command.
    commands: unsafe { ptr::addr_of_mut!(conf::COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};

/// Per-request state, allocated on first use from the request pool.
///
/// nginx clears module contexts on an internal redirect (`index`, `try_files`, `error_page`);
/// this one is found again through its pool cleanup, as nginx's realip module does, so a main
/// request is limited and inspected once, and keeps its verdict, its rate-limit headers and
/// its CSP nonce whichever location finally answers it. Location *policies* (headers, CORS,
/// cache) are read from the final location's configuration, not from here.
#[derive(Default)]
pub struct RequestCtx {
    /// `$shield_csp_nonce`, generated once per request.
    pub nonce: Option<ngx::ffi::ngx_str_t>,
    /// The request was a CORS preflight this module answered (204) or refused (403).
    pub preflight: bool,
    /// The response came with its own `Cache-Control` before nginx's headers filter
    /// (`expires`, `add_header`) ran: see `headers::filter`.
    pub own_cache_control: bool,
    pub limit: limit::LimitCtx,
    pub waf: filter::WafCtx,
    pub identity: identity::IdentityCtx,
    pub cache: cache::CacheCtx,
}

/// A RequestCtx in its pool cleanup's data, and the request it belongs to (subrequests share
/// the pool, an internal redirect keeps the request).
struct CtxCell {
    owner: *mut ngx_http_request_t,
    ctx: RequestCtx,
}

unsafe extern "C" fn drop_ctx(data: *mut c_void) {
    // SAFETY: data is the CtxCell written in RequestCtx::get; nginx runs each cleanup once.
    unsafe { ptr::drop_in_place(data.cast::<CtxCell>()) }
}

impl RequestCtx {
    /// The request's context if one was created, without allocating one.
    pub fn peek(r: *mut ngx_http_request_t) -> Option<&'static RequestCtx> {
        // SAFETY: as in get().
        unsafe { (*Self::slot(r)).cast::<RequestCtx>().as_ref() }
    }

    pub fn get(r: *mut ngx_http_request_t) -> Option<&'static mut RequestCtx> {
        // SAFETY: r is a live request; the ctx slot for this module is either NULL or the
        // RequestCtx inside a CtxCell allocated below as the data of a request pool cleanup.
        unsafe {
            let slot = Self::slot(r);
            if (*slot).is_null() {
                let cln = ngx::ffi::ngx_pool_cleanup_add((*r).pool, core::mem::size_of::<CtxCell>());
                if cln.is_null() {
                    return None;
                }
                let cell = (*cln).data.cast::<CtxCell>();
                cell.write(CtxCell { owner: r, ctx: RequestCtx::default() });
                (*cln).handler = Some(drop_ctx);
                *slot = ptr::addr_of_mut!((*cell).ctx).cast();
            }
            Some(&mut *(*slot).cast::<RequestCtx>())
        }
    }

    /// This module's ctx slot of `r`, refilled after an internal redirect cleared it.
    unsafe fn slot(r: *mut ngx_http_request_t) -> *mut *mut c_void {
        // SAFETY: r is a live request; ctx has a slot per HTTP module.
        unsafe {
            let slot = (*r).ctx.add(Shield::module().ctx_index);
            if (*slot).is_null() && (*r).internal() != 0 {
                if let Some(ctx) = Self::recover(r) {
                    *slot = ctx;
                }
            }
            slot
        }
    }

    /// After an internal redirect: this request's context, from the pool's cleanups.
    unsafe fn recover(r: *mut ngx_http_request_t) -> Option<*mut c_void> {
        // SAFETY: the cleanup list of a live pool is a valid singly linked list; entries with
        // our handler hold a CtxCell.
        unsafe {
            let mut cln = (*(*r).pool).cleanup;
            while !cln.is_null() {
                let ours = (*cln)
                    .handler
                    .is_some_and(|h| core::ptr::fn_addr_eq(h, drop_ctx as unsafe extern "C" fn(*mut c_void)));
                if ours {
                    let cell = (*cln).data.cast::<CtxCell>();
                    if (*cell).owner == r {
                        return Some(ptr::addr_of_mut!((*cell).ctx).cast());
                    }
                }
                cln = (*cln).next;
            }
            None
        }
    }
}
