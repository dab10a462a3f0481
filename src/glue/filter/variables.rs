//! `$shield_filter_status`, `$shield_filter_score`, `$shield_filter_rules`.

use ngx::ffi::ngx_http_request_t;

use crate::glue::RequestCtx;

pub fn status_variable(r: *mut ngx_http_request_t) -> Option<&'static str> {
    RequestCtx::peek(r).and_then(|c| c.waf.status)
}

pub fn score_variable(r: *mut ngx_http_request_t) -> Option<String> {
    RequestCtx::peek(r).filter(|c| c.waf.status.is_some()).map(|c| c.waf.score.to_string())
}

pub fn rules_variable(r: *mut ngx_http_request_t) -> Option<String> {
    RequestCtx::peek(r).filter(|c| c.waf.status.is_some()).map(|c| c.waf.rules.clone())
}
