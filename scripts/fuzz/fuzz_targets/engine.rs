//! The inspection engine on arbitrary requests: no panic, bounded work, and a stable verdict
//! (inspecting the same request twice gives the same answer).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ngx_http_shield_module::filter::{check_uri, extract, rules::target, Engine, Exclusions, Item, Limits};

fuzz_target!(|data: &[u8]| {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| Engine::new(4, &[]).expect("built-in rules compile"));
    let (uri, body) = data.split_at(data.len() / 2);
    let _ = check_uri(&Limits::default(), uri);
    let mut items = vec![Item::new(target::PATH, &b""[..], uri)];
    extract::query(uri, &mut items);
    extract::body(b"application/json", body, &mut items);
    extract::body(b"multipart/form-data; boundary=--", body, &mut items);
    extract::body(b"application/xml", body, &mut items);
    extract::cookies(uri, &mut items);
    let first = engine.inspect(&items, &Exclusions::default(), u32::MAX);
    let second = engine.inspect(&items, &Exclusions::default(), u32::MAX);
    assert_eq!(first, second);
});
