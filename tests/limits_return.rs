//! Limits and bans in locations that answer in the rewrite phase (`return`, a redirecting
//! `rewrite`): the limiter runs there before the answer, exactly once per request, with the
//! shared-memory and the Redis backends; the configurations it cannot serve fail `nginx -t`.

mod support;

use std::time::{Duration, Instant};

use support::{assert_config_error, http_request, nginx_test_config, parallel, try_http_request, Nginx, Redis};

/// Polls (bounded) until `request` answers `status`: the log phase counts a response for
/// `shield_ban` once it has been sent, so the next request may overtake it.
fn wait_for_status(request: impl Fn() -> u16, status: u16, what: &str) {
    let start = Instant::now();
    loop {
        let got = request();
        if got == status {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{what}: still {got}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A login stub that only ever answers `return 401`: failures are counted and, past the
/// threshold, even the stub answers the ban status, on the local and the Redis backends.
#[test]
fn a_return_401_login_stub_bans_after_the_threshold() {
    let redis = Redis::start();
    let nginx = Nginx::builder()
        .var("REDIS", redis.port)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;
        shield_limit_zone $http_x_client zone=local_login:1m rate=1r/s backend=local;
        shield_limit_zone $http_x_client zone=redis_login:1m rate=1r/s backend=redis;
        log_format limits "$uri $status $shield_limit_status";
        server {
            listen 127.0.0.1:%%PORT%%;
            access_log %%TMP%%/limits.log limits;
            location /local/login { shield_ban zone=local_login status=401 threshold=3/1m ban=1m; return 401 "no\n"; }
            location /redis/login { shield_ban zone=redis_login status=401 threshold=3/1m ban=1m; return 401 "no\n"; }
        }"#,
        )
        .start();
    for backend in ["local", "redis"] {
        let path = format!("/{backend}/login");
        let get = |client: &str| http_request(nginx.port, "POST", &path, &[("X-Client", client)], None);
        for _ in 0..3 {
            assert_eq!(get("attacker").status, 401, "{backend}: the stub answers until the threshold");
        }
        wait_for_status(|| get("attacker").status, 429, &format!("{backend}: the ban applies to the return stub"));
        let banned = get("attacker");
        assert_eq!(banned.status, 429, "{backend}: still banned");
        assert!(banned.header("Retry-After").is_some(), "{backend}: the ban says when to come back");
        assert_eq!(get("someone-else").status, 401, "{backend}: only that key is banned");
    }
    assert!(redis.command(&["KEYS", "*"]).contains("attacker"), "the Redis ban lives in Redis");
    let log = nginx.wait_log("limits.log", 10);
    assert!(log.contains("/local/login 429 REJECTED"), "$shield_limit_status says why:\n{log}");
}

fn api_stub_nginx(redis: &Redis) -> Nginx {
    Nginx::builder()
        .var("REDIS", redis.port)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;
        shield_limit_zone $http_x_client zone=local_api:1m rate=1r/h backend=local;
        shield_limit_zone $http_x_client zone=redis_api:1m rate=1r/h backend=redis;
        server {
            listen 127.0.0.1:%%PORT%%;
            location /local/api { shield_limit zone=local_api burst=9 nodelay; return 200 "api\n"; }
            location /redis/api { shield_limit zone=redis_api burst=9 nodelay; return 200 "api\n"; }
            location /redirect { shield_limit zone=local_api burst=9 nodelay; rewrite ^ /elsewhere permanent; }
        }"#,
        )
        .start()
}

/// `return 200` API stubs are limited exactly, across two workers, by a shared-memory zone
/// and by a Redis zone; the answers carry the rate-limit headers.
#[test]
fn a_return_200_api_stub_is_limited_exactly() {
    let redis = Redis::start();
    let nginx = api_stub_nginx(&redis);
    for backend in ["local", "redis"] {
        let (port, path) = (nginx.port, format!("/{backend}/api"));
        let statuses = parallel(30, 6, Duration::from_secs(30), move |_| {
            try_http_request(port, "GET", &path, &[("X-Client", "tenant")], None).map(|r| r.status)
        });
        let ok = statuses.iter().filter(|s| **s == Ok(200)).count();
        let limited = statuses.iter().filter(|s| **s == Ok(429)).count();
        assert_eq!((ok, limited), (10, 20), "{backend}: exactly burst + 1 admitted");
        let first = http_request(nginx.port, "GET", &format!("/{backend}/api"), &[("X-Client", "fresh")], None);
        assert_eq!(first.status, 200);
        assert_eq!(first.body_str(), "api\n", "{backend}: the stub's own answer");
        assert_eq!(first.header("X-RateLimit-Remaining"), Some("9"), "{backend}: one unit per request");
    }
    assert_eq!(redis.command(&["EXISTS", "shield:{tenant}:redis_api"]), ":1", "the Redis zone decided");
}

/// A `rewrite ... permanent` answers in the rewrite phase too: it is limited like `return`.
#[test]
fn a_redirecting_rewrite_is_limited() {
    let redis = Redis::start();
    let nginx = api_stub_nginx(&redis);
    let statuses: Vec<u16> =
        (0..12).map(|_| http_request(nginx.port, "GET", "/redirect", &[("X-Client", "r")], None).status).collect();
    assert_eq!(statuses[..10], [301; 10], "the redirect answers within the limit");
    assert_eq!(statuses[10..], [429; 2], "then the limit answers");
}

/// `if (...) { return ...; }` inside a limited location: the requests it answers are limited,
/// and those that go on to the location's content are counted once, not twice.
#[test]
fn a_return_inside_if_is_limited_and_every_request_counts_once() {
    let nginx = Nginx::start(
        r#"
        shield_limit_zone $http_x_client zone=mixed:1m rate=1r/h;
        log_format limits "$uri $status $shield_limit_status";
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            access_log %%TMP%%/limits.log limits;
            location / {
                shield_limit zone=mixed burst=3 nodelay;
                if ($arg_deny) { return 403; }
            }
        }"#,
    );
    let get = |path: &str| http_request(nginx.port, "GET", path, &[("X-Client", "c")], None);
    assert_eq!(get("/index.html?deny=1").status, 403);
    assert_eq!(get("/index.html?deny=1").status, 403);
    let served = get("/index.html");
    assert_eq!(served.status, 200, "the location's content is served");
    assert_eq!(served.header("X-RateLimit-Remaining"), Some("1"), "three requests, three units");
    assert_eq!(get("/index.html").status, 200);
    assert_eq!(get("/index.html?deny=1").status, 429, "the if's return is limited");
    assert_eq!(get("/index.html").status, 429);
    let log = nginx.wait_log("limits.log", 6);
    assert!(log.lines().any(|l| l == "/index.html 403 PASSED"), "the if's answer was checked: {log}");
}

/// A key built with `map` is evaluated when the limiter reads it, so it works before a
/// `return`.
#[test]
fn a_map_built_key_works_before_return() {
    let nginx = Nginx::start(
        r#"
        map $http_x_client $client_key { "" ""; default "client:$http_x_client"; }
        shield_limit_zone $client_key zone=mapped:1m rate=1r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            location / { shield_limit zone=mapped burst=1 nodelay; return 200 "ok\n"; }
        }"#,
    );
    let get = |client: &str| http_request(nginx.port, "GET", "/", &[("X-Client", client)], None).status;
    assert_eq!([get("a"), get("a"), get("a")], [200, 200, 429], "the mapped key is limited");
    assert_eq!(get("b"), 200, "another mapped key has its own quota");
    assert_eq!([get(""), get(""), get("")], [200; 3], "an empty mapped key is not limited");
}

/// A key the location's own `set` assigns cannot be read before `return` runs: refused at
/// `nginx -t`, naming the variable and suggesting `map`. In a location without `return` the
/// limiter still runs in preaccess, after `set`, and such a key keeps working.
#[test]
fn a_set_built_key_is_refused_before_return_and_works_without_it() {
    assert_config_error(
        r#"shield_limit_zone $k zone=s:1m rate=1r/s;
        server { listen 127.0.0.1:%%PORT%%; location / { set $k $arg_k; shield_limit zone=s; return 200; } }"#,
        "the key of zone \"s\" uses \"$k\", which \"set\" assigns in a location that answers with \"return\" \
         (location \"/\")",
    );
    assert_config_error(
        r#"shield_limit_zone "$host:$k" zone=s:1m rate=1r/s;
        server { listen 127.0.0.1:%%PORT%%; shield_ban zone=s status=401 threshold=3/1m ban=1m;
                 location / { if ($arg_x) { set $k 1; return 401; } } }"#,
        "build the key with \"map\" instead",
    );
    // An internal `rewrite ... last` does not answer: the limiter stays in preaccess there.
    let (ok, out) = nginx_test_config(
        r#"shield_limit_zone $k zone=s:1m rate=1r/s;
        server { listen 127.0.0.1:%%PORT%%;
                 location / { set $k $arg_k; shield_limit zone=s; rewrite ^/old$ /index.html last; } }"#,
    );
    assert!(ok, "a set key beside an internal rewrite loads:\n{out}");
    let nginx = Nginx::start(
        r#"
        shield_limit_zone $k zone=setkey:1m rate=1r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { set $k "user:$http_x_client"; shield_limit zone=setkey burst=1 nodelay; }
        }"#,
    );
    let get = |client: &str| http_request(nginx.port, "GET", "/index.html", &[("X-Client", client)], None).status;
    assert_eq!([get("a"), get("a"), get("a")], [200, 200, 429], "the set key limits in preaccess");
    assert_eq!(get("b"), 200);
}

/// A server{}-level `return` runs before any location is chosen: with limits or bans set in
/// that server{} it fails `nginx -t`; with limits only inherited from http{} (the usual port-80
/// redirect server) it loads with a warning that its answers are not limited.
#[test]
fn a_server_level_return_with_server_level_limits_fails_nginx_t() {
    let zone = "shield_limit_zone $binary_remote_addr zone=z:1m rate=1r/s;";
    assert_config_error(
        &format!("{zone} server {{ listen 127.0.0.1:%%PORT%%; shield_limit zone=z; return 301 https://example.com; }}"),
        "\"return\" at the server{} level (server in ",
    );
    assert_config_error(
        &format!(
            "{zone} server {{ listen 127.0.0.1:%%PORT%%; shield_ban zone=z status=401 threshold=3/1m ban=1m;
            if ($arg_x) {{ return 444; }} }}"
        ),
        "move the \"return\" into a location",
    );
    let (ok, out) = nginx_test_config(&format!(
        "{zone} shield_limit zone=z; server {{ listen 127.0.0.1:%%PORT%%; return 301 https://example.com$request_uri; }}"
    ));
    assert!(ok, "an inherited limit does not refuse the redirect server:\n{out}");
    assert!(out.contains("[warn]") && out.contains("inherited from http{} do not apply"), "{out}");
    let (ok, out) = nginx_test_config(&format!(
        "{zone} server {{ listen 127.0.0.1:%%PORT%%; if ($arg_x) {{ return 444; }} location / {{ shield_limit zone=z; return 200; }} }}"
    ));
    assert!(ok, "limits only in locations: a server-level return is fine:\n{out}");
}

/// `delay=` in a return location parks the request (on the local backend, and on Redis after
/// the round trip) and answers it with the stub once the delay has passed.
#[test]
fn delay_in_a_return_location_parks_then_answers() {
    let redis = Redis::start();
    let nginx = Nginx::builder()
        .var("REDIS", redis.port)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;
        shield_limit_zone $http_x_client zone=slow_local:1m rate=1r/s backend=local;
        shield_limit_zone $http_x_client zone=slow_redis:1m rate=1r/s backend=redis;
        log_format limits "$uri $status $shield_limit_status";
        server {
            listen 127.0.0.1:%%PORT%%;
            access_log %%TMP%%/limits.log limits;
            location /local { shield_limit zone=slow_local burst=5 delay=1; return 200 "late\n"; }
            location /redis { shield_limit zone=slow_redis burst=5 delay=1; return 200 "late\n"; }
        }"#,
        )
        .start();
    for backend in ["local", "redis"] {
        let path = format!("/{backend}");
        let start = Instant::now();
        for _ in 0..3 {
            let r = http_request(nginx.port, "GET", &path, &[("X-Client", "d")], None);
            assert_eq!((r.status, r.body_str()), (200, "late\n"), "{backend}: the stub answers");
        }
        assert!(start.elapsed() >= Duration::from_millis(500), "{backend}: the third request waited");
    }
    let log = nginx.wait_log("limits.log", 6);
    for backend in ["local", "redis"] {
        let outcomes: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&format!("/{backend} ")))
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(outcomes, ["PASSED", "PASSED", "DELAYED"], "{backend}: 1 + delay=1 at once, then delayed:\n{log}");
    }
}
