//! The response cache against real nginx, a real origin (the harness's upstream, which counts
//! its requests and sets the headers each case needs) and, for the shared backend, a real
//! redis-server.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{
    assert_config_error, http_get, http_request, parallel, try_http_request, CannedResponse, Nginx, Redis, Response,
    Upstream,
};

static SERIAL: AtomicU64 = AtomicU64::new(0);
/// Requests per path, for the paths that fail after their first answer.
static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The origin: each path sets the headers its case needs; every body carries a serial number,
/// so a cached body is told from a fresh one.
fn origin() -> Upstream {
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
        match path.as_str() {
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
            "/missing" => {
                status = 404;
            }
            _ => {}
        }
        CannedResponse { status, headers, body }
    })
}

fn hits(origin: &Upstream, path: &str) -> usize {
    origin.requests().iter().filter(|r| r.path.split('?').next() == Some(path)).count()
}

const LOCATIONS: &str = r#"
            location / {
                proxy_pass http://127.0.0.1:%%ORIGIN%%;
                shield_cache zone=c;
                shield_cache_bypass $http_x_no_cache;
                shield_cache_purge on;
                add_header X-Cache $shield_cache_status always;
                add_header X-Key $shield_cache_key always;
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
            location = /metrics { shield_status; }"#;

fn start(origin: &Upstream) -> Nginx {
    let http =
        format!("shield_cache_zone zone=c:1m max_entry=64k;\n server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}");
    Nginx::builder().var("ORIGIN", origin.port).http(&http).start()
}

/// Waits (at most 5 s) until the zone counted `n` stores: a store happens right after the
/// response went out, so the client may see the response a moment before it.
fn wait_stores(port: u16, n: u64) {
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

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(port, "GET", path, headers, None)
}

#[test]
fn miss_then_hit_with_age_and_cache_status() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/max-age", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("X-Cache"), Some("MISS"));
    assert_eq!(first.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200; stored"));
    assert_eq!(first.header("X-Key"), Some("httplocalhost/max-age"));
    wait_stores(nginx.port, 1);
    let second = get(nginx.port, "/max-age", &[]);
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body, "the stored body");
    assert_eq!(second.header("X-Cache"), Some("HIT"));
    assert!(second.header("Cache-Status").is_some_and(|v| v.starts_with("nginx-shield; hit; ttl=")), "{second:?}");
    assert!(second.header("Age").is_some_and(|a| a.parse::<u32>().is_ok_and(|a| a < 60)));
    assert_eq!(second.header("Content-Type"), Some("text/plain"));
    assert_eq!(second.header("Cache-Control"), Some("max-age=60"));
    for name in ["Content-Type", "Content-Length", "Cache-Status", "Age", "Date", "Server", "Cache-Control"] {
        assert_eq!(second.headers_all(name).len(), 1, "one {name}: {:?}", second.headers);
    }
    assert_eq!(hits(&origin, "/max-age"), 1, "one origin request");
}

#[test]
fn explicit_freshness_s_maxage_and_expires_are_stored() {
    let origin = origin();
    let nginx = start(&origin);
    for (i, path) in ["/s-maxage", "/expires"].iter().enumerate() {
        get(nginx.port, path, &[]);
        wait_stores(nginx.port, i as u64 + 1);
        assert_eq!(get(nginx.port, path, &[]).header("X-Cache"), Some("HIT"), "{path}");
        assert_eq!(hits(&origin, path), 1, "{path}");
    }
}

#[test]
fn responses_a_shared_cache_must_not_store_are_forwarded_every_time() {
    let origin = origin();
    let nginx = start(&origin);
    let cases: [(&str, &[(&str, &str)]); 7] = [
        ("/no-store", &[]),
        ("/private", &[]),
        ("/cookie", &[]),
        ("/auth", &[("Authorization", "Basic dTpw")]),
        ("/expired", &[]),
        ("/vary-star", &[]),
        ("/plain", &[]),
    ];
    for (path, headers) in cases {
        let a = get(nginx.port, path, headers);
        assert_eq!(a.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200"), "{path}");
        let b = get(nginx.port, path, headers);
        assert_eq!(b.header("X-Cache"), Some("MISS"), "{path}");
        assert_ne!(a.body, b.body, "{path}: a fresh body each time");
        assert_eq!(hits(&origin, path), 2, "{path}");
    }
    assert!(get(nginx.port, "/cookie", &[]).header("Set-Cookie").is_some(), "the cookie reaches its client");
    // Authorization with `public`: shareable.
    let auth = [("Authorization", "Basic dTpw")];
    get(nginx.port, "/auth-public", &auth);
    wait_stores(nginx.port, 1);
    assert_eq!(get(nginx.port, "/auth-public", &auth).header("X-Cache"), Some("HIT"));
}

#[test]
fn set_cookie_is_stripped_from_the_stored_copy_when_configured() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/strip/cookie", &[]);
    assert_eq!(first.header("Set-Cookie"), Some("session=secret"), "the origin's client gets its cookie");
    wait_stores(nginx.port, 1);
    let second = get(nginx.port, "/strip/cookie", &[]);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("Set-Cookie"), None, "never replayed to another client");
    assert_eq!(hits(&origin, "/cookie"), 1);
}

#[test]
fn shield_cache_valid_applies_only_without_explicit_freshness() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/valid/plain", &[]);
    get(nginx.port, "/valid/missing", &[]);
    wait_stores(nginx.port, 2);
    assert_eq!(get(nginx.port, "/valid/plain", &[]).header("Cache-Status").map(|s| s.contains("hit")), Some(true));
    let missing = get(nginx.port, "/valid/missing", &[]);
    assert_eq!((missing.status, missing.header("Cache-Status").map(|s| s.contains("hit"))), (404, Some(true)));
    // `no-store` from the origin still wins over shield_cache_valid.
    get(nginx.port, "/valid/no-store", &[]);
    get(nginx.port, "/valid/no-store", &[]);
    assert_eq!((hits(&origin, "/plain"), hits(&origin, "/missing"), hits(&origin, "/no-store")), (1, 1, 2));
}

#[test]
fn shield_cache_no_store_sees_the_response_and_shield_cache_off_disables() {
    let origin = origin();
    let nginx = start(&origin);
    for _ in 0..2 {
        let r = get(nginx.port, "/nostore/never", &[]);
        assert_eq!(r.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200"));
        let off = get(nginx.port, "/off/max-age", &[]);
        assert_eq!((off.header("Cache-Status"), off.header("X-Cache")), (None, None));
    }
    assert_eq!((hits(&origin, "/never"), hits(&origin, "/max-age")), (2, 2));
}

#[test]
fn vary_selects_variants_by_the_named_request_header() {
    let origin = origin();
    let nginx = start(&origin);
    let en = get(nginx.port, "/vary", &[("X-Lang", "en")]);
    // Storing a variant writes the variants marker and the variant itself.
    wait_stores(nginx.port, 2);
    let fr = get(nginx.port, "/vary", &[("X-Lang", "fr")]);
    assert_eq!(fr.header("X-Cache"), Some("MISS"));
    assert!(fr.header("Cache-Status").is_some_and(|s| s.contains("fwd=vary-miss")), "{fr:?}");
    wait_stores(nginx.port, 4);
    let en2 = get(nginx.port, "/vary", &[("X-Lang", "en")]);
    let fr2 = get(nginx.port, "/vary", &[("X-Lang", "fr")]);
    assert_eq!((en2.header("X-Cache"), fr2.header("X-Cache")), (Some("HIT"), Some("HIT")));
    assert_eq!((en2.body, fr2.body), (en.body.clone(), fr.body.clone()));
    assert!(en.body_str().contains(" en #") && fr.body_str().contains(" fr #"));
    assert_eq!(hits(&origin, "/vary"), 2);
}

#[test]
fn head_is_served_from_the_get_entry() {
    let origin = origin();
    let nginx = start(&origin);
    let get_resp = get(nginx.port, "/head", &[]);
    wait_stores(nginx.port, 1);
    let head = http_request(nginx.port, "HEAD", "/head", &[], None);
    assert_eq!((head.status, head.header("X-Cache")), (200, Some("HIT")));
    assert!(head.body.is_empty());
    assert_eq!(head.header("Content-Length"), Some(get_resp.body.len().to_string().as_str()));
    assert_eq!(hits(&origin, "/head"), 1);
}

#[test]
fn a_clients_conditional_request_is_answered_304_from_the_cache() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/etag", &[]);
    assert_eq!(first.header("ETag"), Some("\"v1\""));
    wait_stores(nginx.port, 1);
    let inm = get(nginx.port, "/etag", &[("If-None-Match", "\"v1\"")]);
    assert_eq!((inm.status, inm.header("X-Cache")), (304, Some("HIT")));
    assert!(inm.body.is_empty());
    let ims = get(nginx.port, "/etag", &[("If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")]);
    assert_eq!(ims.status, 304);
    let other = get(nginx.port, "/etag", &[("If-None-Match", "\"v2\"")]);
    assert_eq!((other.status, &other.body), (200, &first.body));
    assert_eq!(other.header("Last-Modified"), Some("Mon, 01 Jan 2024 00:00:00 GMT"));
    assert_eq!(hits(&origin, "/etag"), 1);
}

#[test]
fn a_body_above_max_entry_passes_intact_and_uncached_and_a_spooled_one_is_stored() {
    let origin = origin();
    let nginx = start(&origin);
    let a = get(nginx.port, "/big", &[]);
    let b = get(nginx.port, "/big", &[]);
    assert_eq!((a.status, a.body.len(), b.body.len()), (200, 200_000 + 2, 200_000 + 2));
    assert!(a.body.starts_with(b"abcdefghijklmnopqrstuvwxyzabc"));
    assert_eq!(a.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200"));
    assert_eq!(hits(&origin, "/big"), 2);
    // 48 KB through 4 KB of proxy buffers to a slow client: spooled to a temporary file.
    let m = get(nginx.port, "/spool/mid", &[]);
    wait_stores(nginx.port, 1);
    let m2 = get(nginx.port, "/spool/mid", &[]);
    assert_eq!(m2.header("X-Cache"), Some("HIT"));
    assert_eq!(m2.body, m.body, "byte for byte");
    assert_eq!(hits(&origin, "/mid"), 1);
}

#[test]
fn a_successful_post_invalidates_the_uri() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/post", &[]);
    wait_stores(nginx.port, 1);
    assert_eq!(get(nginx.port, "/post", &[]).header("X-Cache"), Some("HIT"));
    let post = http_request(nginx.port, "POST", "/post", &[], Some(b"x"));
    assert_eq!(post.status, 200);
    assert_eq!(post.header("X-Cache"), None, "not a cache lookup");
    assert_eq!(get(nginx.port, "/post", &[]).header("X-Cache"), Some("MISS"), "invalidated");
    assert_eq!(hits(&origin, "/post"), 3);
}

#[test]
fn request_directives_and_bypass() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/max-age", &[]);
    wait_stores(nginx.port, 1);
    let no_cache = get(nginx.port, "/max-age", &[("Cache-Control", "no-cache")]);
    assert_eq!(no_cache.header("X-Cache"), Some("REVALIDATE"));
    assert!(no_cache.header("Cache-Status").is_some_and(|s| s.contains("fwd=request") && s.ends_with("stored")));
    wait_stores(nginx.port, 2);
    let after = get(nginx.port, "/max-age", &[]);
    assert_eq!((after.header("X-Cache"), &after.body), (Some("HIT"), &no_cache.body), "the refreshed copy");
    let max_age0 = get(nginx.port, "/max-age", &[("Cache-Control", "max-age=0")]);
    assert_eq!(max_age0.header("X-Cache"), Some("REVALIDATE"));
    let no_store = get(nginx.port, "/max-age", &[("Cache-Control", "no-store")]);
    assert_eq!(no_store.header("Cache-Status"), Some("nginx-shield; fwd=bypass; fwd-status=200"));
    let bypass = get(nginx.port, "/max-age", &[("X-No-Cache", "1")]);
    assert_eq!(bypass.header("X-Cache"), Some("BYPASS"));
    assert_eq!(get(nginx.port, "/max-age", &[("X-No-Cache", "0")]).header("X-Cache"), Some("HIT"), "\"0\" is false");
    assert_eq!(hits(&origin, "/max-age"), 5);
}

#[test]
fn entries_survive_a_reload() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/max-age", &[]);
    wait_stores(nginx.port, 1);
    nginx.reload();
    let after = get(nginx.port, "/max-age", &[]);
    assert_eq!((after.header("X-Cache"), &after.body), (Some("HIT"), &first.body));
    assert_eq!(hits(&origin, "/max-age"), 1);
}

#[test]
fn bad_directive_values_fail_nginx_t() {
    let server = |loc: &str| format!("server {{ listen 127.0.0.1:1; location / {{ {loc} }} }}");
    let zone = "shield_cache_zone zone=c:1m;";
    assert_config_error("shield_cache_zone zone=c:100k;", "zone \"c\" is too small");
    assert_config_error("shield_cache_zone zone=c:1m max_entry=100;", "invalid max_entry \"100\"");
    assert_config_error("shield_cache_zone zone=c:1m max_entry=512k;", "at most a quarter");
    assert_config_error("shield_cache_zone zone=c:32g;", "it must be at most 16g");
    assert_config_error("shield_cache_zone size=1m;", "invalid parameter \"size=1m\"");
    assert_config_error("shield_cache_zone max_entry=1k;", "\"shield_cache_zone\" must have \"zone\" parameter");
    assert_config_error(&format!("{zone} {zone}"), "zone \"c\" is duplicate");
    assert_config_error(&format!("{zone} {}", server("shield_cache zone=d;")), "unknown zone \"d\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache on;")), "invalid parameter \"on\"");
    assert_config_error(
        &format!("{zone} {}", server("shield_cache zone=c; shield_cache off;")),
        "\"shield_cache\" directive is duplicate",
    );
    assert_config_error(&format!("{zone} {}", server("shield_cache_valid 200 0s;")), "invalid time \"0s\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_valid 200 2y;")), "invalid time \"2y\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_valid 99 1m;")), "\"99\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_strip_set_cookie maybe;")), "maybe");
    assert_config_error("shield_cache_zone zone=c:1m backend=redis;", "there is no \"shield_redis\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_lock on timeout=0s;")), "invalid timeout \"0s\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_lock on timeout=2m;")), "between 1ms and 60s");
    assert_config_error(&format!("{zone} {}", server("shield_cache_lock off timeout=1s;")), "invalid parameter");
    assert_config_error(&format!("{zone} {}", server("shield_cache_use_stale http_404;")), "\"http_404\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_use_stale error off;")), "\"off\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_purge zone=x;")), "unknown zone \"x\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_purge yes;")), "invalid parameter \"yes\"");
}

/// Two nodes, one Redis: a response stored through node A is a hit on node B; an
/// invalidation on B is a miss on A.
#[test]
fn two_nodes_share_entries_through_redis() {
    let origin = origin();
    let redis = Redis::start();
    let http = format!(
        "shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;\n shield_cache_zone zone=c:1m max_entry=64k;\n \
         server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}"
    );
    let a = Nginx::builder().var("ORIGIN", origin.port).var("REDIS", redis.port).http(&http).start();
    let b = Nginx::builder().var("ORIGIN", origin.port).var("REDIS", redis.port).http(&http).start();
    let first = get(a.port, "/max-age", &[]);
    assert_eq!(first.header("X-Cache"), Some("MISS"));
    wait_stores(a.port, 1);
    let on_b = get(b.port, "/max-age", &[]);
    assert_eq!((on_b.header("X-Cache"), &on_b.body), (Some("HIT"), &first.body));
    assert_eq!(hits(&origin, "/max-age"), 1);
    // A large (spooled) entry and a Vary variant cross nodes too.
    let m = get(a.port, "/mid", &[]);
    let v = get(a.port, "/vary", &[("X-Lang", "en")]);
    wait_stores(a.port, 4);
    assert_eq!(get(b.port, "/mid", &[]).body, m.body);
    assert_eq!(get(b.port, "/vary", &[("X-Lang", "en")]).body, v.body);
    assert_eq!(get(b.port, "/vary", &[("X-Lang", "fr")]).header("X-Cache"), Some("MISS"));
    // A purge on B is a miss on A.
    let purge = http_request(b.port, "PURGE", "/vary", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true}\n"));
    assert_eq!(get(a.port, "/vary", &[("X-Lang", "en")]).header("X-Cache"), Some("MISS"));
    // POST through B invalidates on A.
    http_request(b.port, "POST", "/max-age", &[], Some(b"x"));
    assert_eq!(get(a.port, "/max-age", &[]).header("X-Cache"), Some("MISS"));
}

/// Redis gone: every request is still answered, from the origin; when it is back, caching
/// resumes by itself.
#[test]
fn redis_outage_fails_open_to_the_origin() {
    let origin = origin();
    let mut redis = Redis::start();
    let http = format!(
        "shield_redis redis://127.0.0.1:%%REDIS%% timeout=200ms;\n shield_cache_zone zone=c:1m max_entry=64k;\n \
         server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}"
    );
    let nginx = Nginx::builder().var("ORIGIN", origin.port).var("REDIS", redis.port).http(&http).start();
    nginx.allow_log("redis");
    get(nginx.port, "/max-age", &[]);
    wait_stores(nginx.port, 1);
    assert_eq!(get(nginx.port, "/max-age", &[]).header("X-Cache"), Some("HIT"));
    redis.stop();
    for _ in 0..5 {
        let r = get(nginx.port, "/max-age", &[]);
        assert_eq!((r.status, r.header("X-Cache")), (200, Some("MISS")));
    }
    assert_eq!(hits(&origin, "/max-age"), 6);
    // Paused mid-flight: lookups time out and go to the origin.
    redis.restart();
    let start = Instant::now();
    loop {
        get(nginx.port, "/max-age", &[]);
        if get(nginx.port, "/max-age", &[]).header("X-Cache") == Some("HIT") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "caching did not resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    redis.pause();
    let r = get(nginx.port, "/max-age", &[]);
    redis.resume();
    assert_eq!((r.status, r.header("X-Cache")), (200, Some("MISS")), "a timed-out lookup is a miss");
}

/// `n` concurrent GETs of `path`, spread over `ports`: (status, X-Cache, body) of each.
fn storm(ports: Vec<u16>, path: &'static str, n: usize, concurrency: usize) -> Vec<(u16, String, Vec<u8>)> {
    parallel(n, concurrency, Duration::from_secs(120), move |i| {
        let r = try_http_request(ports[i % ports.len()], "GET", path, &[], None).expect("answered");
        (r.status, r.header("X-Cache").unwrap_or("").to_string(), r.body)
    })
}

#[test]
fn concurrent_misses_in_one_node_cause_one_origin_request() {
    let origin = origin();
    let nginx = start(&origin);
    let results = storm(vec![nginx.port], "/locked/slow", 200, 100);
    assert_eq!(results.len(), 200);
    assert!(results.iter().all(|(s, _, b)| *s == 200 && *b == results[0].2), "one body for all");
    assert_eq!(hits(&origin, "/slow"), 1, "exactly one origin request");
    assert!(results.iter().any(|(_, c, _)| c == "COLLAPSED"), "some waited for the fetch");
    assert_eq!(results.iter().filter(|(_, c, _)| c == "MISS").count(), 1, "one leader");
}

/// The issue's proof: 1,000 requests for a cold key across 2 nodes x 2 workers sharing Redis
/// reach the origin once.
#[test]
fn a_thousand_requests_across_two_nodes_cause_one_origin_request() {
    let origin = origin();
    let redis = Redis::start();
    let http = format!(
        "shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;\n shield_cache_zone zone=c:4m;\n \
         server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}"
    );
    let a = Nginx::builder().var("ORIGIN", origin.port).var("REDIS", redis.port).http(&http).start();
    let b = Nginx::builder().var("ORIGIN", origin.port).var("REDIS", redis.port).http(&http).start();
    let results = storm(vec![a.port, b.port], "/locked/slow", 1000, 400);
    assert_eq!(results.len(), 1000, "every request answered");
    assert!(results.iter().all(|(s, _, b)| *s == 200 && *b == results[0].2), "one body for all");
    assert_eq!(hits(&origin, "/slow"), 1, "exactly one origin request");
}

#[test]
fn lock_waiters_go_to_the_origin_when_nothing_is_stored_or_the_lock_times_out() {
    let origin = origin();
    let nginx = start(&origin);
    // The leader's response may not be stored: the waiters fetch for themselves.
    let results = storm(vec![nginx.port], "/locked/slow-no-store", 8, 8);
    assert!(results.iter().all(|(s, c, _)| *s == 200 && c == "MISS"), "{results:?}");
    assert_eq!(hits(&origin, "/slow-no-store"), 8);
    // A 50 ms lock against a 500 ms origin: waiters stop waiting and fetch themselves.
    let results = storm(vec![nginx.port], "/short-lock/slow", 8, 8);
    assert!(results.iter().all(|(s, _, _)| *s == 200));
    assert!(hits(&origin, "/slow") > 1, "waiters did not wait for ever");
}

#[test]
fn purge_by_url_and_by_key() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/max-age", &[]);
    get(nginx.port, "/etag", &[]);
    wait_stores(nginx.port, 2);
    let purge = http_request(nginx.port, "PURGE", "/max-age", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true}\n"));
    assert_eq!(http_request(nginx.port, "PURGE", "/max-age", &[], None).status, 404, "nothing left");
    assert_eq!(get(nginx.port, "/max-age", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(nginx.port, "/etag", &[]).header("X-Cache"), Some("HIT"), "other entries stay");
    // By exact key, at the purge endpoint.
    let by_key = http_request(nginx.port, "DELETE", "/purge?key=httplocalhost%2Fetag", &[], None);
    assert_eq!(by_key.status, 200, "{by_key:?}");
    assert_eq!(get(nginx.port, "/etag", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(nginx.port, "/purge?key=httplocalhost%2Fetag", &[]).status, 405);
    assert_eq!(http_request(nginx.port, "PURGE", "/purge", &[], None).status, 400);
    assert_eq!(hits(&origin, "/max-age"), 2);
    assert!(http_get(nginx.port, "/metrics").body_str().contains("shield_cache_purges_total{zone=\"c\"} 3\n"));
}

/// A zone far smaller than what is stored keeps working: the least recently used entries
/// make room, stores never fail for lack of it.
#[test]
fn the_zone_evicts_least_recently_used_entries() {
    let origin = origin();
    let http =
        format!("shield_cache_zone zone=c:256k max_entry=64k;\n server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}");
    let nginx = Nginx::builder().var("ORIGIN", origin.port).http(&http).start();
    for i in 0..20 {
        get(nginx.port, &format!("/mid?{i}"), &[]);
        wait_stores(nginx.port, i + 1);
    }
    let metrics = http_get(nginx.port, "/metrics");
    assert!(metrics.body_str().contains("shield_cache_store_failures_total{zone=\"c\"} 0\n"));
    assert_eq!(get(nginx.port, "/mid?19", &[]).header("X-Cache"), Some("HIT"), "the newest stays");
    assert_eq!(get(nginx.port, "/mid?0", &[]).header("X-Cache"), Some("MISS"), "the oldest was evicted");
}

/// Entries are made stale by waiting out a 1 s lifetime (entry ages count whole seconds).
fn wait_until_stale() {
    std::thread::sleep(Duration::from_millis(2100));
}

#[test]
fn a_stale_entry_answers_when_the_origin_fails_within_stale_if_error_or_use_stale() {
    let origin = origin();
    let nginx = start(&origin);
    let sie = get(nginx.port, "/sie", &[]);
    get(nginx.port, "/flaky", &[]);
    let flaky2 = get(nginx.port, "/use-stale/flaky2", &[]);
    wait_stores(nginx.port, 3);
    wait_until_stale();
    let r = get(nginx.port, "/sie", &[]);
    assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("STALE"), &sie.body), "{r:?}");
    let cs = r.header("Cache-Status").unwrap_or_default();
    assert!(cs.starts_with("nginx-shield; hit; fwd=stale; fwd-status=503; ttl=-"), "{cs}");
    assert_eq!(r.headers_all("Content-Length"), vec![sie.body.len().to_string()]);
    assert_eq!(r.header("Cache-Control"), Some("max-age=1, stale-if-error=600"));
    // No stale-if-error, no shield_cache_use_stale: the error goes through.
    let plain = get(nginx.port, "/flaky", &[]);
    assert_eq!((plain.status, plain.body_str()), (503, "origin failed"));
    let used = get(nginx.port, "/use-stale/flaky2", &[]);
    assert_eq!((used.status, &used.body), (200, &flaky2.body));
    assert!(http_get(nginx.port, "/metrics").body_str().contains("shield_cache_stale_total{zone=\"c\"} 2\n"));
}

#[test]
fn use_stale_error_answers_when_the_origin_is_unreachable() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/use-stale/short", &[]);
    get(nginx.port, "/short", &[]);
    wait_stores(nginx.port, 2);
    drop(origin);
    wait_until_stale();
    nginx.allow_log("connect() failed");
    let r = get(nginx.port, "/use-stale/short", &[]);
    assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("STALE"), &first.body), "{r:?}");
    assert_eq!(get(nginx.port, "/short", &[]).status, 502, "without shield_cache_use_stale");
}
