//! The per-worker Redis connection, on nginx's own event loop.
//!
//! One persistent TCP connection per worker (an nginx peer connection, non-blocking), shared
//! by every request of that worker: commands queued during one event-loop iteration are
//! written together by a posted flush event (pipelining), replies are matched to callers in
//! order. Timeouts are nginx timers: a connect timeout on the write event, a reply timeout on
//! the read event while replies are outstanding. On any failure every outstanding caller gets
//! an error at once, the connection is closed, and new commands fail fast until a backoff
//! (doubling, capped) has passed — then the next command reconnects: recovery is automatic.
//!
//! Callers never wait here: `send` either queues the command and later runs the callback
//! from the event loop, or returns an error immediately (Redis known to be down).

use core::ffi::c_void;
use core::ptr;
use std::collections::VecDeque;

use ngx::ffi::{
    ngx_close_connection, ngx_connection_t, ngx_create_pool, ngx_current_msec, ngx_cycle,
    ngx_del_timer, ngx_delete_posted_event, ngx_destroy_pool, ngx_event_connect_peer,
    ngx_event_get_peer, ngx_event_t, ngx_handle_read_event, ngx_handle_write_event, ngx_msec_t,
    ngx_peer_connection_t, ngx_pool_t, ngx_post_event, ngx_posted_events, ngx_str_t, NGX_AGAIN,
    NGX_ERROR, NGX_LOG_ERR, NGX_LOG_WARN, NGX_OK,
};
use ngx::ngx_log_error;

use super::util::guard;
use crate::limit::script::Script;
use crate::redis::resp::{self, Reply};

/// Where and how to reach Redis; resolved at configuration time.
#[derive(Clone)]
pub struct Target {
    pub sockaddr: Vec<u8>,
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    pub timeout_ms: ngx_msec_t,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Not connected and inside the reconnect backoff, or the connection failed.
    Down,
    /// No reply within the timeout.
    Timeout,
    /// Redis answered with an error reply.
    Server(String),
    /// Unparseable bytes from Redis.
    Protocol,
}

pub type Callback = Box<dyn FnOnce(Result<Reply, RedisError>)>;

struct Pending {
    callback: Option<Callback>,
    /// For an EVALSHA: its script and a copy of the command, to send as EVAL when Redis
    /// answers NOSCRIPT (after a restart or SCRIPT FLUSH).
    on_noscript: Option<(&'static Script, Vec<u8>)>,
    sent_at: ngx_msec_t,
    handshake: bool,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum State {
    Disconnected,
    Connecting,
    Ready,
}

const BACKOFF_MIN_MS: ngx_msec_t = 100;
const BACKOFF_MAX_MS: ngx_msec_t = 5_000;
/// Replies are read in chunks of this size; a larger reply spans several reads.
const READ_CHUNK: usize = 16 * 1024;

pub struct Client {
    target: Target,
    pc: ngx_peer_connection_t,
    pool: *mut ngx_pool_t,
    name: ngx_str_t,
    state: State,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    pending: VecDeque<Pending>,
    down_until: ngx_msec_t,
    backoff: ngx_msec_t,
    flush_ev: ngx_event_t,
    /// Called with each reply's latency in ms, for the metrics histogram.
    pub on_latency: Option<Box<dyn Fn(u64)>>,
    /// Called once per failure that takes the connection down.
    pub on_error: Option<Box<dyn Fn(&RedisError)>>,
}

fn now() -> ngx_msec_t {
    // SAFETY: nginx updates ngx_current_msec on the worker's only thread.
    unsafe { ngx_current_msec }
}

fn cycle_log() -> *mut ngx::ffi::ngx_log_t {
    // SAFETY: ngx_cycle is valid in a running worker.
    unsafe { (*ngx_cycle).log }
}

impl Client {
    /// Creates the client; it connects lazily on the first command.
    pub fn new(target: Target) -> Box<Client> {
        let mut c = Box::new(Client {
            name: ngx_str_t::default(),
            target,
            // SAFETY: an all-zero peer connection is nginx's documented initial state.
            pc: unsafe { core::mem::zeroed() },
            pool: ptr::null_mut(),
            state: State::Disconnected,
            out: Vec::with_capacity(4096),
            written: 0,
            input: Vec::with_capacity(READ_CHUNK),
            pending: VecDeque::new(),
            down_until: 0,
            backoff: BACKOFF_MIN_MS,
            // SAFETY: as above, for an event.
            flush_ev: unsafe { core::mem::zeroed() },
            on_latency: None,
            on_error: None,
        });
        let this: *mut Client = &mut *c;
        c.flush_ev.handler = Some(flush_handler);
        c.flush_ev.data = this.cast();
        c.flush_ev.log = cycle_log();
        c.name = ngx_str_t { len: c.target.name.len(), data: c.target.name.as_ptr().cast_mut() };
        c
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Ready
    }

    /// False while Redis is known to be down (inside the reconnect backoff): `send` would
    /// fail at once.
    pub fn available(&self) -> bool {
        self.state != State::Disconnected || now() >= self.down_until
    }

    /// Queues one command (already RESP-encoded). An error means Redis is known to be
    /// unavailable right now; the callback comes back uncalled.
    /// `script` names the script of an EVALSHA, for the NOSCRIPT fallback.
    pub fn send(&mut self, command: &[u8], script: Option<&'static Script>, callback: Callback) -> Result<(), (RedisError, Callback)> {
        if !self.available() {
            return Err((RedisError::Down, callback));
        }
        if self.state == State::Disconnected {
            if let Err(e) = self.connect() {
                return Err((e, callback));
            }
        }
        self.out.extend_from_slice(command);
        let on_noscript = script.map(|s| (s, command.to_vec()));
        self.pending.push_back(Pending { callback: Some(callback), on_noscript, sent_at: now(), handshake: false });
        self.schedule_flush();
        Ok(())
    }

    fn schedule_flush(&mut self) {
        if self.state == State::Ready && self.flush_ev.posted() == 0 {
            // SAFETY: flush_ev lives as long as the boxed client; posted events run on this
            // thread at the end of the current event-loop iteration.
            unsafe { ngx_post_event(&mut self.flush_ev, ptr::addr_of_mut!(ngx_posted_events)) };
        }
    }

    fn connect(&mut self) -> Result<(), RedisError> {
        let log = cycle_log();
        // SAFETY: a fresh pool for this connection's lifetime, destroyed in close().
        self.pool = unsafe { ngx_create_pool(1024, log) };
        if self.pool.is_null() {
            return Err(RedisError::Down);
        }
        // SAFETY: zeroing resets the peer state; the sockaddr bytes outlive the connection.
        self.pc = unsafe { core::mem::zeroed() };
        self.pc.sockaddr = self.target.sockaddr.as_ptr().cast_mut().cast();
        self.pc.socklen = self.target.sockaddr.len() as _;
        self.pc.name = &mut self.name;
        self.pc.get = Some(ngx_event_get_peer);
        self.pc.log = log;
        self.pc.set_log_error(ngx::ffi::ngx_connection_log_error_e_NGX_ERROR_ERR);

        // SAFETY: pc is fully initialised for a plain TCP connect.
        let rc = unsafe { ngx_event_connect_peer(&mut self.pc) };
        if rc == NGX_ERROR as isize || rc == ngx::ffi::NGX_BUSY as isize || rc == ngx::ffi::NGX_DECLINED as isize {
            self.pc.connection = ptr::null_mut();
            self.fail(RedisError::Down);
            return Err(RedisError::Down);
        }
        let this: *mut Client = self;
        // SAFETY: connect_peer succeeded or is in progress, so pc.connection is set.
        unsafe {
            let c = &mut *self.pc.connection;
            c.data = this.cast();
            c.pool = self.pool;
            (*c.read).handler = Some(read_handler);
            (*c.write).handler = Some(write_handler);
        }
        self.state = State::Connecting;
        self.queue_handshake();
        if rc == NGX_AGAIN as isize {
            // SAFETY: the write event reports connect completion; the timer bounds it.
            unsafe { ngx::ffi::ngx_add_timer((*self.pc.connection).write, self.target.timeout_ms) };
        } else {
            self.on_connected();
        }
        Ok(())
    }

    /// AUTH and SELECT go first on every new connection; their replies must be OK.
    fn queue_handshake(&mut self) {
        let mut cmd = Vec::new();
        if let Some(password) = &self.target.password {
            match &self.target.username {
                Some(user) => resp::encode_command(&mut cmd, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => resp::encode_command(&mut cmd, &[b"AUTH", password.as_bytes()]),
            }
            self.push_handshake(&cmd);
            cmd.clear();
        }
        if self.target.db != 0 {
            let db = self.target.db.to_string();
            resp::encode_command(&mut cmd, &[b"SELECT", db.as_bytes()]);
            self.push_handshake(&cmd);
        }
    }

    fn push_handshake(&mut self, cmd: &[u8]) {
        self.out.extend_from_slice(cmd);
        self.pending.push_back(Pending { callback: None, on_noscript: None, sent_at: now(), handshake: true });
    }

    fn on_connected(&mut self) {
        self.state = State::Ready;
        self.backoff = BACKOFF_MIN_MS;
        self.flush();
    }

    fn conn(&mut self) -> Option<&mut ngx_connection_t> {
        // SAFETY: pc.connection is either NULL or the live connection we opened.
        unsafe { self.pc.connection.as_mut() }
    }

    /// Writes as much of the queue as the socket takes.
    fn flush(&mut self) {
        if self.state != State::Ready {
            return;
        }
        while self.written < self.out.len() {
            let c = self.pc.connection;
            if c.is_null() {
                return;
            }
            // SAFETY: c is our live connection; the buffer is valid for the given length.
            let n = unsafe {
                let send = (*c).send.expect("connections always have send");
                send(c, self.out[self.written..].as_ptr().cast_mut(), self.out.len() - self.written)
            };
            if n == NGX_AGAIN as isize {
                // SAFETY: c is live; re-arm the write event for the rest.
                if unsafe { ngx_handle_write_event((*c).write, 0) } != NGX_OK as isize {
                    self.fail(RedisError::Down);
                }
                return;
            }
            if n <= 0 {
                self.fail(RedisError::Down);
                return;
            }
            self.written += n as usize;
        }
        self.out.clear();
        self.written = 0;
        self.arm_reply_timer();
    }

    fn arm_reply_timer(&mut self) {
        let timeout = self.target.timeout_ms;
        let waiting = !self.pending.is_empty();
        let Some(c) = self.conn() else { return };
        // SAFETY: c.read is the live read event of our connection.
        unsafe {
            let rev = &mut *c.read;
            if waiting {
                if rev.timer_set() == 0 {
                    ngx::ffi::ngx_add_timer(rev, timeout);
                }
            } else if rev.timer_set() != 0 {
                ngx_del_timer(rev);
            }
        }
    }

    fn read(&mut self) {
        loop {
            let c = self.pc.connection;
            if c.is_null() {
                return;
            }
            let start = self.input.len();
            // Read into spare capacity: no zeroing of a chunk per read.
            self.input.reserve(READ_CHUNK);
            // SAFETY: c is our live connection; the buffer has READ_CHUNK bytes of spare
            // capacity, and only the n bytes recv wrote become part of the vector.
            let n = unsafe {
                let recv = (*c).recv.expect("connections always have recv");
                let n = recv(c, self.input.as_mut_ptr().add(start), READ_CHUNK);
                if n > 0 {
                    self.input.set_len(start + n as usize);
                }
                n
            };
            if n == NGX_AGAIN as isize {
                // SAFETY: c is live.
                if unsafe { ngx_handle_read_event((*c).read, 0) } != NGX_OK as isize {
                    self.fail(RedisError::Down);
                }
                break;
            }
            if n <= 0 {
                // 0: Redis closed the connection; <0: error. Either way nothing more comes.
                self.fail(RedisError::Down);
                return;
            }
            if !self.dispatch() {
                return;
            }
        }
        // Progress resets the reply timer.
        if let Some(c) = self.conn() {
            // SAFETY: c.read is live.
            unsafe {
                if (*c.read).timer_set() != 0 {
                    ngx_del_timer(c.read);
                }
            }
        }
        self.arm_reply_timer();
    }

    /// Hands every complete reply to its caller; false if the connection was failed.
    fn dispatch(&mut self) -> bool {
        let mut consumed = 0;
        loop {
            match resp::decode(&self.input[consumed..]) {
                Ok(Some((reply, used))) => {
                    consumed += used;
                    let Some(mut p) = self.pending.pop_front() else {
                        self.fail(RedisError::Protocol);
                        return false;
                    };
                    if let Some(observe) = &self.on_latency {
                        observe(now().saturating_sub(p.sent_at) as u64);
                    }
                    if p.handshake {
                        if let Reply::Error(e) = reply {
                            ngx_log_error!(NGX_LOG_ERR, cycle_log(), "shield: redis {} handshake failed: {}", self.target.name, e);
                            self.input.drain(..consumed);
                            self.fail(RedisError::Server(e));
                            return false;
                        }
                        continue;
                    }
                    let noscript = matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT"));
                    if let Some(retry) = p.on_noscript.take().filter(|_| noscript).and_then(|(s, cmd)| s.eval_for(&cmd)) {
                        self.out.extend_from_slice(&retry);
                        p.sent_at = now();
                        self.pending.push_back(p);
                        self.schedule_flush();
                        continue;
                    }
                    let result = match reply {
                        Reply::Error(e) => Err(RedisError::Server(e)),
                        other => Ok(other),
                    };
                    if let Some(cb) = p.callback.take() {
                        cb(result);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.fail(RedisError::Protocol);
                    return false;
                }
            }
        }
        self.input.drain(..consumed);
        true
    }

    /// Closes the connection, fails every outstanding caller and starts the backoff.
    fn fail(&mut self, err: RedisError) {
        if self.state != State::Disconnected || !self.pending.is_empty() {
            ngx_log_error!(NGX_LOG_WARN, cycle_log(), "shield: redis {} unavailable ({err:?}), retrying in {} ms", self.target.name, self.backoff);
            if let Some(report) = &self.on_error {
                report(&err);
            }
        }
        self.close();
        self.down_until = now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX_MS);
        let pending = core::mem::take(&mut self.pending);
        for mut p in pending {
            if let Some(cb) = p.callback.take() {
                cb(Err(err.clone()));
            }
        }
    }

    fn close(&mut self) {
        if self.flush_ev.posted() != 0 {
            // SAFETY: the event is in the posted queue; removing it keeps the queue valid.
            unsafe { ngx_delete_posted_event(&mut self.flush_ev) };
        }
        if !self.pc.connection.is_null() {
            // SAFETY: our live connection; close removes its timers and events.
            unsafe { ngx_close_connection(self.pc.connection) };
            self.pc.connection = ptr::null_mut();
        }
        if !self.pool.is_null() {
            // SAFETY: the pool was created in connect() and nothing else references it now.
            unsafe { ngx_destroy_pool(self.pool) };
            self.pool = ptr::null_mut();
        }
        self.state = State::Disconnected;
        self.out.clear();
        self.written = 0;
        self.input.clear();
    }

    /// Worker exit: drop everything without calling back into requests being torn down.
    pub fn shutdown(&mut self) {
        self.pending.clear();
        self.close();
    }
}

fn client_of(ev: *mut ngx_event_t) -> *mut Client {
    // SAFETY: our events' data is the connection, whose data is the client (see connect()).
    unsafe {
        let c = (*ev).data.cast::<ngx_connection_t>();
        (*c).data.cast::<Client>()
    }
}

extern "C" fn write_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis write handler", (), || {
        // SAFETY: ev belongs to the client's live connection.
        let client = unsafe { &mut *client_of(ev) };
        let timedout = unsafe { (*ev).timedout() } != 0;
        if client.state == State::Connecting {
            if timedout {
                client.fail(RedisError::Timeout);
                return;
            }
            // SAFETY: ev is live; the connect timer is no longer needed.
            unsafe {
                if (*ev).timer_set() != 0 {
                    ngx_del_timer(ev);
                }
            }
            if let Err(err) = test_connect(client) {
                ngx_log_error!(NGX_LOG_ERR, cycle_log(), "shield: connect() to redis {} failed ({err})", client.target.name);
                client.fail(RedisError::Down);
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
        let client = unsafe { &mut *client_of(ev) };
        if unsafe { (*ev).timedout() } != 0 {
            client.fail(RedisError::Timeout);
            return;
        }
        client.read();
    })
}

extern "C" fn flush_handler(ev: *mut ngx_event_t) {
    guard(cycle_log(), "redis flush", (), || {
        // SAFETY: flush_ev.data is the boxed client (see Client::new).
        let client = unsafe { &mut *(*ev).data.cast::<Client>() };
        client.flush();
    })
}

/// The pending socket error of a non-blocking connect, as errno.
fn test_connect(client: &mut Client) -> Result<(), i32> {
    let Some(c) = client.conn() else { return Err(0) };
    let mut err: i32 = 0;
    let mut len = core::mem::size_of::<i32>() as u32;
    // SAFETY: getsockopt on our own socket with a correctly sized buffer.
    let rc = unsafe {
        ngx::ffi::getsockopt(c.fd, ngx::ffi::SOL_SOCKET as i32, ngx::ffi::SO_ERROR as i32, ptr::from_mut(&mut err).cast::<c_void>(), &mut len)
    };
    if rc == -1 {
        return Err(ngx::ffi::ngx_socket_errno());
    }
    if err != 0 {
        return Err(err);
    }
    Ok(())
}
