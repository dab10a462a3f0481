//! One non-blocking TCP or Unix-socket connection to Redis through nginx's peer connection:
//! the socket, its pool and its two events, nothing about RESP or callers (`client.rs`).

use core::ffi::c_void;
use core::ptr;

use ngx::ffi::{
    ngx_close_connection, ngx_create_pool, ngx_destroy_pool, ngx_event_connect_peer, ngx_event_get_peer,
    ngx_event_handler_pt, ngx_handle_read_event, ngx_handle_write_event, ngx_log_t, ngx_peer_connection_t, ngx_pool_t,
    ngx_str_t, NGX_AGAIN, NGX_BUSY, NGX_DECLINED, NGX_ERROR, NGX_OK,
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
        let mut conn = Connection { pc: unsafe { core::mem::zeroed() }, pool };
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

    pub fn close(mut self) {
        if !self.pc.connection.is_null() {
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
