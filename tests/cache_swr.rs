//! A stale entry answering at once while one refresh fetches its replacement
//! (`stale-while-revalidate`, `shield_cache_use_stale updating`,
//! `shield_cache_background_update`), and `no-cache` responses stored and revalidated before
//! every reuse — on the zone's shared memory and on Redis shared by two nodes, against an
//! origin that counts its requests.

#[path = "support/cache_origin.rs"]
mod cache_origin;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_origin::{get, hits, storm, wait_stores, wait_until_stale};
use support::{assert_config_error, http_get, http_request, CannedResponse, Nginx, Redis, Upstream};

/// What the tests switch on the origin while it runs.
#[derive(Default)]
struct Knobs {
    /// Answer 500 (with `max-age=60`, storable by itself).
    fail: AtomicBool,
    /// Take 1.5 s to answer.
    slow: AtomicBool,
}

/// The origin of these tests; bodies carry a serial number.
fn origin() -> (Upstream, Arc<Knobs>) {
    let knobs = Arc::new(Knobs::default());
    let k = knobs.clone();
    let serial = AtomicU64::new(0);
    let upstream = Upstream::start(move |req| {
        let n = serial.fetch_add(1, Ordering::Relaxed);
        let path = req.path.split('?').next().unwrap_or("").to_string();
        let inm = req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("if-none-match")).map(|(_, v)| v.as_str());
        if k.slow.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let mut headers = vec![("Content-Type".to_string(), "text/plain".to_string())];
        let mut h = |name: &str, v: &str| headers.push((name.into(), v.into()));
        let (mut status, mut body) = (200, format!("{path} #{n}").into_bytes());
        match path.as_str() {
            "/swr" | "/swr-fail" | "/fg-swr" => h("Cache-Control", "max-age=1, stale-while-revalidate=30"),
            "/plain" => h("Cache-Control", "max-age=1"),
            "/no-cache-lm" => {
                const LM: &str = "Mon, 01 Jan 2024 00:00:00 GMT";
                h("Cache-Control", "no-cache");
                h("Last-Modified", LM);
                let ims = req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("if-modified-since"));
                if ims.is_some_and(|(_, v)| v == LM) {
                    status = 304;
                    body = Vec::new();
                }
            }
            "/vary-swr" => {
                h("Cache-Control", "max-age=1, stale-while-revalidate=30");
                h("Vary", "X-Lang");
                let lang = req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-lang")).map(|(_, v)| v.clone());
                body = format!("{path} {} #{n}", lang.unwrap_or_default()).into_bytes();
            }
            "/etag-swr" | "/short-swr" | "/no-cache" => {
                let (etag, cc) = match path.as_str() {
                    "/etag-swr" => ("\"e1\"", "max-age=1, stale-while-revalidate=30"),
                    "/short-swr" => ("\"s1\"", "max-age=1, stale-while-revalidate=1"),
                    _ => ("\"n1\"", "no-cache"),
                };
                h("ETag", etag);
                if inm == Some(etag) {
                    h("Cache-Control", if path == "/no-cache" { "no-cache" } else { "max-age=60" });
                    h("X-Revalidated", "yes");
                    status = 304;
                    body = Vec::new();
                } else {
                    h("Cache-Control", cc);
                }
            }
            _ => {}
        }
        if k.fail.load(Ordering::Relaxed) {
            status = 500;
            body = b"origin failed".to_vec();
            headers = vec![("Cache-Control".into(), "max-age=60".into())];
        }
        CannedResponse { status, headers, body }
    });
    (upstream, knobs)
}

const LOCATIONS: &str = r#"
            location / {
                proxy_pass http://127.0.0.1:%%ORIGIN%%;
                shield_cache zone=c;
                shield_cache_background_update on;
                add_header X-Cache $shield_cache_status always;
            }
            location /fg/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                add_header X-Cache $shield_cache_status always;
            }
            location /updating/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_use_stale updating;
                shield_cache_background_update on;
                add_header X-Cache $shield_cache_status always;
            }
            location /locked/ {
                proxy_pass http://127.0.0.1:%%ORIGIN%%/;
                shield_cache zone=c;
                shield_cache_lock on timeout=5s;
                add_header X-Cache $shield_cache_status always;
            }
            location = /metrics { shield_status; }"#;

/// One node on the zone's shared memory, or two nodes sharing a Redis.
fn nodes(origin: &Upstream, redis: Option<&Redis>) -> Vec<Nginx> {
    let http =
        format!("shield_cache_zone zone=c:1m max_entry=64k;\n server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}");
    match redis {
        None => vec![Nginx::builder().var("ORIGIN", origin.port).http(&http).start()],
        Some(redis) => {
            let http = format!("shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;\n {http}");
            let node = || Nginx::builder().var("ORIGIN", origin.port).var("REDIS", redis.port).http(&http).start();
            vec![node(), node()]
        }
    }
}

/// A zone counter's value on one node.
fn counter(port: u16, name: &str) -> u64 {
    let prefix = format!("{name}{{zone=\"c\"}} ");
    let metrics = http_get(port, "/metrics").body_str().to_string();
    metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Waits (at most 5 s) until the nodes together counted `n` stores.
fn wait_stores_on(ports: &[u16], n: u64) {
    let start = Instant::now();
    while ports.iter().map(|p| counter(*p, "shield_cache_stores_total")).sum::<u64>() < n {
        assert!(start.elapsed() < Duration::from_secs(5), "fewer than {n} stores on {ports:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn metric(port: u16, line: &str) -> bool {
    http_get(port, "/metrics").body_str().contains(line)
}

/// Waits (at most 10 s) until the origin has answered `n` requests for `path`.
fn wait_hits(origin: &Upstream, path: &str, n: usize) {
    let start = Instant::now();
    while hits(origin, path) < n {
        assert!(start.elapsed() < Duration::from_secs(10), "{path}: {} origin requests, not {n}", hits(origin, path));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The issue's proof: N concurrent requests for a stale entry within its window are all
/// answered at once with it, while exactly one background refresh reaches the origin; the
/// next request is a fresh hit with the refreshed body.
fn one_background_refresh_for_concurrent_stale_requests(redis: Option<&Redis>) {
    let (origin, knobs) = origin();
    let nodes = nodes(&origin, redis);
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let first = get(ports[0], "/swr", &[]);
    assert_eq!(first.header("X-Cache"), Some("MISS"));
    wait_stores(ports[0], 1);
    wait_until_stale();
    // The refresh takes 1.5 s: every answer below comes from the stale entry before it ends.
    knobs.slow.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let results = storm(ports.clone(), "/swr", 40, 20);
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 40);
    assert!(results.iter().all(|(s, _, b)| *s == 200 && *b == first.body), "all stale: {results:?}");
    assert_eq!(results.iter().filter(|(_, c, _)| c == "STALE").count(), 1, "one started the refresh: {results:?}");
    assert!(results.iter().all(|(_, c, _)| c == "STALE" || c == "UPDATING"), "{results:?}");
    assert!(elapsed < Duration::from_millis(1400), "answered without waiting for the origin: {elapsed:?}");
    assert_eq!(hits(&origin, "/swr"), 1, "the refresh had not answered yet");
    knobs.slow.store(false, Ordering::Relaxed);
    wait_hits(&origin, "/swr", 2);
    wait_stores_on(&ports, 2);
    for port in &ports {
        let fresh = get(*port, "/swr", &[]);
        assert_eq!(fresh.header("X-Cache"), Some("HIT"), "{fresh:?}");
        assert_ne!(fresh.body, first.body, "the refreshed body");
        assert!(fresh.body_str().starts_with("/swr #"));
    }
    assert_eq!(hits(&origin, "/swr"), 2, "exactly one refresh");
    let started: u64 = ports.iter().map(|p| counter(*p, "shield_cache_background_updates_total")).sum();
    assert_eq!(started, 1, "one node started the one refresh");
}

#[test]
fn one_background_refresh_for_concurrent_stale_requests_local() {
    one_background_refresh_for_concurrent_stale_requests(None);
}

#[test]
fn one_background_refresh_for_concurrent_stale_requests_redis() {
    let redis = Redis::start();
    one_background_refresh_for_concurrent_stale_requests(Some(&redis));
}

/// A refresh the origin fails (a 500 that would be storable by itself) is not stored: the
/// stale entry keeps answering within its window, each stale request starting one more
/// refresh; once the origin recovers, the refresh replaces the entry.
fn a_failed_refresh_keeps_the_stale_entry(redis: Option<&Redis>) {
    let (origin, knobs) = origin();
    let nodes = nodes(&origin, redis);
    let port = nodes[0].port;
    let first = get(port, "/swr-fail", &[]);
    wait_stores(port, 1);
    wait_until_stale();
    knobs.fail.store(true, Ordering::Relaxed);
    for n in 2..=3 {
        let r = get(port, "/swr-fail", &[]);
        assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("STALE"), &first.body), "{r:?}");
        let cs = r.header("Cache-Status").unwrap_or_default();
        assert!(cs.starts_with("nginx-shield; hit; ttl=-") && cs.ends_with("; detail=stale-while-revalidate"), "{cs}");
        wait_hits(&origin, "/swr-fail", n);
    }
    // The failed refreshes released the lock and stored nothing.
    std::thread::sleep(Duration::from_millis(200));
    assert!(metric(port, "shield_cache_stores_total{zone=\"c\"} 1\n"), "the 500s were not stored");
    knobs.fail.store(false, Ordering::Relaxed);
    let r = get(port, "/swr-fail", &[]);
    assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("STALE"), &first.body), "{r:?}");
    wait_stores(port, 2);
    let fresh = get(port, "/swr-fail", &[]);
    assert_eq!((fresh.status, fresh.header("X-Cache")), (200, Some("HIT")), "{fresh:?}");
    assert_ne!(fresh.body, first.body);
    assert_eq!(hits(&origin, "/swr-fail"), 4);
}

#[test]
fn a_failed_refresh_keeps_the_stale_entry_local() {
    a_failed_refresh_keeps_the_stale_entry(None);
}

#[test]
fn a_failed_refresh_keeps_the_stale_entry_redis() {
    let redis = Redis::start();
    a_failed_refresh_keeps_the_stale_entry(Some(&redis));
}

/// The refresh carries the entry's validator: the origin's 304 refreshes the entry (same
/// body, the 304's freshness). Past the window, the request itself revalidates (REVALIDATED).
fn the_refresh_revalidates_and_past_the_window_the_request_does(redis: Option<&Redis>) {
    let (origin, _) = origin();
    let nodes = nodes(&origin, redis);
    let port = nodes[0].port;
    let first = get(port, "/etag-swr", &[]);
    let short = get(port, "/short-swr", &[]);
    wait_stores(port, 2);
    wait_until_stale();
    let r = get(port, "/etag-swr", &[("If-None-Match", "\"other\"")]);
    assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("STALE"), &first.body), "{r:?}");
    wait_stores(port, 3);
    let sent = origin.requests().into_iter().filter(|q| q.path == "/etag-swr").collect::<Vec<_>>();
    assert_eq!(sent.len(), 2);
    let inm = sent[1].headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("if-none-match")).map(|(_, v)| v.clone());
    assert_eq!(inm.as_deref(), Some("\"e1\""), "the entry's validator, not the client's");
    let hit = get(port, "/etag-swr", &[]);
    assert_eq!((hit.header("X-Cache"), &hit.body), (Some("HIT"), &first.body), "{hit:?}");
    assert_eq!((hit.header("Cache-Control"), hit.header("X-Revalidated")), (Some("max-age=60"), Some("yes")));
    // max-age=1, stale-while-revalidate=1: 3.5 s later it is 2 s or more past its window.
    std::thread::sleep(Duration::from_millis(1400));
    let late = get(port, "/short-swr", &[]);
    assert_eq!((late.header("X-Cache"), &late.body), (Some("REVALIDATED"), &short.body), "{late:?}");
    assert_eq!(hits(&origin, "/short-swr"), 2);
}

#[test]
fn the_refresh_revalidates_and_past_the_window_the_request_does_local() {
    the_refresh_revalidates_and_past_the_window_the_request_does(None);
}

#[test]
fn the_refresh_revalidates_and_past_the_window_the_request_does_redis() {
    let redis = Redis::start();
    the_refresh_revalidates_and_past_the_window_the_request_does(Some(&redis));
}

/// `shield_cache_use_stale updating` serves a stale entry without a stale-while-revalidate
/// window; with background update off, one request fetches (EXPIRED, waiting for the origin)
/// while the others get the stale entry at once (UPDATING).
#[test]
fn use_stale_updating_and_background_update_off() {
    let (origin, knobs) = origin();
    let nodes = nodes(&origin, None);
    let port = nodes[0].port;
    let plain = get(port, "/updating/plain", &[]);
    let fg = get(port, "/fg/fg-swr", &[]);
    wait_stores(port, 2);
    wait_until_stale();
    let r = get(port, "/updating/plain", &[]);
    assert_eq!((r.header("X-Cache"), &r.body), (Some("STALE"), &plain.body), "{r:?}");
    wait_stores(port, 3);
    let fresh = get(port, "/updating/plain", &[]);
    assert_eq!(fresh.header("X-Cache"), Some("HIT"));
    assert_ne!(fresh.body, plain.body);
    knobs.slow.store(true, Ordering::Relaxed);
    let results = storm(vec![port], "/fg/fg-swr", 20, 20);
    assert!(results.iter().all(|(s, _, _)| *s == 200));
    let expired: Vec<_> = results.iter().filter(|(_, c, _)| c == "EXPIRED").collect();
    assert_eq!(expired.len(), 1, "one fetched in the foreground: {results:?}");
    assert_ne!(expired[0].2, fg.body, "and got the origin's new body");
    let updating = results.iter().filter(|(_, c, b)| c == "UPDATING" && *b == fg.body).count();
    assert_eq!(updating, 19, "the others got the stale entry: {results:?}");
    assert_eq!(hits(&origin, "/fg-swr"), 2);
}

/// RFC 9111 §5.2.2.4: a `no-cache` response is stored, and every reuse is revalidated with
/// the origin; its 304 serves the stored body.
fn no_cache_is_stored_and_revalidated_before_every_reuse(redis: Option<&Redis>) {
    let (origin, _) = origin();
    let nodes = nodes(&origin, redis);
    let port = nodes[0].port;
    let first = get(port, "/no-cache", &[]);
    assert_eq!(first.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200; stored"));
    wait_stores(port, 1);
    for (i, port) in nodes.iter().map(|n| n.port).cycle().take(3).enumerate() {
        let r = get(port, "/no-cache", &[]);
        assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("REVALIDATED"), &first.body), "{r:?}");
        assert_eq!(r.header("Cache-Status"), Some("nginx-shield; fwd=stale; fwd-status=304; stored"));
        assert_eq!(hits(&origin, "/no-cache"), i + 2, "each reuse asked the origin");
    }
    let conditional = origin
        .requests()
        .iter()
        .filter(|q| {
            q.path == "/no-cache"
                && q.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("if-none-match") && v == "\"n1\"")
        })
        .count();
    assert_eq!(conditional, 3, "every reuse was a conditional request");
    // With Last-Modified only: If-Modified-Since.
    std::thread::sleep(Duration::from_millis(300)); // the revalidations' stores are counted
    let before = counter(port, "shield_cache_stores_total");
    let lm = get(port, "/no-cache-lm", &[]);
    wait_stores_on(&[port], before + 1);
    let r = get(port, "/no-cache-lm", &[]);
    assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("REVALIDATED"), &lm.body), "{r:?}");
    assert_eq!(r.header("Last-Modified"), Some("Mon, 01 Jan 2024 00:00:00 GMT"));
    assert_eq!(hits(&origin, "/no-cache-lm"), 2);
}

#[test]
fn no_cache_is_stored_and_revalidated_before_every_reuse_local() {
    no_cache_is_stored_and_revalidated_before_every_reuse(None);
}

#[test]
fn no_cache_is_stored_and_revalidated_before_every_reuse_redis() {
    let redis = Redis::start();
    no_cache_is_stored_and_revalidated_before_every_reuse(Some(&redis));
}

/// A HEAD that finds a stale entry gets it (headers only), and its refresh is a GET: the
/// refreshed entry has a body.
#[test]
fn a_head_on_a_stale_entry_refreshes_it_with_a_get() {
    let (origin, _) = origin();
    let nodes = nodes(&origin, None);
    let port = nodes[0].port;
    let first = get(port, "/swr", &[]);
    wait_stores(port, 1);
    wait_until_stale();
    let head = http_request(port, "HEAD", "/swr", &[], None);
    assert_eq!((head.status, head.header("X-Cache")), (200, Some("STALE")), "{head:?}");
    assert_eq!(head.header("Content-Length"), Some(first.body.len().to_string().as_str()));
    assert!(head.body.is_empty());
    wait_stores(port, 2);
    assert_eq!(origin.requests().last().map(|q| q.method.clone()).as_deref(), Some("GET"));
    let fresh = get(port, "/swr", &[]);
    assert_eq!(fresh.header("X-Cache"), Some("HIT"));
    assert!(fresh.body_str().starts_with("/swr #") && fresh.body != first.body, "{fresh:?}");
}

#[test]
fn bad_background_update_and_use_stale_values_fail_nginx_t() {
    let conf =
        |loc: &str| format!("shield_cache_zone zone=c:1m; server {{ listen 127.0.0.1:1; location / {{ {loc} }} }}");
    assert_config_error(&conf("shield_cache_background_update maybe;"), "maybe");
    assert_config_error(
        &conf("shield_cache_background_update on; shield_cache_background_update off;"),
        "\"shield_cache_background_update\" directive is duplicate",
    );
    assert_config_error(&conf("shield_cache_use_stale updating off;"), "\"off\"");
    assert_config_error(&conf("shield_cache_use_stale updated;"), "\"updated\"");
    let (ok, out) = support::nginx_test_config(&conf(
        "shield_cache zone=c; shield_cache_use_stale updating error; shield_cache_background_update on;",
    ));
    assert!(ok, "{out}");
}

/// With `Vary`, each variant is refreshed on its own (its own lock), and the refresh selects
/// the same variant as the request that started it.
#[test]
fn each_vary_variant_is_refreshed_on_its_own() {
    let (origin, _) = origin();
    let nodes = nodes(&origin, None);
    let port = nodes[0].port;
    let en = get(port, "/vary-swr", &[("X-Lang", "en")]);
    let fr = get(port, "/vary-swr", &[("X-Lang", "fr")]);
    wait_stores(port, 4); // two variants, the marker stored with each
    wait_until_stale();
    let stale_en = get(port, "/vary-swr", &[("X-Lang", "en")]);
    let stale_fr = get(port, "/vary-swr", &[("X-Lang", "fr")]);
    assert_eq!((stale_en.header("X-Cache"), &stale_en.body), (Some("STALE"), &en.body), "{stale_en:?}");
    assert_eq!((stale_fr.header("X-Cache"), &stale_fr.body), (Some("STALE"), &fr.body), "{stale_fr:?}");
    wait_stores(port, 8);
    let new_en = get(port, "/vary-swr", &[("X-Lang", "en")]);
    let new_fr = get(port, "/vary-swr", &[("X-Lang", "fr")]);
    assert_eq!((new_en.header("X-Cache"), new_fr.header("X-Cache")), (Some("HIT"), Some("HIT")));
    assert!(new_en.body_str().starts_with("/vary-swr en #") && new_en.body != en.body, "{new_en:?}");
    assert!(new_fr.body_str().starts_with("/vary-swr fr #") && new_fr.body != fr.body, "{new_fr:?}");
    assert_eq!(hits(&origin, "/vary-swr"), 4);
}

/// `no-cache` with `shield_cache_lock`: concurrent requests wait for one revalidation and then
/// revalidate themselves (the entry is never fresh); each gets the stored body, none the
/// origin's bare 304.
#[test]
fn concurrent_no_cache_revalidations_under_the_lock_all_get_the_body() {
    let (origin, knobs) = origin();
    let nodes = nodes(&origin, None);
    let port = nodes[0].port;
    let first = get(port, "/locked/no-cache", &[]);
    wait_stores(port, 1);
    knobs.slow.store(true, Ordering::Relaxed);
    let results = storm(vec![port], "/locked/no-cache", 6, 6);
    assert_eq!(results.len(), 6);
    for (status, cache, body) in &results {
        assert_eq!((*status, cache.as_str(), body), (200, "REVALIDATED", &first.body), "{results:?}");
    }
}

/// The origin unreachable: the refresh ends with nginx's own 502, which is not stored and
/// releases the lock; the stale entry keeps answering and each stale request tries again.
#[test]
fn an_unreachable_origin_keeps_the_stale_entry_answering() {
    let (origin, _) = origin();
    let nodes = nodes(&origin, None);
    let port = nodes[0].port;
    nodes[0].allow_log("connect() failed");
    let first = get(port, "/swr", &[]);
    wait_stores(port, 1);
    drop(origin);
    wait_until_stale();
    for _ in 0..3 {
        let r = get(port, "/swr", &[]);
        assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("STALE"), &first.body), "{r:?}");
        std::thread::sleep(Duration::from_millis(200)); // the refresh failed and let go of the lock
    }
    assert_eq!(counter(port, "shield_cache_background_updates_total"), 3);
    assert_eq!(counter(port, "shield_cache_stores_total"), 1);
}
