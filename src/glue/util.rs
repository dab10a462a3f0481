//! Small safe-ish wrappers the rest of the glue shares: the panic guard every `extern "C"`
//! entry goes through, the one directive error reporter, header-list operations and complex
//! values.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_request_t, ngx_list_part_t, ngx_list_push, ngx_list_t,
    ngx_log_t, ngx_palloc, ngx_pcalloc, ngx_pool_t, ngx_str_t, ngx_table_elt_t, NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_OK,
};
use ngx::ffi::{ngx_event_t, ngx_post_event, ngx_posted_events};
use ngx::ffi::{ngx_int_t, NGX_ERROR};
use ngx::{ngx_conf_log_error, ngx_log_error};

use crate::parse::ConfError;

/// Runs `f`, turning a panic into `on_panic` plus an `[alert]` line: no panic may unwind into
/// nginx's C frames.
pub fn guard<T>(log: *mut ngx_log_t, what: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("unknown panic");
            if !log.is_null() {
                ngx_log_error!(NGX_LOG_ALERT, log, "shield: panic in {what}: {msg}");
            }
            on_panic
        }
    }
}

/// The arguments of the directive being parsed, as UTF-8 (index 0 is the directive name).
///
/// # Safety
/// `cf` must be the live configuration context of a directive callback.
unsafe fn conf_args<'a>(cf: *mut ngx_conf_t) -> Result<Vec<&'a str>, String> {
    // SAFETY: nginx fills cf->args with the tokens of the current directive before calling it.
    let args = unsafe { (*(*cf).args).as_slice::<ngx_str_t>() };
    args.iter().map(|a| a.to_str().map_err(|_| format!("invalid value \"{}\": not UTF-8", a))).collect()
}

/// The one place a directive handler reports failure, at `emerg`, in nginx's words (nginx
/// completes the line with ` in <file>:<line>`):
/// - `"<directive>" directive is duplicate` and `"<directive>" must have "zone" parameter`,
///   as nginx's own modules say them;
/// - any other error as `<error> in "<directive>" directive`.
///
/// `handler` receives the module configuration slot this directive writes to and the
/// arguments after the directive name.
pub fn directive<C>(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
    handler: impl FnOnce(&mut ngx_conf_t, &mut C, &[&str]) -> Result<(), ConfError>,
) -> *mut c_char {
    // SAFETY: nginx passes a valid cf during configuration parsing.
    let log = unsafe { (*cf).log };
    guard(log, "directive", NGX_CONF_ERROR, || {
        // SAFETY: cmd is this module's command entry and conf the slot selected by its `conf`
        // offset, allocated by our create_*_conf as `C`.
        let (name, conf) = unsafe { ((*cmd).name.to_string(), &mut *conf.cast::<C>()) };
        // SAFETY: see conf_args.
        let result = unsafe { conf_args(cf) }
            .map_err(ConfError::Other)
            .and_then(|args| handler(unsafe { &mut *cf }, conf, &args[1..]));
        match result {
            Ok(()) => NGX_CONF_OK,
            Err(err) => {
                report(cf, &name, &err);
                NGX_CONF_ERROR
            }
        }
    })
}

/// Logs a configuration error of directive `name` in nginx's words (see [`directive`]).
pub fn report(cf: *mut ngx_conf_t, name: &str, err: &ConfError) {
    // nginx's log format is one line per message; some errors (regex) span several.
    let text = err.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    let line = match err {
        ConfError::Duplicate => format!("\"{name}\" directive {text}"),
        ConfError::MissingParameter(_) => format!("\"{name}\" {text}"),
        _ => format!("{text} in \"{name}\" directive"),
    };
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{line}");
}

/// Sets `slot` once; a second occurrence in the same block is nginx's "is duplicate".
pub fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), ConfError> {
    if slot.is_some() {
        return Err(ConfError::Duplicate);
    }
    *slot = Some(value);
    Ok(())
}

/// Copies `s` into `pool` as an `ngx_str_t` that lives as long as the pool.
pub fn pool_str(pool: *mut ngx_pool_t, s: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: ngx_pnalloc-like allocation of s.len() bytes; copied before use.
    unsafe {
        let data = ngx_palloc(pool, s.len().max(1)).cast::<u8>();
        if data.is_null() {
            return None;
        }
        ptr::copy_nonoverlapping(s.as_ptr(), data, s.len());
        Some(ngx_str_t { len: s.len(), data })
    }
}

/// A compiled nginx complex value (a string that may contain `$variables`).
#[derive(Clone, Copy)]
pub struct ComplexValue(*mut ngx_http_complex_value_t);

impl ComplexValue {
    pub fn compile(cf: &mut ngx_conf_t, value: &str) -> Result<Self, String> {
        let mut source = pool_str(cf.pool, value.as_bytes()).ok_or("out of memory")?;
        // SAFETY: zeroed structs are the documented initial state for compilation; the
        // complex value is allocated from the configuration pool and outlives the cycle.
        unsafe {
            let cv = ngx_pcalloc(cf.pool, core::mem::size_of::<ngx_http_complex_value_t>())
                .cast::<ngx_http_complex_value_t>();
            if cv.is_null() {
                return Err("out of memory".into());
            }
            let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
            ccv.cf = cf;
            ccv.value = &mut source;
            ccv.complex_value = cv;
            if ngx_http_compile_complex_value(&mut ccv) != NGX_OK as isize {
                return Err(format!("invalid value \"{value}\""));
            }
            Ok(Self(cv))
        }
    }

    /// Evaluates the value for `r`; `None` when a variable fails to evaluate.
    #[inline]
    pub fn eval(&self, r: *mut ngx_http_request_t) -> Option<ngx_str_t> {
        // SAFETY: self.0 was compiled at configuration time and is never freed before the
        // cycle. A value without variables has no length codes: it is its own result.
        unsafe {
            if (*self.0).lengths.is_null() {
                return Some((*self.0).value);
            }
        }
        let mut out = ngx_str_t::default();
        // SAFETY: self.0 was compiled at configuration time; r is a live request.
        let rc = unsafe { ngx_http_complex_value(r, self.0, &mut out) };
        (rc == NGX_OK as isize).then_some(out)
    }
}

/// Iterates the elements of an nginx list of headers.
///
/// For response headers ngx 0.5.1's own helpers do not fit: `Request::headers_out_iterator`
/// yields `(key, value)` copies, removed (hash 0) elements included, and no element to edit or
/// remove; `add_header_out` copies the name into the pool on every request and leaves the
/// element's `next` (nginx 1.23+) uninitialised. Request headers, which are only read, go
/// through ngx's `headers_in_iterator` (`headers::filter::request_header`).
pub fn headers(list: &ngx_list_t) -> impl Iterator<Item = *mut ngx_table_elt_t> + '_ {
    let mut part: *const ngx_list_part_t = &list.part;
    let mut i = 0usize;
    core::iter::from_fn(move || {
        // SAFETY: nginx lists are a chain of parts whose `nelts` elements are initialised.
        unsafe {
            loop {
                if part.is_null() {
                    return None;
                }
                if i < (*part).nelts {
                    let elt = (*part).elts.cast::<ngx_table_elt_t>().add(i);
                    i += 1;
                    return Some(elt);
                }
                part = (*part).next;
                i = 0;
            }
        }
    })
}

/// Is this list element a live header named `name` (ASCII case-insensitive)?
pub fn is_header(h: *const ngx_table_elt_t, name: &[u8]) -> bool {
    // SAFETY: h comes from `headers()`.
    unsafe { (*h).hash != 0 && (*h).key.as_bytes().eq_ignore_ascii_case(name) }
}

/// First live header of that name.
pub fn find_header(list: &ngx_list_t, name: &[u8]) -> Option<*mut ngx_table_elt_t> {
    headers(list).find(|&h| is_header(h, name))
}

/// Removes every header of that name: nginx skips list elements whose hash is 0.
pub fn remove_headers(list: &ngx_list_t, name: &[u8]) -> usize {
    let mut n = 0;
    for h in headers(list).filter(|&h| is_header(h, name)) {
        // SAFETY: h is a valid element of the response header list.
        unsafe { (*h).hash = 0 };
        n += 1;
    }
    n
}

/// Appends a header; `name` must outlive the request (configuration or static memory) and
/// `value` must live in the request pool or longer.
pub fn push_header(list: &mut ngx_list_t, name: ngx_str_t, value: ngx_str_t) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: ngx_list_push returns uninitialised space for one element, or NULL.
    unsafe {
        let h = ngx_list_push(list).cast::<ngx_table_elt_t>();
        if h.is_null() {
            return None;
        }
        h.write(core::mem::zeroed());
        (*h).hash = 1;
        (*h).key = name;
        (*h).value = value;
        // Output headers are matched by key; lowcase_key is only read on input headers.
        (*h).lowcase_key = name.data;
        Some(h)
    }
}

/// A static `ngx_str_t` for a name known at compile time.
pub const fn static_str(s: &'static str) -> ngx_str_t {
    ngx_str_t { len: s.len(), data: s.as_ptr().cast_mut() }
}

/// Sends a complete in-memory response; returns what the content handler should return.
pub fn send_body(r: &mut ngx_http_request_t, status: usize, content_type: &'static str, body: &[u8]) -> ngx_int_t {
    r.headers_out.status = status;
    r.headers_out.content_type = static_str(content_type);
    r.headers_out.content_type_len = content_type.len();
    r.headers_out.content_length_n = body.len() as _;
    let rp: *mut ngx_http_request_t = r;
    // SAFETY: r is live; the buffer is allocated from its pool and filled before sending.
    unsafe {
        let rc = ngx::ffi::ngx_http_send_header(rp);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 {
            return rc;
        }
        let b = ngx::ffi::ngx_create_temp_buf(r.pool, body.len().max(1));
        let out = ngx::ffi::ngx_alloc_chain_link(r.pool);
        if b.is_null() || out.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        ptr::copy_nonoverlapping(body.as_ptr(), (*b).pos, body.len());
        (*b).last = (*b).pos.add(body.len());
        (*b).set_last_buf(if ptr::eq(rp, r.main) { 1 } else { 0 });
        (*b).set_last_in_chain(1);
        *out = ngx::ffi::ngx_chain_t { buf: b, next: ptr::null_mut() };
        ngx::ffi::ngx_http_output_filter(rp, out)
    }
}

// --- work run after the current event ---------------------------------------------------

/// Work to run from a posted event: what follows a Redis reply (the next command, a store after
/// its tags, a refund) runs after the reply's callback, never inside it (the client that
/// called back must not be re-entered).
pub type Job = Box<dyn FnOnce()>;

static mut QUEUE: Vec<Job> = Vec::new();
static mut EVENT: Option<Box<ngx_event_t>> = None;

/// Runs `job` from a posted event, after the current event (a Redis reply) is handled.
pub fn later(job: Job) {
    // SAFETY: nginx workers are single-threaded; the event is boxed (its address stays) and
    // leaked with the worker; posted events run on this thread.
    unsafe {
        (*ptr::addr_of_mut!(QUEUE)).push(job);
        let ev = (*ptr::addr_of_mut!(EVENT)).get_or_insert_with(|| {
            let mut ev: Box<ngx_event_t> = Box::new(core::mem::zeroed());
            ev.handler = Some(run_later);
            ev.log = (*ngx::ffi::ngx_cycle).log;
            ev
        });
        if ev.posted() == 0 {
            ngx_post_event(&mut **ev, ptr::addr_of_mut!(ngx_posted_events));
        }
    }
}

extern "C" fn run_later(ev: *mut ngx_event_t) {
    // SAFETY: the event's log is the cycle's.
    guard(unsafe { (*ev).log }, "deferred work", (), || loop {
        // SAFETY: as in `later`.
        let jobs = unsafe { core::mem::take(&mut *ptr::addr_of_mut!(QUEUE)) };
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            job();
        }
    })
}
