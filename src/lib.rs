//! ngx_http_shield_module.
//!
//! The crate is split in two halves:
//! - the **pure core** (every module below except `glue`): policy, algorithms, parsers and
//!   protocol code with no nginx types, unit-tested with plain `cargo test`;
//! - the **glue** (`glue/`): the nginx module table, directive callbacks, phase and filter
//!   handlers, variables, shared memory and the Redis peer connection. It only exists with the
//!   `module` feature and is never compiled into test binaries, which cannot link nginx symbols.

pub mod base64;
pub mod cache;
pub mod cors;
pub mod headers;

pub mod metrics;
pub mod parse;
pub mod ratelimit;
pub mod redis_script;
pub mod redis_url;
pub mod resp;
pub mod sha1;
pub mod shm_table;
pub mod filter;



#[cfg(all(feature = "module", not(test)))]
mod glue;
