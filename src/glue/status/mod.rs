//! The operator's view: the metrics registry kept in one shared-memory zone (so every worker
//! adds to the same counters), and the `shield_status` content handler that serves it as
//! Prometheus text or a JSON health document.

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;

use ngx::ffi::{
    ngx_conf_t, ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t,
    ngx_slab_calloc, ngx_slab_free, ngx_slab_pool_t, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_NOT_ALLOWED, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

use super::conf::StatusFormat;
use super::util::{guard, send_body, static_str};
use super::{MainConf, Shield, ShmMetrics};

/// Adds the metrics zone, sized for everything registered during configuration.
pub fn init_zone(cf: &mut ngx_conf_t) -> Result<(), ()> {
    let mcf = Shield::main_conf_mut(cf).ok_or(())?;
    let mut request_id = static_str("request_id");
    // SAFETY: cf is live; $request_id is a core variable.
    let index = unsafe { ngx::ffi::ngx_http_get_variable_index(cf, &mut request_id) };
    mcf.request_id_index = (index >= 0).then_some(index as ngx::ffi::ngx_uint_t);
    let bytes = size_of::<ShmMetrics>() + mcf.registry.slots() * size_of::<u64>();
    // Slab bookkeeping needs a few pages on top of the data.
    // SAFETY: ngx_pagesize is set by ngx_os_init before any configuration is read.
    let page = unsafe { ngx::ffi::ngx_pagesize };
    let size = (bytes + 8 * page).next_multiple_of(page);
    let mut name = static_str("shield_metrics");
    // SAFETY: cf is live; the module's address is a stable tag for the zone.
    let zone =
        unsafe { ngx_shared_memory_add(cf, &mut name, size, ptr::addr_of_mut!(super::ngx_http_shield_module).cast()) };
    // SAFETY: ngx_shared_memory_add returns NULL or a zone owned by the cycle.
    let zone = unsafe { zone.as_mut() }.ok_or(())?;
    zone.init = Some(zone_init);
    zone.data = ptr::from_mut(mcf).cast();
    Ok(())
}

/// Reuses the previous cycle's counters across `nginx -s reload` when the layout is the
/// same, so a reload does not reset the metrics.
extern "C" fn zone_init(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    guard(ptr::null_mut(), "metrics zone init", NGX_ERROR as ngx_int_t, || {
        // SAFETY: zone.data was set to our MainConf in init_zone; `old` is the previous
        // cycle's zone data (a ShmMetrics) or NULL; shm.addr starts with the slab pool.
        unsafe {
            let zone = &mut *zone;
            let mcf = &mut *zone.data.cast::<MainConf>();
            let signature = mcf.registry.signature();
            let len = mcf.registry.slots();
            let pool = zone.shm.addr.cast::<ngx_slab_pool_t>();
            let old = old.cast::<ShmMetrics>();
            if !old.is_null() {
                if (*old).signature == signature && (*old).len == len {
                    mcf.shm = old;
                    zone.data = old.cast();
                    return NGX_OK as ngx_int_t;
                }
                ngx_slab_free(pool, old.cast());
            }
            let shm = ngx_slab_calloc(pool, size_of::<ShmMetrics>() + len * size_of::<u64>()).cast::<ShmMetrics>();
            if shm.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*shm).signature = signature;
            (*shm).len = len;
            mcf.shm = shm;
            zone.data = shm.cast();
            NGX_OK as ngx_int_t
        }
    })
}

pub fn set_content_handler(cf: &mut ngx_conf_t) {
    if let Some(clcf) = NgxHttpCoreModule::location_conf_mut(cf) {
        clcf.handler = Some(status_handler);
    }
}

extern "C" fn status_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    let log = unsafe { (*(*r).connection).log };
    guard(log, "status handler", NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t, || {
        // SAFETY: as above.
        let req = unsafe { &mut *r };
        if req.method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
            return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
        }
        // SAFETY: r is live.
        let rc = unsafe { ngx_http_discard_request_body(r) };
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        let (Some(lc), Some(mcf)) = (Shield::location_conf(req), Shield::main_conf(req)) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let values = mcf.snapshot();
        let (body, content_type) = match lc.status.unwrap_or(StatusFormat::Prometheus) {
            StatusFormat::Prometheus => (mcf.registry.render(&values), "text/plain; version=0.0.4; charset=utf-8"),
            StatusFormat::Json => (health_json(mcf, &values), "application/json"),
        };
        send_body(req, 200, content_type, body.as_bytes())
    })
}

fn health_json(mcf: &MainConf, values: &[u64]) -> String {
    let doc = serde_json::json!({
        "status": if mcf.shm.is_null() { "degraded" } else { "ok" },
        "module": "ngx_http_shield_module",
        "version": env!("CARGO_PKG_VERSION"),
        "nginx": ngx::ffi::NGINX_VERSION.to_str().unwrap_or(""),
        "checks": {
            "metrics_zone": if mcf.shm.is_null() { "missing" } else { "ok" },
            "redis": match super::redis::health() {
                None => "not configured",
                Some(true) => "connected",
                Some(false) => "disconnected",
            },
        },
        "metrics_series": values.len(),
    });
    doc.to_string()
}
