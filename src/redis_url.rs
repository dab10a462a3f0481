//! `shield_redis redis://[user[:password]@]host[:port][/db]` parsing.

use crate::parse::{self, ParseError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

pub fn parse(url: &str) -> Result<RedisUrl, ParseError> {
    let invalid = |why: &str| ParseError(format!("invalid redis URL \"{url}\": {why}"));
    let rest = match url.split_once("://") {
        Some(("redis", rest)) => rest,
        Some(("rediss", _)) => return Err(invalid("TLS (rediss://) is not supported yet")),
        _ => return Err(invalid("expected redis://host[:port][/db]")),
    };
    let (authority, db) = match rest.split_once('/') {
        Some((a, "")) => (a, 0),
        Some((a, d)) => (a, parse::number(d).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| invalid("bad database number"))?),
        None => (rest, 0),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some(("", p)) => (None, Some(percent_decode(p).ok_or_else(|| invalid("bad escape"))?)),
            Some((user, p)) => (
                Some(percent_decode(user).ok_or_else(|| invalid("bad escape"))?),
                Some(percent_decode(p).ok_or_else(|| invalid("bad escape"))?),
            ),
            None => (None, Some(percent_decode(u).ok_or_else(|| invalid("bad escape"))?)),
        },
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed [ in host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    let port = match port {
        None => 6379,
        Some(p) => parse::number(p).and_then(|n| u16::try_from(n).ok()).filter(|&n| n > 0).ok_or_else(|| invalid("bad port"))?,
    };
    Ok(RedisUrl { host: host.to_string(), port, username, password, db })
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
        assert_eq!(u, RedisUrl { host: "127.0.0.1".into(), port: 6380, username: Some("app".into()), password: Some("p@ss".into()), db: 2 });
        let m = parse("redis://localhost").unwrap();
        assert_eq!((m.port, m.db, m.password), (6379, 0, None));
        assert_eq!(parse("redis://:secret@h").unwrap().password.as_deref(), Some("secret"));
        assert_eq!(parse("redis://[::1]:7000/").unwrap().host, "::1");
    }

    #[test]
    fn errors_say_why() {
        assert!(parse("rediss://h").unwrap_err().0.contains("TLS"));
        assert!(parse("http://h").is_err());
        assert!(parse("redis://h:0").unwrap_err().0.contains("port"));
        assert!(parse("redis://h:99999").is_err());
        assert!(parse("redis://h/x").unwrap_err().0.contains("database"));
        assert!(parse("redis://:p%zz@h").is_err());
        assert!(parse("redis://").is_err());
    }
}
