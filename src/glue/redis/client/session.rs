//! Between the socket connecting and commands flowing: TLS (`rediss://`) and, with Sentinel,
//! the question to a sentinel that tells where the primary is.

use ngx::ffi::{ngx_connection_t, ngx_str_t};

use super::{cycle_log, read_handler, write_handler, Client};
use crate::glue::redis::connection::Connection;
use crate::glue::redis::tls::{self, Handshake};
use crate::glue::redis::{RedisError, SocketAddress};
use crate::glue::util::guard;
use crate::redis::pipeline::Kind;
use crate::redis::resp::Reply;
use crate::redis::sentinel;

impl Client {
    /// Sentinel mode: connects to the next sentinel and asks it where the primary is; the
    /// answer (`on_discovered`) connects to the primary.
    pub(super) fn discover(&mut self) -> bool {
        let this: *mut Client = self;
        let Some(master) = self.target.master.as_deref() else { return false };
        let query = sentinel::master_query(master);
        self.sentinel %= self.target.sentinels.len();
        let opened = Connection::open(
            &self.target.sentinels[self.sentinel],
            &mut self.name,
            &mut self.nginx_log.log,
            this.cast(),
            Some(read_handler),
            Some(write_handler),
        );
        self.discovering = true;
        let Some((conn, connected)) = opened else {
            self.fail(RedisError::Down, "connect failed");
            return false;
        };
        self.conn = Some(conn);
        self.connected = false;
        self.queue(Kind::Discover, &query, sentinel::MASTER_REPLY, None);
        if connected {
            self.on_connected();
        }
        true
    }

    pub(super) fn on_discovered(&mut self, reply: &Reply) {
        match sentinel::master_address(reply) {
            Err(why) => self.fail(RedisError::Down, &why),
            Ok(addr) => {
                self.close();
                self.discovering = false;
                self.primary_known = true;
                self.target.address = SocketAddress::inet(&addr);
                let master = self.target.master.as_deref().unwrap_or_default();
                self.target.name = format!("\"{master}\" at {addr}");
                self.name = ngx_str_t { len: self.target.name.len(), data: self.target.name.as_ptr().cast_mut() };
                self.connect();
            }
        }
    }

    /// The socket is connected: start TLS if configured (`rediss://`; with Sentinel,
    /// `rediss+sentinel://`, to the sentinels as to the primary), else the session is ready.
    pub(super) fn on_connected(&mut self) {
        if let (Some(tls), Some(conn)) = (&self.target.tls, &self.conn) {
            match tls::start(conn.raw(), tls, Some(tls_handler)) {
                Handshake::Again => return, // tls_handler continues
                Handshake::Done => return self.on_handshake(),
                Handshake::Failed(why) => return self.fail(RedisError::Down, &why),
            }
        }
        self.connected = true;
        self.flush();
    }

    fn on_handshake(&mut self) {
        let (Some(tls), Some(conn)) = (&self.target.tls, &mut self.conn) else { return };
        conn.restore_handlers();
        match tls::check(conn.raw(), tls) {
            Ok(()) => {
                self.connected = true;
                self.flush();
            }
            Err(why) => self.fail(RedisError::Down, &why),
        }
    }
}

extern "C" fn tls_handler(c: *mut ngx_connection_t) {
    guard(cycle_log(), "redis TLS handshake", (), || {
        // SAFETY: the connection's data is the client (see connect()).
        let client = unsafe { &mut *(*c).data.cast::<Client>() };
        client.on_handshake();
    })
}
