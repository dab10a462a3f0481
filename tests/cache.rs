//! The response cache on one node: RFC 9111 rules, Vary, HEAD, conditional requests, large
//! bodies, invalidation (with `Location`/`Content-Location`), purge (by URL, key and tag; hard
//! and soft), tag bounds, eviction, reload and directive errors — real nginx and the
//! harness's origin, which counts its requests and sets the headers each case needs.

#[path = "support/cache_origin.rs"]
mod cache_origin;
mod support;

use cache_origin::{get, hits, origin, start, wait_stores, LOCATIONS};
use support::{assert_config_error, http_get, http_request, Nginx};

#[test]
fn miss_then_hit_with_age_and_cache_status() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/max-age", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("X-Cache"), Some("MISS"));
    assert_eq!(first.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200; stored"));
    assert_eq!(first.header("X-Key"), Some("httplocalhost/max-age"));
    wait_stores(nginx.port, 1);
    let second = get(nginx.port, "/max-age", &[]);
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body, "the stored body");
    assert_eq!(second.header("X-Cache"), Some("HIT"));
    assert!(second.header("Cache-Status").is_some_and(|v| v.starts_with("nginx-shield; hit; ttl=")), "{second:?}");
    assert!(second.header("Age").is_some_and(|a| a.parse::<u32>().is_ok_and(|a| a < 60)));
    assert_eq!(second.header("Content-Type"), Some("text/plain"));
    assert_eq!(second.header("Cache-Control"), Some("max-age=60"));
    for name in ["Content-Type", "Content-Length", "Cache-Status", "Age", "Date", "Server", "Cache-Control"] {
        assert_eq!(second.headers_all(name).len(), 1, "one {name}: {:?}", second.headers);
    }
    assert_eq!(hits(&origin, "/max-age"), 1, "one origin request");
}

#[test]
fn explicit_freshness_s_maxage_and_expires_are_stored() {
    let origin = origin();
    let nginx = start(&origin);
    for (i, path) in ["/s-maxage", "/expires"].iter().enumerate() {
        get(nginx.port, path, &[]);
        wait_stores(nginx.port, i as u64 + 1);
        assert_eq!(get(nginx.port, path, &[]).header("X-Cache"), Some("HIT"), "{path}");
        assert_eq!(hits(&origin, path), 1, "{path}");
    }
}

#[test]
fn responses_a_shared_cache_must_not_store_are_forwarded_every_time() {
    let origin = origin();
    let nginx = start(&origin);
    let cases: [(&str, &[(&str, &str)]); 7] = [
        ("/no-store", &[]),
        ("/private", &[]),
        ("/cookie", &[]),
        ("/auth", &[("Authorization", "Basic dTpw")]),
        ("/expired", &[]),
        ("/vary-star", &[]),
        ("/plain", &[]),
    ];
    for (path, headers) in cases {
        let a = get(nginx.port, path, headers);
        assert_eq!(a.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200"), "{path}");
        let b = get(nginx.port, path, headers);
        assert_eq!(b.header("X-Cache"), Some("MISS"), "{path}");
        assert_ne!(a.body, b.body, "{path}: a fresh body each time");
        assert_eq!(hits(&origin, path), 2, "{path}");
    }
    assert!(get(nginx.port, "/cookie", &[]).header("Set-Cookie").is_some(), "the cookie reaches its client");
    // Authorization with `public`: shareable.
    let auth = [("Authorization", "Basic dTpw")];
    get(nginx.port, "/auth-public", &auth);
    wait_stores(nginx.port, 1);
    assert_eq!(get(nginx.port, "/auth-public", &auth).header("X-Cache"), Some("HIT"));
}

#[test]
fn set_cookie_is_stripped_from_the_stored_copy_when_configured() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/strip/cookie", &[]);
    assert_eq!(first.header("Set-Cookie"), Some("session=secret"), "the origin's client gets its cookie");
    wait_stores(nginx.port, 1);
    let second = get(nginx.port, "/strip/cookie", &[]);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("Set-Cookie"), None, "never replayed to another client");
    assert_eq!(hits(&origin, "/cookie"), 1);
}

#[test]
fn shield_cache_valid_applies_only_without_explicit_freshness() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/valid/plain", &[]);
    get(nginx.port, "/valid/missing", &[]);
    wait_stores(nginx.port, 2);
    assert_eq!(get(nginx.port, "/valid/plain", &[]).header("Cache-Status").map(|s| s.contains("hit")), Some(true));
    let missing = get(nginx.port, "/valid/missing", &[]);
    assert_eq!((missing.status, missing.header("Cache-Status").map(|s| s.contains("hit"))), (404, Some(true)));
    // `no-store` from the origin still wins over shield_cache_valid.
    get(nginx.port, "/valid/no-store", &[]);
    get(nginx.port, "/valid/no-store", &[]);
    assert_eq!((hits(&origin, "/plain"), hits(&origin, "/missing"), hits(&origin, "/no-store")), (1, 1, 2));
}

#[test]
fn shield_cache_no_store_sees_the_response_and_shield_cache_off_disables() {
    let origin = origin();
    let nginx = start(&origin);
    for _ in 0..2 {
        let r = get(nginx.port, "/nostore/never", &[]);
        assert_eq!(r.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200"));
        let off = get(nginx.port, "/off/max-age", &[]);
        assert_eq!((off.header("Cache-Status"), off.header("X-Cache")), (None, None));
    }
    assert_eq!((hits(&origin, "/never"), hits(&origin, "/max-age")), (2, 2));
}

#[test]
fn vary_selects_variants_by_the_named_request_header() {
    let origin = origin();
    let nginx = start(&origin);
    let en = get(nginx.port, "/vary", &[("X-Lang", "en")]);
    // Storing a variant writes the variants marker and the variant itself.
    wait_stores(nginx.port, 2);
    let fr = get(nginx.port, "/vary", &[("X-Lang", "fr")]);
    assert_eq!(fr.header("X-Cache"), Some("MISS"));
    assert!(fr.header("Cache-Status").is_some_and(|s| s.contains("fwd=vary-miss")), "{fr:?}");
    wait_stores(nginx.port, 4);
    let en2 = get(nginx.port, "/vary", &[("X-Lang", "en")]);
    let fr2 = get(nginx.port, "/vary", &[("X-Lang", "fr")]);
    assert_eq!((en2.header("X-Cache"), fr2.header("X-Cache")), (Some("HIT"), Some("HIT")));
    assert_eq!((en2.body, fr2.body), (en.body.clone(), fr.body.clone()));
    assert!(en.body_str().contains(" en #") && fr.body_str().contains(" fr #"));
    assert_eq!(hits(&origin, "/vary"), 2);
}

#[test]
fn head_is_served_from_the_get_entry() {
    let origin = origin();
    let nginx = start(&origin);
    let get_resp = get(nginx.port, "/head", &[]);
    wait_stores(nginx.port, 1);
    let head = http_request(nginx.port, "HEAD", "/head", &[], None);
    assert_eq!((head.status, head.header("X-Cache")), (200, Some("HIT")));
    assert!(head.body.is_empty());
    assert_eq!(head.header("Content-Length"), Some(get_resp.body.len().to_string().as_str()));
    assert_eq!(hits(&origin, "/head"), 1);
}

#[test]
fn a_clients_conditional_request_is_answered_304_from_the_cache() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/etag", &[]);
    assert_eq!(first.header("ETag"), Some("\"v1\""));
    wait_stores(nginx.port, 1);
    let inm = get(nginx.port, "/etag", &[("If-None-Match", "\"v1\"")]);
    assert_eq!((inm.status, inm.header("X-Cache")), (304, Some("HIT")));
    assert!(inm.body.is_empty());
    let ims = get(nginx.port, "/etag", &[("If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")]);
    assert_eq!(ims.status, 304);
    let other = get(nginx.port, "/etag", &[("If-None-Match", "\"v2\"")]);
    assert_eq!((other.status, &other.body), (200, &first.body));
    assert_eq!(other.header("Last-Modified"), Some("Mon, 01 Jan 2024 00:00:00 GMT"));
    assert_eq!(hits(&origin, "/etag"), 1);
}

#[test]
fn a_body_above_max_entry_passes_intact_and_uncached_and_a_spooled_one_is_stored() {
    let origin = origin();
    let nginx = start(&origin);
    let a = get(nginx.port, "/big", &[]);
    let b = get(nginx.port, "/big", &[]);
    assert_eq!((a.status, a.body.len(), b.body.len()), (200, 200_000 + 2, 200_000 + 2));
    assert!(a.body.starts_with(b"abcdefghijklmnopqrstuvwxyzabc"));
    assert_eq!(a.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200"));
    assert_eq!(hits(&origin, "/big"), 2);
    // 48 KB through 4 KB of proxy buffers to a slow client: spooled to a temporary file.
    let m = get(nginx.port, "/spool/mid", &[]);
    wait_stores(nginx.port, 1);
    let m2 = get(nginx.port, "/spool/mid", &[]);
    assert_eq!(m2.header("X-Cache"), Some("HIT"));
    assert_eq!(m2.body, m.body, "byte for byte");
    assert_eq!(hits(&origin, "/mid"), 1);
}

#[test]
fn a_successful_post_invalidates_the_uri() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/post", &[]);
    wait_stores(nginx.port, 1);
    assert_eq!(get(nginx.port, "/post", &[]).header("X-Cache"), Some("HIT"));
    let post = http_request(nginx.port, "POST", "/post", &[], Some(b"x"));
    assert_eq!(post.status, 200);
    assert_eq!(post.header("X-Cache"), None, "not a cache lookup");
    assert_eq!(get(nginx.port, "/post", &[]).header("X-Cache"), Some("MISS"), "invalidated");
    assert_eq!(hits(&origin, "/post"), 3);
}

#[test]
fn request_directives_and_bypass() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/max-age", &[]);
    wait_stores(nginx.port, 1);
    let no_cache = get(nginx.port, "/max-age", &[("Cache-Control", "no-cache")]);
    assert_eq!(no_cache.header("X-Cache"), Some("REVALIDATE"));
    assert!(no_cache.header("Cache-Status").is_some_and(|s| s.contains("fwd=request") && s.ends_with("stored")));
    wait_stores(nginx.port, 2);
    let after = get(nginx.port, "/max-age", &[]);
    assert_eq!((after.header("X-Cache"), &after.body), (Some("HIT"), &no_cache.body), "the refreshed copy");
    let max_age0 = get(nginx.port, "/max-age", &[("Cache-Control", "max-age=0")]);
    assert_eq!(max_age0.header("X-Cache"), Some("REVALIDATE"));
    let no_store = get(nginx.port, "/max-age", &[("Cache-Control", "no-store")]);
    assert_eq!(no_store.header("Cache-Status"), Some("nginx-shield; fwd=bypass; fwd-status=200"));
    let bypass = get(nginx.port, "/max-age", &[("X-No-Cache", "1")]);
    assert_eq!(bypass.header("X-Cache"), Some("BYPASS"));
    assert_eq!(get(nginx.port, "/max-age", &[("X-No-Cache", "0")]).header("X-Cache"), Some("HIT"), "\"0\" is false");
    assert_eq!(hits(&origin, "/max-age"), 5);
}

#[test]
fn entries_survive_a_reload() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/max-age", &[]);
    wait_stores(nginx.port, 1);
    nginx.reload();
    let after = get(nginx.port, "/max-age", &[]);
    assert_eq!((after.header("X-Cache"), &after.body), (Some("HIT"), &first.body));
    assert_eq!(hits(&origin, "/max-age"), 1);
}

#[test]
fn bad_directive_values_fail_nginx_t() {
    let server = |loc: &str| format!("server {{ listen 127.0.0.1:1; location / {{ {loc} }} }}");
    let zone = "shield_cache_zone zone=c:1m;";
    assert_config_error("shield_cache_zone zone=c:100k;", "zone \"c\" is too small");
    assert_config_error("shield_cache_zone zone=c:1m max_entry=100;", "invalid max_entry \"100\"");
    assert_config_error("shield_cache_zone zone=c:1m max_entry=512k;", "at most a quarter");
    assert_config_error("shield_cache_zone zone=c:32g;", "it must be at most 16g");
    assert_config_error("shield_cache_zone size=1m;", "invalid parameter \"size=1m\"");
    assert_config_error("shield_cache_zone max_entry=1k;", "\"shield_cache_zone\" must have \"zone\" parameter");
    assert_config_error(&format!("{zone} {zone}"), "zone \"c\" is duplicate");
    assert_config_error(&format!("{zone} {}", server("shield_cache zone=d;")), "unknown zone \"d\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache on;")), "invalid parameter \"on\"");
    assert_config_error(
        &format!("{zone} {}", server("shield_cache zone=c; shield_cache off;")),
        "\"shield_cache\" directive is duplicate",
    );
    assert_config_error(&format!("{zone} {}", server("shield_cache_valid 200 0s;")), "invalid time \"0s\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_valid 200 2y;")), "invalid time \"2y\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_valid 99 1m;")), "\"99\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_strip_set_cookie maybe;")), "maybe");
    assert_config_error("shield_cache_zone zone=c:1m backend=redis;", "there is no \"shield_redis\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_lock on timeout=0s;")), "invalid timeout \"0s\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_lock on timeout=2m;")), "between 1ms and 60s");
    assert_config_error(&format!("{zone} {}", server("shield_cache_lock off timeout=1s;")), "invalid parameter");
    assert_config_error(&format!("{zone} {}", server("shield_cache_use_stale http_404;")), "\"http_404\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_use_stale error off;")), "\"off\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_purge zone=x;")), "unknown zone \"x\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_purge yes;")), "invalid parameter \"yes\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_purge off soft;")), "invalid parameter \"soft\"");
    assert_config_error(&format!("{zone} {}", server("shield_cache_purge on hard;")), "invalid parameter \"hard\"");
    let tags = |args: &str| format!("{zone} {}", server(&format!("shield_cache_tags_header {args};")));
    assert_config_error(&tags("Cache-Tag max_tags=0"), "invalid max_tags \"0\", it must be between 1 and 128");
    assert_config_error(&tags("Cache-Tag max_tags=129"), "between 1 and 128");
    assert_config_error(
        &tags("Cache-Tag max_length=1025"),
        "invalid max_length \"1025\", it must be between 1 and 1024",
    );
    assert_config_error(&tags("Cache-Tag max_length=x"), "invalid max_length \"x\"");
    assert_config_error(&tags("Cache-Tag size=1"), "invalid parameter \"size=1\"");
    assert_config_error(&tags("\"Cache Tag\""), "invalid header name");
    assert_config_error(&tags("off max_tags=1"), "invalid parameter \"max_tags=1\"");
    assert_config_error("shield_cache_zone zone=c:1m max_tag_entries=0;", "invalid max_tag_entries \"0\"");
    assert_config_error("shield_cache_zone zone=c:1m max_tag_entries=1000001;", "between 1 and 1000000");
}

#[test]
fn purge_by_url_and_by_key() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/max-age", &[]);
    get(nginx.port, "/etag", &[]);
    wait_stores(nginx.port, 2);
    let purge = http_request(nginx.port, "PURGE", "/max-age", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true}\n"));
    assert_eq!(http_request(nginx.port, "PURGE", "/max-age", &[], None).status, 404, "nothing left");
    assert_eq!(get(nginx.port, "/max-age", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(nginx.port, "/etag", &[]).header("X-Cache"), Some("HIT"), "other entries stay");
    // By exact key, at the purge endpoint.
    let by_key = http_request(nginx.port, "DELETE", "/purge?key=httplocalhost%2Fetag", &[], None);
    assert_eq!(by_key.status, 200, "{by_key:?}");
    assert_eq!(get(nginx.port, "/etag", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(nginx.port, "/purge?key=httplocalhost%2Fetag", &[]).status, 405);
    assert_eq!(http_request(nginx.port, "PURGE", "/purge", &[], None).status, 400);
    assert_eq!(hits(&origin, "/max-age"), 2);
    let metrics = http_get(nginx.port, "/metrics").body_str().to_string();
    assert!(metrics.contains("shield_cache_purges_total{zone=\"c\",kind=\"url\",mode=\"hard\"} 2\n"), "{metrics}");
    assert!(metrics.contains("shield_cache_purges_total{zone=\"c\",kind=\"key\",mode=\"hard\"} 1\n"), "{metrics}");
}

/// A zone far smaller than what is stored keeps working: the least recently used entries
/// make room, stores never fail for lack of it.
#[test]
fn the_zone_evicts_least_recently_used_entries() {
    let origin = origin();
    let http =
        format!("shield_cache_zone zone=c:256k max_entry=64k;\n server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}");
    let nginx = Nginx::builder().var("ORIGIN", origin.port).http(&http).start();
    for i in 0..20 {
        get(nginx.port, &format!("/mid?{i}"), &[]);
        wait_stores(nginx.port, i + 1);
    }
    let metrics = http_get(nginx.port, "/metrics");
    assert!(metrics.body_str().contains("shield_cache_store_failures_total{zone=\"c\"} 0\n"));
    assert_eq!(get(nginx.port, "/mid?19", &[]).header("X-Cache"), Some("HIT"), "the newest stays");
    assert_eq!(get(nginx.port, "/mid?0", &[]).header("X-Cache"), Some("MISS"), "the oldest was evicted");
}

/// `shield_cache_tags_header`: the origin tags entries; a purge by tag drops exactly the
/// entries carrying one of the tags (here, in the zone; `cache_shared.rs` does it in Redis).
#[test]
fn purge_by_tag_drops_every_entry_with_the_tag_and_only_those() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/tagged/1?t=a,b", &[]);
    get(nginx.port, "/tagged/2?t=b+c", &[]);
    get(nginx.port, "/tagged/3?t=c", &[]);
    get(nginx.port, "/vary", &[("X-Lang", "en")]);
    wait_stores(nginx.port, 5);
    for p in ["/tagged/1?t=a,b", "/tagged/2?t=b+c", "/tagged/3?t=c"] {
        assert_eq!(get(nginx.port, p, &[]).header("X-Cache"), Some("HIT"), "{p}");
    }
    let purge = http_request(nginx.port, "PURGE", "/purge?tag=b", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true,\"entries\":2}\n"));
    assert_eq!(get(nginx.port, "/tagged/1?t=a,b", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(nginx.port, "/tagged/2?t=b+c", &[]).header("X-Cache"), Some("MISS"));
    assert_eq!(get(nginx.port, "/tagged/3?t=c", &[]).header("X-Cache"), Some("HIT"), "another tag stays");
    assert_eq!(get(nginx.port, "/vary", &[("X-Lang", "en")]).header("X-Cache"), Some("HIT"), "untagged stays");
    // Several tags at once, URL-encoded; a tag nobody carries is a 404.
    wait_stores(nginx.port, 7);
    let both = http_request(nginx.port, "DELETE", "/purge?tag=a%20c", &[], None);
    assert_eq!((both.status, both.body_str()), (200, "{\"purged\":true,\"entries\":3}\n"));
    let none = http_request(nginx.port, "PURGE", "/purge?tag=nope", &[], None);
    assert_eq!((none.status, none.body_str()), (404, "{\"purged\":false,\"entries\":0}\n"));
    assert_eq!(http_request(nginx.port, "PURGE", "/purge?tag=", &[], None).status, 400);
    assert_eq!(http_request(nginx.port, "PURGE", "/purge?tag=a&key=x", &[], None).status, 400);
    assert_eq!((hits(&origin, "/tagged/1"), hits(&origin, "/tagged/2"), hits(&origin, "/tagged/3")), (2, 2, 1));
    let metrics = http_get(nginx.port, "/metrics").body_str().to_string();
    assert!(metrics.contains("shield_cache_purges_total{zone=\"c\",kind=\"tag\",mode=\"hard\"} 3\n"), "{metrics}");
    assert!(metrics.contains("shield_cache_tag_purged_entries_total{zone=\"c\"} 5\n"), "{metrics}");
}

/// Tag headers beyond the location's bounds are not stored (they would escape a purge); the
/// `Surrogate-Key` spelling works the same.
#[test]
fn tag_headers_beyond_their_bounds_are_not_stored() {
    let origin = origin();
    let nginx = start(&origin);
    get(nginx.port, "/skeyed/ok?t=s1+s2", &[]);
    wait_stores(nginx.port, 1);
    assert_eq!(get(nginx.port, "/skeyed/ok?t=s1+s2", &[]).header("X-Cache"), Some("HIT"));
    for p in ["/skeyed/many?t=s1+s2+s3", "/skeyed/long?t=toolongtag"] {
        let r = get(nginx.port, p, &[]);
        assert_eq!(r.header("Cache-Status"), Some("nginx-shield; fwd=uri-miss; fwd-status=200"), "{p}");
        assert_eq!(get(nginx.port, p, &[]).header("X-Cache"), Some("MISS"), "{p}");
    }
    let metrics = http_get(nginx.port, "/metrics").body_str().to_string();
    for reason in ["too_many", "too_long"] {
        let want = format!("shield_cache_tag_rejects_total{{zone=\"c\",reason=\"{reason}\"}} 2\n");
        assert!(metrics.contains(&want), "{want} in {metrics}");
    }
    let purge = http_request(nginx.port, "PURGE", "/purge?tag=s2", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true,\"entries\":1}\n"));
    assert_eq!(get(nginx.port, "/skeyed/ok?t=s1+s2", &[]).header("X-Cache"), Some("MISS"));
}

/// A tag indexes at most `max_tag_entries` live entries: past that, a new entry with the tag
/// is not stored.
#[test]
fn a_full_tag_refuses_new_entries() {
    let origin = origin();
    let http = format!(
        "shield_cache_zone zone=c:1m max_entry=64k max_tag_entries=2;\n server {{ listen 127.0.0.1:%%PORT%%; {LOCATIONS} }}"
    );
    let nginx = support::Nginx::builder().var("ORIGIN", origin.port).http(&http).start();
    get(nginx.port, "/tagged/1?t=x", &[]);
    get(nginx.port, "/tagged/2?t=x", &[]);
    wait_stores(nginx.port, 2);
    get(nginx.port, "/tagged/3?t=x", &[]);
    assert_eq!(get(nginx.port, "/tagged/3?t=x", &[]).header("X-Cache"), Some("MISS"), "not stored");
    assert_eq!(get(nginx.port, "/tagged/1?t=x", &[]).header("X-Cache"), Some("HIT"), "a member re-stored counts once");
    let metrics = http_get(nginx.port, "/metrics").body_str().to_string();
    assert!(metrics.contains("shield_cache_tag_rejects_total{zone=\"c\",reason=\"full\"} 2\n"), "{metrics}");
    let purge = http_request(nginx.port, "PURGE", "/purge?tag=x", &[], None);
    assert_eq!(purge.body_str(), "{\"purged\":true,\"entries\":2}\n");
}

/// Soft purge: the entry is stale at once, never served as fresh again: the next request
/// revalidates it (its validator goes to the origin, whose 304 refreshes it), or, the origin
/// failing, it may still answer (`shield_cache_use_stale`).
#[test]
fn soft_purge_marks_entries_stale_instead_of_dropping_them() {
    let origin = origin();
    let nginx = start(&origin);
    let first = get(nginx.port, "/soft/soft-etag", &[]);
    get(nginx.port, "/soft/cached/x", &[]);
    get(nginx.port, "/soft/soft-flaky", &[]);
    wait_stores(nginx.port, 3);
    // By URL, in a location with `shield_cache_purge on soft`.
    let purge = http_request(nginx.port, "PURGE", "/soft/soft-etag", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true}\n"));
    let r = get(nginx.port, "/soft/soft-etag", &[]);
    assert_eq!((r.header("X-Cache"), &r.body), (Some("REVALIDATED"), &first.body), "{r:?}");
    assert_eq!(r.header("X-Revalidated"), Some("yes"));
    wait_stores(nginx.port, 4);
    assert_eq!(get(nginx.port, "/soft/soft-etag", &[]).header("X-Cache"), Some("HIT"), "fresh again after the 304");
    // No validator: the stale entry is fetched anew.
    let x = get(nginx.port, "/soft/cached/x", &[]);
    assert_eq!(x.header("X-Cache"), Some("HIT"));
    let purge = http_request(nginx.port, "PURGE", "/purge-soft?key=httplocalhost%2Fsoft%2Fcached%2Fx", &[], None);
    assert_eq!(purge.status, 200);
    let x2 = get(nginx.port, "/soft/cached/x", &[]);
    assert_eq!(x2.header("X-Cache"), Some("EXPIRED"));
    assert_ne!(x2.body, x.body);
    // By tag: the failing origin's entry answers stale, never as a hit.
    let purge = http_request(nginx.port, "PURGE", "/purge-soft?tag=soft", &[], None);
    assert_eq!((purge.status, purge.body_str()), (200, "{\"purged\":true,\"entries\":2}\n"));
    let flaky = get(nginx.port, "/soft/soft-flaky", &[]);
    assert_eq!((flaky.status, flaky.header("X-Cache")), (200, Some("STALE")), "{flaky:?}");
    assert_eq!(get(nginx.port, "/soft/soft-etag", &[]).header("X-Cache"), Some("REVALIDATED"));
    assert_eq!((hits(&origin, "/soft-etag"), hits(&origin, "/cached/x"), hits(&origin, "/soft-flaky")), (3, 2, 2));
    let metrics = http_get(nginx.port, "/metrics").body_str().to_string();
    assert!(metrics.contains("shield_cache_purges_total{zone=\"c\",kind=\"url\",mode=\"soft\"} 1\n"), "{metrics}");
    assert!(metrics.contains("shield_cache_purges_total{zone=\"c\",kind=\"tag\",mode=\"soft\"} 1\n"), "{metrics}");
}

/// RFC 9111 §4.4: a successful unsafe request invalidates the same-origin URIs of its
/// `Location` and `Content-Location` too, never another origin's.
#[test]
fn a_successful_post_invalidates_its_location_and_content_location() {
    let origin = origin();
    let nginx = start(&origin);
    for p in ["/cached/b", "/cached/c", "/cached/d"] {
        get(nginx.port, p, &[]);
    }
    wait_stores(nginx.port, 3);
    let post = http_request(nginx.port, "POST", "/created-elsewhere", &[], Some(b"x"));
    assert_eq!(post.status, 201);
    assert_eq!(get(nginx.port, "/cached/d", &[]).header("X-Cache"), Some("HIT"), "other.example is another origin");
    let post = http_request(nginx.port, "POST", "/created", &[], Some(b"x"));
    assert_eq!(post.status, 201);
    assert_eq!(get(nginx.port, "/cached/b", &[]).header("X-Cache"), Some("MISS"), "Location");
    assert_eq!(get(nginx.port, "/cached/c", &[]).header("X-Cache"), Some("MISS"), "Content-Location");
    assert_eq!(get(nginx.port, "/cached/d", &[]).header("X-Cache"), Some("HIT"));
    let metrics = http_get(nginx.port, "/metrics").body_str().to_string();
    assert!(metrics.contains("shield_cache_invalidations_total{zone=\"c\"} 4\n"), "{metrics}");
}
