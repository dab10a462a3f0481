//! The module's main (http-level) configuration: each feature's main part, the metrics
//! registry, and the counters in shared memory every worker adds to. It lives in its own file
//! so that features depend on it and it on them, never a feature on another through it.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::status::metrics::{Histogram, Registry};

/// Header of the counters array in shared memory; the values follow it.
#[repr(C)]
pub struct ShmMetrics {
    pub signature: u64,
    pub len: usize,
}

impl ShmMetrics {
    pub fn values(this: *mut ShmMetrics) -> *mut AtomicU64 {
        // SAFETY: the values array is allocated right after the header (see zone_init).
        unsafe { this.add(1).cast() }
    }
}

pub struct MainConf {
    pub registry: Registry,
    pub slots: super::headers::Slots,
    pub redis: super::redis::RedisMain,
    pub limits: super::limit::LimitMain,
    pub waf: super::filter::WafMain,
    pub identity: super::identity::IdentitySlots,
    pub response_cache: super::cache::CacheMain,
    /// `$request_id`, for block responses and the audit log.
    pub request_id_index: Option<ngx::ffi::ngx_uint_t>,
    /// The counters in shared memory, set by the metrics zone's init (`status`).
    pub shm: *mut ShmMetrics,
}

impl Default for MainConf {
    fn default() -> Self {
        let mut registry = Registry::default();
        let slots = super::headers::Slots::register(&mut registry);
        let identity = super::identity::IdentitySlots::register(&mut registry);
        MainConf {
            registry,
            slots,
            redis: Default::default(),
            limits: Default::default(),
            waf: Default::default(),
            identity,
            response_cache: Default::default(),
            request_id_index: None,
            shm: ptr::null_mut(),
        }
    }
}

impl MainConf {
    /// Records one observation of `value` in a histogram (its bucket, sum and count).
    pub fn observe(&self, histogram: &Histogram, value: u64) {
        let (bucket, sum, count) = histogram.slots_for(value);
        self.add(bucket, 1);
        self.add(sum, value);
        self.add(count, 1);
    }

    /// Adds `n` to a counter; a no-op before the zone exists (never on a request path).
    pub fn add(&self, slot: usize, n: u64) {
        if self.shm.is_null() {
            return;
        }
        // SAFETY: shm points at a live ShmMetrics with `len` values; slots come from the
        // registry whose signature the zone was checked against.
        unsafe {
            if slot < (*self.shm).len {
                (*ShmMetrics::values(self.shm).add(slot)).fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub fn snapshot(&self) -> Vec<u64> {
        if self.shm.is_null() {
            return Vec::new();
        }
        // SAFETY: as in add().
        unsafe {
            let values = ShmMetrics::values(self.shm);
            (0..(*self.shm).len).map(|i| (*values.add(i)).load(Ordering::Relaxed)).collect()
        }
    }
}
