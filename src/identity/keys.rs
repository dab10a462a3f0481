//! Verification keys: a JWKS document (`{"keys": [...]}`), a single JWK, or PEM public keys
//! (`PUBLIC KEY` = SubjectPublicKeyInfo, `RSA PUBLIC KEY` = PKCS#1). Each key knows its type
//! and, when the JWK says so, its one algorithm: `verify` only offers a key to the algorithms
//! of its type, so an RSA public key can never be used as an HMAC secret.

use serde_json::{Map, Value};
use spki::der::Decode as _;
use spki::ObjectIdentifier;

use super::token;
use super::verify::Alg;

/// Bounds on what a key file may hold, checked while loading (configuration time).
pub const MAX_FILE_LEN: usize = 1 << 20;
pub const MAX_KEYS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Material {
    /// Big-endian modulus and exponent (a JWK's `n` and `e`).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// DER `RSAPublicKey` (PKCS#1), as a PEM file holds it.
    RsaDer(Vec<u8>),
    /// Uncompressed SEC1 point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
    /// An HMAC secret (`kty: oct`).
    Oct(Vec<u8>),
}

impl core::fmt::Debug for Material {
    // Never print a secret, even in a test failure.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Material::Rsa { .. } | Material::RsaDer(_) => "RSA",
            Material::Ec { curve: Curve::P256, .. } => "EC P-256",
            Material::Ec { curve: Curve::P384, .. } => "EC P-384",
            Material::Ed25519(_) => "OKP Ed25519",
            Material::Oct(_) => "oct",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub kid: Option<String>,
    /// The JWK's `alg`: this key verifies that algorithm only.
    pub alg: Option<Alg>,
    pub material: Material,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`: same key type (and curve), the
    /// JWK's own `alg` if it has one, and an HMAC secret at least as long as the hash (RFC 7518
    /// §3.2).
    pub fn accepts(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        use Alg::*;
        match (&self.material, alg) {
            (Material::Rsa { .. } | Material::RsaDer(_), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => true,
            (Material::Ec { curve: Curve::P256, .. }, ES256) => true,
            (Material::Ec { curve: Curve::P384, .. }, ES384) => true,
            (Material::Ed25519(_), EdDSA) => true,
            (Material::Oct(secret), HS256) => secret.len() >= 32,
            (Material::Oct(secret), HS384) => secret.len() >= 48,
            (Material::Oct(secret), HS512) => secret.len() >= 64,
            _ => false,
        }
    }

    pub fn is_symmetric(&self) -> bool {
        matches!(self.material, Material::Oct(_))
    }
}

/// The keys of one `shield_jwt_key_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Reads a JWKS / JWK (JSON) or PEM document; the error says which key is wrong and why.
    pub fn load(text: &[u8]) -> Result<KeySet, String> {
        if text.len() > MAX_FILE_LEN {
            return Err(format!("key file larger than {MAX_FILE_LEN} bytes"));
        }
        let trimmed = text.trim_ascii_start();
        let keys = if trimmed.starts_with(b"{") {
            jwks(trimmed)?
        } else if trimmed.starts_with(b"-----BEGIN") {
            pem(core::str::from_utf8(trimmed).map_err(|_| "PEM is not ASCII")?)?
        } else {
            return Err("neither JSON (a JWKS or a JWK) nor PEM".into());
        };
        if keys.is_empty() {
            return Err("no usable signing key".into());
        }
        if keys.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        Ok(KeySet { keys })
    }

    /// Candidates for a token: its `kid`'s keys if it names one, else every key; always only
    /// the keys that accept `alg`.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Alg) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys.iter().filter(move |k| k.accepts(alg) && (kid.is_none() || k.kid.as_deref() == kid))
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn jwks(json: &[u8]) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(json).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(doc) = doc else { return Err("not a JSON object".into()) };
    match doc.get("keys") {
        Some(Value::Array(keys)) => {
            let mut out = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                let Value::Object(k) = k else { return Err(format!("key #{}: not a JSON object", i + 1)) };
                if let Some(key) = jwk(k).map_err(|e| format!("key #{}{}: {e}", i + 1, kid_suffix(k)))? {
                    out.push(key);
                }
            }
            Ok(out)
        }
        Some(_) => Err("\"keys\" is not an array".into()),
        None => Ok(jwk(&doc)?.into_iter().collect()),
    }
}

fn kid_suffix(k: &Map<String, Value>) -> String {
    match k.get("kid") {
        Some(Value::String(kid)) => format!(" (kid \"{kid}\")"),
        _ => String::new(),
    }
}

/// One JWK (RFC 7517/7518/8037). `Ok(None)`: a key this verifier does not use (an encryption
/// key, an unknown `kty` or curve), skipped as RFC 7517 §5 asks.
fn jwk(k: &Map<String, Value>) -> Result<Option<Key>, String> {
    let text = |name: &str| -> Result<Option<&str>, String> {
        match k.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("\"{name}\" is not a string")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let s = text(name)?.ok_or_else(|| format!("\"{name}\" is missing"))?;
        let b = token::decode(s.as_bytes()).map_err(|_| format!("\"{name}\" is not base64url"))?;
        if b.is_empty() {
            return Err(format!("\"{name}\" is empty"));
        }
        Ok(b)
    };
    if text("use")?.is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(Value::Array(ops)) = k.get("key_ops") {
        if !ops.iter().any(|op| op == "verify") {
            return Ok(None);
        }
    }
    let alg = match text("alg")? {
        None => None,
        Some(name) => match Alg::parse(name) {
            Some(alg) => Some(alg),
            None => return Ok(None),
        },
    };
    let kid = text("kid")?.map(str::to_string);
    let material = match text("kty")?.ok_or("\"kty\" is missing")? {
        "RSA" => Material::Rsa { n: bytes("n")?, e: bytes("e")? },
        "EC" => {
            let (curve, len) = match text("crv")?.ok_or("\"crv\" is missing")? {
                "P-256" => (Curve::P256, 32),
                "P-384" => (Curve::P384, 48),
                _ => return Ok(None),
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != len || y.len() != len {
                return Err(format!("\"x\" and \"y\" must be {len} bytes each"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::Ec { curve, point }
        }
        "OKP" => match text("crv")?.ok_or("\"crv\" is missing")? {
            "Ed25519" => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err("\"x\" must be 32 bytes".into());
                }
                Material::Ed25519(x)
            }
            _ => return Ok(None),
        },
        "oct" => Material::Oct(bytes("k")?),
        _ => return Ok(None),
    };
    let key = Key { kid, alg, material };
    if let Some(alg) = alg {
        if !key.accepts(alg) {
            return Err(format!("\"alg\" {} does not fit this key's type (or the secret is too short)", alg.name()));
        }
    }
    Ok(Some(key))
}

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// Every PEM block of the file, in order; a private key is refused rather than used.
fn pem(text: &str) -> Result<Vec<Key>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let end_marker = block.find("-----END ").ok_or("PEM block without END line")?;
        let end = block[end_marker..].find('\n').map_or(block.len(), |i| end_marker + i + 1);
        let n = out.len() + 1;
        let (label, der) =
            spki::der::pem::decode_vec(&block.as_bytes()[..end]).map_err(|e| format!("PEM block #{n}: {e}"))?;
        let material = match label {
            "PUBLIC KEY" => spki_key(&der).map_err(|e| format!("PEM block #{n}: {e}"))?,
            "RSA PUBLIC KEY" => Material::RsaDer(der),
            "CERTIFICATE" => return Err(format!("PEM block #{n}: a certificate; give its public key")),
            other if other.contains("PRIVATE") => {
                return Err(format!("PEM block #{n}: a private key (\"{other}\"); give the public key"))
            }
            other => return Err(format!("PEM block #{n}: unsupported \"{other}\"")),
        };
        out.push(Key { kid: None, alg: None, material });
        rest = &block[end..];
    }
    Ok(out)
}

fn spki_key(der: &[u8]) -> Result<Material, String> {
    let info = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|e| format!("SubjectPublicKeyInfo: {e}"))?;
    let bits = info.subject_public_key.as_bytes().ok_or("key bits not byte-aligned")?.to_vec();
    let oid = info.algorithm.oid;
    if oid == RSA_ENCRYPTION {
        Ok(Material::RsaDer(bits))
    } else if oid == EC_PUBLIC_KEY {
        let curve = info.algorithm.parameters_oid().map_err(|_| "EC key without a named curve")?;
        let (curve, len) = match curve {
            c if c == SECP256R1 => (Curve::P256, 65),
            c if c == SECP384R1 => (Curve::P384, 97),
            c => return Err(format!("unsupported curve {c}")),
        };
        if bits.len() != len || bits[0] != 4 {
            return Err("EC point not in uncompressed form".into());
        }
        Ok(Material::Ec { curve, point: bits })
    } else if oid == ED25519 {
        if bits.len() != 32 {
            return Err("Ed25519 key not 32 bytes".into());
        }
        Ok(Material::Ed25519(bits))
    } else {
        Err(format!("unsupported key algorithm {oid}"))
    }
}
