#![allow(dead_code)]
//! The Lua scripts against a real redis-server: they must agree with the Rust arithmetic
//! decision for decision, keep a TTL on every key, and behave two-phase.
//!
//! The pure modules are compiled into this test directly (the crate's library links nginx).

#[path = "../src/limit/mod.rs"]
mod limit;
#[path = "../src/parse.rs"]
mod parse;
#[path = "../src/redis/mod.rs"]
mod redis;
#[path = "../src/status/mod.rs"]
mod status;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use limit::cluster::{refund_args, Refund, REFUND_SCRIPT};
use limit::script::{redis_key, BanKey, Batch, BatchError, LimitKey, LimitReply, Script, BAN_SCRIPT, LIMIT_SCRIPT};
use limit::{check_all, Algorithm, Limit, Outcome, State};
use redis::resp::{self, Reply};
use support::Redis;

/// A raw RESP connection through the module's own codec: the commands are the module's bytes.
struct Conn(TcpStream, Vec<u8>, resp::Decoder);

/// Larger than anything these tests get back.
const ROOMY: resp::Bound = resp::Bound { bytes: 1 << 20, elements: 1 << 12 };

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Conn(s, Vec::new(), resp::Decoder::default())
    }

    fn raw(&mut self, bytes: &[u8]) -> Reply {
        self.0.write_all(bytes).unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            let (used, reply) = self.2.decode(&self.1, ROOMY).unwrap();
            self.1.drain(..used);
            if let Some(reply) = reply {
                return reply;
            }
            let n = match self.0.read(&mut chunk) {
                // SIGCHLD from another test's nginx interrupts blocking reads.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => other.unwrap(),
            };
            assert!(n > 0, "redis closed the connection");
            self.1.extend_from_slice(&chunk[..n]);
        }
    }

    fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = Vec::new();
        resp::encode_command(&mut out, args);
        self.raw(&out)
    }

    /// EVALSHA, falling back to EVAL on NOSCRIPT, as the module does.
    fn eval(&mut self, script: &Script, keys: &[Vec<u8>], args: &[String]) -> Reply {
        let sha = script.evalsha(keys, args);
        match self.raw(&sha) {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => self.raw(&script.eval_for(&sha).unwrap()),
            other => other,
        }
    }

    /// One LIMIT_SCRIPT call for a batch, with the NOSCRIPT fallback; one reply per request.
    fn batch(&mut self, script: &Script, batch: &Batch, now: u64) -> Vec<LimitReply> {
        self.batch_until(script, batch, now, 0).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One LIMIT_SCRIPT call with a deadline (Redis's clock, µs; 0 for none).
    fn batch_until(
        &mut self,
        script: &Script,
        batch: &Batch,
        now: u64,
        deadline: u64,
    ) -> Result<Vec<LimitReply>, BatchError> {
        let sha = batch.command(script, now, deadline);
        let reply = match self.raw(&sha) {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => self.raw(&script.eval_for(&sha).unwrap()),
            other => other,
        };
        batch.decode(&reply)
    }

    /// A batch of one request.
    fn limit(&mut self, script: &Script, limits: &[LimitKey<'_>], bans: &[BanKey<'_>], now: u64) -> LimitReply {
        let mut b = Batch::default();
        b.push(limits.iter().copied(), bans.iter().copied());
        self.batch(script, &b, now).remove(0)
    }
}

/// A fresh redis-server, a connection to it and LIMIT_SCRIPT (not loaded yet).
fn limit_script() -> (Redis, Conn, Script) {
    let redis = Redis::start();
    let c = Conn::open(redis.port);
    (redis, c, Script::new(LIMIT_SCRIPT))
}

fn lk<'a>(zone: &'a str, key: &'a [u8], limit: Limit) -> LimitKey<'a> {
    LimitKey { zone, key, limit }
}

fn limit(r: &str, burst: u64, delay: u64, algorithm: Algorithm) -> Limit {
    Limit { algorithm, rate: parse::rate(r).unwrap(), burst, delay, cost: 1 }
}

#[test]
fn evalsha_falls_back_to_eval_on_noscript_then_uses_the_cache() {
    let (_redis, mut c, script) = limit_script();
    let l = limit("10r/s", 0, 0, Algorithm::Gcra);
    let mut b = Batch::default();
    b.push([lk("z", b"k", l)], []);
    let sha = b.command(&script, 0, 0);
    assert!(matches!(c.raw(&sha), Reply::Error(e) if e.starts_with("NOSCRIPT")));
    assert!(matches!(c.batch(&script, &b, 0)[..], [LimitReply::Decisions(_)]));
    assert!(matches!(c.raw(&sha), Reply::Array(_)), "EVAL loaded the script");
}

/// Drives the same request sequence through Rust and Lua and compares every decision.
#[test]
fn lua_and_rust_agree_decision_for_decision() {
    let (_redis, mut c, script) = limit_script();
    let configs = [
        vec![limit("10r/s", 0, 0, Algorithm::Gcra)],
        vec![limit("10r/s", 5, 0, Algorithm::Gcra)],
        vec![limit("10r/s", 5, 2, Algorithm::Gcra)],
        vec![limit("100r/m", 20, 20, Algorithm::Gcra), limit("5r/s", 0, 0, Algorithm::Gcra)],
        vec![limit("10r/m", 0, 0, Algorithm::SlidingWindow)],
        vec![limit("50r/s", 5, 0, Algorithm::SlidingWindow), limit("20r/s", 3, 3, Algorithm::Gcra)],
    ];
    for (ci, limits) in configs.iter().enumerate() {
        let zones: Vec<String> = (0..limits.len()).map(|i| format!("c{ci}z{i}")).collect();
        let keys: Vec<LimitKey> = limits.iter().zip(&zones).map(|(l, z)| lk(z, b"client", *l)).collect();
        let mut states: Vec<State> = vec![[0; 3]; limits.len()];
        // Deterministic irregular arrivals: bursts and gaps, across window boundaries, some
        // longer than a window (the sliding window forgets a window it skipped).
        let mut now: u64 = 1_700_000_000_000_000 + 999_000;
        for step in 0..400u64 {
            now += [0, 0, 0, 7_000, 30_000, 150_000, 2_100_000, 900_000][(step * 7 % 8) as usize];
            let pairs: Vec<(Limit, State)> = limits.iter().copied().zip(states.iter().copied()).collect();
            let (rust, _, commit) = check_all(&pairs, now);
            if let Some(new) = commit {
                states = new;
            }
            let LimitReply::Decisions(lua) = c.limit(&script, &keys, &[], now) else { panic!() };
            assert_eq!(lua[..], rust[..], "config {ci} step {step} at {now}");
        }
    }
}

#[test]
fn exact_admission_and_every_key_has_a_ttl() {
    let (_redis, mut c, script) = limit_script();
    let l = limit("100r/h", 99, 99, Algorithm::Gcra);
    let admitted = (0..300)
        .filter(|_| matches!(c.limit(&script, &[lk("api", b"10.0.0.1", l)], &[], 0), LimitReply::Decisions(d) if d[0].outcome == Outcome::Passed))
        .count();
    assert_eq!(admitted, 100);
    let Reply::Integer(ttl) = c.cmd(&[b"PTTL", &redis_key("api", b"10.0.0.1", "")]) else { panic!() };
    assert!(ttl > 0, "GCRA key has a TTL: {ttl}");

    let s = limit("10r/m", 0, 0, Algorithm::SlidingWindow);
    let skey = [redis_key("sw", b"10.0.0.1", "")];
    c.limit(&script, &[lk("sw", b"10.0.0.1", s)], &[], 0);
    let Reply::Integer(ttl) = c.cmd(&[b"PTTL", &skey[0]]) else { panic!() };
    assert!(ttl > 0 && ttl <= 120_000, "sliding key TTL is two windows: {ttl}");
}

#[test]
fn rejected_by_one_limit_consumes_none_of_the_others() {
    let (_redis, mut c, script) = limit_script();
    let loose = limit("100r/h", 99, 99, Algorithm::Gcra);
    let strict = limit("1r/h", 0, 0, Algorithm::Gcra);
    let keys = [redis_key("loose", b"k", ""), redis_key("strict", b"k", "")];
    let both = [lk("loose", b"k", loose), lk("strict", b"k", strict)];
    let first = c.limit(&script, &both, &[], 0);
    assert!(matches!(first, LimitReply::Decisions(ref d) if d.iter().all(|d| d.outcome == Outcome::Passed)));
    let before = c.cmd(&[b"GET", &keys[0]]);
    for _ in 0..20 {
        let r = c.limit(&script, &both, &[], 0);
        assert!(matches!(r, LimitReply::Decisions(ref d) if d[1].outcome == Outcome::Rejected));
    }
    assert_eq!(c.cmd(&[b"GET", &keys[0]]), before, "the loose limit's state did not move");
}

#[test]
fn penalty_box_bans_after_threshold_and_the_limit_script_honours_it() {
    let redis = Redis::start();
    let mut c = Conn::open(redis.port);
    let ban = Script::new(BAN_SCRIPT);
    let script = Script::new(LIMIT_SCRIPT);
    let fails = redis_key("login", b"10.0.0.9", ":fails");
    let banned = redis_key("login", b"10.0.0.9", ":ban");
    let args = |t: u64| vec![t.to_string(), "60000".to_string(), "1500".to_string()];
    for expected in [1, 2] {
        assert_eq!(c.eval(&ban, &[fails.clone(), banned.clone()], &args(3)), Reply::Integer(expected));
        let Reply::Integer(ttl) = c.cmd(&[b"PTTL", &fails]) else { panic!() };
        assert!(ttl > 0, "counter has a TTL");
    }
    assert_eq!(c.eval(&ban, &[fails.clone(), banned.clone()], &args(3)), Reply::Integer(0));
    let l = limit("100r/s", 10, 10, Algorithm::Gcra);
    let (limits, bans) = ([lk("login", b"10.0.0.9", l)], [BanKey { zone: "login", key: b"10.0.0.9" }]);
    let r = c.limit(&script, &limits, &bans, 0);
    assert!(matches!(r, LimitReply::Banned(ms) if ms > 0 && ms <= 1500), "{r:?}");
    std::thread::sleep(Duration::from_millis(1600));
    let r = c.limit(&script, &limits, &bans, 0);
    assert!(matches!(r, LimitReply::Decisions(_)), "ban expired: {r:?}");
}

/// A batch must answer exactly as one call per request would, with identical requests taken
/// together (in the order their first one arrived; they share one instant, `now`): requests
/// of the same client see each other's admissions, a rejected request commits nothing, and
/// each key is written once with a TTL.
#[test]
fn a_batch_answers_like_one_call_per_request() {
    let (_redis, mut c, script) = limit_script();
    // A weighted request (cost 2) per client, one global window for everyone.
    let per_ip = Limit { cost: 2, ..limit("10r/s", 7, 2, Algorithm::Gcra) };
    let shared = limit("20r/s", 4, 0, Algorithm::SlidingWindow);
    let clients: [&[u8]; 3] = [b"10.0.0.1", b"10.0.0.2", &[10, 0, 0, 3]];
    let mut rust: std::collections::HashMap<(usize, &str, Vec<u8>), State> = Default::default();
    let mut now: u64 = 1_700_000_000_000_000;
    let (mut admitted, mut rejected) = (0, 0);
    for round in 0..60u64 {
        now += [0, 20_000, 100_000, 0, 350_000][(round % 5) as usize];
        // Batches of 1..=12 requests, mixing clients; "global" is one key for everyone.
        let size = 1 + (round * 5 % 12) as usize;
        let reqs: Vec<(usize, [LimitKey; 2])> = (0..size)
            .map(|i| {
                let who = (round as usize + i * i) % 3;
                (who, [lk("ip", clients[who], per_ip), lk("global", b"all", shared)])
            })
            .collect();
        let mut batch = Batch::default();
        for (_, limits) in &reqs {
            batch.push(limits.iter().copied(), []);
        }
        let lua = c.batch(&script, &batch, now);
        assert_eq!(lua.len(), size);
        // The order the script decides in: grouped by client, clients by first arrival.
        let mut order: Vec<usize> = (0..size).collect();
        let first = |who: usize| reqs.iter().position(|r| r.0 == who).unwrap();
        order.sort_by_key(|&i| first(reqs[i].0));
        for i in order {
            let ((who, limits), got) = (&reqs[i], lua[i].clone());
            let ids = [(0, "ip", clients[*who].to_vec()), (1, "global", b"all".to_vec())];
            let pairs: Vec<(Limit, State)> =
                limits.iter().zip(&ids).map(|(l, id)| (l.limit, rust.get(id).copied().unwrap_or([0; 3]))).collect();
            let (want, _, commit) = check_all(&pairs, now);
            if let Some(new) = commit {
                admitted += 1;
                for (id, s) in ids.into_iter().zip(new) {
                    rust.insert(id, s);
                }
            } else {
                rejected += 1;
            }
            assert_eq!(got, LimitReply::Decisions(want.into()), "round {round}");
        }
    }
    assert!(admitted > 50 && rejected > 50, "the sequence exercises both answers: {admitted}/{rejected}");
    for key in [redis_key("ip", b"10.0.0.1", ""), redis_key("ip", &[10, 0, 0, 3], ""), redis_key("global", b"all", "")]
    {
        let Reply::Integer(ttl) = c.cmd(&[b"PTTL", &key]) else { panic!() };
        assert!(ttl > 0, "{} has a TTL: {ttl}", String::from_utf8_lossy(&key));
    }
}

/// A batch that reaches Redis after its deadline (a stopped Redis resuming) writes nothing:
/// its requests were answered by the fail policy already. In time, the same batch is applied
/// and decided exactly as without a deadline.
#[test]
fn a_late_batch_is_a_no_op_and_an_early_one_is_applied() {
    let (_redis, mut c, script) = limit_script();
    let l = limit("10r/s", 5, 0, Algorithm::Gcra);
    let mut b = Batch::default();
    for _ in 0..3 {
        b.push([lk("late", b"k", l)], []);
    }
    let now: u64 = 1_700_000_000_000_000;
    let key = redis_key("late", b"k", "");
    assert_eq!(c.batch_until(&script, &b, now, now - 1), Err(BatchError::Late(now)));
    assert_eq!(c.cmd(&[b"EXISTS", &key]), Reply::Integer(0), "nothing written by a late batch");
    // The deadline is the last instant the batch may be applied.
    let in_time = c.batch_until(&script, &b, now, now).unwrap();
    let mut states = vec![[0; 3]];
    for got in in_time {
        let (want, _, commit) = check_all(&[(l, states[0])], now);
        states = commit.unwrap();
        assert_eq!(got, LimitReply::Decisions(want.into()));
    }
    assert_eq!(c.cmd(&[b"EXISTS", &key]), Reply::Integer(1));
    // Redis's own clock decides when the caller leaves `now` to it.
    let Reply::Array(Some(t)) = c.cmd(&[b"TIME"]) else { panic!() };
    let secs: u64 = match &t[0] {
        Reply::Bulk(Some(v)) => String::from_utf8_lossy(v).parse().unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(c.batch_until(&script, &b, 0, (secs - 10) * 1_000_000), Err(BatchError::Late(_))));
    assert!(c.batch_until(&script, &b, 0, (secs + 60) * 1_000_000).is_ok());
}

/// One request through LIMIT_SCRIPT on Redis's own clock: its reply and its limits' states
/// right after it, as a cluster part's refund takes them.
fn charge(c: &mut Conn, script: &Script, l: Limit, key: &[u8]) -> (LimitReply, Vec<State>) {
    let mut b = Batch::default();
    b.push([lk("z", key, l)], []);
    let sha = b.command(script, 0, 0);
    let reply = match c.raw(&sha) {
        Reply::Error(e) if e.starts_with("NOSCRIPT") => c.raw(&script.eval_for(&sha).unwrap()),
        other => other,
    };
    b.decode_detailed(&reply).unwrap().1.remove(0)
}

/// How many more requests the key admits now (bounded).
fn admits(c: &mut Conn, script: &Script, l: Limit, key: &[u8]) -> usize {
    (0..50)
        .take_while(|_| match charge(c, script, l, key).0 {
            LimitReply::Decisions(d) => d[0].outcome != Outcome::Rejected,
            other => panic!("{other:?}"),
        })
        .count()
}

/// REFUND_SCRIPT (a request split among cluster slots, rejected by another slot) takes back
/// exactly one admitted request's charge, for GCRA and the sliding window, also when other
/// requests charged the same key after it; a charge that has drained away is left alone.
#[test]
fn a_refund_takes_back_exactly_one_charge() {
    let (_redis, mut c, script) = limit_script();
    let refund = Script::new(REFUND_SCRIPT);
    for (i, algorithm) in [Algorithm::Gcra, Algorithm::SlidingWindow].into_iter().enumerate() {
        // 1r/m, burst 3: GCRA admits 4 at once; the sliding window 1 + 3 per minute.
        let l = limit("1r/m", 3, 0, algorithm);
        let quota = l.quota() as usize;
        let (refunded, control) = (format!("r{i}"), format!("c{i}"));
        for key in [&refunded, &control] {
            let (first, after) = charge(&mut c, &script, l, key.as_bytes());
            assert!(matches!(first, LimitReply::Decisions(_)));
            // Another request charges the key after the one to refund.
            charge(&mut c, &script, l, key.as_bytes());
            if key == &refunded {
                let (keys, args) = refund_args([Refund { zone: "z", key: key.as_bytes(), limit: l, after: after[0] }]);
                assert_eq!(c.eval(&refund, &keys, &args), Reply::Integer(1));
            }
        }
        assert_eq!(admits(&mut c, &script, l, control.as_bytes()), quota - 2, "{algorithm:?}: two charges");
        assert_eq!(admits(&mut c, &script, l, refunded.as_bytes()), quota - 1, "{algorithm:?}: one taken back");
        let ttl = c.cmd(&[b"PTTL", &redis_key("z", refunded.as_bytes(), "")]);
        assert!(matches!(ttl, Reply::Integer(t) if t > 0), "{algorithm:?}: the key keeps a TTL: {ttl:?}");
    }
    // A GCRA charge whose TAT is already behind Redis's clock has drained: nothing changes.
    let fast = limit("1000r/s", 0, 0, Algorithm::Gcra);
    let (_, after) = charge(&mut c, &script, fast, b"fast");
    std::thread::sleep(Duration::from_millis(20));
    charge(&mut c, &script, fast, b"fast");
    let before = c.cmd(&[b"GET", &redis_key("z", b"fast", "")]);
    let (keys, args) = refund_args([Refund { zone: "z", key: b"fast", limit: fast, after: after[0] }]);
    c.eval(&refund, &keys, &args);
    assert_eq!(c.cmd(&[b"GET", &redis_key("z", b"fast", "")]), before, "the later request's charge stays");
}
