//! `shield_filter_secrules`: SecLang rule files run by the module in a real nginx — Debian's
//! OWASP CRS 3.3.4 (`apt-get install modsecurity-crs`, in scripts/lib.sh) and small rule
//! files written by the tests for each language feature.

mod support;

use std::fs;
use std::path::Path;

use support::{echo_upstream, http_get, http_request, nginx_test_config, Nginx, Response};

const CRS_SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";
const CRS_RULES: &str = "/usr/share/modsecurity-crs/rules";
/// The CRS 3.3.4 rules this engine cannot express (see the README): left out by name.
const CRS_REMOVE: &str = "remove=910100,910140,920120,942130,953120";

fn crs_files() -> String {
    assert!(
        Path::new(CRS_SETUP).is_file() && Path::new(CRS_RULES).is_dir(),
        "Debian's CRS is missing: `apt-get install modsecurity-crs` (scripts/lib.sh installs it)"
    );
    format!("{CRS_SETUP} {CRS_RULES}/*.conf")
}

fn crs_directive() -> String {
    format!("shield_filter_secrules {} {CRS_REMOVE};", crs_files())
}

/// The audit line of the request whose block response (or `X-Request-Id` echo) names `id`.
fn audit_line(nginx: &Nginx, id: &str) -> String {
    let audit = nginx.wait_log("audit.log", 1);
    audit
        .lines()
        .find(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
        .unwrap_or_else(|| panic!("no audit line for {id}:\n{audit}"))
        .to_string()
}

fn request_id(r: &Response) -> String {
    let body = r.body_str();
    body.split("\"request_id\":\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default().to_string()
}

fn rule_ids(audit: &str) -> Vec<u32> {
    audit.split("\"id\":").skip(1).filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).collect()
}

fn crs_nginx(upstream: u16) -> Nginx {
    Nginx::builder()
        .var("UPSTREAM", upstream)
        .http(&format!(
            r#"
        shield_filter_audit_log %%TMP%%/audit.log;
        log_format waf "$uri $status $shield_filter_status $shield_filter_score $shield_filter_rules";
        access_log %%TMP%%/waf.log waf;
        {}
        server {{
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {{ }}
            location /api/ {{ proxy_pass http://127.0.0.1:%%UPSTREAM%%; }}
            location /ret {{ return 200 "returned\n"; }}
            location /detect/ {{ alias %%HTML%%/; shield_filter detect; }}
            location /off/ {{ alias %%HTML%%/; shield_filter_secrules off; }}
            location /status {{ shield_filter_secrules off; shield_status; }}
        }}"#,
            crs_directive()
        ))
        .start()
}

const BROWSER: &[(&str, &str)] = &[
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
];

fn with_browser<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    BROWSER.iter().copied().chain(extra.iter().copied()).collect()
}

/// Sends the request, expects the CRS block (403, JSON body) and returns the rule ids of its
/// audit line.
fn blocked(
    nginx: &Nginx,
    what: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u32> {
    let r = http_request(nginx.port, method, path, &with_browser(headers), body);
    assert_eq!(r.status, 403, "{what}: {}", r.body_str());
    assert!(r.body_str().contains("\"request blocked\""), "{what}: {}", r.body_str());
    let line = audit_line(nginx, &request_id(&r));
    assert!(line.contains("\"result\":\"BLOCKED\""), "{what}: {line}");
    let ids = rule_ids(&line);
    assert!(ids.contains(&949110), "{what}: the CRS verdict rule is in the audit line: {line}");
    ids
}

/// (what, method, path, headers, body, the CRS rule family expected: 942 for 942xxx)
type AttackCase<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a [u8]>, u32);

fn has_rule_in(ids: &[u32], family: u32) -> bool {
    ids.iter().any(|id| id / 1000 == family)
}

#[test]
fn crs_blocks_attacks_in_query_body_cookie_and_header_with_their_rule_ids() {
    let up = echo_upstream();
    let nginx = crs_nginx(up.port);
    let cases: &[AttackCase] = &[
        ("sqli in query", "GET", "/index.html?id=1%27%20OR%20%271%27%3D%271", &[], None, 942),
        ("xss in query", "GET", "/index.html?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[], None, 941),
        ("traversal in query", "GET", "/index.html?file=../../../../etc/passwd", &[], None, 930),
        ("rce in query", "GET", "/index.html?host=127.0.0.1%3B%20cat%20%2Fetc%2Fpasswd", &[], None, 932),
        (
            "sqli in urlencoded body",
            "POST",
            "/api/form",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(b"user=admin&pass=1%27%20UNION%20SELECT%20password%20FROM%20users--"),
            942,
        ),
        (
            "xss in json body",
            "POST",
            "/api/json",
            &[("Content-Type", "application/json")],
            Some(br#"{"comment":{"text":"<script>alert(document.cookie)</script>"}}"#),
            941,
        ),
        ("sqli in cookie", "GET", "/index.html", &[("Cookie", "session=1' OR '1'='1")], None, 942),
        ("xss in referer", "GET", "/index.html", &[("Referer", "<script>alert(1)</script>")], None, 941),
        // The CRS judges methods itself (911100): the built-in method list does not answer 405.
        ("method outside the CRS's list", "FOO", "/index.html", &[], None, 911),
        // `return` answers in the rewrite phase; the filter runs before it.
        ("xss before return", "GET", "/ret?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", &[], None, 941),
    ];
    for &(what, method, path, headers, body, family) in cases {
        let ids = blocked(&nginx, what, method, path, headers, body);
        assert!(has_rule_in(&ids, family), "{what}: a {family}xxx rule matched: {ids:?}");
    }
    assert!(up.requests().is_empty(), "no blocked request reached the upstream");

    // Benign requests pass, and a benign body still reaches the upstream whole.
    for path in ["/index.html", "/index.html?q=hello+world&page=2", "/ret?lang=en"] {
        let r = http_request(nginx.port, "GET", path, BROWSER, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body_str());
    }
    let form = b"name=Ada+Lovelace&comment=I+like+the+new+design%2C+thanks%21";
    let r = http_request(
        nginx.port,
        "POST",
        "/api/form",
        &with_browser(&[("Content-Type", "application/x-www-form-urlencoded")]),
        Some(form),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let json = br#"{"user":{"name":"Ada","tags":["math","engines"]},"page":2}"#;
    let r = http_request(
        nginx.port,
        "POST",
        "/api/json",
        &with_browser(&[("Content-Type", "application/json")]),
        Some(json),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    let seen = up.requests();
    assert_eq!(seen.len(), 2, "both benign POSTs were proxied");
    assert_eq!(seen[0].body, form.to_vec(), "the inspected body is passed on unchanged");
    assert_eq!(seen[1].body, json.to_vec());

    // Variables: the CRS verdict, its anomaly score and the logged rule ids.
    let log = nginx.wait_log("waf.log", cases.len() + 5);
    let line = log.lines().find(|l| l.starts_with("/ret 403")).unwrap_or_else(|| panic!("{log}"));
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[2], "BLOCKED", "{line}");
    assert!(fields[3].parse::<u32>().unwrap() >= 5, "score at least the PL1 threshold: {line}");
    assert!(fields[4].split(',').any(|id| id == "949110"), "{line}");
    assert!(log.lines().any(|l| l.starts_with("/index.html 200 PASSED 0")), "{log}");

    // Metrics: requests by result, matches by rule file.
    let metrics = http_get(nginx.port, "/status").body_str().to_string();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {series}:\n{metrics}"))
    };
    assert_eq!(value("shield_filter_requests_total{result=\"blocked\"}"), cases.len() as u64);
    assert!(value("shield_filter_requests_total{result=\"passed\"}") >= 5);
    assert!(value("shield_filter_secrules_matches_total{file=\"REQUEST-942-APPLICATION-ATTACK-SQLI.conf\"}") >= 3);
    assert_eq!(
        value("shield_filter_secrules_matches_total{file=\"REQUEST-949-BLOCKING-EVALUATION.conf\"}"),
        cases.len() as u64
    );
    // The block line in error.log names the verdict rule.
    assert!(nginx.error_log().contains("shield: request blocked by SecLang rule 949110"), "{}", nginx.error_log());
}

#[test]
fn detect_mode_logs_and_passes_and_off_skips_the_rules() {
    let up = echo_upstream();
    let nginx = crs_nginx(up.port);
    let attack = "?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let r = http_request(nginx.port, "GET", &format!("/detect/index.html{attack}"), BROWSER, None);
    assert_eq!(r.status, 200, "shield_filter detect: the CRS decides, nothing is enforced");
    let r = http_request(nginx.port, "GET", &format!("/off/index.html{attack}"), BROWSER, None);
    assert_eq!(r.status, 200, "shield_filter_secrules off: no rules here");
    let log = nginx.wait_log("waf.log", 2);
    assert!(log.lines().any(|l| l.starts_with("/detect/index.html 200 DETECTED") && l.contains("949110")), "{log}");
    assert!(log.lines().any(|l| l == "/off/index.html 200 - - -"), "not inspected at all: {log}");
    let audit = nginx.wait_log("audit.log", 1);
    assert_eq!(audit.lines().count(), 1, "{audit}");
    assert!(audit.contains("\"result\":\"DETECTED\"") && audit.contains("\"id\":941100"), "{audit}");

    // A reload compiles the rules again for the new cycle and keeps enforcing them.
    nginx.reload();
    assert_eq!(http_request(nginx.port, "GET", &format!("/index.html{attack}"), BROWSER, None).status, 403);
    assert_eq!(http_request(nginx.port, "GET", "/index.html?q=fine", BROWSER, None).status, 200);
    let notices = nginx.error_log().matches("compiled rule set 1: ").count();
    assert!(notices >= 1, "{}", nginx.error_log());
    let stderr = fs::read_to_string(nginx.dir.path().join("stderr.log")).unwrap_or_default();
    assert!(!stderr.contains("[emerg]") && !stderr.contains("[alert]"), "{stderr}");
}

#[test]
fn locations_loading_the_same_files_share_one_compiled_set() {
    let crs = crs_directive();
    let (ok, out) = nginx_test_config(&format!(
        r#"
        {crs}
        server {{
            listen 127.0.0.1:1;
            location /a/ {{ {crs} }}
            location /b/ {{ {crs} }}
            location /c/ {{ }}
        }}
        server {{
            listen 127.0.0.1:2;
            {crs}
            location /d/ {{ }}
        }}"#
    ));
    assert!(ok, "{out}");
    let compiled: Vec<&str> = out.lines().filter(|l| l.contains("shield_filter_secrules: compiled rule set")).collect();
    assert_eq!(compiled.len(), 1, "one set for five blocks naming the same files:\n{out}");
    assert!(compiled[0].contains("compiled rule set 1: 629 rules from 33 files"), "{out}");

    // A different list (here: one rule fewer) is a set of its own.
    let (ok, out) = nginx_test_config(&format!(
        r#"
        {crs}
        server {{
            listen 127.0.0.1:1;
            location /a/ {{ shield_filter_secrules {} {CRS_REMOVE},942100; }}
            location /b/ {{ }}
        }}"#,
        crs_files()
    ));
    assert!(ok, "{out}");
    assert_eq!(out.matches("shield_filter_secrules: compiled rule set").count(), 2, "{out}");
    assert!(out.contains("compiled rule set 2: 628 rules"), "{out}");
}

fn assert_test_fails(http: &str, expected: &[&str]) -> String {
    let (ok, out) = nginx_test_config(http);
    assert!(!ok, "nginx -t accepted it:\n{out}");
    let emerg = out.lines().find(|l| l.contains("[emerg]")).unwrap_or_else(|| panic!("no [emerg]:\n{out}"));
    for e in expected {
        assert!(emerg.contains(e), "{e:?} not in {emerg}");
    }
    assert!(emerg.contains("in \"shield_filter_secrules\" directive in ") && emerg.contains("nginx.conf:"), "{emerg}");
    out
}

#[test]
fn rules_the_engine_cannot_run_fail_nginx_t_with_file_line_and_rule_id() {
    let dir = support::TempDir::new();
    let bad = dir.path().join("bad.conf");
    fs::write(
        &bad,
        "# a comment\nSecRule ARGS \"@rx ok\" \"id:100,phase:2,pass\"\nSecRule ARGS \"@rx (?<=a)b\" \\\n    \"id:101,phase:2,deny\"\nSecRule ARGS \"@rbl example.com\" \"id:102,phase:1,deny\"\n",
    )
    .unwrap();
    let bad = bad.display().to_string();
    let out = assert_test_fails(
        &format!("shield_filter_secrules {bad};"),
        &[&format!("{bad}:3: rule 101: pattern the linear-time engine cannot run")],
    );
    assert!(out.contains(&format!("{bad}:5: rule 102: unsupported operator: @rbl")), "every error is listed:\n{out}");
    // Leaving the two out by id makes the file load.
    let (ok, out) = nginx_test_config(&format!("shield_filter_secrules {bad} remove=101-102;"));
    assert!(ok, "{out}");
    assert!(out.contains("compiled rule set 1: 1 rules from 1 files"), "{out}");

    // Debian's CRS as shipped: the first of its five rules this engine cannot express.
    assert_test_fails(
        &format!("shield_filter_secrules {};", crs_files()),
        &["REQUEST-910-IP-REPUTATION.conf:77: rule 910100: unsupported operator"],
    );
    assert_test_fails(&format!("shield_filter_secrules {bad} remove=abc;"), &["invalid parameter \"remove=abc\""]);
    assert_test_fails("shield_filter_secrules /nonexistent/rules.conf;", &["cannot open \"/nonexistent/rules.conf\""]);
    assert_test_fails("shield_filter_secrules /etc/*.nothing-here;", &["no file matches \"/etc/*.nothing-here\""]);
    support::assert_config_error(
        &format!("shield_filter_secrules {bad} remove=101-102; shield_filter_secrules off;"),
        "\"shield_filter_secrules\" directive is duplicate",
    );
}

/// A rule file exercising the language features the CRS relies on, one behaviour each.
const CUSTOM_RULES: &str = r#"
SecRuleEngine On
# ctl:ruleEngine: a request with X-Dry-Run: 1 is judged but not blocked.
SecRule REQUEST_HEADERS:X-Dry-Run "@streq 1" "id:1000,phase:1,pass,nolog,ctl:ruleEngine=DetectionOnly"
# chain: both links must match.
SecRule ARGS:a "@streq evil" "id:1001,phase:1,deny,chain,msg:'chained'"
    SecRule REQUEST_HEADERS:X-Chain "@streq yes"
# skipAfter: skip=1 jumps past rule 1003.
SecRule ARGS:skip "@streq 1" "id:1002,phase:1,pass,nolog,skipAfter:AFTER_PM"
SecRule ARGS:word "@pm forbidden banned" "id:1003,phase:1,deny,t:lowercase,msg:'phrase %{MATCHED_VAR}'"
SecMarker AFTER_PM
# setvar and TX: two signals add up to a deny.
SecRule ARGS:s1 "@rx ." "id:1004,phase:1,pass,setvar:tx.points=+1,msg:'signal 1'"
SecRule ARGS:s2 "@rx ." "id:1005,phase:1,pass,setvar:tx.points=+1,msg:'signal 2'"
SecRule TX:points "@ge 2" "id:1006,phase:1,deny,msg:'points %{tx.points}'"
# ctl:ruleRemoveById: under /trusted/ rule 1008 does not run.
SecRule REQUEST_FILENAME "@beginsWith /trusted/" "id:1007,phase:1,pass,nolog,ctl:ruleRemoveById=1008"
SecRule ARGS:x "@contains attack" "id:1008,phase:1,deny,msg:'contains attack'"
# @within: a method allowlist.
SecRule REQUEST_METHOD "!@within GET POST HEAD" "id:1009,phase:1,deny,msg:'method %{REQUEST_METHOD}'"
# Counts: more than 3 arguments (query and body together) is too many.
SecRule &ARGS "@gt 3" "id:1010,phase:2,deny,msg:'too many arguments'"
# Exclusion by regex selector: arguments named safe_* are not inspected.
SecRule ARGS|!ARGS:/^safe_/ "@rx <script" "id:1011,phase:2,deny,t:urlDecodeUni,t:lowercase,msg:'script tag'"
# status: honoured unless shield_filter_status is set.
SecRule ARGS:teapot "@streq 1" "id:1012,phase:1,deny,status:418,msg:'teapot'"
"#;

#[test]
fn custom_rule_files_run_chains_skips_setvar_ctl_and_selectors() {
    let up = echo_upstream();
    let rules = support::TempDir::new();
    fs::write(rules.path().join("custom.conf"), CUSTOM_RULES).unwrap();
    fs::write(
        rules.path().join("detect.conf"),
        "SecRuleEngine DetectionOnly\nSecRule ARGS \"@contains evil\" \"id:2001,phase:1,deny,msg:'evil'\"\n",
    )
    .unwrap();
    let nginx = Nginx::builder()
        .var("UPSTREAM", up.port)
        .var("RULES", rules.path().display())
        .http(
            r#"
        shield_filter_audit_log %%TMP%%/audit.log;
        shield_filter_secrules %%RULES%%/custom.conf;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { proxy_pass http://127.0.0.1:%%UPSTREAM%%; }
            location /status451/ { proxy_pass http://127.0.0.1:%%UPSTREAM%%; shield_filter_status 451; }
            location /detect/ { alias %%HTML%%/; shield_filter_secrules %%RULES%%/detect.conf; }
        }"#,
        )
        .start();
    let get = |path: &str, headers: &[(&str, &str)]| http_request(nginx.port, "GET", path, headers, None);
    let denied_by = |r: &Response| -> Vec<u32> {
        assert!(r.status >= 400, "{}", r.body_str());
        rule_ids(&audit_line(&nginx, &request_id(r)))
    };

    assert_eq!(get("/?a=evil", &[]).status, 200, "chain: first link alone");
    let r = get("/?a=evil", &[("X-Chain", "yes")]);
    assert_eq!((r.status, denied_by(&r)), (403, vec![1001]), "chain: both links");

    assert_eq!(denied_by(&get("/?word=BANNED", &[])), vec![1003], "@pm after t:lowercase");
    assert_eq!(get("/?word=banned&skip=1", &[]).status, 200, "skipAfter jumps past 1003");
    assert!(nginx.wait_log("audit.log", 2).contains("\"msg\":\"phrase banned\""), "msg macros expanded");

    assert_eq!(get("/?s1=x", &[]).status, 200, "one signal");
    assert_eq!(denied_by(&get("/?s1=x&s2=y", &[])), vec![1004, 1005, 1006], "setvar adds up in TX");
    assert!(nginx.wait_log("audit.log", 3).contains("\"msg\":\"points 2\""));

    assert_eq!(denied_by(&get("/?x=an+attack", &[])), vec![1008]);
    assert_eq!(get("/trusted/?x=an+attack", &[]).status, 200, "ctl:ruleRemoveById");

    let r = http_request(nginx.port, "PUT", "/", &[], Some(b"data"));
    assert_eq!((r.status, denied_by(&r)), (403, vec![1009]), "@within");

    assert_eq!(get("/?p=1&q=2&r=3", &[]).status, 200, "three arguments");
    let r = http_request(
        nginx.port,
        "POST",
        "/?p=1&q=2",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"r=3&s=4"),
    );
    assert_eq!(denied_by(&r), vec![1010], "&ARGS counts query and body arguments");

    let r = http_request(
        nginx.port,
        "POST",
        "/",
        &[("Content-Type", "application/json")],
        Some(br#"{"safe_html":"<SCRIPT>ok</SCRIPT>"}"#),
    );
    assert_eq!(r.status, 403, "a JSON key is json.safe_html, not excluded by ^safe_");
    let r = http_request(
        nginx.port,
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"safe_html=%3CSCRIPT%3Eok"),
    );
    assert_eq!(r.status, 200, "!ARGS:/^safe_/ excludes it");
    let r = http_request(
        nginx.port,
        "POST",
        "/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"html=%3CSCRIPT%3Eok"),
    );
    assert_eq!(denied_by(&r), vec![1011], "other arguments are inspected");

    let r = get("/?teapot=1", &[]);
    assert_eq!(r.status, 418, "the rule's status:");
    let r = get("/status451/?teapot=1", &[]);
    assert_eq!(r.status, 451, "shield_filter_status overrides it");

    let r = get("/?a=evil", &[("X-Chain", "yes"), ("X-Dry-Run", "1")]);
    assert_eq!(r.status, 200, "ctl:ruleEngine=DetectionOnly");
    let r = get("/detect/index.html?q=evil", &[]);
    assert_eq!(r.status, 200, "SecRuleEngine DetectionOnly");
    let audit = nginx.wait_log("audit.log", 14);
    let detected: Vec<&str> = audit.lines().filter(|l| l.contains("\"result\":\"DETECTED\"")).collect();
    assert_eq!(detected.len(), 2, "{audit}");
    assert!(detected[0].contains("\"id\":1001") && detected[1].contains("\"id\":2001"), "{audit}");
    assert!(!audit.contains("\"id\":1000") && !audit.contains("\"id\":1002"), "nolog rules are not detections");
}
