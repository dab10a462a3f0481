//! The rewrite-phase inspection: IP lists and hygiene first, then the request body (read
//! with nginx's own reader, kept for `proxy_pass`), then the rules; a blocked request gets a
//! small JSON body carrying `$request_id`.
//!
//! Memory: a body nginx holds in one memory buffer is inspected in place; one spread over
//! buffers or a temp file is read once into one buffer of at most `body=` bytes. Values are
//! streamed from it to the engine (see `filter::extract`), so a request costs the inspected
//! bytes about once, plus a constant.

use core::ffi::c_void;
use core::ptr;
use std::borrow::Cow;

use ngx::ffi::{
    ngx_http_core_run_phases, ngx_http_discard_request_body, ngx_http_finalize_request,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t, NGX_DECLINED, NGX_DONE,
    NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_log_error;

use super::audit::audit;
use super::{Mode, WafLoc, DEFAULT_METHODS};
use crate::filter::rules::target;
use crate::filter::{self as waf, extract, Engine, Hygiene, Item, Sink, Verdict};
use crate::glue::util::{find_header, guard, headers, is_header};
use crate::glue::{RequestCtx, Shield};

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    #[default]
    None,
    Reading,
    Ready,
}

#[derive(Default)]
pub struct WafCtx {
    body: BodyState,
    pub(super) done: bool,
    pub status: Option<&'static str>,
    pub score: u32,
    pub rules: String,
}

/// Runs in the rewrite phase. `None` lets the request continue.
pub fn rewrite(r: &mut ngx_http_request_t) -> Option<ngx_int_t> {
    let lc = Shield::location_conf(r)?;
    let waf = &lc.waf;
    if waf.engine.is_none() && waf.secrules().is_none() {
        return None;
    }
    let mode = waf.mode();
    let rp: *mut ngx_http_request_t = r;
    let ctx = RequestCtx::get(rp)?;
    if ctx.waf.done {
        return None;
    }
    if ctx.waf.body == BodyState::Reading {
        return Some(NGX_DONE as ngx_int_t);
    }
    let mcf = Shield::main_conf(r)?;
    let slots = mcf.waf.slots()?;

    if ctx.waf.body == BodyState::None {
        // Cheap checks first, before any body is read.
        let client = client_ip(r);
        if let (Some(ip), Some(deny)) = (client, &waf.deny) {
            if deny.iter().any(|c| c.contains(ip)) {
                return Some(reject_hygiene(r, waf, mode, Hygiene::DeniedAddress));
            }
        }
        if let (Some(ip), Some(allow)) = (client, &waf.allow) {
            if allow.iter().any(|c| c.contains(ip)) {
                ctx.waf.done = true;
                ctx.waf.status = Some("ALLOWED");
                mcf.add(slots.allowed, 1);
                return None;
            }
        }
        if let Err(h) = hygiene(r, waf) {
            return Some(reject_hygiene(r, waf, mode, h));
        }
        if has_body(r) {
            ctx.waf.body = BodyState::Reading;
            // The body stays in r->request_body for proxy_pass and friends.
            r.set_preserve_body(1);
            // SAFETY: r is live; the handler runs once the body is read (maybe right away).
            let rc = unsafe { ngx_http_read_client_request_body(rp, Some(body_ready)) };
            if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                return Some(rc);
            }
            // Balances the reference read_client_request_body took; the request lives on.
            // SAFETY: standard pattern for a phase handler that read the body.
            unsafe { ngx_http_finalize_request(rp, NGX_DONE as ngx_int_t) };
            return Some(NGX_DONE as ngx_int_t);
        }
    }

    let body =
        if ctx.waf.body == BodyState::Ready { read_body(r, waf.limits().max_body) } else { Cow::Borrowed(&[][..]) };
    let engine = match (waf.secrules(), &waf.engine) {
        (Some(rules), _) => {
            let outcome = super::secrules::run(r, rules, &body);
            return super::secrules::decide(r, waf, rules, outcome);
        }
        (None, Some(engine)) => engine,
        (None, None) => return None,
    };
    let verdict = inspect(r, waf, engine, &body);
    let ctx = RequestCtx::get(rp)?;
    ctx.waf.done = true;
    ctx.waf.score = verdict.score;
    ctx.waf.rules = verdict.rule_ids();
    for m in &verdict.matches {
        if let Some((_, slot)) = slots.families.iter().find(|(f, _)| *f == m.family) {
            mcf.add(*slot, 1);
        }
    }
    let blocked = verdict.score >= waf.threshold();
    let result = match (blocked, mode) {
        (false, _) => "PASSED",
        (true, Mode::Detect) => "DETECTED",
        (true, _) => "BLOCKED",
    };
    ctx.waf.status = Some(result);
    mcf.add(
        match result {
            "PASSED" => slots.passed,
            "DETECTED" => slots.detected,
            _ => slots.blocked,
        },
        1,
    );
    if !verdict.matches.is_empty() {
        audit(r, waf.audit_log.flatten(), result, &verdict, None);
    }
    if result != "BLOCKED" {
        return None;
    }
    let log = unsafe { (*r.connection).log };
    ngx_log_error!(
        NGX_LOG_WARN,
        log,
        "shield: request blocked, score {} (threshold {}), rules {}",
        verdict.score,
        waf.threshold(),
        ctx.waf.rules
    );
    Some(block(r, waf.status.unwrap_or(403)))
}

unsafe extern "C" fn body_ready(r: *mut ngx_http_request_t) {
    guard(unsafe { (*(*r).connection).log }, "filter body handler", (), || {
        if let Some(ctx) = RequestCtx::get(r) {
            ctx.waf.body = BodyState::Ready;
        }
        // SAFETY: nginx calls this once the body is in r->request_body; resume the phases.
        unsafe {
            (*r).write_event_handler = Some(ngx_http_core_run_phases);
            ngx_http_core_run_phases(r);
        }
    })
}

fn has_body(r: &ngx_http_request_t) -> bool {
    r.headers_in.content_length_n > 0 || !r.headers_in.transfer_encoding.is_null()
}

/// The request body, up to `max` bytes: borrowed when nginx holds it in one memory buffer
/// (`client_body_buffer_size` at least the body), else read once from nginx's buffers and temp
/// file into one buffer.
fn read_body(r: &ngx_http_request_t, max: usize) -> Cow<'_, [u8]> {
    // SAFETY: request_body and its chain belong to the live request, and so does the
    // borrowed memory buffer.
    unsafe {
        let Some(rb) = r.request_body.as_ref() else { return Cow::Borrowed(&[]) };
        let first = rb.bufs;
        if !first.is_null() && (*first).next.is_null() {
            let b = &*(*first).buf;
            if b.in_file() == 0 && !b.pos.is_null() {
                let len = (b.last.offset_from(b.pos) as usize).min(max);
                return Cow::Borrowed(core::slice::from_raw_parts(b.pos, len));
            }
        }
        let mut total = 0usize;
        let mut cl = first;
        while !cl.is_null() {
            let b = &*(*cl).buf;
            total += if b.in_file() != 0 {
                (b.file_last - b.file_pos) as usize
            } else if b.pos.is_null() {
                0
            } else {
                b.last.offset_from(b.pos) as usize
            };
            cl = (*cl).next;
        }
        let mut out = Vec::with_capacity(total.min(max));
        let mut cl = first;
        while !cl.is_null() && out.len() < max {
            let b = &*(*cl).buf;
            if b.in_file() != 0 && !b.file.is_null() {
                let want = ((b.file_last - b.file_pos) as usize).min(max - out.len());
                let start = out.len();
                out.resize(start + want, 0);
                // Temp files are local disk; nginx reads them the same way.
                let n = libc_pread((*b.file).fd, &mut out[start..], b.file_pos);
                out.truncate(start + n);
            } else if !b.pos.is_null() {
                let len = (b.last.offset_from(b.pos) as usize).min(max - out.len());
                out.extend_from_slice(core::slice::from_raw_parts(b.pos, len));
            }
            cl = (*cl).next;
        }
        Cow::Owned(out)
    }
}

fn libc_pread(fd: i32, buf: &mut [u8], offset: i64) -> usize {
    extern "C" {
        fn pread(fd: i32, buf: *mut c_void, count: usize, offset: i64) -> isize;
    }
    // SAFETY: buf is valid for its length; a failed read returns -1, treated as nothing read.
    let n = unsafe { pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) };
    n.max(0) as usize
}

pub(super) fn client_ip(r: &ngx_http_request_t) -> Option<std::net::IpAddr> {
    // SAFETY: the connection's address text is set by nginx (and by the realip module when
    // it replaces the client address).
    let text = unsafe { (*r.connection).addr_text };
    text.to_str().ok()?.parse().ok()
}

fn hygiene(r: &ngx_http_request_t, waf: &WafLoc) -> Result<(), Hygiene> {
    let limits = waf.limits();
    let method = r.method_name.to_str().unwrap_or("");
    // Where SecLang rules run, methods and scanners are theirs to judge (the CRS's 911100
    // and 913100, with its own lists) unless the location sets these checks explicitly.
    let secrules = waf.secrules().is_some();
    let allowed = waf
        .methods
        .as_ref()
        .map_or_else(|| secrules || DEFAULT_METHODS.contains(&method), |m| m.iter().any(|x| x == method));
    if !allowed {
        return Err(Hygiene::MethodNotAllowed);
    }
    waf::check_uri(limits, r.unparsed_uri.as_bytes())?;
    let (mut count, mut size) = (0, 0);
    for h in headers(&r.headers_in.headers) {
        // SAFETY: live request header element.
        let (k, v) = unsafe { ((*h).key.len, (*h).value.len) };
        count += 1;
        size = size.max(k + v);
    }
    if count > limits.max_headers {
        return Err(Hygiene::TooManyHeaders);
    }
    if size > limits.max_header_size {
        return Err(Hygiene::HeaderTooLarge);
    }
    if !r.headers_in.transfer_encoding.is_null() && !r.headers_in.content_length.is_null() {
        return Err(Hygiene::Smuggling);
    }
    if waf.scanners.unwrap_or(!secrules) {
        if let Some(ua) = find_header(&r.headers_in.headers, b"user-agent") {
            // SAFETY: live request header element.
            if waf::scanner(unsafe { (*ua).value.as_bytes() }) {
                return Err(Hygiene::ScannerUserAgent);
            }
        }
    }
    if has_body(r) {
        if let Some(types) = &waf.content_types {
            let ct = find_header(&r.headers_in.headers, b"content-type")
                .map(|h| unsafe { (*h).value.to_str().unwrap_or("") })
                .unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if !types.contains(&mime) {
                return Err(Hygiene::ContentTypeNotAllowed);
            }
        }
    }
    Ok(())
}

/// Streams every inspected value of the request to the engine, one at a time.
fn inspect(r: &ngx_http_request_t, waf: &WafLoc, engine: &Engine, body: &[u8]) -> Verdict {
    let stop_at = if waf.mode() == Mode::Detect { u32::MAX } else { waf.threshold() };
    let mut inspection = engine.start(&waf.exclusions, stop_at);
    // SAFETY: nginx points these at the request's own header elements, or leaves them NULL.
    let (referer, host) = unsafe { (r.headers_in.referer.as_ref(), r.headers_in.host.as_ref()) };
    if let (Some(referer), Some(host)) = (referer, host) {
        if extract::same_site_referer(referer.value.as_bytes(), host.value.as_bytes()) {
            inspection.same_site_referer();
        }
    }
    let raw = r.unparsed_uri.as_bytes();
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, &raw[raw.len()..]),
    };
    inspection.push(Item::new(target::PATH, &b""[..], path));
    extract::query(query, &mut inspection);
    // An empty list is `all`: every header but the noise (see extract::NOISE_HEADERS).
    let wanted = waf.inspect_headers.as_deref().unwrap_or_default();
    for h in headers(&r.headers_in.headers) {
        // SAFETY: live request header element, valid as long as the request.
        let (key, value) = unsafe { (&(*h).key, &(*h).value) };
        let key = key.as_bytes();
        if is_header(h, b"cookie") {
            extract::cookies(value.as_bytes(), &mut inspection);
        } else if if wanted.is_empty() {
            !extract::noise_header(key)
        } else {
            wanted.iter().any(|w| key.eq_ignore_ascii_case(w.as_bytes()))
        } {
            inspection.push(Item::new(target::HEADERS, key, value.as_bytes()));
        }
    }
    if !body.is_empty() {
        // SAFETY: live request header element.
        let ct = find_header(&r.headers_in.headers, b"content-type")
            .map(|h| unsafe { (*h).value.as_bytes() })
            .unwrap_or(b"");
        extract::body(ct, body, &mut inspection);
    }
    inspection.verdict()
}

fn reject_hygiene(r: &mut ngx_http_request_t, waf: &WafLoc, mode: Mode, h: Hygiene) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    let detect = mode == Mode::Detect;
    if let Some(ctx) = RequestCtx::get(rp) {
        ctx.waf.done = true;
        ctx.waf.status = Some(if detect { "DETECTED" } else { "BLOCKED" });
        ctx.waf.rules = h.code().to_string();
    }
    if let Some((mcf, slots)) = Shield::main_conf(r).and_then(|m| m.waf.slots().map(|s| (m, s))) {
        mcf.add(if detect { slots.detected } else { slots.blocked }, 1);
    }
    audit(r, waf.audit_log.flatten(), if detect { "DETECTED" } else { "BLOCKED" }, &Verdict::default(), Some(h));
    if detect {
        return NGX_DECLINED as ngx_int_t;
    }
    let log = unsafe { (*r.connection).log };
    ngx_log_error!(NGX_LOG_WARN, log, "shield: request rejected: {}", h.code());
    block(r, h.status(waf.status.unwrap_or(403)))
}

/// The block response: a small JSON body with the request id, so a user can quote it.
pub(super) fn block(r: &mut ngx_http_request_t, status: u16) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    // SAFETY: r is live; the body (if any) was not read yet, or was read already.
    unsafe { ngx_http_discard_request_body(rp) };
    let body = format!("{{\"error\":\"request blocked\",\"status\":{status},\"request_id\":\"{}\"}}\n", request_id(r));
    crate::glue::util::send_body(r, status as usize, "application/json", body.as_bytes())
}

pub(super) fn request_id(r: &ngx_http_request_t) -> String {
    Shield::main_conf(r)
        .and_then(|mcf| mcf.request_id_index)
        .and_then(|index| {
            let rp = ptr::from_ref(r).cast_mut();
            // SAFETY: the index was obtained at configuration time for $request_id.
            let v = unsafe { ngx::ffi::ngx_http_get_indexed_variable(rp, index) };
            // SAFETY: NULL or a valid variable value for this request.
            unsafe { v.as_ref() }.filter(|v| v.valid() != 0).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        })
        .unwrap_or_default()
}
