//! `shield_redis` URL parsing: `redis://[user[:password]@]host[:port][/db]`,
//! `unix://[user[:password]@]/path/to/redis.sock[?db=n]`,
//! `redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/name[/db]` and
//! `redis+cluster://[user[:password]@]host[:port][,host[:port]...]`; `rediss` in place of
//! `redis` is the same over TLS.

use crate::parse::{self, ParseError};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisUrl {
    /// TCP: host and port. For a Unix socket, host is empty and port 0.
    pub host: String,
    pub port: u16,
    /// A Unix-domain socket path (`unix://`): no TCP/IP stack between nginx and a local Redis.
    pub socket: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rediss://`: TLS over TCP.
    pub tls: bool,
    /// `redis+sentinel://`: the sentinels to ask (host, port) for the primary named `master`;
    /// `host`/`port` are then the first sentinel's.
    pub sentinels: Vec<(String, u16)>,
    pub master: Option<String>,
    /// `redis+cluster://`: the nodes asked for the slot map (`CLUSTER SLOTS`), in turn;
    /// `host`/`port` are then the first one's.
    pub seeds: Vec<(String, u16)>,
}

pub fn parse(url: &str) -> Result<RedisUrl, ParseError> {
    let invalid = |why: &str| ParseError(format!("invalid redis URL \"{url}\": {why}"));
    let (rest, tls) = match url.split_once("://") {
        Some(("redis", rest)) => (rest, false),
        Some(("rediss", rest)) => (rest, true),
        Some(("unix", rest)) => return parse_unix(url, rest),
        Some(("redis+sentinel", rest)) => return parse_sentinel(url, rest, false),
        Some(("rediss+sentinel", rest)) => return parse_sentinel(url, rest, true),
        Some(("redis+cluster", rest)) => return parse_cluster(url, rest, false),
        Some(("rediss+cluster", rest)) => return parse_cluster(url, rest, true),
        _ => {
            return Err(invalid(
                "expected redis://host[:port][/db], rediss://..., redis+sentinel://host[:port],.../name, \
             redis+cluster://host[:port],... or unix:///path",
            ))
        }
    };
    let (authority, db) = match rest.split_once('/') {
        Some((a, "")) => (a, 0),
        Some((a, d)) => {
            (a, parse::number(d).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| invalid("bad database number"))?)
        }
        None => (rest, 0),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = userinfo_parts(userinfo).ok_or_else(|| invalid("bad escape"))?;
    let (host, port) = host_port(hostport, 6379).map_err(invalid)?;
    Ok(RedisUrl { host, port, socket: None, username, password, db, tls, ..Default::default() })
}

/// Longest path a `sockaddr_un` holds (108 bytes with the terminating NUL, on Linux).
pub const MAX_SOCKET_PATH: usize = 107;

fn parse_unix(url: &str, rest: &str) -> Result<RedisUrl, ParseError> {
    let invalid = |why: &str| ParseError(format!("invalid redis URL \"{url}\": {why}"));
    let (userinfo, rest) = match rest.strip_prefix('/') {
        Some(_) => (None, rest),
        None => match rest.split_once("@/") {
            Some((u, _)) => (Some(u), &rest[u.len() + 1..]),
            None => return Err(invalid("expected unix:///path/to/redis.sock")),
        },
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.len() < 2 || path.ends_with('/') {
        return Err(invalid("expected unix:///path/to/redis.sock"));
    }
    if path.len() > MAX_SOCKET_PATH {
        return Err(invalid("socket path too long"));
    }
    let db = match query {
        None => 0,
        Some(q) => match q.strip_prefix("db=") {
            Some(d) => {
                parse::number(d).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| invalid("bad database number"))?
            }
            None => return Err(invalid("the only query parameter is db=n")),
        },
    };
    let (username, password) = userinfo_parts(userinfo).ok_or_else(|| invalid("bad escape"))?;
    Ok(RedisUrl { socket: Some(path.to_string()), username, password, db, ..Default::default() })
}

/// `redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/name[/db]`: the
/// credentials and database are the primary's; sentinels default to port 26379.
fn parse_sentinel(url: &str, rest: &str, tls: bool) -> Result<RedisUrl, ParseError> {
    let invalid = |why: &str| ParseError(format!("invalid redis URL \"{url}\": {why}"));
    let (authority, path) =
        rest.split_once('/').ok_or_else(|| invalid("no primary name (/name after the sentinels)"))?;
    let (name, db) = match path.split_once('/') {
        Some((n, "")) => (n, 0),
        Some((n, d)) => {
            (n, parse::number(d).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| invalid("bad database number"))?)
        }
        None => (path, 0),
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("bad primary name"));
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = userinfo_parts(userinfo).ok_or_else(|| invalid("bad escape"))?;
    let sentinels = host_list(hosts, 26379, "sentinel").map_err(|why| invalid(&why))?;
    let (host, port) = sentinels[0].clone();
    let master = Some(name.to_string());
    Ok(RedisUrl { host, port, username, password, db, tls, sentinels, master, ..Default::default() })
}

/// `redis+cluster://[user[:password]@]host[:port][,host[:port]...][/]`: nodes of the cluster
/// to ask for its slot map (any of them will do; more are tried in turn when one is down).
/// A cluster has only database 0.
fn parse_cluster(url: &str, rest: &str, tls: bool) -> Result<RedisUrl, ParseError> {
    let invalid = |why: &str| ParseError(format!("invalid redis URL \"{url}\": {why}"));
    let authority = match rest.split_once('/') {
        None | Some((_, "" | "0")) => rest.split('/').next().unwrap_or(rest),
        Some(_) => return Err(invalid("a cluster has only database 0")),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = userinfo_parts(userinfo).ok_or_else(|| invalid("bad escape"))?;
    let seeds = host_list(hosts, 6379, "cluster node").map_err(|why| invalid(&why))?;
    let (host, port) = seeds[0].clone();
    Ok(RedisUrl { host, port, username, password, tls, seeds, ..Default::default() })
}

/// `host[:port],host[:port]...`, at most [`MAX_SENTINELS`].
fn host_list(hosts: &str, default_port: u16, what: &str) -> Result<Vec<(String, u16)>, String> {
    let mut list = Vec::new();
    for hostport in hosts.split(',') {
        list.push(host_port(hostport, default_port).map_err(|why| match why {
            "no host" => format!("no {what} host"),
            other => other.to_string(),
        })?);
    }
    if list.len() > MAX_SENTINELS {
        return Err(format!("more than {MAX_SENTINELS} {what}s"));
    }
    Ok(list)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(hostport: &str, default_port: u16) -> Result<(String, u16), &'static str> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    let port = match port {
        None => default_port,
        Some(p) => parse::number(p).and_then(|n| u16::try_from(n).ok()).filter(|&n| n > 0).ok_or("bad port")?,
    };
    Ok((host.to_string(), port))
}

/// More sentinels (or cluster seed nodes) than this is a configuration mistake, not a
/// deployment.
pub const MAX_SENTINELS: usize = 16;

type Credentials = (Option<String>, Option<String>);

fn userinfo_parts(userinfo: Option<&str>) -> Option<Credentials> {
    Some(match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some(("", p)) => (None, Some(percent_decode(p)?)),
            Some((user, p)) => (Some(percent_decode(user)?), Some(percent_decode(p)?)),
            None => (None, Some(percent_decode(u)?)),
        },
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_minimal_urls() {
        let u = parse("redis://app:p%40ss@127.0.0.1:6380/2").unwrap();
        assert_eq!(
            u,
            RedisUrl {
                host: "127.0.0.1".into(),
                port: 6380,
                socket: None,
                username: Some("app".into()),
                password: Some("p@ss".into()),
                db: 2,
                ..Default::default()
            }
        );
        let m = parse("redis://localhost").unwrap();
        assert_eq!((m.port, m.db, m.password), (6379, 0, None));
        assert_eq!(parse("redis://:secret@h").unwrap().password.as_deref(), Some("secret"));
        assert_eq!(parse("redis://[::1]:7000/").unwrap().host, "::1");
    }

    #[test]
    fn unix_sockets() {
        let u = parse("unix:///run/redis/redis.sock").unwrap();
        assert_eq!((u.socket.as_deref(), u.db, u.password), (Some("/run/redis/redis.sock"), 0, None));
        let u = parse("unix://app:p%40ss@/tmp/r.sock?db=3").unwrap();
        assert_eq!(
            u,
            RedisUrl {
                host: String::new(),
                port: 0,
                socket: Some("/tmp/r.sock".into()),
                username: Some("app".into()),
                password: Some("p@ss".into()),
                db: 3,
                ..Default::default()
            }
        );
        assert_eq!(parse("unix://:secret@/r.sock").unwrap().password.as_deref(), Some("secret"));
        assert!(parse("unix://relative.sock").is_err());
        assert!(parse("unix:///").is_err());
        assert!(parse("unix:///r.sock?db=x").unwrap_err().0.contains("database"));
        assert!(parse("unix:///r.sock?timeout=1").is_err());
        assert!(parse(&format!("unix:///{}", "a".repeat(120))).unwrap_err().0.contains("too long"));
    }

    #[test]
    fn rediss_is_tls_over_tcp() {
        let u = parse("rediss://app:pw@cache.example:6380/2").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port, u.db), ("cache.example", 6380, 2));
        assert!(!parse("redis://h").unwrap().tls);
        assert!(!parse("unix:///r.sock").unwrap().tls);
    }

    #[test]
    fn sentinel_urls() {
        let u = parse("redis+sentinel://app:pw@10.0.0.1,10.0.0.2:26380,[::1]/mymaster/2").unwrap();
        assert_eq!(u.sentinels, vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26380), ("::1".into(), 26379)]);
        assert_eq!(u.master.as_deref(), Some("mymaster"));
        assert_eq!((u.username.as_deref(), u.password.as_deref(), u.db), (Some("app"), Some("pw"), 2));
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.1", 26379));
        assert!(parse("redis+sentinel://10.0.0.1").unwrap_err().0.contains("primary name"));
        assert!(parse("redis+sentinel://10.0.0.1/").unwrap_err().0.contains("primary name"));
        assert!(parse("redis+sentinel://10.0.0.1,/m").unwrap_err().0.contains("sentinel host"));
        assert!(parse("redis+sentinel://10.0.0.1:0/m").unwrap_err().0.contains("port"));
        assert!(parse("redis+sentinel://10.0.0.1/m/x").unwrap_err().0.contains("database"));
        let many = vec!["h"; 17].join(",");
        assert!(parse(&format!("redis+sentinel://{many}/m")).unwrap_err().0.contains("16"));
    }

    #[test]
    fn cluster_urls() {
        let u = parse("redis+cluster://app:pw@10.0.0.1:7000,10.0.0.2,[::1]:7002").unwrap();
        assert_eq!(u.seeds, vec![("10.0.0.1".into(), 7000), ("10.0.0.2".into(), 6379), ("::1".into(), 7002)]);
        assert_eq!((u.username.as_deref(), u.password.as_deref(), u.db, u.tls), (Some("app"), Some("pw"), 0, false));
        assert_eq!((u.host.as_str(), u.port, u.master), ("10.0.0.1", 7000, None));
        assert_eq!(parse("redis+cluster://h:7000/").unwrap().seeds.len(), 1);
        assert_eq!(parse("redis+cluster://h:7000/0").unwrap().db, 0);
        assert!(parse("rediss+cluster://h").unwrap().tls);
        assert!(parse("redis+cluster://h/1").unwrap_err().0.contains("database 0"));
        assert!(parse("redis+cluster://h,").unwrap_err().0.contains("cluster node host"));
        assert!(parse("redis+cluster://h:0").unwrap_err().0.contains("port"));
        let many = vec!["h"; 17].join(",");
        assert!(parse(&format!("redis+cluster://{many}")).unwrap_err().0.contains("16"));
        let s = parse("rediss+sentinel://s1,s2/m").unwrap();
        assert!(s.tls && s.master.is_some() && s.seeds.is_empty());
    }

    #[test]
    fn errors_say_why() {
        assert!(parse("rediss://").is_err());
        assert!(parse("http://h").is_err());
        assert!(parse("redis://h:0").unwrap_err().0.contains("port"));
        assert!(parse("redis://h:99999").is_err());
        assert!(parse("redis://h/x").unwrap_err().0.contains("database"));
        assert!(parse("redis://:p%zz@h").is_err());
        assert!(parse("redis://").is_err());
    }
}
