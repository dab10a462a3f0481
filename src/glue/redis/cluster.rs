//! Redis Cluster on nginx's event loop: one pipelined [`Client`] per primary, each command sent
//! to the primary that serves its key's slot.
//!
//! - **The slot map** is asked for with `CLUSTER SLOTS` (of any node, in turn: the URL's seeds
//!   first): at start, soon after a `-MOVED`, soon after a node fails (a replica may have been
//!   promoted), and every [`REFRESH_MS`]. Until it is known, commands fail fast (`Down`) and
//!   the fail policy answers.
//! - **Redirections** are followed with the caller's own deadline: `-MOVED` updates the map
//!   and sends to the new owner; `-ASK` (a slot being migrated) sends `ASKING` and the command
//!   to the importing node, once; `-TRYAGAIN` (a multi-key command meeting a half-migrated
//!   slot) sends again after [`TRYAGAIN_MS`]. A command that got a redirection was not
//!   executed, so following it never applies it twice. At most [`MAX_HOPS`] per command.
//! - Hooks of the node clients only queue what happened (`glue::util::later`); the map and
//!   the clients change from that posted work, never from inside a client's own callback.

use core::ptr;
use std::net::SocketAddr;

use ngx::ffi::{ngx_event_t, NGX_LOG_NOTICE, NGX_LOG_WARN};
use ngx::ngx_log_error;

use super::client::{clear_timer, cycle_log, now, Callback, Resend, Resent};
use super::{Client, RedisError, SocketAddress, Target};
use crate::glue::util::{guard, later};
use crate::limit::script::Script;
use crate::redis::cluster::{self, Redirect, SlotMap};
use crate::redis::resp::{Bound, Reply};

/// The map is asked for again this often, even when nothing said it changed.
pub const REFRESH_MS: u64 = 10_000;
/// After a failure (or a MOVED), the map is asked for again this soon, at most.
const REFRESH_SOON_MS: u64 = 100;
const TRYAGAIN_MS: u64 = 10;
pub const MAX_HOPS: u8 = 5;

pub struct Cluster {
    /// Credentials, timeout and TLS of every node's connection.
    template: Target,
    map: SlotMap,
    /// One per `map.nodes`, same index. Boxed: a client's events point into it, so it must
    /// not move when the vector grows.
    #[allow(clippy::vec_box)]
    clients: Vec<Box<Client>>,
    /// Creates a node's client with the worker's hooks (metrics).
    make: Box<dyn Fn(Target) -> Box<Client>>,
    refresh_ev: Box<ngx_event_t>,
    retry_ev: Box<ngx_event_t>,
    retries: Vec<Resend>,
    /// A `CLUSTER SLOTS` is out.
    refreshing: bool,
    /// The node asked last.
    asked: usize,
    known: bool,
    /// For the log: the map's shape last reported.
    reported: (usize, usize),
}

fn event(data: *mut Cluster, handler: extern "C" fn(*mut ngx_event_t)) -> Box<ngx_event_t> {
    // SAFETY: an all-zero event is nginx's initial state.
    let mut ev: Box<ngx_event_t> = Box::new(unsafe { core::mem::zeroed() });
    ev.handler = Some(handler);
    ev.data = data.cast();
    ev.log = cycle_log();
    ev
}

impl Cluster {
    pub fn new(template: Target, seeds: &[SocketAddr], make: Box<dyn Fn(Target) -> Box<Client>>) -> Box<Cluster> {
        let mut c = Box::new(Cluster {
            template,
            map: SlotMap::default(),
            clients: Vec::new(),
            make,
            refresh_ev: event(ptr::null_mut(), refresh_handler),
            retry_ev: event(ptr::null_mut(), retry_handler),
            retries: Vec::new(),
            refreshing: false,
            asked: 0,
            known: false,
            reported: (0, 0),
        });
        let this: *mut Cluster = &mut *c;
        for ev in [&mut c.refresh_ev, &mut c.retry_ev] {
            ev.data = this.cast();
        }
        // A graceful shutdown waits for timers, but not for the periodic refresh.
        c.refresh_ev.set_cancelable(1);
        for seed in seeds {
            c.node(*seed);
        }
        c
    }

    /// The client of `addr`, created (with the hooks) if new; `None` past `MAX_NODES`.
    fn node(&mut self, addr: SocketAddr) -> Option<usize> {
        let i = self.map.node(addr)?;
        while self.clients.len() < self.map.nodes.len() {
            let addr = self.map.nodes[self.clients.len()];
            let mut target = self.template.clone();
            target.address = SocketAddress::inet(&addr);
            target.name = format!("cluster node {addr}");
            target.seeds.clear();
            let mut client = (self.make)(target);
            let this: *mut Cluster = self;
            client.on_redirect = Some(Box::new(move |r| later_on(this, move |c| c.follow(r))));
            let counted = client.on_error.take();
            client.on_error = Some(Box::new(move |e| {
                if let Some(count) = &counted {
                    count(e);
                }
                if !matches!(e, RedisError::Server(_)) {
                    // A node's connection failed: the map may be stale.
                    later_on(this, Cluster::refresh_soon);
                }
            }));
            self.clients.push(client);
        }
        Some(i)
    }

    pub fn start(&mut self) {
        self.refresh();
    }

    pub fn node_of_slot(&self, slot: u16) -> Option<usize> {
        self.map.owner(slot)
    }

    pub fn timeout_ms(&self) -> u64 {
        self.template.timeout_ms as u64
    }

    /// The map is known: commands can be routed (each still fails fast if its node is down).
    pub fn available(&self) -> bool {
        self.known
    }

    /// Every slot is served and every primary's connection works.
    pub fn is_up(&self) -> bool {
        self.known
            && self.map.covered() == cluster::SLOTS
            && (0..cluster::SLOTS as u16)
                .filter_map(|s| self.map.owner(s))
                .all(|n| self.clients.get(n).is_some_and(|c| c.available()))
    }

    pub fn send(
        &mut self,
        slot: u16,
        command: &[u8],
        bound: Bound,
        script: Option<&'static Script>,
        callback: Callback,
    ) -> Result<(), (RedisError, Callback)> {
        self.send_at(slot, command, bound, script, callback, Resent::default())
    }

    fn send_at(
        &mut self,
        slot: u16,
        command: &[u8],
        bound: Bound,
        script: Option<&'static Script>,
        callback: Callback,
        resent: Resent,
    ) -> Result<(), (RedisError, Callback)> {
        let Some(node) = self.map.owner(slot) else {
            self.refresh_soon();
            return Err((RedisError::Down, callback));
        };
        let sent = self.clients[node].send_at(command, bound, script, callback, Resent { slot, ..resent });
        if sent.is_err() {
            // Down (probing): a replica may be serving the slot by now.
            self.refresh_soon();
        }
        sent
    }

    /// Asks the next node that is not known to be down for the slot map.
    fn refresh(&mut self) {
        if self.refreshing {
            return;
        }
        let n = self.clients.len();
        for step in 0..n {
            let i = (self.asked + 1 + step) % n;
            if !self.clients[i].available() && step + 1 < n {
                continue;
            }
            let this: *mut Cluster = self;
            let callback: Callback = Box::new(move |reply| later_on(this, move |c| c.on_slots(i, reply)));
            if self.clients[i].send(&cluster::slots_query(), cluster::SLOTS_REPLY, None, callback).is_ok() {
                self.asked = i;
                self.refreshing = true;
                self.arm_refresh(REFRESH_MS);
                return;
            }
        }
        // No node could be asked now: again soon.
        self.arm_refresh(REFRESH_SOON_MS.max(super::client::PROBE_INTERVAL_MS));
    }

    fn refresh_soon(&mut self) {
        if !self.refreshing {
            self.arm_refresh(REFRESH_SOON_MS);
        }
    }

    /// Sets the refresh timer to `ms` unless it is set to fire sooner.
    fn arm_refresh(&mut self, ms: u64) {
        let ev = &mut *self.refresh_ev;
        // SAFETY: the event is the cluster's own, alive as long as the worker.
        unsafe {
            if ev.timer_set() != 0 {
                if ev.timer.key <= (now() + ms) as ngx::ffi::ngx_msec_t {
                    return;
                }
                ngx::ffi::ngx_del_timer(ev);
            }
            ngx::ffi::ngx_add_timer(ev, ms as ngx::ffi::ngx_msec_t);
        }
    }

    fn on_slots(&mut self, node: usize, reply: Result<Reply, RedisError>) {
        self.refreshing = false;
        let addr = self.map.nodes[node];
        let map = reply.map_err(|e| e.to_string()).and_then(|r| SlotMap::from_reply(&r, &self.map.nodes, addr));
        match map {
            Ok(map) => {
                let (nodes, covered) = (map.nodes.len(), map.covered());
                self.map = map;
                self.known = true;
                // Clients for the nodes the map added.
                if let Some(last) = self.map.nodes.last().copied() {
                    self.node(last);
                }
                if (nodes, covered) != self.reported {
                    self.reported = (nodes, covered);
                    let level = if covered == cluster::SLOTS { NGX_LOG_NOTICE } else { NGX_LOG_WARN };
                    ngx_log_error!(
                        level,
                        cycle_log(),
                        "shield: redis cluster map from {addr}: {covered} of 16384 slots served"
                    );
                }
                self.arm_refresh(REFRESH_MS);
            }
            Err(why) => {
                ngx_log_error!(NGX_LOG_WARN, cycle_log(), "shield: redis cluster map from {addr}: {why}");
                self.arm_refresh(REFRESH_SOON_MS.max(super::client::PROBE_INTERVAL_MS));
            }
        }
    }

    /// Sends a redirected command where the redirection says.
    fn follow(&mut self, r: Resend) {
        if r.hops >= MAX_HOPS {
            return (r.callback)(Err(RedisError::Server(r.error)));
        }
        let resent = Resent { queued_at: Some(r.queued_at), asking: false, hops: r.hops + 1, slot: r.slot };
        let sent = match r.redirect {
            Redirect::Moved { slot, node } => {
                self.map.assign(slot, node);
                self.node(node);
                self.refresh_soon();
                self.send_at(slot, &r.command, r.bound, r.script, r.callback, resent)
            }
            Redirect::Ask { node, .. } => match self.node(node) {
                Some(i) => self.clients[i].send_at(
                    &r.command,
                    r.bound,
                    r.script,
                    r.callback,
                    Resent { asking: true, ..resent },
                ),
                None => Err((RedisError::Server(r.error), r.callback)),
            },
            Redirect::TryAgain => {
                self.retries.push(Resend { hops: r.hops + 1, ..r });
                if self.retry_ev.timer_set() == 0 {
                    // SAFETY: the cluster's own event.
                    unsafe { ngx::ffi::ngx_add_timer(&mut *self.retry_ev, TRYAGAIN_MS as ngx::ffi::ngx_msec_t) };
                }
                Ok(())
            }
            Redirect::Down => {
                self.refresh_soon();
                Err((RedisError::Server(r.error), r.callback))
            }
        };
        if let Err((e, callback)) = sent {
            callback(Err(e));
        }
    }

    fn retry(&mut self) {
        for r in core::mem::take(&mut self.retries) {
            let resent = Resent { queued_at: Some(r.queued_at), asking: false, hops: r.hops, slot: r.slot };
            if let Err((e, callback)) = self.send_at(r.slot, &r.command, r.bound, r.script, r.callback, resent) {
                callback(Err(e));
            }
        }
    }

    /// Worker exit: drop everything without calling back into requests being torn down.
    pub fn shutdown(&mut self) {
        for c in &mut self.clients {
            c.shutdown();
        }
        drop(core::mem::take(&mut self.retries));
        clear_timer(&mut self.refresh_ev);
        clear_timer(&mut self.retry_ev);
    }
}

/// Runs `f` on the cluster after the current client callback (`glue::util::later`).
fn later_on(this: *mut Cluster, f: impl FnOnce(&mut Cluster) + 'static) {
    // SAFETY: the cluster is boxed and lives as long as the worker; the work runs on this
    // thread, outside any of its clients' callbacks.
    later(Box::new(move || f(unsafe { &mut *this })));
}

fn cluster_of(ev: *mut ngx_event_t) -> &'static mut Cluster {
    // SAFETY: the cluster's events carry the boxed cluster, which lives as long as the worker.
    unsafe { &mut *(*ev).data.cast::<Cluster>() }
}

extern "C" fn refresh_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis cluster refresh", (), || {
        let c = cluster_of(ev);
        if !super::client::exiting() {
            c.refreshing = false; // an unanswered question is given up: ask another node
            c.refresh();
        }
    })
}

extern "C" fn retry_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis cluster retry", (), || cluster_of(ev).retry())
}
