//! Redis Sentinel, pure: the question a worker asks a sentinel, how its answer is read, and
//! which replies from a "primary" mean it is not one any more. The glue (`glue/redis/`) asks
//! the sentinels in turn on every (re)connection, and rediscovers on `-READONLY`.

use super::resp::{self, Bound, Reply};

/// `SENTINEL GET-MASTER-ADDR-BY-NAME <name>`.
pub fn master_query(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode_command(&mut out, &[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", name.as_bytes()]);
    out
}

/// The answer is two short bulk strings (address and port), or nil, or an error.
pub const MASTER_REPLY: Bound = Bound { bytes: Bound::ERROR_LINE, elements: 2 };

/// The primary's IP address and port from a sentinel's answer. Only IP addresses are taken: a
/// host name would need a DNS lookup, which would block the worker.
pub fn master_address(reply: &Reply) -> Result<std::net::SocketAddr, String> {
    let items = match reply {
        Reply::Array(Some(items)) if items.len() == 2 => items,
        Reply::Array(None) | Reply::Bulk(None) => return Err("the sentinel knows no such primary".into()),
        Reply::Error(e) => return Err(format!("the sentinel answered \"{e}\"")),
        _ => return Err("unexpected sentinel reply".into()),
    };
    let text = |r: &Reply| match r {
        Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok().map(str::to_owned),
        _ => None,
    };
    let (Some(ip), Some(port)) = (text(&items[0]), text(&items[1])) else {
        return Err("unexpected sentinel reply".into());
    };
    let ip: std::net::IpAddr =
        ip.parse().map_err(|_| format!("the sentinel named the primary \"{ip}\", not an IP address"))?;
    let port: u16 = port.parse().ok().filter(|&p| p > 0).ok_or_else(|| format!("bad primary port \"{port}\""))?;
    Ok(std::net::SocketAddr::new(ip, port))
}

/// An error reply meaning the server is a replica now (a failover happened under us).
pub fn is_not_primary(error: &str) -> bool {
    error.starts_with("READONLY") || error.starts_with("MASTERDOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn reads_the_primary_address() {
        let r = Reply::Array(Some(vec![bulk("10.0.0.7"), bulk("6380")]));
        assert_eq!(master_address(&r).unwrap(), "10.0.0.7:6380".parse().unwrap());
        let v6 = Reply::Array(Some(vec![bulk("::1"), bulk("7000")]));
        assert_eq!(master_address(&v6).unwrap(), "[::1]:7000".parse().unwrap());
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        assert!(master_address(&Reply::Array(None)).unwrap_err().contains("no such primary"));
        assert!(master_address(&Reply::Error("ERR unknown".into())).unwrap_err().contains("ERR unknown"));
        let host = Reply::Array(Some(vec![bulk("redis-1.internal"), bulk("6379")]));
        assert!(master_address(&host).unwrap_err().contains("not an IP address"));
        let port = Reply::Array(Some(vec![bulk("10.0.0.7"), bulk("0")]));
        assert!(master_address(&port).is_err());
        assert!(master_address(&Reply::Array(Some(vec![bulk("10.0.0.7")]))).is_err());
        assert!(master_address(&Reply::Integer(1)).is_err());
    }

    #[test]
    fn query_and_replica_errors() {
        assert_eq!(
            master_query("mymaster"),
            b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nGET-MASTER-ADDR-BY-NAME\r\n$8\r\nmymaster\r\n".to_vec()
        );
        assert!(is_not_primary("READONLY You can't write against a read only replica."));
        assert!(!is_not_primary("ERR wrong number of arguments"));
    }
}
