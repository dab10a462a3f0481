//! `shield_redis redis+cluster://...`: rate limits on a real six-node Redis Cluster (three
//! primaries, one replica each; `support/cluster.rs`). Admission stays exact across nginx
//! instances, workers and primaries; each client's state lives on the primary owning its
//! slot; slots moved live (MOVED, and ASK / TRYAGAIN while half-migrated) lose and double
//! nothing; a request rejected by one limit charges no other limit even when their keys live
//! on different primaries; and a dead primary gets the fail policy for its slots only, until
//! its replica is promoted.
//!
//! The first test needs no nginx: it holds the harness itself to what the others rely on.
//! The tests take one lock: they are timed against a node timeout of 1 s, and six Redis
//! nodes, two nginx and a load each would starve one another on a small machine.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use cluster::RedisCluster;
use support::{parallel, try_http_request, Nginx};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Redis key of a client's state in zone `zone` (hash tag: the client key).
fn state_key(key: &str, zone: &str) -> String {
    format!("shield:{{{key}}}:{zone}")
}

/// `n` keys `<prefix><i>`, taken in turn from each primary's slots (key 0 on the first
/// primary, key 1 on the second, ...), so every primary holds a third of them.
fn spread_keys(cluster: &RedisCluster, prefix: &str, n: usize) -> Vec<String> {
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    let mut per: Vec<Vec<String>> = vec![Vec::new(); primaries.len()];
    let want = n.div_ceil(primaries.len());
    for i in 0..20 * n + 100 {
        let key = format!("{prefix}{i}");
        let owner = cluster.node_of_key(&key);
        let at = primaries.iter().position(|&p| p == owner).unwrap();
        if per[at].len() < want {
            per[at].push(key);
        }
        if per.iter().all(|p| p.len() == want) {
            break;
        }
    }
    assert!(per.iter().all(|p| p.len() == want), "not enough keys on every primary: {per:?}");
    (0..n).map(|i| per[i % per.len()][i / per.len()].clone()).collect()
}

/// One request with `X-Key: key`: its status (0 if it failed) and how long it took.
fn request(port: u16, headers: &[(&str, &str)]) -> (u16, Duration) {
    let start = Instant::now();
    let status = try_http_request(port, "GET", "/index.html", headers, None).map_or(0, |r| r.status);
    (status, start.elapsed())
}

fn status(port: u16, key: &str) -> u16 {
    request(port, &[("X-Key", key)]).0
}

/// An nginx with two workers limiting `$http_x_key` in zone `z` on the cluster.
fn limited_nginx(cluster: &RedisCluster, rate: &str, burst: u32) -> Nginx {
    let nginx = Nginx::builder()
        .worker_processes(2)
        .http(&format!(
            r#"
            shield_redis {} timeout=200ms;
            shield_limit_zone $http_x_key zone=z:1m rate={rate};
            shield_limit_fail closed;
            server {{
                listen 127.0.0.1:%%PORT%%;
                root %%HTML%%;
                location / {{ shield_limit zone=z burst={burst} nodelay; }}
            }}"#,
            cluster.url()
        ))
        .start();
    warm_up(&nginx);
    nginx
}

/// Waits (at most 10 s) until the module decides on the cluster: 8 requests in a row with
/// fresh keys are admitted (with two workers, both have answered some of them).
fn warm_up(nginx: &Nginx) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let start = Instant::now();
    let mut streak = 0;
    while streak < 8 {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let s = status(nginx.port, &format!("warmup-{}-{n}", nginx.port));
        streak = if s == 200 { streak + 1 } else { 0 };
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nginx never decided on the cluster (last status {s}):\n{}",
            nginx.error_log()
        );
        if s != 200 {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Counts of each status per key.
fn tally(results: &[(usize, u16)], keys: &[String]) -> Vec<HashMap<u16, usize>> {
    let mut per = vec![HashMap::new(); keys.len()];
    for &(k, s) in results {
        *per[k].entry(s).or_insert(0) += 1;
    }
    per
}

// ---------------------------------------------------------------------------------------
// the harness

#[test]
fn cluster_harness_forms_and_migrates() {
    let _serial = serial();
    let cluster = RedisCluster::start();
    assert_eq!(cluster.ports().len(), 6);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    let covered: usize = primaries.iter().flat_map(|p| p.slots.iter()).map(|r| r.len()).sum();
    assert_eq!(covered, 16384, "{primaries:?}");
    let p = cluster.ports();
    assert_eq!(cluster.url(), format!("redis+cluster://127.0.0.1:{},127.0.0.1:{}", p[0], p[1]));
    for primary in &primaries {
        let replica = cluster.replica_of(primary.port);
        assert_eq!(cluster.role(replica).as_deref(), Some("slave"));
    }

    // Known slots (CRC16 of the key, mod 16384; the hash tag's content when there is one).
    assert_eq!(cluster.keyslot("foo"), 12182);
    assert_eq!(cluster.keyslot("shield:{foo}:z"), 12182);

    let key = "harness-key";
    let slot = cluster.keyslot(key);
    let from = cluster.node_of_slot(slot);
    let to = primaries.iter().map(|p| p.port).find(|&p| p != from).unwrap();
    let third = primaries.iter().map(|p| p.port).find(|&p| p != from && p != to).unwrap();
    assert_eq!(cluster.set(from, key, "v1"), "+OK");
    assert_eq!(cluster.get(to, key), format!("-MOVED {slot} 127.0.0.1:{from}"));
    // More keys in the slot than one GETKEYSINSLOT round moves.
    for i in 0..250 {
        assert_eq!(cluster.set(from, &format!("{{{key}}}:{i}"), &i.to_string()), "+OK");
    }

    let mut half_migrated = Vec::new();
    cluster.migrate_slot_with(slot, to, || {
        half_migrated.push(cluster.get(from, key));
        half_migrated.push(cluster.get(to, key));
        half_migrated.push(cluster.get(from, "{harness-key}:new"));
    });
    assert_eq!(
        half_migrated,
        [
            format!("-ASK {slot} 127.0.0.1:{to}"),
            format!("-MOVED {slot} 127.0.0.1:{from}"),
            format!("-ASK {slot} 127.0.0.1:{to}")
        ],
        "half-migrated: the source sends moved and new keys to the target with ASK"
    );

    assert_eq!(cluster.node_of_slot(slot), to);
    assert_eq!(cluster.get(to, key), "v1", "the key moved with its value");
    for i in (0..250).step_by(37) {
        assert_eq!(cluster.get(to, &format!("{{{key}}}:{i}")), i.to_string());
    }
    assert_eq!(cluster.command(to, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]), ":251");
    assert_eq!(cluster.command(from, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]), ":0");
    assert_eq!(cluster.get(from, key), format!("-MOVED {slot} 127.0.0.1:{to}"), "the old owner redirects");
    assert_eq!(cluster.get(third, key), format!("-MOVED {slot} 127.0.0.1:{to}"), "so does the third primary");
    cluster.wait_slot_owner(slot, to, Duration::from_secs(10));
    let neighbours = cluster.primaries();
    assert!(neighbours.iter().find(|p| p.port == from).unwrap().slots.iter().all(|r| !r.contains(&slot)));
    assert!(neighbours.iter().find(|p| p.port == to).unwrap().owns(slot));

    // And back, with no pause: the harness can move a slot any number of times.
    cluster.migrate_slot(slot, from);
    assert_eq!(cluster.get(from, key), "v1");
    assert_eq!(cluster.node_of_slot(slot), from);
}

#[test]
fn cluster_harness_promotes_a_replica() {
    let _serial = serial();
    let mut cluster = RedisCluster::start();
    let victim = cluster.primaries()[0].clone();
    let replica = cluster.replica_of(victim.port);
    let key = (0..).map(|i| format!("promote-{i}")).find(|k| cluster.node_of_key(k) == victim.port).unwrap();
    assert_eq!(cluster.set(victim.port, &key, "kept"), "+OK");
    cluster.command(victim.port, &["WAIT", "1", "2000"]);
    let other = cluster.primaries()[1].port;
    let other_key = (0..).map(|i| format!("elsewhere-{i}")).find(|k| cluster.node_of_key(k) == other).unwrap();
    let killed = Instant::now();
    cluster.kill(victim.port);
    assert!(cluster.try_command(victim.port, &["PING"]).is_err(), "the victim is dead");
    // While the victim's slots have no primary, the others keep serving theirs
    // (cluster-require-full-coverage no), before and after the failure is detected.
    for _ in 0..10 {
        assert_eq!(cluster.set(other, &other_key, "x"), "+OK");
        thread::sleep(Duration::from_millis(100));
    }
    let failover = cluster.wait_promoted(replica, Duration::from_secs(15));
    eprintln!("promoted {:?} after the kill", failover.promoted_at - killed);
    assert_eq!(failover.new_primary, replica);
    assert!(failover.still_replica_at <= failover.promoted_at);
    assert_eq!(cluster.node_of_slot(*victim.slots[0].start()), replica, "the replica took the slots");
    assert_eq!(cluster.get(replica, &key), "kept", "with the data");
    assert_eq!(cluster.live_ports().len(), 5);
}

// ---------------------------------------------------------------------------------------
// the module

/// Two nginx instances with two workers each on one cluster; 40 keys over the three
/// primaries, 12 requests each from 12 threads: each key admits exactly burst + 1.
#[test]
fn exact_admission_across_two_nodes_and_two_workers() {
    let _serial = serial();
    let cluster = RedisCluster::start();
    let burst = 4;
    let a = limited_nginx(&cluster, "1r/m", burst);
    let b = limited_nginx(&cluster, "1r/m", burst);
    let keys = spread_keys(&cluster, "exact-", 40);
    let owners: Vec<u16> = keys.iter().map(|k| cluster.node_of_key(k)).collect();
    for p in cluster.primaries() {
        assert!(owners.iter().filter(|&&o| o == p.port).count() >= 13, "keys on every primary");
    }
    let per_key = 12;
    let ports = [a.port, b.port];
    let keys2 = Arc::new(keys.clone());
    let results = parallel(keys.len() * per_key, 12, Duration::from_secs(60), move |i| {
        let k = i % keys2.len();
        let port = ports[(i / keys2.len()) % 2];
        (k, status(port, &keys2[k]))
    });
    assert_eq!(results.len(), keys.len() * per_key, "every request answered within 60 s");
    let per = tally(&results, &keys);
    let admitted = burst as usize + 1;
    let wrong: Vec<String> = per
        .iter()
        .enumerate()
        .filter(|(_, t)| t.get(&200) != Some(&admitted) || t.get(&429) != Some(&(per_key - admitted)))
        .map(|(k, t)| format!("{} (on {}): {t:?}", keys[k], owners[k]))
        .collect();
    assert!(wrong.is_empty(), "each key admits exactly {admitted}, the rest 429:\n{}", wrong.join("\n"));
}

/// Each client's state is written on the primary that owns its slot, and nowhere else.
#[test]
fn keys_live_on_their_slot_owner() {
    let _serial = serial();
    let cluster = RedisCluster::start();
    let nginx = limited_nginx(&cluster, "1r/m", 3);
    let keys = spread_keys(&cluster, "owner-", 30);
    for k in &keys {
        assert_eq!(status(nginx.port, k), 200, "{k}");
    }
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();
    for k in &keys {
        let slot = cluster.keyslot(k);
        let rk = state_key(k, "z");
        assert_eq!(cluster.keyslot(&rk), slot, "the client key is the hash tag");
        let owner = cluster.node_of_slot(slot);
        assert_eq!(cluster.exists(owner, &rk), ":1", "{rk} on its slot's owner {owner}");
        let tat: u64 = cluster.get(owner, &rk).parse().unwrap_or_else(|_| panic!("{rk}: a GCRA state"));
        assert!(tat > 0);
        for &other in primaries.iter().filter(|&&p| p != owner) {
            assert_eq!(cluster.exists(other, &rk), format!("-MOVED {slot} 127.0.0.1:{owner}"), "{rk} on {other}");
        }
    }
}

/// Slots of nine keys (three per primary) are moved from primary to primary in a loop while
/// each key gets 100 requests over both nginx; every other migration pauses 150 ms with the
/// slot half-migrated. Each key admits exactly burst + 1 (rate 1r/h: nothing refills) and no
/// request gets anything but 200 or 429.
#[test]
fn a_live_reshard_loses_nothing() {
    let _serial = serial();
    let cluster = RedisCluster::start();
    let burst = 49;
    let a = limited_nginx(&cluster, "1r/h", burst);
    let b = limited_nginx(&cluster, "1r/h", burst);
    let keys = spread_keys(&cluster, "reshard-", 12);
    let (moving, _control) = keys.split_at(9);
    let slots: Vec<u16> = moving.iter().map(|k| cluster.keyslot(k)).collect();
    let primaries: Vec<u16> = cluster.primaries().iter().map(|p| p.port).collect();

    let per_key = 100;
    let ports = [a.port, b.port];
    let done = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<(usize, u16, Duration)>>> = Arc::new(Mutex::new(Vec::new()));
    let load: Vec<_> = (0..keys.len())
        .map(|k| {
            let (key, done, seen) = (keys[k].clone(), done.clone(), seen.clone());
            thread::spawn(move || {
                let start = Instant::now();
                for n in 0..per_key {
                    if start.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let (s, took) = request(ports[n % 2], &[("X-Key", &key)]);
                    seen.lock().unwrap().push((k, s, took));
                    thread::sleep(Duration::from_millis(25));
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();

    thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let mut migrations = 0;
    'moving: for round in 0.. {
        for (i, &slot) in slots.iter().enumerate() {
            if done.load(Ordering::Relaxed) == keys.len() || start.elapsed() > Duration::from_secs(60) {
                break 'moving;
            }
            let from = cluster.node_of_slot(slot);
            let to = primaries[(primaries.iter().position(|&p| p == from).unwrap() + 1) % primaries.len()];
            if (round + i) % 2 == 0 {
                cluster.migrate_slot_paused(slot, to, Duration::from_millis(150));
            } else {
                cluster.migrate_slot(slot, to);
            }
            migrations += 1;
        }
    }
    let moving_took = start.elapsed();
    for t in load {
        t.join().unwrap();
    }
    eprintln!("{migrations} slot migrations in {moving_took:?} while the requests flowed");
    assert!(migrations >= 2 * slots.len(), "each slot moved at least twice under load: {migrations} moves");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), keys.len() * per_key, "every request sent within 60 s");
    let bad: Vec<String> = seen
        .iter()
        .filter(|r| r.1 != 200 && r.1 != 429)
        .map(|r| format!("{} -> {} after {:?}", keys[r.0], r.1, r.2))
        .collect();
    assert!(bad.is_empty(), "only 200 and 429 during the reshard:\n{}", bad.join("\n"));
    let slowest = seen.iter().map(|r| r.2).max().unwrap();
    assert!(slowest < Duration::from_secs(2), "no request hangs: slowest {slowest:?}");
    let results: Vec<(usize, u16)> = seen.iter().map(|r| (r.0, r.1)).collect();
    let admitted = burst as usize + 1;
    let wrong: Vec<String> = tally(&results, &keys)
        .iter()
        .enumerate()
        .filter(|(_, t)| t.get(&200) != Some(&admitted))
        .map(|(k, t)| format!("{}{}: {t:?}", keys[k], if k < moving.len() { " (moved)" } else { "" }))
        .collect();
    assert!(wrong.is_empty(), "each key admits exactly {admitted}: no charge lost or doubled:\n{}", wrong.join("\n"));
    for k in &keys {
        let owner = cluster.node_of_key(k);
        assert_eq!(cluster.exists(owner, &state_key(k, "z")), ":1", "{k}'s state is on its slot's owner {owner}");
    }
}

/// Two limits on one request, keyed by different headers whose keys live on different
/// primaries: a request the second limit rejects leaves the first limit's state untouched,
/// and one the first rejects leaves the second's.
#[test]
fn a_request_rejected_by_one_limit_does_not_charge_the_other() {
    let _serial = serial();
    let cluster = RedisCluster::start();
    let nginx = Nginx::builder()
        .worker_processes(2)
        .http(&format!(
            r#"
            shield_redis {} timeout=200ms;
            shield_limit_zone $http_x_a zone=za:1m rate=1r/m;
            shield_limit_zone $http_x_b zone=zb:1m rate=1r/m;
            shield_limit_fail closed;
            server {{
                listen 127.0.0.1:%%PORT%%;
                root %%HTML%%;
                location / {{
                    shield_limit zone=za burst=5 nodelay;
                    shield_limit zone=zb burst=0 nodelay;
                }}
            }}"#,
            cluster.url()
        ))
        .start();
    let port = nginx.port;
    let get = |a: &str, b: &str| request(port, &[("X-A", a), ("X-B", b)]).0;
    // Warm up with fresh keys in both zones.
    let start = Instant::now();
    let mut streak = 0;
    for i in 0.. {
        streak = if get(&format!("warm-a{i}"), &format!("warm-b{i}")) == 200 { streak + 1 } else { 0 };
        if streak == 8 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never decided:\n{}", nginx.error_log());
        if streak == 0 {
            thread::sleep(Duration::from_millis(50));
        }
    }

    let a_key = "client-a";
    let a_owner = cluster.node_of_key(a_key);
    let b_keys: Vec<String> =
        (0..).map(|i| format!("client-b{i}")).filter(|k| cluster.node_of_key(k) != a_owner).take(8).collect();
    let a_slot = cluster.keyslot(a_key);
    assert!(b_keys.iter().all(|k| cluster.keyslot(k) != a_slot));
    let a_state = state_key(a_key, "za");

    assert_eq!(get(a_key, &b_keys[0]), 200, "one unit of each");
    let charged = cluster.get(a_owner, &a_state);
    assert!(charged.parse::<u64>().is_ok(), "{a_state} holds a GCRA state: {charged}");
    let b0 = b_keys[0].clone();
    // Concurrent, over both workers: the rejections meet in batches and race each other.
    let rejected =
        parallel(40, 8, Duration::from_secs(30), move |_| request(port, &[("X-A", "client-a"), ("X-B", &b0)]).0);
    assert_eq!(rejected, vec![429; 40], "zb (burst 0) is exhausted for {}", b_keys[0]);
    // Each rejection was charged on za's slot and refunded right after its answer went out
    // (refunds go with the next batch): the state comes back to one charge, exactly.
    let deadline = Instant::now() + Duration::from_secs(2);
    while cluster.get(a_owner, &a_state) != charged && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let after = cluster.get(a_owner, &a_state);
    let leaked = after.parse::<i64>().unwrap_or(0) - charged.parse::<i64>().unwrap();
    assert_eq!(
        after,
        charged,
        "the 40 rejections charged nothing to za (TAT moved {leaked} us = {} units)",
        leaked / 60_000_000
    );

    // za: burst 5 admits 6, one used: 5 more with fresh zb keys, then za rejects.
    let fresh: Vec<u16> = b_keys[1..7].iter().map(|b| get(a_key, b)).collect();
    assert_eq!(fresh, [200, 200, 200, 200, 200, 429], "za's full remaining burst, then its limit");
    // The request za rejected did not charge zb: b_keys[6] still has its one unit.
    let b6_owner = cluster.node_of_key(&b_keys[6]);
    let b6_state = cluster.get(b6_owner, &state_key(&b_keys[6], "zb"));
    if b6_state != "(nil)" {
        // A state may be written, but with no charge outstanding: its TAT is not in the future.
        let now = cluster.command(b6_owner, &["TIME"]);
        let (secs, micros) = now.split_once('\n').unwrap();
        let now_us = secs.parse::<u64>().unwrap() * 1_000_000 + micros.parse::<u64>().unwrap();
        let tat: u64 = b6_state.parse().unwrap_or_else(|_| panic!("zb state {b6_state:?}"));
        assert!(tat <= now_us, "the request za rejected left a charge on zb: TAT {tat} > now {now_us}");
    }
    assert_eq!(get("client-a2", &b_keys[6]), 200, "zb's unit for {} is still there", b_keys[6]);
    assert_eq!(get("client-a3", &b_keys[6]), 429);
}

/// A primary is killed: requests for keys in its slots get the fail policy (503, `closed`)
/// at once, keys on the other primaries keep being decided, and once its replica is promoted
/// (node timeout 1 s) its keys are decided again, on the new primary. The victim is not a
/// seed of the URL: the module must route by the topology it learnt, not by its seeds.
#[test]
fn a_primary_down_follows_the_fail_policy_and_recovers() {
    primary_down(2);
}

/// The same with the first seed of the URL as the victim: the module must not depend on
/// that seed once it knows the cluster.
#[test]
fn a_dead_seed_primary_follows_the_fail_policy_and_recovers() {
    primary_down(0);
}

/// Kills the node `ports()[index]` (one of the three that start as primaries) under load.
fn primary_down(index: usize) {
    let _serial = serial();
    let mut cluster = RedisCluster::start();
    let nginx = limited_nginx(&cluster, "1r/m", 1000);
    let victim = cluster.ports()[index];
    assert!(cluster.primaries().iter().any(|p| p.port == victim), "node {index} starts as a primary");
    let replica = cluster.replica_of(victim);
    let keys = spread_keys(&cluster, "down-", 18);
    let (on_victim, elsewhere): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|k| cluster.node_of_key(k) == victim);
    assert_eq!((on_victim.len(), elsewhere.len()), (6, 12));
    for k in on_victim.iter().chain(&elsewhere) {
        assert_eq!(status(nginx.port, k), 200, "{k} before the kill");
    }
    // The replica has the state before the primary dies.
    cluster.command(victim, &["WAIT", "1", "2000"]);

    // (answered at, on the victim?, key, status, took)
    type Seen = Arc<Mutex<Vec<(Instant, bool, String, u16, Duration)>>>;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    cluster.kill(victim);
    let killed = Instant::now();
    let load = {
        let (seen, stop, port) = (seen.clone(), stop.clone(), nginx.port);
        let (on_victim, elsewhere) = (on_victim.clone(), elsewhere.clone());
        thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(40) {
                for (victim, k) in on_victim.iter().map(|k| (true, k)).chain(elsewhere.iter().map(|k| (false, k))) {
                    let (s, took) = request(port, &[("X-Key", k)]);
                    seen.lock().unwrap().push((Instant::now(), victim, k.clone(), s, took));
                }
                thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let failover = cluster.wait_promoted(replica, Duration::from_secs(15));
    eprintln!("replica promoted {:?} after the kill", failover.promoted_at - killed);
    // Recovered: the last 3 rounds of victim keys after the promotion all decided by Redis.
    let decided = |s: u16| s == 200 || s == 429;
    let recovered = (|| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let seen = seen.lock().unwrap();
            let after: Vec<u16> = seen.iter().filter(|r| r.1 && r.0 > failover.promoted_at).map(|r| r.3).collect();
            if after.len() >= 3 * on_victim.len()
                && after[after.len() - 3 * on_victim.len()..].iter().all(|&s| decided(s))
            {
                return Some(Instant::now());
            }
            drop(seen);
            thread::sleep(Duration::from_millis(50));
        }
        None
    })();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let seen = seen.lock().unwrap();
    let show = |rows: &mut dyn Iterator<Item = &(Instant, bool, String, u16, Duration)>| {
        rows.map(|r| format!("{:>6}ms {} {} {:?}", (r.0 - killed).as_millis(), r.2, r.3, r.4))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let slowest = seen.iter().map(|r| r.4).max().unwrap();
    assert!(slowest < Duration::from_secs(2), "no request hangs: slowest {slowest:?}");
    let others_bad: Vec<_> = seen.iter().filter(|r| !r.1 && !decided(r.3)).collect();
    assert!(
        others_bad.is_empty(),
        "keys on the live primaries keep being decided:\n{}",
        show(&mut others_bad.into_iter())
    );
    let outage: Vec<_> = seen.iter().filter(|r| r.1 && r.0 < failover.still_replica_at).collect();
    assert!(!outage.is_empty(), "requests were made while the slots had no primary");
    let not_closed: Vec<_> = outage.iter().copied().filter(|r| r.3 != 503).collect();
    assert!(
        not_closed.is_empty(),
        "keys of the dead primary get the fail policy (closed: 503) until the promotion:\n{}",
        show(&mut not_closed.into_iter())
    );
    assert!(seen.iter().all(|r| !r.1 || r.3 == 503 || decided(r.3)), "only 503 or decisions for the victim's keys");
    let recovered = recovered.unwrap_or_else(|| {
        panic!(
            "keys of the dead primary not Redis-decided within 10 s of the promotion:\n{}",
            show(&mut seen.iter().filter(|r| r.1 && r.0 > failover.promoted_at))
        )
    });
    eprintln!("decided again {:?} after the promotion", recovered - failover.promoted_at);
    for k in &on_victim {
        let rk = state_key(k, "z");
        assert_eq!(cluster.exists(replica, &rk), ":1", "{rk} on the promoted replica");
        assert_eq!(cluster.node_of_key(k), replica);
    }
}

/// Bad cluster URLs fail `nginx -t` in nginx's words, with the reason.
#[test]
fn bad_cluster_urls_fail_the_configuration() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    for (url, expected) in [
        ("redis+cluster://127.0.0.1:7000/1", "database 0"),
        ("redis+cluster://127.0.0.1:7000,", "no cluster node host"),
        ("redis+cluster://127.0.0.1:0", "bad port"),
        ("rediss+cluster://127.0.0.1:7000", "TLS to a Redis Cluster is not supported yet"),
    ] {
        support::assert_config_error(&format!("shield_redis {url}; {srv}"), expected);
    }
}
