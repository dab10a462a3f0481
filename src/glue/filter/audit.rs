//! The audit log: one JSON line per request with a detection.
//!
//! Opened the nginx way, like `access_log`: `ngx_conf_open_file` puts the file in the cycle's
//! open files, so the master opens it (as root, before workers drop privileges), workers
//! inherit the descriptor, and `nginx -s reopen` (USR1) reopens it for log rotation. Requests
//! write one line with one `write(2)` on the file's current descriptor (O_APPEND, local disk:
//! what nginx's unbuffered access log does).

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use ngx::ffi::{ngx_conf_open_file, ngx_conf_t, ngx_http_request_t, ngx_log_t, ngx_open_file_t, NGX_LOG_ERR};
use ngx::ngx_log_error;

use super::inspect::{client_ip, request_id};
use crate::filter::{Hygiene, Verdict};
use crate::glue::util::pool_str;

thread_local! {
    /// The second of the last write error this worker logged.
    static LAST_ERROR: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// A file of the cycle's open-file list; its `fd` changes on reopen, so it is read per write.
#[derive(Clone, Copy)]
pub struct AuditLog(NonNull<ngx_open_file_t>);

impl AuditLog {
    pub fn open(cf: &mut ngx_conf_t, path: &str) -> Result<AuditLog, String> {
        // The name must outlive the cycle (ngx_conf_open_file keeps an absolute one as is) and
        // end in NUL: nginx opens `name.data` as a C string.
        let mut name = pool_str(cf.pool, format!("{path}\0").as_bytes()).ok_or("out of memory")?;
        name.len -= 1;
        // SAFETY: called while parsing the configuration; the file entry belongs to the cycle.
        let file = unsafe { ngx_conf_open_file(cf.cycle, &mut name) };
        NonNull::new(file).map(AuditLog).ok_or_else(|| format!("cannot open audit log \"{path}\""))
    }

    fn write(&self, log: *mut ngx_log_t, line: &[u8]) {
        extern "C" {
            fn write(fd: i32, buf: *const c_void, count: usize) -> isize;
        }
        // SAFETY: the entry lives as long as the cycle that holds this configuration.
        let file = unsafe { self.0.as_ref() };
        // SAFETY: line is valid for its length; a failed write returns -1.
        let n = unsafe { write(file.fd, line.as_ptr().cast(), line.len()) };
        if n != line.len() as isize {
            let err = std::io::Error::last_os_error();
            // At most one line a second per worker, as nginx does for its access log: a full
            // disk must not also flood error.log.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if LAST_ERROR.replace(now) != now {
                ngx_log_error!(NGX_LOG_ERR, log, "shield: audit log \"{}\" write failed: {err}", file.name);
            }
        }
    }
}

/// One JSON line per request with a detection, appended to the location's audit log.
pub(super) fn audit(
    r: &ngx_http_request_t,
    log_to: Option<AuditLog>,
    result: &str,
    verdict: &Verdict,
    hygiene: Option<Hygiene>,
) {
    let rules = verdict
        .matches
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id, "family": m.family.tag(), "score": m.score, "target": m.target, "match": m.fragment,
            })
        })
        .collect();
    audit_line(r, log_to, result, verdict.score, hygiene, rules);
}

/// The audit line with the matched rules as the engine describes them (built-in packs: id,
/// family, target, fragment; SecLang: id, phase, message).
pub(super) fn audit_line(
    r: &ngx_http_request_t,
    log_to: Option<AuditLog>,
    result: &str,
    score: u32,
    hygiene: Option<Hygiene>,
    rules: Vec<serde_json::Value>,
) {
    let Some(file) = log_to else { return };
    let uri = String::from_utf8_lossy(&r.unparsed_uri.as_bytes()[..r.unparsed_uri.len.min(512)]).into_owned();
    // SAFETY: nginx keeps the cached ISO 8601 time string current on this thread.
    let time = unsafe { (*ptr::addr_of!(ngx::ffi::ngx_cached_http_log_iso8601)).to_string() };
    let line = serde_json::json!({
        "time": time,
        "request_id": request_id(r),
        "client": client_ip(r).map(|ip| ip.to_string()),
        "method": r.method_name.to_str().unwrap_or(""),
        "uri": uri,
        "result": result,
        "score": score,
        "hygiene": hygiene.map(|h| h.code()),
        "rules": rules,
    });
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    // SAFETY: the request's connection log is valid for the request.
    file.write(unsafe { (*r.connection).log }, &bytes);
}
