//! What every Redis feature shares, pure: RESP framing (`resp`), `shield_redis` URL parsing
//! (`url`), the replies a pipelined connection waits for with their deadlines (`pipeline`)
//! and the throttle for failure logs (`throttle`). The connection itself lives on
//! nginx's event loop, in `glue/redis/`.

pub mod pipeline;
pub mod resp;
pub mod throttle;
pub mod url;
