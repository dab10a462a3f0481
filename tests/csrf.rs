//! `shield_csrf` against real nginx: requests as curl sends them (no browser headers), as
//! browsers send them (hand-written `Sec-Fetch-Site` / `Origin`), and from a real headless
//! Chromium submitting forms same-origin, same-site (another port) and cross-site (another
//! address).

mod support;

use support::{chromium_dom, chromium_dom_reaching, http_request, Nginx, Response};

const SITE: &str = r#"
    log_format csrf '$request_method $uri $status $shield_csrf_status';
    server {
        listen 127.0.0.1:%%PORT%%;
        # The same site under a second address: another site for the browser.
        listen 127.0.0.2:%%PORT%%;
        access_log %%TMP%%/csrf.log csrf;
        root %%HTML%%;
        default_type text/html;
        shield_csrf on;
        location = /form {
            return 200 "<html><body><p id=result>posted ok</p></body></html>";
        }
        location = /webhook {
            shield_csrf_bypass /webhook;
            return 200 "hook ok";
        }
        location /report/ {
            shield_csrf report;
            return 200 "report ok";
        }
        location /partner/ {
            shield_csrf_trusted_origins http://127.0.0.1:%%EVIL%%;
            return 200 "partner ok";
        }
        location /cors/ {
            shield_cors on;
            shield_cors_origins http://127.0.0.1:%%EVIL%%;
            return 200 "cors ok";
        }
        location /cors-untrusted/ {
            shield_cors on;
            shield_cors_origins http://127.0.0.1:%%EVIL%%;
            shield_csrf_trusted_origins off;
            return 200 "cors ok";
        }
        location /proxied/ {
            shield_csrf_origins https://www.example.test;
            return 200 "proxied ok";
        }
        location = /metrics { shield_csrf off; shield_status; }
    }
    server {
        listen 127.0.0.1:%%EVIL%%;
        root %%TMP%%/evil;
        default_type text/html;
    }"#;

fn start() -> Nginx {
    let nginx = Nginx::builder().var("EVIL", support::free_port()).http(SITE).start();
    std::fs::create_dir_all(nginx.dir.path().join("evil")).unwrap();
    nginx
}

fn post(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    http_request(port, "POST", path, headers, Some(b"a=1"))
}

#[test]
fn requests_without_browser_headers_and_hand_written_ones() {
    let nginx = start();
    let p = nginx.port;
    let evil = format!("http://127.0.0.1:{}", nginx.var_port("EVIL"));
    let xsite = [("Sec-Fetch-Site", "cross-site"), ("Origin", evil.as_str())];
    assert_eq!(post(p, "/form", &[]).status, 200, "curl: neither Sec-Fetch-Site nor Origin");
    assert_eq!(http_request(p, "GET", "/form", &xsite, None).status, 200, "GET is safe");
    assert_eq!(http_request(p, "OPTIONS", "/form", &xsite, None).status, 200, "OPTIONS is safe");
    assert_eq!(post(p, "/form", &xsite).status, 403, "cross-site POST");
    assert_eq!(http_request(p, "DELETE", "/form", &xsite, None).status, 403, "cross-site DELETE");
    assert_eq!(post(p, "/form", &[("Sec-Fetch-Site", "same-site"), ("Origin", &evil)]).status, 403, "same-site");
    assert_eq!(post(p, "/form", &[("Sec-Fetch-Site", "same-origin")]).status, 200);
    assert_eq!(post(p, "/form", &[("Sec-Fetch-Site", "none")]).status, 200, "user-initiated");
    // Older browsers: Origin only.
    assert_eq!(post(p, "/form", &[("Origin", "http://localhost")]).status, 200, "own origin (scheme + Host)");
    assert_eq!(post(p, "/form", &[("Origin", "https://localhost")]).status, 403, "another scheme");
    assert_eq!(post(p, "/form", &[("Origin", &evil)]).status, 403);
    assert_eq!(post(p, "/form", &[("Origin", "null")]).status, 403, "sandboxed pages send null");
    assert_eq!(post(p, "/form", &[("Origin", "http://user@localhost")]).status, 403, "user info");
    // Bypass path, trusted origins, the CORS allowlist, report mode.
    assert_eq!(post(p, "/webhook", &xsite).body_str(), "hook ok");
    assert_eq!(post(p, "/partner/x", &xsite).body_str(), "partner ok");
    assert_eq!(post(p, "/cors/x", &xsite).status, 200, "CORS-allowed origins are trusted by default");
    let other = [("Sec-Fetch-Site", "cross-site"), ("Origin", "http://127.0.0.9:1")];
    assert_eq!(post(p, "/cors/x", &other).status, 403, "other origins still not");
    assert_eq!(post(p, "/cors-untrusted/x", &xsite).status, 403, "shield_csrf_trusted_origins off");
    assert_eq!(post(p, "/report/x", &xsite).body_str(), "report ok");
    // Behind a proxy: the configured public origin, not the raw Host.
    assert_eq!(post(p, "/proxied/x", &[("Origin", "http://localhost")]).status, 403);
    assert_eq!(post(p, "/proxied/x", &[("Origin", "https://www.example.test")]).status, 200);

    let log = nginx.wait_log("csrf.log", 21);
    assert!(log.contains("POST /form 403 REJECTED"), "{log}");
    assert!(log.contains("POST /form 200 PASSED"), "{log}");
    assert!(log.contains("GET /form 200 PASSED"), "{log}");
    assert!(log.contains("POST /report/x 200 REPORTED"), "{log}");
    let errors = nginx.error_log();
    assert!(errors.contains("shield: cross-origin request rejected, origin: null"), "{errors}");
    assert!(errors.contains(&format!("shield: cross-origin request reported, origin: {evil}")), "{errors}");
    let metrics = http_request(p, "GET", "/metrics", &[], None);
    let body = metrics.body_str();
    assert!(body.contains("shield_csrf_requests_total{outcome=\"rejected\"} 10"), "{body}");
    assert!(body.contains("shield_csrf_requests_total{outcome=\"reported\"} 1"), "{body}");
}

/// A page on another site (another address) and one on the same site but another port submit
/// a form to the protected site: both are refused. The site's own page submits it: it passes.
#[test]
fn chromium_forms_same_origin_pass_cross_site_and_same_site_are_refused() {
    let nginx = start();
    let p = nginx.port;
    let form = |action: String| {
        format!(
            "<html><body><form id=f method=POST action=\"{action}\"><input name=a value=1></form>\
             <script>document.getElementById('f').submit();</script></body></html>"
        )
    };
    let evil_dir = nginx.dir.path().join("evil");
    std::fs::write(evil_dir.join("cross.html"), form(format!("http://127.0.0.2:{p}/form"))).unwrap();
    std::fs::write(evil_dir.join("samesite.html"), form(format!("http://127.0.0.1:{p}/form"))).unwrap();
    std::fs::write(nginx.dir.path().join("html/own.html"), form("/form".into())).unwrap();
    let evil = nginx.var_port("EVIL");

    let own = chromium_dom(&format!("http://127.0.0.1:{p}/own.html"));
    assert!(own.contains("posted ok"), "the site's own form:\n{own}");
    let cross = chromium_dom_reaching(&format!("http://127.0.0.1:{evil}/cross.html"), &["127.0.0.2"]);
    assert!(cross.contains("403 Forbidden") && !cross.contains("posted ok"), "cross-site form:\n{cross}");
    let same_site = chromium_dom(&format!("http://127.0.0.1:{evil}/samesite.html"));
    assert!(same_site.contains("403 Forbidden") && !same_site.contains("posted ok"), "same-site form:\n{same_site}");

    let log = nginx.wait_log("csrf.log", 4);
    assert_eq!(log.matches("POST /form 403 REJECTED").count(), 2, "{log}");
    assert_eq!(log.matches("POST /form 200 PASSED").count(), 1, "{log}");
    let errors = nginx.error_log();
    assert!(errors.contains("sec-fetch-site: cross-site"), "Chromium sent Sec-Fetch-Site: cross-site:\n{errors}");
    assert!(errors.contains("sec-fetch-site: same-site"), "and same-site for another port:\n{errors}");
}

/// Over TLS the request's own origin is `https://` + Host: an `http://` Origin for the same
/// host is another origin.
#[test]
fn own_origin_uses_the_connection_scheme() {
    let dir = support::TempDir::new();
    let (cert, key) = support::self_signed_cert(dir.path());
    let nginx = Nginx::builder()
        .var("TLSPORT", support::free_port())
        .var("CERT", cert.display())
        .var("KEY", key.display())
        .http(
            r#"
        server {
            listen 127.0.0.1:%%TLSPORT%% ssl;
            listen 127.0.0.1:%%PORT%%;
            ssl_certificate %%CERT%%;
            ssl_certificate_key %%KEY%%;
            shield_csrf on;
            location / { return 200 "ok"; }
        }"#,
        )
        .start();
    let tls = nginx.var_port("TLSPORT");
    let post_tls = |origin: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", "POST", "-d", "a=1"])
            .args(["-H", &format!("Origin: {origin}"), &format!("https://127.0.0.1:{tls}/form")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(post_tls(&format!("https://127.0.0.1:{tls}")), "200", "own origin over TLS");
    assert_eq!(post_tls(&format!("http://127.0.0.1:{tls}")), "403", "the same host over http is another origin");
    assert_eq!(post(nginx.port, "/form", &[("Origin", "http://localhost")]).status, 200, "own origin over http");
}
