//! The Redis client under faults: a hostile or broken server (a fake one, started here, for
//! what a real Redis never sends) and a real redis-server killed, stopped or slowed down.
//! Every test checks the worker stays small and responsive, requests follow the fail policy,
//! and the client recovers on its own.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::{http_request, Nginx, Redis};

// ---------------------------------------------------------------------------------------
// a fake Redis

/// What the fake answers to one command.
#[derive(Clone)]
enum Answer {
    /// These bytes at once.
    Reply(Vec<u8>),
    /// These bytes, one every `interval`.
    Drip(Vec<u8>, Duration),
    /// `header`, then `bytes` filler bytes as fast as the client takes them.
    Flood { header: Vec<u8>, bytes: usize },
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Connections the client dropped while the fake was still writing to them.
    dropped: AtomicUsize,
    /// Filler bytes written before a drop.
    flooded: AtomicUsize,
    commands: Mutex<Vec<String>>,
}

struct FakeRedis {
    port: u16,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
}

impl FakeRedis {
    /// Answers PING with PONG and every other command with `answer(command name)`.
    fn start(answer: impl Fn(&str) -> Answer + Send + Sync + 'static) -> FakeRedis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (seen, stop) = (Arc::new(Seen::default()), Arc::new(AtomicBool::new(false)));
        let answer = Arc::new(answer);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        seen2.connections.fetch_add(1, Ordering::Relaxed);
                        let (answer, seen, stop) = (answer.clone(), seen2.clone(), stop2.clone());
                        thread::spawn(move || serve(s, &*answer, &seen, &stop));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeRedis { port, seen, stop }
    }

    fn dropped(&self) -> usize {
        self.seen.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one RESP command (an array of bulk strings) and returns its name, upper-case.
fn read_command(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((name, used)) = parse_command(buf) {
            buf.drain(..used);
            return Some(name);
        }
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                continue
            }
            Err(_) => return None,
        }
    }
}

fn parse_command(buf: &[u8]) -> Option<(String, usize)> {
    let line = |from: usize| {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| (std::str::from_utf8(&buf[from..from + p]).ok(), from + p + 2))
    };
    let (head, mut pos) = line(0)?;
    let n: usize = head?.strip_prefix('*')?.parse().ok()?;
    let mut name = String::new();
    for i in 0..n {
        let (len, start) = line(pos)?;
        let len: usize = len?.strip_prefix('$')?.parse().ok()?;
        if buf.len() < start + len + 2 {
            return None;
        }
        if i == 0 {
            name = String::from_utf8_lossy(&buf[start..start + len]).to_uppercase();
        }
        pos = start + len + 2;
    }
    Some((name, pos))
}

fn serve(mut s: TcpStream, answer: &dyn Fn(&str) -> Answer, seen: &Seen, stop: &AtomicBool) {
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
        let Some(name) = read_command(&mut s, &mut buf) else { return };
        seen.commands.lock().unwrap().push(name.clone());
        let reply = if name == "PING" { Answer::Reply(b"+PONG\r\n".to_vec()) } else { answer(&name) };
        let written = match reply {
            Answer::Reply(bytes) => s.write_all(&bytes).is_ok(),
            Answer::Drip(bytes, interval) => bytes.iter().all(|b| {
                thread::sleep(interval);
                !stop.load(Ordering::Relaxed) && s.write_all(&[*b]).is_ok()
            }),
            Answer::Flood { header, bytes } => {
                let filler = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                let mut ok = s.write_all(&header).is_ok();
                while ok && sent < bytes && !stop.load(Ordering::Relaxed) {
                    ok = s.write_all(&filler).is_ok();
                    sent += filler.len();
                }
                seen.flooded.fetch_add(sent, Ordering::Relaxed);
                ok
            }
        };
        if !written {
            seen.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// helpers

fn nginx_for(redis_port: u16, timeout: &str, workers: u32) -> Nginx {
    Nginx::builder()
        .worker_processes(workers)
        .var("REDIS", redis_port)
        .var("TIMEOUT", timeout)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=%%TIMEOUT%%;
        shield_limit_zone $http_x_client zone=api:1m rate=100r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location /open/ { alias %%HTML%%/; shield_limit zone=api burst=99 nodelay; shield_limit_fail open; }
            location /closed/ { alias %%HTML%%/; shield_limit zone=api burst=99 nodelay; shield_limit_fail closed; }
            location = /metrics { shield_status; }
        }"#,
        )
        .start()
}

fn get(nginx: &Nginx, path: &str, client: &str) -> support::Response {
    http_request(nginx.port, "GET", path, &[("X-Client", client)], None)
}

/// A worker's resident memory (kB) and CPU time (clock ticks), from /proc.
fn worker_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12).
    let cpu = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, cpu)
}

fn only_worker(nginx: &Nginx) -> u32 {
    let workers = nginx.worker_pids();
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    workers[0]
}

/// A metric's value (the first series of that name) from the status page.
fn metric(nginx: &Nginx, name: &str) -> f64 {
    let text = http_request(nginx.port, "GET", "/metrics", &[], None).body_str().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Polls `f` every 100 ms, at most `tries` times; true as soon as it holds.
fn eventually(tries: usize, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

// ---------------------------------------------------------------------------------------
// a hostile server

/// A reply announcing a 512 MB bulk string (then sending 200 MB of it) is refused at its
/// header: the batch's reply is a few integers. The connection is dropped, the request follows
/// the fail policy, and the worker does not grow.
#[test]
fn a_huge_bulk_announcement_is_refused_and_the_worker_stays_small() {
    let fake = FakeRedis::start(|_| Answer::Flood { header: b"$536870912\r\n".to_vec(), bytes: 200 << 20 });
    // A long timeout: the refusal must come from the bound, not from the deadline.
    let nginx = nginx_for(fake.port, "2s", 1);
    let worker = only_worker(&nginx);
    let (rss_before, _) = worker_usage(worker);
    assert_eq!(get(&nginx, "/open/index.html", "a").status, 200, "fail open");
    assert!(eventually(50, || fake.dropped() >= 1), "the client dropped the connection mid-flood");
    let (rss_after, _) = worker_usage(worker);
    assert!(rss_after < rss_before + 20 * 1024, "worker RSS {rss_before} kB -> {rss_after} kB");
    assert!(fake.seen.flooded.load(Ordering::Relaxed) < 100 << 20, "the flood was cut short");
    assert!(nginx.error_log().contains("bulk string longer than the command can return"), "{}", nginx.error_log());
}

/// An array of 1,048,576 integers cost 3 s of worker CPU per reply (quadratic re-parsing);
/// now it is refused at its header, and decoding is linear anyway (unit tests in resp.rs).
#[test]
fn a_million_element_array_costs_the_worker_nothing() {
    let mut reply = b"*1048576\r\n".to_vec();
    for _ in 0..1 << 20 {
        reply.extend_from_slice(b":1\r\n");
    }
    let fake = FakeRedis::start(move |_| Answer::Reply(reply.clone()));
    let nginx = nginx_for(fake.port, "2s", 1);
    let worker = only_worker(&nginx);
    let (_, cpu_before) = worker_usage(worker);
    assert_eq!(get(&nginx, "/closed/index.html", "a").status, 503, "fail closed");
    let (_, cpu_after) = worker_usage(worker);
    // Clock ticks are 1/100 s: well under the 3 s a reply cost.
    assert!(cpu_after - cpu_before < 50, "worker CPU {} ticks for one reply", cpu_after - cpu_before);
    assert!(nginx.error_log().contains("array longer than the command can return"), "{}", nginx.error_log());
}

/// A server that drips its reply one byte per 100 ms does not keep the connection: `timeout`
/// is an absolute deadline per reply, and a reply that stalls past it drops the connection.
#[test]
fn a_dripping_server_is_dropped_at_the_deadline() {
    let fake = FakeRedis::start(|_| {
        Answer::Drip(format!("+{}\r\n", "x".repeat(200)).into_bytes(), Duration::from_millis(100))
    });
    let nginx = nginx_for(fake.port, "300ms", 1);
    let start = Instant::now();
    assert_eq!(get(&nginx, "/closed/index.html", "a").status, 503, "fail closed");
    assert!(start.elapsed() < Duration::from_secs(5), "the request was answered at its deadline");
    // Dropped at the deadline (0.3 s), long before the 20 s the drip lasts.
    assert!(eventually(30, || fake.dropped() >= 1), "the dripping connection was never dropped");
    assert!(nginx.error_log().contains("reply stalled past its deadline"), "{}", nginx.error_log());
}

/// `-ERR` replies are failures too: counted in shield_redis_errors_total (with garbage and
/// protocol errors), requests follow the fail policy, and the worker keeps going.
#[test]
fn error_replies_and_garbage_are_counted_as_redis_errors() {
    let n = Arc::new(AtomicUsize::new(0));
    let fake = FakeRedis::start(move |_| match n.fetch_add(1, Ordering::Relaxed) {
        0 => Answer::Reply(b"garbage\r\n".to_vec()),
        _ => Answer::Reply(b"-ERR injected failure\r\n".to_vec()),
    });
    let nginx = nginx_for(fake.port, "500ms", 1);
    assert_eq!(get(&nginx, "/closed/index.html", "a").status, 503, "garbage: fail closed");
    assert!(nginx.error_log().contains("protocol error: unknown reply type"), "{}", nginx.error_log());
    // The client reconnects in the background; error replies then come on a working connection.
    let mut statuses = Vec::new();
    assert!(eventually(30, || {
        statuses.push(get(&nginx, "/open/index.html", "a").status);
        fake.seen.commands.lock().unwrap().iter().filter(|c| *c == "EVALSHA").count() >= 4
    }));
    assert!(statuses.iter().all(|s| *s == 200), "fail open: {statuses:?}");
    let errors = metric(&nginx, "shield_redis_errors_total");
    // One protocol error, at least three -ERR replies.
    assert!(errors >= 4.0, "shield_redis_errors_total {errors}");
}

// ---------------------------------------------------------------------------------------
// a real Redis, killed, stopped or slowed down

/// NOSCRIPT (the script not loaded yet) is an error reply, counted; the renamed latency
/// histogram is in seconds.
#[test]
fn noscript_is_counted_and_latency_is_in_seconds() {
    let redis = Redis::start();
    let nginx = nginx_for(redis.port, "500ms", 1);
    assert_eq!(get(&nginx, "/closed/index.html", "a").status, 200);
    assert_eq!(metric(&nginx, "shield_redis_errors_total"), 1.0, "one NOSCRIPT, answered by EVAL");
    assert_eq!(get(&nginx, "/closed/index.html", "a").status, 200);
    assert_eq!(metric(&nginx, "shield_redis_errors_total"), 1.0, "the script is cached now");
    let text = http_request(nginx.port, "GET", "/metrics", &[], None).body_str().to_string();
    assert!(text.contains("# TYPE shield_redis_latency_seconds histogram"), "{text}");
    assert!(text.contains("shield_redis_latency_seconds_bucket{le=\"0.005\"}"), "{text}");
    assert!(!text.contains("shield_redis_latency_ms"));
    assert_eq!(metric(&nginx, "shield_redis_latency_seconds_count"), 2.0);
}

/// After Redis is killed and restarted, requests are Redis-decided again within a few
/// hundred ms: the client probes in the background at a fixed short interval, while requests
/// fail fast, instead of a backoff that had doubled to seconds.
#[test]
fn recovery_after_a_restart_is_quick() {
    let mut redis = Redis::start();
    let nginx = nginx_for(redis.port, "200ms", 2);
    assert_eq!(get(&nginx, "/closed/index.html", "before").status, 200);
    redis.stop();
    let outage = Instant::now();
    let mut during = Vec::new();
    while outage.elapsed() < Duration::from_secs(4) {
        let start = Instant::now();
        during.push(get(&nginx, "/closed/index.html", "during").status);
        assert!(start.elapsed() < Duration::from_secs(2), "no request waits on a dead Redis");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(during.iter().all(|s| *s == 503), "fail closed during the outage");
    redis.restart();
    // Redis answers PING now. Both workers must be back within 15 tries (~1.5 s).
    let mut answered = Vec::new();
    let recovered = eventually(15, || {
        let status = get(&nginx, "/closed/index.html", "after").status;
        answered.push(status);
        answered.len() >= 4 && answered[answered.len() - 4..].iter().all(|s| *s == 200)
    });
    assert!(recovered, "not Redis-decided again soon after the restart: {answered:?}");
    assert_eq!(redis.command(&["EXISTS", "shield:{after}:api"]), ":1", "the state is in Redis again");
}

/// Batches that time out while Redis is stopped are not applied when it resumes: the fail
/// policy answered their requests already, and charging them too would count them twice.
#[test]
fn batches_that_timed_out_are_not_applied_when_a_stopped_redis_resumes() {
    let redis = Redis::start();
    let nginx = nginx_for(redis.port, "100ms", 1);
    let first = get(&nginx, "/open/index.html", "late");
    assert_eq!((first.status, first.header("X-RateLimit-Remaining")), (200, Some("99")));
    redis.pause();
    for _ in 0..5 {
        let r = get(&nginx, "/open/index.html", "late");
        assert_eq!((r.status, r.header("X-RateLimit-Remaining")), (200, None), "answered by the fail policy");
    }
    redis.resume();
    assert!(eventually(30, || redis.try_command(&["PING"]).is_ok_and(|r| r == "+PONG")));
    // Redis-decided again: only the first request and this one are charged.
    let mut remaining = None;
    assert!(eventually(30, || {
        remaining = get(&nginx, "/open/index.html", "late").header("X-RateLimit-Remaining").map(str::to_string);
        remaining.is_some()
    }));
    assert_eq!(remaining.as_deref(), Some("98"), "the five timed-out requests were charged when Redis resumed");
}

/// One slow reply (a healthy Redis busy for 150 ms, timeout=50ms) fails only the requests
/// whose own deadline passed, under `shield_limit_fail closed`: not the whole pipeline, and no
/// backoff during which every request fails.
#[test]
fn one_slow_reply_fails_only_the_requests_whose_deadline_passed() {
    let redis = Redis::start();
    let nginx = Nginx::builder()
        .worker_processes(1)
        .var("REDIS", redis.port)
        .http(
            r#"
        shield_redis redis://127.0.0.1:%%REDIS%% timeout=50ms;
        shield_limit_zone $http_x_client zone=api:1m rate=100000r/s;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location / { shield_limit zone=api burst=100000 nodelay; shield_limit_fail closed; }
        }"#,
        )
        .start();
    let port = nginx.port;
    assert_eq!(http_request(port, "GET", "/index.html", &[("X-Client", "warm")], None).status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::Relaxed) && statuses.len() < 5000 {
                    statuses
                        .push(http_request(port, "GET", "/index.html", &[("X-Client", &format!("c{i}"))], None).status);
                }
                statuses
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    // Redis runs one script for 150 ms: every reply in that time is late.
    let mut con = redis.connection().unwrap();
    let busy = "local t = redis.call('TIME'); local t0 = t[1] * 1000000 + t[2]
        repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - t0 > 150000
        return 1";
    let _: i64 = redis::cmd("EVAL").arg(busy).arg(0).query(&mut con).unwrap();
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = clients.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let failed = statuses.iter().filter(|s| **s == 503).count();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(failed + passed, statuses.len(), "only 200 and 503");
    // Each client has one request in flight: it can time out about once per 50 ms of the
    // stall (3-4 times), not on every request during a backoff (hundreds).
    assert!((1..=40).contains(&failed), "{failed} of {} requests failed for one 150 ms stall", statuses.len());
    assert!(passed > 100, "traffic flowed before and after: {passed}");
}

/// An outage does not write a line per failed request: the first is logged, then at most one
/// line a second per worker says how many more there were.
#[test]
fn an_outage_logs_a_bounded_number_of_lines() {
    let mut redis = Redis::start();
    let nginx = nginx_for(redis.port, "100ms", 1);
    assert_eq!(get(&nginx, "/open/index.html", "a").status, 200);
    redis.stop();
    let before = nginx.error_log().lines().count();
    let start = Instant::now();
    for i in 0..400 {
        let path = if i % 2 == 0 { "/open/index.html" } else { "/closed/index.html" };
        assert!([200, 503].contains(&get(&nginx, path, "a").status));
    }
    let seconds = start.elapsed().as_secs() + 1;
    let log = nginx.error_log();
    let lines: Vec<&str> = log.lines().skip(before).filter(|l| l.contains("shield:")).collect();
    // Per second at most: one "still unavailable", one per fail policy; plus the first ones.
    let bound = 3 * seconds as usize + 4;
    assert!(
        lines.len() <= bound,
        "{} lines for 400 failed requests in {seconds} s (bound {bound}):\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("shield_limit_fail open"))
            && lines.iter().any(|l| l.contains("shield_limit_fail closed"))
    );
    redis.restart();
    assert!(eventually(30, || get(&nginx, "/closed/index.html", "b").status == 200));
    assert!(eventually(10, || nginx.error_log().contains("answers again after")), "recovery is logged");
}

/// `shield_redis` parameters are checked at `nginx -t`, in nginx's words, with file:line.
#[test]
fn shield_redis_parameters_are_bounded_at_nginx_t() {
    let srv = "server { listen 127.0.0.1:%%PORT%%; }";
    for (directive, expected) in [
        ("shield_redis redis://127.0.0.1 timeout=0;", "invalid timeout \"0\", it must be between 1ms and 60s"),
        ("shield_redis redis://127.0.0.1 timeout=61s;", "invalid timeout \"61s\", it must be between 1ms and 60s"),
        ("shield_redis redis://127.0.0.1 timeout=5x;", "invalid time \"5x\""),
        ("shield_redis redis://127.0.0.1 pool=4;", "invalid parameter \"pool=4\""),
        ("shield_redis redis://127.0.0.1:0;", "bad port"),
        ("shield_redis redis://127.0.0.1; shield_redis redis://127.0.0.1;", "\"shield_redis\" directive is duplicate"),
    ] {
        support::assert_config_error(&format!("{directive} {srv}"), expected);
    }
    let (ok, out) = support::nginx_test_config(&format!("shield_redis unix:///tmp/r.sock timeout=60s; {srv}"));
    assert!(ok, "{out}");
}

// ---------------------------------------------------------------------------------------
// a hostile cluster node

/// nginx with one Redis-backed limit on a "cluster" whose only seed is the fake.
fn nginx_on_cluster(port: u16) -> Nginx {
    Nginx::builder()
        .var("REDIS", port)
        .http(
            r#"
        shield_redis redis+cluster://127.0.0.1:%%REDIS%% timeout=300ms;
        shield_limit_zone $http_x_client zone=api:1m rate=100r/h;
        server {
            listen 127.0.0.1:%%PORT%%;
            root %%HTML%%;
            location /closed/ { alias %%HTML%%/; shield_limit zone=api burst=99 nodelay; shield_limit_fail closed; }
        }"#,
        )
        .start()
}

/// `CLUSTER SLOTS`: every slot on the node at `port`, named by `ip`.
fn slot_map(ip: &str, port: u16) -> Vec<u8> {
    format!("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n${}\r\n{ip}\r\n:{port}\r\n", ip.len()).into_bytes()
}

/// A node whose map names itself and that answers every command with `-MOVED` to itself: a
/// redirection loop a real cluster never makes. Each request follows a bounded number of
/// redirections, then the fail policy, at once; nothing hangs and the worker keeps answering.
#[test]
fn a_node_that_redirects_forever_gets_the_fail_policy() {
    let me = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let port = me.clone();
    let fake = FakeRedis::start(move |name| {
        let p = port.load(Ordering::Relaxed);
        match name {
            "CLUSTER" => Answer::Reply(slot_map("127.0.0.1", p)),
            _ => Answer::Reply(format!("-MOVED 1234 127.0.0.1:{p}\r\n").into_bytes()),
        }
    });
    me.store(fake.port, Ordering::Relaxed);
    let nginx = nginx_on_cluster(fake.port);
    nginx.allow_log("MOVED");
    assert!(
        eventually(30, || fake.seen.commands.lock().unwrap().iter().any(|c| c == "CLUSTER")),
        "the map was asked for"
    );
    thread::sleep(Duration::from_millis(100));
    for i in 0..5 {
        let start = Instant::now();
        let r = get(&nginx, "/closed/index.html", &format!("c{i}"));
        assert_eq!(r.status, 503, "the fail policy");
        assert!(start.elapsed() < Duration::from_millis(1500), "answered at once: {:?}", start.elapsed());
    }
    let scripts = fake.seen.commands.lock().unwrap().iter().filter(|c| c.starts_with("EVAL")).count();
    assert!((5..=5 * 6 + 6).contains(&scripts), "at most 1 + 5 redirections per request: {scripts} scripts");
}

/// A slot map that names a node by host name (a DNS lookup would block the worker) is refused
/// with a clear line; requests follow the fail policy.
#[test]
fn a_slot_map_naming_a_host_is_refused() {
    let fake = FakeRedis::start(|name| match name {
        "CLUSTER" => Answer::Reply(slot_map("redis.internal", 7000)),
        _ => Answer::Reply(b"-ERR unexpected\r\n".to_vec()),
    });
    let nginx = nginx_on_cluster(fake.port);
    nginx.allow_log("not an IP address");
    assert!(eventually(30, || nginx.error_log().contains("named a node \"redis.internal\", not an IP address")));
    assert_eq!(get(&nginx, "/closed/index.html", "d").status, 503);
}
