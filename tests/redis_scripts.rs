//! The rate-limit Lua scripts against a real `redis-server` (no nginx): EVALSHA fallback,
//! exact admission, two-phase accounting, TTLs on every key, the sliding window's boundary,
//! the penalty box, and the Lua math agreeing with the Rust math step for step.
//!
//! The pure core is compiled in by path, because the crate's library links nginx symbols.

#[allow(dead_code, unused_imports)]
#[path = "../src/limit/mod.rs"]
mod limit;
#[allow(dead_code)]
#[path = "../src/parse.rs"]
mod parse;
#[allow(dead_code)]
#[path = "../src/redis/mod.rs"]
mod redis;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use limit::keys::{ban_count_key, ban_key, config_hash, limit_key};
use limit::penalty::{PenaltyBox, Recorded};
use limit::store::{acquire, MemoryStore};
use limit::{strictest, Algorithm, Decision, KeyedLimit, Limit, Outcome};
use parse::rate;
use redis::resp::{decode, encode_command, Decoded, Reply};
use redis::scripts::{self, Invoke, Now, BAN, LIMIT};

/// A `redis-server` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (apt-get install redis-server)");
            let mut server = Server { child, port };
            if server.wait_ready(Duration::from_secs(5)) {
                return server;
            }
            // Lost the port race or failed to start: `server` is dropped (killed); try another.
        }
        panic!("redis-server did not become ready");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(mut c) = Conn::open(self.port) {
                if c.cmd(&[b"PING"]) == Reply::Simple(b"PONG".to_vec()) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn conn(&self) -> Conn {
        Conn::open(self.port).expect("connect to redis")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Conn { stream, buf: Vec::new() })
    }

    /// Sends encoded command bytes and reads one reply.
    fn send(&mut self, command: &[u8]) -> Reply {
        self.stream.write_all(command).expect("write");
        let mut chunk = [0u8; 4096];
        loop {
            if let Decoded::Complete(reply, used) = decode(&self.buf).expect("valid RESP") {
                self.buf.drain(..used);
                return reply;
            }
            let n = match self.0.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => other.unwrap(),
            };
            assert!(n > 0, "redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = Vec::new();
        encode_command(&mut out, args);
        self.send(&out)
    }

    fn int(&mut self, args: &[&[u8]]) -> i64 {
        match self.cmd(args) {
            Reply::Integer(n) => n,
            other => panic!("{other:?}"),
        }
    }

    /// One LIMIT call, EVALSHA first and EVAL on NOSCRIPT, as the glue does it.
    fn limits(&mut self, now: Now, limits: &[KeyedLimit<'_>], bans: &[&[u8]]) -> Vec<Decision> {
        let expected = limits.len() + bans.len();
        let mut out = Vec::new();
        scripts::encode_limit_call(&mut out, Invoke::Sha, now, limits, bans);
        match scripts::decode_limit_reply(&self.send(&out), expected) {
            Err(e) if e.is_noscript() => {
                out.clear();
                scripts::encode_limit_call(&mut out, Invoke::Source, now, limits, bans);
                scripts::decode_limit_reply(&self.send(&out), expected).expect("EVAL")
            }
            other => other.expect("EVALSHA"),
        }
    }

    fn ban(&mut self, zone: &str, key: &[u8], pbox: &PenaltyBox) -> Recorded {
        let mut out = Vec::new();
        scripts::encode_ban_call(&mut out, Invoke::Source, &ban_count_key(zone, key), &ban_key(zone, key), pbox);
        scripts::decode_ban_reply(&self.send(&out)).expect("ban reply")
    }
}

/// A limit with its zone's key for client `key`.
struct Applied {
    key: Vec<u8>,
    limit: Limit,
}

impl Applied {
    fn new(zone: &str, client: &[u8], limit: Limit) -> Applied {
        Applied { key: limit_key(zone, client, config_hash(zone, &limit)), limit }
    }

    fn keyed(&self) -> KeyedLimit<'_> {
        KeyedLimit { key: &self.key, limit: self.limit }
    }
}

const T0: u64 = 1_700_000_000_000_000;

fn count(decisions: &[Vec<Decision>], outcome: Outcome) -> usize {
    decisions.iter().filter(|d| strictest(d).map(|i| d[i].outcome) == Some(outcome)).count()
}

#[test]
fn evalsha_falls_back_to_eval_then_script_is_cached() {
    let server = Server::start();
    let mut c = server.conn();
    for script in [&LIMIT, &BAN] {
        let mut out = Vec::new();
        scripts::encode_script_load(&mut out, script);
        assert_eq!(c.send(&out), Reply::Bulk(Some(script.sha1().to_vec())), "our SHA-1 is Redis's");
    }
    assert_eq!(c.cmd(&[b"SCRIPT", b"FLUSH"]), Reply::Simple(b"OK".to_vec()));
    let a = Applied::new("fallback", b"k", Limit::new(Algorithm::Gcra, rate("1r/m").unwrap(), 0));
    let mut out = Vec::new();
    scripts::encode_limit_call(&mut out, Invoke::Sha, Now::Server, &[a.keyed()], &[]);
    let err = scripts::decode_limit_reply(&c.send(&out), 1).unwrap_err();
    assert!(err.is_noscript(), "{err}");
    assert_eq!(c.int(&[b"EXISTS", &a.key]), 0, "the failed EVALSHA consumed nothing");
    assert_eq!(c.limits(Now::Server, &[a.keyed()], &[])[0].outcome, Outcome::Passed, "EVAL ran the script");
    let exists = c.cmd(&[b"SCRIPT", b"EXISTS", LIMIT.sha1()]);
    assert_eq!(exists, Reply::Array(Some(vec![Reply::Integer(1)])), "EVAL cached the script");
    let d = scripts::decode_limit_reply(&c.send(&out), 1).expect("EVALSHA works after EVAL");
    assert_eq!(d[0].outcome, Outcome::Rejected, "and sees the state EVAL wrote");
}

#[test]
fn exact_admission_with_server_clock() {
    let server = Server::start();
    let mut c = server.conn();
    // 100r/h: the interval (36 s) dwarfs the test's run time, so the server clock can't refill.
    let nodelay = Applied::new("exact-gcra", b"k", Limit::new(Algorithm::Gcra, rate("100r/h").unwrap(), 99).nodelay());
    let got: Vec<_> = (0..300).map(|_| c.limits(Now::Server, &[nodelay.keyed()], &[])).collect();
    assert_eq!(count(&got, Outcome::Passed), 100, "exactly 100 admitted at once");
    assert_eq!(count(&got, Outcome::Rejected), 200);
    assert!(got[..100].iter().enumerate().all(|(i, d)| d[0].remaining == 99 - i as u64));

    let window = Applied::new("exact-window", b"k", Limit::new(Algorithm::SlidingWindow, rate("100r/h").unwrap(), 0));
    let got: Vec<_> = (0..300).map(|_| c.limits(Now::Server, &[window.keyed()], &[])).collect();
    assert_eq!(count(&got, Outcome::Passed), 100);

    // Without nodelay the burst is admitted but delayed to leave at the rate.
    let delayed = Applied::new("exact-delay", b"k", Limit::new(Algorithm::Gcra, rate("100r/h").unwrap(), 99));
    let got: Vec<_> = (0..300).map(|_| c.limits(Now::At(T0), &[delayed.keyed()], &[])).collect();
    assert_eq!(count(&got, Outcome::Passed), 1);
    assert_eq!(count(&got, Outcome::Delayed), 99);
    assert_eq!(got[99][0].delay, Duration::from_secs(99 * 36), "the 100th waits 99 intervals");
    assert_eq!(count(&got, Outcome::Rejected), 200);
}

#[test]
fn request_rejected_by_b_consumes_nothing_of_a() {
    let server = Server::start();
    let mut c = server.conn();
    let a = Applied::new("two-a", b"k", Limit::new(Algorithm::Gcra, rate("100r/s").unwrap(), 50).nodelay());
    let b = Applied::new("two-b", b"k", Limit::new(Algorithm::SlidingWindow, rate("1r/m").unwrap(), 0));
    let both = [a.keyed(), b.keyed()];
    let first = c.limits(Now::At(T0), &both, &[]);
    assert_eq!((first[0].outcome, first[1].outcome), (Outcome::Passed, Outcome::Passed));
    let state_a = c.cmd(&[b"GET", &a.key]);
    for _ in 0..20 {
        let d = c.limits(Now::At(T0), &both, &[]);
        assert_eq!(d[1].outcome, Outcome::Rejected);
    }
    assert_eq!(c.cmd(&[b"GET", &a.key]), state_a, "A's state untouched by B's rejections");
    assert_eq!(c.limits(Now::At(T0), &[a.keyed()], &[])[0].remaining, 49, "only one of A's 51 was used before");
}

#[test]
fn every_written_key_has_a_ttl() {
    let server = Server::start();
    let mut c = server.conn();
    let g = Applied::new("ttl-g", b"k", Limit::new(Algorithm::Gcra, rate("10r/s").unwrap(), 5));
    let w = Applied::new("ttl-w", b"k", Limit::new(Algorithm::SlidingWindow, rate("10r/m").unwrap(), 0));
    let pbox = PenaltyBox { statuses: vec![401], threshold: 2, window: Duration::from_secs(60), ban: Duration::from_secs(60) };
    for _ in 0..3 {
        c.limits(Now::Server, &[g.keyed(), w.keyed()], &[]);
    }
    c.ban("ttl-ban", b"counted", &pbox);
    c.ban("ttl-ban", b"banned", &pbox);
    c.ban("ttl-ban", b"banned", &pbox);
    let keys = match c.cmd(&[b"KEYS", b"shield:*"]) {
        Reply::Array(Some(keys)) => keys,
        other => panic!("{other:?}"),
    };
    assert_eq!(keys.len(), 4, "g, w, one count, one ban: {keys:?}");
    for key in keys {
        let Reply::Bulk(Some(key)) = key else { panic!("{key:?}") };
        let pttl = c.int(&[b"PTTL", &key]);
        assert!(pttl > 0, "{} has PTTL {pttl}", String::from_utf8_lossy(&key));
    }
}

#[test]
fn sliding_window_has_no_double_burst_at_the_boundary() {
    let server = Server::start();
    let mut c = server.conn();
    let w = Applied::new("edge", b"k", Limit::new(Algorithm::SlidingWindow, rate("10r/m").unwrap(), 0));
    let boundary = (T0 / 60_000_000 + 1) * 60_000_000;
    let at = |c: &mut Conn, t: u64, n: usize| (0..n).map(|_| c.limits(Now::At(t), &[w.keyed()], &[])).collect::<Vec<_>>();
    assert_eq!(count(&at(&mut c, boundary - 1_000_000, 15), Outcome::Passed), 10, "full quota just before the boundary");
    assert_eq!(count(&at(&mut c, boundary + 1_000_000, 15), Outcome::Passed), 0, "none just after: no 2x burst");
    assert_eq!(count(&at(&mut c, boundary + 30_000_000, 15), Outcome::Passed), 5, "half the previous window has slid out");
}

#[test]
fn penalty_box_bans_after_threshold_and_ban_expires() {
    let server = Server::start();
    let mut c = server.conn();
    let pbox = PenaltyBox { statuses: vec![401, 403], threshold: 3, window: Duration::from_secs(10), ban: Duration::from_millis(300) };
    assert_eq!(c.ban("login", b"1.2.3.4", &pbox), Recorded::Counted { count: 1 });
    assert_eq!(c.ban("login", b"1.2.3.4", &pbox), Recorded::Counted { count: 2 });
    assert_eq!(c.ban("login", b"1.2.3.4", &pbox), Recorded::Banned { left: Duration::from_millis(300) });
    assert!(matches!(c.ban("login", b"1.2.3.4", &pbox), Recorded::Banned { left } if left <= Duration::from_millis(300)));
    assert_eq!(c.ban("login", b"5.6.7.8", &pbox), Recorded::Counted { count: 1 }, "other keys unaffected");

    let l = Applied::new("api", b"1.2.3.4", Limit::new(Algorithm::Gcra, rate("10r/s").unwrap(), 0));
    let bkey = ban_key("login", b"1.2.3.4");
    let d = c.limits(Now::Server, &[l.keyed()], &[&bkey]);
    assert_eq!(d[0].outcome, Outcome::Passed, "the limit itself would pass");
    assert_eq!(d[1].outcome, Outcome::Rejected, "but the ban rejects");
    assert!(d[1].retry_after > Duration::ZERO && d[1].retry_after <= Duration::from_millis(300));
    assert_eq!(c.int(&[b"EXISTS", &l.key]), 0, "a banned request consumes nothing");

    let deadline = Instant::now() + Duration::from_secs(3);
    while c.int(&[b"EXISTS", &bkey]) == 1 {
        assert!(Instant::now() < deadline, "ban did not expire");
        std::thread::sleep(Duration::from_millis(25));
    }
    let d = c.limits(Now::Server, &[l.keyed()], &[&bkey]);
    assert_eq!((d[0].outcome, d[1].outcome), (Outcome::Passed, Outcome::Passed), "ban expired");
    assert_eq!(c.ban("login", b"1.2.3.4", &pbox), Recorded::Counted { count: 1 }, "counting starts over");
}

/// Runs one pseudo-random scenario through the Lua script and the Rust local backend with the
/// same times, limits and keys, and requires identical decisions at every step.
#[test]
fn lua_and_rust_agree_step_for_step() {
    let server = Server::start();
    let mut c = server.conn();
    let configs = [
        ("g-delay", Limit::new(Algorithm::Gcra, rate("5r/s").unwrap(), 4).with_delay(2)),
        ("g-nodelay", Limit::new(Algorithm::Gcra, rate("7r/s").unwrap(), 3).nodelay()),
        ("g-cost", Limit::new(Algorithm::Gcra, rate("30r/m").unwrap(), 6).with_cost(3)),
        ("g-plain", Limit::new(Algorithm::Gcra, rate("3r/s").unwrap(), 0)),
        ("w", Limit::new(Algorithm::SlidingWindow, rate("12r/s").unwrap(), 0)),
        ("w-burst-cost", Limit::new(Algorithm::SlidingWindow, rate("7r/s").unwrap(), 3).with_cost(2)),
    ];
    let clients: [&[u8]; 2] = [b"alice", b"\x00\xffbin}{"];
    let mut local = MemoryStore::default();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut now = T0 + 123_457;
    let (mut passed, mut delayed, mut rejected) = (0, 0, 0);
    for step in 0..600 {
        now += next(4) * next(90_000) + next(3);
        let client = clients[next(2) as usize];
        // Each request gets one to three of the limits, in a random order.
        let mut picks: Vec<usize> = Vec::new();
        for _ in 0..1 + next(3) {
            let i = next(configs.len() as u64) as usize;
            if !picks.contains(&i) {
                picks.push(i);
            }
        }
        let applied: Vec<Applied> = picks.iter().map(|&i| Applied::new(configs[i].0, client, configs[i].1)).collect();
        let keyed: Vec<KeyedLimit<'_>> = applied.iter().map(Applied::keyed).collect();
        let from_lua = c.limits(Now::At(now), &keyed, &[]);
        let from_rust = acquire(&mut local, now, &keyed, &[]);
        assert_eq!(from_lua, from_rust, "step {step} at {now}: {picks:?}");
        match strictest(&from_rust).map(|i| from_rust[i].outcome) {
            Some(Outcome::Passed) => passed += 1,
            Some(Outcome::Delayed) => delayed += 1,
            _ => rejected += 1,
        }
    }
    assert!(passed > 50 && delayed > 10 && rejected > 50, "scenario exercises every outcome: {passed}/{delayed}/{rejected}");
}
