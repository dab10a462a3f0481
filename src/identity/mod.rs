//! Identity at the edge, pure: what a request's bearer token proves and whether a cross-origin
//! request may change state. No nginx types; the glue (`glue/identity`) feeds it bytes, a clock
//! and its configuration.
//!
//! - `token`: the compact JWS form, cut and decoded under fixed bounds ([`token::MAX_TOKEN_LEN`]);
//! - `keys`: JWK / JWKS and PEM public keys, each bound to the one key type (and `alg`, when the
//!   JWK names it) it may verify;
//! - `verify`: the algorithm allowlist and the signature check, through `ring`;
//! - `claims`: `exp` / `nbf` / `iss` / `aud` and the operator's claim rules, and the status a
//!   request ends with;
//! - `lookup`: claim names as nginx variable names (`realm_access_roles`) resolved to values;
//! - `cache`: the per-worker bounded cache of verified tokens;
//! - `jwks`: when to fetch a key set from a JWKS endpoint, and how long it stays fresh;
//! - `csrf`: the cross-origin decision (Go 1.25 `CrossOriginProtection`).

pub mod cache;
pub mod claims;
pub mod csrf;
pub mod jwks;
pub mod keys;
pub mod lookup;
pub mod token;
pub mod verify;

#[cfg(test)]
mod tests;

pub use claims::Status;
