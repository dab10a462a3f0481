//! The pipelined per-worker client, shared by every request of the worker.
//!
//! Commands queued during one event-loop turn are written together by a posted flush event;
//! replies are matched to callers in order. Callers never wait here: `send` either queues the
//! command (and the callback later runs from the event loop) or fails at once.
//!
//! - **Deadlines**: each command must be answered within `timeout` of being queued, an
//!   absolute deadline (the bookkeeping is `redis::pipeline`, pure): at it the caller alone
//!   gets `Timeout`; the connection is dropped only when the overdue reply stalls mid-way or
//!   never comes (see the pipeline's comment).
//! - **Bounds**: each command says how large its reply can be ([`Bound`]); anything larger is a
//!   protocol error before it is buffered, and the connection is dropped.
//! - **Recovery**: after a failure the connection is closed, every waiting caller fails, and
//!   commands fail fast while a probe reconnects in the background every [`PROBE_INTERVAL_MS`]
//!   (connect, AUTH/SELECT, PING). Only once PING is answered are commands sent again, so no
//!   request ever waits on a connection not known to work.
//! - **Logging**: a failure is logged once; while Redis stays down, one line a second at most
//!   says how many attempts failed; recovery is logged with the outage's length
//!   (`client/outage.rs`).
//! - `client/replies.rs`: each reply handed to its caller (NOSCRIPT retries, a cluster's
//!   redirections, `-READONLY`); `client/session.rs`: TLS and the sentinel's question.

use core::ptr;

use ngx::ffi::{
    ngx_connection_t, ngx_current_msec, ngx_cycle, ngx_del_timer, ngx_delete_posted_event, ngx_event_t, ngx_log_t,
    ngx_msec_t, ngx_post_event, ngx_posted_events, ngx_str_t,
};

use outage::OutageLog;

use super::connection::{Connection, Io, NginxLog};
use super::{RedisError, Target};
use crate::glue::util::guard;
use crate::limit::script::Script;
use crate::redis::pipeline::{Kind, Pipeline};
use crate::redis::resp::{self, Bound, Decoder, Reply};

mod outage;
mod replies;
mod session;

pub type Callback = Box<dyn FnOnce(Result<Reply, RedisError>)>;

/// After a failure, a reconnect is tried this often, until Redis answers.
pub const PROBE_INTERVAL_MS: u64 = 200;
/// Replies are read in chunks of this size; a larger reply spans several reads.
const READ_CHUNK: usize = 16 * 1024;

/// A caller waiting for a reply.
struct Waiter {
    callback: Callback,
    /// For an EVALSHA: its script, to send as EVAL when Redis answers NOSCRIPT (after a
    /// restart or SCRIPT FLUSH).
    script: Option<&'static Script>,
    /// A copy of the command, kept for an EVALSHA (the NOSCRIPT fallback) and, in a cluster,
    /// for every command (a redirection sends it elsewhere).
    command: Option<Vec<u8>>,
    /// Redirections followed so far (a cluster bounds them, see `cluster.rs`), and the slot
    /// the command was routed by.
    hops: u8,
    slot: u16,
}

/// A command a cluster node redirected (`-MOVED`, `-ASK`, `-TRYAGAIN`): not executed, so the
/// cluster sends it again, to the node the redirection names, with the same caller and the
/// same deadline.
pub struct Resend {
    pub redirect: crate::redis::cluster::Redirect,
    pub error: String,
    pub command: Vec<u8>,
    pub bound: Bound,
    pub script: Option<&'static Script>,
    pub callback: Callback,
    pub queued_at: u64,
    pub hops: u8,
    pub slot: u16,
}

pub struct Client {
    target: Target,
    name: ngx_str_t,
    /// The connection's log: nginx's own messages about it ("connect() failed", an SSL
    /// error) would repeat every probe; this client logs them in its own throttled lines.
    nginx_log: Box<NginxLog>,
    conn: Option<Connection>,
    /// The TCP (or Unix) connection is established.
    connected: bool,
    /// A failure happened and no PING has been answered since: commands fail fast.
    probing: bool,
    /// Sentinel mode: the primary's address was learnt since the last failure.
    primary_known: bool,
    /// Sentinel mode: the connection is to sentinel number `sentinel`, asking for the primary.
    discovering: bool,
    sentinel: usize,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    decoder: Decoder,
    pending: Pipeline<Waiter>,
    flush_ev: ngx_event_t,
    deadline_ev: ngx_event_t,
    probe_ev: ngx_event_t,
    outage: OutageLog,
    /// Called with each reply's latency in ms, for the metrics histogram.
    pub on_latency: Option<Box<dyn Fn(u64)>>,
    /// Called once per failure: the connection failing, or an error reply.
    pub on_error: Option<ErrorHook>,
    /// A cluster node's client: redirections go to this hook instead of the caller.
    pub on_redirect: Option<Box<dyn Fn(Resend)>>,
}

/// What the owner of the client does with each failure (count it, log it).
pub type ErrorHook = Box<dyn Fn(&RedisError)>;

/// How a command sent again after a redirection differs from a new one.
#[derive(Default, Clone, Copy)]
pub struct Resent {
    /// When it was first queued: its deadline does not move.
    pub queued_at: Option<u64>,
    /// `-ASK`: send `ASKING` just before it.
    pub asking: bool,
    pub hops: u8,
    pub slot: u16,
}

pub(super) fn now() -> u64 {
    // SAFETY: nginx updates ngx_current_msec on the worker's only thread.
    unsafe { ngx_current_msec as u64 }
}

pub(super) fn cycle_log() -> *mut ngx_log_t {
    // SAFETY: ngx_cycle is valid in a running worker.
    unsafe { (*ngx_cycle).log }
}

pub(super) fn exiting() -> bool {
    // SAFETY: plain flags nginx sets on this thread (or from its signal handler).
    unsafe { ngx::ffi::ngx_exiting != 0 || ngx::ffi::ngx_quit != 0 || ngx::ffi::ngx_terminate != 0 }
}

/// (Re)arms `ev` to fire in `ms`, exactly: nginx's `ngx_add_timer` keeps an armed timer that
/// is within 300 ms of the new one, which would let a deadline slip.
fn set_timer(ev: &mut ngx_event_t, ms: ngx_msec_t) {
    // SAFETY: ev is one of the client's own events, alive as long as the boxed client.
    unsafe {
        if ev.timer_set() != 0 {
            ngx_del_timer(ev);
        }
        ngx::ffi::ngx_add_timer(ev, ms);
    }
}

pub(super) fn clear_timer(ev: &mut ngx_event_t) {
    if ev.timer_set() != 0 {
        // SAFETY: as above; the timer is armed.
        unsafe { ngx_del_timer(ev) };
    }
}

impl Client {
    /// Creates the client; it connects on the first command.
    pub fn new(target: Target) -> Box<Client> {
        let nginx_log = NginxLog::new(cycle_log());
        let timeout_ms = target.timeout_ms as u64;
        let mut c = Box::new(Client {
            name: ngx_str_t::default(),
            target,
            nginx_log,
            conn: None,
            connected: false,
            probing: false,
            primary_known: false,
            discovering: false,
            sentinel: 0,
            out: Vec::with_capacity(4096),
            written: 0,
            input: Vec::with_capacity(READ_CHUNK),
            decoder: Decoder::default(),
            pending: Pipeline::new(timeout_ms),
            // SAFETY: an all-zero event is nginx's initial state; handlers are set below.
            flush_ev: unsafe { core::mem::zeroed() },
            deadline_ev: unsafe { core::mem::zeroed() },
            probe_ev: unsafe { core::mem::zeroed() },
            outage: OutageLog::default(),
            on_latency: None,
            on_error: None,
            on_redirect: None,
        });
        let this: *mut Client = &mut *c;
        for (ev, handler) in [
            (&mut c.flush_ev, flush_handler as extern "C" fn(*mut ngx_event_t)),
            (&mut c.deadline_ev, deadline_handler),
            (&mut c.probe_ev, probe_handler),
        ] {
            ev.handler = Some(handler);
            ev.data = this.cast();
            ev.log = cycle_log();
        }
        // A graceful shutdown waits for timers, but not for one that would probe forever.
        c.probe_ev.set_cancelable(1);
        c.name = ngx_str_t { len: c.target.name.len(), data: c.target.name.as_ptr().cast_mut() };
        c
    }

    /// Connected, and the connection answered.
    pub fn is_up(&self) -> bool {
        self.connected && !self.probing && !self.discovering
    }

    /// Sentinel mode: ask for the primary now, before the first request needs it.
    pub fn start(&mut self) {
        if self.target.master.is_some() && self.conn.is_none() {
            self.connect();
        }
    }

    pub fn timeout_ms(&self) -> u64 {
        self.pending.timeout_ms()
    }

    /// False while Redis is known to be down (a probe will tell when it answers again): `send`
    /// would fail at once.
    pub fn available(&self) -> bool {
        !self.probing
    }

    /// Queues one command (already RESP-encoded) whose reply can be at most `bound`. An error
    /// means Redis is known to be unavailable right now; the callback comes back uncalled.
    /// `script` names the script of an EVALSHA, for the NOSCRIPT fallback.
    pub fn send(
        &mut self,
        command: &[u8],
        bound: Bound,
        script: Option<&'static Script>,
        callback: Callback,
    ) -> Result<(), (RedisError, Callback)> {
        self.send_at(command, bound, script, callback, Resent::default())
    }

    /// `send`, for a command sent again after a redirection: its deadline stays the one it got
    /// when first queued (`queued_at`), and `asking` sends `ASKING` first.
    pub fn send_at(
        &mut self,
        command: &[u8],
        bound: Bound,
        script: Option<&'static Script>,
        callback: Callback,
        resent: Resent,
    ) -> Result<(), (RedisError, Callback)> {
        if self.probing {
            return Err((RedisError::Down, callback));
        }
        if self.conn.is_none() && !self.connect() {
            return Err((RedisError::Down, callback));
        }
        if self.discovering {
            // The connection is to a sentinel: nothing but its question goes there.
            return Err((RedisError::Down, callback));
        }
        let keep = script.is_some() || self.on_redirect.is_some();
        let waiter =
            Waiter { callback, script, command: keep.then(|| command.to_vec()), hops: resent.hops, slot: resent.slot };
        let at = resent.queued_at.unwrap_or_else(now);
        if resent.asking {
            self.out.extend_from_slice(crate::redis::cluster::ASKING);
            self.pending.push(Kind::Setup, None, Bound::SIMPLE, at);
        }
        self.out.extend_from_slice(command);
        self.pending.push(Kind::Command, Some(waiter), bound, at);
        if resent.queued_at.is_some() || self.deadline_ev.timer_set() == 0 {
            // A resent command's deadline may come before the one the timer is set for.
            self.arm_deadline();
        }
        self.schedule_flush();
        Ok(())
    }

    fn queue(&mut self, kind: Kind, command: &[u8], bound: Bound, waiter: Option<Waiter>) {
        self.out.extend_from_slice(command);
        self.pending.push(kind, waiter, bound, now());
        if self.deadline_ev.timer_set() == 0 {
            self.arm_deadline();
        }
    }

    fn schedule_flush(&mut self) {
        if self.connected && self.flush_ev.posted() == 0 {
            // SAFETY: flush_ev lives as long as the boxed client; posted events run on this
            // thread at the end of the current event-loop iteration.
            unsafe { ngx_post_event(&mut self.flush_ev, ptr::addr_of_mut!(ngx_posted_events)) };
        }
    }

    /// Opens a connection and queues its setup (AUTH, SELECT, PING); false if it failed at
    /// once (the failure is handled: probing starts).
    fn connect(&mut self) -> bool {
        let this: *mut Client = self;
        if self.target.master.is_some() && !self.primary_known {
            return self.discover();
        }
        let opened = Connection::open(
            &self.target.address,
            &mut self.name,
            &mut self.nginx_log.log,
            this.cast(),
            Some(read_handler),
            Some(write_handler),
        );
        let Some((conn, connected)) = opened else {
            self.fail(RedisError::Down, "connect failed");
            return false;
        };
        self.conn = Some(conn);
        self.connected = false;
        let mut cmd = Vec::new();
        if let Some(password) = &self.target.password {
            match &self.target.username {
                Some(user) => resp::encode_command(&mut cmd, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => resp::encode_command(&mut cmd, &[b"AUTH", password.as_bytes()]),
            }
            self.queue(Kind::Setup, &cmd, Bound::SIMPLE, None);
            cmd.clear();
        }
        if self.target.db != 0 {
            let db = self.target.db.to_string();
            resp::encode_command(&mut cmd, &[b"SELECT", db.as_bytes()]);
            self.queue(Kind::Setup, &cmd, Bound::SIMPLE, None);
            cmd.clear();
        }
        resp::encode_command(&mut cmd, &[b"PING"]);
        self.queue(Kind::Probe, &cmd, Bound::SIMPLE, None);
        if connected {
            self.on_connected();
        }
        true
    }

    /// Writes as much of the queue as the socket takes.
    fn flush(&mut self) {
        if !self.connected {
            return;
        }
        while self.written < self.out.len() {
            let Some(conn) = self.conn.as_mut() else { return };
            match conn.send(&self.out[self.written..]) {
                Io::Done(n) => self.written += n,
                Io::Again => return,
                Io::Closed => return self.fail(RedisError::Down, "send failed"),
            }
        }
        self.out.clear();
        self.written = 0;
    }

    fn read(&mut self) {
        loop {
            let Some(conn) = self.conn.as_mut() else { return };
            match conn.recv(&mut self.input, READ_CHUNK) {
                Io::Done(_) => {
                    if !self.dispatch() {
                        return;
                    }
                }
                Io::Again => break,
                Io::Closed => return self.fail(RedisError::Down, "connection closed"),
            }
        }
        // The head may have changed: the next deadline is another reply's.
        self.arm_deadline();
    }

    /// A PING was answered: commands may go again.
    fn recovered(&mut self) {
        self.outage.recovered(&self.target.name, now());
        self.probing = false;
    }

    /// Deadline timer: callers whose deadline passed get `Timeout`; the connection goes if the
    /// pipeline says so.
    fn on_deadline(&mut self) {
        let started = self.decoder.in_reply() || !self.input.is_empty();
        let (expired, overdue) = self.pending.expire(now(), started);
        match overdue {
            Some(why) => self.fail(RedisError::Timeout, &why.to_string()),
            None => self.arm_deadline(),
        }
        for waiter in expired {
            (waiter.callback)(Err(RedisError::Timeout));
        }
    }

    fn arm_deadline(&mut self) {
        match self.pending.next_due() {
            Some(due) => set_timer(&mut self.deadline_ev, due.saturating_sub(now()).max(1) as ngx_msec_t),
            None => clear_timer(&mut self.deadline_ev),
        }
    }

    /// Closes the connection, fails every waiting caller, and starts probing. `why` says what
    /// happened, for the log (throttled: once, then a line a second at most).
    fn fail(&mut self, err: RedisError, why: &str) {
        if let Some(report) = &self.on_error {
            report(&err);
        }
        let mut why = why.to_string();
        if self.target.master.is_some() {
            // Rediscover on every reconnection; a sentinel that failed is not asked next.
            if self.discovering {
                why = format!("asking sentinel #{}: {why}", self.sentinel + 1);
                self.sentinel += 1;
            }
            self.discovering = false;
            self.primary_known = false;
        }
        // What nginx said about the connection, if anything (say, the TLS alert behind a
        // "connection closed").
        if let Some(said) = self.nginx_log.take() {
            why = format!("{why}: {said}");
        }
        self.outage.failed(&self.target.name, &err, &why, now());
        self.close();
        self.probing = true;
        if !exiting() {
            set_timer(&mut self.probe_ev, PROBE_INTERVAL_MS as ngx_msec_t);
        }
        for waiter in self.pending.take_waiters() {
            (waiter.callback)(Err(err.clone()));
        }
    }

    fn close(&mut self) {
        if self.flush_ev.posted() != 0 {
            // SAFETY: the event is in the posted queue; removing it keeps the queue valid.
            unsafe { ngx_delete_posted_event(&mut self.flush_ev) };
        }
        clear_timer(&mut self.deadline_ev);
        if let Some(conn) = self.conn.take() {
            conn.close();
        }
        self.connected = false;
        self.out.clear();
        self.written = 0;
        self.input.clear();
        if self.input.capacity() > 4 * READ_CHUNK {
            self.input = Vec::with_capacity(READ_CHUNK);
        }
        self.decoder = Decoder::default();
    }

    /// Worker exit: drop everything without calling back into requests being torn down.
    pub fn shutdown(&mut self) {
        drop(self.pending.take_waiters());
        self.close();
        clear_timer(&mut self.probe_ev);
    }
}

fn client_of_connection(ev: *mut ngx_event_t) -> *mut Client {
    // SAFETY: our connection events' data is the connection, whose data is the client (see
    // connect()).
    unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        (*c).data.cast::<Client>()
    }
}

extern "C" fn write_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis write handler", (), || {
        // SAFETY: ev belongs to the client's live connection.
        let client = unsafe { &mut *client_of_connection(ev) };
        if !client.connected {
            let error = client.conn.as_ref().and_then(Connection::connect_error);
            if let Some(errno) = error {
                let why = std::io::Error::from_raw_os_error(errno).to_string();
                client.nginx_log.take(); // nginx's own "connect() failed" says the same
                client.fail(RedisError::Down, &format!("connect() failed ({why})"));
                return;
            }
            client.on_connected();
            return;
        }
        client.flush();
    })
}

extern "C" fn read_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis read handler", (), || {
        // SAFETY: ev belongs to the client's live connection.
        let client = unsafe { &mut *client_of_connection(ev) };
        client.read();
    })
}

/// The client of one of its own events (flush, deadline, probe).
fn client_of_event(ev: *mut ngx_event_t) -> &'static mut Client {
    // SAFETY: these events' data is the boxed client (see Client::new), which lives as long
    // as the worker.
    unsafe { &mut *(*ev).data.cast::<Client>() }
}

extern "C" fn flush_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis flush", (), || client_of_event(ev).flush())
}

extern "C" fn deadline_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis deadline", (), || client_of_event(ev).on_deadline())
}

extern "C" fn probe_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis probe", (), || {
        let client = client_of_event(ev);
        if client.conn.is_none() && !exiting() {
            client.connect();
        }
    })
}
