//! `shield_jwt*` and `shield_csrf*` directive handlers: each parses its arguments with the pure
//! core's parsers and reports through `util::directive` (nginx's words, file:line).

use core::ffi::{c_char, c_void};
use std::rc::Rc;

use ngx::ffi::{ngx_command_t, ngx_conf_t};

use super::{CsrfMode, JwtMode, LoadedKeys};
use crate::glue::util::{directive, set_once, ComplexValue};
use crate::glue::LocConf;
use crate::headers::cors::normalize_origin;
use crate::identity::claims::{Rules, MAX_LEEWAY_SECS};
use crate::identity::keys::KeySet;
use crate::identity::verify::Alg;
use crate::parse::{self, ConfError};

pub extern "C" fn set_jwt(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let mode = match args[0] {
            "on" => JwtMode::On,
            "optional" => JwtMode::Optional,
            "off" => JwtMode::Off,
            other => return Err(ConfError::InvalidParameter(other.to_string())),
        };
        lc.identity.jwt_here = true;
        set_once(&mut lc.identity.mode, mode)
    })
}

/// Relative paths are taken from the configuration's directory, as `ssl_certificate`'s are.
fn full_path(cf: &ngx_conf_t, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    // SAFETY: cf->cycle is valid during configuration.
    let prefix = unsafe { (*cf.cycle).conf_prefix.to_string() };
    format!("{prefix}{path}")
}

pub extern "C" fn set_key_file(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        if lc.identity.keys.is_some() {
            return Err(ConfError::Duplicate);
        }
        let path = full_path(cf, args[0]);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
        let keys = KeySet::load(&bytes).map_err(|e| format!("\"{path}\": {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let digest: [u8; 32] = digest.as_ref().try_into().map_err(|_| "digest")?;
        lc.identity.jwt_here = true;
        lc.identity.keys = Some(Rc::new(LoadedKeys { path, keys, digest }));
        Ok(())
    })
}

pub extern "C" fn set_token(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        if !args[0].contains('$') {
            return Err(format!("invalid value \"{}\": a variable is expected", args[0]).into());
        }
        let value = ComplexValue::compile(cf, args[0])?;
        lc.identity.jwt_here = true;
        set_once(&mut lc.identity.token, value)
    })
}

pub extern "C" fn set_algorithms(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let mut algs = Vec::new();
        for a in args {
            if a.eq_ignore_ascii_case("none") {
                return Err("\"none\" is never accepted".into());
            }
            let alg = Alg::parse(a).ok_or_else(|| ConfError::InvalidParameter(a.to_string()))?;
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        lc.identity.jwt_here = true;
        set_once(&mut lc.identity.algorithms, algs)
    })
}

/// Several `shield_jwt_require` lines in one block add up (every rule must hold).
pub extern "C" fn set_require(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let rules = lc.identity.require.get_or_insert_with(Rules::default);
        for a in args {
            rules.add(a)?;
        }
        lc.identity.jwt_here = true;
        Ok(())
    })
}

pub extern "C" fn set_leeway(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let t = parse::time(args[0])?;
        if t.as_secs() > MAX_LEEWAY_SECS || t.subsec_millis() != 0 {
            return Err(ConfError::OutOfRange {
                what: "leeway",
                value: args[0].to_string(),
                min: 0,
                max: MAX_LEEWAY_SECS,
            });
        }
        lc.identity.jwt_here = true;
        set_once(&mut lc.identity.leeway, t.as_secs())
    })
}

pub extern "C" fn set_exp(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let required = match args[0] {
            "required" => true,
            "optional" => false,
            other => return Err(ConfError::InvalidParameter(other.to_string())),
        };
        lc.identity.jwt_here = true;
        set_once(&mut lc.identity.require_exp, required)
    })
}

pub extern "C" fn set_cache(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let on = parse::flag(args[0])?;
        lc.identity.jwt_here = true;
        set_once(&mut lc.identity.cache, on)
    })
}

pub extern "C" fn set_csrf(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let mode = match args[0] {
            "on" => CsrfMode::On,
            "report" => CsrfMode::Report,
            "off" => CsrfMode::Off,
            other => return Err(ConfError::InvalidParameter(other.to_string())),
        };
        lc.identity.csrf_here = true;
        set_once(&mut lc.identity.csrf, mode)
    })
}

fn origins(args: &[&str]) -> Result<Vec<String>, ConfError> {
    args.iter().map(|a| normalize_origin(a).map_err(ConfError::from)).collect()
}

pub extern "C" fn set_csrf_origins(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        lc.identity.csrf_here = true;
        set_once(&mut lc.identity.csrf_origins, origins(args)?)
    })
}

pub extern "C" fn set_csrf_trusted(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        lc.identity.csrf_here = true;
        // `off`: trust no other origin (not even the CORS allowlist).
        let trusted = if args == ["off"] { Vec::new() } else { origins(args)? };
        set_once(&mut lc.identity.csrf_trusted, trusted)
    })
}

pub extern "C" fn set_csrf_bypass(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        if let Some(bad) = args.iter().find(|a| !a.starts_with('/')) {
            return Err(format!("invalid path \"{bad}\": it must start with \"/\"").into());
        }
        lc.identity.csrf_here = true;
        set_once(&mut lc.identity.csrf_bypass, args.iter().map(|a| a.to_string()).collect())
    })
}
