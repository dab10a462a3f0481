//! Rule-text fixtures evaluated end to end: each action, chain, marker, ctl and directive
//! behaviour the CRS relies on, on small inline rule sets.

use super::*;

fn load(text: &str) -> RuleSet {
    let set = load_text("fixture.conf", text);
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    set
}

fn get(uri: &str) -> Request {
    Request {
        method: "GET".into(),
        uri: uri.into(),
        protocol: "HTTP/1.1".into(),
        headers: vec![("Host".into(), b"example.com".to_vec()), ("User-Agent".into(), b"curl/8".to_vec())],
        body: Vec::new(),
        remote_addr: "10.1.2.3".into(),
    }
}

fn ids(set: &RuleSet, req: &Request) -> Vec<u32> {
    evaluate(set, req).matched_ids()
}

#[test]
fn secrule_matches_transformed_args_and_scores() {
    let set = load(
        r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.critical=5"
SecRule ARGS "@rx <script" "id:2,phase:2,block,t:none,t:urlDecodeUni,t:lowercase,\
    setvar:'tx.score=+%{tx.critical}'"
SecRule ARGS_NAMES "@streq evil" "id:3,phase:2,pass,setvar:tx.score=+1"
SecRule TX:score "@ge 5" "id:4,phase:2,deny,status:406"
"#,
    );
    // Arguments arrive URL-decoded (as ModSecurity parses them); t:urlDecodeUni is one more pass.
    let out = evaluate(&set, &get("/?a=%25253CSCRIPT"));
    assert_eq!(out.matched_ids(), vec![1], "two passes in all: %25253C is still %3C");
    let out = evaluate(&set, &get("/?a=%3CSCRIPT&evil=1"));
    assert_eq!(out.matched_ids(), vec![1, 2, 3, 4]);
    assert_eq!(out.tx_number("score"), 6);
    assert_eq!(out.block, Some(eval::Block { rule_id: 4, status: 406, enforced: true }));
    // As in ModSecurity, a rule without a chain runs its setvars once per matching value:
    // two arguments with the attack score twice.
    let out = evaluate(&set, &get("/?a=%3Cscript&b=%3Cscript&c=ok"));
    assert_eq!(out.tx_number("score"), 10);
}

/// Per-match setvars with capture: each matching value's capture is what its setvar sees
/// (CRS 922150 records every multipart part's Content-Type this way); a chain's setvars run
/// once.
#[test]
fn setvars_run_per_matching_value_with_its_capture() {
    let set = load(
        r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.n=0"
SecRule ARGS "@rx ^type=(.*)$" "id:2,phase:2,pass,capture,setvar:'tx.seen_%{tx.n}=%{tx.1}',setvar:tx.n=+1"
SecRule ARGS "@rx x" "id:3,phase:2,pass,chain,setvar:tx.chained=+1"
    SecRule ARGS "@rx x" "setvar:tx.chained=+10"
"#,
    );
    let out = evaluate(&set, &get("/?a=type%3Dgif&b=type%3Dpng&c=xx&d=xy"));
    assert_eq!(out.tx_number("n"), 2);
    assert_eq!(out.tx.get("seen_0").map(Vec::as_slice), Some(&b"gif"[..]));
    assert_eq!(out.tx.get("seen_1").map(Vec::as_slice), Some(&b"png"[..]));
    assert_eq!(out.tx_number("chained"), 11, "each link of a chain once");
}

#[test]
fn chains_need_every_link_and_run_each_links_actions_as_it_matches() {
    let set = load(
        r#"
SecRule REQUEST_METHOD "@streq POST" "id:10,phase:1,pass,setvar:tx.a=1,chain"
    SecRule REQUEST_HEADERS:Content-Type "@contains json" "setvar:tx.b=1"
SecRule REQUEST_HEADERS:Content-Type "@rx ^([^;]+)" "id:12,phase:1,pass,capture,setvar:tx.ct=|%{tx.1}|,chain"
    SecRule TX:ct "!@within |application/json|" "setvar:tx.odd_type=1"
SecRule REQUEST_METHOD "@streq GET" "id:11,phase:1,pass,capture,chain"
    SecRule REQUEST_URI "@rx ^/(\w+)" "capture,chain"
    SecRule TX:1 "@streq admin" "setvar:tx.admin=%{tx.1}"
"#,
    );
    let mut post = get("/");
    post.method = "POST".into();
    let out = evaluate(&set, &post);
    assert!(out.matched_ids().is_empty());
    assert_eq!(out.tx_number("a"), 1, "the starter's setvar runs when the starter matches");
    assert_eq!(out.tx_number("b"), 0);
    post.headers.push(("Content-Type".into(), b"application/json".to_vec()));
    let out = evaluate(&set, &post);
    assert_eq!((out.tx_number("a"), out.tx_number("b")), (1, 1));
    assert_eq!(out.matched_ids(), vec![10], "the next link reads the starter's setvar (CRS 920420)");
    post.headers[2].1 = b"text/x-odd".to_vec();
    let out = evaluate(&set, &post);
    assert_eq!((out.matched_ids(), out.tx_number("odd_type")), (vec![12], 1));
    let out = evaluate(&set, &get("/admin/x"));
    assert_eq!(out.matched_ids(), vec![11]);
    assert_eq!(out.tx.get("admin").map(Vec::as_slice), Some(&b"admin"[..]), "TX:1 from the link's capture");
    assert!(ids(&set, &get("/user")).is_empty());
}

#[test]
fn skip_after_jumps_past_the_marker_and_phases_run_in_order() {
    let set = load(
        r#"
SecRule ARGS:x "@eq 1" "id:20,phase:2,pass,skipAfter:END-X"
SecAction "id:21,phase:2,pass"
SecMarker END-X
SecAction "id:22,phase:2,pass"
SecAction "id:23,phase:1,pass"
"#,
    );
    assert_eq!(ids(&set, &get("/?x=1")), vec![23, 20, 22]);
    assert_eq!(ids(&set, &get("/?x=2")), vec![23, 21, 22]);
}

#[test]
fn counts_exclusions_and_selectors() {
    let set = load(
        r#"
SecRule &ARGS "@gt 2" "id:30,phase:2,pass"
SecRule ARGS|!ARGS:/^safe_/|!ARGS:ok "@rx bad" "id:31,phase:2,pass"
SecRule REQUEST_HEADERS:user-agent "@beginsWith curl" "id:32,phase:1,pass"
SecRule &REQUEST_HEADERS:X-Missing "@eq 0" "id:33,phase:1,pass"
SecRule REQUEST_COOKIES_NAMES "@within sid theme" "id:34,phase:1,pass"
"#,
    );
    assert_eq!(ids(&set, &get("/?safe_a=bad&ok=bad")), vec![32, 33]);
    assert_eq!(ids(&set, &get("/?a=1&b=2&c=bad")), vec![32, 33, 30, 31]);
    let mut r = get("/");
    r.headers.push(("Cookie".into(), b"sid=1".to_vec()));
    assert_eq!(ids(&set, &r), vec![32, 33, 34]);
}

#[test]
fn negated_operators_need_a_value_to_negate() {
    let set = load(
        r#"
SecRule REQUEST_HEADERS:Content-Type "!@rx ^text/" "id:40,phase:1,pass"
SecRule REQUEST_METHOD "!@within GET HEAD" "id:41,phase:1,pass"
"#,
    );
    assert!(ids(&set, &get("/")).is_empty(), "no Content-Type: nothing to negate");
    let mut r = get("/");
    r.method = "PUT".into();
    r.headers.push(("Content-Type".into(), b"application/xml".to_vec()));
    assert_eq!(ids(&set, &r), vec![40, 41]);
}

#[test]
fn ctl_removes_rules_and_targets_and_stops_the_engine() {
    let set = load(
        r#"
SecRule REQUEST_FILENAME "@streq /wp-admin" "id:50,phase:1,pass,ctl:ruleRemoveById=52,ctl:ruleRemoveTargetById=53;ARGS:content"
SecRule REQUEST_FILENAME "@streq /off" "id:51,phase:1,pass,ctl:ruleEngine=Off"
SecRule ARGS "@rx x" "id:52,phase:2,pass,tag:'attack-x'"
SecRule ARGS "@rx x" "id:53,phase:2,pass"
SecRule REQUEST_FILENAME "@streq /tag" "id:54,phase:1,pass,ctl:ruleRemoveByTag=attack-x,ctl:ruleRemoveTargetByTag=attack-x;ARGS:content"
"#,
    );
    assert_eq!(ids(&set, &get("/?content=x")), vec![52, 53]);
    assert_eq!(ids(&set, &get("/wp-admin?content=x")), vec![50]);
    assert_eq!(ids(&set, &get("/wp-admin?content=x&other=x")), vec![50, 53]);
    assert_eq!(ids(&set, &get("/off?content=x")), vec![51]);
    assert_eq!(ids(&set, &get("/tag?content=x")), vec![54, 53]);
}

#[test]
fn load_time_removal_and_target_updates() {
    let set = load(
        r#"
SecRule ARGS "@rx x" "id:60,phase:2,pass"
SecRule ARGS "@rx x" "id:61,phase:2,pass,tag:'t1'"
SecRule ARGS "@rx x" "id:62,phase:2,pass"
SecRuleRemoveById 60
SecRuleRemoveByTag t1
SecRuleUpdateTargetById 62 "!ARGS:skip"
"#,
    );
    assert_eq!(set.rule_count(), 1);
    assert!(ids(&set, &get("/?skip=x")).is_empty());
    assert_eq!(ids(&set, &get("/?skip=x&y=x")), vec![62]);
}

#[test]
fn default_actions_resolve_block_and_detection_only_does_not_enforce() {
    let set = load(
        r#"
SecDefaultAction "phase:2,log,auditlog,deny,status:403"
SecRule ARGS "@rx x" "id:70,phase:2,block"
SecAction "id:71,phase:2,pass"
"#,
    );
    let out = evaluate(&set, &get("/?a=x"));
    assert_eq!(out.matched_ids(), vec![70], "deny stops the phase");
    assert_eq!(out.block.map(|b| b.rule_id), Some(70));
    // SecDefaultAction applies to the rules after it, not to those before.
    let set = load("SecRule ARGS \"@rx x\" \"id:76,phase:2,block\"\nSecDefaultAction \"phase:2,deny,t:lowercase\"\nSecRule ARGS \"@rx x\" \"id:77,phase:2,block\"\nSecRule ARGS \"@rx y\" \"id:78,phase:2,pass\"\n");
    let out = evaluate(&set, &get("/?a=xY"));
    assert_eq!(out.matched_ids(), vec![76, 77], "76 passes (default pass), 77 denies");
    assert_eq!(out.block.map(|b| b.rule_id), Some(77));
    let out = evaluate(&set, &get("/?a=Y"));
    assert_eq!(out.matched_ids(), vec![78], "78 inherits t:lowercase");
    let set = load("SecRuleEngine DetectionOnly\nSecRule ARGS \"@rx x\" \"id:72,phase:2,deny\"\nSecAction \"id:73,phase:2,pass\"\n");
    let out = evaluate(&set, &get("/?a=x"));
    assert_eq!(out.matched_ids(), vec![72, 73]);
    assert_eq!(out.block.map(|b| b.enforced), Some(false));
    let set = load("SecRule ARGS \"@rx x\" \"id:74,phase:1,allow\"\nSecAction \"id:75,phase:2,deny\"\n");
    let out = evaluate(&set, &get("/?a=x"));
    assert!(out.allowed && out.block.is_none());
}

#[test]
fn multi_match_tries_every_transformation_step() {
    let set = load(
        r#"
SecRule ARGS "@streq %41" "id:80,phase:2,pass,multiMatch,t:none,t:urlDecode"
SecRule ARGS "@streq %41" "id:81,phase:2,pass,t:none,t:urlDecode"
"#,
    );
    // The argument is `%2541` after parsing, `%41` after t:urlDecode: both rules see that.
    assert_eq!(ids(&set, &get("/?a=%252541")), vec![80, 81]);
    // The argument is `%41`, `A` after t:urlDecode: only multiMatch also tries the raw value.
    assert_eq!(ids(&set, &get("/?a=%2541")), vec![80]);
}

#[test]
fn setvar_delete_subtract_and_macros() {
    let set = load(
        r#"
SecAction "id:90,phase:1,pass,setvar:tx.n=10,setvar:tx.n=-3,setvar:tx.flag,setvar:'tx.host=%{request_headers.host}',setvar:tx.rid=%{rule.id}"
SecAction "id:91,phase:1,pass,setvar:!tx.flag,setvar:'tx.ip=%{REMOTE_ADDR}'"
SecRule REQUEST_HEADERS:Host "@endsWith %{tx.host}" "id:92,phase:1,pass"
"#,
    );
    let out = evaluate(&set, &get("/"));
    assert_eq!(out.tx_number("n"), 7);
    assert!(!out.tx.contains_key("flag"));
    assert_eq!(out.tx.get("host").map(Vec::as_slice), Some(&b"example.com"[..]));
    assert_eq!(out.tx.get("ip").map(Vec::as_slice), Some(&b"10.1.2.3"[..]));
    assert_eq!(out.tx_number("rid"), 90);
    assert_eq!(out.matched_ids(), vec![90, 91, 92]);
}

#[test]
fn body_processor_ctl_and_xml_and_files() {
    let set = load(
        r#"
SecRule REQUEST_HEADERS:Content-Type "@rx ^text/plain" "id:100,phase:1,pass,ctl:requestBodyProcessor=URLENCODED"
SecRule ARGS_POST:q "@streq 1" "id:101,phase:2,pass"
SecRule XML:/* "@contains evil" "id:102,phase:2,pass"
SecRule FILES "@endsWith .php" "id:103,phase:2,pass"
SecRule MULTIPART_PART_HEADERS "@rx ^content-type\s*:\s*text/plain;\s*charset=utf-7" "id:104,phase:2,pass,t:lowercase"
SecRule FILES_SIZES "@gt 4" "id:105,phase:2,pass"
SecRule FILES_COMBINED_SIZE "@gt 100" "id:106,phase:2,pass"
"#,
    );
    let mut r = get("/");
    r.method = "POST".into();
    r.headers.push(("Content-Type".into(), b"text/plain".to_vec()));
    r.body = b"q=1".to_vec();
    assert_eq!(ids(&set, &r), vec![100, 101]);
    r.headers[2].1 = b"application/xml".to_vec();
    r.body = b"<a><b>evil</b></a>".to_vec();
    assert_eq!(ids(&set, &r), vec![102]);
    r.headers[2].1 = b"multipart/form-data; boundary=B".to_vec();
    r.body =
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"s.php\"\r\n\r\n<?php\r\n--B--\r\n".to_vec();
    assert_eq!(ids(&set, &r), vec![103, 105], "a 5-byte file: FILES_SIZES > 4, combined not > 100");
    // A part's own headers (CRS 922110 looks for a UTF-7 charset there).
    r.body = b"--B\r\nContent-Disposition: form-data; name=\"t\"\r\nContent-Type: Text/Plain; Charset=UTF-7\r\n\r\n+ADw-\r\n--B--\r\n".to_vec();
    assert_eq!(ids(&set, &r), vec![104]);
}

#[test]
fn load_errors_carry_file_line_and_id_and_never_skip_silently() {
    let set = load_text(
        "bad.conf",
        "SecRule ARGS \"@rx (a)\\1\" \"id:1,phase:2,pass\"\n\nSecRule NOPE \"@rx a\" \"id:2\"\nSecRule ARGS \"@rbl x\" \"id:3\"\nSecRule ARGS \"@rx a\" \"id:4,exec:/bin/x\"\nSecRule ARGS \"@rx a\" \"phase:2\"\nSecRuleScript x.lua\nSecRule ARGS \"@rx a\" \"id:5,chain\"\n  SecRule ARGS \"@lookaround(?=x)\" \"t:md5\"\nSecRule ARGS \"@rx ok\" \"id:6\"\n",
    );
    let got: Vec<(usize, Option<u32>, LoadErrorKind)> =
        set.errors.iter().map(|e| (e.origin.line, e.rule_id, e.kind)).collect();
    assert_eq!(
        got,
        vec![
            (1, Some(1), LoadErrorKind::UnsupportedRegex),
            (3, Some(2), LoadErrorKind::UnsupportedVariable),
            (4, Some(3), LoadErrorKind::UnsupportedOperator),
            (5, Some(4), LoadErrorKind::UnsupportedAction),
            (6, None, LoadErrorKind::InvalidValue),
            (7, None, LoadErrorKind::UnsupportedDirective),
            (9, Some(5), LoadErrorKind::UnsupportedTransform),
        ]
    );
    assert!(set.errors.iter().all(|e| e.origin.file == "bad.conf"));
    assert_eq!(
        set.rules().map(|r| r.id).collect::<Vec<_>>(),
        vec![6],
        "a broken link drops its chain, not the next rule"
    );
}

#[test]
fn loading_any_prefix_of_a_rule_file_never_panics() {
    // Every truncation of a rule text exercises unterminated quotes, selectors, chains and
    // continuations; loading must report, never panic.
    let text = "SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/|&ARGS:x|XML:/* \"!@rx ^[\\w\\]{]+(?i:a’)\\s*+$\" \\\n  \"id:7,phase:2,block,t:none,t:urlDecodeUni,msg:'a, b',setvar:'tx.s=+%{tx.c}',ctl:ruleRemoveTargetById=1;ARGS:y,chain\"\n    SecRule TX:1 \"@pm a b\" \"setvar:!tx.z\"\nSecMarker 'END'\n";
    for end in (0..=text.len()).filter(|&e| text.is_char_boundary(e)) {
        let set = load_text("prefix.conf", &text[..end]);
        let _ = evaluate(&set, &get("/?x=a&y=%27"));
    }
}

#[test]
fn remove_ids_leaves_out_rules_and_forgives_their_load_errors() {
    let mut set = load_text(
        "fixture.conf",
        r#"
SecRule ARGS "@rx x" "id:80,phase:2,pass"
SecRule ARGS "@rx (?=x)" "id:81,phase:2,pass"
SecRule ARGS "@rx x" "id:82,phase:2,pass"
SecRule ARGS "@rbl x" "id:90,phase:2,pass"
SecRuleUpdateTargetById 81 "!ARGS:skip"
"#,
    );
    // The target update of the rule that failed to load is named after that rule.
    assert_eq!(set.errors.iter().map(|e| e.rule_id).collect::<Vec<_>>(), vec![Some(81), Some(90), Some(81)]);
    set.remove_ids(&[(81, 82)]);
    assert_eq!(set.errors.iter().map(|e| e.rule_id).collect::<Vec<_>>(), vec![Some(90)]);
    assert_eq!(ids(&set, &get("/?a=x")), vec![80]);
}

#[test]
fn nolog_rules_match_but_are_not_reported_as_detections() {
    let set = load(
        r#"
SecDefaultAction "phase:1,nolog,pass"
SecRule ARGS "@rx x" "id:91,phase:1,pass"
SecRule ARGS "@rx x" "id:92,phase:1,pass,log"
SecRule ARGS "@rx x" "id:93,phase:2,pass"
SecRule ARGS "@rx x" "id:94,phase:2,pass,nolog"
"#,
    );
    let out = evaluate(&set, &get("/?a=x"));
    let logged: Vec<(u32, bool)> = out.matched.iter().map(|m| (m.id, m.logged)).collect();
    assert_eq!(logged, vec![(91, false), (92, true), (93, true), (94, false)]);
}
