//! The per-worker Redis client, on nginx's own event loop: what every Redis feature shares.
//!
//! - `mod.rs` (here): the `shield_redis` target, resolved at configuration time into a socket
//!   address (`libc` structures, handed to nginx's peer connection as they are), and the error
//!   type callers see.
//! - `connection.rs`: one non-blocking nginx peer connection (connect, send, recv, close).
//! - `client.rs`: the pipelined client on top of it: replies matched to callers in order, each
//!   within its own absolute deadline and its own size bound, failures logged once and then
//!   summarised, and background probing after a failure.
//! - `tls.rs`: `rediss://` through nginx's OpenSSL layer (context, handshake, verification).
//! - `worker.rs`: the `shield_redis` directive and the worker's one client, shared by every
//!   feature.

mod client;
mod cluster;
mod connection;
mod tls;
mod worker;

use crate::parse::{self, ConfError};

pub use client::Client;
pub use tls::{set_string as set_ssl_string, set_verify as set_ssl_verify};
pub use worker::{client, exit_process, health, init_process, postconfiguration, set_redis, Redis, RedisMain};

/// Where and how to reach Redis; resolved at configuration time.
#[derive(Clone)]
pub struct Target {
    pub address: SocketAddress,
    pub name: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// Every reply must be whole this long after its command was queued (see `client.rs`).
    pub timeout_ms: ngx::ffi::ngx_msec_t,
    /// The URL's host, the name a TLS certificate must match by default.
    pub host: String,
    /// `rediss://` was given; `tls` is built at the end of the configuration.
    pub tls_requested: bool,
    pub tls: Option<tls::Tls>,
    /// `redis+sentinel://`: the sentinels to ask for the primary named `master` (then
    /// `address` is the primary's, once known).
    pub sentinels: Vec<SocketAddress>,
    pub master: Option<String>,
    /// `redis+cluster://`: the nodes to ask for the slot map first.
    pub seeds: Vec<std::net::SocketAddr>,
}

/// Bounds of `timeout=`: a reply is waited for at least 1 ms and at most a minute.
const TIMEOUT_MS: (u64, u64) = (1, 60_000);
const DEFAULT_TIMEOUT_MS: u64 = 50;

impl Target {
    /// `shield_redis redis://[user:pass@]host[:port][/db] | unix://[user:pass@]/path[?db=n]
    /// [timeout=50ms];` — the directive's arguments after its name.
    pub fn from_directive(args: &[&str]) -> Result<Target, ConfError> {
        let url = crate::redis::url::parse(args[0])?;
        if url.tls && !url.seeds.is_empty() {
            return Err(ConfError::Other(format!("\"{}\": TLS to a Redis Cluster is not supported yet", args[0])));
        }
        let mut timeout_ms = DEFAULT_TIMEOUT_MS;
        for arg in &args[1..] {
            match parse::param(arg) {
                Some(("timeout", v)) => {
                    let ms = parse::time(v)?.as_millis();
                    if !(TIMEOUT_MS.0 as u128..=TIMEOUT_MS.1 as u128).contains(&ms) {
                        return Err(ConfError::Other(format!(
                            "invalid timeout \"{v}\", it must be between 1ms and 60s"
                        )));
                    }
                    timeout_ms = ms as u64;
                }
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        // Resolved now: a lookup in a worker would block it.
        let resolve = |host: &str, port: u16| {
            std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                .map_err(|e| format!("host not found in \"{}\": {e}", args[0]))?
                .next()
                .ok_or_else(|| format!("host not found in \"{}\"", args[0]))
        };
        let (address, name) = match &url.socket {
            Some(path) => (SocketAddress::unix(path), format!("unix:{path}")),
            None => {
                let addr = resolve(&url.host, url.port)?;
                (SocketAddress::inet(&addr), addr.to_string())
            }
        };
        let mut sentinels = Vec::new();
        for (host, port) in &url.sentinels {
            sentinels.push(SocketAddress::inet(&resolve(host, *port)?));
        }
        let mut seeds = Vec::new();
        for (host, port) in &url.seeds {
            seeds.push(resolve(host, *port)?);
        }
        let name = match &url.master {
            Some(master) => format!("\"{master}\" (via sentinel)"),
            None if !seeds.is_empty() => format!("cluster via {}", seeds[0]),
            None => name,
        };
        Ok(Target {
            address,
            name,
            username: url.username,
            password: url.password,
            db: url.db,
            timeout_ms: timeout_ms as _,
            host: url.host,
            tls_requested: url.tls,
            tls: None,
            sentinels,
            master: url.master,
            seeds,
        })
    }
}

/// A socket address as the kernel (and nginx's peer connection) takes it.
#[derive(Clone, Copy)]
pub enum SocketAddress {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
    Unix(libc::sockaddr_un),
}

impl SocketAddress {
    pub fn inet(addr: &std::net::SocketAddr) -> SocketAddress {
        match addr {
            std::net::SocketAddr::V4(a) => {
                // SAFETY: all-zero is a valid sockaddr_in (and the padding nginx expects).
                let mut sin: libc::sockaddr_in = unsafe { core::mem::zeroed() };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                SocketAddress::V4(sin)
            }
            std::net::SocketAddr::V6(a) => {
                // SAFETY: as above, for sockaddr_in6.
                let mut sin6: libc::sockaddr_in6 = unsafe { core::mem::zeroed() };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                SocketAddress::V6(sin6)
            }
        }
    }

    /// The URL parser bounds the path (`url::MAX_SOCKET_PATH`), so it fits with its NUL.
    fn unix(path: &str) -> SocketAddress {
        // SAFETY: all-zero is a valid sockaddr_un: the path is NUL-terminated by the zeroes.
        let mut sun: libc::sockaddr_un = unsafe { core::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (dst, &src) in sun.sun_path.iter_mut().zip(path.as_bytes().iter().take(crate::redis::url::MAX_SOCKET_PATH))
        {
            *dst = src as libc::c_char;
        }
        SocketAddress::Unix(sun)
    }

    fn as_ptr(&self) -> *const libc::sockaddr {
        match self {
            SocketAddress::V4(a) => core::ptr::from_ref(a).cast(),
            SocketAddress::V6(a) => core::ptr::from_ref(a).cast(),
            SocketAddress::Unix(a) => core::ptr::from_ref(a).cast(),
        }
    }

    fn len(&self) -> libc::socklen_t {
        (match self {
            SocketAddress::V4(_) => core::mem::size_of::<libc::sockaddr_in>(),
            SocketAddress::V6(_) => core::mem::size_of::<libc::sockaddr_in6>(),
            SocketAddress::Unix(_) => core::mem::size_of::<libc::sockaddr_un>(),
        }) as libc::socklen_t
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// Not connected (Redis known to be down, being probed), or the connection failed.
    Down,
    /// No whole reply by the deadline.
    Timeout,
    /// Redis answered with an error reply.
    Server(String),
    /// Bytes from Redis that can never be a reply the command can get, and why.
    Protocol(&'static str),
}

impl core::fmt::Display for RedisError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RedisError::Down => f.write_str("connection failed"),
            RedisError::Timeout => f.write_str("timed out"),
            RedisError::Server(e) => write!(f, "error reply \"{e}\""),
            RedisError::Protocol(why) => write!(f, "protocol error: {why}"),
        }
    }
}
