//! `shield_jwt_key_request`: key sets fetched from a JWKS endpoint through a subrequest (no
//! blocking I/O: the request that fetches waits for its subrequest like `auth_request`'s), kept
//! in one shared-memory zone so every worker verifies with the same set, and parsed once per
//! worker per new set. When to fetch is `identity::jwks`'s decision.
//!
//! Shared state per URI (a slot): the JWKS bytes (at most `MAX_JWKS_LEN`), a generation that
//! changes with every stored set, and the times of `jwks::State`. The bytes are written and
//! copied under the zone's slab mutex; the times are atomics (a worker claims a fetch with a
//! compare-and-swap on `fetching_until`).

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};
use std::cell::RefCell;
use std::rc::Rc;

use ngx::ffi::{
    ngx_conf_t, ngx_http_post_subrequest_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_palloc,
    ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock, ngx_slab_calloc, ngx_slab_free,
    ngx_slab_pool_t, NGX_DONE, NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_SUBREQUEST_IN_MEMORY,
    NGX_HTTP_SUBREQUEST_WAITED, NGX_LOG_ERR, NGX_OK,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use super::{IdentitySlots, JwtPolicy, KeyRequest, LoadedKeys};
use crate::glue::util::{find_header, guard, pool_str, static_str};
use crate::glue::{MainConf, RequestCtx, Shield};
use crate::identity::jwks::{self, State, MAX_JWKS_LEN};
use crate::identity::keys::KeySet;
use crate::identity::token;

#[repr(C)]
pub struct Slot {
    generation: AtomicU64,
    /// Milliseconds since the epoch (0: never).
    refresh_at: AtomicU64,
    fetching_until: AtomicU64,
    kid_refetch_after: AtomicU64,
    len: AtomicU64,
    data: [u8; MAX_JWKS_LEN],
}

#[repr(C)]
pub struct JwksShm {
    /// Names the URI list, so a reload with the same list keeps the fetched sets.
    signature: u64,
    count: usize,
    pool: *mut ngx_slab_pool_t,
}

impl JwksShm {
    fn slot(this: *mut JwksShm, i: usize) -> Option<&'static Slot> {
        // SAFETY: `count` slots follow the header (zone_init allocates them together).
        unsafe { (i < (*this).count).then(|| &*this.add(1).cast::<Slot>().add(i)) }
    }
}

fn signature(uris: &[String]) -> u64 {
    let d = ring::digest::digest(&ring::digest::SHA256, uris.join("\n").as_bytes());
    u64::from_le_bytes(d.as_ref()[..8].try_into().expect("32 bytes"))
}

/// Adds the JWKS zone when some location has a `shield_jwt_key_request`.
pub fn init_zone(cf: &mut ngx_conf_t) -> Result<(), ()> {
    let mcf = Shield::main_conf_mut(cf).ok_or(())?;
    let n = mcf.identity.key_requests.len();
    if n == 0 {
        return Ok(());
    }
    // SAFETY: ngx_pagesize is set before any configuration is read.
    let page = unsafe { ngx::ffi::ngx_pagesize };
    let size = (size_of::<JwksShm>() + n * size_of::<Slot>() + 8 * page).next_multiple_of(page);
    let mut name = static_str("shield_jwks");
    // SAFETY: cf is live; the module's address tags the zone.
    let zone = unsafe {
        ngx_shared_memory_add(cf, &mut name, size, ptr::addr_of_mut!(crate::glue::ngx_http_shield_module).cast())
    };
    // SAFETY: NULL or a zone owned by the cycle.
    let zone = unsafe { zone.as_mut() }.ok_or(())?;
    zone.init = Some(zone_init);
    zone.data = ptr::from_mut(mcf).cast();
    Ok(())
}

extern "C" fn zone_init(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    guard(ptr::null_mut(), "jwks zone init", NGX_ERROR as ngx_int_t, || {
        // SAFETY: data is our MainConf (init_zone); `old` is the previous cycle's JwksShm or
        // NULL; the segment starts with its slab pool.
        unsafe {
            let zone = &mut *zone;
            let mcf = &mut *zone.data.cast::<MainConf>();
            let ids: &mut IdentitySlots = &mut mcf.identity;
            let signature = signature(&ids.key_requests);
            let count = ids.key_requests.len();
            let pool = zone.shm.addr.cast::<ngx_slab_pool_t>();
            let old = old.cast::<JwksShm>();
            if !old.is_null() {
                if (*old).signature == signature && (*old).count == count {
                    ids.jwks = old;
                    zone.data = old.cast();
                    return NGX_OK as ngx_int_t;
                }
                ngx_slab_free(pool, old.cast());
            }
            let shm = ngx_slab_calloc(pool, size_of::<JwksShm>() + count * size_of::<Slot>()).cast::<JwksShm>();
            if shm.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*shm).signature = signature;
            (*shm).count = count;
            (*shm).pool = pool;
            ids.jwks = shm;
            zone.data = shm.cast();
            NGX_OK as ngx_int_t
        }
    })
}

fn ms(t: f64) -> u64 {
    (t * 1000.0) as u64
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn state(slot: &Slot) -> State {
    State {
        has_keys: slot.generation.load(Ordering::Acquire) != 0,
        refresh_at: secs(slot.refresh_at.load(Ordering::Relaxed)),
        fetching_until: secs(slot.fetching_until.load(Ordering::Relaxed)),
        kid_refetch_after: secs(slot.kid_refetch_after.load(Ordering::Relaxed)),
    }
}

/// A set's generation and its keys.
type Parsed = (u64, Rc<LoadedKeys>);

thread_local! {
    /// This worker's parsed copy of each slot's set, with the generation it was parsed from.
    static PARSED: RefCell<Vec<Option<Parsed>>> = const { RefCell::new(Vec::new()) };
}

/// The current fetched set of `req` and its generation; `None` before the first good fetch.
pub fn current(mcf: &MainConf, req: KeyRequest) -> Option<Parsed> {
    let shm = mcf.identity.jwks;
    if shm.is_null() {
        return None;
    }
    let slot = JwksShm::slot(shm, req.slot)?;
    let generation = slot.generation.load(Ordering::Acquire);
    if generation == 0 {
        return None;
    }
    let cached = PARSED.with(|p| p.borrow().get(req.slot).cloned().flatten());
    if let Some((g, keys)) = cached.filter(|(g, _)| *g == generation) {
        return Some((g, keys));
    }
    // SAFETY: the slab pool's mutex guards the bytes and their length (see `store`).
    let (generation, bytes) = unsafe {
        let mutex = ptr::addr_of_mut!((*(*shm).pool).mutex);
        ngx_shmtx_lock(mutex);
        let len = (slot.len.load(Ordering::Relaxed) as usize).min(MAX_JWKS_LEN);
        let copy = (slot.generation.load(Ordering::Relaxed), slot.data[..len].to_vec());
        ngx_shmtx_unlock(mutex);
        copy
    };
    // Only sets that loaded are stored; a failure here would be a bug, and leaves no set.
    let keys = KeySet::load(&bytes).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref().try_into().ok()?;
    let uri = mcf.identity.key_requests.get(req.slot).cloned().unwrap_or_default();
    let loaded = Rc::new(LoadedKeys { path: uri, keys, digest });
    PARSED.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() <= req.slot {
            p.resize(req.slot + 1, None);
        }
        p[req.slot] = Some((generation, Rc::clone(&loaded)));
    });
    Some((generation, loaded))
}

/// Stores a set every worker will pick up (its generation changes).
fn store(shm: *mut JwksShm, slot: &Slot, bytes: &[u8]) {
    // SAFETY: as in `current`; `data` is only written here, under the mutex.
    unsafe {
        let mutex = ptr::addr_of_mut!((*(*shm).pool).mutex);
        ngx_shmtx_lock(mutex);
        let data = ptr::addr_of!(slot.data).cast_mut().cast::<u8>();
        ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
        slot.len.store(bytes.len() as u64, Ordering::Relaxed);
        slot.generation.fetch_add(1, Ordering::Release);
        ngx_shmtx_unlock(mutex);
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub enum Fetch {
    #[default]
    Idle,
    InFlight,
    Done,
}

/// What the post-subrequest handler needs, in the request pool (no destructor).
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    main: *mut ngx_http_request_t,
    slot: usize,
    cooldown_secs: u64,
    unknown_kid: bool,
}

/// Runs before verification in the rewrite phase: `Some(rc)` when the request must wait for a
/// fetch this call started (`NGX_DONE`) or failed to start; `None` to go on.
pub fn ensure(r: &mut ngx_http_request_t, policy: &JwtPolicy, req: KeyRequest) -> Option<ngx_int_t> {
    let rp: *mut ngx_http_request_t = r;
    let ctx = RequestCtx::get(rp)?;
    match ctx.identity.fetch {
        Fetch::InFlight => return Some(NGX_DONE as ngx_int_t),
        Fetch::Done => return None,
        Fetch::Idle => {}
    }
    let mcf = Shield::main_conf(r)?;
    let shm = mcf.identity.jwks;
    let slot = (!shm.is_null()).then(|| JwksShm::slot(shm, req.slot)).flatten()?;
    let now = super::request::now();
    let s = state(slot);
    let unknown_kid = s.has_keys
        && now >= s.kid_refetch_after
        && super::request::token_bytes(r, policy)
            .and_then(token::kid)
            .is_some_and(|kid| current(mcf, req).is_some_and(|(_, k)| !k.keys.has_kid(&kid)));
    if !jwks::should_fetch(&s, now, unknown_kid) {
        return None;
    }
    let seen = slot.fetching_until.load(Ordering::Relaxed);
    let claim = slot.fetching_until.compare_exchange(
        seen,
        ms(now + jwks::FETCH_TIMEOUT_SECS),
        Ordering::AcqRel,
        Ordering::Relaxed,
    );
    if claim.is_err() && s.has_keys {
        return None; // another worker just started one
    }
    if unknown_kid {
        slot.kid_refetch_after.store(ms(now + req.cooldown_secs as f64), Ordering::Relaxed);
    }
    let uri = mcf.identity.key_requests.get(req.slot)?;
    match start(r, uri, Pending { main: rp, slot: req.slot, cooldown_secs: req.cooldown_secs, unknown_kid }) {
        Ok(()) => {
            ctx.identity.fetch = Fetch::InFlight;
            Some(NGX_DONE as ngx_int_t)
        }
        Err(()) => {
            slot.fetching_until.store(0, Ordering::Relaxed);
            Some(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t)
        }
    }
}

fn start(r: &mut ngx_http_request_t, uri: &str, pending: Pending) -> Result<(), ()> {
    let mut uri = pool_str(r.pool, uri.as_bytes()).ok_or(())?;
    // SAFETY: r is the live main request; both allocations come from its pool and live as long
    // as the subrequest; the handler receives `data` back as a Pending.
    unsafe {
        let data = ngx_palloc(r.pool, size_of::<Pending>()).cast::<Pending>();
        let ps = ngx_palloc(r.pool, size_of::<ngx_http_post_subrequest_t>()).cast::<ngx_http_post_subrequest_t>();
        if data.is_null() || ps.is_null() {
            return Err(());
        }
        data.write(pending);
        ps.write(ngx_http_post_subrequest_t { handler: Some(fetched), data: data.cast() });
        let mut sr = ptr::null_mut();
        let flags = (NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) as ngx::ffi::ngx_uint_t;
        if ngx_http_subrequest(r, &mut uri, ptr::null_mut(), &mut sr, ps, flags) != NGX_OK as ngx_int_t {
            return Err(());
        }
    }
    Ok(())
}

/// The subrequest finished: store a good set, or keep the last one and retry later. Either way
/// the waiting request resumes its phases (nginx posts it) and verifies with what there is.
unsafe extern "C" fn fetched(sr: *mut ngx_http_request_t, data: *mut c_void, rc: ngx_int_t) -> ngx_int_t {
    // SAFETY: nginx calls this with the live subrequest and the data given to it in `start`.
    let log = unsafe { (*(*sr).connection).log };
    guard(log, "jwks subrequest", rc, || {
        // SAFETY: as above; Pending was written by `start`.
        let (sr, p) = unsafe { (&*sr, *data.cast::<Pending>()) };
        if let Some(ctx) = RequestCtx::get(p.main) {
            ctx.identity.fetch = Fetch::Done;
        }
        let Some(mcf) = Shield::main_conf(sr) else { return rc };
        let shm = mcf.identity.jwks;
        let Some(slot) = (!shm.is_null()).then(|| JwksShm::slot(shm, p.slot)).flatten() else { return rc };
        let uri = mcf.identity.key_requests.get(p.slot).map_or("", String::as_str);
        let now = super::request::now();
        let status = sr.headers_out.status;
        // SAFETY: an in-memory subrequest's body is one buffer in `out` (the postpone filter's).
        let body: &[u8] = unsafe {
            match sr.out.as_ref().and_then(|c| c.buf.as_ref()) {
                Some(b) if !b.pos.is_null() && b.last >= b.pos => {
                    core::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize)
                }
                _ => &[],
            }
        };
        let outcome = if rc != NGX_OK as ngx_int_t || status != 200 {
            Err(format!("status {status}"))
        } else if body.len() > MAX_JWKS_LEN {
            Err(format!("larger than {MAX_JWKS_LEN} bytes"))
        } else {
            KeySet::load(body).map(|_| ())
        };
        match outcome {
            Ok(()) => {
                store(shm, slot, body);
                // SAFETY: the subrequest's output headers are a valid list.
                let cc = find_header(&sr.headers_out.headers, b"cache-control")
                    .and_then(|h| unsafe { (*h).value.to_str().ok() });
                slot.refresh_at.store(ms(jwks::refresh_after_success(now, jwks::ttl(cc))), Ordering::Relaxed);
                mcf.add(mcf.identity.jwks_fetches, 1);
            }
            Err(e) => {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "shield: JWKS fetch from {uri} failed ({e}); keeping the last good key set"
                );
                slot.refresh_at.store(ms(jwks::refresh_after_failure(now, p.cooldown_secs)), Ordering::Relaxed);
                mcf.add(mcf.identity.jwks_fetch_failures, 1);
            }
        }
        if p.unknown_kid {
            slot.kid_refetch_after.store(ms(now + p.cooldown_secs as f64), Ordering::Relaxed);
        }
        slot.fetching_until.store(0, Ordering::Relaxed);
        rc
    })
}
