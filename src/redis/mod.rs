//! What every Redis feature shares, pure: RESP framing (`resp`) and `shield_redis` URL parsing
//! (`url`). The connection itself lives on nginx's event loop, in `glue/redis/`.

pub mod resp;
pub mod url;
