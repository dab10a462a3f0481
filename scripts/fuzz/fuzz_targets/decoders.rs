//! Every decoder and parser on arbitrary bytes: none may panic, all must stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_shield_module::filter::{extract, transform};
use ngx_http_shield_module::headers::cors;
use ngx_http_shield_module::parse;
use ngx_http_shield_module::redis::{resp, url as redis_url};

fuzz_target!(|data: &[u8]| {
    for t in [
        transform::Transform::UrlDecode,
        transform::Transform::UrlDecodeOnce,
        transform::Transform::HtmlDecode,
        transform::Transform::Lowercase,
        transform::Transform::RemoveComments,
        transform::Transform::CompressWhitespace,
        transform::Transform::RemoveControls,
        transform::Transform::NormalizePath,
        transform::Transform::Base64Decode,
        transform::Transform::JsDecode,
    ] {
        assert!(t.apply(data).len() <= transform::MAX_TRANSFORMED);
    }
    let _ = transform::has_invalid_percent(data);
    let _ = resp::decode(data);
    let mut items = Vec::new();
    for ct in [&b"application/json"[..], b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x", b"application/xml", b"text/plain"] {
        extract::body(ct, data, &mut items);
    }
    extract::query(data, &mut items);
    extract::cookies(data, &mut items);
    // No cap on the number of values (every one is inspected), but linear in the input.
    assert!(items.len() <= 16 * (data.len() + 1));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = redis_url::parse(text);
        let _ = cors::normalize_origin(text);
        let _ = parse::size(text);
        let _ = parse::time(text);
        let _ = parse::rate(text);
    }
});
