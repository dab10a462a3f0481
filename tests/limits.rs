//! Distributed rate limiting against real nginx instances and a real redis-server.

mod support;

use std::time::{Duration, Instant};

use support::{assert_config_error, http_request, parallel, try_http_request, Nginx, Redis};

/// Two nginx instances, two workers each, sharing one Redis: the cluster admits exactly the
/// quota, not the quota per node or per worker.
#[test]
fn exact_admission_across_two_instances_sharing_redis() {
    let redis = Redis::start();
    let http = r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;
        shield_limit_zone $http_x_client zone=api:1m rate=100r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { shield_limit zone=api burst=99 nodelay; }
        }"#;
    let a = Nginx::builder().var("REDIS", redis.port).http(http).start();
    let b = Nginx::builder().var("REDIS", redis.port).http(http).start();
    let ports = [a.port, b.port];
    let statuses = parallel(300, 16, Duration::from_secs(60), move |i| {
        try_http_request(ports[i % 2], "GET", "/index.html", &[("X-Client", "tenant-1")], None).map(|r| r.status)
    });
    assert_eq!(statuses.len(), 300, "every request answered");
    let ok = statuses.iter().filter(|s| **s == Ok(200)).count();
    let limited = statuses.iter().filter(|s| **s == Ok(429)).count();
    assert_eq!((ok, limited), (100, 200), "exactly the quota across 2 nodes x 2 workers");

    // Another key has its own quota.
    let other = http_request(a.port, "GET", "/index.html", &[("X-Client", "tenant-2")], None);
    assert_eq!(other.status, 200);
    // No key at all: not limited (like limit_req's empty key).
    for _ in 0..3 {
        assert_eq!(http_request(b.port, "GET", "/index.html", &[], None).status, 200);
    }
}

/// A node may reach Redis over a Unix socket (`unix://`) while another uses TCP: one store,
/// one exact quota.
#[test]
fn unix_socket_and_tcp_nodes_share_one_exact_quota() {
    let redis = Redis::start();
    let http = |url: String| {
        format!(
            r#"
        shield_redis {url} timeout=500ms;
        shield_limit_zone $http_x_client zone=api:1m rate=50r/h;
        server {{
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {{ shield_limit zone=api burst=49 nodelay; }}
        }}"#
        )
    };
    let tcp = Nginx::builder().http(&http(format!("redis://127.0.0.1:{}", redis.port))).start();
    let unix = Nginx::builder().http(&http(format!("unix://{}", redis.socket().display()))).start();
    let ports = [tcp.port, unix.port];
    let statuses = parallel(150, 8, Duration::from_secs(60), move |i| {
        try_http_request(ports[i % 2], "GET", "/index.html", &[("X-Client", "t")], None).map(|r| r.status)
    });
    let ok = statuses.iter().filter(|s| **s == Ok(200)).count();
    let limited = statuses.iter().filter(|s| **s == Ok(429)).count();
    assert_eq!((ok, limited), (50, 100), "exactly the quota across a TCP node and a Unix-socket node");
    let via_unix = (0..3)
        .map(|_| http_request(unix.port, "GET", "/index.html", &[("X-Client", "u")], None).status)
        .collect::<Vec<_>>();
    assert_eq!(via_unix, [200, 200, 200], "a fresh key passes over the socket");
    assert_eq!(redis.command(&["EXISTS", "shield:{u}:api"]), ":1", "the socket node wrote to the shared Redis");
}

#[test]
fn headers_dry_run_and_status_variable() {
    let redis = Redis::start();
    let nginx = Nginx::builder()
        .var("REDIS", redis.port)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%%;
        shield_limit_zone $binary_remote_addr zone=api:1m rate=2r/m;
        log_format limits "$uri $status $shield_limit_status";
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            access_log %%TMP%%/limits.log limits;
            location /strict/ { alias %%HTML%%/; shield_limit zone=api burst=1 nodelay; shield_limit_status 503; }
            location /dry/ { alias %%HTML%%/; shield_limit zone=api burst=1 nodelay; shield_limit_dry_run on; }
            location /quiet/ { alias %%HTML%%/; shield_limit zone=api burst=1 nodelay; shield_limit_headers off; }
        }"#,
        )
        .start();
    let first = http_request(nginx.port, "GET", "/strict/index.html", &[], None);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("RateLimit-Policy"), Some("\"api\";q=2;w=60"));
    assert_eq!(first.header("RateLimit"), Some("\"api\";r=1;t=30"));
    assert_eq!(first.header("X-RateLimit-Limit"), Some("2"));
    assert_eq!(first.header("X-RateLimit-Remaining"), Some("1"));
    assert_eq!(http_request(nginx.port, "GET", "/strict/index.html", &[], None).status, 200);
    let limited = http_request(nginx.port, "GET", "/strict/index.html", &[], None);
    assert_eq!(limited.status, 503, "shield_limit_status");
    let retry: u64 = limited.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");

    let dry = http_request(nginx.port, "GET", "/dry/index.html", &[], None);
    assert_eq!(dry.status, 200, "dry run lets it through");
    let quiet = http_request(nginx.port, "GET", "/quiet/index.html", &[], None);
    assert_eq!(quiet.status, 429);
    assert!(quiet.header("RateLimit").is_none() && quiet.header("X-RateLimit-Limit").is_none());
    assert!(quiet.header("Retry-After").is_none(), "all rate-limit headers off");

    // Two workers write the access log: lines of consecutive requests may swap.
    let log = nginx.wait_log("limits.log", 5);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.iter().filter(|l| **l == "/strict/index.html 200 PASSED").count(), 2, "{log}");
    assert!(lines.contains(&"/strict/index.html 503 REJECTED"), "{log}");
    assert!(lines.contains(&"/dry/index.html 200 REJECTED_DRY_RUN"), "{log}");
}

/// `/` is answered by `index` through an internal redirect to `/index.html`, which runs the
/// access phases again with module contexts cleared: the request must still count once, and
/// keep its verdict and headers (like `limit_req`).
#[test]
fn an_internal_redirect_counts_once_and_keeps_the_verdict() {
    let nginx = Nginx::builder()
        .http(
            r#"
        shield_limit_zone $binary_remote_addr zone=idx:1m rate=1r/m backend=local;
        log_format limits "$uri $status $shield_limit_status";
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            access_log %%TMP%%/limits.log limits;
            location / { shield_limit zone=idx burst=3 nodelay; }
            # A rejection answered by a page from a limited location: the page is served (the
            # request is not limited again) and keeps the rejection's headers.
            location /api/ { alias %%HTML%%/; shield_limit zone=idx burst=3 nodelay; error_page 429 /page.html; }
        }"#,
        )
        .start();
    for remaining in (0..4).rev() {
        let r = http_request(nginx.port, "GET", "/", &[], None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("X-RateLimit-Remaining"), Some(remaining.to_string().as_str()), "one unit per request");
    }
    let limited = http_request(nginx.port, "GET", "/", &[], None);
    assert_eq!(limited.status, 429, "burst 3 admits four requests, not two");
    assert!(limited.header("Retry-After").is_some());
    let page = http_request(nginx.port, "GET", "/api/index.html", &[], None);
    assert_eq!(page.status, 429, "error_page keeps the status");
    assert!(page.body_str().contains("page"), "the error page is served: {:?}", page.body_str());
    assert!(page.header("Retry-After").is_some(), "and carries the rejection's headers");
    let log = nginx.wait_log("limits.log", 6);
    assert_eq!(log.lines().next(), Some("/index.html 200 PASSED"), "the verdict survives the redirect");
    assert_eq!(log.lines().last(), Some("/page.html 429 REJECTED"));
}

#[test]
fn burst_without_nodelay_delays_and_delay_threshold() {
    let nginx = Nginx::start(
        r#"
        shield_limit_zone $http_x_client zone=slow:1m rate=10r/s;
        log_format limits "$http_x_client $status $shield_limit_status";
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            access_log %%TMP%%/limits.log limits;
            location /queue/ { alias %%HTML%%/; shield_limit zone=slow burst=5; }
            location /mixed/ { alias %%HTML%%/; shield_limit zone=slow burst=5 delay=3; }
        }"#,
    );
    let port = nginx.port;
    let start = Instant::now();
    let statuses = parallel(6, 6, Duration::from_secs(30), move |_| {
        http_request(port, "GET", "/queue/index.html", &[("X-Client", "q")], None).status
    });
    assert_eq!(statuses, vec![200; 6], "the burst is queued, not rejected");
    assert!(start.elapsed() >= Duration::from_millis(400), "excess requests were spaced at the rate");
    assert_eq!(http_request(port, "GET", "/queue/index.html", &[("X-Client", "q2")], None).status, 200);

    let statuses = parallel(7, 7, Duration::from_secs(30), move |_| {
        http_request(port, "GET", "/mixed/index.html", &[("X-Client", "m")], None).status
    });
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 6, "burst 5 + 1");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1, "beyond the burst");
    let log = nginx.wait_log("limits.log", 14);
    let mixed: Vec<&str> = log.lines().filter(|l| l.starts_with("m ")).collect();
    assert_eq!(mixed.iter().filter(|l| l.ends_with("200 PASSED")).count(), 4, "1 + delay=3 pass at once: {mixed:?}");
    assert_eq!(mixed.iter().filter(|l| l.ends_with("200 DELAYED")).count(), 2, "{mixed:?}");
}

#[test]
fn several_limits_strictest_wins_and_rejections_consume_nothing() {
    let redis = Redis::start();
    let nginx = Nginx::builder()
        .var("REDIS", redis.port)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%%;
        shield_limit_zone $http_x_client zone=loose:1m rate=100r/h;
        shield_limit_zone $http_x_client zone=strict:1m rate=2r/h;
        shield_limit_zone $http_x_client zone=local:1m rate=100r/h backend=local;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location /both/ {
                alias %%HTML%%/;
                shield_limit zone=loose burst=9 nodelay;
                shield_limit zone=strict burst=1 nodelay;
                shield_limit zone=local burst=9 nodelay;
            }
            location /loose/ { alias %%HTML%%/; shield_limit zone=loose burst=9 nodelay; }
            location /local/ { alias %%HTML%%/; shield_limit zone=local burst=9 nodelay; }
            location /heavy/ { alias %%HTML%%/; shield_limit zone=loose burst=9 nodelay cost=5; }
        }"#,
        )
        .start();
    let get = |path: &str, client: &str| http_request(nginx.port, "GET", path, &[("X-Client", client)], None);
    assert_eq!(get("/both/index.html", "a").status, 200);
    assert_eq!(get("/both/index.html", "a").status, 200);
    for _ in 0..5 {
        let r = get("/both/index.html", "a");
        assert_eq!(r.status, 429, "the strict limit rejects");
        assert_eq!(r.header("RateLimit-Policy"), Some("\"strict\";q=2;w=3600"), "headers name the strictest");
    }
    // 2 of 10 used on both loose and local: 8 left on each, none taken by the 5 rejections.
    let loose: Vec<u16> = (0..9).map(|_| get("/loose/index.html", "a").status).collect();
    assert_eq!(loose.iter().filter(|s| **s == 200).count(), 8);
    let local: Vec<u16> = (0..9).map(|_| get("/local/index.html", "a").status).collect();
    assert_eq!(local.iter().filter(|s| **s == 200).count(), 8);
    // cost=5: two requests use the whole burst of 10.
    assert_eq!(get("/heavy/index.html", "b").status, 200);
    assert_eq!(get("/heavy/index.html", "b").status, 200);
    assert_eq!(get("/heavy/index.html", "b").status, 429);
}

fn fail_policy_nginx(redis: &Redis) -> Nginx {
    Nginx::builder()
        .var("REDIS", redis.port)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=200ms;
        shield_limit_zone $http_x_client zone=api:1m rate=2r/h;
        log_format limits "$uri $status $shield_limit_status";
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            access_log %%TMP%%/limits.log limits;
            location /open/ { alias %%HTML%%/; shield_limit zone=api burst=1 nodelay; shield_limit_fail open; }
            location /closed/ { alias %%HTML%%/; shield_limit zone=api burst=1 nodelay; shield_limit_fail closed; }
            location /local/ { alias %%HTML%%/; shield_limit zone=api burst=1 nodelay; shield_limit_fail local; }
        }"#,
        )
        .start()
}

#[test]
fn redis_outage_follows_each_fail_policy_and_recovers() {
    let mut redis = Redis::start();
    let nginx = fail_policy_nginx(&redis);
    nginx.allow_log("redis");
    let get = |path: &str, client: &str| {
        let start = Instant::now();
        let r = http_request(nginx.port, "GET", path, &[("X-Client", client)], None);
        assert!(start.elapsed() < Duration::from_secs(5), "no request hangs on a dead Redis");
        r.status
    };
    assert_eq!(get("/open/index.html", "before"), 200);
    assert!(redis.command(&["KEYS", "*"]).contains("before"), "Redis is used while up");

    redis.stop();
    for _ in 0..5 {
        assert_eq!(get("/open/index.html", "x"), 200, "open: allowed");
        assert_eq!(get("/closed/index.html", "x"), 503, "closed: 503");
    }
    let local: Vec<u16> = (0..4).map(|_| get("/local/index.html", "y")).collect();
    assert_eq!(local, vec![200, 200, 429, 429], "local: the shared-memory limiter takes over");

    redis.restart();
    // Recovery is automatic once the reconnect backoff has passed.
    let start = Instant::now();
    loop {
        let status = get("/closed/index.html", "after");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(start.elapsed() < Duration::from_secs(15), "Redis never used again after restart");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(redis.command(&["KEYS", "*"]).contains("after"), "the limit state is in Redis again");
    let log = nginx.wait_log("limits.log", 15);
    assert!(log.contains("/open/index.html 200 ERROR"), "$shield_limit_status reports the failure");
}

#[test]
fn a_reload_does_not_drop_requests_waiting_in_the_limiter() {
    let mut nginx = Nginx::start(
        r#"
        shield_limit_zone $http_x_client zone=slow:1m rate=2r/s;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { shield_limit zone=slow burst=5; }
        }"#,
    );
    let port = nginx.port;
    // Six queued requests take ~2.5 s to leave at 2 r/s; reload while they wait.
    let waiting = std::thread::spawn(move || {
        parallel(6, 6, Duration::from_secs(30), move |_| {
            try_http_request(port, "GET", "/index.html", &[("X-Client", "r")], None).map(|r| r.status)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    nginx.reload_with(
        r#"
        shield_limit_zone $http_x_client zone=slow:1m rate=2r/s;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { shield_limit zone=slow burst=5; }
        }"#,
    );
    let statuses = waiting.join().unwrap();
    assert_eq!(statuses, vec![Ok(200); 6], "every in-flight limited request completed");
    // The zone survived the reload: the queue is still full for this key right now.
    let after = http_request(port, "GET", "/index.html", &[("X-Client", "r")], None);
    assert_eq!(after.status, 200);
}

#[test]
fn a_changed_key_on_reload_is_refused() {
    let nginx = Nginx::start(
        r#"
        shield_limit_zone $http_x_client zone=k:1m rate=2r/s;
        server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; location / { shield_limit zone=k; } }"#,
    );
    nginx.allow_log("previously it used another key");
    let conf = std::fs::read_to_string(nginx.conf_path()).unwrap().replace("$http_x_client zone=k", "$uri zone=k");
    std::fs::write(nginx.conf_path(), conf).unwrap();
    // nginx listens before its master has logged forking both workers: count once it has.
    let start = Instant::now();
    while nginx.error_log().matches("start worker process").count() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "workers not started:\n{}", nginx.error_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = nginx.error_log().matches("start worker process").count();
    let _ = std::process::Command::new(support::nginx_bin())
        .args(["-p", nginx.dir.path().to_str().unwrap(), "-c", nginx.conf_path().to_str().unwrap(), "-s", "reload"])
        .status();
    let start = Instant::now();
    while !nginx.error_log().contains("previously it used another key") {
        assert!(start.elapsed() < Duration::from_secs(10), "no refusal logged:\n{}", nginx.error_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(nginx.error_log().matches("start worker process").count(), before, "old workers keep serving");
    assert_eq!(http_request(nginx.port, "GET", "/index.html", &[], None).status, 200);
}

#[test]
fn penalty_box_bans_a_key_on_every_node() {
    let redis = Redis::start();
    let dir = support::TempDir::new();
    // user "admin", password "secret" (apr1 hash made with openssl passwd).
    let hash = std::process::Command::new("openssl").args(["passwd", "-apr1", "secret"]).output().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("admin:{}", String::from_utf8_lossy(&hash.stdout))).unwrap();
    let http = format!(
        r#"
        shield_redis redis://127.0.0.1:%%REDIS%%;
        shield_limit_zone $http_x_client zone=login:1m rate=100r/s;
        server {{
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location /login/ {{
                alias %%HTML%%/;
                auth_basic "login";
                auth_basic_user_file {};
                shield_ban zone=login status=401 threshold=3/1m ban=2s;
            }}
        }}"#,
        htpasswd.display()
    );
    let a = Nginx::builder().var("REDIS", redis.port).http(&http).start();
    let b = Nginx::builder().var("REDIS", redis.port).http(&http).start();
    for n in [&a, &b] {
        n.allow_log("user \"admin\" was not found");
        n.allow_log("password mismatch");
    }
    let bad = [("X-Client", "attacker"), ("Authorization", "Basic YWRtaW46d3Jvbmc=")];
    let good = [("X-Client", "attacker"), ("Authorization", "Basic YWRtaW46c2VjcmV0")];
    for _ in 0..3 {
        assert_eq!(http_request(a.port, "GET", "/login/index.html", &bad, None).status, 401);
    }
    // The log phase counts asynchronously: give the last INCR a moment to land.
    let start = Instant::now();
    loop {
        let r = http_request(b.port, "GET", "/login/index.html", &good, None);
        if r.status == 429 {
            assert!(r.header("Retry-After").is_some());
            break;
        }
        assert_eq!(r.status, 200);
        assert!(start.elapsed() < Duration::from_secs(2), "ban not seen on the other node");
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = [("X-Client", "someone-else"), ("Authorization", "Basic YWRtaW46c2VjcmV0")];
    assert_eq!(http_request(b.port, "GET", "/login/index.html", &other, None).status, 200, "only that key");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(http_request(a.port, "GET", "/login/index.html", &good, None).status, 200, "ban expired");
}

#[test]
fn bad_limit_directives_fail_nginx_t() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    let cases = [
        ("shield_limit_zone $uri zone=a:1m;", "must have \"rate\" parameter"),
        ("shield_limit_zone $uri rate=1r/s;", "must have \"zone\" parameter"),
        ("shield_limit_zone $uri zone=a:1m rate=10r/d;", "invalid rate \"10r/d\""),
        ("shield_limit_zone $uri zone=a:1k rate=1r/s;", "zone \"a\" is too small"),
        ("shield_limit_zone $uri zone=a:1m rate=1r/s algorithm=leaky;", "invalid parameter \"algorithm=leaky\""),
        ("shield_limit_zone $uri zone=a:1m rate=1r/s backend=redis;", "requires \"shield_redis\""),
        ("shield_limit_zone $uri zone=a:1m rate=1r/s; shield_limit_zone $uri zone=a:1m rate=1r/s;", "duplicate"),
        ("shield_limit zone=nope;", "unknown zone \"nope\""),
        ("shield_limit_zone $uri zone=a:1m rate=1r/s; shield_limit zone=a burst=x;", "invalid burst \"x\""),
        ("shield_limit_fail maybe;", "invalid value \"maybe\""),
        ("shield_limit_status 200;", "must be between 400 and 599"),
        ("shield_redis redis://127.0.0.1; shield_redis_ssl_verify off;", "need a rediss:// URL"),
        ("shield_redis unix://relative.sock;", "expected unix:///path"),
        ("shield_redis redis://127.0.0.1 timeout=0;", "invalid timeout"),
        ("shield_limit_zone $uri zone=a:1m rate=1r/s; shield_ban zone=a status=401 ban=1m;", "must have \"threshold\""),
    ];
    for (directives, expected) in cases {
        assert_config_error(&format!("{directives} {srv}"), expected);
    }
}

/// Values the arithmetic cannot honour exactly, and combinations that would be silently
/// reinterpreted, are refused at `nginx -t` with the directive's file:line.
#[test]
fn overflowing_and_reinterpreted_limit_values_fail_nginx_t() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    let zone = "shield_limit_zone $uri zone=a:1m rate=1r/h;";
    let window = "shield_limit_zone $uri zone=w:1m rate=10r/s algorithm=sliding_window;";
    let cases = [
        (
            format!("{zone} shield_limit zone=a burst=18446744073709551615;"),
            "invalid burst \"18446744073709551615\", it must be between 0 and 1000000",
        ),
        (format!("{zone} shield_limit zone=a burst=18446744073709551616;"), "invalid burst \"18446744073709551616\""),
        (
            format!("{zone} shield_limit zone=a burst=10000000000;"),
            "invalid burst \"10000000000\", it must be between 0 and 1000000",
        ),
        (
            format!("{zone} shield_limit zone=a burst=100 cost=18446744073709551615;"),
            "invalid cost \"18446744073709551615\", it must be between 1 and 1000000",
        ),
        (format!("{zone} shield_limit zone=a cost=0;"), "invalid cost \"0\", it must be between 1 and 1000000"),
        (format!("{zone} shield_limit zone=a burst=4 cost=6;"), "invalid cost \"6\", it must be between 1 and 5"),
        (format!("{zone} shield_limit zone=a burst=5 delay=6;"), "invalid delay \"6\", it must be between 0 and 5"),
        (
            format!("{zone} shield_limit zone=a burst=5 delay=2 nodelay;"),
            "\"delay\" and \"nodelay\" exclude each other",
        ),
        (
            format!("{window} shield_limit zone=w burst=5 delay=2;"),
            "\"delay\" has no effect with \"algorithm=sliding_window\"",
        ),
        (
            "shield_limit_zone $uri zone=a:1m rate=2000000r/s;".to_string(),
            "invalid rate \"2000000r/s\", it must be between 1 and 1000000",
        ),
        (
            "shield_limit_zone $uri zone=a:17g rate=1r/s;".to_string(),
            "invalid zone size \"a:17g\", it must be at most 16g",
        ),
        (
            format!("{zone} shield_ban zone=a status=401 threshold=0/1m ban=1m;"),
            "invalid threshold \"0\", it must be between 1 and 1000000",
        ),
        (
            format!("{zone} shield_ban zone=a status=401 threshold=18446744073709551615/1m ban=1m;"),
            "invalid threshold \"18446744073709551615\"",
        ),
        (
            format!("{zone} shield_ban zone=a status=401 threshold=3/0 ban=1m;"),
            "invalid threshold window \"0\", it must be between 1ms and 365d",
        ),
        (
            format!("{zone} shield_ban zone=a status=401 threshold=3/1m ban=400d;"),
            "invalid ban time \"400d\", it must be between 1ms and 365d",
        ),
        (format!("{zone} shield_ban zone=a status=401 threshold=3/1m ban=0;"), "invalid ban time \"0\""),
    ];
    for (directives, expected) in cases {
        assert_config_error(&format!("{directives} {srv}"), expected);
    }
    // The largest values the bounds allow load.
    let max = format!("{zone} server {{ listen 127.0.0.1:%%PORT%%; location / {{ shield_limit zone=a burst=1000000 delay=1000000 cost=1000000; shield_ban zone=a status=401 threshold=1000000/365d ban=365d; }} }}");
    let (ok, out) = support::nginx_test_config(&max);
    assert!(ok, "{out}");
}

/// The demo configuration that `scripts/run.sh` serves must load, with Redis (over its Unix
/// socket, as run.sh starts it) and without (the shared-memory backend).
#[test]
fn the_demo_config_passes_nginx_t_with_and_without_redis() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let template = std::fs::read_to_string(root.join("nginx-conf/demo.conf")).unwrap();
    let redis = Redis::start();
    let redis_line = format!("shield_redis unix://{} timeout=50ms;", redis.socket().display());
    for redis_directive in ["# no redis", redis_line.as_str()] {
        let dir = support::TempDir::new();
        let conf = template
            .replace("@MODULE@", &support::env_path("SHIELD_MODULE"))
            .replace("@RUNTIME@", dir.path().to_str().unwrap())
            .replace("@SITE@", root.join("nginx-conf/demo-site").to_str().unwrap())
            .replace("@USER@", if support::is_root() { "user root;" } else { "" })
            .replace("@REDIS@", redis_directive);
        assert!(
            conf.lines().filter(|l| !l.trim_start().starts_with('#')).all(|l| !l.contains('@')),
            "every placeholder filled"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let out = std::process::Command::new(support::nginx_bin())
            .args(["-t", "-p", dir.path().to_str().unwrap(), "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "demo.conf with {redis_directive:?}:\n{text}");
    }
}

/// Two workers share one local zone, each deciding with its own cached clock (with
/// `timer_resolution 20ms` a worker's clock may lag the other's by up to 20 ms): a state just
/// written by the worker whose clock is ahead must not count as debt for the other. The load
/// stays below the limit even as the cached clocks see it (under 1000 requests per 20 ms
/// tick against a 1000-request burst), so a single 429 is spurious.
#[test]
fn a_limit_never_reached_never_rejects_across_workers() {
    let nginx = Nginx::builder()
        .worker_processes(2)
        .main_conf("timer_resolution 20ms;")
        .http(
            r#"
        shield_limit_zone $http_x_client zone=fast:1m rate=100000r/s backend=local;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { shield_limit zone=fast burst=1000 nodelay; }
        }"#,
        )
        .start();
    let port = nginx.port;
    let statuses = parallel(6000, 3, Duration::from_secs(20), move |_| {
        try_http_request(port, "GET", "/index.html", &[("X-Client", "one")], None).map(|r| r.status)
    });
    assert!(statuses.len() >= 1000, "the load ran: {} requests", statuses.len());
    let limited = statuses.iter().filter(|s| **s == Ok(429)).count();
    let ok = statuses.iter().filter(|s| **s == Ok(200)).count();
    assert_eq!((ok, limited), (statuses.len(), 0), "a limit never reached never rejects");
}

/// A flood of distinct keys overflows every bucket of small zones: a key being limited and a
/// banned key are not evicted while the flood's idle keys can go first (and, with the table's
/// keyed hash, nobody can pick keys that land in a victim's bucket).
#[test]
fn a_flood_of_keys_neither_frees_a_limited_key_nor_lifts_a_ban() {
    let nginx = Nginx::builder()
        .http(
            r#"
        shield_limit_zone $http_x_client zone=lim:128k rate=1r/m backend=local;
        shield_limit_zone $http_x_client zone=ban:128k rate=1r/s backend=local;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { shield_limit zone=lim burst=2 nodelay; }
            location /login/ { shield_ban zone=ban status=404 threshold=3/1m ban=10m; }
        }"#,
        )
        .start();
    let port = nginx.port;
    let get = |path: &str, client: &str| http_request(port, "GET", path, &[("X-Client", client)], None).status;
    let victim = (0..4).map(|_| get("/index.html", "victim")).collect::<Vec<_>>();
    assert_eq!(victim, [200, 200, 200, 429], "the victim is limited");
    let attacker = (0..3).map(|_| get("/login/nope", "attacker")).collect::<Vec<_>>();
    assert_eq!(attacker, [404, 404, 404]);
    wait_for_status(|| get("/login/nope", "attacker"), 429, "the attacker is banned");
    // Each zone holds 1024 slots: 4000 fresh keys overflow every bucket several times.
    let statuses = parallel(8000, 8, Duration::from_secs(60), move |i| {
        let (path, client) = if i % 2 == 0 {
            ("/index.html", format!("flood-{}", i / 2))
        } else {
            ("/login/nope", format!("flood-{}", i / 2))
        };
        try_http_request(port, "GET", path, &[("X-Client", &client)], None).map(|r| r.status)
    });
    assert_eq!(statuses.len(), 8000, "the flood ran");
    assert!(statuses.iter().all(|s| matches!(s, Ok(200 | 404))), "fresh keys pass");
    assert_eq!(get("/index.html", "victim"), 429, "still limited after the flood");
    assert_eq!(get("/login/nope", "attacker"), 429, "still banned after the flood");
}

/// The log phase counts a response for `shield_ban` once it has been sent, so the next
/// request may overtake it: polls (bounded) until `request` answers `status`.
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

/// A reload may load another build of the module (a new file at a new path: nginx keeps
/// using an already loaded path's code until a restart). nginx tags a shared-memory zone
/// with its module's address, which differs between two loaded builds, so the new build gets
/// fresh zones and never reads the old workers' (whose layout it may not share); the
/// zone header's magic and layout words (`ZONE_MAGIC`, `zone_layout`) guard the same should
/// the tag ever stop telling builds apart. Here the other build is a copy of the module with
/// its zone magic changed, as a build with another layout would differ.
#[test]
fn a_reload_with_another_build_of_the_module_never_reads_the_old_zone() {
    let nginx = Nginx::start(
        r#"
        shield_limit_zone $http_x_client zone=kept:1m rate=1r/h backend=local;
        server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; location / { shield_limit zone=kept burst=1 nodelay; } }"#,
    );
    let get = || http_request(nginx.port, "GET", "/index.html", &[("X-Client", "k")], None).status;
    assert_eq!([get(), get(), get()], [200, 200, 429]);
    nginx.reload();
    assert_eq!(get(), 429, "the same build keeps its zone across a reload");

    // ZONE_MAGIC (src/limit/shm_table.rs), as its little-endian bytes appear in the code.
    let magic = 0x5d1e_1d5a_f3c9_a7b1u64.to_le_bytes();
    let mut other = std::fs::read(support::env_path("SHIELD_MODULE")).unwrap();
    let at: Vec<usize> = other.windows(8).enumerate().filter(|(_, w)| *w == magic).map(|(i, _)| i).collect();
    assert!(!at.is_empty(), "the module writes and checks the zone magic");
    for i in at {
        other[i] ^= 1;
    }
    let path = nginx.dir.path().join("other_build.so");
    std::fs::write(&path, other).unwrap();
    let conf = std::fs::read_to_string(nginx.conf_path()).unwrap();
    let line = conf.lines().next().unwrap().to_string();
    assert!(line.starts_with("load_module "), "{line}");
    std::fs::write(nginx.conf_path(), conf.replacen(&line, &format!("load_module {};", path.display()), 1)).unwrap();
    nginx.reload();
    assert_eq!([get(), get(), get()], [200, 200, 429], "the other build limits from a fresh zone");
}

/// Sizing a zone's table tries sizes from the whole zone down: the tries that do not fit are
/// expected and must not log nginx's `[crit] ngx_slab_alloc() failed` (zones are initialised
/// before the error log is open, so it goes to nginx's stderr: what `nginx -t` prints).
#[test]
fn large_zones_start_without_a_crit_line() {
    let (ok, out) = support::nginx_test_config(
        r#"
        shield_limit_zone $binary_remote_addr zone=ten:10m rate=10r/s;
        shield_limit_zone $uri zone=big:64m rate=10r/s;
        server { listen 127.0.0.1:%%PORT%%; location / { shield_limit zone=ten; shield_limit zone=big; } }"#,
    );
    assert!(ok, "{out}");
    assert!(!out.contains("ngx_slab_alloc() failed"), "{out}");
}
