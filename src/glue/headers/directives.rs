//! The directives of the response-header capability: security headers (`shield_headers`,
//! `shield_header`, `shield_csp*`, `shield_hsts`, `shield_strip_headers`,
//! `shield_cookie_flags`), CORS (`shield_cors*`) and cache policy (`shield_cache_*`). Each
//! handler parses its arguments into the block's [`LocConf`]; combinations are checked and
//! policies resolved at merge time (`conf.rs`).

use core::ffi::{c_char, c_void};

use ngx::ffi::{ngx_command_t, ngx_conf_t};

use crate::glue::conf::LocConf;
use crate::glue::util::{directive, set_once, ComplexValue};
use crate::headers::cache::CacheRule;
use crate::headers::cors::CorsPolicy;
use crate::headers::security::{self, CookieFlags, Mode};
use crate::parse::{self, ConfError};

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn flag(slot: &mut Option<bool>, args: &[&str]) -> Result<(), ConfError> {
    let v = parse::flag(args[0]).map_err(|e| e.0)?;
    set_once(slot, v)
}

pub extern "C" fn set_headers(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        if lc.headers.mode != Mode::Unset {
            return Err("value is duplicate".into());
        }
        lc.headers.mode = if parse::flag(args[0]).map_err(|e| e.0)? { Mode::On } else { Mode::Off };
        Ok(())
    })
}

pub extern "C" fn set_header(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let name = parse::header_name(args[0]).map_err(|e| e.0)?;
        if name.eq_ignore_ascii_case(security::HSTS) {
            return Err(format!("\"{name}\" is set with \"shield_hsts\"").into());
        }
        if name.eq_ignore_ascii_case(security::CSP) || name.eq_ignore_ascii_case(security::CSP_REPORT_ONLY) {
            return Err(format!("\"{name}\" is set with \"shield_csp\"").into());
        }
        let value = header_value(cf, args[1])?;
        Ok(lc.headers.set(name, value).map_err(|e| e.0)?)
    })
}

/// `off` removes the header; anything else is a (possibly variable) value.
fn header_value(cf: &mut ngx_conf_t, arg: &str) -> Result<Option<ComplexValue>, String> {
    if arg == "off" {
        return Ok(None);
    }
    parse::header_value(arg).map_err(|e| e.0)?;
    ComplexValue::compile(cf, arg).map(Some)
}

pub extern "C" fn set_csp(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        if args[0].is_empty() {
            return Err("empty policy".into());
        }
        let value = header_value(cf, args[0])?;
        lc.headers.set(security::CSP, value).map_err(|_| ConfError::Duplicate)
    })
}

pub extern "C" fn set_csp_report_only(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| flag(&mut lc.headers.csp_report_only, args))
}

pub extern "C" fn set_hsts(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let value = if args == ["off"] {
            None
        } else {
            let v = security::parse_hsts(args).map_err(|e| e.0)?;
            Some(ComplexValue::compile(cf, &v)?)
        };
        lc.headers.set(security::HSTS, value).map_err(|_| ConfError::Duplicate)
    })
}

pub extern "C" fn set_strip(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let list = if args == ["off"] {
            Vec::new()
        } else {
            args.iter().map(|a| parse::header_name(a).map(str::to_string).map_err(|e| e.0)).collect::<Result<_, _>>()?
        };
        set_once(&mut lc.headers.strip, list)
    })
}

pub extern "C" fn set_cookie_flags(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let flags = CookieFlags::parse(args).map_err(|e| e.0)?;
        set_once(&mut lc.headers.cookie, flags)
    })
}

pub extern "C" fn set_cors(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| flag(&mut lc.cors.enabled, args))
}

pub extern "C" fn set_cors_origins(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        // Validate now so the error points at this line; merge re-checks combinations.
        let mut probe = CorsPolicy::default();
        for a in args {
            probe.add_origin(a).map_err(|e| e.0)?;
        }
        if probe.any && lc.cors.credentials == Some(true) {
            return Err("\"*\" origin cannot be used with credentials".into());
        }
        set_once(&mut lc.cors.origins, owned(args))
    })
}

pub extern "C" fn set_cors_methods(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let methods = args
            .iter()
            .map(|m| {
                if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Ok(m.to_ascii_uppercase())
                } else {
                    Err(format!("invalid method \"{m}\""))
                }
            })
            .collect::<Result<_, _>>()?;
        set_once(&mut lc.cors.methods, methods)
    })
}

fn header_list(args: &[&str], allow_star: bool) -> Result<Vec<String>, String> {
    args.iter()
        .map(|h| {
            if allow_star && *h == "*" {
                return Ok("*".to_string());
            }
            parse::header_name(h).map(|h| h.to_ascii_lowercase()).map_err(|e| e.0)
        })
        .collect()
}

pub extern "C" fn set_cors_headers(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| set_once(&mut lc.cors.headers, header_list(args, true)?))
}

pub extern "C" fn set_cors_expose(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let list = args
            .iter()
            .map(|h| parse::header_name(h).map(str::to_string).map_err(|e| e.0))
            .collect::<Result<_, _>>()?;
        set_once(&mut lc.cors.expose, list)
    })
}

pub extern "C" fn set_cors_credentials(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        flag(&mut lc.cors.credentials, args)?;
        if lc.cors.credentials == Some(true) && lc.cors.origins.as_ref().is_some_and(|o| o.iter().any(|o| o == "*")) {
            return Err("\"*\" origin cannot be used with credentials".into());
        }
        Ok(())
    })
}

pub extern "C" fn set_cors_max_age(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let secs = parse::time(args[0]).map_err(|e| e.0)?.as_secs();
        set_once(&mut lc.cors.max_age, u32::try_from(secs).map_err(|_| format!("invalid time \"{}\"", args[0]))?)
    })
}

pub extern "C" fn set_cache_control(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        // `off` stands alone in its block: it switches inherited rules off.
        let rules = lc.cache.rules.get_or_insert_with(Vec::new);
        if args == ["off"] || lc.cache.off {
            if !rules.is_empty() || lc.cache.off {
                return Err("\"off\" cannot be combined with other rules".into());
            }
            lc.cache.off = true;
            return Ok(());
        }
        rules.push(CacheRule::parse(args).map_err(|e| e.0)?);
        Ok(())
    })
}

pub extern "C" fn set_cache_override(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| flag(&mut lc.cache.override_upstream, args))
}

pub extern "C" fn set_cache_private(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| flag(&mut lc.cache.private_no_store, args))
}
