//! The cheap checks that run before any rule: request limits, encoding, NUL bytes, traversal
//! after normalisation, scanner user agents; each failure a stable code and a defined status.

use super::extract;
use super::transform::{self, Transform};
use crate::parse::{self, ConfError};

/// Request limits and hygiene, checked before any rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_uri: usize,
    pub max_args: usize,
    pub max_arg_name: usize,
    pub max_arg_value: usize,
    pub max_headers: usize,
    pub max_header_size: usize,
    /// Request bodies are inspected up to this many bytes.
    pub max_body: usize,
}

/// Stock nginx reads a request within `large_client_header_buffers 4 8k`: over HTTP/1.1 a
/// request line and each header line of at most 8k; over HTTP/2 all header fields together
/// (`:path` included) of at most 4 x 8k = 32k. The defaults are the most such a request can
/// carry, so a default never refuses what nginx itself accepts.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri: 32 * 1024,
            // `a&b&...`: two bytes per argument.
            max_args: 16 * 1024,
            max_arg_name: 32 * 1024,
            max_arg_value: 32 * 1024,
            // A one-byte field name (HTTP/2) costs one byte of the 32k.
            max_headers: 32 * 1024,
            max_header_size: 32 * 1024,
            max_body: 128 * 1024,
        }
    }
}

impl Limits {
    /// `shield_filter_limits uri=32k args=16k arg_name=32k arg_value=32k headers=32k
    /// header_size=32k body=128k`: `k`/`m` suffixes; each value is range-checked.
    pub fn set(&mut self, arg: &str) -> Result<(), ConfError> {
        let (k, v) = arg.split_once('=').ok_or_else(|| ConfError::InvalidParameter(arg.to_string()))?;
        const SIZE_MAX: u64 = 16 << 20;
        let (slot, what, min, max) = match k {
            "uri" => (&mut self.max_uri, "uri", 1, SIZE_MAX),
            "args" => (&mut self.max_args, "args", 1, 1_000_000),
            "arg_name" => (&mut self.max_arg_name, "arg_name", 1, SIZE_MAX),
            "arg_value" => (&mut self.max_arg_value, "arg_value", 1, SIZE_MAX),
            "headers" => (&mut self.max_headers, "headers", 1, 1_000_000),
            "header_size" => (&mut self.max_header_size, "header_size", 1, SIZE_MAX),
            // 0: bodies are not inspected. Inspection holds the inspected bytes once.
            "body" => (&mut self.max_body, "body", 0, 1 << 30),
            _ => return Err(ConfError::InvalidParameter(arg.to_string())),
        };
        let n = parse::size(v).map_err(|_| ConfError::InvalidParameter(arg.to_string()))? as u64;
        if !(min..=max).contains(&n) {
            return Err(ConfError::OutOfRange { what, value: v.to_string(), min, max });
        }
        *slot = n as usize;
        Ok(())
    }
}

/// Why a request failed hygiene: a stable short code for logs and variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hygiene {
    UriTooLong,
    TooManyArgs,
    ArgNameTooLong,
    ArgValueTooLong,
    TooManyHeaders,
    HeaderTooLarge,
    MethodNotAllowed,
    ContentTypeNotAllowed,
    NullByte,
    BadEncoding,
    Traversal,
    ScannerUserAgent,
    DeniedAddress,
    Smuggling,
}

impl Hygiene {
    pub fn code(self) -> &'static str {
        match self {
            Hygiene::UriTooLong => "uri_too_long",
            Hygiene::TooManyArgs => "too_many_args",
            Hygiene::ArgNameTooLong => "arg_name_too_long",
            Hygiene::ArgValueTooLong => "arg_value_too_long",
            Hygiene::TooManyHeaders => "too_many_headers",
            Hygiene::HeaderTooLarge => "header_too_large",
            Hygiene::MethodNotAllowed => "method_not_allowed",
            Hygiene::ContentTypeNotAllowed => "content_type_not_allowed",
            Hygiene::NullByte => "null_byte",
            Hygiene::BadEncoding => "bad_encoding",
            Hygiene::Traversal => "path_traversal",
            Hygiene::ScannerUserAgent => "scanner",
            Hygiene::DeniedAddress => "denied_address",
            Hygiene::Smuggling => "request_smuggling",
        }
    }

    /// The status a hygiene failure answers with when it is not a security block: malformed
    /// requests get 400, oversized ones 414/413/431, a forbidden method 405.
    pub fn status(self, block_status: u16) -> u16 {
        match self {
            Hygiene::BadEncoding | Hygiene::NullByte | Hygiene::Smuggling => 400,
            Hygiene::UriTooLong => 414,
            Hygiene::TooManyHeaders | Hygiene::HeaderTooLarge => 431,
            Hygiene::MethodNotAllowed => 405,
            Hygiene::ContentTypeNotAllowed => 415,
            _ => block_status,
        }
    }
}

/// Scanner and attack-tool user agents (case-insensitive substrings).
pub const SCANNERS: &[&str] = &[
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "wpscan",
    "dirbuster",
    "gobuster",
    "nuclei",
    "acunetix",
    "netsparker",
    "w3af",
    "havij",
    "zgrab",
    "openvas",
    "nessus",
    "arachni",
    "skipfish",
    "whatweb",
    "joomscan",
    "fimap",
    "commix",
    "xsstrike",
    "feroxbuster",
    "ffuf",
    "wfuzz",
    "burpcollaborator",
    "jorgee",
    "zmeu",
    "morfeus",
    "dirb/",
    "hydra",
];

/// Whether the user agent names a scanner: one case-insensitive multi-pattern pass (built once),
/// instead of a lower-cased copy and one window scan per name.
pub fn scanner(user_agent: &[u8]) -> bool {
    static NAMES: std::sync::OnceLock<aho_corasick::AhoCorasick> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            aho_corasick::AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .build(SCANNERS)
                .expect("the scanner names are literals")
        })
        .is_match(user_agent)
}

/// The raw request target checks: length, encoding, NUL, traversal after normalisation.
pub fn check_uri(limits: &Limits, raw_uri: &[u8]) -> Result<(), Hygiene> {
    if raw_uri.len() > limits.max_uri {
        return Err(Hygiene::UriTooLong);
    }
    let (path, query) = match raw_uri.iter().position(|&b| b == b'?') {
        Some(i) => (&raw_uri[..i], &raw_uri[i + 1..]),
        None => (raw_uri, &raw_uri[raw_uri.len()..]),
    };
    if transform::has_invalid_percent(raw_uri) {
        return Err(Hygiene::BadEncoding);
    }
    let decoded_path = transform::apply_all(&[Transform::UrlDecode], path);
    if decoded_path.contains(&0) || transform::url_decode(query).contains(&0) {
        return Err(Hygiene::NullByte);
    }
    let normal = transform::normalize_path(&decoded_path);
    if normal.split(|&b| b == b'/').any(|seg| seg == b"..") {
        return Err(Hygiene::Traversal);
    }
    let mut args = 0;
    for (name, value) in extract::pairs(query) {
        args += 1;
        if args > limits.max_args {
            return Err(Hygiene::TooManyArgs);
        }
        if name.len() > limits.max_arg_name {
            return Err(Hygiene::ArgNameTooLong);
        }
        if value.len() > limits.max_arg_value {
            return Err(Hygiene::ArgValueTooLong);
        }
    }
    Ok(())
}
