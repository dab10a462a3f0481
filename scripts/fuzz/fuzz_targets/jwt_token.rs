//! Any bytes as a bearer token: parsing, verification, claim checks and claim lookup must
//! return, never panic, and never accept (the fuzzer cannot sign with the fixed keys).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_shield_module::identity::claims::Rules;
use ngx_http_shield_module::identity::keys::KeySet;
use ngx_http_shield_module::identity::{lookup, token, verify};

// An HMAC secret and RFC 8037's example Ed25519 public key.
const JWKS: &[u8] = br#"{"keys":[
 {"kty":"oct","kid":"h","alg":"HS256","k":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"},
 {"kty":"OKP","kid":"d","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

fuzz_target!(|data: &[u8]| {
    let keys = KeySet::load(JWKS).expect("the fixed key set loads");
    let _ = KeySet::load(data);
    let Ok(t) = token::parse(token::strip_bearer(data)) else { return };
    let algs = [verify::Alg::HS256, verify::Alg::EdDSA, verify::Alg::RS256];
    assert!(verify::verify(&keys, &algs, &t).is_err(), "a fuzzed token verified");
    let _ = Rules::default().check(&t.claims, 1_800_000_000.0);
    for name in ["sub", "realm_access_roles", "a_b_c_d_e_f_g_h"] {
        let _ = lookup::variable(&t.claims, name).map(lookup::render);
    }
});
