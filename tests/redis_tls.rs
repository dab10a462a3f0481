//! `shield_redis rediss://`: TLS to a real redis-server (Debian's is built with TLS) with
//! certificates this test generates: a CA, a server certificate for 127.0.0.1/localhost, a
//! second CA nobody trusts, and a client certificate for mutual TLS. The limiter must be
//! decided by Redis over TLS when the chain and name check out, and follow `shield_limit_fail`
//! (here `closed`: 503) with a clear log line when they do not.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{assert_config_error, free_port, http_get, Nginx, TempDir};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Files in one directory: ca.pem, other-ca.pem, server.{pem,key}, client.{pem,key}.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = TempDir::new();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            let (key, cert, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=shield test {ca}"));
            openssl(
                d,
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subj, "-keyout", &key,
                    "-out", &cert,
                ],
            );
        }
        std::fs::write(d.join("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (who, cn) in [("server", "localhost"), ("client", "shield-nginx")] {
            let (key, csr, cert, ext) =
                (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
            openssl(
                d,
                &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={cn}"), "-keyout", &key, "-out", &csr],
            );
            openssl(
                d,
                &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
                    .into_iter()
                    .chain(["-extfile", &ext, "-out", &cert])
                    .collect::<Vec<_>>(),
            );
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A redis-server with a plain port (for the test's own checks) and a TLS port (for nginx).
struct TlsRedis {
    plain: u16,
    tls: u16,
    child: Child,
    _dir: TempDir,
}

impl TlsRedis {
    fn start(pki: &Pki, client_auth: bool) -> TlsRedis {
        let (plain, tls, dir) = (free_port(), free_port(), TempDir::new());
        let child = Command::new("redis-server")
            .args(["--port", &plain.to_string(), "--tls-port", &tls.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--tls-cert-file")
            .arg(pki.path("server.pem"))
            .arg("--tls-key-file")
            .arg(pki.path("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(pki.path("ca.pem"))
            .args(["--tls-auth-clients", if client_auth { "yes" } else { "no" }])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let r = TlsRedis { plain, tls, child, _dir: dir };
        let start = Instant::now();
        while r.keys().is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        r
    }

    /// Every key in Redis, through the plain port.
    fn keys(&self) -> redis::RedisResult<Vec<String>> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.plain))?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
        redis::cmd("KEYS").arg("*").query(&mut con)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx with one Redis-backed limit (burst 2: three requests pass, the fourth is rejected)
/// and `shield_limit_fail closed`, so a Redis nginx cannot use answers 503.
fn nginx_conf(redis: &TlsRedis, tls: &str) -> Nginx {
    Nginx::start(&format!(
        r#"
        shield_redis rediss://127.0.0.1:{port} timeout=1s;
        {tls}
        shield_limit_zone $arg_k zone=z:1m rate=1r/m;
        shield_limit_fail closed;
        server {{
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {{ shield_limit zone=z burst=2 nodelay; }}
        }}"#,
        port = redis.tls
    ))
}

/// Statuses of four requests for one key; the first connection may still be handshaking, so
/// a first 503 is retried for a bounded time.
fn four_statuses(nginx: &Nginx, key: &str) -> Vec<u16> {
    let path = format!("/index.html?k={key}");
    let start = Instant::now();
    let mut first = http_get(nginx.port, &path).status;
    while first == 503 && start.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(100));
        first = http_get(nginx.port, &path).status;
    }
    let mut statuses = vec![first];
    statuses.extend((0..3).map(|_| http_get(nginx.port, &path).status));
    statuses
}

#[test]
fn verified_tls_connection_lets_redis_decide() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let ca = pki.path("ca.pem");
    let nginx = nginx_conf(&redis, &format!("shield_redis_ssl_trusted_certificate {};", ca.display()));
    assert_eq!(four_statuses(&nginx, "alice"), [200, 200, 200, 429], "{}", nginx.error_log());
    let keys = redis.keys().unwrap();
    assert!(keys.iter().any(|k| k.contains("alice")), "the state is in Redis: {keys:?}");
    assert!(!nginx.error_log().contains("unavailable"), "{}", nginx.error_log());

    // A DNS name is checked the way nginx's proxy checks it (the certificate also names
    // localhost); SNI carries it.
    let by_name = nginx_conf(
        &redis,
        &format!("shield_redis_ssl_trusted_certificate {}; shield_redis_ssl_name localhost;", ca.display()),
    );
    assert_eq!(four_statuses(&by_name, "alice2"), [200, 200, 200, 429], "{}", by_name.error_log());
}

#[test]
fn untrusted_ca_fails_closed_with_a_clear_log_line() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let other = pki.path("other-ca.pem");
    let nginx = nginx_conf(&redis, &format!("shield_redis_ssl_trusted_certificate {};", other.display()));
    assert_eq!(four_statuses(&nginx, "bob"), [503, 503, 503, 503]);
    let log = nginx.error_log();
    assert!(log.contains("TLS certificate verify failed"), "{log}");
    assert!(redis.keys().unwrap().is_empty(), "nothing reached Redis");
}

#[test]
fn wrong_name_fails_and_verify_off_accepts_anything() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let ca = pki.path("ca.pem");
    let nginx_wrong = nginx_conf(
        &redis,
        &format!("shield_redis_ssl_trusted_certificate {}; shield_redis_ssl_name redis.example;", ca.display()),
    );
    assert_eq!(four_statuses(&nginx_wrong, "carol"), [503, 503, 503, 503]);
    let log = nginx_wrong.error_log();
    assert!(log.contains("TLS certificate does not match \"redis.example\""), "{log}");

    // The control: with verification off the same server is accepted (an operator's choice).
    let other = pki.path("other-ca.pem");
    let nginx_off = nginx_conf(
        &redis,
        &format!("shield_redis_ssl_trusted_certificate {}; shield_redis_ssl_verify off;", other.display()),
    );
    assert_eq!(four_statuses(&nginx_off, "dave"), [200, 200, 200, 429], "{}", nginx_off.error_log());
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, true);
    let ca = pki.path("ca.pem");
    let without = nginx_conf(&redis, &format!("shield_redis_ssl_trusted_certificate {};", ca.display()));
    assert_eq!(four_statuses(&without, "erin"), [503, 503, 503, 503]);
    let log = without.error_log();
    // nginx's own words about the TLS failure reach the module's (throttled) line.
    assert!(log.lines().any(|l| l.contains("shield: redis") && l.contains("SSL_")), "{log}");

    let with = nginx_conf(&redis,
        &format!(
            "shield_redis_ssl_trusted_certificate {}; shield_redis_ssl_certificate {}; shield_redis_ssl_certificate_key {};",
            ca.display(),
            pki.path("client.pem").display(),
            pki.path("client.key").display()
        ),
    );
    assert_eq!(four_statuses(&with, "frank"), [200, 200, 200, 429], "{}", with.error_log());
}

/// A `redis-sentinel` that listens with TLS only and reaches the primary with TLS
/// (`tls-replication yes`), watching `primary` (its TLS port).
struct TlsSentinel {
    port: u16,
    child: Child,
    _dir: TempDir,
}

impl TlsSentinel {
    fn start(pki: &Pki, primary: &TlsRedis) -> TlsSentinel {
        let (port, dir) = (free_port(), TempDir::new());
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\ndir {dir}\ntls-cert-file {cert}\ntls-key-file {key}\n\
                 tls-ca-cert-file {ca}\ntls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor mymaster 127.0.0.1 {primary} 1\nsentinel down-after-milliseconds mymaster 1000\n",
                dir = dir.path().display(),
                cert = pki.path("server.pem").display(),
                key = pki.path("server.key").display(),
                ca = pki.path("ca.pem").display(),
                primary = primary.tls,
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-sentinel");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-sentinel did not start");
            thread::sleep(Duration::from_millis(20));
        }
        TlsSentinel { port, child, _dir: dir }
    }
}

impl Drop for TlsSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rediss+sentinel://`: TLS to the sentinel as to the primary it names, both verified; a
/// sentinel whose certificate does not verify follows the fail policy with a clear line.
#[test]
fn rediss_sentinel_is_tls_to_the_sentinels_and_the_primary() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let sentinel = TlsSentinel::start(&pki, &redis);
    let conf = |ca: &str| {
        Nginx::start(&format!(
            r#"
            shield_redis rediss+sentinel://127.0.0.1:{port}/mymaster timeout=1s;
            shield_redis_ssl_trusted_certificate {ca};
            shield_limit_zone $arg_k zone=z:1m rate=1r/m;
            shield_limit_fail closed;
            server {{
                listen 127.0.0.1:%%PORT%%;
                root %%HTML%%;
                location / {{ shield_limit zone=z burst=2 nodelay; }}
            }}"#,
            port = sentinel.port,
        ))
    };
    let nginx = conf(&pki.path("ca.pem").display().to_string());
    assert_eq!(four_statuses(&nginx, "grace"), [200, 200, 200, 429], "{}", nginx.error_log());
    assert!(redis.keys().unwrap().iter().any(|k| k.contains("grace")), "decided on the primary");
    let untrusted = conf(&pki.path("other-ca.pem").display().to_string());
    assert_eq!(four_statuses(&untrusted, "heidi"), [503, 503, 503, 503]);
    let log = untrusted.error_log();
    assert!(log.contains("asking sentinel #1") && log.contains("TLS certificate verify failed"), "{log}");
}

#[test]
fn bad_tls_configurations_fail_nginx_t() {
    let pki = Pki::new();
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    assert_config_error(
        &format!("shield_redis redis://127.0.0.1; shield_redis_ssl_verify off; {srv}"),
        "need a rediss:// URL",
    );
    assert_config_error(&format!("shield_redis_ssl_verify off; {srv}"), "need \"shield_redis rediss://");
    assert_config_error(
        &format!(
            "shield_redis rediss://127.0.0.1; shield_redis_ssl_certificate_key {}; {srv}",
            pki.path("client.key").display()
        ),
        "go together",
    );
    assert_config_error(
        &format!("shield_redis rediss://127.0.0.1; shield_redis_ssl_trusted_certificate /nonexistent/ca.pem; {srv}"),
        "cannot open \"/nonexistent/ca.pem\"",
    );
    assert_config_error(&format!("shield_redis rediss://127.0.0.1; shield_redis_ssl_verify maybe; {srv}"), "maybe");
    assert_config_error(
        &format!("shield_redis rediss://127.0.0.1; shield_redis_ssl_name a; shield_redis_ssl_name b; {srv}"),
        "is duplicate",
    );
}
