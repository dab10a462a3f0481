//! The nginx side of the module: the module table and its configuration lifecycle.
//!
//! - `conf`: per-location configuration, its directives and merge;
//! - `filter`: the header filter (security headers, CORS response headers, cache policy);
//! - `phases`: request-phase handlers (CORS preflight);
//! - `status`: the metrics registry in shared memory and the `shield_status` handler;
//! - `variables`: `$shield_*` variables;
//! - `util`: the panic guard, directive error reporting and header helpers.

mod conf;
mod filter;
mod limit;
mod phases;
mod redis;
mod status;
mod util;
mod variables;
mod waf;

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::core::{Pool, Status};
use ngx::ffi::{
    ngx_conf_t, ngx_http_module_t, ngx_http_request_t, ngx_int_t, ngx_module_t, NGX_HTTP_MODULE,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

pub use conf::LocConf;
pub use status::MainConf;

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
        variables::register(unsafe { &mut *cf }).0
    })
}

extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    util::guard(unsafe { (*cf).log }, "postconfiguration", Status::NGX_ERROR.0, || {
        // SAFETY: nginx calls this with a valid cf, once per configuration cycle.
        let cf = unsafe { &mut *cf };
        if filter::install(cf).is_err() || phases::install(cf).is_err() || status::init_zone(cf).is_err() {
            return Status::NGX_ERROR.0;
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
            limit::init_process(mcf);
        }
        Status::NGX_OK.0
    })
}

extern "C" fn exit_process(cycle: *mut ngx::ffi::ngx_cycle_t) {
    util::guard(unsafe { (*cycle).log }, "exit_process", (), limit::exit_process)
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

ngx::ngx_modules!(ngx_http_shield_module);

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

/// Per-request state, allocated on first use from the request pool. nginx clears it on an
/// internal redirect, which is what we want: the new location's policy applies afresh.
#[derive(Default)]
pub struct RequestCtx {
    /// `$shield_csp_nonce`, generated once per request.
    pub nonce: Option<ngx::ffi::ngx_str_t>,
    /// The request was a CORS preflight this module answered (204) or refused (403).
    pub preflight: bool,
    pub limit: limit::LimitCtx,
    pub waf: waf::WafCtx,
}

impl RequestCtx {
    /// The request's context if one was created, without allocating one.
    pub fn peek(r: *mut ngx_http_request_t) -> Option<&'static RequestCtx> {
        // SAFETY: as in get().
        unsafe { (*(*r).ctx.add(Shield::module().ctx_index)).cast::<RequestCtx>().as_ref() }
    }

    pub fn get(r: *mut ngx_http_request_t) -> Option<&'static mut RequestCtx> {
        // SAFETY: r is a live request; the ctx slot for this module is either NULL or a
        // RequestCtx allocated below from the request pool.
        unsafe {
            let module = Shield::module();
            let slot = (*r).ctx.add(module.ctx_index);
            if (*slot).is_null() {
                let ctx = Pool::from_ngx_pool((*r).pool).allocate(RequestCtx::default());
                if ctx.is_null() {
                    return None;
                }
                *slot = ctx.cast();
            }
            Some(&mut *(*slot).cast::<RequestCtx>())
        }
    }
}
