//! CORS, cache policy and the status handler, against a real nginx.

mod support;

use support::{assert_config_error, http_get, http_request, Nginx, Upstream};

fn cors_nginx() -> Nginx {
    Nginx::start(
        r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location /api/ {
                alias %%HTML%%/;
                shield_cors on;
                shield_cors_origins https://app.example.com ~https://[a-z]+\.example\.org;
                shield_cors_methods GET POST PUT;
                shield_cors_headers X-Api-Key;
                shield_cors_expose_headers X-Request-Id;
                shield_cors_credentials on;
                shield_cors_max_age 10m;
                auth_basic "closed";
                auth_basic_user_file %%TMP%%/no-such-htpasswd;
            }
            location /open/ { alias %%HTML%%/; shield_cors on; shield_cors_origins *; }
        }"#,
    )
}

fn preflight(port: u16, path: &str, origin: &str, method: &str, headers: Option<&str>) -> support::Response {
    let mut h = vec![("Origin", origin), ("Access-Control-Request-Method", method)];
    if let Some(hs) = headers {
        h.push(("Access-Control-Request-Headers", hs));
    }
    http_request(port, "OPTIONS", path, &h, None)
}

#[test]
fn preflight_allowed_is_answered_204_before_auth() {
    let nginx = cors_nginx();
    let resp = preflight(nginx.port, "/api/index.html", "https://app.example.com", "PUT", Some("x-api-key"));
    assert_eq!(resp.status, 204, "answered before auth_basic: {:?}", resp.headers);
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("https://app.example.com"));
    assert_eq!(resp.header("Access-Control-Allow-Methods"), Some("GET, POST, PUT"));
    assert_eq!(resp.header("Access-Control-Allow-Headers"), Some("x-api-key"));
    assert_eq!(resp.header("Access-Control-Allow-Credentials"), Some("true"));
    assert_eq!(resp.header("Access-Control-Max-Age"), Some("600"));
    assert!(resp.body.is_empty());

    let regex = preflight(nginx.port, "/api/index.html", "https://shop.example.org", "GET", None);
    assert_eq!(regex.status, 204);
    assert_eq!(regex.header("Access-Control-Allow-Origin"), Some("https://shop.example.org"));
    nginx.allow_log("no-such-htpasswd");
}

#[test]
fn preflight_denied_gets_403_without_cors_headers() {
    let nginx = cors_nginx();
    for (origin, method, headers) in [
        ("https://evil.example", "GET", None),
        ("https://app.example.com", "DELETE", None),
        ("https://app.example.com", "GET", Some("x-other")),
        ("https://shop.example.org.evil.net", "GET", None),
        ("null", "GET", None),
    ] {
        let resp = preflight(nginx.port, "/api/index.html", origin, method, headers);
        assert_eq!(resp.status, 403, "{origin} {method} {headers:?}");
        assert!(resp.header("Access-Control-Allow-Origin").is_none(), "{origin}: no CORS headers");
        assert!(resp.header("Access-Control-Allow-Methods").is_none());
    }
}

#[test]
fn actual_requests_reflect_only_listed_origins_and_always_vary() {
    let nginx = Nginx::start(
        r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {
                shield_cors on;
                shield_cors_origins https://app.example.com;
                shield_cors_credentials on;
                shield_cors_expose_headers X-Request-Id;
            }
        }"#,
    );
    let allowed = http_request(nginx.port, "GET", "/index.html", &[("Origin", "https://app.example.com")], None);
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("Access-Control-Allow-Origin"), Some("https://app.example.com"));
    assert_eq!(allowed.header("Access-Control-Allow-Credentials"), Some("true"));
    assert_eq!(allowed.header("Access-Control-Expose-Headers"), Some("X-Request-Id"));
    assert_eq!(allowed.header("Vary"), Some("Origin"));

    let denied = http_request(nginx.port, "GET", "/index.html", &[("Origin", "https://evil.example")], None);
    assert_eq!(denied.status, 200, "the resource itself is not blocked");
    assert!(denied.header("Access-Control-Allow-Origin").is_none(), "never reflected unless listed");
    assert_eq!(denied.header("Vary"), Some("Origin"), "Vary even when refused, for caches");

    let none = http_get(nginx.port, "/index.html");
    assert_eq!(none.header("Vary"), Some("Origin"));
}

#[test]
fn upstream_reflection_is_removed() {
    let upstream = Upstream::start(|_req| support::CannedResponse {
        status: 200,
        headers: vec![
            ("Access-Control-Allow-Origin".into(), "https://evil.example".into()),
            ("Vary".into(), "Accept-Encoding, Origin".into()),
        ],
        body: b"{}".to_vec(),
    });
    let nginx = Nginx::builder()
        .var("UPSTREAM", upstream.port)
        .http(
            r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            location / {
                proxy_pass http://127.0.0.1:%%UPSTREAM%%;
                shield_cors on;
                shield_cors_origins https://app.example.com;
            }
        }"#,
        )
        .start();
    let resp = http_request(nginx.port, "GET", "/x", &[("Origin", "https://evil.example")], None);
    assert!(resp.header("Access-Control-Allow-Origin").is_none());
    assert_eq!(resp.headers_all("Vary"), vec!["Accept-Encoding, Origin"], "no second Vary");
}

#[test]
fn bad_cors_directives_fail_nginx_t() {
    assert_config_error(
        "server { listen 127.0.0.1:%%PORT%%; location / { shield_cors on; shield_cors_origins *; shield_cors_credentials on; } }",
        "cannot be used with credentials",
    );
    assert_config_error(
        "server { listen 127.0.0.1:%%PORT%%; location / { shield_cors_origins null; } }",
        "\"null\" origin is not allowed",
    );
    assert_config_error(
        "server { listen 127.0.0.1:%%PORT%%; location / { shield_cors_origins https://a.example/path; } }",
        "invalid origin",
    );
    assert_config_error(
        "server { listen 127.0.0.1:%%PORT%%; location / { shield_cors_origins ~(unclosed; } }",
        "invalid origin pattern",
    );
}

/// An upstream that sends its own Cache-Control on /keep and /override, and a cookie (with a
/// public Cache-Control) on any path containing "cookie".
fn cache_upstream() -> Upstream {
    Upstream::start(|req| support::CannedResponse {
        status: 200,
        headers: if req.path.contains("cookie") {
            vec![("Set-Cookie".into(), "s=1".into()), ("Cache-Control".into(), "public, max-age=600".into())]
        } else if req.path.starts_with("/keep") || req.path.starts_with("/override") {
            vec![("Cache-Control".into(), "public, max-age=600".into())]
        } else {
            vec![]
        },
        body: b"{}".to_vec(),
    })
}

fn cache_nginx(upstream_port: u16) -> Nginx {
    Nginx::builder()
        .var("UPSTREAM", upstream_port)
        .http(
            r#"
        shield_cache_control "public, max-age=31536000, immutable" ext=js,css;
        shield_cache_control "no-cache" type=text/html;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { }
            location /api/ { proxy_pass http://127.0.0.1:%%UPSTREAM%%; shield_cache_control "private, max-age=30"; }
            location /keep/ { proxy_pass http://127.0.0.1:%%UPSTREAM%%; }
            location /override/ { proxy_pass http://127.0.0.1:%%UPSTREAM%%; shield_cache_override on; }
            location /nocache/ { alias %%HTML%%/; shield_cache_control off; }
        }"#,
        )
        .start()
}

#[test]
fn cache_policy_by_extension_type_and_location() {
    let upstream = cache_upstream();
    let nginx = cache_nginx(upstream.port);

    let js = http_get(nginx.port, "/app.js");
    assert_eq!(js.status, 200);
    assert_eq!(js.header("Cache-Control"), Some("public, max-age=31536000, immutable"));
    assert!(js.header("Expires").is_some());
    let html = http_get(nginx.port, "/page.html");
    assert_eq!(html.header("Cache-Control"), Some("no-cache"));
    let api = http_get(nginx.port, "/api/items");
    assert_eq!(api.header("Cache-Control"), Some("private, max-age=30"));

    let kept = http_get(nginx.port, "/keep/x");
    assert_eq!(kept.headers_all("Cache-Control"), vec!["public, max-age=600"], "upstream's kept");
    let overridden = http_get(nginx.port, "/override/x.js");
    assert_eq!(overridden.headers_all("Cache-Control"), vec!["public, max-age=31536000, immutable"]);

    let off = http_get(nginx.port, "/nocache/app.js");
    assert!(off.header("Cache-Control").is_none(), "shield_cache_control off");

    let missing = http_get(nginx.port, "/missing.js");
    assert_eq!(missing.status, 404);
    assert!(missing.header("Cache-Control").is_none(), "no year-long cache for a 404");
}

#[test]
fn private_responses_get_no_store() {
    let upstream = cache_upstream();
    let nginx = cache_nginx(upstream.port);
    let auth = http_request(nginx.port, "GET", "/app.js", &[("Authorization", "Bearer x")], None);
    assert_eq!(auth.header("Cache-Control"), Some("no-store"));
    let cookie = http_get(nginx.port, "/keep/set-cookie");
    assert_eq!(cookie.headers_all("Cache-Control"), vec!["no-store"], "even over upstream's public");
}

#[test]
fn status_serves_prometheus_and_json_and_counts_across_workers() {
    let nginx = Nginx::start(
        r#"
        shield_headers on;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { shield_cors on; shield_cors_origins https://a.example; }
            location = /metrics { shield_status; }
            location = /health { shield_status json; }
        }"#,
    );
    for _ in 0..10 {
        assert_eq!(http_get(nginx.port, "/index.html").status, 200);
    }
    for origin in ["https://a.example", "https://b.example"] {
        preflight(nginx.port, "/index.html", origin, "GET", None);
    }
    let metrics = http_get(nginx.port, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("Content-Type").unwrap().starts_with("text/plain"));
    let text = metrics.body_str();
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
    };
    // Ten pages and two preflights, over two workers' connections, all in one counter.
    assert!(value("shield_headers_applied_total ") >= 12, "{text}");
    assert_eq!(value("shield_cors_preflight_total{result=\"allowed\"} "), 1);
    assert_eq!(value("shield_cors_preflight_total{result=\"denied\"} "), 1);
    assert!(text.contains("# TYPE shield_headers_applied_total counter"));

    let health = http_get(nginx.port, "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.header("Content-Type"), Some("application/json"));
    let doc = health.body_str();
    assert!(doc.contains("\"status\":\"ok\""), "{doc}");

    let post = http_request(nginx.port, "POST", "/metrics", &[], Some(b"x"));
    assert_eq!(post.status, 405);
}

#[test]
fn metrics_survive_a_reload() {
    let nginx = Nginx::start(
        r#"
        shield_headers on;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location = /metrics { shield_status; }
        }"#,
    );
    for _ in 0..5 {
        http_get(nginx.port, "/index.html");
    }
    nginx.reload();
    let text = http_get(nginx.port, "/metrics").body_str().to_string();
    let n: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("shield_headers_applied_total ").and_then(|v| v.trim().parse().ok()))
        .unwrap();
    assert!(n >= 5, "counters kept across reload: {text}");
}

/// nginx's own `add_header` on a CORS location: the module's value replaces it, on actual
/// responses and on preflights (`always`), and a refused preflight carries none.
fn add_header_cors_nginx() -> Nginx {
    Nginx::start(
        r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            location /api/ {
                shield_cors on;
                shield_cors_origins https://app.example.com;
                shield_cors_methods GET PUT;
                shield_cors_headers X-Api-Key;
                add_header Access-Control-Allow-Origin * always;
                add_header Access-Control-Allow-Methods "GET, POST, DELETE" always;
                add_header Vary Accept-Encoding;
                default_type text/plain;
                return 200 "api";
            }
        }"#,
    )
}

#[test]
fn add_header_acao_is_replaced_not_duplicated() {
    let nginx = add_header_cors_nginx();
    let actual = http_request(nginx.port, "GET", "/api/x", &[("Origin", "https://app.example.com")], None);
    assert_eq!(actual.status, 200);
    assert_eq!(
        actual.headers_all("Access-Control-Allow-Origin"),
        vec!["https://app.example.com"],
        "{:?}",
        actual.headers
    );
    let denied = http_request(nginx.port, "GET", "/api/x", &[("Origin", "https://evil.example")], None);
    assert!(denied.header("Access-Control-Allow-Origin").is_none(), "add_header's * removed: {:?}", denied.headers);

    let pre = preflight(nginx.port, "/api/x", "https://app.example.com", "PUT", Some("x-api-key"));
    assert_eq!(pre.status, 204);
    assert_eq!(pre.headers_all("Access-Control-Allow-Origin"), vec!["https://app.example.com"], "{:?}", pre.headers);
    assert_eq!(pre.headers_all("Access-Control-Allow-Methods"), vec!["GET, PUT"]);
    let refused = preflight(nginx.port, "/api/x", "https://evil.example", "PUT", None);
    assert_eq!(refused.status, 403);
    assert!(refused.header("Access-Control-Allow-Origin").is_none(), "{:?}", refused.headers);
    assert!(refused.header("Access-Control-Allow-Methods").is_none(), "{:?}", refused.headers);
}

#[test]
fn preflights_vary_on_origin_and_the_requested_method_and_headers() {
    let nginx = add_header_cors_nginx();
    let expected = ["origin", "access-control-request-method", "access-control-request-headers"];
    for resp in [
        preflight(nginx.port, "/api/x", "https://app.example.com", "PUT", Some("x-api-key")),
        preflight(nginx.port, "/api/x", "https://evil.example", "PUT", None),
    ] {
        let vary: Vec<String> =
            resp.headers_all("Vary").iter().flat_map(|v| v.split(',')).map(|t| t.trim().to_ascii_lowercase()).collect();
        for name in expected {
            assert_eq!(vary.iter().filter(|t| *t == name).count(), 1, "{} {name} once in {vary:?}", resp.status);
        }
    }
    let actual = http_request(nginx.port, "GET", "/api/x", &[("Origin", "https://app.example.com")], None);
    let vary = actual.headers_all("Vary").join(", ");
    assert!(vary.contains("Origin") && !vary.contains("Access-Control-Request"), "actual responses: {vary}");
}

/// A page on origin A (port %%PORT%%) fetch()es origin B; the DOM shows what the browser made
/// of each answer. `/dup/` is the control: two Access-Control-Allow-Origin values from plain
/// nginx, which Chromium must refuse.
#[test]
fn chromium_accepts_the_modules_cors_over_add_header() {
    let nginx = Nginx::builder()
        .var("BPORT", support::free_port())
        .http(
            r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
        }
        server {
            listen 127.0.0.1:%%BPORT%%;
            default_type text/plain;
            location /api/ {
                shield_cors on;
                shield_cors_origins http://127.0.0.1:%%PORT%%;
                shield_cors_methods GET PUT;
                shield_cors_headers X-Api-Key;
                add_header Access-Control-Allow-Origin * always;
                return 200 "from-b";
            }
            location /dup/ {
                add_header Access-Control-Allow-Origin http://127.0.0.1:%%PORT%%;
                add_header Access-Control-Allow-Origin *;
                return 200 "from-b";
            }
        }"#,
        )
        .start();
    let b = nginx.var_port("BPORT");
    let page = format!(
        r#"<html><body><pre id="simple">pending</pre><pre id="preflighted">pending</pre><pre id="dup">pending</pre>
<script>
function show(id, p) {{
  p.then(r => r.text()).then(t => {{ document.getElementById(id).textContent = "OK " + t; }},
                            e => {{ document.getElementById(id).textContent = "FAIL " + e; }});
}}
show("simple", fetch("http://127.0.0.1:{b}/api/x"));
show("preflighted", fetch("http://127.0.0.1:{b}/api/x", {{ method: "PUT", headers: {{ "X-Api-Key": "k" }} }}));
show("dup", fetch("http://127.0.0.1:{b}/dup/x"));
</script></body></html>"#
    );
    std::fs::write(nginx.dir.path().join("html/cors.html"), page).unwrap();
    let dom = support::chromium_dom(&format!("http://127.0.0.1:{}/cors.html", nginx.port));
    assert!(dom.contains(r#"<pre id="simple">OK from-b</pre>"#), "simple GET: {dom}");
    assert!(dom.contains(r#"<pre id="preflighted">OK from-b</pre>"#), "preflighted PUT: {dom}");
    assert!(dom.contains(r#"<pre id="dup">FAIL "#), "control: Chromium refuses two ACAO values: {dom}");
}

#[test]
fn shield_cache_control_replaces_what_expires_adds() {
    let upstream = cache_upstream();
    let nginx = Nginx::builder()
        .var("UPSTREAM", upstream.port)
        .http(
            r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            expires 1h;
            location / { shield_cache_control "no-cache"; }
            location /public/ { alias %%HTML%%/; shield_cache_control "public"; }
            location /keep { proxy_pass http://127.0.0.1:%%UPSTREAM%%; shield_cache_control "no-cache"; }
            location /expires-only/ { alias %%HTML%%/; }
            location = /login {
                shield_cache_control "public, max-age=600";
                add_header Set-Cookie "sid=1; Path=/";
                return 200 "welcome";
            }
        }"#,
        )
        .start();
    let resp = http_get(nginx.port, "/index.html");
    assert_eq!(resp.headers_all("Cache-Control"), vec!["no-cache"], "{:?}", resp.headers);
    assert_eq!(resp.headers_all("Expires"), vec!["Thu, 01 Jan 1970 00:00:01 GMT"], "{:?}", resp.headers);

    let public = http_get(nginx.port, "/public/index.html");
    assert_eq!(public.headers_all("Cache-Control"), vec!["public"], "{:?}", public.headers);
    assert!(public.header("Expires").is_none(), "expires' +1h dropped with its max-age: {:?}", public.headers);

    // An upstream's own Cache-Control is still kept (shield_cache_override off); nginx's
    // `expires` rewrites it, as nginx does without the module.
    let kept = http_get(nginx.port, "/keep");
    assert_eq!(kept.headers_all("Cache-Control"), vec!["max-age=3600"], "{:?}", kept.headers);
    assert_eq!(kept.headers_all("Expires").len(), 1, "{:?}", kept.headers);

    let plain = http_get(nginx.port, "/expires-only/index.html");
    assert_eq!(plain.headers_all("Cache-Control"), vec!["max-age=3600"], "no policy: nginx's expires alone");

    let login = http_get(nginx.port, "/login");
    assert_eq!(
        login.headers_all("Cache-Control"),
        vec!["no-store"],
        "an add_header cookie is private: {:?}",
        login.headers
    );
}
