//! TLS to Redis (`shield_redis rediss://...`) through nginx's own OpenSSL layer, as
//! `proxy_ssl_*` does it for upstreams: a client context built once per configuration (trusted
//! certificates, an optional client certificate for mutual TLS), the handshake on the peer
//! connection (nginx's `ngx_ssl_handshake`, non-blocking, on the event loop), then the checks
//! nginx's proxy makes after it: the server's chain verified against the trusted certificates,
//! and its certificate matching the expected name. Verification is on by default.

use core::ffi::{c_char, c_void, CStr};
use std::ffi::CString;

use ngx::ffi::{
    ngx_conf_t, ngx_connection_handler_pt, ngx_connection_t, ngx_pcalloc, ngx_pool_cleanup_add, ngx_ssl_certificate,
    ngx_ssl_check_host, ngx_ssl_cleanup_ctx, ngx_ssl_create, ngx_ssl_create_connection, ngx_ssl_handshake, ngx_ssl_t,
    ngx_ssl_trusted_certificate, ngx_str_t, NGX_SSL_TLSv1_2, NGX_SSL_TLSv1_3, SSL_CTX_set_default_verify_paths,
    SSL_ctrl, SSL_get1_peer_certificate, SSL_get_verify_result, TLSEXT_NAMETYPE_host_name, X509_check_ip_asc,
    X509_free, X509_verify_cert_error_string, NGX_AGAIN, NGX_OK, NGX_SSL_CLIENT, SSL_CTRL_SET_TLSEXT_HOSTNAME,
    X509_V_OK,
};

use super::RedisMain;
use crate::glue::util::{directive, pool_str, set_once};
use crate::glue::MainConf;
use crate::parse::{self, ConfError};

/// How deep a server's chain may be below a trusted certificate.
const VERIFY_DEPTH: isize = 4;

/// The `shield_redis_ssl_*` directives, applied at the end of the configuration.
#[derive(Default)]
pub struct TlsDirectives {
    trusted_certificate: Option<String>,
    certificate: Option<String>,
    certificate_key: Option<String>,
    verify: Option<bool>,
    name: Option<String>,
}

impl TlsDirectives {
    fn any(&self) -> bool {
        self.trusted_certificate.is_some()
            || self.certificate.is_some()
            || self.certificate_key.is_some()
            || self.verify.is_some()
            || self.name.is_some()
    }
}

/// What a connection needs for TLS: the configuration's context and what to check.
#[derive(Clone)]
pub struct Tls {
    ssl: *mut ngx_ssl_t,
    /// The name the certificate must match (and SNI, unless it is an IP address).
    name: CString,
    sni: bool,
    verify: bool,
}

/// `shield_redis_ssl_trusted_certificate`, `_certificate`, `_certificate_key`, `_name`: one
/// string each.
pub extern "C" fn set_string(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, mcf: &mut MainConf, args| {
        // SAFETY: cmd is this module's command entry.
        let name = unsafe { (*cmd).name.to_string() };
        let t = &mut mcf.redis.tls;
        let (slot, file) = match name.as_str() {
            "shield_redis_ssl_trusted_certificate" => (&mut t.trusted_certificate, true),
            "shield_redis_ssl_certificate" => (&mut t.certificate, true),
            "shield_redis_ssl_certificate_key" => (&mut t.certificate_key, true),
            _ => (&mut t.name, false),
        };
        if args[0].is_empty() {
            return Err(ConfError::InvalidParameter(String::new()));
        }
        let value = if file { readable_file(cf, args[0])? } else { args[0].to_string() };
        set_once(slot, value)
    })
}

/// The file's full name (relative names are to the configuration's directory, as nginx's
/// own `ssl_certificate` takes them), checked to be readable now so that a typo fails with
/// this directive's file:line.
fn readable_file(cf: &mut ngx_conf_t, name: &str) -> Result<String, ConfError> {
    let mut full = pool_str(cf.pool, name.as_bytes()).ok_or("out of memory")?;
    // SAFETY: cf->cycle is live during configuration; the result is allocated in its pool.
    if unsafe { ngx::ffi::ngx_conf_full_name(cf.cycle, &mut full, 1) } != NGX_OK as isize {
        return Err("out of memory".into());
    }
    let full = full.to_string();
    std::fs::File::open(&full).map_err(|e| ConfError::Other(format!("cannot open \"{full}\": {e}")))?;
    Ok(full)
}

/// `shield_redis_ssl_verify on | off;`
pub extern "C" fn set_verify(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, mcf: &mut MainConf, args| set_once(&mut mcf.redis.tls.verify, parse::flag(args[0])?))
}

/// Builds the client context once the whole configuration is read (the directives may come in
/// any order). Errors name the file that failed (nginx's own loaders log them).
pub fn configure(cf: &mut ngx_conf_t, redis: &mut RedisMain) -> Result<(), String> {
    let Some(target) = redis.target.as_mut() else {
        return match redis.tls.any() {
            true => Err("\"shield_redis_ssl_*\" directives need \"shield_redis rediss://...\"".into()),
            false => Ok(()),
        };
    };
    if !target.tls_requested {
        return match redis.tls.any() {
            true => Err(format!("\"shield_redis_ssl_*\" directives need a rediss:// URL, not \"{}\"", target.name)),
            false => Ok(()),
        };
    }
    let d = &redis.tls;
    if d.certificate.is_some() != d.certificate_key.is_some() {
        return Err("\"shield_redis_ssl_certificate\" and \"shield_redis_ssl_certificate_key\" go together".into());
    }
    // SAFETY: cf->pool lives as long as the configuration (and so as the workers using it);
    // the cleanup frees the context with it, as nginx's proxy module does.
    let ssl = unsafe {
        let ssl = ngx_pcalloc(cf.pool, core::mem::size_of::<ngx_ssl_t>()).cast::<ngx_ssl_t>();
        if ssl.is_null() {
            return Err("out of memory".into());
        }
        (*ssl).log = cf.log;
        if ngx_ssl_create(ssl, (NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3) as _, core::ptr::null_mut()) != NGX_OK as isize {
            return Err("cannot create the TLS context for shield_redis".into());
        }
        let cln = ngx_pool_cleanup_add(cf.pool, 0);
        if cln.is_null() {
            return Err("out of memory".into());
        }
        (*cln).handler = Some(ngx_ssl_cleanup_ctx);
        (*cln).data = ssl.cast();
        ssl
    };
    let pool = cf.pool;
    let ngx_str = |s: &str| pool_str(pool, s.as_bytes()).ok_or_else(|| "out of memory".to_string());
    if let (Some(cert), Some(key)) = (&d.certificate, &d.certificate_key) {
        let (mut cert, mut key) = (ngx_str(cert)?, ngx_str(key)?);
        // SAFETY: a live context and configuration; nginx logs what failed with the file name.
        if unsafe { ngx_ssl_certificate(cf, ssl, &mut cert, &mut key, core::ptr::null_mut()) } != NGX_OK as isize {
            return Err("cannot load \"shield_redis_ssl_certificate\"".into());
        }
    }
    let verify = d.verify.unwrap_or(true);
    match &d.trusted_certificate {
        Some(file) => {
            let mut file = ngx_str(file)?;
            // SAFETY: as above.
            if unsafe { ngx_ssl_trusted_certificate(cf, ssl, &mut file, VERIFY_DEPTH) } != NGX_OK as isize {
                return Err("cannot load \"shield_redis_ssl_trusted_certificate\"".into());
            }
        }
        // The system's CAs (a managed Redis with a public certificate).
        // SAFETY: a live context.
        None if verify => unsafe {
            SSL_CTX_set_default_verify_paths((*ssl).ctx);
        },
        None => {}
    }
    let name = d.name.clone().unwrap_or_else(|| target.host.clone());
    let sni = name.parse::<std::net::IpAddr>().is_err();
    let name = CString::new(name).map_err(|_| "invalid \"shield_redis_ssl_name\"".to_string())?;
    target.tls = Some(Tls { ssl, name, sni, verify });
    Ok(())
}

pub enum Handshake {
    Done,
    /// nginx drives the rest from the connection's events, then calls `on_done`.
    Again,
    Failed(String),
}

/// Starts TLS on an established connection. `on_done` is called (with the connection) once a
/// handshake that could not finish at once has finished or failed; then call [`check`].
pub fn start(c: *mut ngx_connection_t, tls: &Tls, on_done: ngx_connection_handler_pt) -> Handshake {
    // SAFETY: c is the client's live connection; the context outlives it (configuration pool).
    unsafe {
        if ngx_ssl_create_connection(tls.ssl, c, NGX_SSL_CLIENT as _) != NGX_OK as isize {
            return Handshake::Failed("cannot create a TLS connection".into());
        }
        if tls.sni {
            SSL_ctrl(
                (*(*c).ssl).connection,
                SSL_CTRL_SET_TLSEXT_HOSTNAME as _,
                TLSEXT_NAMETYPE_host_name as _,
                tls.name.as_ptr().cast_mut().cast(),
            );
        }
        match ngx_ssl_handshake(c) {
            rc if rc == NGX_OK as isize => Handshake::Done,
            rc if rc == NGX_AGAIN as isize => {
                (*(*c).ssl).handler = on_done;
                Handshake::Again
            }
            _ => Handshake::Failed("TLS handshake failed".into()),
        }
    }
}

/// After the handshake: did it succeed, and is the server who it should be?
pub fn check(c: *mut ngx_connection_t, tls: &Tls) -> Result<(), String> {
    // SAFETY: c is live and has the TLS connection start() created.
    unsafe {
        let ssl = (*c).ssl;
        if ssl.is_null() || (*ssl).handshaked() == 0 {
            return Err("TLS handshake failed".into());
        }
        if !tls.verify {
            return Ok(());
        }
        let rc = SSL_get_verify_result((*ssl).connection);
        if rc != X509_V_OK as core::ffi::c_long {
            let why = CStr::from_ptr(X509_verify_cert_error_string(rc)).to_string_lossy();
            return Err(format!("TLS certificate verify failed: ({rc}) {why}"));
        }
        let matches = if tls.sni {
            let name = tls.name.as_bytes();
            let mut name = ngx_str_t { len: name.len(), data: name.as_ptr().cast_mut() };
            ngx_ssl_check_host(c, &mut name) == NGX_OK as isize
        } else {
            // An IP address is matched against the certificate's IP entries (nginx's own
            // check only matches DNS names).
            let cert = SSL_get1_peer_certificate((*ssl).connection);
            let ok = !cert.is_null() && X509_check_ip_asc(cert, tls.name.as_ptr(), 0) == 1;
            X509_free(cert);
            ok
        };
        if !matches {
            return Err(format!("TLS certificate does not match \"{}\"", tls.name.to_string_lossy()));
        }
    }
    Ok(())
}
