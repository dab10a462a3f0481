//! Claim checks (RFC 7519 §4.1) and the operator's rules, and the status a request ends with.
//!
//! `exp` is required unless configured otherwise; `exp` and `nbf` allow `leeway` seconds of
//! clock skew. `iss` and `aud` rules decide whether the token is meant for this site at all
//! (INVALID, 401); any other claim rule is an authorisation decision (FORBIDDEN, 403).

use serde_json::{Map, Value};

use super::lookup;

/// Largest `shield_jwt_leeway`: skew beyond a few minutes is a broken clock, not skew.
pub const MAX_LEEWAY_SECS: u64 = 300;

/// `$shield_jwt_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Valid,
    Missing,
    Expired,
    Invalid,
    Forbidden,
}

impl Status {
    pub const ALL: [Status; 5] = [Status::Valid, Status::Missing, Status::Expired, Status::Invalid, Status::Forbidden];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "VALID",
            Status::Missing => "MISSING",
            Status::Expired => "EXPIRED",
            Status::Invalid => "INVALID",
            Status::Forbidden => "FORBIDDEN",
        }
    }
}

/// One `name=value[,value...]` rule: the claim at `path` (a string, number or boolean, or an
/// array holding one) equals one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    pub path: Vec<String>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub leeway_secs: u64,
    pub require_exp: bool,
    /// Accepted issuers; empty: any.
    pub issuers: Vec<String>,
    /// Accepted audiences (the token's `aud`, a string or an array, must hold one); empty: any.
    pub audiences: Vec<String>,
    pub claims: Vec<ClaimRule>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { leeway_secs: 0, require_exp: true, issuers: Vec::new(), audiences: Vec::new(), claims: Vec::new() }
    }
}

/// Why verified claims are not accepted, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Expired,
    NoExp,
    NotYetValid,
    /// `exp` / `nbf` not a number.
    BadTime(&'static str),
    Issuer,
    Audience,
    Claim(String),
}

impl Failure {
    pub fn status(&self) -> Status {
        match self {
            Failure::Expired => Status::Expired,
            Failure::Claim(_) => Status::Forbidden,
            _ => Status::Invalid,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Failure::Expired => "expired".into(),
            Failure::NoExp => "no exp claim".into(),
            Failure::NotYetValid => "nbf in the future".into(),
            Failure::BadTime(name) => format!("\"{name}\" is not a number"),
            Failure::Issuer => "issuer not accepted".into(),
            Failure::Audience => "audience not accepted".into(),
            Failure::Claim(path) => format!("claim rule \"{path}\" not met"),
        }
    }
}

/// A NumericDate claim (seconds since the epoch, fractions allowed).
fn time(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(Failure::BadTime(name)),
        Some(_) => Err(Failure::BadTime(name)),
    }
}

/// `exp` as a Unix time, for the token cache (`None` without one).
pub fn expiry(claims: &Map<String, Value>) -> Option<f64> {
    time(claims, "exp").ok().flatten()
}

impl Rules {
    /// Checks claims at Unix time `now` (seconds).
    pub fn check(&self, claims: &Map<String, Value>, now: f64) -> Result<(), Failure> {
        let leeway = self.leeway_secs as f64;
        match time(claims, "exp")? {
            // RFC 7519 §4.1.4: the token must not be accepted on or after exp.
            Some(exp) if now >= exp + leeway => return Err(Failure::Expired),
            Some(_) => {}
            None if self.require_exp => return Err(Failure::NoExp),
            None => {}
        }
        if let Some(nbf) = time(claims, "nbf")? {
            if now + leeway < nbf {
                return Err(Failure::NotYetValid);
            }
        }
        if !self.issuers.is_empty() {
            let ok = matches!(claims.get("iss"), Some(Value::String(iss)) if self.issuers.contains(iss));
            if !ok {
                return Err(Failure::Issuer);
            }
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => self.audiences.contains(aud),
                Some(Value::Array(auds)) => {
                    auds.iter().any(|a| matches!(a, Value::String(a) if self.audiences.contains(a)))
                }
                _ => false,
            };
            if !ok {
                return Err(Failure::Audience);
            }
        }
        for rule in &self.claims {
            let value = lookup::path(claims, &rule.path);
            if !value.is_some_and(|v| holds_one_of(v, &rule.values)) {
                return Err(Failure::Claim(rule.path.join(".")));
            }
        }
        Ok(())
    }

    /// Adds a parent block's requirements to these (a location's rules add to its server's).
    pub fn extend_from(&mut self, parent: &Rules) {
        // A block's own issuers or audiences replace its parent's (a location may serve
        // another audience); claim rules add up.
        if self.issuers.is_empty() {
            self.issuers = parent.issuers.clone();
        }
        if self.audiences.is_empty() {
            self.audiences = parent.audiences.clone();
        }
        for rule in &parent.claims {
            if !self.claims.contains(rule) {
                self.claims.push(rule.clone());
            }
        }
    }

    /// Adds one `shield_jwt_require` parameter: `iss=a[,b]`, `aud=a[,b]` or
    /// `claim[.nested]=value[,value]`.
    pub fn add(&mut self, param: &str) -> Result<(), String> {
        let (name, values) = param.split_once('=').ok_or_else(|| format!("invalid parameter \"{param}\""))?;
        let values: Vec<String> = values.split(',').map(str::to_string).collect();
        if name.is_empty() || values.iter().any(String::is_empty) {
            return Err(format!("invalid parameter \"{param}\""));
        }
        let path: Vec<String> = name.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("invalid claim name \"{name}\""));
        }
        match name {
            "iss" => self.issuers.extend(values),
            "aud" => self.audiences.extend(values),
            "exp" | "nbf" | "iat" => return Err(format!("\"{name}\" is checked as a time, not a value")),
            _ => self.claims.push(ClaimRule { path, values }),
        }
        Ok(())
    }
}

fn holds_one_of(value: &Value, wanted: &[String]) -> bool {
    let scalar_is = |v: &Value| match v {
        Value::String(s) => wanted.iter().any(|w| w == s),
        Value::Number(_) | Value::Bool(_) => {
            let text = v.to_string();
            wanted.contains(&text)
        }
        _ => false,
    };
    match value {
        Value::Array(items) => items.iter().any(scalar_is),
        v => scalar_is(v),
    }
}
