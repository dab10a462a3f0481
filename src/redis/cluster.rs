//! Redis Cluster, pure: which slot a key lives in, the slot map a `CLUSTER SLOTS` reply
//! describes, and what a `-MOVED` / `-ASK` / `-TRYAGAIN` reply asks of the client. The glue
//! (`glue/redis/cluster.rs`) keeps one pipelined client per primary and routes by this map.

use std::net::SocketAddr;

use super::resp::{self, Bound, Reply};

/// Redis Cluster's key space.
pub const SLOTS: usize = 16384;

/// CRC16/XMODEM, as Redis Cluster uses it (the `crc` crate's table-driven implementation).
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The slot of `key`: of its hash tag (the bytes between the first `{` and the next `}`, when
/// not empty), else of the whole key.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
    });
    slot_of_tag(tagged.unwrap_or(key))
}

/// The slot of a hash tag's bytes (what [`slot`] computes once it found the tag).
pub fn slot_of_tag(tag: &[u8]) -> u16 {
    CRC16.checksum(tag) % SLOTS as u16
}

/// `CLUSTER SLOTS`.
pub fn slots_query() -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode_command(&mut out, &[b"CLUSTER", b"SLOTS"]);
    out
}

/// A cluster's map fits easily: a range per shard (or per fragment after resharding), each a
/// handful of short strings per node.
pub const SLOTS_REPLY: Bound = Bound { bytes: 1 << 20, elements: 64 * 1024 };

/// More primaries than this is not a cluster one nginx worker should hold a connection to each of.
pub const MAX_NODES: usize = 256;

/// Which primary serves each slot: `owner[slot]` indexes `nodes`; `None` for a slot no one
/// serves (a cluster being set up, or a failed shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    pub nodes: Vec<SocketAddr>,
    owner: Vec<Option<u16>>,
}

impl Default for SlotMap {
    fn default() -> SlotMap {
        SlotMap { nodes: Vec::new(), owner: vec![None; SLOTS] }
    }
}

impl SlotMap {
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owner.get(slot as usize).copied().flatten().map(usize::from)
    }

    /// The index of `node`, added if new; `None` past [`MAX_NODES`].
    pub fn node(&mut self, node: SocketAddr) -> Option<usize> {
        if let Some(i) = self.nodes.iter().position(|n| *n == node) {
            return Some(i);
        }
        if self.nodes.len() >= MAX_NODES {
            return None;
        }
        self.nodes.push(node);
        Some(self.nodes.len() - 1)
    }

    /// `slot` is served by `node` (a MOVED said so).
    pub fn assign(&mut self, slot: u16, node: SocketAddr) {
        if let (Some(i), Some(o)) = (self.node(node), self.owner.get_mut(slot as usize)) {
            *o = Some(i as u16);
        }
    }

    /// The slots served, for the log: how many are covered.
    pub fn covered(&self) -> usize {
        self.owner.iter().filter(|o| o.is_some()).count()
    }

    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id, ...], replicas...], ...]`.
    /// Node addresses keep the indices of `known` (so clients already connected keep theirs);
    /// an empty IP means "the address you reached me at", `asked`.
    pub fn from_reply(reply: &Reply, known: &[SocketAddr], asked: SocketAddr) -> Result<SlotMap, String> {
        let Reply::Array(Some(ranges)) = reply else {
            return Err(match reply {
                Reply::Error(e) => format!("CLUSTER SLOTS answered \"{e}\""),
                _ => "unexpected CLUSTER SLOTS reply".into(),
            });
        };
        let mut map = SlotMap { nodes: known.to_vec(), ..SlotMap::default() };
        for range in ranges {
            let Reply::Array(Some(items)) = range else { return Err("unexpected CLUSTER SLOTS range".into()) };
            let (Some(Reply::Integer(start)), Some(Reply::Integer(end)), Some(primary)) =
                (items.first(), items.get(1), items.get(2))
            else {
                return Err("unexpected CLUSTER SLOTS range".into());
            };
            if !(0..SLOTS as i64).contains(start) || !(*start..SLOTS as i64).contains(end) {
                return Err(format!("CLUSTER SLOTS range {start}-{end} out of bounds"));
            }
            let addr = node_address(primary, asked)?;
            let i = map.node(addr).ok_or("more than 256 primaries")?;
            for o in &mut map.owner[*start as usize..=*end as usize] {
                *o = Some(i as u16);
            }
        }
        Ok(map)
    }
}

fn node_address(node: &Reply, asked: SocketAddr) -> Result<SocketAddr, String> {
    let Reply::Array(Some(fields)) = node else { return Err("unexpected CLUSTER SLOTS node".into()) };
    let (Some(Reply::Bulk(Some(ip))), Some(Reply::Integer(port))) = (fields.first(), fields.get(1)) else {
        return Err("unexpected CLUSTER SLOTS node".into());
    };
    let port = u16::try_from(*port).ok().filter(|&p| p > 0).ok_or_else(|| format!("bad node port {port}"))?;
    if ip.is_empty() {
        return Ok(SocketAddr::new(asked.ip(), port));
    }
    let ip = std::str::from_utf8(ip).map_err(|_| "bad node address".to_string())?;
    // Only IP addresses: a host name would need a DNS lookup, which would block the worker.
    let ip: std::net::IpAddr =
        ip.parse().map_err(|_| format!("the cluster named a node \"{ip}\", not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// What an error reply asks a cluster client to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    /// The slot lives on `node` now: update the map (and refresh it), send there.
    Moved { slot: u16, node: SocketAddr },
    /// The slot is being migrated and this key is already on `node`: send `ASKING` and the
    /// command there, once; the map does not change.
    Ask { slot: u16, node: SocketAddr },
    /// A multi-key command met a slot half-migrated: send again shortly.
    TryAgain,
    /// The cluster is down or the slot unserved (`CLUSTERDOWN`): follow the fail policy.
    Down,
}

/// The redirection an error reply asks for, if it is one. A command that got any of these
/// was not executed, so sending it again cannot apply it twice.
pub fn redirect(error: &str) -> Option<Redirect> {
    let mut words = error.split(' ');
    let verb = words.next()?;
    match verb {
        "MOVED" | "ASK" => {
            let slot: u16 = words.next()?.parse().ok().filter(|&s| (s as usize) < SLOTS)?;
            let node = words.next()?;
            // "ip:port", "[v6]:port"; ":port" (unknown endpoint) is the node we asked.
            let node: SocketAddr = node.parse().ok()?;
            Some(if verb == "MOVED" { Redirect::Moved { slot, node } } else { Redirect::Ask { slot, node } })
        }
        "TRYAGAIN" => Some(Redirect::TryAgain),
        "CLUSTERDOWN" => Some(Redirect::Down),
        _ => None,
    }
}

/// `ASKING`, sent just before a command following an `-ASK`.
pub const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31c3, "CRC16/XMODEM check value, below 16384");
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"), "an empty tag: the whole key");
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b"shield:{10.0.0.1}:api"), slot(b"10.0.0.1"));
        assert_eq!(slot_of_tag(b"10.0.0.1"), slot(b"x{10.0.0.1}y"));
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    fn node(ip: &str, port: i64) -> Reply {
        Reply::Array(Some(vec![bulk(ip), Reply::Integer(port), bulk("id")]))
    }

    fn range(start: i64, end: i64, nodes: Vec<Reply>) -> Reply {
        let mut items = vec![Reply::Integer(start), Reply::Integer(end)];
        items.extend(nodes);
        Reply::Array(Some(items))
    }

    #[test]
    fn reads_the_slot_map() {
        let asked: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let known: Vec<SocketAddr> = vec!["127.0.0.1:7002".parse().unwrap()];
        let reply = Reply::Array(Some(vec![
            range(0, 5460, vec![node("127.0.0.1", 7000), node("127.0.0.1", 7003)]),
            range(5461, 10922, vec![node("", 7001)]),
            range(10923, 16383, vec![node("127.0.0.1", 7002)]),
        ]));
        let map = SlotMap::from_reply(&reply, &known, asked).unwrap();
        assert_eq!(map.nodes.len(), 3, "replicas are not nodes to write to");
        assert_eq!(map.nodes[0], known[0], "a known node keeps its index");
        assert_eq!(map.nodes[map.owner(0).unwrap()], asked);
        assert_eq!(map.nodes[map.owner(5461).unwrap()], "127.0.0.1:7001".parse().unwrap());
        assert_eq!(map.owner(16383), Some(0));
        assert_eq!(map.covered(), SLOTS);
        let partial = Reply::Array(Some(vec![range(0, 99, vec![node("127.0.0.1", 7000)])]));
        let map = SlotMap::from_reply(&partial, &[], asked).unwrap();
        assert_eq!((map.owner(99), map.owner(100), map.covered()), (Some(0), None, 100));
        for bad in [
            Reply::Error("ERR This instance has cluster support disabled".into()),
            Reply::Array(Some(vec![range(0, 16384, vec![node("127.0.0.1", 7000)])])),
            Reply::Array(Some(vec![range(10, 9, vec![node("127.0.0.1", 7000)])])),
            Reply::Array(Some(vec![range(0, 1, vec![node("redis.local", 7000)])])),
            Reply::Array(Some(vec![range(0, 1, vec![node("127.0.0.1", 0)])])),
            Reply::Array(Some(vec![range(0, 1, vec![])])),
            Reply::Integer(3),
        ] {
            assert!(SlotMap::from_reply(&bad, &[], asked).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_moved_slot_changes_owner() {
        let mut map = SlotMap::default();
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let b: SocketAddr = "[::1]:7001".parse().unwrap();
        map.assign(7, a);
        map.assign(8, a);
        map.assign(8, b);
        assert_eq!((map.owner(7), map.owner(8), map.nodes.len()), (Some(0), Some(1), 2));
    }

    #[test]
    fn reads_redirections() {
        assert_eq!(
            redirect("MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved { slot: 3999, node: "127.0.0.1:6381".parse().unwrap() })
        );
        assert_eq!(
            redirect("ASK 3999 [::1]:6381"),
            Some(Redirect::Ask { slot: 3999, node: "[::1]:6381".parse().unwrap() })
        );
        assert_eq!(redirect("TRYAGAIN Multiple keys request during rehashing of slot"), Some(Redirect::TryAgain));
        assert_eq!(redirect("CLUSTERDOWN Hash slot not served"), Some(Redirect::Down));
        for other in ["MOVED 16384 127.0.0.1:1", "MOVED x 127.0.0.1:1", "MOVED 1 host:1", "ASK 1", "ERR x", "NOSCRIPT"]
        {
            assert_eq!(redirect(other), None, "{other}");
        }
    }
}
