//! One non-blocking TCP or Unix-socket connection to Redis through nginx's peer connection:
//! the socket, its pool and its two events, nothing about RESP or callers (`client.rs`).

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_close_connection, ngx_connection_t, ngx_create_pool, ngx_destroy_pool, ngx_event_connect_peer,
    ngx_event_get_peer, ngx_event_handler_pt, ngx_handle_read_event, ngx_handle_write_event, ngx_log_t,
    ngx_peer_connection_t, ngx_pool_t, ngx_str_t, ngx_uint_t, NGX_AGAIN, NGX_BUSY, NGX_DECLINED, NGX_ERROR,
    NGX_LOG_ALERT, NGX_LOG_ERR, NGX_OK,
};

use super::SocketAddress;

/// What a send or a receive did.
pub enum Io {
    /// This many bytes moved.
    Done(usize),
    /// The socket is not ready; the event fires when it is.
    Again,
    /// The peer closed the connection, or the socket failed: nothing more comes.
    Closed,
}

pub struct Connection {
    pc: ngx_peer_connection_t,
    pool: *mut ngx_pool_t,
    /// The owner's event handlers, put back after nginx's TLS handshake borrowed the events.
    read: ngx_event_handler_pt,
    write: ngx_event_handler_pt,
}

impl Connection {
    /// Starts connecting. `data` becomes the connection's `data` (the event handlers find
    /// their client through it); `log` is the log nginx uses for the socket's own errors.
    /// Returns the connection and whether it is already established.
    ///
    /// `address` and `name` must outlive the connection (they live in the client's target).
    pub fn open(
        address: &SocketAddress,
        name: *mut ngx_str_t,
        log: *mut ngx_log_t,
        data: *mut c_void,
        read: ngx_event_handler_pt,
        write: ngx_event_handler_pt,
    ) -> Option<(Connection, bool)> {
        // SAFETY: a fresh pool for this connection's lifetime, destroyed in close().
        let pool = unsafe { ngx_create_pool(1024, log) };
        if pool.is_null() {
            return None;
        }
        // SAFETY: an all-zero peer connection is nginx's documented initial state.
        let mut conn = Connection { pc: unsafe { core::mem::zeroed() }, pool, read, write };
        conn.pc.sockaddr = address.as_ptr().cast_mut().cast();
        conn.pc.socklen = address.len() as _;
        conn.pc.name = name;
        conn.pc.get = Some(ngx_event_get_peer);
        conn.pc.log = log;
        conn.pc.set_log_error(ngx::ffi::ngx_connection_log_error_e_NGX_ERROR_ERR);
        // SAFETY: pc is fully initialised for a plain connect.
        let rc = unsafe { ngx_event_connect_peer(&mut conn.pc) };
        if rc == NGX_ERROR as isize || rc == NGX_BUSY as isize || rc == NGX_DECLINED as isize {
            // nginx closed the socket it may have opened; only the pool is ours to free.
            conn.pc.connection = ptr::null_mut();
            conn.close();
            return None;
        }
        // SAFETY: connect_peer succeeded or is in progress, so pc.connection is set.
        unsafe {
            let c = &mut *conn.pc.connection;
            c.data = data;
            c.pool = pool;
            (*c.read).handler = read;
            (*c.write).handler = write;
        }
        Some((conn, rc != NGX_AGAIN as isize))
    }

    pub fn send(&mut self, bytes: &[u8]) -> Io {
        let c = self.pc.connection;
        // SAFETY: c is our live connection; the buffer is valid for its length.
        let n = unsafe {
            let send = (*c).send.expect("connections always have send");
            send(c, bytes.as_ptr().cast_mut(), bytes.len())
        };
        // SAFETY: c is live; re-arm the write event for the rest.
        io_outcome(n, || unsafe { ngx_handle_write_event((*c).write, 0) })
    }

    /// Receives at most `max` bytes at the end of `buf`.
    pub fn recv(&mut self, buf: &mut Vec<u8>, max: usize) -> Io {
        let c = self.pc.connection;
        let start = buf.len();
        // Read into spare capacity: no zeroing of a chunk per read.
        buf.reserve(max);
        // SAFETY: c is our live connection; the buffer has `max` bytes of spare capacity, and
        // only the n bytes recv wrote become part of the vector.
        let n = unsafe {
            let recv = (*c).recv.expect("connections always have recv");
            let n = recv(c, buf.as_mut_ptr().add(start), max);
            if n > 0 {
                buf.set_len(start + n as usize);
            }
            n
        };
        // SAFETY: c is live.
        io_outcome(n, || unsafe { ngx_handle_read_event((*c).read, 0) })
    }

    /// The outcome of a non-blocking connect once the write event fired: the errno it failed
    /// with, if it did.
    pub fn connect_error(&self) -> Option<i32> {
        // SAFETY: the connection is live.
        let fd = unsafe { (*self.pc.connection).fd };
        let mut err: libc::c_int = 0;
        let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt on our own socket with a correctly sized buffer.
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, ptr::from_mut(&mut err).cast(), &mut len) };
        if rc == -1 {
            return Some(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        (err != 0).then_some(err)
    }

    /// nginx's connection, for the TLS layer.
    pub fn raw(&self) -> *mut ngx_connection_t {
        self.pc.connection
    }

    /// Gives the events back to the owner's handlers (after a TLS handshake).
    pub fn restore_handlers(&mut self) {
        // SAFETY: the connection is live.
        unsafe {
            (*(*self.pc.connection).read).handler = self.read;
            (*(*self.pc.connection).write).handler = self.write;
        }
    }

    pub fn close(mut self) {
        if !self.pc.connection.is_null() {
            // SAFETY: a TLS connection is freed without waiting for the peer's close_notify
            // (as nginx's upstream does for a connection it drops).
            unsafe {
                let ssl = (*self.pc.connection).ssl;
                if !ssl.is_null() {
                    (*ssl).set_no_wait_shutdown(1);
                    (*ssl).set_no_send_shutdown(1);
                    ngx::ffi::ngx_ssl_shutdown(self.pc.connection);
                }
            }
            // SAFETY: our live connection; close removes its timers and events.
            unsafe { ngx_close_connection(self.pc.connection) };
            self.pc.connection = ptr::null_mut();
        }
        // SAFETY: the pool was created in open() and nothing references it any more.
        unsafe { ngx_destroy_pool(self.pool) };
    }
}

/// What a `send`/`recv` result means: NGX_AGAIN re-arms the event (`rearm`), 0 (Redis closed
/// the connection) or an error means nothing more comes, else `n` bytes moved.
fn io_outcome(n: isize, rearm: impl FnOnce() -> isize) -> Io {
    if n == NGX_AGAIN as isize {
        return if rearm() == NGX_OK as isize { Io::Again } else { Io::Closed };
    }
    if n <= 0 {
        return Io::Closed;
    }
    Io::Done(n as usize)
}

/// The log nginx writes its own messages about the connection to (a failed `connect()`, an
/// SSL error): they are kept for the client's throttled log line instead of being written on
/// every reconnect attempt (nginx writes a failed TLS read as `[crit]`, which would repeat
/// five times a second); `[alert]` and worse still go to the error log at once.
pub struct NginxLog {
    pub log: ngx_log_t,
    last: String,
}

/// What is kept of one message.
const KEPT_MESSAGE: usize = 300;

impl NginxLog {
    /// A copy of `base` (its file and threshold raised to `error`) that keeps messages.
    pub fn new(base: *const ngx_log_t) -> Box<NginxLog> {
        // SAFETY: base is the cycle's log; the copy shares its open file, which outlives it.
        let mut log = unsafe { ptr::read(base) };
        log.log_level = NGX_LOG_ERR as _;
        log.next = ptr::null_mut();
        log.handler = None;
        let mut me = Box::new(NginxLog { log, last: String::new() });
        me.log.writer = Some(keep_message);
        me.log.wdata = ptr::from_mut(&mut *me).cast();
        me
    }

    /// The last message since the previous call, without nginx's time/level/pid prefix.
    pub fn take(&mut self) -> Option<String> {
        (!self.last.is_empty()).then(|| core::mem::take(&mut self.last))
    }
}

unsafe extern "C" fn keep_message(log: *mut ngx_log_t, level: ngx_uint_t, buf: *mut u8, len: usize) {
    // SAFETY: nginx calls the writer with the log we built (wdata is its boxed owner) and a
    // formatted line of `len` bytes.
    let (me, line) = unsafe { (&mut *(*log).wdata.cast::<NginxLog>(), core::slice::from_raw_parts(buf, len)) };
    if level <= NGX_LOG_ALERT as ngx_uint_t && !me.log.file.is_null() {
        // SAFETY: the cycle log's open file; one write of a whole line, as nginx does.
        unsafe { libc::write((*me.log.file).fd, buf.cast(), len) };
    }
    let text = String::from_utf8_lossy(line);
    // "2026/01/01 00:00:00 [error] 12#12: *5 message\n" -> "message"
    let text = text.split_once("#").and_then(|(_, rest)| rest.split_once(": ")).map_or(&*text, |(_, m)| m);
    let text = text.strip_prefix('*').and_then(|t| t.split_once(' ')).map_or(text, |(_, m)| m);
    me.last = text.trim_end().chars().take(KEPT_MESSAGE).collect();
}
