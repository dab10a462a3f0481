//! `shield_redis redis+sentinel://...`: a real primary, a real replica and three real
//! `redis-sentinel`s (Debian's) on loopback. The primary is killed (or failed over by hand)
//! while requests flow; nothing may hang, the fail policy (`closed`: 503) answers while no
//! primary is known, and requests are Redis-decided again on the promoted replica soon after
//! the sentinels promote it.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{free_port, try_http_request, Nginx, TempDir};

struct Process {
    child: Child,
}

impl Process {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(bin: &str, args: &[String]) -> Process {
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    Process { child }
}

/// One command through the `redis` crate; `None` if the server does not answer.
fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con).ok()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Instant {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
    Instant::now()
}

/// A primary, its replica and three sentinels watching them (quorum 2, down after 500 ms).
struct Setup {
    primary: Process,
    primary_port: u16,
    replica_port: u16,
    sentinel_ports: Vec<u16>,
    _replica: Process,
    _sentinels: Vec<Process>,
    _dir: TempDir,
}

impl Setup {
    fn start() -> Setup {
        let dir = TempDir::new();
        let (primary_port, replica_port) = (free_port(), free_port());
        let server = |port: u16, extra: &[&str]| {
            let data = dir.path().join(format!("data-{port}"));
            std::fs::create_dir_all(&data).unwrap();
            let mut args: Vec<String> =
                ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            args.extend(["--dir".to_string(), data.display().to_string()]);
            args.extend(extra.iter().map(|s| s.to_string()));
            spawn("redis-server", &args)
        };
        let primary = server(primary_port, &[]);
        wait_for("the primary", Duration::from_secs(10), || query::<String>(primary_port, &["PING"]).is_some());
        let replica = server(replica_port, &["--replicaof", "127.0.0.1", &primary_port.to_string()]);
        wait_for("the replica to sync", Duration::from_secs(10), || {
            query::<String>(replica_port, &["INFO", "replication"]).is_some_and(|i| i.contains("master_link_status:up"))
        });
        let sentinel_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let sentinels = sentinel_ports
            .iter()
            .map(|&port| {
                let conf = dir.path().join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds mymaster 500\nsentinel failover-timeout mymaster 3000\n\
                         sentinel parallel-syncs mymaster 1\n",
                        dir.path().display()
                    ),
                )
                .unwrap();
                spawn("redis-sentinel", &[conf.display().to_string()])
            })
            .collect();
        let setup = Setup {
            primary,
            primary_port,
            replica_port,
            sentinel_ports,
            _replica: replica,
            _sentinels: sentinels,
            _dir: dir,
        };
        for &s in &setup.sentinel_ports {
            wait_for("the sentinels to see the replica and each other", Duration::from_secs(15), || {
                let replicas = query::<Vec<redis::Value>>(s, &["SENTINEL", "REPLICAS", "mymaster"]);
                let others = query::<Vec<redis::Value>>(s, &["SENTINEL", "SENTINELS", "mymaster"]);
                replicas.is_some_and(|r| !r.is_empty()) && others.is_some_and(|o| o.len() == 2)
            });
        }
        setup
    }

    /// The port the first sentinel names as the primary's.
    fn primary_by_sentinel(&self) -> Option<u16> {
        let addr: Vec<String> = query(self.sentinel_ports[0], &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])?;
        addr.get(1)?.parse().ok()
    }

    fn nginx(&self) -> Nginx {
        let sentinels: Vec<String> = self.sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let nginx = Nginx::start(&format!(
            r#"
            shield_redis redis+sentinel://{}/mymaster timeout=200ms;
            shield_limit_zone $arg_k zone=z:1m rate=1000000r/s;
            shield_limit_fail closed;
            server {{
                listen 127.0.0.1:%%PORT%%;
                root %%HTML%%;
                location / {{ shield_limit zone=z burst=1000 nodelay; }}
            }}"#,
            sentinels.join(",")
        ));
        wait_for("nginx to reach the primary", Duration::from_secs(5), || status(&nginx, "warmup") == 200);
        nginx
    }
}

fn status(nginx: &Nginx, key: &str) -> u16 {
    try_http_request(nginx.port, "GET", &format!("/index.html?k={key}"), &[], None).map_or(0, |r| r.status)
}

/// Whether the server at `port` holds a key naming `key` (the limiter's state for it).
fn holds(port: u16, key: &str) -> bool {
    query::<Vec<String>>(port, &["KEYS", "*"]).is_some_and(|keys| keys.iter().any(|k| k.contains(key)))
}

/// What the load loop saw: (when answered, status, how long it took) per request.
type Seen = Arc<Mutex<Vec<(Instant, u16, Duration)>>>;

/// Requests in a loop until stopped (at most 30 s).
fn load(nginx: &Nginx, stop: Arc<AtomicBool>) -> (thread::JoinHandle<()>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (port, log) = (nginx.port, seen.clone());
    let handle = thread::spawn(move || {
        let start = Instant::now();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
            i += 1;
            let t = Instant::now();
            let s = try_http_request(port, "GET", &format!("/index.html?k=load{i}"), &[], None).map_or(0, |r| r.status);
            log.lock().unwrap().push((Instant::now(), s, t.elapsed()));
            thread::sleep(Duration::from_millis(5));
        }
    });
    (handle, seen)
}

#[test]
fn killed_primary_is_replaced_by_the_promoted_replica() {
    let mut setup = Setup::start();
    let nginx = setup.nginx();
    assert!(holds(setup.primary_port, "warmup"), "decided on the primary the sentinels named");

    let stop = Arc::new(AtomicBool::new(false));
    let (handle, seen) = load(&nginx, stop.clone());
    thread::sleep(Duration::from_millis(300));
    setup.primary.kill();
    let killed = Instant::now();
    let promoted = wait_for("the sentinels to promote the replica", Duration::from_secs(20), || {
        setup.primary_by_sentinel() == Some(setup.replica_port)
    });
    // Requests go on until one after the promotion was decided by Redis (or 5 s passed).
    wait_for("a Redis-decided request after the promotion", Duration::from_secs(5), || {
        seen.lock().unwrap().iter().any(|&(at, s, _)| at > promoted && s == 200)
    });
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();

    let seen = seen.lock().unwrap();
    let statuses: Vec<u16> = seen.iter().map(|r| r.1).collect();
    assert!(statuses.iter().all(|&s| s == 200 || s == 503), "only decisions and the fail policy: {statuses:?}");
    assert!(seen.iter().any(|&(at, s, _)| at > killed && at < promoted && s == 503), "fail closed while no primary");
    let slowest = seen.iter().map(|r| r.2).max().unwrap();
    assert!(slowest < Duration::from_secs(2), "no request hangs: slowest took {slowest:?}");
    let back = seen.iter().find(|&&(at, s, _)| at > promoted && s == 200).unwrap().0;
    assert!(
        back.duration_since(promoted) < Duration::from_secs(2),
        "Redis-decided {:?} after the promotion",
        back.duration_since(promoted)
    );
    eprintln!("Redis-decided again {:?} after the promotion", back.duration_since(promoted));
    // Each worker rediscovers on its own probe (and a sentinel may name the new primary a
    // moment after the others): every worker decides on the new primary soon after.
    wait_for("both workers on the new primary", Duration::from_secs(3), || {
        (0..6).all(|i| status(&nginx, &format!("after-failover{i}")) == 200)
    });
    assert!(holds(setup.replica_port, "after-failover"), "the state goes to the new primary");
}

#[test]
fn a_manual_failover_moves_writes_to_the_new_primary() {
    let setup = Setup::start();
    let nginx = setup.nginx();
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, seen) = load(&nginx, stop.clone());
    thread::sleep(Duration::from_millis(200));
    // The old primary stays up and becomes a replica: writes there would be refused
    // (-READONLY), and nothing may be written to a replica.
    let ok: Option<String> = query(setup.sentinel_ports[0], &["SENTINEL", "FAILOVER", "mymaster"]);
    assert_eq!(ok.as_deref(), Some("OK"));
    wait_for("the switch", Duration::from_secs(20), || setup.primary_by_sentinel() == Some(setup.replica_port));
    wait_for("the old primary to be a replica", Duration::from_secs(20), || {
        query::<String>(setup.primary_port, &["INFO", "replication"]).is_some_and(|i| i.contains("role:slave"))
    });
    let switched = Instant::now();
    wait_for("writes on the new primary", Duration::from_secs(5), || {
        status(&nginx, "moved") == 200 && holds(setup.replica_port, "moved")
    });
    assert!(switched.elapsed() < Duration::from_secs(3), "took {:?}", switched.elapsed());
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.iter().all(|r| r.1 == 200 || r.1 == 503), "{:?}", seen.iter().map(|r| r.1).collect::<Vec<_>>());
    assert!(seen.iter().map(|r| r.2).max().unwrap() < Duration::from_secs(2), "no request hangs");
    let log = nginx.error_log();
    eprintln!("{}", log.lines().filter(|l| l.contains("shield: redis")).collect::<Vec<_>>().join("\n"));
}

/// A server that answers `-READONLY` (a replica, or a primary demoted under us) is dropped at
/// once and the request follows the fail policy: nothing is ever written to a replica.
#[test]
fn a_replica_answering_readonly_is_dropped() {
    let setup = Setup::start();
    let nginx = Nginx::start(&format!(
        r#"
        shield_redis redis://127.0.0.1:{} timeout=200ms;
        shield_limit_zone $arg_k zone=z:1m rate=1000000r/s;
        shield_limit_fail closed;
        server {{
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / {{ shield_limit zone=z burst=1000 nodelay; }}
        }}"#,
        setup.replica_port
    ));
    for i in 0..5 {
        assert_eq!(status(&nginx, &format!("r{i}")), 503);
    }
    let log = nginx.error_log();
    assert!(log.contains("is no longer the primary") && log.contains("READONLY"), "{log}");
}

#[test]
fn bad_sentinel_urls_fail_nginx_t() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    support::assert_config_error(&format!("shield_redis redis+sentinel://127.0.0.1:26379; {srv}"), "primary name");
    support::assert_config_error(&format!("shield_redis redis+sentinel://127.0.0.1:0/m; {srv}"), "bad port");
}
