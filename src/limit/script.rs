//! The Redis side of rate limiting: Lua scripts (the same arithmetic as `gcra.rs` and
//! `window.rs`), key layout, batched command building and typed reply decoding. (Longer than
//! most files: the scripts, the Rust that builds their arguments and decodes their replies,
//! and the tests that hold them to one contract belong together.)
//!
//! **One script call per event-loop turn, not per request**: the requests of one worker that
//! reach the limiter in the same turn of nginx's event loop go to Redis as one `EVALSHA` of
//! `LIMIT_SCRIPT` (a [`Batch`]). The script takes them in order, exactly as if each had made
//! its own call: for each request it checks every ban and every limit and, only if all admit
//! it, updates every state (two-phase). A key touched by several requests is read once and
//! written once, at the end, with its TTL. A script runs alone on the server, so a batch is
//! atomic and limits stay exact across workers and nodes. Redis `TIME` is the only clock, so
//! node clocks don't matter. Every key is written with `SET ... PX`: no key is ever left
//! without a TTL.
//!
//! **Keys** are `shield:{<key>}:<zone>` (and `...:<zone>:ban`, `...:<zone>:fails`): the client
//! key is the Redis Cluster hash tag, so all zones limited by the same key land in one slot.
//! On a cluster, a batch holds the requests of one slot ([`key_slot`]), and a request whose
//! keys span several slots is split (`cluster.rs`).

use super::{admit, Algorithm, Decisions, Limit, State};
use crate::redis::resp::{encode_command, push_array_header, push_bulk, push_bulk_header, push_dec, Bound, Reply};
use crate::status::metrics::Fnv;

/// ARGV: now_us (0 = Redis TIME), deadline_us (0 = none), the number of distinct limits in the
/// batch and 6 per limit: algorithm (0 GCRA, 1 sliding), interval_us, period_us, burst, cost,
/// quota (a delay does not change admission: the caller derives it); then the number of
/// groups and per group: count (requests in the group), n_limits, n_bans and each limit's
/// index in the table above. KEYS: per group, its limit keys then its ban keys.
/// A group is a set of identical requests (same keys, same limits) of the batch, taken at one
/// instant: limit i admits the first `fits_i` of them (a closed form of its arithmetic), so
/// the group, two-phase, admits the first `min(count, fits_i)` and the rest are rejected
/// without consuming anything. Each key touched is written once at the end.
///
/// Redis work per key is what bounds a Redis shared by many clients, so the script reads
/// every key of the batch with one `MGET` (a `GET` per key costs a command dispatch each), a
/// ban key's `PTTL` only when it exists, and the limits' parameters once per batch, not once
/// per group (with 10,000 clients every request is its own group).
///
/// A batch that reaches Redis after its deadline (in Redis's clock, see [`RedisClock`]) writes
/// nothing and answers `{now, -1}`: its requests were already answered by the fail policy when
/// their timeout passed, and applying it then (a stopped Redis resuming, a stalled network)
/// would charge them a second time.
///
/// The reply is compact: `now`, then per group either {banned_ms} (a ban key is live) or
/// {0, then each limit's state as the group found it: tat for GCRA, start previous current
/// for the sliding window}. [`Batch::decode`] replays the group's requests from those states
/// with the Rust arithmetic (`ratelimit::check`), which decides exactly as this script admits
/// (tests/lua_scripts.rs compares them on a real Redis). A flood of one client costs Redis a
/// short loop and a few integers of reply, not five integers per request.
pub const LIMIT_SCRIPT: &str = r#"
local tonumber, floor = tonumber, math.floor
local now, deadline, nlim = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if now == 0 then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]
end
if deadline > 0 and now > deadline then
  return {now, -1}
end
local L = {}
for i = 1, nlim do
  local b = 3 + (i - 1) * 6
  L[i] = {ARGV[b + 1] == '0', tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]),
          tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])}
end
local v = {}
for i = 1, #KEYS, 1000 do
  local part = redis.call('MGET', unpack(KEYS, i, math.min(i + 999, #KEYS)))
  for j = 1, #part do v[i + j - 1] = part[j] end
end
local st, ttl, out, o, base = {}, {}, {now}, 1, {}
local a, k = 5 + nlim * 6, 0
for g = 1, tonumber(ARGV[4 + nlim * 6]) do
  local count, n, nb = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local banned = 0
  for j = 1, nb do
    if v[k + n + j] and banned == 0 then
      local left = redis.call('PTTL', KEYS[k + n + j])
      if left > 0 then banned = left end
    end
  end
  o = o + 1
  out[o] = banned
  if banned == 0 then
    -- The group's requests are identical and share one instant: limit i admits the first
    -- fits_i of them, so the group (two-phase) admits the first min(count, fits_i).
    -- base[i]: where limit i's state starts from (GCRA: max(tat, now); sliding window: the
    -- state rolled to the current window), shared by the admission and the commit (reused
    -- from group to group: only base[1..n] is read).
    local admit = count
    for i = 1, n do
      local key, l = KEYS[k + i], L[tonumber(ARGV[a + 2 + i])]
      local s, cost = st[key], l[5]
      local fits
      if l[1] then
        if s == nil then
          s = tonumber(v[k + i]) or 0
          st[key] = s
        end
        o = o + 1
        out[o] = s
        if s < now then s = now end
        base[i] = s
        fits = floor(((l[4] + 1) * l[2] - (s - now)) / (cost * l[2]))
      else
        if s == nil then
          local x, y, z = string.match(v[k + i] or '', '^(%d+) (%d+) (%d+)$')
          s = {tonumber(x) or 0, tonumber(y) or 0, tonumber(z) or 0}
          st[key] = s
        end
        out[o + 1], out[o + 2], out[o + 3] = s[1], s[2], s[3]
        o = o + 3
        local w, prev, cur = l[3], s[2], s[3]
        local window = now - now % w
        if s[1] ~= window then
          if s[1] + w == window then prev = cur else prev = 0 end
          cur = 0
        end
        base[i] = {window, prev, cur}
        fits = floor((l[6] * w - prev * (w - (now - window)) - cur * w) / (cost * w))
      end
      if fits < admit then admit = fits end
    end
    for i = 1, admit > 0 and n or 0 do
      local key, l = KEYS[k + i], L[tonumber(ARGV[a + 2 + i])]
      local s, cost = base[i], l[5]
      if l[1] then
        s = s + admit * cost * l[2]
        st[key], ttl[key] = s, floor((s - now) / 1000) + 1000
      else
        st[key], ttl[key] = {s[1], s[2], s[3] + admit * cost}, floor(2 * l[3] / 1000)
      end
    end
  end
  a = a + 3 + n
  k = k + n + nb
end
for key, life in pairs(ttl) do
  local val = st[key]
  if type(val) == 'table' then
    -- string.format keeps every digit (tostring would round to 14)
    val = string.format('%.0f %.0f %.0f', val[1], val[2], val[3])
  end
  redis.call('SET', key, val, 'PX', life)
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
        Script { source, sha: sha1_smol::Sha1::from(source).digest().to_string() }
    }

    /// The EVALSHA command for these keys and arguments.
    pub fn evalsha(&self, keys: &[Vec<u8>], args: &[String]) -> Vec<u8> {
        let n = keys.len().to_string();
        let mut parts: Vec<&[u8]> = vec![b"EVALSHA", self.sha.as_bytes(), n.as_bytes()];
        parts.extend(keys.iter().map(Vec::as_slice));
        parts.extend(args.iter().map(String::as_bytes));
        let mut out = Vec::with_capacity(64 + keys.iter().map(Vec::len).sum::<usize>());
        encode_command(&mut out, &parts);
        out
    }

    /// The EVAL to send instead of `evalsha` (one of this script's) when Redis answers
    /// NOSCRIPT: same keys and arguments, the script's source in place of its SHA. Built only
    /// then, so the common case never copies the source.
    pub fn eval_for(&self, evalsha: &[u8]) -> Option<Vec<u8>> {
        let head_end = evalsha.windows(2).position(|w| w == b"\r\n")? + 2;
        let verb = format!("$7\r\nEVALSHA\r\n$40\r\n{}\r\n", self.sha);
        let rest = evalsha[head_end..].strip_prefix(verb.as_bytes())?;
        let mut out = Vec::with_capacity(evalsha.len() + self.source.len());
        out.extend_from_slice(&evalsha[..head_end]);
        push_bulk(&mut out, b"EVAL");
        push_bulk(&mut out, self.source.as_bytes());
        out.extend_from_slice(rest);
        Some(out)
    }
}

/// `shield:{<key>}:<zone><suffix>`. Keys that are not printable, or contain braces (which
/// would move the hash tag), are hex-encoded.
pub fn redis_key(zone: &str, key: &[u8], suffix: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key_len(zone, key, suffix));
    write_key(&mut out, zone, key, suffix);
    out
}

/// An empty key is hex-encoded too (`{x}`): an empty hash tag would not be one.
fn printable(key: &[u8]) -> bool {
    !key.is_empty() && key.iter().all(|&b| (0x21..0x7f).contains(&b) && b != b'{' && b != b'}')
}

fn key_len(zone: &str, key: &[u8], suffix: &str) -> usize {
    let k = if printable(key) { key.len() } else { 1 + 2 * key.len() };
    "shield:{}:".len() + k + zone.len() + suffix.len()
}

fn write_key(out: &mut Vec<u8>, zone: &str, key: &[u8], suffix: &str) {
    out.extend_from_slice(b"shield:{");
    write_tag(out, key);
    out.extend_from_slice(b"}:");
    out.extend_from_slice(zone.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
}

/// The Redis Cluster slot of every key [`redis_key`] names for this client key: that of its
/// hash tag, computed on the tag as encoded, without building it.
pub fn key_slot(key: &[u8]) -> u16 {
    use crate::redis::cluster::slot_of_tag;
    if printable(key) {
        return slot_of_tag(key);
    }
    let mut tag = Vec::with_capacity(1 + 2 * key.len());
    write_tag(&mut tag, key);
    slot_of_tag(&tag)
}

/// The hash tag of a client key: the key itself when printable, else `x` and its hex.
fn write_tag(out: &mut Vec<u8>, key: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if printable(key) {
        out.extend_from_slice(key);
    } else {
        out.push(b'x');
        for &b in key {
            out.extend_from_slice(&[HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// Appends one RESP bulk string holding the decimal `v`.
fn bulk_u64(out: &mut Vec<u8>, v: u64) {
    push_bulk_header(out, v.checked_ilog10().map_or(1, |d| d as usize + 1));
    push_dec(out, v);
    out.extend_from_slice(b"\r\n");
}

/// One limit of one request, as the batch needs it.
#[derive(Clone, Copy)]
pub struct LimitKey<'a> {
    pub zone: &'a str,
    pub key: &'a [u8],
    pub limit: Limit,
}

/// One ban check of one request.
#[derive(Clone, Copy)]
pub struct BanKey<'a> {
    pub zone: &'a str,
    pub key: &'a [u8],
}

/// Identical requests of a batch: same keys, same limits.
struct Group {
    /// The requests' identity (see `push`) and its hash.
    id: Vec<u8>,
    hash: u64,
    /// RESP bulk strings: the group's keys, then (from `split`) n_limits, n_bans and the
    /// limits' indices in the batch's table.
    desc: Vec<u8>,
    split: usize,
    nkeys: usize,
    /// The group's limits, to replay its requests from the states Redis reports.
    limits: Vec<Limit>,
    count: usize,
}

/// Requests collected for one `LIMIT_SCRIPT` call, grouped: a flood of requests from one
/// client costs the script one key read, one key write and a little arithmetic, not a call each. Keys and
/// arguments are RESP-encoded as they are pushed, and the command is built by concatenation.
#[derive(Default)]
pub struct Batch {
    groups: Vec<Group>,
    /// The batch's distinct limits, as the script takes them: algorithm, interval_us,
    /// period_us, burst, cost, quota.
    table: Vec<[u64; 6]>,
    /// Per request, in push order: its group.
    members: Vec<usize>,
    scratch: Vec<u8>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds a request; its answer is `decode(..)[self.len() - 1]`.
    pub fn push<'k, L, B>(&mut self, limits: L, bans: B)
    where
        L: IntoIterator<Item = LimitKey<'k>>,
        L::IntoIter: Clone,
        B: IntoIterator<Item = BanKey<'k>>,
        B::IntoIter: Clone,
    {
        let (limits, bans) = (limits.into_iter(), bans.into_iter());
        // The request's identity, cheaply (no decimal formatting): zones, keys, parameters.
        let id = &mut self.scratch;
        id.clear();
        let (mut nlimits, mut nbans) = (0, 0);
        for l in limits.clone() {
            nlimits += 1;
            for part in [l.zone.as_bytes(), l.key] {
                id.extend_from_slice(&(part.len() as u32).to_le_bytes());
                id.extend_from_slice(part);
            }
            for v in [
                l.limit.interval_us(),
                l.limit.period_us(),
                l.limit.burst,
                l.limit.delay,
                l.limit.cost,
                l.limit.algorithm as u64,
            ] {
                id.extend_from_slice(&v.to_le_bytes());
            }
        }
        id.push(0xff);
        for b in bans.clone() {
            nbans += 1;
            for part in [b.zone.as_bytes(), b.key] {
                id.extend_from_slice(&(part.len() as u32).to_le_bytes());
                id.extend_from_slice(part);
            }
        }
        let mut h = Fnv::default();
        h.write(id);
        let g = match self.groups.iter().position(|g| g.hash == h.0 && g.id == *id) {
            Some(g) => g,
            None => {
                let mut desc = Vec::with_capacity(64 + id.len() * 2);
                for (zone, key, suffix) in
                    limits.clone().map(|l| (l.zone, l.key, "")).chain(bans.map(|b| (b.zone, b.key, ":ban")))
                {
                    push_bulk_header(&mut desc, key_len(zone, key, suffix));
                    write_key(&mut desc, zone, key, suffix);
                    desc.extend_from_slice(b"\r\n");
                }
                let split = desc.len();
                bulk_u64(&mut desc, nlimits as u64);
                bulk_u64(&mut desc, nbans as u64);
                let limits: Vec<Limit> = limits.map(|l| Limit { cost: l.limit.cost.max(1), ..l.limit }).collect();
                for l in &limits {
                    let algo = match l.algorithm {
                        Algorithm::Gcra => 0,
                        Algorithm::SlidingWindow => 1,
                    };
                    let params = [algo, l.interval_us(), l.period_us(), l.burst, l.cost, l.quota()];
                    let index = match self.table.iter().position(|t| *t == params) {
                        Some(i) => i,
                        None => {
                            self.table.push(params);
                            self.table.len() - 1
                        }
                    };
                    bulk_u64(&mut desc, index as u64 + 1);
                }
                self.groups.push(Group {
                    hash: h.0,
                    id: id.clone(),
                    desc,
                    split,
                    nkeys: nlimits + nbans,
                    limits,
                    count: 0,
                });
                self.groups.len() - 1
            }
        };
        self.members.push(g);
        self.groups[g].count += 1;
    }

    /// The EVALSHA of `script` (LIMIT_SCRIPT) for the batch (`Script::eval_for` gives the
    /// EVAL fallback). `now_us` 0 lets Redis `TIME` decide (tests pass a fixed clock);
    /// `deadline_us` (Redis's clock, 0 for none) is when the batch stops being worth applying.
    pub fn command(&self, script: &Script, now_us: u64, deadline_us: u64) -> Vec<u8> {
        let nkeys: usize = self.groups.iter().map(|g| g.nkeys).sum();
        // now, the deadline, the limits' table, the group count, then per group: count,
        // n_limits, n_bans and an index per limit.
        let nargs: usize = 4 + 6 * self.table.len() + self.groups.iter().map(|g| 3 + g.limits.len()).sum::<usize>();
        let size: usize = self.groups.iter().map(|g| g.desc.len() + 24).sum();
        let mut out = Vec::with_capacity(96 + size);
        push_array_header(&mut out, 3 + nkeys + nargs);
        push_bulk(&mut out, b"EVALSHA");
        push_bulk(&mut out, script.sha.as_bytes());
        {
            bulk_u64(&mut out, nkeys as u64);
            for g in &self.groups {
                out.extend_from_slice(&g.desc[..g.split]);
            }
            bulk_u64(&mut out, now_us);
            bulk_u64(&mut out, deadline_us);
            bulk_u64(&mut out, self.table.len() as u64);
            for v in self.table.iter().flatten() {
                bulk_u64(&mut out, *v);
            }
            bulk_u64(&mut out, self.groups.len() as u64);
            for g in &self.groups {
                bulk_u64(&mut out, g.count as u64);
                out.extend_from_slice(&g.desc[g.split..]);
            }
        }
        out
    }

    /// The most the script can answer for this batch: `now`, then per group a ban or each
    /// limit's state (one integer for GCRA, three for the sliding window). The connection
    /// refuses anything larger before buffering it.
    pub fn reply_bound(&self) -> Bound {
        let states: usize =
            self.groups.iter().map(|g| 1 + g.limits.iter().map(|l| state_len(l.algorithm)).sum::<usize>()).sum();
        Bound::integers(1 + states)
    }

    /// Turns the script's answer (`now` and, per group, a ban or the states the group found)
    /// into one [`LimitReply`] per request, in push order: each group's requests are decided
    /// in turn by the Rust arithmetic, exactly as the script admitted them.
    pub fn decode(&self, reply: &Reply) -> Result<Vec<LimitReply>, BatchError> {
        self.decode_with(reply, |r, _| r).map(|(_, replies)| replies)
    }

    /// `decode`, with what a refund needs (a Redis Cluster, see `cluster.rs`): Redis's time
    /// and, per request, each of its limits' state right after it, as the replay left it.
    pub fn decode_detailed(&self, reply: &Reply) -> Result<(u64, Vec<Detailed>), BatchError> {
        self.decode_with(reply, |r, states| (r, states.to_vec()))
    }

    fn decode_with<T>(
        &self,
        reply: &Reply,
        mut each: impl FnMut(LimitReply, &[State]) -> T,
    ) -> Result<(u64, Vec<T>), BatchError> {
        let Reply::Array(Some(items)) = reply else {
            return Err(BatchError::Malformed(format!("unexpected reply {reply:?}")));
        };
        if let [Reply::Integer(now), Reply::Integer(-1)] = items.as_slice() {
            return Err(BatchError::Late(*now as u64));
        }
        let mut ints = items.iter().map(|i| match i {
            Reply::Integer(v) if *v >= 0 => Ok(*v as u64),
            other => Err(BatchError::Malformed(format!("unexpected element {other:?}"))),
        });
        let mut next = || ints.next().unwrap_or_else(|| Err(BatchError::Malformed("reply too short".to_string())));
        let now = next()?;
        let mut found: Vec<Result<Vec<State>, u64>> = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let banned = next()?;
            if banned > 0 {
                found.push(Err(banned));
                continue;
            }
            let states = g
                .limits
                .iter()
                .map(|l| match l.algorithm {
                    Algorithm::Gcra => Ok([next()?, 0, 0]),
                    Algorithm::SlidingWindow => Ok([next()?, next()?, next()?]),
                })
                .collect::<Result<_, BatchError>>()?;
            found.push(Ok(states));
        }
        if ints.next().is_some() {
            return Err(BatchError::Malformed("reply too long".to_string()));
        }
        let replies = self
            .members
            .iter()
            .map(|&g| match &mut found[g] {
                Err(ms) => each(LimitReply::Banned(*ms), &[]),
                Ok(states) => {
                    let reply = LimitReply::Decisions(admit(&self.groups[g].limits, states, now).0);
                    each(reply, states)
                }
            })
            .collect();
        Ok((now, replies))
    }
}

fn state_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Gcra => 1,
        Algorithm::SlidingWindow => 3,
    }
}

/// Why a LIMIT_SCRIPT reply decides nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The batch reached Redis (whose clock said this) after its deadline: nothing written.
    #[error("the batch reached redis after its deadline and was not applied")]
    Late(u64),
    #[error("unexpected redis reply: {0}")]
    Malformed(String),
}

/// The script's clock (`TIME`, in µs) from the first element of its reply, for [`RedisClock`].
pub fn reply_time(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Array(Some(items)) => match items.first() {
            Some(Reply::Integer(now)) if *now > 0 => Some(*now as u64),
            _ => None,
        },
        _ => None,
    }
}

/// Maps the worker's monotonic millisecond clock onto Redis's (`TIME`, µs), learnt from each
/// script reply, so that a batch can carry its deadline in the clock the script reads.
///
/// A reply computed at Redis time `t` and received at local time `r` was computed no later
/// than `r`, so `t - r` is at most the true offset (plus the local clock's millisecond
/// truncation, which [`RedisClock::MARGIN_US`] covers): a deadline mapped with it never falls
/// after the moment the worker gives up. The script may then call a batch late that was just
/// in time, and its requests follow the fail policy; it never applies one whose requests the
/// fail policy already answered.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedisClock {
    offset_us: Option<i64>,
}

impl RedisClock {
    pub const MARGIN_US: u64 = 2_000;

    /// A reply said Redis's time was `redis_us`; it was received at local `received_ms`.
    pub fn observe(&mut self, redis_us: u64, received_ms: u64) {
        self.offset_us = Some(redis_us as i64 - (received_ms as i64).saturating_mul(1000));
    }

    /// The local deadline `deadline_ms` in Redis's clock; 0 (no deadline) until a reply has
    /// told the offset.
    pub fn deadline_us(&self, deadline_ms: u64) -> u64 {
        let Some(offset) = self.offset_us else { return 0 };
        let at = (deadline_ms as i64).saturating_mul(1000).saturating_add(offset) - Self::MARGIN_US as i64;
        at.max(1) as u64
    }
}

/// One request's answer and its limits' states right after it ([`Batch::decode_detailed`]).
pub type Detailed = (LimitReply, Vec<State>);

/// What LIMIT_SCRIPT answered for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitReply {
    /// A ban key is live for this many ms more.
    Banned(u64),
    Decisions(Decisions),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Outcome;
    use crate::parse::rate;
    use crate::redis::resp;

    fn decode(bytes: &[u8]) -> Result<Option<(Reply, usize)>, resp::ProtocolError> {
        resp::decode(bytes, resp::Bound { bytes: 1 << 20, elements: 1 << 10 })
    }

    #[test]
    fn keys_carry_the_client_key_as_hash_tag() {
        use crate::redis::cluster::slot;
        for key in [&b"10.0.0.1"[..], &[127, 0, 0, 1], b"a}b", b""] {
            assert_eq!(key_slot(key), slot(&redis_key("api", key, "")), "{key:?}");
            assert_eq!(key_slot(key), slot(&redis_key("web", key, ":ban")), "{key:?}");
        }
        assert_eq!(redis_key("api", b"10.0.0.1", ""), b"shield:{10.0.0.1}:api".to_vec());
        assert_eq!(redis_key("api", &[127, 0, 0, 1], ":ban"), b"shield:{x7f000001}:api:ban".to_vec());
        assert_eq!(redis_key("api", b"a}b", ""), b"shield:{x617d62}:api".to_vec());
    }

    fn push(b: &mut Batch, limits: &[LimitKey], bans: &[BanKey]) {
        b.push(limits.iter().copied(), bans.iter().copied());
    }

    fn gcra(r: &str, burst: u64) -> Limit {
        Limit { algorithm: Algorithm::Gcra, rate: rate(r).unwrap(), burst, delay: 0, cost: 1 }
    }

    #[test]
    fn batches_are_one_evalsha_with_eval_fallback() {
        let s = Script::new(LIMIT_SCRIPT);
        assert_eq!(s.sha.len(), 40);
        let mut b = Batch::default();
        push(&mut b, &[LimitKey { zone: "z", key: b"k", limit: gcra("10r/s", 5) }], &[]);
        push(
            &mut b,
            &[LimitKey { zone: "z", key: &[1, 2], limit: gcra("10r/s", 5) }],
            &[BanKey { zone: "b", key: b"k" }],
        );
        assert_eq!(b.len(), 2);
        let sha = b.command(&s, 7, 9);
        let eval = s.eval_for(&sha).expect("an EVALSHA of this script");
        let Some((Reply::Array(Some(parts)), used)) = decode(&sha).unwrap() else { panic!() };
        assert_eq!(used, sha.len());
        let text: Vec<String> = parts
            .iter()
            .map(|p| match p {
                Reply::Bulk(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(text[0], "EVALSHA");
        assert_eq!(text[1], s.sha);
        assert_eq!(text[2..6], ["3", "shield:{k}:z", "shield:{x0102}:z", "shield:{k}:b:ban"]);
        // now, deadline, one distinct limit (6 parameters), two groups: (count 1, 1 limit, 0
        // bans, limit #1) and (1, 1, 1, #1).
        assert_eq!(
            text[6..],
            ["7", "9", "1", "0", "100000", "1000000", "5", "1", "6", "2", "1", "1", "0", "1", "1", "1", "1", "1"]
        );
        let Some((Reply::Array(Some(eparts)), used)) = decode(&eval).unwrap() else { panic!() };
        assert_eq!(used, eval.len());
        assert_eq!(eparts[0], Reply::Bulk(Some(b"EVAL".to_vec())));
        assert_eq!(eparts[1], Reply::Bulk(Some(LIMIT_SCRIPT.as_bytes().to_vec())));
        assert_eq!(eparts[2..], parts[2..], "same keys and arguments");
        assert_eq!(Script::new(BAN_SCRIPT).eval_for(&sha), None, "another script's EVALSHA");
        let ban = Script::new(BAN_SCRIPT).evalsha(&[b"a".to_vec()], &["1".to_string()]);
        let Some((Reply::Array(Some(bparts)), _)) = decode(&Script::new(BAN_SCRIPT).eval_for(&ban).unwrap()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            bparts[2..],
            [Reply::Bulk(Some(b"1".to_vec())), Reply::Bulk(Some(b"a".to_vec())), Reply::Bulk(Some(b"1".to_vec()))]
        );
    }

    #[test]
    fn identical_requests_share_one_group() {
        let s = Script::new(LIMIT_SCRIPT);
        let mut b = Batch::default();
        let (x, y) = (
            [LimitKey { zone: "z", key: b"x", limit: gcra("10r/s", 5) }],
            [LimitKey { zone: "z", key: b"y", limit: gcra("10r/s", 5) }],
        );
        for limits in [&x, &y, &x, &x] {
            push(&mut b, limits, &[]);
        }
        let Some((Reply::Array(Some(parts)), _)) = decode(&b.command(&s, 0, 0)).unwrap() else { panic!() };
        assert_eq!(parts[2], Reply::Bulk(Some(b"2".to_vec())), "two distinct keys");
        assert_eq!(parts[7], Reply::Bulk(Some(b"1".to_vec())), "one distinct limit");
        assert_eq!(parts[14], Reply::Bulk(Some(b"2".to_vec())), "two groups");
        assert_eq!(parts[15], Reply::Bulk(Some(b"3".to_vec())), "x three times");
        // Redis reports now and the state each group found (x first: it arrived first); each
        // group's requests are replayed in turn and answered in push order.
        let now = 1_000_000_000;
        let got = b.decode(&ints(&[now, 0, 0, 0, now + 200_000])).unwrap();
        let remaining: Vec<u64> = got
            .iter()
            .map(|r| match r {
                LimitReply::Decisions(d) => d[0].remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        // 10r/s burst 5: x starts empty (5, 4, 3 left); y found two intervals in use (3 left).
        assert_eq!(remaining, [5, 3, 4, 3]);
    }

    fn ints(v: &[i64]) -> Reply {
        Reply::Array(Some(v.iter().map(|&v| Reply::Integer(v)).collect()))
    }

    #[test]
    fn replies_replay_each_group_from_its_states_two_phase() {
        let mut b = Batch::default();
        let sliding = Limit { algorithm: Algorithm::SlidingWindow, ..gcra("2r/s", 0) };
        let loose = Limit { delay: 5, ..gcra("1r/s", 5) };
        let two = [LimitKey { zone: "a", key: b"k", limit: loose }, LimitKey { zone: "b", key: b"k", limit: sliding }];
        for _ in 0..4 {
            push(&mut b, &two, &[]);
        }
        push(&mut b, &two[..1], &[BanKey { zone: "c", key: b"k" }]);
        let now = 5_000_000;
        // Group 1 found both keys empty (sliding: start, previous, current); group 2 is banned.
        let got = b.decode(&ints(&[now, 0, 0, 0, 0, 0, 1500])).unwrap();
        let d = |i: usize| match &got[i] {
            LimitReply::Decisions(d) => d.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((d(0)[0].remaining, d(0)[1].outcome), (5, Outcome::Passed));
        assert_eq!((d(1)[0].remaining, d(1)[1].outcome), (4, Outcome::Passed));
        // The window's quota (2) is used up: the third and fourth requests are rejected, and
        // the GCRA limit, which would admit them, is not charged (3 left both times).
        assert_eq!((d(2)[0].outcome, d(2)[0].remaining, d(2)[1].outcome), (Outcome::Passed, 3, Outcome::Rejected));
        assert_eq!(d(3), d(2));
        assert_eq!(got[4], LimitReply::Banned(1500));
        assert!(b.decode(&ints(&[now, 0, 0, 0, 0])).is_err(), "too short");
        assert!(b.decode(&ints(&[now, 0, 0, 0, 0, 0, 1500, 0])).is_err(), "too long");
        assert!(b.decode(&ints(&[now, 0, -1, 0, 0, 0, 1500])).is_err(), "negative");
        assert!(b.decode(&Reply::Integer(1)).is_err());
        assert_eq!(b.decode(&ints(&[now, -1])), Err(BatchError::Late(now as u64)), "a late batch");
        assert_eq!(reply_time(&ints(&[now, -1])), Some(now as u64));
    }

    #[test]
    fn the_reply_bound_is_what_the_script_can_answer() {
        let mut b = Batch::default();
        let sliding = Limit { algorithm: Algorithm::SlidingWindow, ..gcra("2r/s", 0) };
        let two = [
            LimitKey { zone: "a", key: b"k", limit: gcra("1r/s", 5) },
            LimitKey { zone: "b", key: b"k", limit: sliding },
        ];
        for _ in 0..100 {
            push(&mut b, &two, &[]);
        }
        push(&mut b, &two[..1], &[BanKey { zone: "c", key: b"k" }]);
        // now, then {0, tat, start, previous, current} and {0, tat}: 8 integers, however many
        // requests each group holds.
        let bound = b.reply_bound();
        assert_eq!(bound.elements, 8);
        let most = ints(&[i64::MAX; 8]);
        let mut wire = Vec::new();
        push_array_header(&mut wire, 8);
        for _ in 0..8 {
            wire.extend_from_slice(format!(":{}\r\n", i64::MAX).as_bytes());
        }
        assert_eq!(resp::decode(&wire, bound).unwrap().map(|(r, _)| r), Some(most));
        wire.splice(..2, *b"*9");
        assert!(resp::decode(&wire, bound).is_err(), "one more element than the script returns");
    }

    #[test]
    fn the_redis_clock_never_maps_a_deadline_past_the_local_one() {
        let mut clock = RedisClock::default();
        assert_eq!(clock.deadline_us(5_000), 0, "no deadline before Redis told its time");
        // Redis said 1_000_000_000 µs; the reply arrived at local 20_000 ms (it was computed
        // earlier, so the offset is at most 1_000_000_000 - 20_000_000 µs).
        clock.observe(1_000_000_000, 20_000);
        assert_eq!(clock.deadline_us(20_050), 1_000_000_000 + 50_000 - RedisClock::MARGIN_US);
        // A Redis clock behind the worker's.
        clock.observe(5_000_000, 20_000);
        assert_eq!(clock.deadline_us(20_050), 5_000_000 + 50_000 - RedisClock::MARGIN_US);
    }
}
