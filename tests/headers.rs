//! Security headers, header stripping and cookie hardening, against a real nginx.

mod support;

use support::{http_get, http_request, nginx_test_config, Nginx, Upstream};

const PRESET: &[&str] = &[
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Permissions-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
];

fn assert_preset(resp: &support::Response, what: &str) {
    for name in PRESET {
        assert_eq!(resp.headers_all(name).len(), 1, "{what}: exactly one {name}: {:?}", resp.headers);
    }
}

#[test]
fn preset_on_static_file_and_on_nginx_error_pages() {
    let nginx = Nginx::start(
        r#"
        shield_headers on;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { }
            location /gone { proxy_pass http://127.0.0.1:1; }
        }"#,
    );
    let ok = http_get(nginx.port, "/index.html");
    assert_eq!(ok.status, 200);
    assert_preset(&ok, "200");
    assert_eq!(ok.header("X-Frame-Options"), Some("DENY"));
    assert_eq!(ok.header("X-Content-Type-Options"), Some("nosniff"));
    assert!(ok.header("Content-Security-Policy").unwrap().contains("frame-ancestors 'none'"));
    assert!(ok.header("Cross-Origin-Embedder-Policy").is_none(), "COEP is opt-in");

    let missing = http_get(nginx.port, "/no-such-file");
    assert_eq!(missing.status, 404);
    assert_preset(&missing, "404");

    let bad_gateway = http_get(nginx.port, "/gone");
    assert_eq!(bad_gateway.status, 502);
    assert_preset(&bad_gateway, "502");
    nginx.allow_log("connect() failed");
}

#[test]
fn hsts_is_absent_on_plain_http_and_present_on_tls() {
    let dir = support::TempDir::new();
    let (cert, key) = support::self_signed_cert(dir.path());
    let nginx = Nginx::builder()
        .var("TLSPORT", support::free_port())
        .http(&format!(
            r#"
        shield_headers on;
        server {{
            listen 127.0.0.1:%%PORT%%;
            listen 127.0.0.1:%%TLSPORT%% ssl;
            ssl_certificate {cert};
            ssl_certificate_key {key};
            root %%HTML%%;
        }}"#,
            cert = cert.display(),
            key = key.display()
        ))
        .start();
    let plain = http_get(nginx.port, "/index.html");
    assert_eq!(plain.status, 200);
    assert!(plain.header("Strict-Transport-Security").is_none(), "HSTS over plain HTTP");

    let tls = support::https_get_with_curl(nginx.var_port("TLSPORT"), "/index.html", &[]);
    assert_eq!(tls.status, 200);
    assert_eq!(tls.header("Strict-Transport-Security"), Some("max-age=31536000; includeSubDomains"));
}

#[test]
fn upstream_copies_are_replaced_not_duplicated() {
    let upstream = Upstream::start(|_req| support::CannedResponse {
        status: 200,
        headers: vec![
            ("X-Frame-Options".into(), "ALLOWALL".into()),
            ("Content-Security-Policy".into(), "default-src *".into()),
            ("X-Powered-By".into(), "PHP/8.1.2".into()),
            ("X-AspNet-Version".into(), "4.0.30319".into()),
            ("Set-Cookie".into(), "sid=abc; Path=/".into()),
            ("Content-Type".into(), "text/plain".into()),
        ],
        body: b"from upstream".to_vec(),
    });
    let nginx = Nginx::builder()
        .var("UPSTREAM", upstream.port)
        .http(
            r#"
        shield_headers on;
        shield_cookie_flags secure httponly samesite=strict;
        server {
            listen 127.0.0.1:%%PORT%%;
            location / { proxy_pass http://127.0.0.1:%%UPSTREAM%%; }
        }"#,
        )
        .start();
    let resp = http_get(nginx.port, "/app");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), "from upstream");
    assert_preset(&resp, "proxied");
    assert_eq!(resp.headers_all("X-Frame-Options"), vec!["DENY"]);
    assert!(!resp.header("Content-Security-Policy").unwrap().contains('*'));
    assert!(resp.header("X-Powered-By").is_none(), "leaky header stripped");
    assert!(resp.header("X-AspNet-Version").is_none(), "leaky header stripped");
    assert!(resp.header("Server").is_none(), "Server header stripped by the preset");
    // Plain HTTP: Secure is not added (the browser would drop the cookie).
    assert_eq!(resp.header("Set-Cookie"), Some("sid=abc; Path=/; HttpOnly; SameSite=Strict"));
}

#[test]
fn child_block_merges_with_parent_and_can_switch_off() {
    let nginx = Nginx::start(
        r#"
        shield_headers on;
        shield_header X-Team platform;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { }
            location /embed { alias %%HTML%%/; shield_header X-Frame-Options SAMEORIGIN; }
            location /noframe { alias %%HTML%%/; shield_header X-Frame-Options off; }
            location /raw { alias %%HTML%%/; shield_headers off; }
            location /report { alias %%HTML%%/; shield_csp_report_only on; }
        }"#,
    );
    let embed = http_get(nginx.port, "/embed/index.html");
    assert_eq!(embed.status, 200);
    assert_eq!(embed.header("X-Frame-Options"), Some("SAMEORIGIN"), "child overrides");
    assert_eq!(embed.header("X-Team"), Some("platform"), "parent's custom header kept");
    assert_eq!(embed.header("X-Content-Type-Options"), Some("nosniff"), "preset kept");

    let noframe = http_get(nginx.port, "/noframe/index.html");
    assert!(noframe.header("X-Frame-Options").is_none(), "one header off");
    assert_eq!(noframe.header("Referrer-Policy"), Some("strict-origin-when-cross-origin"));

    let raw = http_get(nginx.port, "/raw/index.html");
    assert_eq!(raw.status, 200);
    for name in PRESET.iter().chain(&["X-Team"]) {
        assert!(raw.header(name).is_none(), "feature off: {name} present");
    }
    assert!(raw.header("Server").is_some(), "feature off: Server not stripped");

    let report = http_get(nginx.port, "/report/index.html");
    assert!(report.header("Content-Security-Policy").is_none());
    assert!(report.header("Content-Security-Policy-Report-Only").is_some());
}

#[test]
fn csp_nonce_is_fresh_per_request_and_usable_in_the_policy() {
    let nginx = Nginx::start(
        r#"
        shield_headers on;
        shield_csp "script-src 'nonce-$shield_csp_nonce'";
        log_format nonce "$shield_csp_nonce";
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            add_header X-Nonce-Echo $shield_csp_nonce;
        }"#,
    );
    let a = http_get(nginx.port, "/index.html");
    let b = http_get(nginx.port, "/index.html");
    let nonce = |r: &support::Response| {
        let csp = r.header("Content-Security-Policy").unwrap().to_string();
        csp.trim_start_matches("script-src 'nonce-").trim_end_matches('\'').to_string()
    };
    let (na, nb) = (nonce(&a), nonce(&b));
    assert_eq!(na.len(), 24, "128-bit base64 nonce: {na}");
    assert_ne!(na, nb, "fresh per request");
    assert_eq!(a.header("X-Nonce-Echo"), Some(na.as_str()), "same nonce within a request");
}

#[test]
fn custom_strip_list_and_coep_opt_in() {
    let upstream = Upstream::start(|_req| support::CannedResponse {
        status: 200,
        headers: vec![("X-Debug-Token".into(), "abc".into()), ("X-Powered-By".into(), "Express".into())],
        body: b"ok".to_vec(),
    });
    let nginx = Nginx::builder()
        .var("UPSTREAM", upstream.port)
        .http(
            r#"
        shield_headers on;
        shield_strip_headers X-Debug-Token;
        shield_header Cross-Origin-Embedder-Policy require-corp;
        server {
            listen 127.0.0.1:%%PORT%%;
            location / { proxy_pass http://127.0.0.1:%%UPSTREAM%%; }
        }"#,
        )
        .start();
    let resp = http_get(nginx.port, "/");
    assert!(resp.header("X-Debug-Token").is_none());
    assert_eq!(resp.header("X-Powered-By"), Some("Express"), "explicit list replaces the default");
    assert_eq!(resp.header("Cross-Origin-Embedder-Policy"), Some("require-corp"));
}

#[test]
fn bad_header_directives_fail_nginx_t() {
    let cases = [
        ("shield_headers maybe;", "invalid value \"maybe\""),
        ("shield_hsts max-age=1d;", "shield_hsts"),
        ("shield_hsts max-age=1y preload;", "preload"),
        ("shield_header \"Bad Name\" x;", "invalid header name"),
        ("shield_header Strict-Transport-Security x;", "shield_hsts"),
        ("shield_cookie_flags samesite=none;", "requires \"secure\""),
        ("shield_headers on; shield_headers off;", "duplicate"),
        ("shield_header X-A 1; shield_header x-a 2;", "duplicate"),
    ];
    for (directive, expected) in cases {
        let conf = format!("{directive} server {{ listen 127.0.0.1:%%PORT%%; }}");
        support::assert_config_error(&conf, expected);
    }
    let (ok, out) = nginx_test_config("shield_hsts max-age=1d force; server { listen 127.0.0.1:%%PORT%%; }");
    assert!(ok, "force allows a short max-age: {out}");
    let _ = http_request; // keep the import set stable across test files
}

/// nginx's own `add_header` in the same location: the module's value replaces it (with or
/// without `always`, on a 200 and on nginx's error pages), stripped names stay stripped, and
/// cookies it sets are hardened like an upstream's.
#[test]
fn add_header_copies_are_replaced_stripped_and_hardened() {
    let nginx = Nginx::start(
        r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {
                shield_headers on;
                shield_header X-Frame-Options SAMEORIGIN;
                shield_csp "default-src 'self'";
                shield_cookie_flags secure httponly samesite=lax;
                add_header X-Frame-Options DENY always;
                add_header Content-Security-Policy "default-src *";
                add_header X-Powered-By "PHP/8.1.2" always;
                add_header Set-Cookie "sid=abc; Path=/";
                add_header X-Kept "nginx's own";
            }
        }"#,
    );
    let ok = http_get(nginx.port, "/index.html");
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers_all("X-Frame-Options"), vec!["SAMEORIGIN"], "{:?}", ok.headers);
    assert_eq!(ok.headers_all("Content-Security-Policy"), vec!["default-src 'self'"], "{:?}", ok.headers);
    assert!(ok.header("X-Powered-By").is_none(), "add_header X-Powered-By stripped: {:?}", ok.headers);
    assert_eq!(ok.headers_all("Set-Cookie"), vec!["sid=abc; Path=/; HttpOnly; SameSite=Lax"]);
    assert_eq!(ok.header("X-Kept"), Some("nginx's own"), "headers the module does not own pass");
    assert_preset(&ok, "200 with add_header");

    let missing = http_get(nginx.port, "/no-such-file");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.headers_all("X-Frame-Options"), vec!["SAMEORIGIN"], "always: {:?}", missing.headers);
    assert!(missing.header("X-Powered-By").is_none());
}

/// A page whose response sets a cookie with `add_header Set-Cookie` under
/// `shield_cookie_flags httponly`: Chromium must not show it to the page's scripts. The page
/// then fetch()es a location without the flags, whose cookie scripts do see (the control).
#[test]
fn chromium_cannot_read_an_add_header_cookie_made_httponly() {
    let nginx = Nginx::start(
        r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location = /cookie.html {
                shield_cookie_flags secure httponly samesite=lax;
                add_header Set-Cookie "sid=secret; Path=/";
            }
            location = /plain {
                add_header Set-Cookie "plain=visible; Path=/";
                return 204;
            }
        }"#,
    );
    let page = r#"<html><body><pre id="cookies">pending</pre>
<script>
fetch("/plain").then(() => { document.getElementById("cookies").textContent = "seen:" + document.cookie; },
                     e => { document.getElementById("cookies").textContent = "FAIL " + e; });
</script></body></html>"#;
    std::fs::write(nginx.dir.path().join("html/cookie.html"), page).unwrap();
    let dom = support::chromium_dom(&format!("http://127.0.0.1:{}/cookie.html", nginx.port));
    assert!(dom.contains("seen:"), "the script ran: {dom}");
    assert!(dom.contains("plain=visible"), "control: scripts read a plain cookie: {dom}");
    assert!(!dom.contains("sid="), "HttpOnly cookie hidden from document.cookie: {dom}");
}
