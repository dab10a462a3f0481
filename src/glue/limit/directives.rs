//! The limiter's directives and the configuration they build: zones (main level), and per
//! location the limits, bans and controls, merged the nginx way.

use core::ffi::{c_char, c_void};
use core::ptr;

use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_uint_t, NGX_ERROR, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE,
    NGX_LOG_WARN,
};
use ngx::http::HttpModuleMainConf;

use super::zone::{zone_init, ZoneShm};
use crate::glue::util::{set_once, ComplexValue};
use crate::glue::{LocConf, MainConf, Shield};
use crate::limit::outcome::{FailPolicy, Policy};
use crate::limit::{bounds, rewrite_scan, Algorithm, Ban, HeaderMode, Limit};
use crate::parse::{self, ConfError, Rate};
use crate::status::metrics::Registry;

// --- configuration ------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Backend {
    Redis,
    Local,
}

pub(super) struct ZoneSlots {
    pub(super) passed: usize,
    pub(super) delayed: usize,
    pub(super) rejected: usize,
    pub(super) dry_run: usize,
    pub(super) error: usize,
    pub(super) banned: usize,
}

pub struct Zone {
    pub name: String,
    pub(super) key: ComplexValue,
    /// The key's variable index when the key is exactly one variable (`$binary_remote_addr`):
    /// read directly, without running the complex-value script or copying.
    pub(super) key_var: Option<ngx_uint_t>,
    pub(super) key_source: String,
    /// Every variable the key reads, by name and index (a key `set` assigns before a
    /// `return` is refused: see `rewrite`).
    pub(super) key_vars: Vec<(String, ngx_uint_t)>,
    pub(super) rate: Rate,
    pub(super) algorithm: Algorithm,
    pub(super) backend: Backend,
    pub(super) config_hash: u64,
    pub(super) shm: *mut ZoneShm,
    /// Set by zone_init: the zone's slab pool, whose mutex guards the table.
    pub(super) pool: Option<ngx::core::SlabPool>,
    pub(super) slots: ZoneSlots,
}

#[derive(Default)]
pub struct LimitMain {
    // Boxed: the shared-memory zone keeps each Zone's address (shm_zone.data) until its init
    // runs, so a Zone must not move when the Vec grows.
    #[allow(clippy::vec_box)]
    pub zones: Vec<Box<Zone>>,
    /// `shield_limit_cache_hits_total`, registered with the first Redis zone.
    pub(super) cache_hits: Option<usize>,
}

#[derive(Clone, Copy)]
pub(super) struct LimitRef {
    pub(super) zone: usize,
    /// The zone's algorithm and rate with this directive's burst, delay and cost.
    pub(super) limit: Limit,
}

#[derive(Clone)]
pub(super) struct BanRef {
    pub(super) zone: usize,
    pub(super) statuses: Vec<u16>,
    pub(super) ban: Ban,
}

#[derive(Default)]
pub struct LimitLoc {
    pub(super) limits: Option<Vec<LimitRef>>,
    pub(super) bans: Option<Vec<BanRef>>,
    pub(super) status: Option<u16>,
    pub(super) dry_run: Option<bool>,
    pub(super) log_level: Option<ngx_uint_t>,
    pub(super) fail: Option<FailPolicy>,
    pub(super) headers: Option<HeaderMode>,
    /// Resolved at merge: the limiter runs in the rewrite phase, before this location's
    /// `return` (see `rewrite`).
    pub(super) in_rewrite: bool,
}

impl LimitLoc {
    pub fn merge(&mut self, cf: &mut ngx_conf_t, prev: &LimitLoc) -> Result<(), String> {
        let own = self.limits.is_some() || self.bans.is_some();
        if self.limits.is_none() {
            self.limits.clone_from(&prev.limits);
        }
        if self.bans.is_none() {
            self.bans.clone_from(&prev.bans);
        }
        self.status = self.status.or(prev.status);
        self.dry_run = self.dry_run.or(prev.dry_run);
        self.log_level = self.log_level.or(prev.log_level);
        self.fail = self.fail.or(prev.fail);
        self.headers = self.headers.or(prev.headers);
        super::rewrite::resolve(cf, self, own)
    }

    pub(super) fn active(&self) -> bool {
        self.limits.as_ref().is_some_and(|l| !l.is_empty()) || self.bans.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// The controls the core's `outcome::plan` reads, defaults applied.
    pub(super) fn policy(&self) -> Policy {
        Policy {
            dry_run: self.dry_run.unwrap_or(false),
            status: self.status.unwrap_or(429),
            headers: self.headers.unwrap_or_default(),
        }
    }
}

pub(super) fn main_conf(cf: &mut ngx_conf_t) -> Result<&'static mut MainConf, String> {
    Shield::main_conf_mut(cf).ok_or_else(|| "no main configuration".to_string())
}

/// `shield_limit_zone $key zone=name:size rate=Nr/s [algorithm=gcra|sliding_window] [backend=redis|local];`
pub extern "C" fn set_zone(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |cf, mcf: &mut MainConf, args| {
        let key_source = args[0].to_string();
        let (mut name, mut size, mut rate, mut algorithm, mut backend) = (None, 0, None, Algorithm::Gcra, None);
        for arg in &args[1..] {
            match parse::param(arg) {
                Some(("zone", v)) => {
                    let (n, s) = v.split_once(':').ok_or_else(|| format!("invalid zone size \"{v}\""))?;
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                        return Err(format!("invalid zone name \"{n}\"").into());
                    }
                    size = parse::size(s).map_err(|_| format!("invalid zone size \"{v}\""))?;
                    if size > bounds::MAX_ZONE_SIZE {
                        return Err(format!("invalid zone size \"{v}\", it must be at most 16g").into());
                    }
                    name = Some(n.to_string());
                }
                Some(("rate", v)) => rate = Some(bounds::rate(v, parse::rate(v)?)?),
                Some(("algorithm", "gcra")) => algorithm = Algorithm::Gcra,
                Some(("algorithm", "sliding_window")) => algorithm = Algorithm::SlidingWindow,
                Some(("backend", "redis")) => backend = Some(Backend::Redis),
                Some(("backend", "local")) => backend = Some(Backend::Local),
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let name = name.ok_or("must have \"zone\" parameter")?;
        let rate = rate.ok_or("must have \"rate\" parameter")?;
        if size < bounds::MIN_ZONE_SIZE {
            return Err(format!("zone \"{name}\" is too small").into());
        }
        if mcf.limits.zones.iter().any(|z| z.name == name) {
            return Err(format!("zone \"{name}\" is duplicate").into());
        }
        let backend = match backend {
            Some(Backend::Redis) if mcf.redis.target.is_none() => {
                return Err("\"backend=redis\" requires \"shield_redis\" before it".into())
            }
            Some(b) => b,
            None if mcf.redis.target.is_some() => Backend::Redis,
            None => Backend::Local,
        };
        if backend == Backend::Redis && mcf.limits.cache_hits.is_none() {
            mcf.limits.cache_hits = Some(mcf.registry.counter(
                "shield_limit_cache_hits_total",
                "Rejections answered from the per-worker cache, without Redis.",
                &[],
            ));
        }
        let key = ComplexValue::compile(cf, &key_source)?;
        let key_vars = rewrite_scan::key_variables(&key_source)
            .into_iter()
            .map(|var| Ok((var.to_string(), variable_index(cf, var)?)))
            .collect::<Result<Vec<_>, ConfError>>()?;
        let key_var = single_variable(&key_source).and_then(|var| key_vars.iter().find(|(n, _)| n == var)).map(|v| v.1);
        let mut h = crate::status::metrics::Fnv::default();
        h.write(name.as_bytes());
        h.write(&[algorithm as u8]);
        h.write(&rate.requests.to_le_bytes());
        h.write(&rate.period.as_secs().to_le_bytes());
        let slots = zone_slots(&mut mcf.registry, &name);
        let mut zone = Box::new(Zone {
            name: name.clone(),
            key,
            key_var,
            key_source,
            key_vars,
            rate,
            algorithm,
            backend,
            config_hash: h.0,
            shm: ptr::null_mut(),
            pool: None,
            slots,
        });
        // nginx keeps this pointer (it does not copy the name): it must live in the cycle's pool.
        let mut shm_name =
            crate::glue::util::pool_str(cf.pool, format!("shield_limit_{name}").as_bytes()).ok_or("out of memory")?;
        // SAFETY: cf is live; the module address tags the zone.
        let shm = unsafe {
            ngx_shared_memory_add(
                cf,
                &mut shm_name,
                size,
                ptr::addr_of_mut!(crate::glue::ngx_http_shield_module).cast(),
            )
        };
        // SAFETY: NULL or a zone owned by the cycle.
        let shm = unsafe { shm.as_mut() }.ok_or("cannot add shared memory zone")?;
        if !shm.data.is_null() {
            return Err(format!("zone \"{name}\" is duplicate").into());
        }
        shm.init = Some(zone_init);
        shm.data = ptr::from_mut(&mut *zone).cast();
        mcf.limits.zones.push(zone);
        Ok(())
    })
}

fn variable_index(cf: &mut ngx_conf_t, var: &str) -> Result<ngx_uint_t, ConfError> {
    let mut name = crate::glue::util::pool_str(cf.pool, var.as_bytes()).ok_or("out of memory")?;
    // SAFETY: cf is live during configuration; the name lives in the cycle's pool.
    let index = unsafe { ngx::ffi::ngx_http_get_variable_index(cf, &mut name) };
    if index == NGX_ERROR as ngx_int_t {
        return Err(ConfError::Other(format!("unknown variable \"${var}\"")));
    }
    Ok(index as ngx_uint_t)
}

fn zone_slots(reg: &mut Registry, zone: &str) -> ZoneSlots {
    const NAME: &str = "shield_limit_requests_total";
    const HELP: &str = "Requests checked by a shield_limit zone, by outcome.";
    let mut c = |outcome| reg.counter(NAME, HELP, &[("zone", zone), ("outcome", outcome)]);
    ZoneSlots {
        passed: c("passed"),
        delayed: c("delayed"),
        rejected: c("rejected"),
        dry_run: c("dry_run_rejected"),
        error: c("error"),
        banned: c("banned"),
    }
}

/// `shield_limit zone=name [burst=N] [nodelay | delay=N] [cost=N];`
pub extern "C" fn set_limit(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let mcf = main_conf(cf)?;
        let (mut zone, mut p) = (None, bounds::LimitParams { cost: (1, "1"), ..Default::default() });
        for arg in args {
            match parse::param(arg) {
                Some(("zone", v)) => zone = Some(find_zone(mcf, v)?),
                Some(("burst", v)) => p.burst = parse::bounded("burst", v, 0, bounds::MAX_BURST)?,
                Some(("delay", v)) => p.delay = Some((parse::bounded("delay", v, 0, bounds::MAX_BURST)?, v)),
                Some(("cost", v)) => p.cost = (parse::bounded("cost", v, 1, bounds::MAX_COST)?, v),
                None if *arg == "nodelay" => p.nodelay = true,
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let zone = zone.ok_or(ConfError::MissingParameter("zone"))?;
        let z = &mcf.limits.zones[zone];
        let limit = bounds::limit(z.algorithm, z.rate, p)?;
        let limits = lc.limit.limits.get_or_insert_with(Vec::new);
        if limits.iter().any(|l| l.zone == zone) {
            return Err("is duplicate".into());
        }
        limits.push(LimitRef { zone, limit });
        Ok(())
    })
}

pub(super) fn find_zone(mcf: &MainConf, name: &str) -> Result<usize, String> {
    mcf.limits
        .zones
        .iter()
        .position(|z| z.name == name)
        .ok_or_else(|| format!("unknown zone \"{name}\" (declare it with shield_limit_zone before use)"))
}

/// `shield_ban zone=name status=401,403 threshold=N/window ban=duration;`
pub extern "C" fn set_ban(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |cf, lc: &mut LocConf, args| {
        let mcf = main_conf(cf)?;
        let (mut zone, mut statuses, mut threshold, mut ban_us) = (None, Vec::new(), None, None);
        for arg in args {
            match parse::param(arg) {
                Some(("zone", v)) => zone = Some(find_zone(mcf, v)?),
                Some(("status", v)) => {
                    statuses =
                        v.split(',').map(|s| parse::status(s, 100, 599).map_err(|e| e.0)).collect::<Result<_, _>>()?
                }
                Some(("threshold", v)) => {
                    let (n, w) = v.split_once('/').ok_or_else(|| format!("invalid threshold \"{v}\""))?;
                    let n = parse::bounded("threshold", n, 1, bounds::MAX_BAN_THRESHOLD)?;
                    let w = bounds::ban_time("threshold window", w, parse::time(w)?.as_millis() as u64)?;
                    threshold = Some((n, w));
                }
                Some(("ban", v)) => ban_us = Some(bounds::ban_time("ban time", v, parse::time(v)?.as_millis() as u64)?),
                _ => return Err(ConfError::InvalidParameter(arg.to_string())),
            }
        }
        let zone = zone.ok_or("must have \"zone\" parameter")?;
        if statuses.is_empty() {
            return Err("must have \"status\" parameter".into());
        }
        let (threshold, window_us) = threshold.ok_or("must have \"threshold\" parameter")?;
        let ban_us = ban_us.ok_or(ConfError::MissingParameter("ban"))?;
        lc.limit.bans.get_or_insert_with(Vec::new).push(BanRef {
            zone,
            statuses,
            ban: Ban { threshold, window_us, ban_us },
        });
        Ok(())
    })
}

pub extern "C" fn set_status(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.limit.status, parse::status(args[0], 400, 599).map_err(|e| e.0)?)
    })
}

pub extern "C" fn set_dry_run(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx::ffi::ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        set_once(&mut lc.limit.dry_run, parse::flag(args[0]).map_err(|e| e.0)?)
    })
}

pub extern "C" fn set_log_level(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx::ffi::ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let level = match args[0] {
            "info" => NGX_LOG_INFO,
            "notice" => NGX_LOG_NOTICE,
            "warn" => NGX_LOG_WARN,
            "error" => NGX_LOG_ERR,
            other => {
                return Err(format!(
                    "invalid value \"{other}\", it must be \"info\", \"notice\", \"warn\" or \"error\""
                )
                .into())
            }
        };
        set_once(&mut lc.limit.log_level, level as ngx_uint_t)
    })
}

pub extern "C" fn set_fail(cf: *mut ngx_conf_t, cmd: *mut ngx::ffi::ngx_command_t, conf: *mut c_void) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let policy = FailPolicy::parse(args[0])?;
        set_once(&mut lc.limit.fail, policy)
    })
}

pub extern "C" fn set_headers(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx::ffi::ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    crate::glue::util::directive(cf, cmd, conf, |_, lc: &mut LocConf, args| {
        let mode = HeaderMode::parse(args[0])?;
        set_once(&mut lc.limit.headers, mode)
    })
}

pub(super) fn is_redis(mcf: &MainConf, zone: usize) -> bool {
    mcf.limits.zones[zone].backend == Backend::Redis && mcf.redis.target.is_some()
}

/// `$name` alone (no other text, no braces) → `name`.
pub(super) fn single_variable(source: &str) -> Option<&str> {
    let name = source.strip_prefix('$')?;
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')).then_some(name)
}
