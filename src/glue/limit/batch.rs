//! The per-worker state: the Redis client, the batch of requests waiting for the next
//! LIMIT_SCRIPT call (one script call per turn of the event loop), and the cache of Redis
//! rejections that spares a rejected client's flood the round trips.

use core::ptr;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ngx::ffi::{ngx_event_t, ngx_http_request_t, ngx_post_event, ngx_posted_events, NGX_LOG_ERR};
use ngx::ngx_log_error;

use super::directives::is_redis;
use super::park::Waiter;
use super::zone::{now_us, Applied};
use crate::glue::redis::{self, RedisError};
use crate::glue::util::guard;
use crate::glue::MainConf;
use crate::limit::script::{self, BanKey, Batch, BatchError, LimitKey, RedisClock, Script};
use crate::limit::shm_table::{HashKey, KeyHash, Slot, Table};
use crate::limit::{Decision, Outcome};
use crate::redis::resp::Reply;
use crate::redis::throttle::Throttle;

// --- per worker ---------------------------------------------------------------------------

pub(super) struct Worker {
    /// Leaked once per worker: the client keeps references for the NOSCRIPT fallback.
    pub(super) script: &'static Script,
    pub(super) ban_script: &'static Script,
    /// "Rejected until" per (limit config, key): a flood from a rejected client costs no
    /// Redis round trips. Bounded: a fixed table, LRU per bucket.
    pub(super) cache: Vec<Slot>,
    /// The cache's hash key, random per worker.
    pub(super) cache_secret: HashKey,
    /// Requests waiting for the next LIMIT_SCRIPT call, and who gets each answer.
    pub(super) batch: Batch,
    pub(super) waiters: Vec<Rc<Waiter>>,
    /// Posted when the batch gets its first request: sends the batch once the event loop
    /// has handled everything that is ready now. (Holding batches back while one is out, to
    /// make them larger, measured slower: Redis idles while nginx waits.)
    pub(super) batch_ev: Box<ngx_event_t>,
    /// Reused for every response's rate-limit headers (copied to the request pool).
    pub(super) header_buf: Vec<u8>,
    /// Redis's clock as the script replies tell it: each batch carries its deadline in it, so
    /// a batch that reaches Redis too late is not applied. Shared with the reply callbacks.
    clock: Rc<Cell<RedisClock>>,
    /// Requests answered by `shield_limit_fail open` and `closed`: logged once, then counted.
    fail_logs: [Throttle; 2],
}

/// A batch this large goes out at once rather than at the end of the loop iteration.
const MAX_BATCH: usize = 256;

static mut WORKER: Option<Worker> = None;

pub(super) fn worker() -> Option<&'static mut Worker> {
    // SAFETY: nginx workers are single-threaded; WORKER is only touched from the event loop.
    unsafe { (*ptr::addr_of_mut!(WORKER)).as_mut() }
}

pub fn init_process() {
    // SAFETY: an all-zero event is nginx's initial state; the handler and log are set here,
    // the cycle's log outlives the worker's requests.
    let mut batch_ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    batch_ev.handler = Some(batch_handler);
    batch_ev.log = unsafe { (*ngx::ffi::ngx_cycle).log };
    // SAFETY: called once per worker before any request.
    unsafe {
        *ptr::addr_of_mut!(WORKER) = Some(Worker {
            script: Box::leak(Box::new(Script::new(script::LIMIT_SCRIPT))),
            ban_script: Box::leak(Box::new(Script::new(script::BAN_SCRIPT))),
            cache: vec![Slot::default(); 4096],
            cache_secret: random_key(),
            batch: Batch::default(),
            waiters: Vec::new(),
            batch_ev,
            header_buf: Vec::with_capacity(256),
            clock: Rc::default(),
            fail_logs: [Throttle::default(); 2],
        });
    }
}

extern "C" fn batch_handler(ev: *mut ngx_event_t) {
    // SAFETY: the event's log is the cycle's.
    guard(unsafe { (*ev).log }, "limit batch", (), || {
        if let Some(w) = worker() {
            send_batch(w);
        }
    })
}

/// Adds a request's Redis limits and bans to the worker's batch; the returned waiter gets
/// the answer. The batch goes out at the end of this turn of the event loop, or at once when
/// it is full.
pub(super) fn enqueue<'a>(
    w: &mut Worker,
    r: *mut ngx_http_request_t,
    limits: impl Iterator<Item = LimitKey<'a>> + Clone,
    bans: impl Iterator<Item = BanKey<'a>> + Clone,
) -> Rc<Waiter> {
    w.batch.push(limits, bans);
    let waiter = Rc::new(Waiter { request: Cell::new(r), reply: RefCell::new(None) });
    w.waiters.push(waiter.clone());
    if w.batch.len() >= MAX_BATCH {
        send_batch(w);
    } else if w.batch_ev.posted() == 0 {
        // SAFETY: the boxed event lives as long as the worker; posted events run on this
        // thread once the current event-loop iteration has handled its ready events.
        unsafe { ngx_post_event(&mut *w.batch_ev, ptr::addr_of_mut!(ngx_posted_events)) };
    }
    waiter
}

/// Sends the pending batch as one EVALSHA; the reply is split among the batch's requests.
fn send_batch(w: &mut Worker) {
    if w.batch.is_empty() {
        return;
    }
    let batch = core::mem::take(&mut w.batch);
    let waiters = core::mem::take(&mut w.waiters);
    let Some(client) = redis::client() else { return };
    // The client answers Timeout at this deadline; the script drops the batch after it.
    let deadline_ms = client_now_ms() + client.timeout_ms();
    let evalsha = batch.command(w.script, 0, w.clock.get().deadline_us(deadline_ms));
    let bound = batch.reply_bound();
    let clock = w.clock.clone();
    let callback = Box::new(move |reply: Result<Reply, RedisError>| {
        if let Some(redis_us) = reply.as_ref().ok().and_then(script::reply_time) {
            let mut c = clock.get();
            c.observe(redis_us, client_now_ms());
            clock.set(c);
        }
        let answers = reply.and_then(|r| {
            batch.decode(&r).map_err(|e| match e {
                // Its requests were answered by the fail policy; nothing was charged.
                BatchError::Late(_) => RedisError::Timeout,
                BatchError::Malformed(_) => {
                    // SAFETY: the cycle log is valid in a running worker.
                    ngx_log_error!(NGX_LOG_ERR, unsafe { (*ngx::ffi::ngx_cycle).log }, "shield: {e}");
                    RedisError::Protocol("unexpected script reply")
                }
            })
        });
        match answers {
            Ok(answers) => waiters.iter().zip(answers).for_each(|(w, a)| w.deliver(Ok(a))),
            Err(e) => waiters.iter().for_each(|w| w.deliver(Err(e.clone()))),
        }
    });
    if let Err((e, callback)) = client.send(&evalsha, bound, Some(w.script), callback) {
        callback(Err(e));
    }
}

/// The worker's monotonic clock in ms, the one the client's deadlines use.
fn client_now_ms() -> u64 {
    // SAFETY: nginx updates ngx_current_msec on the worker's only thread.
    unsafe { ngx::ffi::ngx_current_msec as u64 }
}

/// A request is answered by the fail policy (`closed` or open): `Some(n)` if it is to be
/// logged now, `n` having gone unlogged since the last such line (per worker; an outage under
/// load would otherwise log every request).
pub(super) fn failure_to_log(closed: bool) -> Option<u64> {
    worker().map_or(Some(0), |w| w.fail_logs[closed as usize].event(client_now_ms()))
}

/// A hash key from the OS; should it fail, a fixed key only costs the cache its resistance to
/// crafted collisions (a false match still needs a 128-bit collision).
fn random_key() -> HashKey {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    let (lo, hi) = b.split_at(8);
    HashKey([
        u64::from_le_bytes(lo.try_into().unwrap_or_default()),
        u64::from_le_bytes(hi.try_into().unwrap_or_default()),
    ])
}

pub(super) fn cached_rejection<'a>(
    w: &mut Worker,
    mcf: &MainConf,
    limits: impl Iterator<Item = &'a Applied> + Clone,
    now: u64,
) -> Option<Vec<Decision>> {
    let secret = w.cache_secret;
    let mut t = Table::new(&mut w.cache)?;
    let mut until = |a: &Applied| t.get(cache_key(&secret, mcf, a), now / 1000).map(|s| s[0]).filter(|&u| u > now);
    if !limits.clone().any(|a| until(a).is_some()) {
        return None;
    }
    let decisions = limits
        .map(|a| match until(a) {
            Some(u) => Decision { outcome: Outcome::Rejected, remaining: 0, reset_us: u - now, wait_us: u - now },
            None => Decision { outcome: Outcome::Passed, remaining: a.limit.quota(), reset_us: 0, wait_us: 0 },
        })
        .collect();
    Some(decisions)
}

fn cache_key(secret: &HashKey, mcf: &MainConf, a: &Applied) -> KeyHash {
    let z = &mcf.limits.zones[a.zone];
    secret.hash(&[&z.config_hash.to_le_bytes(), &a.limit.burst.to_le_bytes(), &a.limit.cost.to_le_bytes(), a.key])
}

pub(super) fn remember_rejections(mcf: &MainConf, limits: &[Applied], decisions: &[Decision]) {
    let Some(w) = worker() else { return };
    let secret = w.cache_secret;
    let Some(mut t) = Table::new(&mut w.cache) else { return };
    let now = now_us();
    for (a, d) in limits.iter().zip(decisions) {
        if d.outcome == Outcome::Rejected && is_redis(mcf, a.zone) && d.wait_us > 0 {
            t.put(cache_key(&secret, mcf, a), [now + d.wait_us, 0, 0], now / 1000, (now + d.wait_us) / 1000, 0);
        }
    }
}
