//! The response cache's test origin and helpers, shared by `tests/cache.rs` and
//! `tests/cache_shared.rs` (each includes this file as a module).
#![allow(dead_code)] // each test crate uses part of it

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{http_get, http_request, parallel, try_http_request, CannedResponse, Nginx, Response, Upstream};

static SERIAL: AtomicU64 = AtomicU64::new(0);
/// Requests per path, for the paths that fail after their first answer.
static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The origin: each path sets the headers its case needs; every body carries a serial number,
/// so a cached body is told from a fresh one.
pub fn origin() -> Upstream {
    Upstream::start(|req| {
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let header = |name: &str| {
            req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
        };
        let mut headers: Vec<(String, String)> = vec![("Content-Type".into(), "text/plain".into())];
        let mut h = |k: &str, v: &str| headers.push((k.into(), v.into()));
        let mut body = format!("{path} #{n}").into_bytes();
        let mut status = 200;
        // `?t=a,b`: the tags (`+` for a space).
        let query_tags = req.path.split_once("?t=").map(|(_, t)| t.replace('+', " ")).unwrap_or_default();
        match path.as_str() {
            p if p.starts_with("/tagged/") => {
                h("Cache-Control", "max-age=60");
                h("Cache-Tag", &query_tags);
            }
            p if p.starts_with("/skeyed/") => {
                h("Cache-Control", "max-age=60");
                h("Surrogate-Key", &query_tags);
            }
            p if p.starts_with("/cached/") => h("Cache-Control", "max-age=60"),
            "/created" => {
                status = 201;
                h("Location", "/cached/b");
                h("Content-Location", "http://localhost/cached/c");
            }
            "/created-elsewhere" => {
                status = 201;
                h("Location", "http://other.example/cached/d");
            }
            "/soft-etag" => {
                h("Cache-Control", "max-age=60");
                h("ETag", "\"s1\"");
                h("Cache-Tag", "soft");
                if header("if-none-match") == "\"s1\"" {
                    h("X-Revalidated", "yes");
                    status = 304;
                    body = Vec::new();
                }
            }
            "/tag-reval" => {
                h("ETag", "\"t1\"");
                h("Cache-Tag", "rv");
                if header("if-none-match") == "\"t1\"" {
                    h("Cache-Control", "max-age=3600");
                    status = 304;
                    body = Vec::new();
                } else {
                    h("Cache-Control", "max-age=1");
                }
            }
            "/soft-flaky" => {
                let first = {
                    let mut seen = SEEN.lock().unwrap();
                    let first = !seen.contains(&path);
                    seen.push(path.clone());
                    first
                };
                h("Cache-Control", "max-age=60");
                h("Cache-Tag", "soft");
                if !first {
                    status = 503;
                    body = b"origin failed".to_vec();
                }
            }
            "/max-age" | "/head" | "/post" => h("Cache-Control", "max-age=60"),
            "/s-maxage" => h("Cache-Control", "s-maxage=60, max-age=0"),
            "/expires" => h("Expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
            "/expired" => h("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            "/no-store" => h("Cache-Control", "no-store, max-age=60"),
            "/private" => h("Cache-Control", "private, max-age=60"),
            "/cookie" => {
                h("Cache-Control", "max-age=60");
                h("Set-Cookie", "session=secret");
            }
            "/auth" => h("Cache-Control", "max-age=60"),
            "/auth-public" => h("Cache-Control", "public, max-age=60"),
            "/vary" => {
                h("Cache-Control", "max-age=60");
                h("Vary", "X-Lang");
                body = format!("{path} {} #{n}", header("x-lang")).into_bytes();
            }
            "/vary-star" => {
                h("Cache-Control", "max-age=60");
                h("Vary", "*");
            }
            "/etag" => {
                h("Cache-Control", "max-age=60");
                h("ETag", "\"v1\"");
                h("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT");
            }
            "/big" | "/mid" => {
                h("Cache-Control", "max-age=60");
                let len = if path == "/big" { 200_000 } else { 48_000 };
                body = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                body.extend_from_slice(format!("#{n}").as_bytes());
            }
            "/never" => {
                h("Cache-Control", "max-age=60");
                h("X-Never", "1");
            }
            "/slow" | "/slow-no-store" => {
                std::thread::sleep(Duration::from_millis(500));
                h("Cache-Control", if path == "/slow" { "max-age=60" } else { "no-store" });
            }
            "/sie" | "/flaky" | "/flaky2" => {
                let first = {
                    let mut seen = SEEN.lock().unwrap();
                    let first = !seen.contains(&path);
                    seen.push(path.clone());
                    first
                };
                h("Cache-Control", if path == "/sie" { "max-age=1, stale-if-error=600" } else { "max-age=1" });
                if !first {
                    status = 503;
                    body = b"origin failed".to_vec();
                }
            }
            "/short" => h("Cache-Control", "max-age=1"),
            "/reval" => {
                h("ETag", "\"r1\"");
                if header("if-none-match") == "\"r1\"" {
                    h("Cache-Control", "max-age=60");
                    h("X-Revalidated", "yes");
                    status = 304;
                    body = Vec::new();
                } else {
                    h("Cache-Control", "max-age=1");
                }
            }
            "/missing" => {
                status = 404;
            }
            _ => {}
        }
        CannedResponse { status, headers, body }
    })
}

pub fn hits(origin: &Upstream, path: &str) -> usize {
    origin.requests().iter().filter(|r| r.path.split('?').next() == Some(path)).count()
}

pub const LOCATIONS: &str = r#"
            location / {
                proxy_pass http://127.0.0.1:%%ORIGIN%%;
                shield_cache zone=c;
                shield_cache_bypass $http_x_no_cache;
                shield_cache_purge on;
                shield_cache_tags_header Cache-Tag;
                add_header X-Cache $shield_cache_status always;
                add_header X-Key $shield_cache_key always;
            }
            location /skeyed/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%;
                shield_cache zone=c;
                shield_cache_tags_header Surrogate-Key max_tags=2 max_length=8;
                add_header X-Cache $shield_cache_status always;
            }
            location /soft/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_purge on soft;
                shield_cache_use_stale http_503;
                shield_cache_tags_header Cache-Tag;
                add_header X-Cache $shield_cache_status always;
            }
            location /strip/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_strip_set_cookie on;
            }
            location /valid/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_valid 200 1m;
                shield_cache_valid 404 1m;
            }
            location /nostore/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_no_store $upstream_http_x_never;
            }
            location /off/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache off;
                add_header X-Cache $shield_cache_status always;
            }
            location /spool/ {
                # A client held back by limit_rate and tiny buffers: the origin's response is
                # spooled to a temporary file, which the capture reads back.
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                proxy_buffers 4 1k;
                proxy_buffer_size 1k;
                limit_rate 400k;
                shield_cache zone=c;
                add_header X-Cache $shield_cache_status always;
            }
            location /locked/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_lock on timeout=20s;
                add_header X-Cache $shield_cache_status always;
            }
            location /short-lock/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_lock on timeout=50ms;
                add_header X-Cache $shield_cache_status always;
            }
            location /use-stale/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_use_stale error timeout http_503;
                add_header X-Cache $shield_cache_status always;
            }
            location = /purge { shield_cache_purge zone=c; }
            location = /purge-soft { shield_cache_purge zone=c soft; }
            location = /metrics { shield_status; }"#;

pub fn start(origin: &Upstream) -> Nginx {
    let http =
        format!("shield_cache_zone zone=c:1m max_entry=64k;\n server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}");
    Nginx::builder().var("ORIGIN", origin.port).http(&http).start()
}

/// Waits (at most 5 s) until the zone counted `n` stores: a store happens right after the
/// response went out, so the client may see the response a moment before it.
pub fn wait_stores(port: u16, n: u64) {
    let want = format!("shield_cache_stores_total{{zone=\"c\"}} {n}\n");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if http_get(port, "/metrics").body_str().contains(&want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no {want:?} in:\n{}", http_get(port, "/metrics").body_str());
}

pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(port, "GET", path, headers, None)
}

/// `n` concurrent GETs of `path`, spread over `ports`: (status, X-Cache, body) of each.
pub fn storm(ports: Vec<u16>, path: &'static str, n: usize, concurrency: usize) -> Vec<(u16, String, Vec<u8>)> {
    parallel(n, concurrency, Duration::from_secs(120), move |i| {
        let r = try_http_request(ports[i % ports.len()], "GET", path, &[], None).expect("answered");
        (r.status, r.header("X-Cache").unwrap_or("").to_string(), r.body)
    })
}

/// Entries are made stale by waiting out a 1 s lifetime (entry ages count whole seconds).
pub fn wait_until_stale() {
    std::thread::sleep(Duration::from_millis(2100));
}
