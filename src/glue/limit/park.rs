//! Parking a request while it waits for Redis or for its delay: a non-cancelable timer on
//! its write event (so a graceful reload or quit waits for it), woken early by a reply.

use core::ptr;
use std::cell::{Cell, RefCell};

use ngx::ffi::{
    ngx_http_block_reading, ngx_http_core_run_phases, ngx_http_request_t, ngx_http_test_reading, ngx_post_event,
    ngx_posted_events,
};

use super::request::{LimitCtx, Phase};
use crate::glue::redis::RedisError;
use crate::glue::util::guard;
use crate::glue::RequestCtx;
use crate::limit::script::LimitReply;

/// Shared by the request and the Redis callback; the request side clears `request` when
/// its pool goes away, so a late reply never touches a freed request.
pub(super) struct Waiter {
    pub(super) request: Cell<*mut ngx_http_request_t>,
    pub(super) reply: RefCell<Option<Result<LimitReply, RedisError>>>,
    /// Split among Redis Cluster slots (see `limit/cluster.rs`).
    pub(super) split: Cell<bool>,
}

impl Waiter {
    pub(super) fn deliver(&self, reply: Result<LimitReply, RedisError>) {
        *self.reply.borrow_mut() = Some(reply);
        wake(self.request.get());
    }
}

/// Parks the request: its write event gets a timer (non-cancelable, so a graceful shutdown
/// waits for it) and `handler` runs when the timer fires or the request is woken.
pub(super) fn suspend(
    r: &mut ngx_http_request_t,
    ms: ngx::ffi::ngx_msec_t,
    handler: unsafe extern "C" fn(*mut ngx_http_request_t),
) {
    r.read_event_handler = Some(ngx_http_test_reading);
    r.write_event_handler = Some(handler);
    // SAFETY: the connection is live while its request is.
    unsafe {
        let wev = (*r.connection).write;
        (*wev).set_cancelable(0);
        if (*wev).timer_set() != 0 {
            ngx::ffi::ngx_del_timer(wev);
        }
        ngx::ffi::ngx_add_timer(wev, ms);
    }
}

pub(super) fn wake(r: *mut ngx_http_request_t) {
    if r.is_null() {
        return;
    }
    // SAFETY: r is non-null only while the request is alive (see Waiter).
    unsafe {
        let wev = (*(*r).connection).write;
        if (*wev).timer_set() != 0 {
            ngx::ffi::ngx_del_timer(wev);
        }
        ngx_post_event(wev, ptr::addr_of_mut!(ngx_posted_events));
    }
}

fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: called from the request's own event handler, request alive.
    unsafe {
        let wev = (*(*r).connection).write;
        if (*wev).timer_set() != 0 {
            ngx::ffi::ngx_del_timer(wev);
        }
        (*wev).set_timedout(0);
        (*r).read_event_handler = Some(ngx_http_block_reading);
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}

pub(super) unsafe extern "C" fn resume_after_redis(r: *mut ngx_http_request_t) {
    guard(unsafe { (*(*r).connection).log }, "limit resume", (), || {
        // SAFETY: nginx calls the write event handler with the live request.
        let timedout = unsafe { (*(*(*r).connection).write).timedout() } != 0;
        if let Some(RequestCtx { limit: LimitCtx { phase: Phase::Waiting(w, ..), .. }, .. }) = RequestCtx::get(r) {
            let has_reply = w.reply.borrow().is_some();
            if !has_reply && !timedout {
                return; // the socket became writable: keep waiting
            }
            if !has_reply {
                *w.reply.borrow_mut() = Some(Err(RedisError::Timeout));
            }
        }
        resume(r);
    })
}

pub(super) unsafe extern "C" fn resume_after_delay(r: *mut ngx_http_request_t) {
    guard(unsafe { (*(*r).connection).log }, "limit delay", (), || {
        // SAFETY: as above.
        if unsafe { (*(*(*r).connection).write).timedout() } == 0 {
            return;
        }
        resume(r);
    })
}
