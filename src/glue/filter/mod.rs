//! Input filtering on nginx's side: directives, the rewrite-phase inspection (so a location
//! that ends in `return` cannot bypass it), request-body reading that keeps the body for
//! `proxy_pass`, the block response, the audit log, variables and metrics.

use core::ffi::{c_char, c_void};
use core::ptr;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_core_run_phases, ngx_http_discard_request_body,
    ngx_http_finalize_request, ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t,
    ngx_log_t, NGX_DECLINED, NGX_DONE, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_log_error;

use super::MainConf;
use super::util::{directive, find_header, guard, headers, is_header, set_once};
use super::{RequestCtx, Shield};
use crate::status::metrics::Registry;
use crate::parse;
use crate::filter::ip::Cidr;
use crate::filter::rules::{self, target, Family, Rule};
use crate::filter::{self as waf, extract, Engine, Exclusions, Hygiene, Item, Limits, Verdict};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Off,
    Block,
    Detect,
}

const DEFAULT_HEADERS: &[&str] = &["user-agent", "referer", "x-forwarded-for", "x-original-url", "x-rewrite-url"];
const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Default)]
pub struct WafLoc {
    mode: Option<Mode>,
    paranoia: Option<u8>,
    threshold: Option<u32>,
    status: Option<u16>,
    exclusions: Exclusions,
    custom: Option<Vec<Rule>>,
    limits: Option<Limits>,
    methods: Option<Vec<String>>,
    content_types: Option<Vec<String>>,
    allow: Option<Vec<Cidr>>,
    deny: Option<Vec<Cidr>>,
    scanners: Option<bool>,
    audit_log: Option<Option<String>>,
    inspect_headers: Option<Vec<String>>,
    /// Resolved at merge time when the filter is on here.
    pub engine: Option<Rc<Engine>>,
}

impl WafLoc {
    pub fn merge(&mut self, prev: &WafLoc, mcf: &mut MainConf) -> Result<(), String> {
        self.mode = self.mode.or(prev.mode);
        self.paranoia = self.paranoia.or(prev.paranoia);
        self.threshold = self.threshold.or(prev.threshold);
        self.status = self.status.or(prev.status);
        // Exclusions accumulate: a location tunes on top of its server's tuning.
        let mut exclusions = prev.exclusions.clone();
        exclusions.extend(&self.exclusions);
        self.exclusions = exclusions;
        for (slot, parent) in [(&mut self.methods, &prev.methods), (&mut self.content_types, &prev.content_types), (&mut self.inspect_headers, &prev.inspect_headers)] {
            if slot.is_none() {
                slot.clone_from(parent);
            }
        }
        if self.custom.is_none() {
            self.custom.clone_from(&prev.custom);
        }
        if self.limits.is_none() {
            self.limits.clone_from(&prev.limits);
        }
        if self.allow.is_none() {
            self.allow.clone_from(&prev.allow);
        }
        if self.deny.is_none() {
            self.deny.clone_from(&prev.deny);
        }
        // Settled here, once, so requests read them without cloning or rebuilding.
        self.limits.get_or_insert_with(Limits::default);
        self.inspect_headers.get_or_insert_with(|| DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect());
        self.scanners = self.scanners.or(prev.scanners);
        if self.audit_log.is_none() {
            self.audit_log.clone_from(&prev.audit_log);
        }
        self.engine = None;
        if self.mode.unwrap_or(Mode::Off) != Mode::Off {
            self.engine = Some(mcf.waf.engine(self.paranoia.unwrap_or(1), self.custom.as_deref().unwrap_or_default())?);
        }
        Ok(())
    }

    fn limits(&self) -> &Limits {
        self.limits.as_ref().expect("settled at merge")
    }

    fn threshold(&self) -> u32 {
        self.threshold.unwrap_or(waf::DEFAULT_THRESHOLD)
    }
}

/// Engines are shared between locations with the same paranoia level and custom rules.
#[derive(Default)]
pub struct WafMain {
    engines: Vec<(u8, Vec<u32>, Rc<Engine>)>,
    slots: Option<Slots>,
}

struct Slots {
    passed: usize,
    blocked: usize,
    detected: usize,
    allowed: usize,
    families: Vec<(Family, usize)>,
}

impl WafMain {
    fn engine(&mut self, paranoia: u8, custom: &[Rule]) -> Result<Rc<Engine>, String> {
        let ids: Vec<u32> = custom.iter().map(|r| r.id).collect();
        if let Some((_, _, e)) = self.engines.iter().find(|(p, i, _)| *p == paranoia && *i == ids) {
            return Ok(e.clone());
        }
        let engine = Rc::new(Engine::new(paranoia, custom)?);
        self.engines.push((paranoia, ids, engine.clone()));
        Ok(engine)
    }

    fn register(&mut self, reg: &mut Registry) {
        if self.slots.is_some() {
            return;
        }
        const REQ: &str = "shield_filter_requests_total";
        const REQ_HELP: &str = "Requests inspected by shield_filter, by result.";
        const M: &str = "shield_filter_matches_total";
        const M_HELP: &str = "Rule matches, by rule family.";
        self.slots = Some(Slots {
            passed: reg.counter(REQ, REQ_HELP, &[("result", "passed")]),
            blocked: reg.counter(REQ, REQ_HELP, &[("result", "blocked")]),
            detected: reg.counter(REQ, REQ_HELP, &[("result", "detected")]),
            allowed: reg.counter(REQ, REQ_HELP, &[("result", "allowed")]),
            families: Family::ALL.iter().chain(&[Family::Custom]).map(|f| (*f, reg.counter(M, M_HELP, &[("family", f.tag())]))).collect(),
        });
    }
}

// --- directives -------------------------------------------------------------------------

fn loc<'a>(conf: *mut c_void) -> &'a mut super::LocConf {
    // SAFETY: all filter directives use NGX_HTTP_LOC_CONF_OFFSET.
    unsafe { &mut *conf.cast::<super::LocConf>() }
}

fn register_metrics(cf: &mut ngx_conf_t) {
    if let Some(mcf) = Shield::main_conf_mut(cf) {
        mcf.waf.register(&mut mcf.registry);
    }
}

pub extern "C" fn set_filter(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut super::LocConf, args| {
        let mode = match args[0] {
            "on" => Mode::Block,
            "off" => Mode::Off,
            "detect" => Mode::Detect,
            other => return Err(format!("invalid value \"{other}\", it must be \"on\", \"off\" or \"detect\"").into()),
        };
        register_metrics(cf);
        set_once(&mut lc.waf.mode, mode)
    })
}

pub extern "C" fn set_paranoia(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let level = parse::number(args[0]).filter(|n| (1..=4).contains(n)).ok_or_else(|| format!("invalid value \"{}\", it must be 1 to 4", args[0]))?;
        set_once(&mut lc.waf.paranoia, level as u8)
    })
}

pub extern "C" fn set_threshold(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let n = parse::number(args[0]).filter(|&n| n > 0 && n < 10_000).ok_or_else(|| format!("invalid value \"{}\"", args[0]))?;
        set_once(&mut lc.waf.threshold, n as u32)
    })
}

pub extern "C" fn set_status(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| set_once(&mut lc.waf.status, parse::status(args[0], 400, 599).map_err(|e| e.0)?))
}

pub extern "C" fn set_exclude(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| Ok(lc.waf.exclusions.add(args)?))
}

pub extern "C" fn set_rules_file(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    let lc = loc(conf);
    directive(cf, cmd, conf, |cf, _: &mut super::LocConf, args| {
        let path = conf_path(cf, args[0]);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
        let rules = rules::parse_rules_file(&text)?;
        // Compile now, so a bad pattern fails `nginx -t` here, naming the rule.
        Engine::new(4, &rules)?;
        lc.waf.custom.get_or_insert_with(Vec::new).extend(rules);
        Ok(())
    })
}

pub extern "C" fn set_rule(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let rule = rules::parse_rule_args(args)?;
        Engine::new(4, std::slice::from_ref(&rule))?;
        lc.waf.custom.get_or_insert_with(Vec::new).push(rule);
        Ok(())
    })
}

pub extern "C" fn set_limits(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let mut limits = Limits::default();
        for a in args {
            limits.set(a)?;
        }
        set_once(&mut lc.waf.limits, limits)
    })
}

pub extern "C" fn set_methods(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let list = args
            .iter()
            .map(|m| if m.bytes().all(|b| b.is_ascii_alphabetic()) { Ok(m.to_ascii_uppercase()) } else { Err(format!("invalid method \"{m}\"")) })
            .collect::<Result<_, _>>()?;
        set_once(&mut lc.waf.methods, list)
    })
}

pub extern "C" fn set_content_types(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| set_once(&mut lc.waf.content_types, args.iter().map(|s| s.to_ascii_lowercase()).collect()))
}

fn cidrs(args: &[&str]) -> Result<Vec<Cidr>, String> {
    args.iter().map(|a| Cidr::parse(a)).collect()
}

pub extern "C" fn set_allow(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| set_once(&mut lc.waf.allow, cidrs(args)?))
}

pub extern "C" fn set_deny(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| set_once(&mut lc.waf.deny, cidrs(args)?))
}

pub extern "C" fn set_scanners(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| set_once(&mut lc.waf.scanners, parse::flag(args[0]).map_err(|e| e.0)?))
}

pub extern "C" fn set_audit_log(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut super::LocConf, args| {
        let path = (args[0] != "off").then(|| conf_path(cf, args[0]));
        set_once(&mut lc.waf.audit_log, path)
    })
}

pub extern "C" fn set_inspect_headers(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let list = args.iter().map(|h| parse::header_name(h).map(|h| h.to_ascii_lowercase()).map_err(|e| e.0)).collect::<Result<_, _>>()?;
        set_once(&mut lc.waf.inspect_headers, list)
    })
}

/// A relative path is relative to nginx's prefix, like nginx's own file directives.
fn conf_path(cf: &ngx_conf_t, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    // SAFETY: cf->cycle is valid during configuration.
    let prefix = unsafe { (*cf.cycle).prefix.to_string() };
    format!("{}{path}", prefix)
}

// --- request handling -------------------------------------------------------------------

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
    done: bool,
    pub status: Option<&'static str>,
    pub score: u32,
    pub rules: String,
}

/// Runs in the rewrite phase. `None` lets the request continue.
pub fn rewrite(r: &mut ngx_http_request_t) -> Option<ngx_int_t> {
    let lc = Shield::location_conf(r)?;
    let waf = &lc.waf;
    let engine = waf.engine.as_ref()?;
    let mode = waf.mode.unwrap_or(Mode::Off);
    let rp: *mut ngx_http_request_t = r;
    let ctx = RequestCtx::get(rp)?;
    if ctx.waf.done {
        return None;
    }
    if ctx.waf.body == BodyState::Reading {
        return Some(NGX_DONE as ngx_int_t);
    }
    let mcf = Shield::main_conf(r)?;
    let slots = mcf.waf.slots.as_ref()?;

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

    let body = if ctx.waf.body == BodyState::Ready { read_body(r, waf.limits().max_body) } else { Vec::new() };
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
        audit(r, waf, result, &verdict, None);
    }
    if result != "BLOCKED" {
        return None;
    }
    let log = unsafe { (*r.connection).log };
    ngx_log_error!(NGX_LOG_WARN, log, "shield: request blocked, score {} (threshold {}), rules {}", verdict.score, waf.threshold(), ctx.waf.rules);
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

/// The request body, in memory or in nginx's temp file, up to `max` bytes.
fn read_body(r: &ngx_http_request_t, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    // SAFETY: request_body and its chain belong to the live request.
    unsafe {
        let Some(rb) = r.request_body.as_ref() else { return out };
        let mut cl = rb.bufs;
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
    }
    out
}

fn libc_pread(fd: i32, buf: &mut [u8], offset: i64) -> usize {
    extern "C" {
        fn pread(fd: i32, buf: *mut c_void, count: usize, offset: i64) -> isize;
    }
    // SAFETY: buf is valid for its length; a failed read returns -1, treated as nothing read.
    let n = unsafe { pread(fd, buf.as_mut_ptr().cast(), buf.len(), offset) };
    n.max(0) as usize
}

fn client_ip(r: &ngx_http_request_t) -> Option<std::net::IpAddr> {
    // SAFETY: the connection's address text is set by nginx (and by the realip module when
    // it replaces the client address).
    let text = unsafe { (*r.connection).addr_text };
    text.to_str().ok()?.parse().ok()
}

fn hygiene(r: &ngx_http_request_t, waf: &WafLoc) -> Result<(), Hygiene> {
    let limits = waf.limits();
    let method = r.method_name.to_str().unwrap_or("");
    let allowed = waf.methods.as_ref().map_or_else(|| DEFAULT_METHODS.contains(&method), |m| m.iter().any(|x| x == method));
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
    if waf.scanners.unwrap_or(true) {
        if let Some(ua) = find_header(&r.headers_in.headers, b"user-agent") {
            // SAFETY: live request header element.
            if waf::scanner(unsafe { (*ua).value.as_bytes() }) {
                return Err(Hygiene::ScannerUserAgent);
            }
        }
    }
    if has_body(r) {
        if let Some(types) = &waf.content_types {
            let ct = find_header(&r.headers_in.headers, b"content-type").map(|h| unsafe { (*h).value.to_str().unwrap_or("") }).unwrap_or("");
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if !types.iter().any(|t| *t == mime) {
                return Err(Hygiene::ContentTypeNotAllowed);
            }
        }
    }
    Ok(())
}

fn inspect(r: &ngx_http_request_t, waf: &WafLoc, engine: &Engine, body: &[u8]) -> Verdict {
    let raw = r.unparsed_uri.as_bytes();
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, &raw[raw.len()..]),
    };
    let mut items: Vec<Item> = vec![Item::new(target::PATH, &b""[..], path)];
    extract::query(query, &mut items);
    let wanted = waf.inspect_headers.as_deref().unwrap_or_default();
    for h in headers(&r.headers_in.headers) {
        // SAFETY: live request header element, valid as long as the request.
        let (key, value) = unsafe { (&(*h).key, &(*h).value) };
        if is_header(h, b"cookie") {
            extract::cookies(value.as_bytes(), &mut items);
        } else if wanted.iter().any(|w| key.as_bytes().eq_ignore_ascii_case(w.as_bytes())) {
            items.push(Item::new(target::HEADERS, key.as_bytes(), value.as_bytes()));
        }
    }
    if !body.is_empty() {
        let ct = find_header(&r.headers_in.headers, b"content-type").map(|h| unsafe { (*h).value.as_bytes() }).unwrap_or(b"");
        extract::body(ct, body, &mut items);
    }
    engine.inspect(&items, &waf.exclusions, if waf.mode == Some(Mode::Detect) { u32::MAX } else { waf.threshold() })
}

fn reject_hygiene(r: &mut ngx_http_request_t, waf: &WafLoc, mode: Mode, h: Hygiene) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    let detect = mode == Mode::Detect;
    if let Some(ctx) = RequestCtx::get(rp) {
        ctx.waf.done = true;
        ctx.waf.status = Some(if detect { "DETECTED" } else { "BLOCKED" });
        ctx.waf.rules = h.code().to_string();
    }
    if let Some((mcf, slots)) = Shield::main_conf(r).and_then(|m| m.waf.slots.as_ref().map(|s| (m, s))) {
        mcf.add(if detect { slots.detected } else { slots.blocked }, 1);
    }
    audit(r, waf, if detect { "DETECTED" } else { "BLOCKED" }, &Verdict::default(), Some(h));
    if detect {
        return NGX_DECLINED as ngx_int_t;
    }
    let log = unsafe { (*r.connection).log };
    ngx_log_error!(NGX_LOG_WARN, log, "shield: request rejected: {}", h.code());
    block(r, h.status(waf.status.unwrap_or(403)))
}

/// The block response: a small JSON body with the request id, so a user can quote it.
fn block(r: &mut ngx_http_request_t, status: u16) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    // SAFETY: r is live; the body (if any) was not read yet, or was read already.
    unsafe { ngx_http_discard_request_body(rp) };
    let body = format!("{{\"error\":\"request blocked\",\"status\":{status},\"request_id\":\"{}\"}}\n", request_id(r));
    super::util::send_body(r, status as usize, "application/json", body.as_bytes())
}

fn request_id(r: &ngx_http_request_t) -> String {
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

// --- audit log ----------------------------------------------------------------------------

static mut AUDIT_FILES: Option<HashMap<String, std::fs::File>> = None;

/// One JSON line per request with a detection, appended to the location's audit log.
fn audit(r: &ngx_http_request_t, waf: &WafLoc, result: &str, verdict: &Verdict, hygiene: Option<Hygiene>) {
    let Some(Some(path)) = &waf.audit_log else { return };
    let log: *mut ngx_log_t = unsafe { (*r.connection).log };
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
        "score": verdict.score,
        "hygiene": hygiene.map(|h| h.code()),
        "rules": verdict.matches.iter().map(|m| serde_json::json!({
            "id": m.id, "family": m.family.tag(), "score": m.score, "target": m.target, "match": m.fragment,
        })).collect::<Vec<_>>(),
    });
    // SAFETY: workers are single-threaded.
    let files = unsafe { (*ptr::addr_of_mut!(AUDIT_FILES)).get_or_insert_with(HashMap::new) };
    let file = match files.get_mut(path.as_str()) {
        Some(f) => f,
        None => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => files.entry(path.clone()).or_insert(f),
            Err(e) => {
                ngx_log_error!(NGX_LOG_ERR, log, "shield: cannot open audit log \"{path}\": {e}");
                return;
            }
        },
    };
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    if let Err(e) = file.write_all(&bytes) {
        ngx_log_error!(NGX_LOG_ERR, log, "shield: audit log write failed: {e}");
    }
}

pub fn status_variable(r: *mut ngx_http_request_t) -> Option<&'static str> {
    RequestCtx::peek(r).and_then(|c| c.waf.status)
}

pub fn score_variable(r: *mut ngx_http_request_t) -> Option<String> {
    RequestCtx::peek(r).filter(|c| c.waf.status.is_some()).map(|c| c.waf.score.to_string())
}

pub fn rules_variable(r: *mut ngx_http_request_t) -> Option<String> {
    RequestCtx::peek(r).filter(|c| c.waf.status.is_some()).map(|c| c.waf.rules.clone())
}
