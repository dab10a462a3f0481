//! A real Redis Cluster on loopback for the integration tests: six `redis-server
//! --cluster-enabled yes` nodes (three primaries, one replica each) formed with `redis-cli
//! --cluster create`, plus what the tests need to disturb it: a slot moved live the manual way
//! (`CLUSTER SETSLOT IMPORTING/MIGRATING`, `MIGRATE ... KEYS`, `CLUSTER SETSLOT NODE`) with a
//! hook into the half-migrated window, and a primary killed and its replica promoted.
//!
//! The nodes are queried with plain `redis` crate connections to one node at a time (the
//! crate's `cluster` feature is not used): a reply that redirects comes back as text, e.g.
//! `-MOVED 866 127.0.0.1:40001`, so the tests can assert where a key lives.
//!
//! Choices worth knowing:
//! - Each node's bus port is picked with `free_port()` and passed as `--cluster-port` (the
//!   default, port + 10000, may be taken or above 65535).
//! - `--cluster-require-full-coverage no`: while a dead primary's slots have no owner, the
//!   other primaries keep serving theirs (with the default, every node answers `CLUSTERDOWN`
//!   for every key until the replica is promoted).
//! - Every wait is bounded; a bound that passes panics with what was waited for.
//!
//! A test crate includes it beside `support` (`#[path = "support/cluster.rs"] mod cluster;`).
#![allow(dead_code)] // each test uses part of it

use std::fs;
use std::ops::RangeInclusive;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{free_port, TempDir};

/// Slots a primary serves, as CLUSTER SLOTS lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub port: u16,
    pub slots: Vec<RangeInclusive<u16>>,
}

impl Primary {
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

/// A replica's promotion, as seen by polling its `ROLE`.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    /// The promoted replica's port.
    pub new_primary: u16,
    /// The last time it still answered `slave`: the promotion happened after this.
    pub still_replica_at: Instant,
    /// The first time it answered `master`.
    pub promoted_at: Instant,
}

struct Node {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
}

/// How long a node may take to answer one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn redis_bin() -> String {
    std::env::var("SHIELD_REDIS_BIN").unwrap_or_else(|_| "redis-server".into())
}

fn redis_cli_bin() -> String {
    std::env::var("SHIELD_REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".into())
}

/// One command to one node; `Err` only if the node cannot be reached (refused, timed out);
/// a server error reply is `Ok("-CODE detail")`.
fn try_query(port: u16, args: &[&[u8]]) -> Result<redis::Value, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut con = client.get_connection_with_timeout(COMMAND_TIMEOUT).map_err(|e| e.to_string())?;
    con.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(|e| e.to_string())?;
    con.set_write_timeout(Some(COMMAND_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(&mut con) {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == redis::ErrorKind::IoError => Err(e.to_string()),
        Err(e) => {
            let text = match (e.code(), e.detail()) {
                (Some(code), Some(detail)) => format!("-{code} {detail}"),
                (Some(code), None) => format!("-{code}"),
                _ => format!("-{e}"),
            };
            Ok(redis::Value::SimpleString(text))
        }
    }
}

/// A reply as text, like `support::Redis::try_command`'s.
fn reply_text(v: &redis::Value) -> String {
    match v {
        redis::Value::Okay => "+OK".into(),
        redis::Value::SimpleString(s) if s.starts_with('-') => s.clone(),
        redis::Value::SimpleString(s) => format!("+{s}"),
        redis::Value::Int(n) => format!(":{n}"),
        redis::Value::Nil => "(nil)".into(),
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Array(items) => items.iter().map(reply_text).collect::<Vec<_>>().join("\n"),
        other => format!("{other:?}"),
    }
}

fn as_int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(n) => Some(*n),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn as_text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// A server error reply (`-CODE ...`), made into a panic with what was attempted.
fn expect_ok(what: &str, v: redis::Value) -> redis::Value {
    if let redis::Value::SimpleString(s) = &v {
        assert!(!s.starts_with('-'), "{what}: {s}");
    }
    v
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to completion within `limit` (killed otherwise); returns (success, output).
fn run_bounded(cmd: &mut Command, dir: &TempDir, limit: Duration) -> (bool, String) {
    let out_path = dir.path().join("command.out");
    let out = fs::File::create(&out_path).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(s) => (s.success(), text),
        None => (false, format!("{text}\n(killed after {limit:?})")),
    }
}

/// CLUSTER SLOTS as (range, primary port), from one node's view.
fn slots_of(port: u16) -> Result<Vec<(RangeInclusive<u16>, u16)>, String> {
    let reply = try_query(port, &[b"CLUSTER", b"SLOTS"])?;
    let redis::Value::Array(ranges) = reply else { return Err(format!("CLUSTER SLOTS: {reply:?}")) };
    let mut out = Vec::new();
    for r in &ranges {
        let redis::Value::Array(items) = r else { return Err(format!("CLUSTER SLOTS entry: {r:?}")) };
        let (Some(start), Some(end)) = (items.first().and_then(as_int), items.get(1).and_then(as_int)) else {
            return Err(format!("CLUSTER SLOTS range: {r:?}"));
        };
        let Some(redis::Value::Array(primary)) = items.get(2) else { return Err(format!("CLUSTER SLOTS node: {r:?}")) };
        let port = primary.get(1).and_then(as_int).ok_or_else(|| format!("CLUSTER SLOTS port: {r:?}"))?;
        out.push((start as u16..=end as u16, port as u16));
    }
    out.sort_by_key(|(r, _)| *r.start());
    Ok(out)
}

impl RedisCluster {
    /// Six nodes, three primaries with a replica each, `cluster_state:ok` on every node and
    /// every replica in sync with its primary.
    pub fn start() -> RedisCluster {
        let mut cluster = RedisCluster { nodes: Vec::new() };
        for _ in 0..6 {
            let port = free_port();
            let bus = free_port();
            let dir = TempDir::new();
            let child = Command::new(redis_bin())
                .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.path().join("nodes.conf"))
                .args(["--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no"])
                .args(["--appendonly", "no", "--save", ""])
                // A replica's first sync starts at once (7.0 waits 5 s for more replicas).
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server (apt-get install redis-server)");
            cluster.nodes.push(Node { port, child: Some(child), dir });
        }
        for port in cluster.ports() {
            wait_until(&format!("redis-server on {port}"), Duration::from_secs(10), || {
                try_query(port, &[b"PING"]).is_ok()
            });
        }
        let mut create = Command::new(redis_cli_bin());
        create.args(["--cluster", "create"]);
        create.args(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let (ok, out) = run_bounded(&mut create, &cluster.nodes[0].dir, Duration::from_secs(30));
        assert!(ok && out.contains("All 16384 slots covered"), "redis-cli --cluster create failed:\n{out}");
        cluster.wait_healthy(Duration::from_secs(15));
        cluster
    }

    /// Waits until every live node says `cluster_state:ok`, every live replica's link to its
    /// primary is up, and every live node's CLUSTER SLOTS is the same.
    pub fn wait_healthy(&self, limit: Duration) {
        let live = self.live_ports();
        wait_until("the cluster to be healthy and agree on its slots", limit, || {
            let mut views = Vec::new();
            for &port in &live {
                let Ok(info) = self.try_command(port, &["CLUSTER", "INFO"]) else { return false };
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                let Ok(repl) = self.try_command(port, &["INFO", "replication"]) else { return false };
                if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
                    return false;
                }
                let Ok(view) = slots_of(port) else { return false };
                views.push(view);
            }
            let covered: usize = views[0].iter().map(|(r, _)| r.len()).sum();
            covered == 16384 && views.windows(2).all(|w| w[0] == w[1])
        });
    }

    /// Every node's port, in the order given to `redis-cli --cluster create` (it makes the
    /// first three the primaries).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the nodes that have not been killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    /// `redis+cluster://` with the first two nodes as seeds.
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{},127.0.0.1:{}", self.nodes[0].port, self.nodes[1].port)
    }

    /// The primaries and their slot ranges (CLUSTER SLOTS of the first live primary), sorted
    /// by their first slot.
    pub fn primaries(&self) -> Vec<Primary> {
        let port = self.a_live_primary();
        let slots = slots_of(port).unwrap_or_else(|e| panic!("CLUSTER SLOTS on {port}: {e}"));
        let mut out: Vec<Primary> = Vec::new();
        for (range, owner) in slots {
            match out.iter_mut().find(|p| p.port == owner) {
                Some(p) => p.slots.push(range),
                None => out.push(Primary { port: owner, slots: vec![range] }),
            }
        }
        out
    }

    fn a_live_primary(&self) -> u16 {
        self.live_ports()
            .into_iter()
            .find(|&p| self.role(p).as_deref() == Some("master"))
            .expect("no live primary in the cluster")
    }

    /// `ROLE`'s first element (`master` / `slave`), `None` if the node does not answer.
    pub fn role(&self, port: u16) -> Option<String> {
        match try_query(port, &[b"ROLE"]).ok()? {
            redis::Value::Array(items) => items.first().and_then(as_text),
            _ => None,
        }
    }

    /// The port of the primary a replica follows (`None` for a primary or a dead node).
    pub fn primary_of(&self, replica: u16) -> Option<u16> {
        match try_query(replica, &[b"ROLE"]).ok()? {
            redis::Value::Array(items) if items.first().and_then(as_text).as_deref() == Some("slave") => {
                items.get(2).and_then(as_int).map(|p| p as u16)
            }
            _ => None,
        }
    }

    /// The live replica following the primary at `primary`.
    pub fn replica_of(&self, primary: u16) -> u16 {
        self.live_ports()
            .into_iter()
            .find(|&p| self.primary_of(p) == Some(primary))
            .unwrap_or_else(|| panic!("no live replica of {primary}"))
    }

    pub fn keyslot(&self, key: &str) -> u16 {
        let port = self.live_ports()[0];
        let reply = self.command(port, &["CLUSTER", "KEYSLOT", key]);
        reply.strip_prefix(':').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("CLUSTER KEYSLOT: {reply}"))
    }

    /// The port of the primary serving `slot`.
    pub fn node_of_slot(&self, slot: u16) -> u16 {
        self.primaries()
            .into_iter()
            .find(|p| p.owns(slot))
            .map(|p| p.port)
            .unwrap_or_else(|| panic!("slot {slot} has no owner"))
    }

    /// The port of the primary serving `key`'s slot.
    pub fn node_of_key(&self, key: &str) -> u16 {
        self.node_of_slot(self.keyslot(key))
    }

    pub fn node_id(&self, port: u16) -> String {
        self.command(port, &["CLUSTER", "MYID"])
    }

    /// One command to the node at `port`; the reply as text like `Redis::try_command`'s
    /// (`+OK`, `:5`, a bulk string, `(nil)`, lines for an array, `-MOVED 866 127.0.0.1:p` for
    /// an error); `Err` if the node cannot be reached.
    pub fn try_command(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        try_query(port, &args).map(|v| reply_text(&v))
    }

    pub fn command(&self, port: u16, args: &[&str]) -> String {
        self.try_command(port, args).unwrap_or_else(|e| panic!("redis {port} {args:?}: {e}"))
    }

    /// `GET key` on that node (no redirection followed): the value, `(nil)`, or `-MOVED ...`.
    pub fn get(&self, port: u16, key: &str) -> String {
        self.command(port, &["GET", key])
    }

    pub fn set(&self, port: u16, key: &str, value: &str) -> String {
        self.command(port, &["SET", key, value])
    }

    /// `EXISTS key` on that node: `:1`, `:0` or `-MOVED ...`.
    pub fn exists(&self, port: u16, key: &str) -> String {
        self.command(port, &["EXISTS", key])
    }

    /// Moves `slot` to the primary at `to` live, the way `redis-cli --cluster reshard` does.
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        self.migrate_slot_with(slot, to, || {});
    }

    /// `migrate_slot`, pausing `pause` with the slot half-migrated (its keys moved, the
    /// source still MIGRATING, the target still IMPORTING): the ASK / TRYAGAIN window.
    pub fn migrate_slot_paused(&self, slot: u16, to: u16, pause: Duration) {
        self.migrate_slot_with(slot, to, || thread::sleep(pause));
    }

    /// `migrate_slot`, running `half_migrated` once the keys have been moved and before the
    /// slot is given to its new owner: a request for a key of the slot then meets `-ASK` on
    /// the source (and `-MOVED` back to the source on the target without `ASKING`). Keys
    /// written on the source meanwhile (by a client that reached it before it answered ASK)
    /// are moved after `half_migrated` returns.
    pub fn migrate_slot_with(&self, slot: u16, to: u16, half_migrated: impl FnOnce()) {
        let from = self.node_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already served by {to}");
        let primaries: Vec<u16> = self.primaries().iter().map(|p| p.port).collect();
        assert!(primaries.contains(&to), "{to} is not a primary: {primaries:?}");
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let s = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let reply = self.command(port, args);
            assert_eq!(reply, "+OK", "{port} {args:?}");
        };
        ok(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
        self.move_keys(slot, from, to);
        half_migrated();
        self.move_keys(slot, from, to);
        // The target first (it bumps its config epoch), then the source, then the others.
        ok(to, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        ok(from, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        for &p in primaries.iter().filter(|&&p| p != to && p != from) {
            ok(p, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        }
    }

    /// `CLUSTER GETKEYSINSLOT` + `MIGRATE ... KEYS` until the source holds none of the slot's
    /// keys (at most 30 s).
    fn move_keys(&self, slot: u16, from: u16, to: u16) {
        let start = Instant::now();
        let s = slot.to_string();
        loop {
            let reply = try_query(from, &[b"CLUSTER", b"GETKEYSINSLOT", s.as_bytes(), b"100"])
                .unwrap_or_else(|e| panic!("GETKEYSINSLOT on {from}: {e}"));
            let keys: Vec<Vec<u8>> = match expect_ok("GETKEYSINSLOT", reply) {
                redis::Value::Array(items) => items
                    .into_iter()
                    .map(|k| match k {
                        redis::Value::BulkString(b) => b,
                        other => panic!("GETKEYSINSLOT key: {other:?}"),
                    })
                    .collect(),
                other => panic!("GETKEYSINSLOT: {other:?}"),
            };
            if keys.is_empty() {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "slot {slot} never drained from {from}");
            let to_port = to.to_string();
            let mut args: Vec<&[u8]> = vec![b"MIGRATE", b"127.0.0.1", to_port.as_bytes(), b"", b"0", b"5000", b"KEYS"];
            args.extend(keys.iter().map(Vec::as_slice));
            let reply = try_query(from, &args).unwrap_or_else(|e| panic!("MIGRATE on {from}: {e}"));
            // NOKEY: the keys expired or were deleted since GETKEYSINSLOT; the next round sees.
            if !matches!(&reply, redis::Value::SimpleString(s) if s == "NOKEY") {
                expect_ok(&format!("MIGRATE slot {slot} {from} -> {to}"), reply);
            }
        }
    }

    /// Waits until every live node names `to` as the owner of `slot` (replicas learn it by
    /// gossip).
    pub fn wait_slot_owner(&self, slot: u16, to: u16, limit: Duration) {
        wait_until(&format!("every node to give slot {slot} to {to}"), limit, || {
            self.live_ports()
                .iter()
                .all(|&p| slots_of(p).is_ok_and(|v| v.iter().any(|(r, owner)| r.contains(&slot) && *owner == to)))
        });
    }

    /// SIGKILL to the node at `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// After `dead` (a primary) was killed: waits until its replica answers `ROLE` with
    /// `master`, then until every live node is healthy and agrees on the slots.
    pub fn wait_promoted(&self, replica: u16, limit: Duration) -> Failover {
        let start = Instant::now();
        let mut still_replica_at = start;
        loop {
            let asked = Instant::now();
            match self.role(replica).as_deref() {
                Some("master") => break,
                Some(_) => still_replica_at = asked,
                None => {}
            }
            assert!(start.elapsed() < limit, "replica {replica} not promoted within {limit:?}");
            thread::sleep(Duration::from_millis(20));
        }
        let promoted_at = Instant::now();
        self.wait_healthy(limit.saturating_sub(start.elapsed()).max(Duration::from_secs(1)));
        Failover { new_primary: replica, still_replica_at, promoted_at }
    }

    /// The log of the node at `port` (for a failure message).
    pub fn log(&self, port: u16) -> String {
        let node = self.nodes.iter().find(|n| n.port == port).expect("a node of this cluster");
        fs::read_to_string(node.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
