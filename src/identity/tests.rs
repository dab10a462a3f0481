//! Tokens signed here with ring, against fixed test keys (testdata/, made with openssl for
//! these tests only) and keys generated per run.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

use super::cache::TokenCache;
use super::claims::{Failure, Rules, Status};
use super::csrf::{self, Verdict};
use super::keys::{Key, KeySet, Material};
use super::lookup;
use super::token::{self, Malformed, MAX_TOKEN_LEN};
use super::verify::{verify, Alg, Rejected, DEFAULT_ALGS};

const RSA_PK8: &[u8] = include_bytes!("testdata/rsa.pk8");
const EC_PK8: &[u8] = include_bytes!("testdata/ec.pk8");
const ED_PK8: &[u8] = include_bytes!("testdata/ed.pk8");
const RSA_PUB_PEM: &str = include_str!("testdata/rsa.pub.pem");
const RSA_PKCS1_PEM: &str = include_str!("testdata/rsa.pkcs1.pem");
const EC_PUB_PEM: &str = include_str!("testdata/ec.pub.pem");
const ED_PUB_PEM: &str = include_str!("testdata/ed.pub.pem");
const NOW: f64 = 1_800_000_000.0;

fn b64(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 4 / 3 + 4];
    let n = URL_SAFE_NO_PAD.encode_slice(bytes, &mut out).unwrap();
    String::from_utf8(out[..n].to_vec()).unwrap()
}

fn rsa() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(RSA_PK8).unwrap()
}

fn ec() -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, EC_PK8, &SystemRandom::new()).unwrap()
}

fn ed() -> Ed25519KeyPair {
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(ED_PK8).unwrap()
}

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// `header.payload` plus a signature made by `sign`.
fn token(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn sign_with(alg: &str, input: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" => {
            let kp = rsa();
            let mut sig = vec![0; kp.public().modulus_len()];
            let enc: &'static dyn signature::RsaEncoding = match alg {
                "RS256" => &signature::RSA_PKCS1_SHA256,
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                _ => &signature::RSA_PSS_SHA256,
            };
            kp.sign(enc, &rng, input, &mut sig).unwrap();
            sig
        }
        "ES256" => ec().sign(&rng, input).unwrap().as_ref().to_vec(),
        "EdDSA" => ed().sign(input).as_ref().to_vec(),
        "HS256" => ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET), input).as_ref().to_vec(),
        _ => Vec::new(),
    }
}

fn signed(alg: &str, kid: Option<&str>, claims: Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    token(header, claims, |input| sign_with(alg, input))
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": "https://idp.example", "aud": ["api", "web"], "exp": NOW + 60.0, "nbf": NOW - 60.0,
           "realm_access": {"roles": ["admin", "ops"]}, "plan": "premium", "tier": 3, "email_verified": true})
}

fn jwks() -> KeySet {
    let kp = rsa();
    let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
    let (n, e) = (public.n, public.e);
    let ec_point = ec().public_key().as_ref().to_vec();
    let doc = json!({"keys": [
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "n": b64(&n), "e": b64(&e)},
        {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64(&ec_point[1..33]), "y": b64(&ec_point[33..])},
        {"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": b64(ed().public_key().as_ref())},
        {"kty": "oct", "kid": "hs1", "alg": "HS256", "k": b64(SECRET)},
        {"kty": "RSA", "kid": "enc1", "use": "enc", "n": b64(&n), "e": b64(&e)},
    ]});
    KeySet::load(doc.to_string().as_bytes()).unwrap()
}

const ALL_ALGS: &[Alg] = &[Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::ES256, Alg::EdDSA, Alg::HS256];

fn check(keys: &KeySet, algs: &[Alg], t: &str) -> Result<Alg, String> {
    let parsed = token::parse(t.as_bytes()).map_err(|e| format!("{e:?}"))?;
    verify(keys, algs, &parsed).map_err(|e| format!("{e:?}"))
}

#[test]
fn every_algorithm_verifies_with_its_key() {
    let keys = jwks();
    assert_eq!(keys.keys.len(), 4, "the encryption key is skipped");
    for (alg, kid) in [
        ("RS256", "rsa1"),
        ("RS384", "rsa1"),
        ("RS512", "rsa1"),
        ("PS256", "rsa1"),
        ("ES256", "ec1"),
        ("EdDSA", "ed1"),
        ("HS256", "hs1"),
    ] {
        assert_eq!(check(&keys, ALL_ALGS, &signed(alg, Some(kid), claims())), Ok(Alg::parse(alg).unwrap()), "{alg}");
        assert_eq!(check(&keys, ALL_ALGS, &signed(alg, None, claims())), Ok(Alg::parse(alg).unwrap()), "{alg}, no kid");
    }
}

#[test]
fn a_changed_payload_or_signature_fails() {
    let keys = jwks();
    let t = signed("ES256", Some("ec1"), claims());
    let (input, _) = t.rsplit_once('.').unwrap();
    let (header, _) = input.split_once('.').unwrap();
    let forged =
        format!("{header}.{}.{}", b64(br#"{"sub":"mallory","exp":1900000000}"#), t.rsplit_once('.').unwrap().1);
    assert_eq!(check(&keys, ALL_ALGS, &forged), Err("Signature".into()));
    let mut sig = token::decode(t.rsplit_once('.').unwrap().1.as_bytes()).unwrap();
    sig[10] ^= 1;
    assert_eq!(check(&keys, ALL_ALGS, &format!("{input}.{}", b64(&sig))), Err("Signature".into()));
}

#[test]
fn none_and_unlisted_algorithms_are_rejected() {
    let keys = jwks();
    let none = token(json!({"alg": "none"}), claims(), |_| Vec::new());
    assert_eq!(check(&keys, ALL_ALGS, &none), Err("Algorithm".into()));
    let none_upper = token(json!({"alg": "NONE"}), claims(), |_| Vec::new());
    assert_eq!(check(&keys, ALL_ALGS, &none_upper), Err("Algorithm".into()));
    // HS256 is not in the default list, even with an oct key present.
    assert_eq!(check(&keys, DEFAULT_ALGS, &signed("HS256", Some("hs1"), claims())), Err("Algorithm".into()));
    assert!(!DEFAULT_ALGS.iter().any(|a| a.is_hmac()));
}

/// The classic confusion: the RSA public key's bytes used as an HMAC secret. The RSA key is
/// never offered to HS256, whichever form the attacker guesses for the "secret".
#[test]
fn rsa_public_key_as_hmac_secret_is_rejected() {
    let pem = KeySet::load(RSA_PUB_PEM.as_bytes()).unwrap();
    for secret in [RSA_PUB_PEM.as_bytes().to_vec(), rsa().public().as_ref().to_vec()] {
        let t = token(json!({"alg": "HS256"}), claims(), |input| {
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret), input).as_ref().to_vec()
        });
        assert_eq!(check(&pem, ALL_ALGS, &t), Err("NoKey".into()));
        let t = token(json!({"alg": "HS256", "kid": "rsa1"}), claims(), |input| {
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret), input).as_ref().to_vec()
        });
        assert_eq!(check(&jwks(), ALL_ALGS, &t), Err("NoKey".into()));
    }
}

#[test]
fn keys_are_bound_to_type_and_alg() {
    let keys = jwks();
    // An EC token naming the RSA key's kid, an RSA token naming the EC kid.
    assert_eq!(check(&keys, ALL_ALGS, &signed("ES256", Some("rsa1"), claims())), Err("NoKey".into()));
    assert_eq!(check(&keys, ALL_ALGS, &signed("RS256", Some("ec1"), claims())), Err("NoKey".into()));
    // A JWK with "alg": RS256 does not verify PS256.
    let mut bound = jwks();
    bound.keys[0].alg = Some(Alg::RS256);
    assert_eq!(check(&bound, ALL_ALGS, &signed("PS256", Some("rsa1"), claims())), Err("NoKey".into()));
    let short = Key { kid: None, alg: None, material: Material::Oct(vec![7; 31]) };
    assert!(!short.accepts(Alg::HS256), "an HMAC secret shorter than the hash is refused");
    assert!(!short.accepts(Alg::RS256));
    // A JWK whose alg does not fit its kty fails loading.
    let err = KeySet::load(br#"{"keys":[{"kty":"oct","alg":"RS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#);
    assert!(err.unwrap_err().contains("does not fit"));
}

#[test]
fn unknown_kid_is_reported() {
    assert_eq!(check(&jwks(), ALL_ALGS, &signed("RS256", Some("rsa2"), claims())), Err("UnknownKid".into()));
}

#[test]
fn pem_keys_load_and_verify() {
    for (pem, alg) in [(RSA_PUB_PEM, "RS256"), (RSA_PKCS1_PEM, "PS256"), (EC_PUB_PEM, "ES256"), (ED_PUB_PEM, "EdDSA")] {
        let keys = KeySet::load(pem.as_bytes()).unwrap();
        assert_eq!(check(&keys, ALL_ALGS, &signed(alg, None, claims())), Ok(Alg::parse(alg).unwrap()), "{alg}");
    }
    let both = format!("{RSA_PUB_PEM}\n{EC_PUB_PEM}");
    let keys = KeySet::load(both.as_bytes()).unwrap();
    assert_eq!(keys.keys.len(), 2);
    assert!(check(&keys, ALL_ALGS, &signed("ES256", None, claims())).is_ok());
    assert!(check(&keys, ALL_ALGS, &signed("RS512", None, claims())).is_ok());
}

#[test]
fn bad_key_files_say_why() {
    let cases: &[(&[u8], &str)] = &[
        (b"hello", "neither JSON"),
        (b"{", "invalid JSON"),
        (b"{\"keys\": 3}", "not an array"),
        (b"{\"keys\": []}", "no usable signing key"),
        (b"{\"keys\": [{\"kty\": \"RSA\", \"kid\": \"a\", \"n\": \"AQAB\"}]}", "key #1 (kid \"a\"): \"e\" is missing"),
        (b"{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AQAB\", \"y\": \"AQAB\"}]}", "32 bytes"),
        (b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"a+b\"}]}", "not base64url"),
        (b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n", "private key"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "PEM block #1"),
    ];
    for (text, want) in cases {
        let err = KeySet::load(text).unwrap_err();
        assert!(err.contains(want), "{}: {err}", String::from_utf8_lossy(text));
    }
    assert!(KeySet::load(&vec![b' '; super::keys::MAX_FILE_LEN + 1]).unwrap_err().contains("larger"));
}

#[test]
fn malformed_tokens_are_invalid_without_decoding_much() {
    let valid = signed("RS256", None, claims());
    let cases: Vec<(String, Malformed)> = vec![
        (String::new(), Malformed::Shape),
        ("abc".into(), Malformed::Shape),
        ("a.b".into(), Malformed::Shape),
        (format!("{valid}.x"), Malformed::Shape),
        (".e30.".into(), Malformed::Shape),
        ("e30!.e30.".into(), Malformed::Base64),
        ("e30=.e30.".into(), Malformed::Base64),
        (format!("{}.e30.", b64(b"[1,2]")), Malformed::Json),
        (format!("{}.{}.", b64(br#"{"alg":"RS256"}"#), b64(b"\"text\"")), Malformed::Json),
        (format!("{}.{}.", b64(br#"{"alg":"RS256"}"#), b64(b"{\"a\":")), Malformed::Json),
        (format!("{}.e30.", b64(br#"{"alg":5}"#)), Malformed::Header),
        (format!("{}.e30.", b64(br#"{"alg":"RS256","kid":7}"#)), Malformed::Header),
        (format!("{}.e30.", b64(br#"{"alg":"RS256","crit":["exp"]}"#)), Malformed::Critical),
        (format!("{}.e30.", b64(&vec![b' '; MAX_TOKEN_LEN])), Malformed::TooLong),
    ];
    for (t, want) in cases {
        assert_eq!(token::parse(t.as_bytes()).map(|_| ()), Err(want), "{t:.60}");
    }
    // 10,000 claims and deep nesting: too long, whatever their content.
    let many: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("c{i}"), json!(i))).collect();
    assert_eq!(
        token::parse(signed("RS256", None, Value::Object(many)).as_bytes()).map(|_| ()),
        Err(Malformed::TooLong)
    );
    let deep = format!(
        "{}.{}.",
        b64(br#"{"alg":"RS256"}"#),
        b64(format!("{}{}", "[".repeat(3000), "]".repeat(3000)).as_bytes())
    );
    assert_eq!(token::parse(deep.as_bytes()).map(|_| ()), Err(Malformed::Json));
    // Within the bound but nested past serde_json's recursion limit.
    let nested = format!("{{\"a\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let nested = format!("{}.{}.", b64(br#"{"alg":"RS256"}"#), b64(nested.as_bytes()));
    assert_eq!(token::parse(nested.as_bytes()).map(|_| ()), Err(Malformed::Json));
}

#[test]
fn kid_is_read_from_the_header_alone() {
    assert_eq!(token::kid(signed("RS256", Some("k7"), claims()).as_bytes()).as_deref(), Some("k7"));
    assert_eq!(token::kid(signed("RS256", None, claims()).as_bytes()), None);
    assert_eq!(token::kid(format!("{}.!!!.", b64(br#"{"kid":"x"}"#)).as_bytes()).as_deref(), Some("x"));
    assert_eq!(token::kid(b"%%%.a.b"), None);
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(token::bearer(b"Bearer abc.def.ghi"), Some(&b"abc.def.ghi"[..]));
    assert_eq!(token::bearer(b"bearer   abc"), Some(&b"abc"[..]));
    assert_eq!(token::bearer(b"Basic dXNlcjpwYXNz"), None);
    assert_eq!(token::bearer(b"Bearer"), None);
    assert_eq!(token::strip_bearer(b" BEARER x.y.z "), b"x.y.z");
    assert_eq!(token::strip_bearer(b"x.y.z"), b"x.y.z");
}

fn rules(params: &[&str]) -> Rules {
    let mut r = Rules::default();
    for p in params {
        r.add(p).unwrap();
    }
    r
}

fn at(claims: Value) -> serde_json::Map<String, Value> {
    claims.as_object().unwrap().clone()
}

#[test]
fn exp_nbf_and_leeway() {
    let mut c = claims();
    let mut r = Rules::default();
    assert_eq!(r.check(&at(c.clone()), NOW), Ok(()));
    c["exp"] = json!(NOW - 10.0);
    assert_eq!(r.check(&at(c.clone()), NOW), Err(Failure::Expired));
    assert_eq!(Failure::Expired.status(), Status::Expired);
    r.leeway_secs = 10;
    assert_eq!(r.check(&at(c.clone()), NOW - 0.5), Ok(()), "within leeway");
    assert_eq!(r.check(&at(c.clone()), NOW), Err(Failure::Expired), "at exp + leeway: expired");
    c["exp"] = json!(NOW + 60.0);
    c["nbf"] = json!(NOW + 30.0);
    assert_eq!(r.check(&at(c.clone()), NOW), Err(Failure::NotYetValid));
    assert_eq!(Failure::NotYetValid.status(), Status::Invalid);
    r.leeway_secs = 30;
    assert_eq!(r.check(&at(c.clone()), NOW), Ok(()));
    c["nbf"] = json!("soon");
    assert_eq!(r.check(&at(c.clone()), NOW), Err(Failure::BadTime("nbf")));
    c["exp"] = json!("later");
    assert_eq!(r.check(&at(c.clone()), NOW), Err(Failure::BadTime("exp")));
    c.as_object_mut().unwrap().remove("exp");
    c.as_object_mut().unwrap().remove("nbf");
    assert_eq!(r.check(&at(c.clone()), NOW), Err(Failure::NoExp));
    r.require_exp = false;
    assert_eq!(r.check(&at(c), NOW), Ok(()));
    c = claims();
    c["exp"] = json!(NOW + 0.5);
    assert_eq!(Rules::default().check(&at(c), NOW), Ok(()), "fractional NumericDate");
}

#[test]
fn issuer_audience_and_claim_rules() {
    let c = at(claims());
    assert_eq!(rules(&["iss=https://idp.example"]).check(&c, NOW), Ok(()));
    assert_eq!(rules(&["iss=https://other,https://idp.example"]).check(&c, NOW), Ok(()));
    assert_eq!(rules(&["iss=https://other"]).check(&c, NOW), Err(Failure::Issuer));
    assert_eq!(rules(&["aud=web"]).check(&c, NOW), Ok(()));
    assert_eq!(rules(&["aud=admin"]).check(&c, NOW), Err(Failure::Audience));
    let mut single = claims();
    single["aud"] = json!("api");
    assert_eq!(rules(&["aud=api"]).check(&at(single), NOW), Ok(()));
    assert_eq!(rules(&["realm_access.roles=admin"]).check(&c, NOW), Ok(()));
    assert_eq!(rules(&["realm_access.roles=root,ops"]).check(&c, NOW), Ok(()), "membership, any of");
    assert_eq!(rules(&["plan=premium", "tier=3", "email_verified=true"]).check(&c, NOW), Ok(()));
    let forbidden = rules(&["plan=premium", "realm_access.roles=root"]).check(&c, NOW);
    assert_eq!(forbidden, Err(Failure::Claim("realm_access.roles".into())));
    assert_eq!(forbidden.unwrap_err().status(), Status::Forbidden);
    assert_eq!(rules(&["missing=x"]).check(&c, NOW).unwrap_err().status(), Status::Forbidden);
    assert_eq!(rules(&["realm_access=x"]).check(&c, NOW).unwrap_err().status(), Status::Forbidden, "object");
    let mut child = rules(&["realm_access.roles=admin", "aud=web"]);
    child.extend_from(&rules(&["iss=https://other", "aud=api", "plan=premium"]));
    assert_eq!(child.issuers, ["https://other"], "inherited");
    assert_eq!(child.audiences, ["web"], "the child's own audience replaces the parent's");
    assert_eq!(child.claims.len(), 2, "claim rules add up");
    for bad in ["iss", "=x", "a=", "a=b,", "a..b=c", "exp=1"] {
        assert!(Rules::default().add(bad).is_err(), "{bad}");
    }
}

#[test]
fn claim_variables_resolve_nested_names() {
    let mut c = claims();
    c["user_name"] = json!("bob");
    c["user"] = json!({"name": "carol", "id": 7});
    c["Org"] = json!({"team_lead": {"email": "x@y"}});
    let c = at(c);
    let get = |name: &str| lookup::variable(&c, name).map(lookup::render);
    assert_eq!(get("sub").as_deref(), Some("alice"));
    assert_eq!(get("realm_access_roles").as_deref(), Some("admin,ops"));
    assert_eq!(get("user_name").as_deref(), Some("bob"), "an exact top-level name wins");
    assert_eq!(get("user_id").as_deref(), Some("7"));
    assert_eq!(get("org_team_lead_email").as_deref(), Some("x@y"), "case-insensitive, keys with underscores");
    assert_eq!(get("tier").as_deref(), Some("3"));
    assert_eq!(get("email_verified").as_deref(), Some("true"));
    assert_eq!(get("realm_access").as_deref(), Some(r#"{"roles":["admin","ops"]}"#));
    assert_eq!(get("nope"), None);
    assert_eq!(get("realm_access_nope"), None);
    assert_eq!(get(""), None);
}

#[test]
fn claim_lookup_is_bounded() {
    // Keys "a", "a_a", ... nested: every split exists as an object; the budget stops it.
    fn nest(depth: usize) -> Value {
        if depth == 0 {
            return json!({});
        }
        let mut m = serde_json::Map::new();
        for k in ["a", "a_a", "a_a_a"] {
            m.insert(k.into(), nest(depth - 1));
        }
        Value::Object(m)
    }
    let c = at(json!({"a": nest(6)}));
    let name = vec!["a"; 40].join("_");
    assert_eq!(lookup::variable(&c, &name), None);
}

#[test]
fn cache_is_bounded_and_expires() {
    let mut c: TokenCache<u32> = TokenCache::new(3, 1000, 300);
    let k = |i: u8| [i];
    for i in 0..3 {
        c.insert(1, &k(i), Rc::new(u32::from(i)), 10, Some(NOW + 100.0), NOW);
    }
    assert_eq!(c.get(1, &k(0), NOW).as_deref(), Some(&0));
    c.insert(1, &k(3), Rc::new(3), 10, Some(NOW + 100.0), NOW);
    assert_eq!(c.len(), 3);
    assert_eq!(c.get(1, &k(0), NOW), None, "the oldest went first");
    assert_eq!(c.get(1, &k(3), NOW).as_deref(), Some(&3));
    assert_eq!(c.get(1, &k(3), NOW + 100.0), None, "gone at exp");
    c.insert(1, &k(9), Rc::new(9), 10, Some(NOW - 1.0), NOW);
    assert_eq!(c.get(1, &k(9), NOW), None, "an expired token is not cached");
    c.insert(1, &k(8), Rc::new(8), 10, None, NOW);
    assert!(c.get(1, &k(8), NOW + 299.0).is_some());
    assert!(c.get(1, &k(8), NOW + 300.0).is_none(), "no exp: max_ttl");
    // Re-inserting and expiring many keys keeps the bookkeeping bounded.
    for i in 0..10_000u32 {
        c.insert(7, &i.to_le_bytes(), Rc::new(i), 10, Some(NOW + 1.0 + f64::from(i % 5)), NOW);
        let _ = c.get(7, &(i / 2).to_le_bytes(), NOW + 2.0);
    }
    assert!(c.len() <= 3);
    assert!(c.order.len() <= 7);
    assert_eq!(c.weight(), c.len() * 10, "the weight follows removals and evictions");
}

#[test]
fn cache_hit_needs_the_same_token_and_key_set() {
    let mut c: TokenCache<u32> = TokenCache::new(10, 1000, 300);
    c.insert(1, b"token-a", Rc::new(1), 7, None, NOW);
    assert_eq!(c.get(1, b"token-a", NOW).as_deref(), Some(&1));
    assert!(c.get(2, b"token-a", NOW).is_none(), "another key set: not verified");
    assert!(c.get(1, b"token-b", NOW).is_none());
    assert!(c.get(1, b"token-", NOW).is_none(), "a prefix is another token");
    assert!(c.get(1, b"token-a\0", NOW).is_none());
}

#[test]
fn cache_is_bounded_by_weight() {
    let mut c: TokenCache<u32> = TokenCache::new(100, 1000, 300);
    let k = |i: u8| [i];
    c.insert(1, &k(0), Rc::new(0), 1001, None, NOW);
    assert!(c.is_empty(), "heavier than the budget: not cached");
    for i in 0..4 {
        c.insert(1, &k(i), Rc::new(u32::from(i)), 300, None, NOW);
    }
    assert_eq!((c.len(), c.weight()), (3, 900), "the oldest went to make room");
    assert!(c.get(1, &k(0), NOW).is_none());
    c.insert(1, &k(3), Rc::new(33), 600, None, NOW);
    assert_eq!(c.get(1, &k(3), NOW).as_deref(), Some(&33), "replaced");
    assert_eq!((c.len(), c.weight()), (2, 900));
    assert!(c.get(1, &k(1), NOW).is_none());
}

/// Random single-byte mutations, truncations and splices of valid tokens, a fixed number of
/// them from a fixed seed: never a panic, never accepted unless unchanged in meaning.
#[test]
fn mutated_tokens_never_verify() {
    let keys = jwks();
    let tokens: Vec<String> = [("RS256", "rsa1"), ("ES256", "ec1"), ("EdDSA", "ed1"), ("HS256", "hs1")]
        .iter()
        .map(|(alg, kid)| signed(alg, Some(kid), claims()))
        .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ {}\"";
    let mut accepted = 0;
    for i in 0..3000 {
        let original = tokens[i % tokens.len()].as_bytes();
        let mut t = original.to_vec();
        match next() % 4 {
            0 => {
                let at = (next() as usize) % t.len();
                t[at] = alphabet[(next() as usize) % alphabet.len()];
            }
            1 => t.truncate((next() as usize) % t.len()),
            2 => {
                let other = tokens[(next() as usize) % tokens.len()].as_bytes();
                let at = (next() as usize) % t.len().min(other.len());
                t.truncate(at);
                t.extend_from_slice(&other[at..]);
            }
            _ => {
                let at = (next() as usize) % t.len();
                t.insert(at, alphabet[(next() as usize) % alphabet.len()]);
            }
        }
        let Ok(parsed) = token::parse(&t) else { continue };
        if verify(&keys, ALL_ALGS, &parsed).is_ok() {
            // Only a mutation that left the token as it was (a splice at the same bytes, or a
            // byte replaced by itself) may verify.
            assert!(tokens.iter().any(|v| v.as_bytes() == t.as_slice()), "{}", String::from_utf8_lossy(&t));
            accepted += 1;
        }
    }
    assert!(accepted < 3000 / 4, "most mutations change the token");
}

fn csrf_request<'a>(method: &'a str, site: Option<&'a str>, origin: Option<&'a str>) -> csrf::Request<'a> {
    csrf::Request { method, sec_fetch_site: site, origin, scheme: "https", host: Some("app.example"), path: "/form" }
}

#[test]
fn csrf_follows_cross_origin_protection() {
    let p = csrf::Policy::default();
    let none = |_: &str| false;
    let decide = |p: &csrf::Policy, r: csrf::Request<'_>| p.decide(&r, none);
    for m in ["GET", "HEAD", "OPTIONS"] {
        assert_eq!(decide(&p, csrf_request(m, Some("cross-site"), Some("https://evil.example"))), Verdict::Pass);
    }
    assert_eq!(decide(&p, csrf_request("POST", Some("same-origin"), Some("https://app.example"))), Verdict::Pass);
    assert_eq!(decide(&p, csrf_request("POST", Some("none"), None)), Verdict::Pass);
    assert_eq!(
        decide(&p, csrf_request("POST", Some("cross-site"), Some("https://evil.example"))),
        Verdict::CrossOrigin
    );
    assert_eq!(
        decide(&p, csrf_request("PUT", Some("same-site"), Some("https://sub.app.example"))),
        Verdict::CrossOrigin
    );
    // No Sec-Fetch-Site: curl (no Origin) passes; an Origin must be our own.
    assert_eq!(decide(&p, csrf_request("POST", None, None)), Verdict::Pass);
    assert_eq!(decide(&p, csrf_request("POST", None, Some("https://app.example"))), Verdict::Pass);
    assert_eq!(decide(&p, csrf_request("POST", None, Some("HTTPS://APP.example:443"))), Verdict::Pass);
    assert_eq!(decide(&p, csrf_request("POST", None, Some("http://app.example"))), Verdict::CrossOrigin, "scheme");
    assert_eq!(decide(&p, csrf_request("DELETE", None, Some("https://evil.example"))), Verdict::CrossOrigin);
    assert_eq!(decide(&p, csrf_request("POST", None, Some("null"))), Verdict::CrossOrigin);
    assert_eq!(decide(&p, csrf_request("POST", None, Some("https://user@app.example"))), Verdict::CrossOrigin);
    let mut no_host = csrf_request("POST", None, Some("https://app.example"));
    no_host.host = None;
    assert_eq!(decide(&p, no_host), Verdict::CrossOrigin);
}

#[test]
fn csrf_trusted_origins_bypass_paths_and_public_origins() {
    let p = csrf::Policy {
        own_origins: vec!["https://www.example".into()],
        trusted: vec!["https://partner.example".into()],
        bypass: vec!["/webhook".into()],
    };
    let cors = |o: &str| o == "https://cors.example";
    let evil = "https://evil.example";
    assert_eq!(
        p.decide(&csrf_request("POST", Some("cross-site"), Some("https://partner.example")), cors),
        Verdict::Pass
    );
    assert_eq!(p.decide(&csrf_request("POST", Some("cross-site"), Some("https://cors.example")), cors), Verdict::Pass);
    assert_eq!(p.decide(&csrf_request("POST", Some("cross-site"), Some(evil)), cors), Verdict::CrossOrigin);
    let mut hook = csrf_request("POST", Some("cross-site"), Some(evil));
    hook.path = "/webhook";
    assert_eq!(p.decide(&hook, cors), Verdict::Pass);
    hook.path = "/webhook/x";
    assert_eq!(p.decide(&hook, cors), Verdict::CrossOrigin, "exact paths only");
    // Public origin configured: the raw Host no longer counts.
    assert_eq!(p.decide(&csrf_request("POST", None, Some("https://app.example")), cors), Verdict::CrossOrigin);
    assert_eq!(p.decide(&csrf_request("POST", None, Some("https://www.example")), cors), Verdict::Pass);
    assert_eq!(p.decide(&csrf_request("POST", None, Some("https://partner.example")), cors), Verdict::Pass);
    assert_eq!(p.decide(&csrf_request("POST", None, Some("null")), cors), Verdict::CrossOrigin);
}

#[test]
fn rejected_reasons_have_words() {
    for r in [Rejected::Algorithm, Rejected::UnknownKid, Rejected::NoKey, Rejected::Signature] {
        assert!(!r.as_str().is_empty());
    }
    assert_eq!(Status::ALL.map(Status::as_str), ["VALID", "MISSING", "EXPIRED", "INVALID", "FORBIDDEN"]);
}

#[test]
fn jwks_fetch_decisions() {
    use super::jwks::{self, State};
    let none = State::default();
    assert!(jwks::should_fetch(&none, NOW, false), "no set: fetch");
    let fresh = State { has_keys: true, refresh_at: NOW + 100.0, fetching_until: 0.0, kid_refetch_after: 0.0 };
    assert!(!jwks::should_fetch(&fresh, NOW, false));
    assert!(jwks::should_fetch(&fresh, NOW, true), "unknown kid, no cooldown running");
    let cooling = State { kid_refetch_after: NOW + 5.0, ..fresh };
    assert!(!jwks::should_fetch(&cooling, NOW, true), "at most one refetch per cooldown");
    assert!(jwks::should_fetch(&cooling, NOW + 5.0, true));
    assert!(jwks::should_fetch(&fresh, NOW + 100.0, false), "due for refresh");
    let in_flight = State { fetching_until: NOW + 3.0, refresh_at: NOW, ..fresh };
    assert!(!jwks::should_fetch(&in_flight, NOW + 1.0, true), "another worker is fetching");
    assert!(jwks::should_fetch(&in_flight, NOW + 3.0, false), "until its fetch times out");
    let never = State { has_keys: false, refresh_at: 0.0, ..in_flight };
    assert!(jwks::should_fetch(&never, NOW, false), "no set: fetch even while another request is fetching");
    let failed = State { has_keys: false, refresh_at: NOW + 5.0, fetching_until: 0.0, kid_refetch_after: 0.0 };
    assert!(!jwks::should_fetch(&failed, NOW, true), "no set after a failure: wait for the retry time");
    assert!(jwks::should_fetch(&failed, NOW + 5.0, false));
    assert_eq!(jwks::refresh_after_success(NOW, 400), NOW + 340.0, "a minute early at most");
    assert_eq!(jwks::refresh_after_success(NOW, 8), NOW + 6.0, "a quarter early");
    assert_eq!(jwks::refresh_after_failure(NOW, 30), NOW + 10.0);
    assert_eq!(jwks::refresh_after_failure(NOW, 0), NOW + 1.0);
    assert_eq!(jwks::ttl(None), jwks::DEFAULT_TTL_SECS);
    assert_eq!(jwks::ttl(Some("public, max-age=600")), 600);
    assert_eq!(jwks::ttl(Some("max-age=0")), jwks::MIN_TTL_SECS);
    assert_eq!(jwks::ttl(Some("Max-Age=99999999")), jwks::MAX_TTL_SECS);
    assert_eq!(jwks::ttl(Some("max-age=abc")), jwks::MIN_TTL_SECS);
    assert_eq!(jwks::ttl(Some("no-cache, max-age=600")), jwks::MIN_TTL_SECS);
    assert_eq!(jwks::ttl(Some("public")), jwks::DEFAULT_TTL_SECS);
}
