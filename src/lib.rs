//! ngx_http_shield_module.
//!
//! The crate is split in two halves, with one folder per capability in each, mirrored:
//! - the **pure core** (every module below except `glue`): policy, algorithms, parsers and
//!   protocol code with no nginx types, unit-tested with plain `cargo test`;
//! - the **glue** (`glue/`): the nginx module table, directive callbacks, phase and filter
//!   handlers, variables, shared memory and the Redis peer connection. It only exists with the
//!   `module` feature and is never compiled into test binaries, which cannot link nginx symbols.
//!
//! | core            | owns                                                                  |
//! |-----------------|-----------------------------------------------------------------------|
//! | `cache/`        | the response cache: RFC 9111 rules, Vary, the entry format         |
//! | `limit/`        | rate-limit arithmetic, the penalty box, the Redis scripts, the shm table |
//! | `redis/`        | RESP framing and `shield_redis` URLs: what every Redis feature shares  |
//! | `headers/`      | security headers, CORS, cache policy                                  |
//! | `filter/`       | the WAF: transforms, rules, extraction, the engine                    |
//! | `identity/`     | JWT verification (tokens, keys, claims, token cache) and CSRF decisions |
//! | `status/`       | the metrics registry                                                  |
//! | `parse`         | directive value grammar shared by every feature                       |

pub mod cache;
pub mod filter;
pub mod headers;
pub mod identity;
pub mod limit;
pub mod parse;
pub mod redis;
pub mod status;

#[cfg(all(feature = "module", not(test)))]
mod glue;
