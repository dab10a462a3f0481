//! One request through the limiter: the phase handler's state machine (start, wait for
//! Redis, delay, done; in preaccess, or in the rewrite phase before a `return`), `finish`
//! executing the core's plan for a verdict, the response's rate-limit headers, and the log
//! phase that counts responses for `shield_ban`.

use core::mem::size_of;
use core::ptr;
use std::rc::Rc;

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, ngx_uint_t, NGX_DECLINED, NGX_DONE, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_LOG_ERR,
    NGX_LOG_INFO, NGX_LOG_WARN,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_log_error;

use super::batch::{cached_rejection, enqueue, failure_to_log, remember_rejections, worker};
use super::directives::{is_redis, LimitLoc, Zone};
use super::park::{resume_after_delay, resume_after_redis, suspend, Waiter};
use super::zone::{decide_local, now_us, record_ban_local, Applied, AppliedBan};
use crate::glue::redis;
use crate::glue::redis::RedisError;
use crate::glue::{LocConf, MainConf, RequestCtx, Shield};
use crate::limit::headers::Rendered;
use crate::limit::outcome::{self, Action, Counter, HeadersFrom, LimitStatus, Log, OnFailure, Plan, Verdict};
use crate::limit::script::{self, BanKey, LimitKey, LimitReply};
use crate::limit::{Decision, Decisions, Limit, Outcome};
use crate::redis::resp::Bound;

#[derive(Default)]
pub(super) enum Phase {
    #[default]
    Start,
    Waiting(Rc<Waiter>, &'static [Applied], &'static [AppliedBan]),
    Delaying,
    Done,
}

/// Per-request limiter state, part of `RequestCtx`.
#[derive(Default)]
pub struct LimitCtx {
    pub(super) phase: Phase,
    pub status: Option<LimitStatus>,
    /// Strictest decision, for the response headers.
    pub(super) headers: Option<(usize, Limit, Decision)>,
}

impl Drop for LimitCtx {
    fn drop(&mut self) {
        if let Phase::Waiting(w, ..) = &self.phase {
            w.request.set(ptr::null_mut());
        }
    }
}

/// The limiter's phase handler: in preaccess, or in the rewrite phase of a location that
/// answers with `return` (see `rewrite`). A parked request answers NGX_DONE, which both
/// phase checkers take as "stop running phases, the request lives on" (the rewrite
/// checker finalizes on NGX_AGAIN); its wake-up runs the phases again from this handler.
pub fn preaccess(r: &mut ngx_http_request_t) -> ngx_int_t {
    let Some(lc) = Shield::location_conf(r).map(|lc| &lc.limit).filter(|l| l.active()) else {
        return NGX_DECLINED as ngx_int_t;
    };
    let Some(mcf) = Shield::main_conf(r) else { return NGX_DECLINED as ngx_int_t };
    let rp: *mut ngx_http_request_t = r;
    let Some(ctx) = RequestCtx::get(rp) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
    match core::mem::take(&mut ctx.limit.phase) {
        Phase::Done => {
            ctx.limit.phase = Phase::Done;
            NGX_DECLINED as ngx_int_t
        }
        Phase::Delaying => {
            ctx.limit.phase = Phase::Done;
            NGX_DECLINED as ngx_int_t
        }
        Phase::Waiting(waiter, limits, bans) => {
            let Some(reply) = waiter.reply.borrow_mut().take() else {
                ctx.limit.phase = Phase::Waiting(waiter, limits, bans);
                return NGX_DONE as ngx_int_t;
            };
            // Answered, or timed out: a late answer must not wake this request again.
            waiter.request.set(ptr::null_mut());
            let verdict = match reply {
                Ok(LimitReply::Banned(ms)) => {
                    let zone = bans.iter().find(|b| is_redis(mcf, b.zone)).map_or(0, |b| b.zone);
                    Ok(Verdict::Banned(zone, ms * 1000))
                }
                Ok(LimitReply::Decisions(d)) => Ok(merge_local(mcf, limits, bans, d)),
                Err(e) => Err(e),
            };
            // A request split among cluster slots may be rejected by a limit whose state holds
            // charges about to be refunded: such a rejection is not remembered.
            let remember = !waiter.split.get();
            finish_with(r, lc, mcf, limits, bans, verdict, remember)
        }
        Phase::Start => start(r, lc, mcf),
    }
}

/// Redis decided its limits; now the local ones (checked before, committed now) join in.
fn merge_local(mcf: &MainConf, limits: &[Applied], bans: &[AppliedBan], redis: Decisions) -> Verdict {
    // Nothing local: Redis decided everything.
    let Some((local, local_bans)) = local_parts(mcf, limits, bans) else { return Verdict::Decisions(redis) };
    let admitted = redis.iter().all(|d| d.outcome != Outcome::Rejected);
    let local_verdict = decide_local(mcf, &local, &local_bans, admitted);
    // Decisions back in the order of `limits`.
    let local_decisions = match local_verdict {
        Some(Verdict::Decisions(d)) => d,
        Some(banned @ Verdict::Banned(..)) => return banned,
        None => Decisions::from(Vec::new()),
    };
    let (mut r, mut l) = (redis.iter().copied(), local_decisions.iter().copied());
    let all = limits.iter().filter_map(|a| if is_redis(mcf, a.zone) { r.next() } else { l.next() }).collect();
    Verdict::Decisions(Decisions::Many(all))
}

/// The limits and bans of a request that the local backend decides; None when Redis decides
/// them all.
fn local_parts(mcf: &MainConf, limits: &[Applied], bans: &[AppliedBan]) -> Option<(Vec<Applied>, Vec<AppliedBan>)> {
    if limits.iter().all(|a| is_redis(mcf, a.zone)) && bans.iter().all(|b| is_redis(mcf, b.zone)) {
        return None;
    }
    let local = limits.iter().filter(|a| !is_redis(mcf, a.zone)).copied().collect();
    let local_bans = bans.iter().filter(|b| !is_redis(mcf, b.zone)).copied().collect();
    Some((local, local_bans))
}

/// Collects at most `max` items into the request pool: freed with the request, no malloc on
/// the hot path.
fn pool_collect<T: Copy>(
    pool: *mut ngx::ffi::ngx_pool_t,
    max: usize,
    items: impl Iterator<Item = T>,
) -> Option<&'static [T]> {
    if max == 0 {
        return Some(&[]);
    }
    // SAFETY: pool allocations are aligned for pointers and u64, which is all T holds
    // (asserted); the memory lives as long as the request, and only written items are read.
    unsafe {
        assert!(core::mem::align_of::<T>() <= core::mem::align_of::<u64>());
        let data = ngx::ffi::ngx_palloc(pool, max * size_of::<T>()).cast::<T>();
        if data.is_null() {
            return None;
        }
        let mut n = 0;
        for item in items.take(max) {
            data.add(n).write(item);
            n += 1;
        }
        Some(core::slice::from_raw_parts(data, n))
    }
}

/// The zone's key for this request; it lives in the request pool, hence `'static` here:
/// it must not be kept beyond the request (the limiter's state never is).
fn eval_key(zone: &Zone, r: *mut ngx_http_request_t) -> Option<&'static [u8]> {
    if let Some(index) = zone.key_var {
        // SAFETY: the index was obtained at configuration time; nginx caches the value in
        // the request and its data lives at least as long as the request.
        let v = unsafe { ngx::ffi::ngx_http_get_indexed_variable(r, index).as_ref()? };
        if v.not_found() != 0 || v.len() == 0 {
            return None;
        }
        // SAFETY: as above.
        return Some(unsafe { core::slice::from_raw_parts(v.data, v.len() as usize) });
    }
    let v = zone.key.eval(r)?;
    // SAFETY: the value was allocated from (or points into) the request's memory.
    (!v.is_empty()).then(|| unsafe { core::slice::from_raw_parts(v.data, v.len) })
}

fn start(r: &mut ngx_http_request_t, lc: &LimitLoc, mcf: &'static MainConf) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    let zones = &mcf.limits.zones;
    let pool = r.pool;
    let (limit_refs, ban_refs) = (lc.limits.as_deref().unwrap_or_default(), lc.bans.as_deref().unwrap_or_default());
    let Some(limits) = pool_collect(
        pool,
        limit_refs.len(),
        limit_refs.iter().filter_map(|l| {
            let z = &zones[l.zone];
            let key = eval_key(z, rp)?; // an empty key is not limited, like limit_req
            Some(Applied { zone: l.zone, limit: l.limit, key })
        }),
    ) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(bans) = pool_collect(
        pool,
        ban_refs.len(),
        ban_refs.iter().filter_map(|b| Some(AppliedBan { zone: b.zone, key: eval_key(&zones[b.zone], rp)? })),
    ) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    if limits.is_empty() && bans.is_empty() {
        return NGX_DECLINED as ngx_int_t;
    }
    let redis_limits = || limits.iter().filter(|a| is_redis(mcf, a.zone));
    let redis_bans = || bans.iter().filter(|b| is_redis(mcf, b.zone));
    if redis_limits().next().is_none() && redis_bans().next().is_none() {
        let verdict = decide_local(mcf, limits, bans, true).ok_or(RedisError::Down);
        return finish(r, lc, mcf, limits, bans, verdict);
    }
    // Local limits first, without committing: a local rejection saves the round trip.
    if let Some((local, local_bans)) = local_parts(mcf, limits, bans) {
        if let Some(v) = decide_local(mcf, &local, &local_bans, false) {
            let rejected = match &v {
                Verdict::Banned(..) => true,
                Verdict::Decisions(d) => d.iter().any(|d| d.outcome == Outcome::Rejected),
            };
            if rejected {
                return finish(r, lc, mcf, &local, &local_bans, Ok(v));
            }
        }
    }
    let Some(w) = worker() else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
    let now = now_us();
    if let Some(cached) = cached_rejection(w, mcf, redis_limits(), now) {
        if let Some(slot) = mcf.limits.cache_hits {
            mcf.add(slot, 1);
        }
        // Decisions for the Redis limits only; the local ones were not committed.
        let decided: Vec<Applied> = redis_limits().cloned().collect();
        return finish(r, lc, mcf, &decided, &[], Ok(Verdict::Decisions(Decisions::Many(cached))));
    }
    if !redis::client().is_some_and(|c| c.available()) {
        return finish(r, lc, mcf, limits, bans, Err(RedisError::Down));
    }
    let waiter = enqueue(
        w,
        rp,
        redis_limits().map(|a| LimitKey { zone: &zones[a.zone].name, key: a.key, limit: a.limit }),
        redis_bans().map(|b| BanKey { zone: &zones[b.zone].name, key: b.key }),
    );
    let timeout = mcf.redis.timeout_ms().unwrap_or(50);
    let Some(ctx) = RequestCtx::get(rp) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
    ctx.limit.phase = Phase::Waiting(waiter, limits, bans);
    suspend(r, timeout + 10, resume_after_redis);
    NGX_DONE as ngx_int_t
}

/// Applies a verdict (or a Redis failure under the fail policy) to the request: the core
/// plans (`outcome::plan`), this executes: counters, the log line, headers, the answer.
fn finish(
    r: &mut ngx_http_request_t,
    lc: &LimitLoc,
    mcf: &'static MainConf,
    limits: &[Applied],
    bans: &[AppliedBan],
    verdict: Result<Verdict, RedisError>,
) -> ngx_int_t {
    finish_with(r, lc, mcf, limits, bans, verdict, true)
}

/// `finish`; `remember`: Redis rejections go to the worker's rejection cache.
fn finish_with(
    r: &mut ngx_http_request_t,
    lc: &LimitLoc,
    mcf: &'static MainConf,
    limits: &[Applied],
    bans: &[AppliedBan],
    verdict: Result<Verdict, RedisError>,
    remember: bool,
) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    let policy = lc.policy();
    let zones = &mcf.limits.zones;
    let (verdict, plan) = match verdict {
        Ok(v) => {
            let plan = outcome::plan(&v, &policy);
            (v, plan)
        }
        Err(err) => {
            for a in limits {
                mcf.add(zones[a.zone].slots.error, 1);
            }
            match outcome::on_failure(lc.fail.unwrap_or_default()) {
                OnFailure::DecideLocally => match decide_local(mcf, limits, bans, true) {
                    Some(v) => {
                        let plan = outcome::plan(&v, &policy);
                        (v, plan)
                    }
                    None => return record_status(rp, outcome::UNDECIDED.status, NGX_DECLINED as ngx_int_t),
                },
                OnFailure::Answer(plan) => {
                    log_line(r, lc, mcf, limits, &plan, Some(&err));
                    return execute(r, &plan, rp);
                }
            }
        }
    };
    match &verdict {
        Verdict::Banned(zone, left_us) => {
            mcf.add(zones[*zone].slots.banned, 1);
            if plan.headers.is_some() {
                let (limit, d) = outcome::ban_headers(zones[*zone].rate, *left_us);
                if let Some(ctx) = RequestCtx::get(rp) {
                    ctx.limit.headers = Some((*zone, limit, d));
                }
            }
        }
        Verdict::Decisions(decisions) => {
            if remember && decisions.iter().any(|d| d.outcome == Outcome::Rejected) {
                remember_rejections(mcf, limits, decisions);
            }
            for (a, d) in limits.iter().zip(decisions.iter()) {
                let s = &zones[a.zone].slots;
                let slot = match Counter::of(d.outcome, policy.dry_run) {
                    Counter::Passed => s.passed,
                    Counter::Delayed => s.delayed,
                    Counter::Rejected => s.rejected,
                    Counter::DryRunRejected => s.dry_run,
                };
                mcf.add(slot, 1);
            }
            if let Some(HeadersFrom::Decision(i)) = plan.headers {
                if let Some(ctx) = RequestCtx::get(rp) {
                    ctx.limit.headers = Some((limits[i].zone, limits[i].limit, decisions[i]));
                }
            }
        }
    }
    log_line(r, lc, mcf, limits, &plan, None);
    execute(r, &plan, rp)
}

/// The plan's answer: on to the next handler, an answer, or parked for the delay.
fn execute(r: &mut ngx_http_request_t, plan: &Plan, rp: *mut ngx_http_request_t) -> ngx_int_t {
    match plan.action {
        Action::Continue => record_status(rp, plan.status, NGX_DECLINED as ngx_int_t),
        Action::Respond(status) => record_status(rp, plan.status, status as ngx_int_t),
        Action::Delay { ms } => {
            record_status(rp, plan.status, NGX_DECLINED as ngx_int_t);
            if let Some(ctx) = RequestCtx::get(rp) {
                ctx.limit.phase = Phase::Delaying;
            }
            suspend(r, ms as _, resume_after_delay);
            NGX_DONE as ngx_int_t
        }
    }
}

/// The plan's error-log line, if any (failures throttled per worker).
fn log_line(
    r: &ngx_http_request_t,
    lc: &LimitLoc,
    mcf: &MainConf,
    limits: &[Applied],
    plan: &Plan,
    err: Option<&RedisError>,
) {
    // SAFETY: the connection is live while its request is.
    let log = unsafe { (*r.connection).log };
    let zones = &mcf.limits.zones;
    let level = lc.log_level.unwrap_or(NGX_LOG_ERR as ngx_uint_t);
    let err = err.map(ToString::to_string).unwrap_or_default();
    match plan.log {
        None => {}
        Some(Log::Banned { zone, secs }) => {
            ngx_log_error!(level, log, "shield: banned by zone \"{}\" for {secs} more s", zones[zone].name);
        }
        Some(Log::Rejected { decision, dry_run, wait_ms }) => {
            ngx_log_error!(
                level,
                log,
                "shield: limiting requests{}, excess: retry in {wait_ms} ms by zone \"{}\"",
                if dry_run { ", dry run" } else { "" },
                zones[limits[decision].zone].name
            );
        }
        Some(Log::Delayed { decision, wait_ms }) => {
            ngx_log_error!(
                (level + 1).min(NGX_LOG_INFO as ngx_uint_t),
                log,
                "shield: delaying request, {wait_ms} ms by zone \"{}\"",
                zones[limits[decision].zone].name
            );
        }
        Some(Log::FailedOpen) => {
            if let Some(unlogged) = failure_to_log(false) {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "shield: rate limit skipped, redis {err} (shield_limit_fail open){}",
                    unlogged_note(unlogged)
                );
            }
        }
        Some(Log::FailedClosed) => {
            if let Some(unlogged) = failure_to_log(true) {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "shield: request refused, redis {err} (shield_limit_fail closed){}",
                    unlogged_note(unlogged)
                );
            }
        }
    }
}

/// The count a throttled line carries (see `failure_to_log`).
fn unlogged_note(unlogged: u64) -> String {
    if unlogged == 0 {
        String::new()
    } else {
        format!(", and {unlogged} more since the last such line")
    }
}

fn record_status(r: *mut ngx_http_request_t, status: LimitStatus, rc: ngx_int_t) -> ngx_int_t {
    if let Some(ctx) = RequestCtx::get(r) {
        ctx.limit.status = Some(status);
        if !matches!(ctx.limit.phase, Phase::Delaying) {
            ctx.limit.phase = Phase::Done;
        }
    }
    rc
}

/// Rate-limit response headers, for the header filter; hand the result back with
/// [`recycle`] so the next request reuses its buffer.
pub fn response_headers(r: *mut ngx_http_request_t, lc: &LocConf, mcf: &MainConf) -> Option<Rendered> {
    let (zone, limit, d) = RequestCtx::peek(r).and_then(|c| c.limit.headers)?;
    let set = lc.limit.headers.unwrap_or_default().header_set();
    let buf = worker().map(|w| core::mem::take(&mut w.header_buf)).unwrap_or_default();
    Some(set.render_into(&mcf.limits.zones[zone].name, &limit, &d, buf))
}

pub fn recycle(rendered: Rendered) {
    if let Some(w) = worker() {
        w.header_buf = rendered.buf;
    }
}

pub fn has_headers(r: *mut ngx_http_request_t) -> bool {
    RequestCtx::peek(r).is_some_and(|c| c.limit.headers.is_some())
}

/// Log phase: count this response for every `shield_ban` whose statuses match.
pub fn log_phase(r: &mut ngx_http_request_t) {
    let Some(bans) = Shield::location_conf(r).and_then(|lc| lc.limit.bans.as_ref()) else { return };
    let Some(mcf) = Shield::main_conf(r) else { return };
    let status = r.headers_out.status as u16;
    let rp: *mut ngx_http_request_t = r;
    for b in bans.iter().filter(|b| b.statuses.contains(&status)) {
        let zone = &mcf.limits.zones[b.zone];
        let Some(key) = eval_key(zone, rp) else { continue };
        if is_redis(mcf, b.zone) {
            if let Some(w) = worker() {
                let keys = [script::redis_key(&zone.name, key, ":fails"), script::redis_key(&zone.name, key, ":ban")];
                let args = [
                    b.ban.threshold.to_string(),
                    (b.ban.window_us / 1000).max(1).to_string(),
                    (b.ban.ban_us / 1000).max(1).to_string(),
                ];
                let evalsha = w.ban_script.evalsha(&keys, &args);
                // Fire and forget: the response is already on its way; the callback holds
                // nothing of the request.
                let sent = redis::client()
                    .map(|c| c.send(&keys[1], &evalsha, Bound::SIMPLE, Some(w.ban_script), Box::new(|_| {})).is_ok());
                if sent == Some(true) {
                    continue;
                }
            }
        }
        record_ban_local(mcf, b.zone, &b.ban, key);
    }
}

pub fn status_variable(r: *mut ngx_http_request_t) -> Option<&'static str> {
    RequestCtx::peek(r).and_then(|c| c.limit.status).map(LimitStatus::as_str)
}
