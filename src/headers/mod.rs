//! Response-header policy, pure: the security-header preset and its merge (`security`), CORS
//! (`cors`) and cache policy (`cache`). The glue's header filter applies them.

pub mod cache;
pub mod cors;
pub mod security;
