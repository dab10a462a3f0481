//! Verified JWTs and CSRF protection against real nginx: tokens signed here with keys generated
//! per run (RSA by the openssl CLI, EC P-256, Ed25519 and the HMAC secret by ring), key files
//! rotated under `nginx -s reload`, claim-keyed limits, and a real headless Chromium posting
//! forms same-origin and cross-site.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use support::{assert_config_error, http_request, Nginx, Response, TempDir};

fn b64(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 4 / 3 + 4];
    let n = URL_SAFE_NO_PAD.encode_slice(bytes, &mut out).unwrap();
    String::from_utf8(out[..n].to_vec()).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One run's keys, and the directory their public halves are written to.
struct Keys {
    dir: TempDir,
    rsa: RsaKeyPair,
    rsa2: RsaKeyPair,
    ec: EcdsaKeyPair,
    ed: Ed25519KeyPair,
    secret: Vec<u8>,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Keys {
    fn generate() -> Keys {
        let dir = TempDir::new();
        let rng = SystemRandom::new();
        let rsa = |name: &str| {
            let pem = dir.path().join(format!("{name}.key"));
            let der = dir.path().join(format!("{name}.pk8"));
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                pem.to_str().unwrap(),
            ]);
            openssl(&[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                pem.to_str().unwrap(),
                "-outform",
                "DER",
                "-out",
                der.to_str().unwrap(),
            ]);
            let pub_pem = dir.path().join(format!("{name}.pub.pem"));
            openssl(&["pkey", "-in", pem.to_str().unwrap(), "-pubout", "-out", pub_pem.to_str().unwrap()]);
            RsaKeyPair::from_pkcs8(&std::fs::read(der).unwrap()).unwrap()
        };
        let (rsa1, rsa2) = (rsa("rsa"), rsa("rsa2"));
        let ec_pk8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, ec_pk8.as_ref(), &rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        let mut secret = vec![0u8; 32];
        rng.fill(&mut secret).unwrap();
        Keys { dir, rsa: rsa1, rsa2, ec, ed, secret }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn rsa_jwk(kp: &RsaKeyPair, kid: &str) -> Value {
        let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
        json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
    }

    /// A JWKS of the first RSA key ("r1"), the EC ("e1"), Ed25519 ("d1") and HMAC ("h1") keys,
    /// plus the second RSA key ("r2") when `rotated`.
    fn jwks(&self, rotated: bool) -> String {
        let point = self.ec.public_key().as_ref();
        let mut keys = vec![
            Self::rsa_jwk(&self.rsa, "r1"),
            json!({"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])}),
            json!({"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": b64(self.ed.public_key().as_ref())}),
            json!({"kty": "oct", "kid": "h1", "alg": "HS256", "k": b64(&self.secret)}),
        ];
        if rotated {
            keys.push(Self::rsa_jwk(&self.rsa2, "r2"));
        }
        json!({ "keys": keys }).to_string()
    }

    fn write_jwks(&self, name: &str, rotated: bool) -> String {
        let path = self.path(name);
        std::fs::write(&path, self.jwks(rotated)).unwrap();
        path.display().to_string()
    }

    fn sign(&self, alg: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let rng = SystemRandom::new();
        let sig = match alg {
            "RS256" | "RS512" | "PS256" => {
                let kp = if kid == Some("r2") { &self.rsa2 } else { &self.rsa };
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    _ => &signature::RSA_PSS_SHA256,
                };
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(enc, &rng, input.as_bytes(), &mut sig).unwrap();
                sig
            }
            "ES256" => self.ec.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            "EdDSA" => self.ed.sign(input.as_bytes()).as_ref().to_vec(),
            "HS256" => hmac(&self.secret, input.as_bytes()),
            _ => Vec::new(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn hmac(secret: &[u8], input: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), input).as_ref().to_vec()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "https://idp.test", "aud": ["api"], "exp": now() + 600, "nbf": now() - 10,
           "realm_access": {"roles": ["reader"]}, "plan": "free"})
}

fn with(mut c: Value, key: &str, value: Value) -> Value {
    c[key] = value;
    c
}

fn get(port: u16, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_request(port, "GET", path, &headers, None)
}

const JWT_SERVER: &str = r#"
    log_format jwt '$uri $status $shield_jwt_status sub=$shield_jwt_claim_sub';
    server {
        listen 127.0.0.1:%%PORT%%;
        large_client_header_buffers 4 256k;
        access_log %%TMP%%/jwt.log jwt;
        shield_jwt on;
        shield_jwt_key_file %%KEYS%%;
        shield_jwt_algorithms RS256 RS512 PS256 ES256 EdDSA HS256;
        shield_jwt_require iss=https://idp.test aud=api,web;
        default_type text/plain;
        location / {
            return 200 "sub=$shield_jwt_claim_sub roles=$shield_jwt_claim_realm_access_roles status=$shield_jwt_status\n";
        }
        location /leeway/ {
            shield_jwt_leeway 2m;
            return 200 "leeway sub=$shield_jwt_claim_sub\n";
        }
        location /admin/ {
            shield_jwt_require realm_access.roles=admin;
            return 200 "admin sub=$shield_jwt_claim_sub\n";
        }
        location /optional/ {
            shield_jwt optional;
            return 200 "optional status=$shield_jwt_status sub=$shield_jwt_claim_sub\n";
        }
        location /default-algs/ {
            shield_jwt_algorithms RS256 ES256 EdDSA;
            return 200 "default sub=$shield_jwt_claim_sub\n";
        }
        location /cookie/ {
            shield_jwt_token $cookie_session;
            return 200 "cookie sub=$shield_jwt_claim_sub\n";
        }
        location /public/ {
            shield_jwt off;
            return 200 "public\n";
        }
        location /redirect/ {
            try_files /nonexistent @admin;
        }
        location @admin {
            shield_jwt_require realm_access.roles=admin;
            return 200 "named admin sub=$shield_jwt_claim_sub\n";
        }
        location /custom-error/ {
            error_page 401 /errors/401.txt;
            return 200 "custom\n";
        }
        location /errors/ {
            internal;
            alias %%TMP%%/errors/;
        }
        location = /metrics { shield_jwt off; shield_status; }
    }"#;

fn jwt_nginx(keys: &Keys) -> Nginx {
    let path = keys.write_jwks("jwks.json", false);
    Nginx::builder().var("KEYS", path).http(JWT_SERVER).start()
}

fn assert_invalid(r: &Response, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body_str());
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer error=\"invalid_token\""), "{what}");
}

#[test]
fn signed_tokens_of_every_key_type_are_verified_before_return() {
    let keys = Keys::generate();
    let nginx = jwt_nginx(&keys);
    for (alg, kid) in [
        ("RS256", Some("r1")),
        ("RS512", None),
        ("PS256", Some("r1")),
        ("ES256", Some("e1")),
        ("EdDSA", Some("d1")),
        ("HS256", Some("h1")),
    ] {
        let r = get(nginx.port, "/", Some(&keys.sign(alg, kid, &claims(&format!("user-{alg}")))));
        assert_eq!(r.status, 200, "{alg}: {}", r.body_str());
        assert_eq!(r.body_str(), format!("sub=user-{alg} roles=reader status=VALID\n"), "{alg}");
    }
    // The cookie source, without the Bearer scheme.
    let t = keys.sign("ES256", Some("e1"), &claims("eve"));
    let r = http_request(nginx.port, "GET", "/cookie/x", &[("Cookie", &format!("session={t}"))], None);
    assert_eq!((r.status, r.body_str()), (200, "cookie sub=eve\n"));
    // HS256 is off unless listed.
    let r = get(nginx.port, "/default-algs/", Some(&keys.sign("HS256", Some("h1"), &claims("h"))));
    assert_invalid(&r, "HS256 where not listed");
    assert_eq!(get(nginx.port, "/default-algs/", Some(&keys.sign("EdDSA", None, &claims("d")))).status, 200);
}

#[test]
fn missing_expired_not_yet_valid_and_foreign_tokens_are_401() {
    let keys = Keys::generate();
    let nginx = jwt_nginx(&keys);
    let r = get(nginx.port, "/", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"), "no error code without a token (RFC 6750 §3.1)");
    let basic = http_request(nginx.port, "GET", "/", &[("Authorization", "Basic dXNlcjpwYXNz")], None);
    assert_eq!((basic.status, basic.header("WWW-Authenticate")), (401, Some("Bearer")));

    let expired = keys.sign("RS256", Some("r1"), &with(claims("old"), "exp", json!(now() - 30)));
    assert_invalid(&get(nginx.port, "/", Some(&expired)), "expired");
    let r = get(nginx.port, "/leeway/", Some(&expired));
    assert_eq!((r.status, r.body_str()), (200, "leeway sub=old\n"), "30 s late is within a 2 min leeway");
    let long_expired = keys.sign("RS256", Some("r1"), &with(claims("old"), "exp", json!(now() - 600)));
    assert_invalid(&get(nginx.port, "/leeway/", Some(&long_expired)), "expired beyond the leeway");
    let no_exp = {
        let mut c = claims("x");
        c.as_object_mut().unwrap().remove("exp");
        keys.sign("RS256", Some("r1"), &c)
    };
    assert_invalid(&get(nginx.port, "/", Some(&no_exp)), "no exp");

    let future = keys.sign("ES256", Some("e1"), &with(claims("early"), "nbf", json!(now() + 600)));
    assert_invalid(&get(nginx.port, "/", Some(&future)), "nbf in the future");
    let wrong_iss = keys.sign("ES256", Some("e1"), &with(claims("x"), "iss", json!("https://evil.test")));
    assert_invalid(&get(nginx.port, "/", Some(&wrong_iss)), "wrong iss");
    let wrong_aud = keys.sign("ES256", Some("e1"), &with(claims("x"), "aud", json!("billing")));
    assert_invalid(&get(nginx.port, "/", Some(&wrong_aud)), "wrong aud");
    let web_aud = keys.sign("ES256", Some("e1"), &with(claims("w"), "aud", json!("web")));
    assert_eq!(get(nginx.port, "/", Some(&web_aud)).status, 200, "aud as a string, one of the list");

    let log = nginx.wait_log("jwt.log", 11);
    assert!(log.contains("/ 401 EXPIRED sub="), "{log}");
    assert!(log.contains("/ 401 MISSING sub="), "{log}");
    assert!(log.contains("/leeway/ 200 VALID sub=old"), "{log}");
    let error_log = nginx.error_log();
    assert!(error_log.contains("shield: JWT INVALID: nbf in the future"), "{error_log}");
    assert!(error_log.contains("shield: JWT INVALID: issuer not accepted"), "{error_log}");
}

#[test]
fn none_algorithm_confusion_and_forgeries_are_rejected() {
    let keys = Keys::generate();
    let nginx = jwt_nginx(&keys);
    let c = claims("mallory");
    let unsigned =
        |alg: &str| format!("{}.{}.", b64(json!({"alg": alg}).to_string().as_bytes()), b64(c.to_string().as_bytes()));
    for alg in ["none", "None", "NONE"] {
        assert_invalid(&get(nginx.port, "/", Some(&unsigned(alg))), alg);
    }
    // The RSA public key (its PEM text, and its DER) as an HMAC secret, with and without kid.
    let pem = std::fs::read(keys.path("rsa.pub.pem")).unwrap();
    let der = keys.rsa.public().as_ref().to_vec();
    for secret in [&pem, &der] {
        for kid in [None, Some("r1")] {
            let mut header = json!({"alg": "HS256"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(c.to_string().as_bytes()));
            let t = format!("{input}.{}", b64(&hmac(secret, input.as_bytes())));
            assert_invalid(&get(nginx.port, "/", Some(&t)), "RSA key as HMAC secret");
        }
    }
    // A valid token's payload swapped for another.
    let good = keys.sign("RS256", Some("r1"), &claims("alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(claims("admin").to_string().as_bytes()), parts[2]);
    assert_invalid(&get(nginx.port, "/", Some(&forged)), "payload swapped");
    // Signed by a key the server does not have, naming a kid it has.
    let foreign = keys.sign("RS256", Some("r2"), &claims("x"));
    assert_invalid(&get(nginx.port, "/", Some(&foreign)), "unknown kid");
    assert!(nginx.error_log().contains("shield: JWT INVALID: unknown kid \"r2\""), "{}", nginx.error_log());
    assert!(nginx.error_log().contains("algorithm \"none\" not allowed"), "{}", nginx.error_log());
}

#[test]
fn malformed_and_oversized_tokens_are_invalid() {
    let keys = Keys::generate();
    let nginx = jwt_nginx(&keys);
    let header = b64(br#"{"alg":"RS256","kid":"r1"}"#);
    let huge_header = format!(
        "{}.{}.AAAA",
        b64(format!("{{\"alg\":\"RS256\",\"x\":\"{}\"}}", "a".repeat(20_000)).as_bytes()),
        b64(b"{}")
    );
    let many: serde_json::Map<String, Value> = (0..10_000).map(|i| (format!("claim{i}"), json!(i))).collect();
    let many_claims = keys.sign("RS256", Some("r1"), &Value::Object(many));
    let cases = [
        ("bad base64", format!("{header}.e30!.AAAA")),
        ("padding", format!("{header}.e30=.AAAA")),
        ("two parts", format!("{header}.e30")),
        ("four parts", format!("{header}.e30.AAAA.AAAA")),
        ("array payload", format!("{header}.{}.AAAA", b64(b"[1,2,3]"))),
        ("string payload", format!("{header}.{}.AAAA", b64(b"\"sub\""))),
        ("broken JSON", format!("{header}.{}.AAAA", b64(b"{\"sub\":"))),
        ("huge header", huge_header),
        ("10,000 claims", many_claims),
        ("garbage", "not a token at all".into()),
    ];
    for (what, t) in &cases {
        assert_invalid(&get(nginx.port, "/", Some(t)), what);
    }
    // Still serving valid tokens afterwards.
    assert_eq!(get(nginx.port, "/", Some(&keys.sign("RS256", Some("r1"), &claims("ok")))).status, 200);
    assert!(nginx.error_log().contains("shield: JWT INVALID: token too long"));
}

#[test]
fn claim_rules_forbid_and_optional_mode_never_rejects() {
    let keys = Keys::generate();
    let nginx = jwt_nginx(&keys);
    let reader = keys.sign("ES256", Some("e1"), &claims("rita"));
    let r = get(nginx.port, "/admin/", Some(&reader));
    assert_eq!(r.status, 403, "{}", r.body_str());
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer error=\"insufficient_scope\""));
    let admin =
        keys.sign("ES256", Some("e1"), &with(claims("ada"), "realm_access", json!({"roles": ["reader", "admin"]})));
    assert_eq!(get(nginx.port, "/admin/", Some(&admin)).body_str(), "admin sub=ada\n");
    // The location's rules add to the server's: iss is still required there.
    let admin_elsewhere = keys.sign(
        "ES256",
        Some("e1"),
        &with(with(claims("ada"), "realm_access", json!({"roles": ["admin"]})), "iss", json!("https://evil.test")),
    );
    assert_eq!(get(nginx.port, "/admin/", Some(&admin_elsewhere)).status, 401);

    let r = get(nginx.port, "/optional/", None);
    assert_eq!((r.status, r.body_str()), (200, "optional status=MISSING sub=\n"));
    let r = get(nginx.port, "/optional/", Some("bad.token.here"));
    assert_eq!((r.status, r.body_str()), (200, "optional status=INVALID sub=\n"));
    let r = get(nginx.port, "/optional/", Some(&reader));
    assert_eq!((r.status, r.body_str()), (200, "optional status=VALID sub=rita\n"));
    assert_eq!(get(nginx.port, "/public/", None).status, 200);

    // Verified (and enforced) under /redirect/'s policy, with no role rule, then redirected to a
    // location that requires a role: judged again there.
    let r = get(nginx.port, "/redirect/x", Some(&reader));
    assert_eq!(r.status, 403, "the named location's rule applies: {}", r.body_str());
    assert_eq!(get(nginx.port, "/redirect/x", Some(&admin)).body_str(), "named admin sub=ada\n");
}

/// An `error_page` for 401 is served (it is not checked again, which would answer nginx's
/// default page instead), and keeps the challenge.
#[test]
fn error_page_for_401_is_served() {
    let keys = Keys::generate();
    let nginx = jwt_nginx(&keys);
    std::fs::create_dir_all(nginx.dir.path().join("errors")).unwrap();
    std::fs::write(nginx.dir.path().join("errors/401.txt"), "{\"error\": \"login first\"}\n").unwrap();
    let r = get(nginx.port, "/custom-error/", None);
    assert_eq!((r.status, r.body_str()), (401, "{\"error\": \"login first\"}\n"));
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    let t = keys.sign("RS256", Some("r1"), &claims("x"));
    assert_eq!(get(nginx.port, "/custom-error/", Some(&t)).body_str(), "custom\n");
}

#[test]
fn repeated_tokens_are_served_from_the_cache_and_counted() {
    let keys = Keys::generate();
    let nginx =
        Nginx::builder().worker_processes(1).var("KEYS", keys.write_jwks("jwks.json", false)).http(JWT_SERVER).start();
    let t = keys.sign("RS256", Some("r1"), &claims("cached"));
    for _ in 0..5 {
        assert_eq!(get(nginx.port, "/", Some(&t)).status, 200);
    }
    // A different location with the same keys and algorithms shares the entry.
    assert_eq!(get(nginx.port, "/leeway/", Some(&t)).status, 200);
    // A location with another algorithm list does not.
    assert_eq!(get(nginx.port, "/default-algs/", Some(&t)).status, 200);
    assert_invalid(
        &get(nginx.port, "/", Some(&keys.sign("RS256", Some("r1"), &with(claims("x"), "exp", json!(1))))),
        "expired",
    );
    assert_eq!(get(nginx.port, "/", None).status, 401);
    let metrics = get(nginx.port, "/metrics", None).body_str().to_string();
    let value = |series: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
    };
    assert_eq!(value("shield_jwt_requests_total{status=\"valid\"}"), 7);
    assert_eq!(value("shield_jwt_requests_total{status=\"expired\"}"), 1);
    assert_eq!(value("shield_jwt_requests_total{status=\"missing\"}"), 1);
    assert_eq!(value("shield_jwt_rejected_total{status=\"expired\"}"), 1);
    assert_eq!(value("shield_jwt_signature_checks_total"), 3, "one per distinct (token, key set)");
    assert_eq!(value("shield_jwt_cache_hits_total"), 5);
}

#[test]
fn unknown_kid_then_rotation_by_reload() {
    let keys = Keys::generate();
    let nginx = jwt_nginx(&keys);
    let new_key = keys.sign("RS256", Some("r2"), &claims("rotated"));
    assert_invalid(&get(nginx.port, "/", Some(&new_key)), "kid r2 before rotation");
    keys.write_jwks("jwks.json", true);
    nginx.reload();
    let r = get(nginx.port, "/", Some(&new_key));
    assert_eq!((r.status, r.body_str()), (200, "sub=rotated roles=reader status=VALID\n"));
    assert_eq!(get(nginx.port, "/", Some(&keys.sign("RS256", Some("r1"), &claims("old-key")))).status, 200);
    // A broken file on reload: the old configuration (and keys) keep serving.
    std::fs::write(keys.path("jwks.json"), "{\"keys\": [{\"kty\": \"RSA\"}]}").unwrap();
    nginx.allow_log("shield_jwt_key_file");
    hup_expecting(&nginx, "\"n\" is missing");
    assert_eq!(get(nginx.port, "/", Some(&new_key)).status, 200);
}

/// SIGHUP to the master (as `nginx -s reload` would send, had its own parse of the broken
/// configuration not stopped it first); waits until error.log shows `expected`.
fn hup_expecting(nginx: &Nginx, expected: &str) {
    let pid = std::fs::read_to_string(nginx.dir.path().join("nginx.pid")).unwrap();
    let status = Command::new("kill").args(["-HUP", pid.trim()]).status().unwrap();
    assert!(status.success());
    let start = std::time::Instant::now();
    while !nginx.error_log().contains(expected) {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "not logged: {expected}\n{}", nginx.error_log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn pem_key_files() {
    let keys = Keys::generate();
    let nginx = Nginx::builder()
        .var("PEM", keys.path("rsa.pub.pem").display())
        .http(
            r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            location / {
                shield_jwt on;
                shield_jwt_key_file %%PEM%%;
                return 200 "pem sub=$shield_jwt_claim_sub\n";
            }
        }"#,
        )
        .start();
    let r = get(nginx.port, "/", Some(&keys.sign("RS256", None, &claims("pem-user"))));
    assert_eq!((r.status, r.body_str()), (200, "pem sub=pem-user\n"));
    // The same RSA key cannot sign an HS256 token for itself.
    let pem = std::fs::read(keys.path("rsa.pub.pem")).unwrap();
    let input = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(claims("x").to_string().as_bytes()));
    let t = format!("{input}.{}", b64(&hmac(&pem, input.as_bytes())));
    assert_eq!(get(nginx.port, "/", Some(&t)).status, 401);
}

#[test]
fn configuration_errors_fail_nginx_t_with_file_and_line() {
    let keys = Keys::generate();
    let jwks = keys.write_jwks("jwks.json", false);
    std::fs::write(
        keys.path("bad.json"),
        "{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AA\", \"y\": \"AA\"}]}",
    )
    .unwrap();
    std::fs::copy(keys.dir.path().join("rsa.key"), keys.path("private.pem")).unwrap();
    let bad = keys.path("bad.json").display().to_string();
    let private = keys.path("private.pem").display().to_string();
    let cases = [
        (format!("shield_jwt_key_file {}/nope.json;", keys.dir.path().display()), "cannot read"),
        (format!("shield_jwt_key_file {bad};"), "key #1: \"x\" and \"y\" must be 32 bytes each"),
        (format!("shield_jwt_key_file {private};"), "a private key"),
        (
            format!("shield_jwt_key_file {jwks}; shield_jwt_key_file {jwks};"),
            "\"shield_jwt_key_file\" directive is duplicate",
        ),
        (
            format!("shield_jwt_key_file {jwks}; shield_jwt_key_request /jwks;"),
            "one of \"shield_jwt_key_file\" and \"shield_jwt_key_request\" per block",
        ),
        (
            "shield_jwt_key_request /a; shield_jwt_key_request /b;".into(),
            "\"shield_jwt_key_request\" directive is duplicate",
        ),
        ("shield_jwt_key_request http://idp/jwks;".into(), "invalid URI \"http://idp/jwks\""),
        ("shield_jwt_key_request /jwks cooldown=2h;".into(), "invalid cooldown \"2h\", it must be between 1 and 3600"),
        ("shield_jwt_key_request /jwks refresh=1s;".into(), "invalid parameter \"refresh=1s\""),
        ("shield_jwt maybe;".into(), "invalid parameter \"maybe\" in \"shield_jwt\" directive"),
        ("shield_jwt_algorithms RS256 none;".into(), "\"none\" is never accepted"),
        ("shield_jwt_algorithms RS257;".into(), "invalid parameter \"RS257\""),
        ("shield_jwt_leeway 10m;".into(), "invalid leeway \"10m\", it must be between 0 and 300"),
        ("shield_jwt_leeway soon;".into(), "invalid time \"soon\""),
        ("shield_jwt_require iss;".into(), "invalid parameter \"iss\""),
        ("shield_jwt_require exp=1;".into(), "checked as a time"),
        ("shield_jwt_token plain;".into(), "a variable is expected"),
        ("shield_jwt_exp sometimes;".into(), "invalid parameter \"sometimes\""),
        ("shield_csrf always;".into(), "invalid parameter \"always\""),
        ("shield_csrf_origins null;".into(), "\"null\" origin is not allowed"),
        ("shield_csrf_trusted_origins https://a.test/path;".into(), "invalid origin"),
        ("shield_csrf_bypass webhook;".into(), "must start with \"/\""),
    ];
    for (directives, want) in &cases {
        assert_config_error(&format!("server {{ listen 127.0.0.1:1; {directives} }}"), want);
    }
    // shield_jwt without keys is reported at the block's end.
    let (ok, out) = support::nginx_test_config("server { listen 127.0.0.1:1; location / { shield_jwt on; } }");
    assert!(!ok && out.contains("\"shield_jwt\" needs \"shield_jwt_key_file\" or \"shield_jwt_key_request\""), "{out}");
    let (ok, out) = support::nginx_test_config(&format!(
        "server {{ listen 127.0.0.1:1; shield_jwt_key_file {jwks}; location / {{ shield_jwt on; shield_jwt_leeway 5m; }} }}"
    ));
    assert!(ok, "{out}");
}

fn statuses(port: u16, path: &str, token: Option<&str>, n: usize) -> Vec<u16> {
    (0..n).map(|_| get(port, path, token).status).collect()
}

/// `shield_limit_zone $shield_jwt_claim_sub`: each verified user has a quota; requests without
/// a token, or with a forged one claiming a user's `sub`, have an empty key and are not counted
/// against anyone.
#[test]
fn per_user_limit_counts_verified_users_only() {
    let keys = Keys::generate();
    let nginx = Nginx::builder()
        .var("KEYS", keys.write_jwks("jwks.json", false))
        .http(
            r#"
        shield_limit_zone $shield_jwt_claim_sub zone=per_user:1m rate=3r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            shield_jwt_key_file %%KEYS%%;
            shield_limit zone=per_user burst=2 nodelay;
            location / { shield_jwt optional; }
            location /strict/ { shield_jwt on; alias %%HTML%%/; }
        }"#,
        )
        .start();
    let alice = keys.sign("RS256", Some("r1"), &claims("alice"));
    let bob = keys.sign("ES256", Some("e1"), &claims("bob"));
    let forged_alice = {
        let parts: Vec<String> = bob.split('.').map(str::to_string).collect();
        format!("{}.{}.{}", parts[0], b64(claims("alice").to_string().as_bytes()), parts[2])
    };
    assert_eq!(statuses(nginx.port, "/index.html", None, 6), [200; 6], "anonymous: no key, not limited");
    assert_eq!(statuses(nginx.port, "/index.html", Some(&forged_alice), 6), [200; 6], "forged: no key");
    assert_eq!(statuses(nginx.port, "/index.html", Some(&alice), 4), [200, 200, 200, 429], "alice's quota is 3");
    assert_eq!(statuses(nginx.port, "/index.html", Some(&bob), 4), [200, 200, 200, 429], "bob has his own");
    assert_eq!(statuses(nginx.port, "/index.html", None, 2), [200, 200]);
    // Where the token is required, the forgery is a 401 and alice is still limited.
    assert_eq!(get(nginx.port, "/strict/index.html", Some(&forged_alice)).status, 401);
    assert_eq!(get(nginx.port, "/strict/index.html", Some(&alice)).status, 429);
}

/// The same per-user quota, exact across two nginx nodes sharing Redis.
#[test]
fn per_user_limit_is_exact_across_two_nodes_sharing_redis() {
    let keys = Keys::generate();
    let redis = support::Redis::start();
    let http = r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=500ms;
        shield_limit_zone $shield_jwt_claim_sub zone=per_user:1m rate=10r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {
                shield_jwt on;
                shield_jwt_key_file %%KEYS%%;
                shield_limit zone=per_user burst=9 nodelay;
            }
        }"#;
    let path = keys.write_jwks("jwks.json", false);
    let a = Nginx::builder().var("REDIS", redis.port).var("KEYS", &path).http(http).start();
    let b = Nginx::builder().var("REDIS", redis.port).var("KEYS", &path).http(http).start();
    let carol = keys.sign("EdDSA", Some("d1"), &claims("carol"));
    let answers: Vec<u16> =
        (0..30).map(|i| get(if i % 2 == 0 { a.port } else { b.port }, "/index.html", Some(&carol)).status).collect();
    assert_eq!(answers.iter().filter(|s| **s == 200).count(), 10, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == 429).count(), 20, "{answers:?}");
    assert_eq!(redis.command(&["EXISTS", "shield:{carol}:per_user"]), ":1", "keyed by the verified sub");
    assert_eq!(get(b.port, "/index.html", Some(&keys.sign("EdDSA", Some("d1"), &claims("dave")))).status, 200);
}

/// The README's per-plan recipe: nginx's `map` turns the verified `plan` claim into one key per
/// zone, empty for the other plan, and an empty key is not limited by that zone.
const PER_PLAN: &str = r#"
        map $shield_jwt_claim_plan $free_user {
            premium  "";
            default  $shield_jwt_claim_sub;
        }
        map $shield_jwt_claim_plan $premium_user {
            premium  $shield_jwt_claim_sub;
            default  "";
        }
        shield_limit_zone $free_user    zone=free:1m    rate=2r/h;
        shield_limit_zone $premium_user zone=premium:1m rate=5r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location /api/ {
                shield_jwt on;
                shield_jwt_key_file %%KEYS%%;
                shield_limit zone=free burst=1 nodelay;
                shield_limit zone=premium burst=4 nodelay;
                alias %%HTML%%/;
            }
        }"#;

#[test]
fn per_plan_quotas_with_map() {
    let keys = Keys::generate();
    let nginx = Nginx::builder().var("KEYS", keys.write_jwks("jwks.json", false)).http(PER_PLAN).start();
    let free = keys.sign("RS256", Some("r1"), &claims("frank"));
    let premium = keys.sign("RS256", Some("r1"), &with(claims("petra"), "plan", json!("premium")));
    let other_free = keys.sign("ES256", Some("e1"), &claims("fiona"));
    assert_eq!(statuses(nginx.port, "/api/index.html", Some(&free), 3), [200, 200, 429], "free: 2 per hour");
    assert_eq!(
        statuses(nginx.port, "/api/index.html", Some(&premium), 6),
        [200, 200, 200, 200, 200, 429],
        "premium: 5"
    );
    assert_eq!(statuses(nginx.port, "/api/index.html", Some(&other_free), 3), [200, 200, 429], "per user");
    assert_eq!(get(nginx.port, "/api/index.html", None).status, 401, "no token, no quota: 401");
}

/// `shield_jwt_key_request`: the JWKS comes from an endpoint (here a test upstream that rotates
/// its keys and can fail) through a subrequest; the set is shared by the workers, an unknown
/// `kid` refetches at most once per cooldown, and a failed fetch keeps the last good set.
#[test]
fn jwks_endpoint_rotation_unknown_kid_refetch_and_last_good_set() {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Arc;
    use support::{CannedResponse, Upstream};
    let keys = Arc::new(Keys::generate());
    // 0: the first set, 1: rotated (r2 added), 2: failing (500).
    let mode = Arc::new(AtomicU8::new(0));
    let upstream = {
        let (keys, mode) = (Arc::clone(&keys), Arc::clone(&mode));
        Upstream::start(move |_| match mode.load(Ordering::SeqCst) {
            2 => CannedResponse { status: 500, headers: vec![], body: b"down".to_vec() },
            m => CannedResponse {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "application/json".into()),
                    ("Cache-Control".into(), "public, max-age=600".into()),
                ],
                body: keys.jwks(m == 1).into_bytes(),
            },
        })
    };
    let nginx = Nginx::builder()
        .var("UP", upstream.port)
        .http(
            r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            shield_jwt on;
            shield_jwt_key_request /_jwks cooldown=1s;
            location = /_jwks {
                internal;
                subrequest_output_buffer_size 64k;
                proxy_pass http://127.0.0.1:%%UP%%/jwks;
            }
            location / {
                return 200 "fetched sub=$shield_jwt_claim_sub\n";
            }
            location = /metrics { shield_jwt off; shield_status; }
        }"#,
        )
        .start();
    nginx.allow_log("JWKS fetch from /_jwks failed");
    let fetches = || upstream.requests().len();
    let r1 = keys.sign("RS256", Some("r1"), &claims("first"));
    let r2 = keys.sign("RS256", Some("r2"), &claims("second"));
    let r = get(nginx.port, "/", Some(&r1));
    assert_eq!((r.status, r.body_str()), (200, "fetched sub=first\n"));
    assert_eq!(fetches(), 1);
    for _ in 0..6 {
        assert_eq!(get(nginx.port, "/", Some(&keys.sign("ES256", Some("e1"), &claims("e")))).status, 200);
    }
    assert_eq!(fetches(), 1, "both workers verify with the set in shared memory");
    assert_eq!(get(nginx.port, "/", None).status, 401);
    assert_eq!(fetches(), 1, "no token, no fetch");

    // r2 is not published yet: one refetch, then none within the cooldown.
    assert_invalid(&get(nginx.port, "/", Some(&r2)), "unknown kid");
    assert_eq!(fetches(), 2, "an unknown kid refetches");
    assert_invalid(&get(nginx.port, "/", Some(&r2)), "unknown kid again");
    assert_invalid(&get(nginx.port, "/", Some(&r2)), "unknown kid again");
    assert_eq!(fetches(), 2, "at most one refetch per cooldown");

    // The endpoint rotates; after the cooldown the next unknown kid picks it up.
    mode.store(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let r = get(nginx.port, "/", Some(&r2));
    assert_eq!((r.status, r.body_str()), (200, "fetched sub=second\n"), "rotated key");
    assert_eq!(fetches(), 3);

    // The endpoint fails: the last good set keeps serving.
    mode.store(2, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let r3 = keys.sign("RS256", Some("r3"), &claims("third"));
    assert_invalid(&get(nginx.port, "/", Some(&r3)), "kid r3, endpoint down");
    assert_eq!(fetches(), 4);
    assert_eq!(get(nginx.port, "/", Some(&r2)).status, 200, "last good set kept");
    assert_eq!(get(nginx.port, "/", Some(&r1)).status, 200, "last good set kept");
    assert!(nginx.error_log().contains("shield: JWKS fetch from /_jwks failed (status 500)"), "{}", nginx.error_log());
    let metrics = get(nginx.port, "/metrics", None).body_str().to_string();
    assert!(metrics.contains("shield_jwt_key_fetches_total{result=\"ok\"} 3"), "{metrics}");
    assert!(metrics.contains("shield_jwt_key_fetches_total{result=\"failed\"} 1"), "{metrics}");
}

/// An endpoint that is down before any set was fetched: 401, and it is asked again only after
/// the retry time, not on every request.
#[test]
fn jwks_endpoint_down_from_the_start_is_not_asked_on_every_request() {
    use support::{CannedResponse, Upstream};
    let keys = Keys::generate();
    let upstream = Upstream::start(|_| CannedResponse { status: 503, headers: vec![], body: b"down".to_vec() });
    let nginx = Nginx::builder()
        .var("UP", upstream.port)
        .http(
            r#"
        server {
            listen 127.0.0.1:%%PORT%%;
            location = /_jwks { internal; proxy_pass http://127.0.0.1:%%UP%%/jwks; }
            location / {
                shield_jwt on;
                shield_jwt_key_request /_jwks cooldown=5s;
                return 200 "ok\n";
            }
        }"#,
        )
        .start();
    nginx.allow_log("JWKS fetch from /_jwks failed");
    let t = keys.sign("RS256", Some("r1"), &claims("x"));
    for _ in 0..5 {
        assert_invalid(&get(nginx.port, "/", Some(&t)), "no key set");
    }
    assert_eq!(upstream.requests().len(), 1, "one fetch, then the retry time");
    assert!(nginx.error_log().contains("shield: JWT INVALID: no key set fetched yet"), "{}", nginx.error_log());
}

/// Bad tokens are 401s like any other: `shield_ban` counts them and locks the address out, even
/// for a valid token afterwards.
#[test]
fn failed_tokens_count_toward_shield_ban() {
    let keys = Keys::generate();
    let nginx = Nginx::builder()
        .var("KEYS", keys.write_jwks("jwks.json", false))
        .http(
            r#"
        shield_limit_zone $binary_remote_addr zone=per_ip:1m rate=100r/s backend=local;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {
                shield_jwt on;
                shield_jwt_key_file %%KEYS%%;
                shield_ban zone=per_ip status=401 threshold=3/1m ban=1m;
            }
        }"#,
        )
        .start();
    let valid = keys.sign("ES256", Some("e1"), &claims("user"));
    assert_eq!(get(nginx.port, "/index.html", Some(&valid)).status, 200);
    let forged = format!("{}x", &valid[..valid.len() - 1]);
    for _ in 0..3 {
        assert_invalid(&get(nginx.port, "/index.html", Some(&forged)), "forged");
    }
    // Failures are counted in the log phase, after their response went out (possibly on the
    // other worker): the ban holds once that has run, within a bounded wait.
    let start = std::time::Instant::now();
    let mut r = get(nginx.port, "/index.html", Some(&valid));
    while r.status == 200 && start.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        r = get(nginx.port, "/index.html", Some(&valid));
    }
    assert_eq!(r.status, 429, "banned after 3 failures");
    assert!(r.header("Retry-After").is_some());
}
