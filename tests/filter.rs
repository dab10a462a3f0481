//! Input filtering (WAF) against a real nginx.

mod support;

use support::{assert_config_error, echo_upstream, http_get, http_raw, http_request, Nginx};

fn waf_nginx(upstream: u16, extra: &str) -> Nginx {
    Nginx::builder()
        .var("UPSTREAM", upstream)
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
    let r = http_request(nginx.port, "POST", "/api/form", &[("Content-Type", "application/x-www-form-urlencoded")], Some(form));
    assert_eq!(r.status, 403);
    let multipart = b"--b0undary\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\n; cat /etc/passwd\r\n--b0undary--\r\n";
    let r = http_request(nginx.port, "POST", "/api/upload", &[("Content-Type", "multipart/form-data; boundary=b0undary")], Some(multipart));
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
    let r = http_request(nginx.port, "GET", "/index.html", &[("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0")], None);
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
    assert_eq!(http_get(nginx.port, "/search/index.html?other=union%20select%201").status, 403, "other args are not excluded");
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
    assert_eq!(http_raw(nginx.port, b"GET /index.html?a=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status, 400, "bad percent-encoding");
    assert_eq!(http_raw(nginx.port, b"GET /index.html?a=%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status, 400, "NUL byte");
    assert_eq!(http_get(nginx.port, &format!("/index.html?q={}", "a".repeat(300))).status, 414);
    assert_eq!(http_get(nginx.port, "/index.html?a=1&b=2&c=3&d=4&e=5&f=6").status, 403, "too many args");
    assert_eq!(http_request(nginx.port, "DELETE", "/index.html", &[], None).status, 405);
    let r = http_request(nginx.port, "POST", "/api/x", &[("Content-Type", "text/xml")], Some(b"<a/>"));
    assert_eq!(r.status, 415);
    assert_eq!(http_get(nginx.port, "/a/b/c/..%2f..%2fx").status, 403, "encoded traversal in the path (nginx itself accepts it)");
    assert_eq!(http_get(nginx.port, "/static/..%2f..%2f..%2fetc/passwd").status, 400, "above the root: nginx refuses it first");
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
    let nginx = waf_nginx(up.port, "server { listen 127.0.0.1:%%METRICS%%; location / { shield_filter off; shield_status; } }".replace("%%METRICS%%", &support::free_port().to_string()).as_str());
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
    assert!(text.lines().any(|l| l.starts_with("shield_filter_matches_total{family=\"xss\"} ") && !l.ends_with(" 0")), "{text}");
}

#[test]
fn bad_filter_directives_fail_nginx_t() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    let dir = support::TempDir::new();
    let bad_rules = dir.path().join("rules.json");
    std::fs::write(&bad_rules, r#"[{"id": 123456, "pattern": "(unclosed"}]"#).unwrap();
    let cases = [
        ("shield_filter maybe;".to_string(), "invalid value \"maybe\""),
        ("shield_filter_paranoia 7;".to_string(), "it must be 1 to 4"),
        ("shield_filter_status 200;".to_string(), "between 400 and 599"),
        ("shield_filter_rule id=5 pattern=(oops;".to_string(), "rule 5"),
        ("shield_filter_rule pattern=x;".to_string(), "must have \"id\" parameter"),
        (format!("shield_filter_rules_file {};", bad_rules.display()), "rule 123456"),
        ("shield_filter_rules_file /nonexistent/rules.json;".to_string(), "cannot read"),
        ("shield_filter_exclude bogus=1;".to_string(), "invalid parameter"),
        ("shield_filter_allow 10.0.0.0/33;".to_string(), "invalid address"),
        ("shield_filter_limits uri=big;".to_string(), "invalid parameter"),
    ];
    for (directive, expected) in cases {
        assert_config_error(&format!("{directive} {srv}"), expected);
    }
}
