//! The response cache's pure core: RFC 9111 (and RFC 5861's stale windows) as functions of
//! headers and times, no nginx types. The glue (`glue/cache`) feeds it what a request and a
//! response carry and stores what it encodes.
//!
//! - `control`: `Cache-Control` directives of responses and requests;
//! - `policy`: what may be stored, for how long, and whether a stored response is still fresh;
//! - `revalidate`: validators for a conditional request, and a 304 merged into the entry;
//! - `vary`: `Vary` names and the secondary key;
//! - `entry`: the stored entry's binary format, shared by every backend and node;
//! - `keys`: variant keys and Redis key names;
//! - `tags`: cache tags (purge by tag) and their bounds;
//! - `invalidate`: the URIs an unsafe request invalidates (RFC 9111 §4.4);
//! - `status`: `$shield_cache_status` and `Cache-Status`.

pub mod control;
pub mod entry;
pub mod invalidate;
pub mod keys;
pub mod policy;
pub mod revalidate;
pub mod status;
pub mod tags;
pub mod vary;
