//! What every Redis feature shares, pure: RESP framing (`resp`), `shield_redis` URL parsing
//! (`url`), the replies a pipelined connection waits for with their deadlines (`pipeline`)
//! the throttle for failure logs (`throttle`) and what a worker asks Redis Sentinel (`sentinel`). The connection itself lives on
//! nginx's event loop, in `glue/redis/`.

pub mod pipeline;
pub mod resp;
pub mod sentinel;
pub mod throttle;
pub mod url;
