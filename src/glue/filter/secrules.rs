//! `shield_filter_secrules`: SecLang rule files (the OWASP Core Rule Set) run by the
//! `filter::seclang` engine in place of the built-in rule packs.
//!
//! - loading: the file list (globs expanded in name order, relative paths from nginx's
//!   configuration prefix, as `include` resolves them) is compiled once per configuration
//!   cycle and shared by every location that names the same files: the main configuration
//!   owns the sets; a location holds an `Rc`. A rule the engine cannot express fails
//!   `nginx -t` with the rule file's file:line and the rule id, unless listed in `remove=`;
//! - requests: the nginx request mapped onto `seclang::Request` (the body as the built-in
//!   filter reads it), phases 1 and 2 run, and the outcome becomes the filter's status,
//!   variables, counters, audit line and block response.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ngx::ffi::{ngx_conf_t, ngx_http_request_t, ngx_int_t, NGX_LOG_EMERG, NGX_LOG_NOTICE, NGX_LOG_WARN};
use ngx::http::HttpModuleMainConf;
use ngx::{ngx_conf_log_error, ngx_log_error};

use super::audit::audit_line;
use super::inspect::block;
use super::{Mode, WafLoc};
use crate::filter::seclang::actions::parse_id_ranges;
use crate::filter::seclang::eval::Outcome;
use crate::filter::seclang::{evaluate, files, LoadError, LoadErrorKind, Request, RuleSet};
use crate::glue::util::headers;
use crate::glue::{RequestCtx, Shield};
use crate::parse::ConfError;

/// Load errors printed one per line before `nginx -t` gives up; the rest are counted.
const MAX_REPORTED_ERRORS: usize = 20;

/// A compiled rule set and, per rule id, the counter of its file
/// (`shield_filter_secrules_matches_total{file="REQUEST-942-APPLICATION-ATTACK-SQLI.conf"}`).
pub struct SecRules {
    pub set: RuleSet,
    counters: HashMap<u32, usize>,
}

/// One set of the configuration cycle and what it was built from.
pub(super) struct Compiled {
    files: Vec<PathBuf>,
    removed: Vec<(u32, u32)>,
    rules: Rc<SecRules>,
}

/// The directive's arguments: rule files or globs, then optional `remove=ID[,ID|A-B...]`.
pub(super) fn load(cf: &mut ngx_conf_t, args: &[&str]) -> Result<Rc<SecRules>, ConfError> {
    let mut removed = Vec::new();
    let mut paths = Vec::new();
    // SAFETY: cf->cycle is valid while the configuration is read.
    let conf_prefix = unsafe { (*cf.cycle).conf_prefix.to_string() };
    for arg in args {
        if let Some(ids) = arg.strip_prefix("remove=") {
            removed.extend(
                parse_id_ranges(ids)
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| ConfError::InvalidParameter(arg.to_string()))?,
            );
            continue;
        }
        paths.extend(files::expand(&conf_prefix, arg)?);
    }
    if paths.is_empty() {
        return Err(ConfError::Other("no rule file given".into()));
    }
    let mcf = Shield::main_conf_mut(cf).ok_or("no main configuration")?;
    mcf.waf.register(&mut mcf.registry);
    if let Some(c) = mcf.waf.secrules.iter().find(|c| c.files == paths && c.removed == removed) {
        return Ok(c.rules.clone());
    }
    let mut set = crate::filter::seclang::load_files(&paths);
    set.remove_ids(&removed);
    if let Some((last, rest)) = set.errors.split_last() {
        for e in rest.iter().take(MAX_REPORTED_ERRORS - 1) {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{} in \"shield_filter_secrules\" directive", describe(e));
        }
        let more = set.errors.len().saturating_sub(MAX_REPORTED_ERRORS);
        return Err(ConfError::Other(if more > 0 {
            format!("{} (and {more} more load errors)", describe(last))
        } else {
            describe(last)
        }));
    }
    let mut counters = HashMap::new();
    for rule in set.rules() {
        let file = Path::new(&rule.links[0].origin.file).file_name().map(|f| f.to_string_lossy().into_owned());
        let slot = mcf.registry.counter(
            "shield_filter_secrules_matches_total",
            "Matches of logged SecLang rules (not nolog), by rule file.",
            &[("file", file.as_deref().unwrap_or(""))],
        );
        counters.insert(rule.id, slot);
    }
    let rules = Rc::new(SecRules { set, counters });
    mcf.waf.secrules.push(Compiled { files: paths.clone(), removed, rules: rules.clone() });
    // One line per compiled set (none when a location reuses one): what the set costs to
    // load is paid once per configuration, and operators can see it.
    ngx_conf_log_error!(
        NGX_LOG_NOTICE,
        cf,
        "shield_filter_secrules: compiled rule set {}: {} rules from {} files",
        mcf.waf.secrules.len(),
        rules.set.rule_count(),
        paths.len()
    );
    Ok(rules)
}

/// `rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf:571: rule 942130: <why>`.
fn describe(e: &LoadError) -> String {
    let what = match e.kind {
        LoadErrorKind::Syntax => "syntax error",
        LoadErrorKind::UnsupportedDirective => "unsupported directive",
        LoadErrorKind::UnsupportedVariable => "unsupported variable",
        LoadErrorKind::UnsupportedOperator => "unsupported operator",
        LoadErrorKind::UnsupportedRegex => "pattern the linear-time engine cannot run",
        LoadErrorKind::UnsupportedTransform => "unsupported transformation",
        LoadErrorKind::UnsupportedAction => "unsupported action",
        LoadErrorKind::InvalidValue => "invalid value",
    };
    let detail = e.detail.strip_prefix("error: ").unwrap_or(&e.detail);
    match e.rule_id {
        Some(id) => format!("{}: rule {id}: {what}: {detail}", e.origin),
        None => format!("{}: {what}: {detail}", e.origin),
    }
}

/// The request as SecLang rules see it. The URI is nginx's unparsed request target; bytes
/// that are not UTF-8 become U+FFFD (the rules' variables are text).
fn request(r: &ngx_http_request_t, body: &[u8]) -> Request {
    let text = |s: &ngx::ffi::ngx_str_t| String::from_utf8_lossy(s.as_bytes()).into_owned();
    let headers = headers(&r.headers_in.headers)
        // SAFETY: live request header elements; hash 0 marks a removed one.
        .filter(|&h| unsafe { (*h).hash != 0 })
        .map(|h| unsafe { (text(&(*h).key), (*h).value.as_bytes().to_vec()) })
        .collect();
    // SAFETY: the connection's address text is set by nginx for the request's life.
    let remote_addr = unsafe { text(&(*r.connection).addr_text) };
    Request {
        method: text(&r.method_name),
        uri: text(&r.unparsed_uri),
        protocol: text(&r.http_protocol),
        headers,
        body: body.to_vec(),
        remote_addr,
    }
}

/// The inbound score the CRS blocks on: v4's `tx.blocking_inbound_anomaly_score`, else
/// 3.x's `tx.anomaly_score`.
fn score(out: &Outcome) -> u32 {
    let key = if out.tx.contains_key("blocking_inbound_anomaly_score") {
        "blocking_inbound_anomaly_score"
    } else {
        "anomaly_score"
    };
    out.tx_number(key).clamp(0, u32::MAX as i64) as u32
}

/// Phases 1 and 2 of the rule set over the request and its body.
pub(super) fn run(r: &ngx_http_request_t, rules: &SecRules, body: &[u8]) -> Outcome {
    evaluate(&rules.set, &request(r, body))
}

/// Acts on the outcome: status, variables, counters, audit line, block. `None` lets the
/// request continue.
pub(super) fn decide(r: &mut ngx_http_request_t, waf: &WafLoc, rules: &SecRules, out: Outcome) -> Option<ngx_int_t> {
    let rp: *mut ngx_http_request_t = r;
    let mcf = Shield::main_conf(r)?;
    let slots = mcf.waf.slots()?;
    // Logged rules are the detections (and the verdict 949110); initialisation, paranoia
    // skips and score sums are `nolog`.
    let detections: Vec<_> = out.matched.iter().filter(|m| m.logged).collect();
    for m in &detections {
        if let Some(&slot) = rules.counters.get(&m.id) {
            mcf.add(slot, 1);
        }
    }
    let mut ids: Vec<u32> = detections.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let ids = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let enforced = out.block.as_ref().is_some_and(|b| b.enforced) && waf.mode() == Mode::Block;
    let result = match &out.block {
        Some(_) if enforced => "BLOCKED",
        Some(_) => "DETECTED",
        None if out.allowed => "ALLOWED",
        None => "PASSED",
    };
    let ctx = RequestCtx::get(rp)?;
    ctx.waf.done = true;
    ctx.waf.score = score(&out);
    ctx.waf.rules = ids;
    ctx.waf.status = Some(result);
    mcf.add(
        match result {
            "PASSED" => slots.passed,
            "DETECTED" => slots.detected,
            "ALLOWED" => slots.allowed,
            _ => slots.blocked,
        },
        1,
    );
    if !detections.is_empty() {
        let list = detections
            .iter()
            .map(|m| serde_json::json!({"id": m.id, "phase": m.phase as u8, "msg": m.msg}))
            .collect::<Vec<_>>();
        audit_line(r, waf.audit_log.flatten(), result, ctx.waf.score, None, list);
    }
    let block_rule = out.block.filter(|_| enforced)?;
    let log = unsafe { (*r.connection).log };
    ngx_log_error!(
        NGX_LOG_WARN,
        log,
        "shield: request blocked by SecLang rule {}, anomaly score {}, rules {}",
        block_rule.rule_id,
        ctx.waf.score,
        ctx.waf.rules
    );
    Some(block(r, waf.status.unwrap_or(block_rule.status)))
}
