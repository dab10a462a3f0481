//! The algorithm allowlist and the signature check. Every primitive is `ring`'s: RSA PKCS#1
//! v1.5 and PSS (2048 to 8192-bit moduli), ECDSA P-256/P-384 in JWS's fixed `r || s` form,
//! Ed25519, and HMAC, whose tag comparison is constant-time (`ring::hmac::verify`).

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

use super::keys::{Key, KeySet, Material};
use super::token::Token;

#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// `shield_jwt_algorithms`' default: every asymmetric algorithm JWT issuers commonly use. HMAC
/// is never on by default: it must be listed, and only an `oct` key verifies it.
pub const DEFAULT_ALGS: &[Alg] = &[Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::ES256, Alg::ES384, Alg::EdDSA];

impl Alg {
    /// The JWS name; `none` (and anything unknown) has no `Alg`, so it can never verify.
    pub fn parse(name: &str) -> Option<Alg> {
        use Alg::*;
        Some(match name {
            "HS256" => HS256,
            "HS384" => HS384,
            "HS512" => HS512,
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "EdDSA" => EdDSA,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Alg::*;
        match self {
            HS256 => "HS256",
            HS384 => "HS384",
            HS512 => "HS512",
            RS256 => "RS256",
            RS384 => "RS384",
            RS512 => "RS512",
            PS256 => "PS256",
            PS384 => "PS384",
            PS512 => "PS512",
            ES256 => "ES256",
            ES384 => "ES384",
            EdDSA => "EdDSA",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// Why a well-formed token's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `none`, an unknown name, or one not in `shield_jwt_algorithms`.
    Algorithm,
    /// The token names a `kid` the key set does not have.
    UnknownKid,
    /// No key of the algorithm's type (e.g. HS256 against RSA keys only: algorithm confusion).
    NoKey,
    Signature,
}

impl Rejected {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Algorithm => "algorithm not allowed",
            Rejected::UnknownKid => "unknown kid",
            Rejected::NoKey => "no key for the algorithm",
            Rejected::Signature => "bad signature",
        }
    }
}

/// Checks `token`'s signature with the key set. Without a `kid`, every key of the algorithm's
/// type is tried (the key set is the operator's, bounded by `keys::MAX_KEYS`).
pub fn verify(keys: &KeySet, allowed: &[Alg], token: &Token<'_>) -> Result<Alg, Rejected> {
    let alg = Alg::parse(&token.header.alg).filter(|a| allowed.contains(a)).ok_or(Rejected::Algorithm)?;
    let kid = token.header.kid.as_deref();
    if let Some(kid) = kid {
        if !keys.has_kid(kid) {
            return Err(Rejected::UnknownKid);
        }
    }
    let mut tried = false;
    for key in keys.candidates(kid, alg) {
        tried = true;
        if check(key, alg, token.signing_input, &token.signature) {
            return Ok(alg);
        }
    }
    Err(if tried { Rejected::Signature } else { Rejected::NoKey })
}

fn check(key: &Key, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
    use Alg::*;
    match &key.material {
        Material::Oct(secret) => {
            let algorithm = match alg {
                HS256 => ring::hmac::HMAC_SHA256,
                HS384 => ring::hmac::HMAC_SHA384,
                HS512 => ring::hmac::HMAC_SHA512,
                _ => return false,
            };
            ring::hmac::verify(&ring::hmac::Key::new(algorithm, secret), message, sig).is_ok()
        }
        Material::Rsa { n, e } => {
            let Some(params) = rsa_params(alg) else { return false };
            RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok()
        }
        Material::RsaDer(der) => {
            let Some(params) = rsa_params(alg) else { return false };
            UnparsedPublicKey::new(params, der).verify(message, sig).is_ok()
        }
        Material::Ec { point, .. } => {
            let algorithm: &dyn VerificationAlgorithm = match alg {
                ES256 => &signature::ECDSA_P256_SHA256_FIXED,
                ES384 => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return false,
            };
            UnparsedPublicKey::new(algorithm, point).verify(message, sig).is_ok()
        }
        Material::Ed25519(public) => {
            alg == EdDSA && UnparsedPublicKey::new(&signature::ED25519, public).verify(message, sig).is_ok()
        }
    }
}

fn rsa_params(alg: Alg) -> Option<&'static signature::RsaParameters> {
    use Alg::*;
    Some(match alg {
        RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}
