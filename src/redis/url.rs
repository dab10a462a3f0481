//! `redis://[user[:password]@]host[:port][/db]`, parsed for `shield_redis`.
//!
//! User and password are percent-decoded (so `@`, `:` and `/` can appear in them as `%40`,
//! `%3A`, `%2F`); an IPv6 host is written in brackets (`redis://[::1]:6380`). Only plain TCP:
//! `rediss://` is refused with a clear message rather than silently connecting without TLS.

use core::fmt;

use super::resp::CommandWriter;

pub const DEFAULT_PORT: u16 = 6379;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("TLS (\"rediss://\") is not supported yet")]
    TlsUnsupported,
    #[error("unsupported scheme, expected \"redis://\"")]
    Scheme,
    #[error("missing host")]
    MissingHost,
    #[error("invalid host")]
    Host,
    #[error("invalid port")]
    Port,
    #[error("invalid database number")]
    Database,
    #[error("invalid percent-encoding")]
    PercentEncoding,
    #[error("query strings and fragments are not supported")]
    Query,
}

#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address; IPv6 without the brackets.
    pub host: String,
    pub port: u16,
    pub username: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    pub db: u32,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("redis") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("rediss") => return Err(UrlError::TlsUnsupported),
            _ => return Err(UrlError::Scheme),
        };
        if rest.contains(['?', '#']) {
            return Err(UrlError::Query);
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // The last '@' ends the user info: the host part can't contain one.
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((user, pass)) => (user, Some(pass)),
                    None => (u, None),
                };
                let user = Some(percent_decode(user)?).filter(|u| !u.is_empty());
                (user, pass.map(percent_decode).transpose()?)
            }
        };
        let (host, port) = host_port(hostport)?;
        let db = match path {
            "" => 0,
            db => crate::parse::number(db).and_then(|n| u32::try_from(n).ok()).ok_or(UrlError::Database)?,
        };
        Ok(RedisUrl { host, port, username, password, db })
    }

    /// `host:port` for connecting (`[::1]:6379` for IPv6).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Appends the commands a new connection sends first (`AUTH`, `SELECT`); returns how many
    /// replies to read (each must be `+OK`) before the connection is ready.
    pub fn encode_handshake(&self, out: &mut Vec<u8>) -> usize {
        let mut replies = 0;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => CommandWriter::new(out, 3).arg(b"AUTH").arg(user).arg(password),
                None => CommandWriter::new(out, 2).arg(b"AUTH").arg(password),
            };
            replies += 1;
        }
        if self.db != 0 {
            CommandWriter::new(out, 2).arg(b"SELECT").int(u64::from(self.db));
            replies += 1;
        }
        replies
    }
}

/// Never prints the password, so the URL can go to logs.
impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        if let Some(user) = &self.username {
            f.write_str(&String::from_utf8_lossy(user))?;
        }
        if self.password.is_some() {
            f.write_str(":***")?;
        }
        if self.username.is_some() || self.password.is_some() {
            f.write_str("@")?;
        }
        write!(f, "{}/{}", self.address(), self.db)
    }
}

fn host_port(s: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UrlError::Host)?;
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(UrlError::Host);
        }
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or(UrlError::Port)?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b':';
    if !host.bytes().all(name_byte) {
        return Err(UrlError::Host);
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => crate::parse::number(p).and_then(|n| u16::try_from(n).ok()).filter(|&n| n > 0).ok_or(UrlError::Port)?,
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Result<Vec<u8>, UrlError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(UrlError::PercentEncoding)?;
            let hex = core::str::from_utf8(hex).map_err(|_| UrlError::PercentEncoding)?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(UrlError::PercentEncoding);
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::PercentEncoding)?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RedisUrl {
        RedisUrl::parse(s).unwrap()
    }

    #[test]
    fn defaults_and_full_form() {
        let u = url("redis://localhost");
        assert_eq!((u.host.as_str(), u.port, u.db, u.username, u.password), ("localhost", 6379, 0, None, None));
        let u = url("redis://app:s%40cr%3At@cache.example:6380/2");
        assert_eq!(u.username.as_deref(), Some(&b"app"[..]));
        assert_eq!(u.password.as_deref(), Some(&b"s@cr:t"[..]));
        assert_eq!((u.port, u.db), (6380, 2));
        assert_eq!(u.to_string(), "redis://app:***@cache.example:6380/2");
        assert_eq!(url("redis://10.0.0.1/").db, 0);
    }

    #[test]
    fn password_only_and_ipv6() {
        let u = url("redis://:pa%20ss@127.0.0.1");
        assert_eq!((u.username, u.password.as_deref()), (None, Some(&b"pa ss"[..])));
        let u = url("redis://[::1]:7000/3");
        assert_eq!((u.host.as_str(), u.port, u.db), ("::1", 7000, 3));
        assert_eq!(u.address(), "[::1]:7000");
        assert_eq!(url("redis://[::1]").port, 6379);
        assert_eq!(url("redis://u@h").username.as_deref(), Some(&b"u"[..]));
    }

    #[test]
    fn errors_are_specific() {
        let e = |s: &str| RedisUrl::parse(s).unwrap_err();
        assert_eq!(e("rediss://h"), UrlError::TlsUnsupported);
        assert!(e("rediss://h").to_string().contains("TLS"));
        assert_eq!(e("http://h"), UrlError::Scheme);
        assert_eq!(e("localhost:6379"), UrlError::Scheme);
        assert_eq!(e("redis://"), UrlError::MissingHost);
        assert_eq!(e("redis://:pw@"), UrlError::MissingHost);
        assert_eq!(e("redis://h:0"), UrlError::Port);
        assert_eq!(e("redis://h:65536"), UrlError::Port);
        assert_eq!(e("redis://h:x"), UrlError::Port);
        assert_eq!(e("redis://h:"), UrlError::Port);
        assert_eq!(e("redis://h/x"), UrlError::Database);
        assert_eq!(e("redis://h/-1"), UrlError::Database);
        assert_eq!(e("redis://h/1?timeout=1"), UrlError::Query);
        assert_eq!(e("redis://:%zz@h"), UrlError::PercentEncoding);
        assert_eq!(e("redis://:%4@h"), UrlError::PercentEncoding);
        assert_eq!(e("redis://[::1"), UrlError::Host);
        assert_eq!(e("redis://[::1]x"), UrlError::Port);
        assert_eq!(e("redis://[zz]"), UrlError::Host);
        assert_eq!(e("redis://ho st"), UrlError::Host);
    }

    #[test]
    fn handshake_sends_auth_and_select_only_when_needed() {
        let mut out = Vec::new();
        assert_eq!(url("redis://h").encode_handshake(&mut out), 0);
        assert!(out.is_empty());
        assert_eq!(url("redis://u:p@h/5").encode_handshake(&mut out), 2);
        assert_eq!(out, b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n5\r\n");
        let mut out = Vec::new();
        assert_eq!(url("redis://:p@h").encode_handshake(&mut out), 1);
        assert_eq!(out, b"*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n");
    }
}
