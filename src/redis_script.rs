//! The Redis side of rate limiting: Lua scripts (the same arithmetic as `ratelimit.rs`),
//! key layout, command building and typed reply decoding.
//!
//! **One round trip per request**: `LIMIT_SCRIPT` checks every ban and every limit of the
//! request and, only if all admit it, writes every new state (two-phase, atomically — a
//! script runs alone on the server). Redis `TIME` is the only clock, so node clocks don't
//! matter. Every key is written with `SET ... PX` in the same call: no key is ever left
//! without a TTL.
//!
//! **Keys** are `shield:{<key>}:<zone>` (and `...:<zone>:ban`, `...:<zone>:fails`): the client
//! key is the Redis Cluster hash tag, so all zones limited by the same key (say
//! `$binary_remote_addr`) land in one slot and one script call stays single-slot. Limits of one
//! request keyed by different values (IP *and* API key) span slots, which Cluster refuses
//! (`CROSSSLOT`); MOVED/ASK redirections are not followed yet. Use a single Redis (or a
//! primary with replicas) until then.

use crate::ratelimit::{Algorithm, Decision, Limit, Outcome};
use crate::resp::{encode_command, Reply};
use crate::sha1;

/// ARGV: n_limits, n_bans, now_us (0 = Redis TIME), then 7 per limit:
/// algorithm (0 GCRA, 1 sliding), interval_us, period_us, burst, delay, cost, quota.
/// KEYS: the limit keys, then the ban keys.
/// Returns {banned_ms} when a ban key is live, else {0, outcome, remaining, reset_us, wait_us, ...}.
pub const LIMIT_SCRIPT: &str = r#"
local n, nb, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
for j = 1, nb do
  local ttl = redis.call('PTTL', KEYS[n + j])
  if ttl > 0 then return {ttl} end
end
local out, writes, rejected = {0}, {}, false
for i = 1, n do
  local b = 3 + (i - 1) * 7
  local algo, t, w = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local burst, delay, cost, quota = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7])
  local raw = redis.call('GET', KEYS[i])
  local outcome, remaining, reset, wait, value, ttl
  if algo == 0 then
    local tat = raw and tonumber(raw) or 0
    if tat < now then tat = now end
    local new_tat = tat + cost * t
    local ahead = new_tat - now
    local tolerance = (burst + 1) * t
    if ahead > tolerance then
      outcome, remaining, reset, wait = 2, 0, tat - now, ahead - tolerance
    else
      local excess = ahead - t
      if excess < 0 then excess = 0 end
      local free = delay * t
      if excess > free then outcome, wait = 1, excess - free else outcome, wait = 0, 0 end
      remaining = math.floor(math.floor((tolerance - ahead) / t) / cost)
      reset = ahead
      value, ttl = string.format('%.0f', new_tat), math.floor(ahead / 1000) + 1000
    end
  else
    local start, prev, cur = 0, 0, 0
    if raw then
      local s, p, c = string.match(raw, '^(%d+) (%d+) (%d+)$')
      start, prev, cur = tonumber(s), tonumber(p), tonumber(c)
    end
    local window = now - (now % w)
    if start ~= window then
      if start + w == window then prev = cur else prev = 0 end
      cur, start = 0, window
    end
    local elapsed = now - window
    local needed = (cur + cost) * w + prev * (w - elapsed)
    reset = w - elapsed
    if cur > 0 then reset = reset + w end
    if needed > quota * w then
      outcome, remaining = 2, 0
      if prev == 0 then wait = w - elapsed else
        wait = math.ceil((needed - quota * w) / prev)
        if wait > w - elapsed then wait = w - elapsed end
      end
      if wait < 1 then wait = 1 end
    else
      local used = math.floor((prev * (w - elapsed) + cur * w) / w) + cost
      remaining = quota - used
      if remaining < 0 then remaining = 0 end
      remaining = math.floor(remaining / cost)
      outcome, wait = 0, 0
      value = string.format('%.0f %.0f %.0f', start, prev, cur + cost)
      ttl = math.floor(2 * w / 1000)
    end
  end
  if outcome == 2 then rejected = true end
  writes[i] = {value, ttl}
  local k = #out
  out[k + 1], out[k + 2], out[k + 3], out[k + 4] = outcome, remaining, reset, wait
end
if not rejected then
  for i = 1, n do
    redis.call('SET', KEYS[i], writes[i][1], 'PX', writes[i][2])
  end
end
return out
"#;

/// Penalty box: KEYS = fails counter, ban key; ARGV = threshold, window_ms, ban_ms.
/// Returns the count in the current window (0 once the ban is set).
pub const BAN_SCRIPT: &str = r#"
local c = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if c >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return 0
end
return c
"#;

pub struct Script {
    pub source: &'static str,
    pub sha: String,
}

impl Script {
    pub fn new(source: &'static str) -> Script {
        Script { source, sha: sha1::hex(source.as_bytes()) }
    }

    /// The EVALSHA command, and the EVAL to send instead if Redis answers NOSCRIPT.
    pub fn commands(&self, keys: &[Vec<u8>], args: &[String]) -> (Vec<u8>, Vec<u8>) {
        let n = keys.len().to_string();
        let build = |verb: &[u8], body: &[u8]| {
            let mut parts: Vec<&[u8]> = vec![verb, body, n.as_bytes()];
            parts.extend(keys.iter().map(Vec::as_slice));
            parts.extend(args.iter().map(String::as_bytes));
            let mut out = Vec::with_capacity(64 + keys.iter().map(Vec::len).sum::<usize>());
            encode_command(&mut out, &parts);
            out
        };
        (build(b"EVALSHA", self.sha.as_bytes()), build(b"EVAL", self.source.as_bytes()))
    }
}

/// `shield:{<key>}:<zone><suffix>`. Keys that are not printable, or contain braces (which
/// would move the hash tag), are hex-encoded.
pub fn redis_key(zone: &str, key: &[u8], suffix: &str) -> Vec<u8> {
    let printable = key.iter().all(|&b| (0x21..0x7f).contains(&b) && b != b'{' && b != b'}');
    let mut out = Vec::with_capacity(16 + zone.len() + key.len() * 2);
    out.extend_from_slice(b"shield:{");
    if printable {
        out.extend_from_slice(key);
    } else {
        out.push(b'x');
        for b in key {
            out.extend_from_slice(format!("{b:02x}").as_bytes());
        }
    }
    out.extend_from_slice(b"}:");
    out.extend_from_slice(zone.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    out
}

/// ARGV for LIMIT_SCRIPT.
pub fn limit_args(limits: &[Limit], bans: usize, now_us: u64) -> Vec<String> {
    let mut args = vec![limits.len().to_string(), bans.to_string(), now_us.to_string()];
    for l in limits {
        let algo = match l.algorithm {
            Algorithm::Gcra => 0,
            Algorithm::SlidingWindow => 1,
        };
        for v in [algo, l.interval_us(), l.period_us(), l.burst, l.delay, l.cost.max(1), l.quota()] {
            args.push(v.to_string());
        }
    }
    args
}

/// What LIMIT_SCRIPT answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitReply {
    /// A ban key is live for this many ms more.
    Banned(u64),
    Decisions(Vec<Decision>),
}

pub fn decode_limit_reply(reply: &Reply, limits: usize) -> Result<LimitReply, String> {
    let Reply::Array(Some(items)) = reply else { return Err(format!("unexpected reply {reply:?}")) };
    let ints: Vec<i64> = items
        .iter()
        .map(|i| match i {
            Reply::Integer(v) => Ok(*v),
            other => Err(format!("unexpected element {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    match ints.as_slice() {
        [ms] if *ms > 0 => Ok(LimitReply::Banned(*ms as u64)),
        [0, rest @ ..] if rest.len() == limits * 4 => Ok(LimitReply::Decisions(
            rest.chunks(4)
                .map(|c| {
                    let outcome = match c[0] {
                        0 => Outcome::Passed,
                        1 => Outcome::Delayed,
                        _ => Outcome::Rejected,
                    };
                    let u = |v: i64| v.max(0) as u64;
                    Decision { outcome, remaining: u(c[1]), reset_us: u(c[2]), wait_us: u(c[3]) }
                })
                .collect(),
        )),
        _ => Err(format!("unexpected reply shape {ints:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::rate;
    use crate::resp::decode;

    #[test]
    fn keys_carry_the_client_key_as_hash_tag() {
        assert_eq!(redis_key("api", b"10.0.0.1", ""), b"shield:{10.0.0.1}:api".to_vec());
        assert_eq!(redis_key("api", &[127, 0, 0, 1], ":ban"), b"shield:{x7f000001}:api:ban".to_vec());
        assert_eq!(redis_key("api", b"a}b", ""), b"shield:{x617d62}:api".to_vec());
    }

    #[test]
    fn commands_are_evalsha_with_eval_fallback() {
        let s = Script::new(LIMIT_SCRIPT);
        assert_eq!(s.sha.len(), 40);
        let l = Limit { algorithm: Algorithm::Gcra, rate: rate("10r/s").unwrap(), burst: 5, delay: 0, cost: 1 };
        let args = limit_args(&[l], 0, 0);
        assert_eq!(args, ["1", "0", "0", "0", "100000", "1000000", "5", "0", "1", "6"]);
        let (sha, eval) = s.commands(&[redis_key("z", b"k", "")], &args);
        let Some((Reply::Array(Some(parts)), _)) = decode(&sha).unwrap() else { panic!() };
        assert_eq!(parts[0], Reply::Bulk(Some(b"EVALSHA".to_vec())));
        assert_eq!(parts[2], Reply::Bulk(Some(b"1".to_vec())), "numkeys");
        assert!(String::from_utf8_lossy(&eval).contains("redis.call('TIME')"));
    }

    #[test]
    fn replies_decode_to_decisions_or_ban() {
        let ok = Reply::Array(Some([0, 0, 4, 1_000_000, 0, 2, 0, 5, 7].iter().map(|&v| Reply::Integer(v)).collect()));
        match decode_limit_reply(&ok, 2).unwrap() {
            LimitReply::Decisions(d) => {
                assert_eq!(d[0].outcome, Outcome::Passed);
                assert_eq!(d[0].remaining, 4);
                assert_eq!((d[1].outcome, d[1].wait_us), (Outcome::Rejected, 7));
            }
            other => panic!("{other:?}"),
        }
        let banned = Reply::Array(Some(vec![Reply::Integer(1500)]));
        assert_eq!(decode_limit_reply(&banned, 2).unwrap(), LimitReply::Banned(1500));
        assert!(decode_limit_reply(&Reply::Integer(1), 1).is_err());
        assert!(decode_limit_reply(&Reply::Array(Some(vec![Reply::Integer(0)])), 1).is_err());
    }
}
