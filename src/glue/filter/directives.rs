//! The `shield_filter_*` directive handlers: each parses into the location's `WafLoc` and
//! reports failures through `util::directive` in nginx's words; numbers are range-checked.

use core::ffi::{c_char, c_void};

use ngx::ffi::{ngx_command_t, ngx_conf_t};
use ngx::http::HttpModuleMainConf;

use super::audit::AuditLog;
use super::Mode;
use crate::filter::ip::Cidr;
use crate::filter::rules;
use crate::filter::{Engine, Limits};
use crate::glue::util::{directive, set_once};
use crate::glue::LocConf;
use crate::glue::Shield;
use crate::parse::{self, ConfError};

fn register_metrics(cf: &mut ngx_conf_t) {
    if let Some(mcf) = Shield::main_conf_mut(cf) {
        mcf.waf.register(&mut mcf.registry);
    }
}

pub extern "C" fn set_filter(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let mode = match args[0] {
            "on" => Mode::Block,
            "off" => Mode::Off,
            "detect" => Mode::Detect,
            other => return Err(format!("invalid value \"{other}\", it must be \"on\", \"off\" or \"detect\"").into()),
        };
        register_metrics(cf);
        set_once(&mut lc.waf.mode, mode)
    })
}

pub extern "C" fn set_paranoia(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.waf.paranoia, parse::bounded("paranoia", args[0], 1, 4)? as u8)
    })
}

pub extern "C" fn set_threshold(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.waf.threshold, parse::bounded("threshold", args[0], 1, rules::MAX_SCORE)? as u32)
    })
}

pub extern "C" fn set_status(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.waf.status, parse::status(args[0], 400, 599)?)
    })
}

pub extern "C" fn set_exclude(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| lc.waf.exclusions.add(args))
}

pub extern "C" fn set_rules_file(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let path = conf_path(cf, args[0]);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
        // Every rule is checked on its own (numbers, pattern), so an error names its line.
        let rules = rules::parse_rules_file(&text).map_err(|(line, e)| format!("{e} in {path}:{line}"))?;
        lc.waf.custom.get_or_insert_with(Vec::new).extend(rules);
        Ok(())
    })
}

pub extern "C" fn set_rule(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let rule = rules::parse_rule_args(args)?;
        Engine::new(4, std::slice::from_ref(&rule))?;
        lc.waf.custom.get_or_insert_with(Vec::new).push(rule);
        Ok(())
    })
}

/// `shield_filter_secrules FILE|PATTERN ... [remove=ID,...] | off`.
pub extern "C" fn set_secrules(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let value = if args == ["off"] { None } else { Some(super::secrules::load(cf, args)?) };
        set_once(&mut lc.waf.secrules, value)
    })
}

pub extern "C" fn set_limits(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let mut limits = Limits::default();
        for a in args {
            limits.set(a)?;
        }
        set_once(&mut lc.waf.limits, limits)
    })
}

pub extern "C" fn set_methods(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let list = args
            .iter()
            .map(|m| {
                if m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Ok(m.to_ascii_uppercase())
                } else {
                    Err(format!("invalid method \"{m}\""))
                }
            })
            .collect::<Result<_, _>>()?;
        set_once(&mut lc.waf.methods, list)
    })
}

pub extern "C" fn set_content_types(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.waf.content_types, args.iter().map(|s| s.to_ascii_lowercase()).collect())
    })
}

fn cidrs(args: &[&str]) -> Result<Vec<Cidr>, ConfError> {
    Ok(args.iter().map(|a| Cidr::parse(a)).collect::<Result<_, _>>()?)
}

pub extern "C" fn set_allow(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| set_once(&mut lc.waf.allow, cidrs(args)?))
}

pub extern "C" fn set_deny(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| set_once(&mut lc.waf.deny, cidrs(args)?))
}

pub extern "C" fn set_scanners(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| set_once(&mut lc.waf.scanners, parse::flag(args[0])?))
}

pub extern "C" fn set_audit_log(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let log = if args[0] == "off" { None } else { Some(AuditLog::open(cf, args[0])?) };
        set_once(&mut lc.waf.audit_log, log)
    })
}

pub extern "C" fn set_inspect_headers(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        // `all` (alone) is every header but the noise: an empty list.
        let list = if args == ["all"] {
            Vec::new()
        } else if args.contains(&"all") {
            return Err("\"all\" cannot be combined with header names".into());
        } else {
            args.iter().map(|h| parse::header_name(h).map(|h| h.to_ascii_lowercase())).collect::<Result<_, _>>()?
        };
        set_once(&mut lc.waf.inspect_headers, list)
    })
}

/// A relative path is relative to nginx's prefix, like nginx's own file directives.
fn conf_path(cf: &ngx_conf_t, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    // SAFETY: cf->cycle is valid during configuration.
    let prefix = unsafe { (*cf.cycle).prefix.to_string() };
    format!("{}{path}", prefix)
}
