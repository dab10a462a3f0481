//! The per-worker state: the Redis client, the batch of requests waiting for the next
//! LIMIT_SCRIPT call (one script call per turn of the event loop; on a Redis Cluster one per
//! slot, a request whose keys span slots split among them, see `limit/cluster.rs`), and the
//! cache of Redis rejections that spares a rejected client's flood the round trips.

use core::ptr;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ngx::ffi::{ngx_event_t, ngx_http_request_t, ngx_post_event, ngx_posted_events, NGX_LOG_ERR};
use ngx::ngx_log_error;

use super::directives::is_redis;
use super::park::Waiter;
use super::zone::{now_us, Applied};
use crate::glue::redis::{self, RedisError};
use crate::glue::util::{guard, later};
use crate::glue::MainConf;
use crate::limit::cluster::{self, Part, PartAnswer};
use crate::limit::script::{self, BanKey, Batch, BatchError, LimitKey, LimitReply, RedisClock, Script};
use crate::limit::shm_table::{HashKey, KeyHash, Slot, Table};
use crate::limit::{Decision, Limit, Outcome};
use crate::redis::resp::{Bound, Reply};
use crate::redis::throttle::Throttle;

// --- per worker ---------------------------------------------------------------------------

pub(super) struct Worker {
    /// Leaked once per worker: the client keeps references for the NOSCRIPT fallback.
    pub(super) script: &'static Script,
    pub(super) ban_script: &'static Script,
    refund_script: &'static Script,
    /// "Rejected until" per (limit config, key): a flood from a rejected client costs no
    /// Redis round trips. Bounded: a fixed table, LRU per bucket.
    pub(super) cache: Vec<Slot>,
    /// The cache's hash key, random per worker.
    pub(super) cache_secret: HashKey,
    /// Requests waiting for the next LIMIT_SCRIPT call, one batch per Redis Cluster slot (one
    /// batch with a single Redis), each with who gets each answer; `by_slot` finds a slot's.
    batches: Vec<SlotBatch>,
    by_slot: HashMap<u16, usize>,
    /// Requests in `batches`.
    queued: usize,
    /// Posted when the batch gets its first request: sends the batch once the event loop
    /// has handled everything that is ready now. (Holding batches back while one is out, to
    /// make them larger, measured slower: Redis idles while nginx waits.)
    pub(super) batch_ev: Box<ngx_event_t>,
    /// Reused for every response's rate-limit headers (copied to the request pool).
    pub(super) header_buf: Vec<u8>,
    /// Redis's clock as the script replies tell it (per cluster node): each batch carries its
    /// deadline in it, so a batch that reaches Redis too late is not applied. Shared with the
    /// reply callbacks.
    clocks: Rc<RefCell<Vec<RedisClock>>>,
    /// Requests answered by `shield_limit_fail open` and `closed`: logged once, then counted.
    fail_logs: [Throttle; 2],
}

/// A batch this large goes out at once rather than at the end of the loop iteration.
const MAX_BATCH: usize = 256;

/// One slot's batch and who gets each of its answers.
struct SlotBatch {
    slot: u16,
    batch: Batch,
    sinks: Vec<Sink>,
}

/// Who gets one answer of a batch: a whole request, or one part of a request split among
/// slots.
enum Sink {
    Whole(Rc<Waiter>),
    Part(Rc<Joint>, usize),
}

/// A request split among slots, waiting for all its parts.
struct Joint {
    waiter: Rc<Waiter>,
    parts: Vec<Part>,
    /// The request's limits (zone, key, parameters), for refunds.
    limits: Vec<(String, Vec<u8>, Limit)>,
    answers: RefCell<Vec<Option<Result<PartAnswer, RedisError>>>>,
}

impl Joint {
    fn deliver(&self, part: usize, answer: Result<PartAnswer, RedisError>) {
        let mut answers = self.answers.borrow_mut();
        answers[part] = Some(answer);
        if answers.iter().any(Option::is_none) {
            return;
        }
        let mut got = Vec::with_capacity(answers.len());
        for a in answers.drain(..).flatten() {
            match a {
                Ok(a) => got.push(a),
                // Under the fail policy; what other slots charged stays charged.
                Err(e) => return self.waiter.deliver(Err(e)),
            }
        }
        let combined = cluster::combine(&self.parts, &got, self.limits.len());
        if let Some(w) = worker() {
            for &i in &combined.refund {
                let part = &self.parts[i];
                let (keys, args) = cluster::refund_args(part.limits.iter().zip(&got[i].after).map(|(&l, after)| {
                    let (zone, key, limit) = &self.limits[l];
                    cluster::Refund { zone, key, limit: *limit, after: *after }
                }));
                let (slot, script) = (part.slot, w.refund_script);
                let evalsha = script.evalsha(&keys, &args);
                // Sent after this reply's callback, never from inside it.
                later(Box::new(move || {
                    if let Some(c) = redis::client() {
                        let _ = c.send_to_slot(slot, &evalsha, Bound::SIMPLE, Some(script), Box::new(|_| {}));
                    }
                }));
            }
        }
        self.waiter.deliver(Ok(combined.reply));
    }
}

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
            refund_script: Box::leak(Box::new(Script::new(cluster::REFUND_SCRIPT))),
            cache: vec![Slot::default(); 4096],
            cache_secret: random_key(),
            batches: Vec::new(),
            by_slot: HashMap::new(),
            queued: 0,
            batch_ev,
            header_buf: Vec::with_capacity(256),
            clocks: Rc::default(),
            fail_logs: [Throttle::default(); 2],
        });
    }
}

extern "C" fn batch_handler(ev: *mut ngx_event_t) {
    // SAFETY: the event's log is the cycle's.
    guard(unsafe { (*ev).log }, "limit batch", (), || {
        if let Some(w) = worker() {
            send_batches(w);
        }
    })
}

/// Adds a request's Redis limits and bans to the worker's batch (on a cluster: its slot's
/// batch, or, split, to several); the returned waiter gets the answer. The batches go out at
/// the end of this turn of the event loop, or at once when they are full.
pub(super) fn enqueue<'a>(
    w: &mut Worker,
    r: *mut ngx_http_request_t,
    limits: impl Iterator<Item = LimitKey<'a>> + Clone,
    bans: impl Iterator<Item = BanKey<'a>> + Clone,
) -> Rc<Waiter> {
    let waiter =
        Rc::new(Waiter { request: core::cell::Cell::new(r), reply: RefCell::new(None), split: Default::default() });
    if !redis::client().is_some_and(|c| c.is_cluster()) {
        push(w, 0, limits, bans, Sink::Whole(waiter.clone()));
    } else {
        let limit_slots: Vec<u16> = limits.clone().map(|l| script::key_slot(l.key)).collect();
        let ban_slots: Vec<u16> = bans.clone().map(|b| script::key_slot(b.key)).collect();
        match cluster::split(&limit_slots, &ban_slots) {
            None => {
                let slot = limit_slots.first().or(ban_slots.first()).copied().unwrap_or(0);
                push(w, slot, limits, bans, Sink::Whole(waiter.clone()));
            }
            Some(parts) => {
                waiter.split.set(true);
                let (limits, bans): (Vec<LimitKey>, Vec<BanKey>) = (limits.collect(), bans.collect());
                let joint = Rc::new(Joint {
                    waiter: waiter.clone(),
                    parts: parts.clone(),
                    limits: limits.iter().map(|l| (l.zone.to_string(), l.key.to_vec(), l.limit)).collect(),
                    answers: RefCell::new(vec![None; parts.len()]),
                });
                for (i, p) in parts.iter().enumerate() {
                    let part_limits = p.limits.iter().map(|&j| limits[j]);
                    let part_bans = p.bans.iter().map(|&j| bans[j]);
                    push(w, p.slot, part_limits, part_bans, Sink::Part(joint.clone(), i));
                }
            }
        }
    }
    w.queued += 1;
    if w.queued >= MAX_BATCH {
        send_batches(w);
    } else {
        post_batch(w);
    }
    waiter
}

fn push<'a>(
    w: &mut Worker,
    slot: u16,
    limits: impl Iterator<Item = LimitKey<'a>> + Clone,
    bans: impl Iterator<Item = BanKey<'a>> + Clone,
    sink: Sink,
) {
    let i = match w.by_slot.get(&slot) {
        Some(&i) => i,
        None => {
            w.batches.push(SlotBatch { slot, batch: Batch::default(), sinks: Vec::new() });
            w.by_slot.insert(slot, w.batches.len() - 1);
            w.batches.len() - 1
        }
    };
    w.batches[i].batch.push(limits, bans);
    w.batches[i].sinks.push(sink);
}

fn post_batch(w: &mut Worker) {
    if w.batch_ev.posted() == 0 {
        // SAFETY: the boxed event lives as long as the worker; posted events run on this
        // thread once the current event-loop iteration has handled its ready events.
        unsafe { ngx_post_event(&mut *w.batch_ev, ptr::addr_of_mut!(ngx_posted_events)) };
    }
}

/// Sends every pending batch as one EVALSHA each (pipelined, per node on a cluster); each
/// reply is split among its batch's requests.
fn send_batches(w: &mut Worker) {
    let batches = core::mem::take(&mut w.batches);
    w.by_slot.clear();
    w.queued = 0;
    let Some(client) = redis::client() else { return };
    for b in batches {
        send_batch(w, client, b);
    }
}

fn send_batch(w: &Worker, client: &mut redis::Redis, b: SlotBatch) {
    let SlotBatch { slot, batch, sinks } = b;
    let node = client.node_of_slot(slot);
    // The client answers Timeout at this deadline; the script drops the batch after it.
    let deadline_ms = client_now_ms() + client.timeout_ms();
    let deadline_us = w.clocks.borrow().get(node).map_or(0, |c| c.deadline_us(deadline_ms));
    let evalsha = batch.command(w.script, 0, deadline_us);
    let bound = batch.reply_bound();
    let clocks = w.clocks.clone();
    let split = sinks.iter().any(|s| matches!(s, Sink::Part(..)));
    let callback = Box::new(move |reply: Result<Reply, RedisError>| {
        if let Some(redis_us) = reply.as_ref().ok().and_then(script::reply_time) {
            let mut clocks = clocks.borrow_mut();
            if node < crate::redis::cluster::MAX_NODES {
                if clocks.len() <= node {
                    clocks.resize(node + 1, RedisClock::default());
                }
                clocks[node].observe(redis_us, client_now_ms());
            }
        }
        let checked = |e: BatchError| match e {
            // Its requests were answered by the fail policy; nothing was charged.
            BatchError::Late(_) => RedisError::Timeout,
            BatchError::Malformed(_) => {
                // SAFETY: the cycle log is valid in a running worker.
                ngx_log_error!(NGX_LOG_ERR, unsafe { (*ngx::ffi::ngx_cycle).log }, "shield: {e}");
                RedisError::Protocol("unexpected script reply")
            }
        };
        if !split {
            match reply.and_then(|r| batch.decode(&r).map_err(checked)) {
                Ok(answers) => sinks.iter().zip(answers).for_each(|(s, a)| deliver(s, Ok((a, 0, Vec::new())))),
                Err(e) => sinks.iter().for_each(|s| deliver(s, Err(e.clone()))),
            }
            return;
        }
        match reply.and_then(|r| batch.decode_detailed(&r).map_err(checked)) {
            Ok((now, answers)) => sinks.iter().zip(answers).for_each(|(s, (a, after))| deliver(s, Ok((a, now, after)))),
            Err(e) => sinks.iter().for_each(|s| deliver(s, Err(e.clone()))),
        }
    });
    if let Err((e, callback)) = client.send_to_slot(slot, &evalsha, bound, Some(w.script), callback) {
        callback(Err(e));
    }
}

fn deliver(sink: &Sink, answer: Result<(LimitReply, u64, Vec<crate::limit::State>), RedisError>) {
    match sink {
        Sink::Whole(w) => w.deliver(answer.map(|(reply, ..)| reply)),
        Sink::Part(joint, i) => joint.deliver(*i, answer.map(|(reply, now, after)| PartAnswer { reply, now, after })),
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
