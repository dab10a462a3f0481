//! Rate limiting and the penalty box, on nginx's side.
//!
//! - `shield_limit_zone` declares a zone: key, rate, algorithm, backend, and a shared-memory
//!   table (always allocated: it is the local backend, and the fallback when Redis fails).
//! - The preaccess handler evaluates the request's limits. Local zones are decided at once
//!   under the zone locks. Redis zones join the worker's current batch: every request that
//!   reaches the limiter in one turn of the event loop goes to Redis in one script call
//!   (`script::Batch`), sent by a posted event through the worker's pipelined
//!   connection while each request waits on a non-cancelable timer (so a graceful reload or
//!   quit waits for it, and it never waits longer than the timeout).
//! - The log phase counts responses for `shield_ban`, without delaying the response.

use core::ffi::{c_char, c_void};
use core::mem::size_of;
use core::ptr;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ngx::ffi::{
    ngx_conf_t, ngx_event_t, ngx_http_block_reading, ngx_http_core_run_phases, ngx_http_request_t,
    ngx_http_test_reading, ngx_int_t, ngx_post_event, ngx_posted_events, ngx_shared_memory_add,
    ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_calloc, ngx_slab_pool_t,
    ngx_uint_t, NGX_AGAIN, NGX_DECLINED, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE,
    NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use ngx::ngx_log_error;

use super::redis::{Client, RedisError, Target};
use super::MainConf;
use super::util::{guard, set_once, ComplexValue};
use super::{RequestCtx, Shield};
use crate::status::metrics::{Histogram, Registry};
use crate::parse::ConfError;
use crate::parse::{self, Rate};
use crate::limit::{self as rate, Algorithm, Ban, Decision, Decisions, HeaderSet, Limit, Outcome, Rendered, State};
use crate::limit::script::{self, BanKey, Batch, LimitKey, LimitReply, Script};
use crate::redis::resp::Reply;
use crate::limit::shm_table::{KeyHash, Slot, Table};

// --- configuration ------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Redis,
    Local,
}

struct ZoneSlots {
    passed: usize,
    delayed: usize,
    rejected: usize,
    dry_run: usize,
    error: usize,
    banned: usize,
}

pub struct Zone {
    pub name: String,
    key: ComplexValue,
    /// The key's variable index when the key is exactly one variable (`$binary_remote_addr`):
    /// read directly, without running the complex-value script or copying.
    key_var: Option<ngx_uint_t>,
    key_source: String,
    rate: Rate,
    algorithm: Algorithm,
    backend: Backend,
    config_hash: u64,
    shm: *mut ZoneShm,
    pool: *mut ngx_slab_pool_t,
    slots: ZoneSlots,
}

/// Header of a zone's shared memory; the table's slots follow it.
#[repr(C)]
struct ZoneShm {
    key_hash: u64,
    slots: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FailPolicy {
    Open,
    Closed,
    Local,
}

#[derive(Default)]
pub struct LimitMain {
    pub zones: Vec<Box<Zone>>,
    pub redis: Option<Target>,
    redis_slots: Option<RedisSlots>,
}

struct RedisSlots {
    latency: Histogram,
    errors: usize,
    cache_hits: usize,
}

#[derive(Clone, Copy)]
struct LimitRef {
    zone: usize,
    burst: u64,
    delay: u64,
    cost: u64,
}

#[derive(Clone)]
struct BanRef {
    zone: usize,
    statuses: Vec<u16>,
    ban: Ban,
}

#[derive(Default)]
pub struct LimitLoc {
    limits: Option<Vec<LimitRef>>,
    bans: Option<Vec<BanRef>>,
    status: Option<u16>,
    dry_run: Option<bool>,
    log_level: Option<ngx_uint_t>,
    fail: Option<FailPolicy>,
    headers: Option<(bool, bool)>,
}

impl LimitLoc {
    pub fn merge(&mut self, prev: &LimitLoc) {
        if self.limits.is_none() {
            self.limits.clone_from(&prev.limits);
        }
        if self.bans.is_none() {
            self.bans.clone_from(&prev.bans);
        }
        self.status = self.status.or(prev.status);
        self.dry_run = self.dry_run.or(prev.dry_run);
        self.log_level = self.log_level.or(prev.log_level);
        self.fail = self.fail.or(prev.fail);
        self.headers = self.headers.or(prev.headers);
    }

    fn active(&self) -> bool {
        self.limits.as_ref().is_some_and(|l| !l.is_empty()) || self.bans.as_ref().is_some_and(|b| !b.is_empty())
    }

    fn status(&self) -> ngx_int_t {
        self.status.unwrap_or(429) as ngx_int_t
    }
}

fn main_conf(cf: &mut ngx_conf_t) -> Result<&'static mut MainConf, String> {
    Shield::main_conf_mut(cf).ok_or_else(|| "no main configuration".to_string())
}

/// `shield_redis redis://[user:pass@]host[:port][/db] | unix://[user:pass@]/path[?db=n] [timeout=50ms];`
pub extern "C" fn set_redis(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |_, mcf: &mut MainConf, args| {
        if mcf.limits.redis.is_some() {
            return Err("is duplicate".into());
        }
        let url = crate::redis::url::parse(args[0]).map_err(|e| e.0)?;
        let mut timeout_ms = 50;
        for arg in &args[1..] {
            match parse::param(arg) {
                Some(("timeout", v)) => {
                    timeout_ms = parse::time(v).map_err(|e| e.0)?.as_millis() as u64;
                    if timeout_ms == 0 {
                        return Err(format!("invalid timeout \"{v}\"").into());
                    }
                }
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let (sockaddr, name) = match &url.socket {
            Some(path) => (sockaddr_un_bytes(path), format!("unix:{path}")),
            None => {
                let addr = std::net::ToSocketAddrs::to_socket_addrs(&(url.host.as_str(), url.port))
                    .map_err(|e| format!("host not found in \"{}\": {e}", args[0]))?
                    .next()
                    .ok_or_else(|| format!("host not found in \"{}\"", args[0]))?;
                (sockaddr_bytes(&addr), addr.to_string())
            }
        };
        mcf.limits.redis = Some(Target {
            sockaddr,
            name,
            username: url.username,
            password: url.password,
            db: url.db,
            timeout_ms: timeout_ms as _,
        });
        let reg = &mut mcf.registry;
        mcf.limits.redis_slots = Some(RedisSlots {
            latency: reg.histogram("shield_redis_latency_ms", "Redis reply latency.", &[], &[1, 2, 5, 10, 25, 50, 100, 250]),
            errors: reg.counter("shield_redis_errors_total", "Redis failures (connect, timeout, protocol, server errors).", &[]),
            cache_hits: reg.counter("shield_limit_cache_hits_total", "Rejections answered from the per-worker cache, without Redis.", &[]),
        });
        Ok(())
    })
}

/// A `struct sockaddr_un` as bytes (family, NUL-terminated path; the URL parser bounds the
/// path length).
fn sockaddr_un_bytes(path: &str) -> Vec<u8> {
    let mut b = vec![0u8; 2 + 108];
    b[..2].copy_from_slice(&(ngx::ffi::AF_UNIX as u16).to_ne_bytes());
    b[2..2 + path.len()].copy_from_slice(path.as_bytes());
    b
}

/// A `struct sockaddr_in`/`sockaddr_in6` as bytes, for nginx's peer connection.
fn sockaddr_bytes(addr: &std::net::SocketAddr) -> Vec<u8> {
    match addr {
        std::net::SocketAddr::V4(a) => {
            let mut b = vec![0u8; 16];
            b[..2].copy_from_slice(&(ngx::ffi::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            b
        }
        std::net::SocketAddr::V6(a) => {
            let mut b = vec![0u8; 28];
            b[..2].copy_from_slice(&(ngx::ffi::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            b
        }
    }
}

/// `shield_limit_zone $key zone=name:size rate=Nr/s [algorithm=gcra|sliding_window] [backend=redis|local];`
pub extern "C" fn set_zone(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |cf, mcf: &mut MainConf, args| {
        let key_source = args[0].to_string();
        let (mut name, mut size, mut rate, mut algorithm, mut backend) = (None, 0, None, Algorithm::Gcra, None);
        for arg in &args[1..] {
            match parse::param(arg) {
                Some(("zone", v)) => {
                    let (n, s) = v.split_once(':').ok_or_else(|| format!("invalid zone size \"{v}\""))?;
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                        return Err(format!("invalid zone name \"{n}\"").into());
                    }
                    size = parse::size(s).map_err(|_| format!("invalid zone size \"{v}\""))?;
                    name = Some(n.to_string());
                }
                Some(("rate", v)) => rate = Some(parse::rate(v).map_err(|e| e.0)?),
                Some(("algorithm", "gcra")) => algorithm = Algorithm::Gcra,
                Some(("algorithm", "sliding_window")) => algorithm = Algorithm::SlidingWindow,
                Some(("backend", "redis")) => backend = Some(Backend::Redis),
                Some(("backend", "local")) => backend = Some(Backend::Local),
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let name = name.ok_or("must have \"zone\" parameter")?;
        let rate = rate.ok_or("must have \"rate\" parameter")?;
        if size < 32 * 1024 {
            return Err(format!("zone \"{name}\" is too small").into());
        }
        if mcf.limits.zones.iter().any(|z| z.name == name) {
            return Err(format!("zone \"{name}\" is duplicate").into());
        }
        let backend = match backend {
            Some(Backend::Redis) if mcf.limits.redis.is_none() => {
                return Err("\"backend=redis\" requires \"shield_redis\" before it".into())
            }
            Some(b) => b,
            None if mcf.limits.redis.is_some() => Backend::Redis,
            None => Backend::Local,
        };
        let key = ComplexValue::compile(cf, &key_source)?;
        let key_var = single_variable(&key_source).map(|var| {
            let mut name = super::util::pool_str(cf.pool, var.as_bytes()).ok_or("out of memory")?;
            // SAFETY: cf is live during configuration; the name lives in the cycle's pool.
            let index = unsafe { ngx::ffi::ngx_http_get_variable_index(cf, &mut name) };
            if index == NGX_ERROR as ngx_int_t {
                return Err(ConfError::Other(format!("unknown variable \"${var}\"")));
            }
            Ok(index as ngx_uint_t)
        });
        let key_var = key_var.transpose()?;
        let mut h = crate::status::metrics::Fnv::default();
        h.write(name.as_bytes());
        h.write(&[algorithm as u8]);
        h.write(&rate.requests.to_le_bytes());
        h.write(&rate.period.as_secs().to_le_bytes());
        let slots = zone_slots(&mut mcf.registry, &name);
        let mut zone = Box::new(Zone {
            name: name.clone(),
            key,
            key_var,
            key_source,
            rate,
            algorithm,
            backend,
            config_hash: h.0,
            shm: ptr::null_mut(),
            pool: ptr::null_mut(),
            slots,
        });
        // nginx keeps this pointer (it does not copy the name): it must live in the cycle's pool.
        let mut shm_name = super::util::pool_str(cf.pool, format!("shield_limit_{name}").as_bytes()).ok_or("out of memory")?;
        // SAFETY: cf is live; the module address tags the zone.
        let shm = unsafe { ngx_shared_memory_add(cf, &mut shm_name, size, ptr::addr_of_mut!(super::ngx_http_shield_module).cast()) };
        // SAFETY: NULL or a zone owned by the cycle.
        let shm = unsafe { shm.as_mut() }.ok_or("cannot add shared memory zone")?;
        if !shm.data.is_null() {
            return Err(format!("zone \"{name}\" is duplicate").into());
        }
        shm.init = Some(zone_init);
        shm.data = ptr::from_mut(&mut *zone).cast();
        mcf.limits.zones.push(zone);
        Ok(())
    })
}

fn zone_slots(reg: &mut Registry, zone: &str) -> ZoneSlots {
    const NAME: &str = "shield_limit_requests_total";
    const HELP: &str = "Requests checked by a shield_limit zone, by outcome.";
    let mut c = |outcome| reg.counter(NAME, HELP, &[("zone", zone), ("outcome", outcome)]);
    ZoneSlots {
        passed: c("passed"),
        delayed: c("delayed"),
        rejected: c("rejected"),
        dry_run: c("dry_run_rejected"),
        error: c("error"),
        banned: c("banned"),
    }
}

/// Allocates the zone's table, or reuses the previous cycle's on reload when the key is the
/// same (so limits survive `nginx -s reload`); a changed key is refused, as limit_req does.
extern "C" fn zone_init(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    guard(ptr::null_mut(), "limit zone init", NGX_ERROR as ngx_int_t, || {
        // SAFETY: data was set to our Zone in set_zone; old is the previous cycle's ZoneShm or
        // NULL; shm.addr starts with the slab pool.
        unsafe {
            let shm_zone = &mut *zone;
            let z = &mut *shm_zone.data.cast::<Zone>();
            let mut h = crate::status::metrics::Fnv::default();
            h.write(z.key_source.as_bytes());
            let old = old.cast::<ZoneShm>();
            z.pool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();
            if !old.is_null() {
                if (*old).key_hash != h.0 {
                    ngx_log_error!(
                        NGX_LOG_EMERG,
                        shm_zone.shm.log,
                        "shield_limit_zone \"{}\" uses the \"{}\" key while previously it used another key",
                        z.name,
                        z.key_source
                    );
                    return NGX_ERROR as ngx_int_t;
                }
                z.shm = old;
                shm_zone.data = old.cast();
                return NGX_OK as ngx_int_t;
            }
            let pool = shm_zone.shm.addr.cast::<ngx_slab_pool_t>();
            // Leave room for the slab allocator's own pages.
            let mut slots = (shm_zone.shm.size.saturating_sub(16 * 4096)) / size_of::<Slot>();
            let mut mem = ptr::null_mut::<ZoneShm>();
            while slots >= crate::limit::shm_table::WAYS && mem.is_null() {
                mem = ngx_slab_calloc(pool, size_of::<ZoneShm>() + slots * size_of::<Slot>()).cast();
                if mem.is_null() {
                    slots = slots * 9 / 10;
                }
            }
            if mem.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*mem).key_hash = h.0;
            (*mem).slots = slots;
            z.shm = mem;
            shm_zone.data = mem.cast();
            NGX_OK as ngx_int_t
        }
    })
}

/// `shield_limit zone=name [burst=N] [nodelay | delay=N] [cost=N];`
pub extern "C" fn set_limit(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |cf, lc: &mut super::LocConf, args| {
        let mcf = main_conf(cf)?;
        let (mut zone, mut burst, mut delay, mut nodelay, mut cost) = (None, 0, 0, false, 1);
        for arg in args {
            let number = |v: &str| parse::number(v).ok_or_else(|| format!("invalid parameter \"{arg}\""));
            match parse::param(arg) {
                Some(("zone", v)) => zone = Some(find_zone(mcf, v)?),
                Some(("burst", v)) => burst = number(v)?,
                Some(("delay", v)) => delay = number(v)?,
                Some(("cost", v)) => cost = number(v)?.max(1),
                None if *arg == "nodelay" => nodelay = true,
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let zone = zone.ok_or("must have \"zone\" parameter")?;
        let limits = lc.limit.limits.get_or_insert_with(Vec::new);
        if limits.iter().any(|l| l.zone == zone) {
            return Err("is duplicate".into());
        }
        let delay = if nodelay { burst } else { delay.min(burst) };
        limits.push(LimitRef { zone, burst, delay, cost });
        Ok(())
    })
}

fn find_zone(mcf: &MainConf, name: &str) -> Result<usize, String> {
    mcf.limits.zones.iter().position(|z| z.name == name).ok_or_else(|| format!("unknown zone \"{name}\" (declare it with shield_limit_zone before use)"))
}

/// `shield_ban zone=name status=401,403 threshold=N/window ban=duration;`
pub extern "C" fn set_ban(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |cf, lc: &mut super::LocConf, args| {
        let mcf = main_conf(cf)?;
        let (mut zone, mut statuses, mut threshold, mut ban_us) = (None, Vec::new(), None, None);
        for arg in args {
            match parse::param(arg) {
                Some(("zone", v)) => zone = Some(find_zone(mcf, v)?),
                Some(("status", v)) => {
                    statuses = v.split(',').map(|s| parse::status(s, 100, 599).map_err(|e| e.0)).collect::<Result<_, _>>()?
                }
                Some(("threshold", v)) => {
                    let (n, w) = v.split_once('/').ok_or_else(|| format!("invalid threshold \"{v}\""))?;
                    let n = parse::number(n).filter(|&n| n > 0).ok_or_else(|| format!("invalid threshold \"{v}\""))?;
                    let w = parse::time(w).map_err(|e| e.0)?.as_micros() as u64;
                    threshold = Some((n, w.max(1)));
                }
                Some(("ban", v)) => ban_us = Some(parse::time(v).map_err(|e| e.0)?.as_micros() as u64),
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let zone = zone.ok_or("must have \"zone\" parameter")?;
        if statuses.is_empty() {
            return Err("must have \"status\" parameter".into());
        }
        let (threshold, window_us) = threshold.ok_or("must have \"threshold\" parameter")?;
        let ban_us = ban_us.filter(|&b| b > 0).ok_or("must have \"ban\" parameter")?;
        lc.limit.bans.get_or_insert_with(Vec::new).push(BanRef { zone, statuses, ban: Ban { threshold, window_us, ban_us } });
        Ok(())
    })
}

pub extern "C" fn set_status(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        set_once(&mut lc.limit.status, parse::status(args[0], 400, 599).map_err(|e| e.0)?)
    })
}

pub extern "C" fn set_dry_run(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        set_once(&mut lc.limit.dry_run, parse::flag(args[0]).map_err(|e| e.0)?)
    })
}

pub extern "C" fn set_log_level(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let level = match args[0] {
            "info" => NGX_LOG_INFO,
            "notice" => NGX_LOG_NOTICE,
            "warn" => NGX_LOG_WARN,
            "error" => NGX_LOG_ERR,
            other => return Err(format!("invalid value \"{other}\", it must be \"info\", \"notice\", \"warn\" or \"error\"").into()),
        };
        set_once(&mut lc.limit.log_level, level as ngx_uint_t)
    })
}

pub extern "C" fn set_fail(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let policy = match args[0] {
            "open" => FailPolicy::Open,
            "closed" => FailPolicy::Closed,
            "local" => FailPolicy::Local,
            other => return Err(format!("invalid value \"{other}\", it must be \"open\", \"closed\" or \"local\"").into()),
        };
        set_once(&mut lc.limit.fail, policy)
    })
}

pub extern "C" fn set_headers(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    super::util::directive(cf, cmd, conf, |_, lc: &mut super::LocConf, args| {
        let mode = match args[0] {
            "on" => (true, true),
            "off" => (false, false),
            "draft" => (true, false),
            "legacy" => (false, true),
            other => return Err(format!("invalid value \"{other}\", it must be \"on\", \"off\", \"draft\" or \"legacy\"").into()),
        };
        set_once(&mut lc.limit.headers, mode)
    })
}

// --- per worker ---------------------------------------------------------------------------

struct Worker {
    client: Option<Box<Client>>,
    /// Leaked once per worker: the client keeps references for the NOSCRIPT fallback.
    script: &'static Script,
    ban_script: &'static Script,
    /// "Rejected until" per (limit config, key): a flood from a rejected client costs no
    /// Redis round trips. Bounded: a fixed table, LRU per bucket.
    cache: Vec<Slot>,
    /// Requests waiting for the next LIMIT_SCRIPT call, and who gets each answer.
    batch: Batch,
    waiters: Vec<Rc<Waiter>>,
    /// Posted when the batch gets its first request: sends the batch once the event loop
    /// has handled everything that is ready now. (Holding batches back while one is out, to
    /// make them larger, measured slower: Redis idles while nginx waits.)
    batch_ev: Box<ngx_event_t>,
    /// Reused for every response's rate-limit headers (copied to the request pool).
    header_buf: Vec<u8>,
}

/// A batch this large goes out at once rather than at the end of the loop iteration.
const MAX_BATCH: usize = 256;

static mut WORKER: Option<Worker> = None;

fn worker() -> Option<&'static mut Worker> {
    // SAFETY: nginx workers are single-threaded; WORKER is only touched from the event loop.
    unsafe { (*ptr::addr_of_mut!(WORKER)).as_mut() }
}

pub fn init_process(mcf: &'static MainConf) {
    let client = mcf.limits.redis.clone().map(|target| {
        let mut client = Client::new(target);
        if let Some(slots) = &mcf.limits.redis_slots {
            let (latency, errors) = (slots.latency.clone(), slots.errors);
            client.on_latency = Some(Box::new(move |ms| {
                let (bucket, sum, count) = latency.slots_for(ms);
                mcf.add(bucket, 1);
                mcf.add(sum, ms);
                mcf.add(count, 1);
            }));
            client.on_error = Some(Box::new(move |_| mcf.add(errors, 1)));
        }
        client
    });
    // SAFETY: an all-zero event is nginx's initial state; the handler and log are set here,
    // the cycle's log outlives the worker's requests.
    let mut batch_ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    batch_ev.handler = Some(batch_handler);
    batch_ev.log = unsafe { (*ngx::ffi::ngx_cycle).log };
    // SAFETY: called once per worker before any request.
    unsafe {
        *ptr::addr_of_mut!(WORKER) = Some(Worker {
            client,
            script: Box::leak(Box::new(Script::new(script::LIMIT_SCRIPT))),
            ban_script: Box::leak(Box::new(Script::new(script::BAN_SCRIPT))),
            cache: vec![Slot::default(); 4096],
            batch: Batch::default(),
            waiters: Vec::new(),
            batch_ev,
            header_buf: Vec::with_capacity(256),
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

/// Sends the pending batch as one EVALSHA; the reply is split among the batch's requests.
fn send_batch(w: &mut Worker) {
    if w.batch.is_empty() {
        return;
    }
    let batch = core::mem::take(&mut w.batch);
    let waiters = core::mem::take(&mut w.waiters);
    let evalsha = batch.command(w.script, 0);
    let callback = Box::new(move |reply: Result<Reply, RedisError>| {
        let answers = reply.and_then(|r| {
            batch.decode(&r).map_err(|e| {
                // SAFETY: the cycle log is valid in a running worker.
                ngx_log_error!(NGX_LOG_ERR, unsafe { (*ngx::ffi::ngx_cycle).log }, "shield: unexpected redis reply: {e}");
                RedisError::Protocol
            })
        });
        match answers {
            Ok(answers) => waiters.iter().zip(answers).for_each(|(w, a)| w.deliver(Ok(a))),
            Err(e) => waiters.iter().for_each(|w| w.deliver(Err(e.clone()))),
        }
    });
    let Some(client) = w.client.as_mut() else { return };
    if let Err((e, callback)) = client.send(&evalsha, Some(w.script), callback) {
        callback(Err(e));
    }
}

pub fn exit_process() {
    if let Some(w) = worker() {
        if let Some(c) = w.client.as_mut() {
            c.shutdown();
        }
    }
}

pub fn redis_health() -> Option<bool> {
    worker().and_then(|w| w.client.as_ref().map(|c| c.is_up()))
}

// --- shared-memory tables -------------------------------------------------------------------

/// Holds the locks of several zones (taken in zone order, so workers never deadlock) and
/// releases them on drop, even on panic.
struct Locked<'a> {
    /// One zone (the common case, no allocation) or several, sorted.
    one: Option<&'a Zone>,
    zones: Vec<&'a Zone>,
}

impl<'a> Locked<'a> {
    fn one(zone: &'a Zone) -> Option<Self> {
        if zone.shm.is_null() {
            return None;
        }
        // SAFETY: as in new().
        unsafe { ngx_shmtx_lock(&mut (*pool_of(zone)).mutex) };
        Some(Locked { one: Some(zone), zones: Vec::new() })
    }

    fn new(mut zones: Vec<&'a Zone>) -> Option<Self> {
        zones.sort_by_key(|z| z.shm as usize);
        zones.dedup_by_key(|z| z.shm as usize);
        if zones.iter().any(|z| z.shm.is_null()) {
            return None;
        }
        for z in &zones {
            // SAFETY: the slab pool (and its mutex) sits at the start of the zone's memory,
            // which contains z.shm.
            unsafe { ngx_shmtx_lock(&mut (*pool_of(z)).mutex) };
        }
        Some(Locked { one: None, zones })
    }

    fn table(&self, zone: &Zone) -> Table<'_> {
        // SAFETY: the zone is locked; the slots follow the header (see zone_init).
        let slots = unsafe { core::slice::from_raw_parts_mut(zone.shm.add(1).cast::<Slot>(), (*zone.shm).slots) };
        Table::new(slots).expect("zone_init allocates whole buckets")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        for z in self.one.iter().chain(self.zones.iter().rev()) {
            // SAFETY: locked in new().
            unsafe { ngx_shmtx_unlock(&mut (*pool_of(z)).mutex) };
        }
    }
}

fn pool_of(z: &Zone) -> *mut ngx_slab_pool_t {
    z.pool
}

fn now_us() -> u64 {
    let t = ngx::ffi::ngx_timeofday();
    t.sec as u64 * 1_000_000 + t.msec as u64 * 1000
}

/// One limit of one request, with its evaluated key.
#[derive(Clone, Copy)]
struct Applied {
    zone: usize,
    limit: Limit,
    /// Evaluated in the request pool: valid as long as the request (and so as this state).
    key: &'static [u8],
}

#[derive(Clone, Copy)]
struct AppliedBan {
    zone: usize,
    key: &'static [u8],
}

fn ban_hash(key: &[u8]) -> KeyHash {
    KeyHash::of(&[b"\0ban", key])
}

/// Decides limits and bans on the local tables; commits only if everything admits.
fn decide_local(mcf: &MainConf, limits: &[Applied], bans: &[AppliedBan], commit: bool) -> Option<Verdict> {
    let zones = &mcf.limits.zones;
    if let ([a], []) = (limits, bans) {
        // The common case, one limit and no ban: no intermediate collections.
        let locked = Locked::one(&zones[a.zone])?;
        let now = now_us();
        let h = KeyHash::of(&[a.key]);
        let mut t = locked.table(&zones[a.zone]);
        let (decision, state) = rate::check(&a.limit, t.get(h, now / 1000).unwrap_or([0; 3]), now);
        if commit && decision.outcome != Outcome::Rejected {
            let ttl = rate::ttl_us(&a.limit, state, now);
            t.put(h, state, now / 1000, (now + ttl) / 1000);
        }
        return Some(Verdict::Decisions(Decisions::One(decision)));
    }
    let locked = Locked::new(limits.iter().map(|a| &*zones[a.zone]).chain(bans.iter().map(|b| &*zones[b.zone])).collect())?;
    let now = now_us();
    for b in bans {
        let mut t = locked.table(&zones[b.zone]);
        if let Some(state) = t.get(ban_hash(b.key), now / 1000) {
            if state[2] > now {
                return Some(Verdict::Banned(b.zone, state[2] - now));
            }
        }
    }
    let hashes: Vec<KeyHash> = limits.iter().map(|a| KeyHash::of(&[a.key])).collect();
    let pairs: Vec<(Limit, State)> = limits
        .iter()
        .zip(&hashes)
        .map(|(a, h)| (a.limit, locked.table(&zones[a.zone]).get(*h, now / 1000).unwrap_or([0; 3])))
        .collect();
    let (decisions, _, states) = rate::check_all(&pairs, now);
    if let (true, Some(states)) = (commit, states) {
        for ((a, h), s) in limits.iter().zip(&hashes).zip(states) {
            let ttl = rate::ttl_us(&a.limit, s, now);
            locked.table(&zones[a.zone]).put(*h, s, now / 1000, (now + ttl) / 1000);
        }
    }
    Some(Verdict::Decisions(Decisions::Many(decisions)))
}

fn record_ban_local(mcf: &MainConf, zone: usize, ban: &Ban, key: &[u8]) {
    let z = &*mcf.limits.zones[zone];
    let Some(locked) = Locked::one(z) else { return };
    let now = now_us();
    let mut t = locked.table(z);
    let state = t.get(ban_hash(key), now / 1000).unwrap_or([0; 3]);
    let new = ban.record(state, now);
    t.put(ban_hash(key), new, now / 1000, (now + ban.ttl_us(new, now)) / 1000);
}

// --- request handling ---------------------------------------------------------------------

enum Verdict {
    Banned(usize, u64),
    Decisions(Decisions),
}

/// Shared by the request and the Redis callback; the request side clears `request` when
/// its pool goes away, so a late reply never touches a freed request.
struct Waiter {
    request: Cell<*mut ngx_http_request_t>,
    reply: RefCell<Option<Result<LimitReply, RedisError>>>,
}

impl Waiter {
    fn deliver(&self, reply: Result<LimitReply, RedisError>) {
        *self.reply.borrow_mut() = Some(reply);
        wake(self.request.get());
    }
}

#[derive(Default)]
enum Phase {
    #[default]
    Start,
    Waiting(Rc<Waiter>, &'static [Applied], &'static [AppliedBan]),
    Delaying,
    Done,
}

/// Per-request limiter state, part of `RequestCtx`.
#[derive(Default)]
pub struct LimitCtx {
    phase: Phase,
    pub status: Option<&'static str>,
    /// Strictest decision, for the response headers.
    headers: Option<(usize, Limit, Decision)>,
}

impl Drop for LimitCtx {
    fn drop(&mut self) {
        if let Phase::Waiting(w, ..) = &self.phase {
            w.request.set(ptr::null_mut());
        }
    }
}

/// The preaccess handler.
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
                return NGX_AGAIN as ngx_int_t;
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
            finish(r, lc, mcf, &limits, &bans, verdict)
        }
        Phase::Start => start(r, lc, mcf),
    }
}

fn is_redis(mcf: &MainConf, zone: usize) -> bool {
    mcf.limits.zones[zone].backend == Backend::Redis && mcf.limits.redis.is_some()
}

/// Redis decided its limits; now the local ones (checked before, committed now) join in.
fn merge_local(mcf: &MainConf, limits: &[Applied], bans: &[AppliedBan], redis: Decisions) -> Verdict {
    // Nothing local: Redis decided everything.
    let Some((local, local_bans)) = local_parts(mcf, limits, bans) else { return Verdict::Decisions(redis) };
    let admitted = redis.iter().all(|d| d.outcome != Outcome::Rejected);
    let local_verdict = decide_local(mcf, &local, &local_bans, admitted);
    // Decisions back in the order of `limits`.
    let (mut r, mut l) = (redis.iter().copied(), match local_verdict {
        Some(Verdict::Decisions(d)) => d.to_vec().into_iter(),
        Some(banned @ Verdict::Banned(..)) => return banned,
        None => Vec::new().into_iter(),
    });
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
fn pool_collect<T: Copy>(pool: *mut ngx::ffi::ngx_pool_t, max: usize, items: impl Iterator<Item = T>) -> Option<&'static [T]> {
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

/// `$name` alone (no other text, no braces) → `name`.
fn single_variable(source: &str) -> Option<&str> {
    let name = source.strip_prefix('$')?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(name)
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
            let limit = Limit { algorithm: z.algorithm, rate: z.rate, burst: l.burst, delay: l.delay, cost: l.cost };
            Some(Applied { zone: l.zone, limit, key })
        }),
    ) else {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    };
    let Some(bans) =
        pool_collect(pool, ban_refs.len(), ban_refs.iter().filter_map(|b| Some(AppliedBan { zone: b.zone, key: eval_key(&zones[b.zone], rp)? })))
    else {
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
        if let Some(s) = &mcf.limits.redis_slots {
            mcf.add(s.cache_hits, 1);
        }
        // Decisions for the Redis limits only; the local ones were not committed.
        let decided: Vec<Applied> = redis_limits().cloned().collect();
        return finish(r, lc, mcf, &decided, &[], Ok(Verdict::Decisions(Decisions::Many(cached))));
    }
    if !w.client.as_ref().is_some_and(|c| c.available()) {
        return finish(r, lc, mcf, limits, bans, Err(RedisError::Down));
    }
    w.batch.push(
        redis_limits().map(|a| LimitKey { zone: &zones[a.zone].name, key: a.key, limit: a.limit }),
        redis_bans().map(|b| BanKey { zone: &zones[b.zone].name, key: b.key }),
    );
    let waiter = Rc::new(Waiter { request: Cell::new(rp), reply: RefCell::new(None) });
    w.waiters.push(waiter.clone());
    if w.batch.len() >= MAX_BATCH {
        send_batch(w);
    } else if w.batch_ev.posted() == 0 {
        // SAFETY: the boxed event lives as long as the worker; posted events run on this
        // thread once the current event-loop iteration has handled its ready events.
        unsafe { ngx_post_event(&mut *w.batch_ev, ptr::addr_of_mut!(ngx_posted_events)) };
    }
    let timeout = mcf.limits.redis.as_ref().map_or(50, |t| t.timeout_ms);
    let Some(ctx) = RequestCtx::get(rp) else { return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t };
    ctx.limit.phase = Phase::Waiting(waiter, limits, bans);
    suspend(r, timeout + 10, resume_after_redis);
    NGX_AGAIN as ngx_int_t
}

/// Parks the request: its write event gets a timer (non-cancelable, so a graceful shutdown
/// waits for it) and `handler` runs when the timer fires or the request is woken.
fn suspend(r: &mut ngx_http_request_t, ms: ngx::ffi::ngx_msec_t, handler: unsafe extern "C" fn(*mut ngx_http_request_t)) {
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

fn wake(r: *mut ngx_http_request_t) {
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

unsafe extern "C" fn resume_after_redis(r: *mut ngx_http_request_t) {
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

unsafe extern "C" fn resume_after_delay(r: *mut ngx_http_request_t) {
    guard(unsafe { (*(*r).connection).log }, "limit delay", (), || {
        // SAFETY: as above.
        if unsafe { (*(*(*r).connection).write).timedout() } == 0 {
            return;
        }
        resume(r);
    })
}

fn cached_rejection<'a>(w: &mut Worker, mcf: &MainConf, limits: impl Iterator<Item = &'a Applied> + Clone, now: u64) -> Option<Vec<Decision>> {
    let mut t = Table::new(&mut w.cache)?;
    let mut until = |a: &Applied| t.get(cache_key(mcf, a), now / 1000).map(|s| s[0]).filter(|&u| u > now);
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

fn cache_key(mcf: &MainConf, a: &Applied) -> KeyHash {
    let z = &mcf.limits.zones[a.zone];
    KeyHash::of(&[&z.config_hash.to_le_bytes(), &a.limit.burst.to_le_bytes(), &a.limit.cost.to_le_bytes(), &a.key])
}

fn remember_rejections(mcf: &MainConf, limits: &[Applied], decisions: &[Decision]) {
    let Some(w) = worker() else { return };
    let Some(mut t) = Table::new(&mut w.cache) else { return };
    let now = now_us();
    for (a, d) in limits.iter().zip(decisions) {
        if d.outcome == Outcome::Rejected && is_redis(mcf, a.zone) && d.wait_us > 0 {
            t.put(cache_key(mcf, a), [now + d.wait_us, 0, 0], now / 1000, (now + d.wait_us) / 1000);
        }
    }
}

/// Applies a verdict (or a Redis failure under the fail policy) to the request.
fn finish(
    r: &mut ngx_http_request_t,
    lc: &LimitLoc,
    mcf: &'static MainConf,
    limits: &[Applied],
    bans: &[AppliedBan],
    verdict: Result<Verdict, RedisError>,
) -> ngx_int_t {
    let rp: *mut ngx_http_request_t = r;
    let dry_run = lc.dry_run.unwrap_or(false);
    let log = unsafe { (*r.connection).log };
    let zones = &mcf.limits.zones;
    let verdict = match verdict {
        Ok(v) => v,
        Err(err) => {
            for a in limits {
                mcf.add(zones[a.zone].slots.error, 1);
            }
            match lc.fail.unwrap_or(FailPolicy::Local) {
                FailPolicy::Local => match decide_local(mcf, limits, bans, true) {
                    Some(v) => v,
                    None => return record_status(rp, "ERROR", NGX_DECLINED as ngx_int_t),
                },
                FailPolicy::Open => {
                    ngx_log_error!(NGX_LOG_WARN, log, "shield: rate limit skipped, redis {err:?} (shield_limit_fail open)");
                    return record_status(rp, "ERROR", NGX_DECLINED as ngx_int_t);
                }
                FailPolicy::Closed => {
                    ngx_log_error!(NGX_LOG_WARN, log, "shield: request refused, redis {err:?} (shield_limit_fail closed)");
                    return record_status(rp, "ERROR", NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t);
                }
            }
        }
    };
    let decisions = match verdict {
        Verdict::Banned(zone, us) => {
            mcf.add(zones[zone].slots.banned, 1);
            let level = lc.log_level.unwrap_or(NGX_LOG_ERR as ngx_uint_t);
            ngx_log_error!(level, log, "shield: banned by zone \"{}\" for {} more s", zones[zone].name, rate::secs_ceil(us));
            let d = Decision { outcome: Outcome::Rejected, remaining: 0, reset_us: us, wait_us: us };
            let limit = Limit { algorithm: Algorithm::Gcra, rate: zones[zone].rate, burst: 0, delay: 0, cost: 1 };
            if let Some(ctx) = RequestCtx::get(rp) {
                ctx.limit.headers = Some((zone, limit, d));
            }
            return if dry_run { record_status(rp, "REJECTED_DRY_RUN", NGX_DECLINED as ngx_int_t) } else { record_status(rp, "REJECTED", lc.status()) };
        }
        Verdict::Decisions(d) => d,
    };
    let decisions: &[Decision] = &decisions;
    if decisions.iter().any(|d| d.outcome == Outcome::Rejected) {
        remember_rejections(mcf, limits, decisions);
    }
    let strictest = (0..decisions.len()).reduce(|a, b| if decisions[b].stricter_than(&decisions[a]) { b } else { a });
    for (a, d) in limits.iter().zip(decisions) {
        let s = &zones[a.zone].slots;
        mcf.add(
            match (d.outcome, dry_run) {
                (Outcome::Passed, _) => s.passed,
                (Outcome::Delayed, _) => s.delayed,
                (Outcome::Rejected, false) => s.rejected,
                (Outcome::Rejected, true) => s.dry_run,
            },
            1,
        );
    }
    let Some(i) = strictest else { return record_status(rp, "PASSED", NGX_DECLINED as ngx_int_t) };
    let (a, d) = (&limits[i], decisions[i]);
    if lc.headers != Some((false, false)) {
        if let Some(ctx) = RequestCtx::get(rp) {
            ctx.limit.headers = Some((a.zone, a.limit, d));
        }
    }
    let level = lc.log_level.unwrap_or(NGX_LOG_ERR as ngx_uint_t);
    match d.outcome {
        Outcome::Passed => record_status(rp, "PASSED", NGX_DECLINED as ngx_int_t),
        Outcome::Rejected => {
            ngx_log_error!(
                level,
                log,
                "shield: limiting requests{}, excess: retry in {} ms by zone \"{}\"",
                if dry_run { ", dry run" } else { "" },
                d.wait_us / 1000,
                zones[a.zone].name
            );
            if dry_run {
                record_status(rp, "REJECTED_DRY_RUN", NGX_DECLINED as ngx_int_t)
            } else {
                record_status(rp, "REJECTED", lc.status())
            }
        }
        Outcome::Delayed if dry_run => record_status(rp, "DELAYED_DRY_RUN", NGX_DECLINED as ngx_int_t),
        Outcome::Delayed => {
            let level = (level + 1).min(NGX_LOG_INFO as ngx_uint_t);
            ngx_log_error!(level, log, "shield: delaying request, {} ms by zone \"{}\"", d.wait_us / 1000, zones[a.zone].name);
            record_status(rp, "DELAYED", NGX_DECLINED as ngx_int_t);
            if let Some(ctx) = RequestCtx::get(rp) {
                ctx.limit.phase = Phase::Delaying;
            }
            suspend(r, (d.wait_us / 1000).max(1) as _, resume_after_delay);
            NGX_AGAIN as ngx_int_t
        }
    }
}

fn record_status(r: *mut ngx_http_request_t, status: &'static str, rc: ngx_int_t) -> ngx_int_t {
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
pub fn response_headers(r: *mut ngx_http_request_t, lc: &super::LocConf, mcf: &MainConf) -> Option<Rendered> {
    let (zone, limit, d) = RequestCtx::peek(r).and_then(|c| c.limit.headers)?;
    let (draft, legacy) = lc.limit.headers.unwrap_or((true, true));
    let buf = worker().map(|w| core::mem::take(&mut w.header_buf)).unwrap_or_default();
    Some(HeaderSet { draft, legacy }.render_into(&mcf.limits.zones[zone].name, &limit, &d, buf))
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
                let keys = [script::redis_key(&zone.name, &key, ":fails"), script::redis_key(&zone.name, &key, ":ban")];
                let args = [b.ban.threshold.to_string(), (b.ban.window_us / 1000).max(1).to_string(), (b.ban.ban_us / 1000).max(1).to_string()];
                let evalsha = w.ban_script.evalsha(&keys, &args);
                // Fire and forget: the response is already on its way; the callback holds
                // nothing of the request.
                let sent = w.client.as_mut().map(|c| c.send(&evalsha, Some(w.ban_script), Box::new(|_| {})).is_ok());
                if sent == Some(true) {
                    continue;
                }
            }
        }
        record_ban_local(mcf, b.zone, &b.ban, &key);
    }
}

pub fn status_variable(r: *mut ngx_http_request_t) -> Option<&'static str> {
    RequestCtx::peek(r).and_then(|c| c.limit.status)
}
