//! What the cache tells about a request: `$shield_cache_status` and the `Cache-Status` header
//! (RFC 9211) values.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// No entry for the key.
    UriMiss,
    /// An entry for the key, none for the request's variant.
    VaryMiss,
    /// The entry was stale.
    Stale,
    /// The request asked for a validated response (`no-cache`, `max-age=0`).
    Request,
    /// `shield_cache_bypass`, or the request's `no-store`.
    Bypass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit {
        ttl: u32,
    },
    Forwarded(Forward),
    /// Missed (`why`), waited for another request's fetch of the key, and was served the
    /// entry it stored (RFC 9211's `collapsed`).
    Collapsed(Forward),
    /// The stale entry was revalidated: the origin answered 304, the entry (updated by the
    /// 304's headers) answered.
    Revalidated,
    /// The origin failed; the stale entry answered (`stale-if-error`, `shield_cache_use_stale`).
    Stale {
        expired_for: u32,
    },
    /// The stale entry answered at once while one refresh fetches its replacement
    /// (`stale-while-revalidate`, `shield_cache_use_stale updating`): `started`, this request
    /// started the refresh; otherwise one was already under way.
    WhileRevalidating {
        expired_for: u32,
        started: bool,
    },
}

impl CacheStatus {
    /// `$shield_cache_status`.
    pub fn variable(&self) -> &'static str {
        match self {
            CacheStatus::Hit { .. } => "HIT",
            CacheStatus::Collapsed(_) => "COLLAPSED",
            CacheStatus::Stale { .. } | CacheStatus::WhileRevalidating { started: true, .. } => "STALE",
            CacheStatus::WhileRevalidating { started: false, .. } => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Forwarded(Forward::UriMiss | Forward::VaryMiss) => "MISS",
            CacheStatus::Forwarded(Forward::Stale) => "EXPIRED",
            CacheStatus::Forwarded(Forward::Request) => "REVALIDATE",
            CacheStatus::Forwarded(Forward::Bypass) => "BYPASS",
        }
    }

    /// The `Cache-Status` value; `fwd_status` and `stored` describe a forwarded request's
    /// response.
    pub fn header(&self, fwd_status: Option<u16>, stored: bool) -> String {
        match self {
            CacheStatus::Hit { ttl } => format!("nginx-shield; hit; ttl={ttl}"),
            CacheStatus::Collapsed(f) => format!("nginx-shield; fwd={}; collapsed", f.token()),
            CacheStatus::Revalidated => {
                format!("nginx-shield; fwd=stale; fwd-status=304{}", if stored { "; stored" } else { "" })
            }
            CacheStatus::Stale { expired_for } => {
                let st = fwd_status.map(|s| format!("; fwd-status={s}")).unwrap_or_default();
                format!("nginx-shield; hit; fwd=stale{st}; ttl=-{expired_for}")
            }
            // A hit (this request was not forwarded), stale by `ttl`; the detail says why it
            // could be served (RFC 9211 §2.8 leaves `detail` to the cache).
            CacheStatus::WhileRevalidating { expired_for, started } => {
                let detail = if *started { "stale-while-revalidate" } else { "updating" };
                format!("nginx-shield; hit; ttl=-{expired_for}; detail={detail}")
            }
            CacheStatus::Forwarded(f) => {
                let mut s = format!("nginx-shield; fwd={}", f.token());
                if let Some(st) = fwd_status {
                    s.push_str(&format!("; fwd-status={st}"));
                }
                if stored {
                    s.push_str("; stored");
                }
                s
            }
        }
    }
}

impl Forward {
    /// The `fwd` parameter's value.
    fn token(self) -> &'static str {
        match self {
            Forward::UriMiss => "uri-miss",
            Forward::VaryMiss => "vary-miss",
            Forward::Stale => "stale",
            Forward::Request => "request",
            Forward::Bypass => "bypass",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_rfc_9211() {
        assert_eq!(CacheStatus::Hit { ttl: 42 }.header(None, false), "nginx-shield; hit; ttl=42");
        let miss = CacheStatus::Forwarded(Forward::UriMiss);
        assert_eq!(miss.header(Some(200), true), "nginx-shield; fwd=uri-miss; fwd-status=200; stored");
        assert_eq!(CacheStatus::Forwarded(Forward::Bypass).header(None, false), "nginx-shield; fwd=bypass");
        assert_eq!(miss.variable(), "MISS");
        assert_eq!(CacheStatus::Forwarded(Forward::Stale).variable(), "EXPIRED");
        assert_eq!(CacheStatus::Revalidated.header(None, true), "nginx-shield; fwd=stale; fwd-status=304; stored");
        let stale = CacheStatus::Stale { expired_for: 5 };
        assert_eq!(stale.header(Some(503), false), "nginx-shield; hit; fwd=stale; fwd-status=503; ttl=-5");
        let collapsed = CacheStatus::Collapsed(Forward::UriMiss);
        assert_eq!(
            (collapsed.variable(), collapsed.header(None, false).as_str()),
            ("COLLAPSED", "nginx-shield; fwd=uri-miss; collapsed")
        );
        let started = CacheStatus::WhileRevalidating { expired_for: 3, started: true };
        assert_eq!(
            (started.variable(), started.header(None, false).as_str()),
            ("STALE", "nginx-shield; hit; ttl=-3; detail=stale-while-revalidate")
        );
        let updating = CacheStatus::WhileRevalidating { expired_for: 0, started: false };
        assert_eq!(
            (updating.variable(), updating.header(None, false).as_str()),
            ("UPDATING", "nginx-shield; hit; ttl=-0; detail=updating")
        );
    }
}
