//! The response cache shared by nodes through a real redis-server, coalescing
//! (`shield_cache_lock`), stale entries standing in for a failing origin, purge by tag (also on
//! a real Redis Cluster) and soft purge across nodes, and `Location` invalidation.

#[path = "support/cache_origin.rs"]
mod cache_origin;
#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::time::{Duration, Instant};

use cache_origin::{get, hits, origin, start, storm, wait_stores, wait_until_stale, LOCATIONS};
use support::{http_get, http_request, Nginx, Redis};

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

/// The proof: 1,000 requests for a cold key across 2 nodes x 2 workers sharing Redis
/// reach the origin once.
#[test]
fn a_thousand_requests_across_two_nodes_cause_one_origin_request() {
    let origin = origin();
    let redis = Redis::start();
    // A generous Redis timeout: on a loaded machine a lock reply later than the timeout fails
    // open (to the origin, by design), which is not what this test is about.
    let http = format!(
        "shield_redis redis://127.0.0.1:%%REDIS%% timeout=3s;\n shield_cache_zone zone=c:4m;\n \
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

/// Across nodes: a lock holder whose response is not stored releases the lock, and the other
/// node's waiters (polling Redis: is the lock still held?) go to the origin at once, not after
/// the lock's 20 s timeout.
#[test]
fn other_nodes_waiters_go_to_the_origin_when_the_holder_stores_nothing() {
    let origin = origin();
    let redis = Redis::start();
    let (a, b) = shared_pair(&origin, &redis);
    let started = std::time::Instant::now();
    let results = storm(vec![a.port, b.port], "/locked/slow-no-store", 8, 8);
    let took = started.elapsed();
    assert!(results.iter().all(|(s, c, _)| *s == 200 && c == "MISS"), "{results:?}");
    assert_eq!(hits(&origin, "/slow-no-store"), 8, "nothing was stored: each fetched");
    // One 500 ms fetch per flight, a few flights in a row: far below the 20 s lock timeout.
    assert!(took < Duration::from_secs(10), "the waiters waited for the lock's timeout: {took:?}");
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

/// `nginx -s reload` while requests wait on the lock: the old workers finish them (their
/// timers are non-cancelable), every one is answered, still with one origin request.
#[test]
fn a_reload_does_not_drop_requests_waiting_on_the_lock() {
    let origin = origin();
    let nginx = start(&origin);
    let port = nginx.port;
    let storm = std::thread::spawn(move || storm(vec![port], "/locked/slow", 40, 40));
    // The origin takes 500 ms: reload once its one request arrived, while the others wait.
    let start = Instant::now();
    while hits(&origin, "/slow") == 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    nginx.reload();
    let results = storm.join().unwrap();
    assert_eq!(results.len(), 40, "every request answered");
    assert!(results.iter().all(|(s, _, _)| *s == 200), "{results:?}");
    assert_eq!(hits(&origin, "/slow"), 1);
}

/// A stale entry with a validator is revalidated: the origin's 304 updates the entry, which
/// answers (and is fresh again for the 304's max-age).
#[test]
fn a_stale_entry_is_revalidated_and_the_304_merged() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/reval", &[]);
    assert_eq!(first.status, 200);
    wait_stores(nginx.port, 1);
    wait_until_stale();
    let r = get(nginx.port, "/reval", &[]);
    assert_eq!((r.status, r.header("X-Cache"), &r.body), (200, Some("REVALIDATED"), &first.body), "{r:?}");
    assert_eq!(r.header("Cache-Status"), Some("nginx-shield; fwd=stale; fwd-status=304; stored"));
    assert_eq!(r.header("Cache-Control"), Some("max-age=60"), "the 304's headers merged");
    assert_eq!(r.header("X-Revalidated"), Some("yes"));
    assert_eq!(r.headers_all("Content-Length"), vec![first.body.len().to_string()]);
    let sent = origin.requests();
    let inm =
        sent.last().and_then(|q| q.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("if-none-match")).cloned());
    assert_eq!(inm.map(|(_, v)| v), Some("\"r1\"".to_string()), "the entry's validator went to the origin");
    wait_stores(nginx.port, 2);
    let again = get(nginx.port, "/reval", &[]);
    assert_eq!((again.header("X-Cache"), &again.body), (Some("HIT"), &first.body));
    assert_eq!(hits(&origin, "/reval"), 2);
}

/// How many times Redis ran `command` (INFO commandstats).
fn calls(redis: &Redis, command: &str) -> u64 {
    let stats = redis.command(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Large entries keep a node-local copy that Redis checks on every hit: B's hits are served
/// from B's copy (Redis answers the check, not the 48 KB value), and a purge or a newer store
/// through A is seen by B's very next request, as without copies.
#[test]
fn local_copies_of_large_entries_follow_redis() {
    let origin = origin();
    let redis = Redis::start();
    let (a, b) = shared_pair(&origin, &redis);
    let first = get(a.port, "/mid", &[]);
    assert_eq!(first.header("X-Cache"), Some("MISS"));
    wait_stores(a.port, 1);
    // B's first hit moves the value and keeps a copy; the next ones only check it.
    assert_eq!(get(b.port, "/mid", &[]).body, first.body);
    // (The first check loads the script: NOSCRIPT, then EVAL.)
    assert_eq!(get(b.port, "/mid", &[]).body, first.body);
    let (gets, scripts) = (calls(&redis, "get"), calls(&redis, "evalsha") + calls(&redis, "eval"));
    for _ in 0..5 {
        let r = get(b.port, "/mid", &[]);
        assert_eq!((r.header("X-Cache"), &r.body), (Some("HIT"), &first.body));
    }
    assert_eq!(calls(&redis, "get"), gets, "no GET of the value: the copy was served");
    assert_eq!(calls(&redis, "evalsha") + calls(&redis, "eval"), scripts + 5, "one check per hit");
    // A purge through A: B does not serve its copy.
    let purge = http_request(a.port, "PURGE", "/mid", &[], None);
    assert_eq!(purge.status, 200);
    let fresh = get(b.port, "/mid", &[]);
    assert_eq!(fresh.header("X-Cache"), Some("MISS"), "the purge is seen through B's copy");
    assert_ne!(fresh.body, first.body);
    wait_stores(b.port, 1);
    // B stored a newer value: A's copy (of its own older store) is not served either.
    let on_a = get(a.port, "/mid", &[]);
    assert_eq!((on_a.header("X-Cache"), &on_a.body), (Some("HIT"), &fresh.body), "A gets B's newer store");
    assert_eq!(hits(&origin, "/mid"), 2);
    // B holds a copy of the current store; a soft purge through A rewrites the entry in place
    // in Redis: B's copy must not pass for current (the entry is stale now: refetched).
    assert_eq!(get(b.port, "/mid", &[]).header("X-Cache"), Some("HIT"));
    let key: String = on_a
        .header("X-Key")
        .expect("the cache key")
        .bytes()
        .map(|c| if c.is_ascii_alphanumeric() { (c as char).to_string() } else { format!("%{c:02X}") })
        .collect();
    let soft = http_request(a.port, "PURGE", &format!("/purge-soft?key={key}"), &[], None);
    assert_eq!(soft.status, 200, "{}", soft.body_str());
    let after = get(b.port, "/mid", &[]);
    assert_ne!(after.header("X-Cache"), Some("HIT"), "B's copy of a soft-purged entry is not fresh");
    assert_eq!(hits(&origin, "/mid"), 3);
    // Every lookup's Redis round trip is in the cache's latency histogram: B made 10.
    let metrics = http_get(b.port, "/metrics").body_str().to_string();
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shield_cache_redis_latency_seconds_count{zone=\"c\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(count, Some(10), "{metrics}");
}

fn shared_pair(origin: &support::Upstream, redis: &Redis) -> (Nginx, Nginx) {
    let http = format!(
        "shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;\n shield_cache_zone zone=c:1m max_entry=64k;\n \
         server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}"
    );
    let node = || Nginx::builder().var("ORIGIN", origin.port).var("REDIS", redis.port).http(&http).start();
    (node(), node())
}

/// Purge by tag through Redis: stored on A, purged on A, gone on B; entries with other tags
/// stay hits. The tag's set has an expiry at least as long as its entries'.
#[test]
fn a_tag_purge_on_one_node_drops_the_tags_entries_on_every_node() {
    let origin = origin();
    let redis = Redis::start();
    let (a, b) = shared_pair(&origin, &redis);
    get(a.port, "/tagged/1?t=a,b", &[]);
    get(a.port, "/tagged/2?t=b+c", &[]);
    get(a.port, "/tagged/3?t=c", &[]);
    get(a.port, "/vary?t=b", &[("X-Lang", "en")]);
    wait_stores(a.port, 5);
    for p in ["/tagged/1?t=a,b", "/tagged/2?t=b+c", "/tagged/3?t=c"] {
        assert_eq!(get(b.port, p, &[]).header("X-Cache"), Some("HIT"), "{p} on B");
    }
    let ttl: i64 = redis.command(&["PTTL", "shield:cache:c:tag:b"]).trim_start_matches(':').parse().unwrap();
    assert!((59_000..=60_000).contains(&ttl), "the tag's set expires with its longest entry: {ttl}");
    assert_eq!(redis.command(&["ZCARD", "shield:cache:c:tag:b"]), ":2");
    let purge = http_request(a.port, "PURGE", "/purge?tag=b", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true,\"entries\":2}\n"));
    assert_eq!(redis.command(&["EXISTS", "shield:cache:c:tag:b"]), ":0", "a hard purge drops the set");
    assert_eq!(get(b.port, "/tagged/1?t=a,b", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(b.port, "/tagged/2?t=b+c", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(b.port, "/tagged/3?t=c", &[]).header("X-Cache"), Some("HIT"), "another tag stays");
    assert_eq!(get(b.port, "/vary?t=b", &[("X-Lang", "en")]).header("X-Cache"), Some("HIT"), "untagged stays");
    assert_eq!((hits(&origin, "/tagged/1"), hits(&origin, "/tagged/2"), hits(&origin, "/tagged/3")), (2, 2, 1));
    // Soft, by tag on B: A's next request revalidates (the 304 answers), never a plain hit.
    let first = get(a.port, "/soft/soft-etag", &[]);
    wait_stores(a.port, 6);
    assert_eq!(get(b.port, "/soft/soft-etag", &[]).header("X-Cache"), Some("HIT"));
    let soft = http_request(b.port, "PURGE", "/purge-soft?tag=soft", &[], None);
    assert_eq!((soft.status, soft.body_str()), (200, "{\"purged\":true,\"entries\":1}\n"));
    let r = get(a.port, "/soft/soft-etag", &[]);
    assert_eq!((r.header("X-Cache"), &r.body), (Some("REVALIDATED"), &first.body), "{r:?}");
    assert_eq!(hits(&origin, "/soft-etag"), 2);
    // Soft by URL on A: B revalidates.
    wait_stores(a.port, 7);
    assert_eq!(http_request(a.port, "PURGE", "/soft/soft-etag", &[], None).status, 200);
    assert_eq!(get(b.port, "/soft/soft-etag", &[]).header("X-Cache"), Some("REVALIDATED"));
}

/// RFC 9111 §4.4 across nodes: POST through A answered 201 with `Location: /cached/b` (and a
/// same-origin `Content-Location`) drops those entries for B too.
#[test]
fn a_post_invalidates_its_location_on_every_node() {
    let origin = origin();
    let redis = Redis::start();
    let (a, b) = shared_pair(&origin, &redis);
    for p in ["/cached/b", "/cached/c", "/cached/d"] {
        get(b.port, p, &[]);
    }
    wait_stores(b.port, 3);
    assert_eq!(get(a.port, "/cached/b", &[]).header("X-Cache"), Some("HIT"));
    assert_eq!(http_request(a.port, "POST", "/created", &[], Some(b"x")).status, 201);
    assert_eq!(get(b.port, "/cached/b", &[]).header("X-Cache"), Some("MISS"), "Location");
    assert_eq!(get(a.port, "/cached/c", &[]).header("X-Cache"), Some("MISS"), "Content-Location");
    assert_eq!(get(b.port, "/cached/d", &[]).header("X-Cache"), Some("HIT"));
    assert_eq!(hits(&origin, "/cached/b"), 2);
}

/// On a real Redis Cluster (three primaries): a tag's set lives on its slot, its entries on
/// theirs; purging the tag through node A drops every entry for node B, wherever it lives.
#[test]
fn a_tag_purge_works_across_the_slots_of_a_redis_cluster() {
    let cluster = cluster::RedisCluster::start();
    let origin = origin();
    let http = format!(
        "shield_redis {} timeout=500ms;\n shield_cache_zone zone=c:1m max_entry=64k;\n \
         server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}",
        cluster.url()
    );
    let node = || Nginx::builder().var("ORIGIN", origin.port).http(&http).start();
    let (a, b) = (node(), node());
    // The slot map comes with the first replies: wait until storing works on both.
    let start = Instant::now();
    for n in [&a, &b] {
        while get(n.port, "/cached/warm", &[]).header("X-Cache") != Some("HIT") {
            assert!(start.elapsed() < Duration::from_secs(10), "the cache never used the cluster");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let paths: Vec<String> = (0..20).map(|i| format!("/tagged/{i}?t=spread,n{i}")).collect();
    for p in &paths {
        get(a.port, p, &[]);
    }
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    let tag_set = "shield:cache:c:tag:spread";
    let owner = cluster.node_of_key(tag_set);
    let wait = Instant::now();
    while cluster.command(owner, &["ZCARD", tag_set]) != ":20" {
        assert!(wait.elapsed() < Duration::from_secs(5), "20 members: {}", cluster.command(owner, &["ZCARD", tag_set]));
        std::thread::sleep(Duration::from_millis(20));
    }
    let used = primaries.iter().filter(|&&p| cluster.command(p, &["DBSIZE"]) != ":0").count();
    assert!(used >= 2, "entries and sets spread over the primaries");
    for p in &paths {
        let wait = Instant::now();
        while get(b.port, p, &[]).header("X-Cache") != Some("HIT") {
            assert!(wait.elapsed() < Duration::from_secs(5), "{p} never a hit on B");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let purge = http_request(a.port, "PURGE", "/purge?tag=spread", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true,\"entries\":20}\n"));
    for p in &paths {
        assert_eq!(get(b.port, p, &[]).header("X-Cache"), Some("MISS"), "{p} on B");
    }
    assert_eq!(get(b.port, "/cached/warm", &[]).header("X-Cache"), Some("HIT"), "untagged stays");
}

/// An entry revalidated by a 304 (here: 1 s, then an hour) is recorded again in its tags'
/// index with its new lifetime: the index never expires before the entry, a purge still finds it.
#[test]
fn a_revalidated_entry_stays_in_its_tags_index_for_its_new_lifetime() {
    let origin = origin();
    let redis = Redis::start();
    let (a, b) = shared_pair(&origin, &redis);
    let set = "shield:cache:c:tag:rv";
    let score = || -> f64 {
        let reply = redis.command(&["ZRANGE", set, "0", "-1", "WITHSCORES"]);
        reply.lines().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("one member: {reply}"))
    };
    get(a.port, "/tag-reval", &[]);
    wait_stores(a.port, 1);
    let before = score();
    wait_until_stale();
    let r = get(a.port, "/tag-reval", &[]);
    assert_eq!(r.header("X-Cache"), Some("REVALIDATED"), "{r:?}");
    wait_stores(a.port, 2);
    let after = score();
    assert!(after - before > 3_000_000.0, "the member's expiry follows the entry's: {before} -> {after}");
    let ttl: i64 = redis.command(&["PTTL", set]).trim_start_matches(':').parse().unwrap();
    assert!(ttl > 3_590_000, "the set lives as long as the entry: {ttl}");
    assert_eq!(get(b.port, "/tag-reval", &[]).header("X-Cache"), Some("HIT"));
    let purge = http_request(b.port, "PURGE", "/purge?tag=rv", &[], None);
    assert_eq!(purge.body_str(), "{\"purged\":true,\"entries\":1}\n");
    assert_eq!(get(a.port, "/tag-reval", &[]).header("X-Cache"), Some("MISS"));
}
