//! The Lua scripts and their typed calls.
//!
//! [`LIMIT`] checks every limit and ban of one request and commits only if all pass, in one
//! atomic script call: the Redis twin of [`crate::limit::store::acquire`], whose math
//! ([`crate::limit::gcra`], [`crate::limit::window`]) it repeats with the same integers.
//! [`BAN`] records one response for the penalty box. Both set a TTL (`SET ... PX`) in the same
//! command that writes a key, so no key can outlive its meaning.
//!
//! Calls go out as `EVALSHA` ([`Invoke::Sha`]); on a `NOSCRIPT` error the glue resends the
//! same call as `EVAL` ([`Invoke::Source`]), which also caches the script for later calls.

use crate::limit::penalty::{PenaltyBox, Recorded};
use crate::limit::{Algorithm, Decision, KeyedLimit, Outcome};

use super::resp::{CommandWriter, Reply};
use super::sha1;

/// A Lua script and its SHA-1, computed at compile time.
pub struct Script {
    pub source: &'static str,
    sha1: [u8; 40],
}

impl Script {
    pub const fn new(source: &'static str) -> Script {
        Script { source, sha1: sha1::hex(source.as_bytes()) }
    }

    /// The lowercase hex SHA-1 `EVALSHA` takes.
    pub fn sha1(&self) -> &[u8] {
        &self.sha1
    }
}

/// How to name the script in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invoke {
    /// `EVALSHA <sha1>`: the usual, small call.
    Sha,
    /// `EVAL <source>`: after a `NOSCRIPT` reply (a restarted or failed-over server).
    Source,
}

/// Which clock the limit script uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// Redis `TIME`: one clock for every nginx node, whatever their own clocks say.
    Server,
    /// A given time in µs since the epoch (tests, and comparing with the local backend).
    At(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("redis error: {0}")]
    Redis(String),
    #[error("unexpected reply from redis: {0}")]
    Shape(&'static str),
}

impl ReplyError {
    /// The script is not in the server's cache: resend with [`Invoke::Source`].
    pub fn is_noscript(&self) -> bool {
        matches!(self, ReplyError::Redis(e) if e.starts_with("NOSCRIPT"))
    }

    /// Errors a later attempt may not get (server loading, busy, failing over); anything else
    /// (wrong reply shape, script error, wrong type) is permanent until the config changes.
    pub fn retry_later(&self) -> bool {
        const TRANSIENT: &[&str] = &["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY", "NOSCRIPT"];
        matches!(self, ReplyError::Redis(e) if TRANSIENT.iter().any(|t| e.split(' ').next() == Some(t)))
    }
}

/// Every limit and ban of one request.
///
/// KEYS: `n` limit keys, then `m` ban keys.
/// ARGV: now (µs, or empty for `TIME`), `n`, `m`, then five per limit: algorithm (1 GCRA,
/// 2 sliding window), interval µs (GCRA) or period µs (window), burst (GCRA) or capacity
/// (window), delay, cost.
/// Reply: five integers per limit, then per ban: outcome (0 passed, 1 delayed, 2 rejected),
/// remaining, reset µs, retry µs, delay µs.
///
/// Lua numbers are doubles: `Limit::validate` keeps every product below 2^50 so they stay
/// exact, `idiv` is an exact floor division, and numbers are formatted with `%.0f` because
/// Lua's default `%.14g` would round a µs timestamp.
pub static LIMIT: Script = Script::new(
    r#"-- nginx-shield: check all limits and bans of a request, commit only if all pass
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function int(x) return string.format('%.0f', x) end
local function px(us) return int(math.max(1, idiv(us + 999, 1000))) end

local now
if ARGV[1] == '' then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end

local function gcra(key, t, burst, delay, cost)
  local capacity = (burst + 1) * t
  local tat = math.max(tonumber(redis.call('GET', key) or 0) or 0, now)
  local new_tat = tat + cost * t
  local allow_at = new_tat - capacity
  if allow_at > now then
    return {2, idiv(math.max(0, capacity - (tat - now)), t), tat - now, allow_at - now, 0}
  end
  local wait = math.max(0, (tat - now) - delay * t)
  local outcome = 0
  if wait > 0 then outcome = 1 end
  return {outcome, idiv(capacity - (new_tat - now), t), new_tat - now, 0, wait},
         {key, int(new_tat), px(new_tat - now)}
end

local function window_reset(p, elapsed, prev, curr)
  if curr > 0 then return 2 * p - elapsed end
  if prev > 0 then return p - elapsed end
  return 0
end

local function window_retry(p, elapsed, prev, curr, quota, cost)
  local room = quota - curr - cost
  if room >= 0 then return math.max(0, p - idiv(room * p, math.max(prev, 1)) - elapsed) end
  room = quota - cost
  if room < 0 then return p end
  if curr == 0 then return p - elapsed end
  return p - elapsed + math.max(0, p - idiv(room * p, curr))
end

local function window(key, p, quota, cost)
  local index = idiv(now, p)
  local elapsed = now - index * p
  local prev, curr = 0, 0
  local s = redis.call('GET', key)
  if s then
    local i, a, b = string.match(s, '^(%d+):(%d+):(%d+)$')
    if i then
      i = tonumber(i)
      if i == index then prev, curr = tonumber(a), tonumber(b)
      elseif i + 1 == index then prev = tonumber(b) end
    end
  end
  local used = prev * (p - elapsed) + curr * p
  local budget = quota * p
  local after = used + cost * p
  if after > budget then
    return {2, idiv(math.max(0, budget - used), p), window_reset(p, elapsed, prev, curr),
            window_retry(p, elapsed, prev, curr, quota, cost), 0}
  end
  curr = curr + cost
  return {0, idiv(budget - after, p), window_reset(p, elapsed, prev, curr), 0, 0},
         {key, int(index) .. ':' .. int(prev) .. ':' .. int(curr), px(2 * p - elapsed)}
end

local n, m = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, writes, admit = {}, {}, true
for i = 1, n do
  local a = 3 + (i - 1) * 5
  local algorithm, scale, size = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local delay, cost = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local r, w
  if algorithm == 1 then
    r, w = gcra(KEYS[i], scale, size, delay, cost)
  else
    r, w = window(KEYS[i], scale, size, cost)
  end
  for _, v in ipairs(r) do out[#out + 1] = v end
  if w then writes[#writes + 1] = w else admit = false end
end
for j = 1, m do
  local left = redis.call('PTTL', KEYS[n + j])
  if left > 0 then
    admit = false
    for _, v in ipairs({2, 0, left * 1000, left * 1000, 0}) do out[#out + 1] = v end
  else
    for _, v in ipairs({0, 0, 0, 0, 0}) do out[#out + 1] = v end
  end
end
if admit then
  for _, w in ipairs(writes) do redis.call('SET', w[1], w[2], 'PX', w[3]) end
end
return out
"#,
);

/// Records one matching response for the penalty box.
///
/// KEYS: count key, ban key. ARGV: threshold, window ms, ban ms.
/// Reply: banned (0/1), count in the window, ban left ms.
/// The count's window opens with its first response (`SET ... PX window`) and later counts
/// keep the remaining TTL; reaching the threshold sets the ban key with `PX ban` and drops the
/// count. A banned key's responses are not counted.
pub static BAN: Script = Script::new(
    r#"-- nginx-shield: penalty box
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {1, 0, left} end
local count, ttl = 1, redis.call('PTTL', KEYS[1])
if ttl > 0 then
  count = (tonumber(redis.call('GET', KEYS[1])) or 0) + 1
else
  ttl = tonumber(ARGV[2])
end
if count >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return {1, count, tonumber(ARGV[3])}
end
redis.call('SET', KEYS[1], string.format('%.0f', count), 'PX', string.format('%.0f', ttl))
return {0, count, 0}
"#,
);

fn call<'a>(out: &'a mut Vec<u8>, script: &Script, how: Invoke, keys: usize, args: usize) -> CommandWriter<'a> {
    let mut w = CommandWriter::new(out, 3 + keys + args);
    match how {
        Invoke::Sha => w.arg(b"EVALSHA").arg(script.sha1()),
        Invoke::Source => w.arg(b"EVAL").arg(script.source.as_bytes()),
    };
    w.int(keys as u64);
    w
}

/// Appends `SCRIPT LOAD <source>` (optional: a connection may preload scripts).
pub fn encode_script_load(out: &mut Vec<u8>, script: &Script) {
    CommandWriter::new(out, 3).arg(b"SCRIPT").arg(b"LOAD").arg(script.source.as_bytes());
}

/// Appends the [`LIMIT`] call for one request's `limits` and `bans` (ban keys from
/// [`crate::limit::keys::ban_key`]). Expect `limits.len() + bans.len()` decisions back.
pub fn encode_limit_call(out: &mut Vec<u8>, how: Invoke, now: Now, limits: &[KeyedLimit<'_>], bans: &[&[u8]]) {
    let mut w = call(out, &LIMIT, how, limits.len() + bans.len(), 3 + 5 * limits.len());
    for l in limits {
        w.arg(l.key);
    }
    for b in bans {
        w.arg(b);
    }
    match now {
        Now::Server => w.arg(b""),
        Now::At(us) => w.int(us),
    };
    w.int(limits.len() as u64).int(bans.len() as u64);
    for l in limits {
        let limit = &l.limit;
        let (scale, size) = match limit.algorithm {
            Algorithm::Gcra => (limit.interval_us(), limit.burst),
            Algorithm::SlidingWindow => (limit.period_us(), limit.capacity()),
        };
        w.int(limit.algorithm.code()).int(scale).int(size).int(limit.delay).int(limit.cost);
    }
}

fn integers(reply: &Reply) -> Result<Vec<u64>, ReplyError> {
    match reply {
        Reply::Error(e) => Err(ReplyError::Redis(String::from_utf8_lossy(e).into_owned())),
        Reply::Array(Some(items)) => items
            .iter()
            .map(|i| i.as_integer().and_then(|n| u64::try_from(n).ok()).ok_or(ReplyError::Shape("expected non-negative integers")))
            .collect(),
        _ => Err(ReplyError::Shape("expected an array")),
    }
}

/// Decodes the [`LIMIT`] reply into `expected` decisions (limits, then bans).
pub fn decode_limit_reply(reply: &Reply, expected: usize) -> Result<Vec<Decision>, ReplyError> {
    let n = integers(reply)?;
    if n.len() != expected * 5 {
        return Err(ReplyError::Shape("wrong number of results"));
    }
    n.chunks_exact(5)
        .map(|r| {
            let outcome = Outcome::from_code(r[0] as i64).ok_or(ReplyError::Shape("unknown outcome"))?;
            Ok(Decision::from_micros(outcome, r[1], r[2], r[3], r[4]))
        })
        .collect()
}

/// Appends the [`BAN`] call recording one matching response.
pub fn encode_ban_call(out: &mut Vec<u8>, how: Invoke, count_key: &[u8], ban_key: &[u8], pbox: &PenaltyBox) {
    let mut w = call(out, &BAN, how, 2, 3);
    w.arg(count_key).arg(ban_key);
    w.int(pbox.threshold).int((pbox.window.as_millis() as u64).max(1)).int((pbox.ban.as_millis() as u64).max(1));
}

pub fn decode_ban_reply(reply: &Reply) -> Result<Recorded, ReplyError> {
    match integers(reply)?.as_slice() {
        [0, count, _] => Ok(Recorded::Counted { count: *count }),
        [1, _, left_ms] => Ok(Recorded::Banned { left: core::time::Duration::from_millis(*left_ms) }),
        _ => Err(ReplyError::Shape("expected [banned, count, ms]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Limit;
    use crate::parse::rate;
    use crate::redis::resp::{decode, Decoded};
    use core::time::Duration;

    fn args(buf: &[u8]) -> Vec<Vec<u8>> {
        match decode(buf) {
            Ok(Decoded::Complete(Reply::Array(Some(items)), used)) if used == buf.len() => items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(Some(b)) => b,
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn limit_call_lays_out_keys_and_args() {
        let g = Limit::new(Algorithm::Gcra, rate("10r/s").unwrap(), 5).with_delay(2);
        let w = Limit::new(Algorithm::SlidingWindow, rate("100r/m").unwrap(), 20).with_cost(3);
        let limits = [KeyedLimit { key: b"k1", limit: g }, KeyedLimit { key: b"k2", limit: w }];
        let mut out = Vec::new();
        encode_limit_call(&mut out, Invoke::Sha, Now::At(42), &limits, &[b"b1"]);
        let s: Vec<String> = args(&out).iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        assert_eq!(s[0], "EVALSHA");
        assert_eq!(s[1].len(), 40);
        assert_eq!(&s[2..], ["3", "k1", "k2", "b1", "42", "2", "1", "1", "100000", "5", "2", "1", "2", "60000000", "120", "0", "3"]);
        let mut out = Vec::new();
        encode_limit_call(&mut out, Invoke::Source, Now::Server, &limits[..1], &[]);
        let a = args(&out);
        assert_eq!((a[0].as_slice(), a[1].as_slice(), a[4].as_slice()), (&b"EVAL"[..], LIMIT.source.as_bytes(), &b""[..]));
    }

    #[test]
    fn decodes_limit_results_and_errors() {
        let ints = |v: &[i64]| Reply::Array(Some(v.iter().map(|&n| Reply::Integer(n)).collect()));
        let d = decode_limit_reply(&ints(&[1, 3, 400_000, 0, 200_000, 2, 0, 5, 6, 0]), 2).unwrap();
        assert_eq!(d[0].outcome, Outcome::Delayed);
        assert_eq!(d[0].delay, Duration::from_millis(200));
        assert_eq!(d[1].retry_after, Duration::from_micros(6));
        assert!(decode_limit_reply(&ints(&[0, 0, 0, 0, 0]), 2).is_err());
        assert!(decode_limit_reply(&ints(&[3, 0, 0, 0, 0]), 1).is_err());
        assert!(decode_limit_reply(&ints(&[0, -1, 0, 0, 0]), 1).is_err());
        let noscript = decode_limit_reply(&Reply::Error(b"NOSCRIPT No matching script".to_vec()), 1).unwrap_err();
        assert!(noscript.is_noscript() && noscript.retry_later());
        let fatal = decode_limit_reply(&Reply::Error(b"ERR user_script:1: oops".to_vec()), 1).unwrap_err();
        assert!(!fatal.is_noscript() && !fatal.retry_later());
        assert!(ReplyError::Redis("LOADING Redis is loading".into()).retry_later());
    }

    #[test]
    fn ban_call_and_reply() {
        let pbox = PenaltyBox { statuses: vec![401], threshold: 5, window: Duration::from_secs(60), ban: Duration::from_secs(600) };
        let mut out = Vec::new();
        encode_ban_call(&mut out, Invoke::Sha, b"n", b"b", &pbox);
        let a = args(&out);
        assert_eq!(a[0], b"EVALSHA");
        assert_eq!(a[1], BAN.sha1());
        assert_eq!(&a[2..], [&b"2"[..], b"n", b"b", b"5", b"60000", b"600000"]);
        let ints = |v: &[i64]| Reply::Array(Some(v.iter().map(|&n| Reply::Integer(n)).collect()));
        assert_eq!(decode_ban_reply(&ints(&[0, 3, 0])), Ok(Recorded::Counted { count: 3 }));
        assert_eq!(decode_ban_reply(&ints(&[1, 5, 1500])), Ok(Recorded::Banned { left: Duration::from_millis(1500) }));
        assert!(decode_ban_reply(&ints(&[2, 0, 0])).is_err());
    }

    #[test]
    fn script_sha_is_computed_from_source() {
        assert_eq!(LIMIT.sha1(), sha1::hex(LIMIT.source.as_bytes()));
        assert_ne!(LIMIT.sha1(), BAN.sha1());
    }
}
