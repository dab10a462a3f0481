//! Debian's CRS 3.3.4 (`apt-get install modsecurity-crs`, listed in scripts/lib.sh) loaded
//! whole, and classic attacks and benign requests run through it at paranoia level 1.
//! Without the package these tests fail with a message saying how to install it.

use std::path::PathBuf;

use super::*;

const RULES_DIR: &str = "/usr/share/modsecurity-crs/rules";
const SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";

/// The files in the order Debian's `owasp-crs.load` includes them.
fn crs_files() -> Vec<PathBuf> {
    let missing = format!("{RULES_DIR} or {SETUP} is missing: install Debian's CRS with `apt-get install modsecurity-crs` (scripts/lib.sh does)");
    assert!(PathBuf::from(RULES_DIR).is_dir() && PathBuf::from(SETUP).is_file(), "{missing}");
    let mut rules: Vec<PathBuf> = std::fs::read_dir(RULES_DIR)
        .expect("rules dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    rules.sort();
    let mut files = vec![PathBuf::from(SETUP)];
    files.extend(
        ["/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"]
            .map(PathBuf::from)
            .into_iter()
            .filter(|p| p.is_file()),
    );
    files.extend(rules);
    files.extend(
        ["/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"]
            .map(PathBuf::from)
            .into_iter()
            .filter(|p| p.is_file()),
    );
    files
}

/// Every load error CRS 3.3.4 produces, by rule id: what this engine cannot express.
const EXPECTED_ERRORS: &[(u32, LoadErrorKind, &str)] = &[
    (910100, LoadErrorKind::UnsupportedOperator, "@geolookup"),
    (910140, LoadErrorKind::UnsupportedOperator, "@rbl"),
    (920120, LoadErrorKind::UnsupportedRegex, "look-around"),
    (942130, LoadErrorKind::UnsupportedRegex, "look-around"),
    (953120, LoadErrorKind::UnsupportedRegex, "look-around"),
];

/// Rules loaded from Debian's CRS 3.3.4 with its crs-setup.conf (every SecRule chain and
/// SecAction with an id, minus the five above).
const EXPECTED_RULES: usize = 629;

fn crs() -> &'static RuleSet {
    static SET: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| load_files(&crs_files()))
}

#[test]
fn crs_loads_with_only_listed_errors() {
    let set = crs();
    for e in &set.errors {
        println!("load error {:?} {} rule {:?}: {}", e.kind, e.origin, e.rule_id, e.detail);
    }
    println!("{} rules loaded, {} load errors", set.rule_count(), set.errors.len());
    let got: Vec<(u32, LoadErrorKind)> = set.errors.iter().map(|e| (e.rule_id.unwrap_or(0), e.kind)).collect();
    let want: Vec<(u32, LoadErrorKind)> = EXPECTED_ERRORS.iter().map(|&(id, kind, _)| (id, kind)).collect();
    assert_eq!(got, want);
    for (e, (_, _, detail)) in set.errors.iter().zip(EXPECTED_ERRORS) {
        assert!(e.detail.contains(detail), "{}: {}", e.origin, e.detail);
        assert!(e.origin.line > 0 && e.origin.file.ends_with(".conf"));
    }
    assert_eq!(set.rule_count(), EXPECTED_RULES);
    assert_eq!(set.component_signatures, vec!["OWASP_CRS/3.3.4"]);
}

fn get(uri: &str) -> Request {
    Request {
        method: "GET".into(),
        uri: uri.into(),
        protocol: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), b"example.com".to_vec()),
            ("User-Agent".into(), b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0".to_vec()),
            ("Accept".into(), b"text/html,application/xhtml+xml;q=0.9,*/*;q=0.8".to_vec()),
        ],
        body: Vec::new(),
        remote_addr: "192.0.2.10".into(),
    }
}

fn post(uri: &str, content_type: &str, body: &str) -> Request {
    let mut r = get(uri);
    r.method = "POST".into();
    r.headers.push(("Content-Type".into(), content_type.as_bytes().to_vec()));
    r.headers.push(("Content-Length".into(), body.len().to_string().into_bytes()));
    r.body = body.as_bytes().to_vec();
    r
}

/// The detection rules that matched (not the initialisation, paranoia-skip and scoring ones).
fn detections(out: &eval::Outcome) -> Vec<u32> {
    out.matched_ids()
        .into_iter()
        .filter(|&id| id >= 910000 && id % 1000 >= 100 && id < 949000 || id == 949110)
        .collect()
}

fn run(name: &str, req: &Request) -> eval::Outcome {
    let out = evaluate(crs(), req);
    println!("{name}: anomaly_score={} block={:?} rules={:?}", out.anomaly_score(), out.block, detections(&out));
    out
}

#[test]
fn classic_attacks_exceed_the_pl1_threshold_and_are_denied_by_949110() {
    let attacks = [
        ("sqli", get("/search?q=1%27%20OR%201%3D1--")),
        ("xss", get("/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")),
        ("lfi", get("/download?file=../../etc/passwd")),
        ("rce", get("/ping?host=127.0.0.1%3B%20cat%20%2Fetc%2Fpasswd")),
        (
            "sqli in a form body",
            post("/login", "application/x-www-form-urlencoded", "user=admin%27%20OR%201%3D1--&pw=x"),
        ),
        ("xss in a JSON body", post("/api", "application/json", r#"{"comment":"<script>alert(1)</script>"}"#)),
    ];
    for (name, req) in &attacks {
        let out = run(name, req);
        assert!(out.anomaly_score() >= 5, "{name}: score {}", out.anomaly_score());
        let block = out.block.as_ref().unwrap_or_else(|| panic!("{name} not blocked"));
        assert_eq!((block.rule_id, block.status, block.enforced), (949110, 403, true), "{name}");
    }
}

#[test]
fn benign_requests_score_zero() {
    let benign = [
        ("home", get("/")),
        ("search", get("/search?q=red+shoes&page=2&sort=price")),
        (
            "form",
            post(
                "/contact",
                "application/x-www-form-urlencoded",
                "name=Ada+Lovelace&email=ada%40example.com&msg=Hello%2C+world",
            ),
        ),
        ("json", post("/api/items", "application/json", r#"{"name":"lamp","qty":2,"tags":["home","light"]}"#)),
    ];
    for (name, req) in &benign {
        let out = run(name, req);
        assert_eq!(out.anomaly_score(), 0, "{name}: {:?}", out.matched_ids());
        assert_eq!(out.block, None, "{name}");
    }
}

#[test]
fn crs_setup_variables_reach_the_rules() {
    let out = run("setup", &get("/"));
    assert_eq!(out.tx_number("crs_setup_version"), 334);
    assert_eq!(out.tx_number("paranoia_level"), 1);
    assert_eq!(out.tx_number("inbound_anomaly_score_threshold"), 5);
    assert_eq!(out.tx_number("critical_anomaly_score"), 5);
}

#[test]
fn protocol_rules_see_methods_and_headers() {
    let mut r = get("/");
    r.method = "TRACK".into();
    let out = run("method", &r);
    assert!(out.matched_ids().contains(&911100), "method not allowed: {:?}", out.matched_ids());
}

fn percent_encode(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The payload lists of tests/data/payloads (and the benign corpus of scripts/waf-eval-corpus)
/// sent as `GET /?q=<payload>` through CRS 3.3.4 at PL1: blocked means denied by 949110.
/// Prints the rates per family; the floors guard against regressions of this engine.
#[test]
fn crs_payload_lists_detection_and_false_positives() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut files: Vec<PathBuf> = std::fs::read_dir(format!("{root}/tests/data/payloads"))
        .expect("payload lists")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files.push(PathBuf::from(format!("{root}/scripts/waf-eval-corpus/benign.txt")));
    let mut families: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let mut false_positives = Vec::new();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "txt")) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let family = name.split("--").next().unwrap().trim_end_matches(".txt").to_string();
        let text = std::fs::read(path).unwrap();
        for line in text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()) {
            let out = evaluate(crs(), &get(&format!("/?q={}", percent_encode(line))));
            let hit = out.block.is_some();
            let f = families.entry(family.clone()).or_default();
            f.0 += 1;
            f.1 += usize::from(hit);
            if hit && family.starts_with("benign") {
                false_positives.push(format!("{} {:?}", String::from_utf8_lossy(line), detections(&out)));
            }
        }
    }
    println!("family                 blocked/total   rate (CRS 3.3.4, PL1)");
    for (family, (total, hit)) in &families {
        println!("{family:22} {hit:>6}/{total:<6} {:6.1}%", 100.0 * *hit as f64 / *total as f64);
    }
    println!("false positives: {false_positives:#?}");
    // Floors a little under the rates measured when this test was written (sql 96.2%,
    // xss 99.4%, traversal 87.9%, inclusion 71.8%, command 75.7%; benign 7.6% blocked):
    // a regression guard for this engine, not a claim of parity with ModSecurity.
    let rate = |f: &str| families.get(f).map_or(0.0, |&(total, hit)| hit as f64 / total as f64);
    for (family, floor) in [
        ("sql_injection", 0.95),
        ("xss_injection", 0.99),
        ("directory_traversal", 0.85),
        ("file_inclusion", 0.70),
        ("command_injection", 0.74),
    ] {
        assert!(rate(family) >= floor, "{family}: {:.3} below {floor}", rate(family));
    }
    assert!(rate("benign") <= 0.08, "benign blocked: {:.3}", rate("benign"));
}

/// The benchmark's benign POST (4 query args, 2 cookies, a JSON body) evaluated repeatedly:
/// prints the time per request (informative only: no timed assertion) and checks it passes.
#[test]
fn crs_cost_per_benign_post_printed() {
    let mut req = post(
        "/api/orders?page=2&sort=date&lang=en&ref=home",
        "application/json",
        r#"{"customer":"Ada Lovelace","items":[{"sku":"A-100","qty":2},{"sku":"B-7","qty":1}],"note":"leave at the door"}"#,
    );
    req.headers.push(("Cookie".into(), b"session=9f8e7d6c5b4a; theme=dark".to_vec()));
    let set = crs();
    let rounds: u32 = std::env::var("SECLANG_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(200);
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let out = evaluate(set, &req);
        assert_eq!(out.anomaly_score(), 0, "{:?}", detections(&out));
    }
    println!(
        "CRS 3.3.4 PL1, benign POST: {:.1} us per request",
        start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    );
    let mut profile = eval::Profile::new();
    for _ in 0..rounds {
        eval::evaluate_profiled(set, &req, Some(&mut profile));
    }
    let mut costs: Vec<(u32, std::time::Duration)> = profile.into_iter().collect();
    costs.sort_by_key(|c| std::cmp::Reverse(c.1));
    let total: f64 = costs.iter().map(|c| c.1.as_secs_f64()).sum();
    println!("rules evaluated: {}; costliest (us per request, share):", costs.len());
    for (id, d) in costs.iter().take(15) {
        println!(
            "  {id}: {:.1} us ({:.1}%)",
            d.as_secs_f64() * 1e6 / f64::from(rounds),
            100.0 * d.as_secs_f64() / total
        );
    }
}

/// A valid urlencoded body longer than the transformation cut (64 KiB) is not "URL encoding
/// abuse" (920240): the raw value is inspected whole, not cut in the middle of a `%27`.
#[test]
fn crs_long_valid_urlencoded_body_is_not_encoding_abuse() {
    let body = format!("a={}", "%27".repeat(30_000));
    let out = run("long body", &post("/", "application/x-www-form-urlencoded", &body));
    assert!(!out.matched_ids().contains(&920240), "{:?}", detections(&out));
}

/// Large hostile values through the whole CRS: every matcher is linear, so this returns
/// (no time assertion: CI machines differ); the point is that it terminates and still
/// decides. Sizes stay under the 64 KiB transformation cut.
#[test]
fn crs_hostile_large_values_terminate() {
    for hostile in
        ["'".repeat(30_000), "<a ".repeat(10_000), "%".repeat(30_000), "((((".repeat(7_000), "\\u00".repeat(7_000)]
    {
        let started = std::time::Instant::now();
        let out = run(
            &hostile[..8],
            &post("/", "application/x-www-form-urlencoded", &format!("a={}", percent_encode(hostile.as_bytes()))),
        );
        println!("  {} bytes in {:?}", hostile.len(), started.elapsed());
        assert!(out.tx_number("crs_setup_version") == 334, "the transaction ran to its end");
    }
}

/// The set-driven gate (gate.rs) only skips rules that cannot match: over the payload lists
/// and the benign corpus, CRS 3.3.4 gives the same matched rules, scores and verdicts with
/// the gate as rule by rule.
#[test]
fn crs_gate_changes_no_outcome() {
    let mut ungated = load_files(&crs_files());
    let gated = crs().rules().filter(|r| r.gate.is_some()).count();
    println!("{gated} of {} rules gated by {} sets", crs().rule_count(), crs().gates.len());
    // Every plain `@rx` starter over request variables (the others are mostly numeric TX
    // checks: paranoia skips and scoring).
    assert!(gated >= 180, "{gated}");
    for item in &mut ungated.items {
        if let model::Item::Rule(r) = item {
            r.gate = None;
        }
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let mut requests = vec![get("/index.html?q=hello&page=2")];
    for entry in std::fs::read_dir(format!("{root}/tests/data/payloads")).expect("payload lists").flatten() {
        let text = std::fs::read(entry.path()).unwrap();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).take(150) {
            requests.push(get(&format!("/?q={}", percent_encode(line))));
            requests.push(post("/form", "application/x-www-form-urlencoded", &format!("a={}", percent_encode(line))));
        }
    }
    for req in &requests {
        let (a, b) = (evaluate(crs(), req), evaluate(&ungated, req));
        assert_eq!(a.matched_ids(), b.matched_ids(), "{}", req.uri);
        assert_eq!((&a.block, a.anomaly_score()), (&b.block, b.anomaly_score()), "{}", req.uri);
    }
}
