//! `shield_jwt*` and `shield_csrf*` directive handlers: each parses its arguments with the pure
//! core's parsers and reports through `util::directive` (nginx's words, file:line).

use core::ffi::{c_char, c_void};
use std::rc::Rc;

use ngx::ffi::{ngx_command_t, ngx_conf_t};

use ngx::http::HttpModuleMainConf;

use super::{CsrfMode, JwtMode, KeyRequest, KeySource, LoadedKeys};
use crate::glue::util::{directive, set_once, ComplexValue};
use crate::glue::LocConf;
use crate::glue::Shield;
use crate::headers::cors::normalize_origin;
use crate::identity::claims::{Rules, MAX_LEEWAY_SECS};
use crate::identity::jwks;
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
        match lc.identity.source {
            Some(KeySource::File(_)) => return Err(ConfError::Duplicate),
            Some(KeySource::Fetched(_)) => return Err(EXCLUSIVE.into()),
            None => {}
        }
        let path = full_path(cf, args[0]);
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read \"{path}\": {e}"))?;
        let keys = KeySet::load(&bytes).map_err(|e| format!("\"{path}\": {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let digest: [u8; 32] = digest.as_ref().try_into().map_err(|_| "digest")?;
        lc.identity.jwt_here = true;
        lc.identity.source = Some(KeySource::File(Rc::new(LoadedKeys { path, keys, digest })));
        Ok(())
    })
}

const EXCLUSIVE: &str = "one of \"shield_jwt_key_file\" and \"shield_jwt_key_request\" per block";

/// `shield_jwt_key_request /uri [cooldown=time]`: the URI is requested as a subrequest (an
/// `internal` location proxying to the identity provider's JWKS endpoint).
pub extern "C" fn set_key_request(cf: *mut ngx_conf_t, cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
    directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        match lc.identity.source {
            Some(KeySource::Fetched(_)) => return Err(ConfError::Duplicate),
            Some(KeySource::File(_)) => return Err(EXCLUSIVE.into()),
            None => {}
        }
        let uri = args[0];
        if !uri.starts_with('/') || uri.contains(['?', '$']) || uri.bytes().any(|b| b <= b' ') {
            return Err(format!("invalid URI \"{uri}\": a local path, as for auth_request").into());
        }
        let mut cooldown_secs = jwks::DEFAULT_COOLDOWN_SECS;
        for a in &args[1..] {
            match parse::param(a) {
                Some(("cooldown", v)) => {
                    let t = parse::time(v)?;
                    if t.as_secs() < 1 || t.as_secs() > jwks::MAX_COOLDOWN_SECS || t.subsec_millis() != 0 {
                        return Err(ConfError::OutOfRange {
                            what: "cooldown",
                            value: v.to_string(),
                            min: 1,
                            max: jwks::MAX_COOLDOWN_SECS,
                        });
                    }
                    cooldown_secs = t.as_secs();
                }
                _ => return Err(ConfError::InvalidParameter(a.to_string())),
            }
        }
        let mcf = Shield::main_conf_mut(cf).ok_or("no main configuration")?;
        let requests = &mut mcf.identity.key_requests;
        let slot = requests.iter().position(|u| u == uri).unwrap_or_else(|| {
            requests.push(uri.to_string());
            requests.len() - 1
        });
        lc.identity.jwt_here = true;
        lc.identity.source = Some(KeySource::Fetched(KeyRequest { slot, cooldown_secs }));
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
