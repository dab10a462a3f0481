//! The compact JWS serialisation (RFC 7515 §7.1): `header.payload.signature`, each part
//! base64url without padding. Parsing is bounded before any decoding: a token longer than
//! [`MAX_TOKEN_LEN`] is rejected on its length alone, so a huge header or ten thousand claims
//! cost one comparison; JSON nesting is capped by serde_json's recursion limit (128).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Longest token accepted, in bytes. Identity-provider access tokens are typically under
/// 2 KiB; nginx's default `large_client_header_buffers` is 8 KiB for a whole header line.
pub const MAX_TOKEN_LEN: usize = 8192;

/// Why a token is not even a candidate for verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    TooLong,
    /// Not three dot-separated parts.
    Shape,
    Base64,
    /// The header or payload is not a JSON object.
    Json,
    /// `alg` missing or not a string, `kid` not a string.
    Header,
    /// A `crit` header: extensions this verifier does not implement must fail (RFC 7515 §4.1.11).
    Critical,
}

impl Malformed {
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::TooLong => "token too long",
            Malformed::Shape => "not a compact JWS",
            Malformed::Base64 => "bad base64url",
            Malformed::Json => "header or payload not a JSON object",
            Malformed::Header => "bad header (alg, kid)",
            Malformed::Critical => "unsupported crit header",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Token<'a> {
    pub header: Header,
    pub claims: Map<String, Value>,
    /// `header.payload` as sent: the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
}

pub fn parse(token: &[u8]) -> Result<Token<'_>, Malformed> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Malformed::TooLong);
    }
    let mut parts = token.splitn(4, |&b| b == b'.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(Malformed::Shape);
    };
    if h.is_empty() || p.is_empty() {
        return Err(Malformed::Shape);
    }
    let header = object(&decode(h)?)?;
    let claims = object(&decode(p)?)?;
    let signature = decode(s)?;
    if header.contains_key("crit") {
        return Err(Malformed::Critical);
    }
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(Malformed::Header),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Malformed::Header),
    };
    Ok(Token { header: Header { alg, kid }, claims, signing_input: &token[..h.len() + 1 + p.len()], signature })
}

/// Strict base64url: no padding, no whitespace, no non-zero trailing bits.
pub fn decode(part: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut out = vec![0u8; part.len() * 3 / 4 + 3];
    let n = URL_SAFE_NO_PAD.decode_slice(part, &mut out).map_err(|_| Malformed::Base64)?;
    out.truncate(n);
    Ok(out)
}

fn object(json: &[u8]) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_slice(json) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Malformed::Json),
    }
}

/// The token in an `Authorization` value: `Bearer <token>` (scheme case-insensitive, RFC 6750
/// §2.1); any other value is returned as it is, so `$cookie_x` or `$arg_x` work unchanged.
pub fn strip_bearer(value: &[u8]) -> &[u8] {
    let value = value.trim_ascii();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii_start(),
        _ => value,
    }
}

/// The token of an `Authorization: Bearer <token>` header; `None` for another scheme (Basic,
/// Digest), which carries no bearer token.
pub fn bearer(authorization: &[u8]) -> Option<&[u8]> {
    let value = authorization.trim_ascii();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => Some(value[7..].trim_ascii_start()),
        _ => None,
    }
}

/// The `kid` of a token's header, decoding the header only (to decide whether a fetched key set
/// lacks it, before the whole token is parsed).
pub fn kid(token: &[u8]) -> Option<String> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let header = token.split(|&b| b == b'.').next()?;
    match object(&decode(header).ok()?).ok()?.get("kid") {
        Some(Value::String(kid)) => Some(kid.clone()),
        _ => None,
    }
}
