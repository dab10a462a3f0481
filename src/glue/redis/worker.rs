//! The worker's one Redis client and the `shield_redis` directive that configures it. Every
//! feature that talks to Redis (the limiter and penalty box today, the response cache next)
//! sends through [`client`], so all of them share one connection and one pipeline.

use core::ffi::{c_char, c_void};
use core::ptr;

use super::client::Callback;
use super::cluster::Cluster;
use super::{Client, RedisError, Target};
use crate::glue::MainConf;
use crate::limit::script::Script;
use crate::parse::ConfError;
use crate::redis::resp::Bound;
use crate::status::metrics::Histogram;

/// `shield_redis`'s part of the main configuration.
#[derive(Default)]
pub struct RedisMain {
    pub target: Option<Target>,
    pub(super) tls: super::tls::TlsDirectives,
    slots: Option<RedisSlots>,
}

struct RedisSlots {
    latency: Histogram,
    errors: usize,
}

impl RedisMain {
    /// The per-reply deadline, or `None` without `shield_redis`.
    pub fn timeout_ms(&self) -> Option<ngx::ffi::ngx_msec_t> {
        self.target.as_ref().map(|t| t.timeout_ms)
    }
}

/// `shield_redis redis://[user:pass@]host[:port][/db] | unix://[user:pass@]/path[?db=n] [timeout=50ms];`
pub extern "C" fn set_redis(
    cf: *mut ngx::ffi::ngx_conf_t,
    cmd: *mut ngx::ffi::ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |_, mcf: &mut MainConf, args| {
        if mcf.redis.target.is_some() {
            return Err(ConfError::Duplicate);
        }
        mcf.redis.target = Some(Target::from_directive(args)?);
        let reg = &mut mcf.registry;
        mcf.redis.slots = Some(RedisSlots {
            // Observed in ms, exposed in seconds.
            latency: reg.histogram(
                "shield_redis_latency_seconds",
                "Redis reply latency.",
                &[],
                &[1, 2, 5, 10, 25, 50, 100, 250],
                1000,
            ),
            errors: reg.counter(
                "shield_redis_errors_total",
                "Redis failures (connect, timeout, protocol) and error replies (-ERR, -NOSCRIPT).",
                &[],
            ),
        });
        Ok(())
    })
}

/// The end of the configuration: the TLS context, once every `shield_redis_ssl_*` is known.
pub fn postconfiguration(cf: &mut ngx::ffi::ngx_conf_t, mcf: &mut MainConf) -> Result<(), String> {
    super::tls::configure(cf, &mut mcf.redis)
}

/// The worker's Redis: one server (or the primary Sentinel names), or a cluster.
pub enum Redis {
    One(Box<Client>),
    Cluster(Box<Cluster>),
}

impl Redis {
    /// Queues a command about `key` (a Redis key name, by whose slot a cluster routes it); see
    /// [`Client::send`].
    pub fn send(
        &mut self,
        key: &[u8],
        command: &[u8],
        bound: Bound,
        script: Option<&'static Script>,
        callback: Callback,
    ) -> Result<(), (RedisError, Callback)> {
        let slot = if self.is_cluster() { crate::redis::cluster::slot(key) } else { 0 };
        self.send_to_slot(slot, command, bound, script, callback)
    }

    /// `send`, for a command whose keys all live in cluster slot `slot`.
    pub fn send_to_slot(
        &mut self,
        slot: u16,
        command: &[u8],
        bound: Bound,
        script: Option<&'static Script>,
        callback: Callback,
    ) -> Result<(), (RedisError, Callback)> {
        match self {
            Redis::One(c) => c.send(command, bound, script, callback),
            Redis::Cluster(c) => c.send(slot, command, bound, script, callback),
        }
    }

    /// Which node serves `slot` (0 for a single Redis; `usize::MAX` while no node is known
    /// to), for state kept per node.
    pub fn node_of_slot(&self, slot: u16) -> usize {
        match self {
            Redis::One(_) => 0,
            Redis::Cluster(c) => c.node_of_slot(slot).unwrap_or(usize::MAX),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// False while commands would fail at once (Redis known to be down; a cluster whose map
    /// is not known yet).
    pub fn available(&self) -> bool {
        match self {
            Redis::One(c) => c.available(),
            Redis::Cluster(c) => c.available(),
        }
    }

    pub fn is_up(&self) -> bool {
        match self {
            Redis::One(c) => c.is_up(),
            Redis::Cluster(c) => c.is_up(),
        }
    }

    pub fn timeout_ms(&self) -> u64 {
        match self {
            Redis::One(c) => c.timeout_ms(),
            Redis::Cluster(c) => c.timeout_ms(),
        }
    }

    fn start(&mut self) {
        match self {
            Redis::One(c) => c.start(),
            Redis::Cluster(c) => c.start(),
        }
    }

    fn shutdown(&mut self) {
        match self {
            Redis::One(c) => c.shutdown(),
            Redis::Cluster(c) => c.shutdown(),
        }
    }
}

static mut CLIENT: Option<Redis> = None;

/// The worker's Redis, or `None` without `shield_redis` (or before `init_process`).
pub fn client() -> Option<&'static mut Redis> {
    // SAFETY: nginx workers are single-threaded; CLIENT is only touched from the event loop.
    unsafe { (*ptr::addr_of_mut!(CLIENT)).as_mut() }
}

/// Whether the worker's connection is up: `None` without `shield_redis`.
pub fn health() -> Option<bool> {
    client().map(|c| c.is_up())
}

pub fn init_process(mcf: &'static MainConf) {
    let make = move |target: Target| {
        let mut client = Client::new(target);
        if let Some(slots) = &mcf.redis.slots {
            let (latency, errors) = (slots.latency.clone(), slots.errors);
            client.on_latency = Some(Box::new(move |ms| mcf.observe(&latency, ms)));
            client.on_error = Some(Box::new(move |_| mcf.add(errors, 1)));
        }
        client
    };
    let client = mcf.redis.target.clone().map(|target| match target.seeds.is_empty() {
        true => Redis::One(make(target)),
        false => {
            let seeds = target.seeds.clone();
            Redis::Cluster(Cluster::new(target, &seeds, Box::new(make)))
        }
    });
    // SAFETY: called once per worker, before any request.
    unsafe { *ptr::addr_of_mut!(CLIENT) = client };
    if let Some(c) = self::client() {
        c.start();
    }
}

pub fn exit_process() {
    if let Some(c) = client() {
        c.shutdown();
    }
}
