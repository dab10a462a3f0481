//! What every Redis feature shares, pure: RESP framing (`resp`), `shield_redis` URL parsing
//! (`url`), the replies a pipelined connection waits for with their deadlines (`pipeline`)
//! the throttle for failure logs (`throttle`), what a worker asks Redis Sentinel (`sentinel`)
//! and how Redis Cluster routes keys (`cluster`). The connections themselves live on nginx's
//! event loop, in `glue/redis/`.

pub mod cluster;
pub mod pipeline;
pub mod resp;
pub mod sentinel;
pub mod throttle;
pub mod url;
