//! Rate limits on a Redis Cluster, pure: what a request whose keys live in several slots
//! becomes, and how its answer is put back together.
//!
//! A script runs on one slot, so a request is admitted atomically only by the limits (and
//! bans) whose keys share a slot; all the zones of one client key always do (the key is the
//! hash tag, see `script::redis_key`). A request limited by *different* keys (a per-address
//! and a per-user limit) is split into one part per slot ([`split`]), each part decided
//! atomically on its slot in that slot's batch, all parts in the same round trip. Then
//! ([`combine`]):
//!
//! - the request is admitted only if every part admitted it; its decisions are the parts',
//!   in the request's own order; a ban on any slot bans it;
//! - a part that admitted (and so charged) a request that another part rejected or banned is
//!   **refunded** ([`REFUND_SCRIPT`]): the charge is taken back exactly when no request since
//!   could have been decided differently because of it, and left in place otherwise — so a
//!   refund can cost a later request a spurious rejection but never admits one too many.
//!   (Checking every slot first and committing after would admit too many: another node can
//!   charge between the check and the commit.)

use super::script::{redis_key, LimitReply};
use super::{Algorithm, Decision, Decisions, Limit, Outcome, State};

/// One slot's share of a request: indices into the request's limits and bans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub slot: u16,
    pub limits: Vec<usize>,
    pub bans: Vec<usize>,
}

/// The request's keys by slot, in order of first appearance; `None` if they all share one
/// slot (the request goes whole, atomic, to that slot's batch).
pub fn split(limit_slots: &[u16], ban_slots: &[u16]) -> Option<Vec<Part>> {
    let first = limit_slots.first().or(ban_slots.first())?;
    if limit_slots.iter().chain(ban_slots).all(|s| s == first) {
        return None;
    }
    let mut parts: Vec<Part> = Vec::new();
    let mut part_of = |slot: u16| match parts.iter().position(|p| p.slot == slot) {
        Some(i) => i,
        None => {
            parts.push(Part { slot, limits: Vec::new(), bans: Vec::new() });
            parts.len() - 1
        }
    };
    let mut placed = Vec::with_capacity(limit_slots.len() + ban_slots.len());
    for (i, &s) in limit_slots.iter().enumerate() {
        placed.push((part_of(s), true, i));
    }
    for (i, &s) in ban_slots.iter().enumerate() {
        placed.push((part_of(s), false, i));
    }
    for (p, limit, i) in placed {
        match limit {
            true => parts[p].limits.push(i),
            false => parts[p].bans.push(i),
        }
    }
    Some(parts)
}

/// What one part's slot answered: the reply for its limits and bans, Redis's time, and, when
/// it admitted, each of its limits' state right after this request (what a refund needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartAnswer {
    pub reply: LimitReply,
    pub now: u64,
    pub after: Vec<State>,
}

/// The request's answer, and the parts to refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined {
    pub reply: LimitReply,
    pub refund: Vec<usize>,
}

fn admitted(reply: &LimitReply) -> bool {
    match reply {
        LimitReply::Banned(_) => false,
        LimitReply::Decisions(d) => d.iter().all(|d| d.outcome != Outcome::Rejected),
    }
}

/// Puts the parts' answers back together (see the module's comment). `answers[i]` is part i's.
pub fn combine(parts: &[Part], answers: &[PartAnswer], n_limits: usize) -> Combined {
    let banned = answers
        .iter()
        .filter_map(|a| match a.reply {
            LimitReply::Banned(ms) => Some(ms),
            LimitReply::Decisions(_) => None,
        })
        .max();
    let rejected = banned.is_some() || answers.iter().any(|a| !admitted(&a.reply));
    let refund = match rejected {
        true => (0..parts.len()).filter(|&i| !parts[i].limits.is_empty() && admitted(&answers[i].reply)).collect(),
        false => Vec::new(),
    };
    if let Some(ms) = banned {
        return Combined { reply: LimitReply::Banned(ms), refund };
    }
    let passed = Decision { outcome: Outcome::Passed, remaining: 0, reset_us: 0, wait_us: 0 };
    let mut decisions = vec![passed; n_limits];
    for (part, answer) in parts.iter().zip(answers) {
        if let LimitReply::Decisions(d) = &answer.reply {
            for (&i, d) in part.limits.iter().zip(d.iter()) {
                if let Some(slot) = decisions.get_mut(i) {
                    *slot = *d;
                }
            }
        }
    }
    Combined { reply: LimitReply::Decisions(Decisions::from(decisions)), refund }
}

/// Takes back one admitted request's charge on one slot. KEYS: the part's limit keys; ARGV,
/// 4 per key: algorithm (0 GCRA, 1 sliding window), the charge (GCRA: cost x interval in µs;
/// sliding window: cost), the mark (GCRA: the key's TAT right after the charge; sliding
/// window: the start of the window charged) and the window (sliding window, µs).
///
/// - GCRA: while the TAT right after the charge is still ahead of now, every request since
///   found the TAT ahead of its own time (only refunds lower it, each by a charge that was
///   added), so each added its increment to a TAT that included this charge: subtracting it
///   is exact, in whatever order the refunds of one batch come. Once that TAT is behind now,
///   the charge has drained away on its own: nothing to take back.
/// - Sliding window: a window's count is a sum, so the charge comes off the window it went
///   to, whether that is still the current one or, rolled, the previous one; older, it no
///   longer counts.
pub const REFUND_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local tonumber, floor, max = tonumber, math.floor, math.max
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local charge, mark, w = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local v = redis.call('GET', KEYS[i])
  if v and ARGV[b + 1] == '0' then
    local tat = tonumber(v)
    if tat and mark >= now then
      tat = tat - charge
      if tat > now then
        redis.call('SET', KEYS[i], string.format('%.0f', tat), 'PX', floor((tat - now) / 1000) + 1000)
      else
        redis.call('DEL', KEYS[i])
      end
    end
  elseif v then
    local x, y, z = string.match(v, '^(%d+) (%d+) (%d+)$')
    x, y, z = tonumber(x), tonumber(y), tonumber(z)
    if x == mark then
      z = max(0, z - charge)
    elseif x and x == mark + w then
      y = max(0, y - charge)
    else
      x = nil
    end
    if x then
      redis.call('SET', KEYS[i], string.format('%.0f %.0f %.0f', x, y, z), 'KEEPTTL')
    end
  end
end
return #KEYS
"#;

/// One limit of a part to refund: its zone, key and parameters, and its state right after the
/// charge.
pub struct Refund<'a> {
    pub zone: &'a str,
    pub key: &'a [u8],
    pub limit: Limit,
    pub after: State,
}

/// KEYS and ARGV of [`REFUND_SCRIPT`] for these limits.
pub fn refund_args<'a>(limits: impl IntoIterator<Item = Refund<'a>>) -> (Vec<Vec<u8>>, Vec<String>) {
    let (mut keys, mut args) = (Vec::new(), Vec::new());
    for r in limits {
        keys.push(redis_key(r.zone, r.key, ""));
        let cost = r.limit.cost.max(1);
        let (algo, charge, window) = match r.limit.algorithm {
            Algorithm::Gcra => (0, cost.saturating_mul(r.limit.interval_us()), 0),
            Algorithm::SlidingWindow => (1, cost, r.limit.period_us()),
        };
        args.extend([algo.to_string(), charge.to_string(), r.after[0].to_string(), window.to_string()]);
    }
    (keys, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_goes_whole() {
        assert_eq!(split(&[7, 7], &[7]), None);
        assert_eq!(split(&[], &[3]), None);
        assert_eq!(split(&[], &[]), None);
    }

    #[test]
    fn several_slots_split_in_order() {
        let parts = split(&[5, 9, 5], &[9, 2]).unwrap();
        assert_eq!(
            parts,
            vec![
                Part { slot: 5, limits: vec![0, 2], bans: vec![] },
                Part { slot: 9, limits: vec![1], bans: vec![0] },
                Part { slot: 2, limits: vec![], bans: vec![1] },
            ]
        );
    }

    fn decisions(outcomes: &[(Outcome, u64)]) -> LimitReply {
        let d: Vec<Decision> = outcomes
            .iter()
            .map(|&(outcome, remaining)| Decision { outcome, remaining, reset_us: 0, wait_us: 0 })
            .collect();
        LimitReply::Decisions(Decisions::from(d))
    }

    fn answer(reply: LimitReply) -> PartAnswer {
        PartAnswer { reply, now: 0, after: Vec::new() }
    }

    #[test]
    fn all_parts_admit_then_nothing_is_refunded() {
        let parts = split(&[1, 2, 1], &[]).unwrap();
        let answers = [
            answer(decisions(&[(Outcome::Passed, 4), (Outcome::Passed, 3)])),
            answer(decisions(&[(Outcome::Delayed, 1)])),
        ];
        let c = combine(&parts, &answers, 3);
        assert_eq!(c.refund, Vec::<usize>::new());
        let LimitReply::Decisions(d) = c.reply else { panic!() };
        let got: Vec<(Outcome, u64)> = d.iter().map(|d| (d.outcome, d.remaining)).collect();
        assert_eq!(got, [(Outcome::Passed, 4), (Outcome::Delayed, 1), (Outcome::Passed, 3)], "the request's order");
    }

    #[test]
    fn a_rejection_on_one_slot_refunds_the_others() {
        let parts = split(&[1, 2, 3], &[]).unwrap();
        let answers = [
            answer(decisions(&[(Outcome::Passed, 4)])),
            answer(decisions(&[(Outcome::Rejected, 0)])),
            answer(decisions(&[(Outcome::Passed, 9)])),
        ];
        let c = combine(&parts, &answers, 3);
        assert_eq!(c.refund, vec![0, 2], "the rejecting slot charged nothing itself");
        let LimitReply::Decisions(d) = c.reply else { panic!() };
        assert_eq!(d[1].outcome, Outcome::Rejected);
    }

    #[test]
    fn a_ban_on_one_slot_bans_and_refunds() {
        let parts = split(&[1], &[2, 3]).unwrap();
        let answers = [
            answer(decisions(&[(Outcome::Passed, 4)])),
            answer(LimitReply::Banned(500)),
            answer(LimitReply::Banned(900)),
        ];
        let c = combine(&parts, &answers, 1);
        assert_eq!(c, Combined { reply: LimitReply::Banned(900), refund: vec![0] });
        // A ban-only part admitting charges nothing: nothing to refund there.
        let parts = split(&[1], &[2]).unwrap();
        let c = combine(&parts, &[answer(decisions(&[(Outcome::Rejected, 0)])), answer(decisions(&[]))], 1);
        assert_eq!(c.refund, Vec::<usize>::new());
    }

    #[test]
    fn refund_arguments_name_the_charge_and_its_mark() {
        let gcra = Limit {
            algorithm: Algorithm::Gcra,
            rate: crate::parse::rate("10r/s").unwrap(),
            burst: 5,
            delay: 0,
            cost: 2,
        };
        let sliding = Limit { algorithm: Algorithm::SlidingWindow, cost: 0, ..gcra };
        let (keys, args) = refund_args([
            Refund { zone: "a", key: b"k", limit: gcra, after: [1_700_000, 0, 0] },
            Refund { zone: "b", key: b"u", limit: sliding, after: [1_000_000, 3, 4] },
        ]);
        assert_eq!(keys, [b"shield:{k}:a".to_vec(), b"shield:{u}:b".to_vec()]);
        assert_eq!(args, ["0", "200000", "1700000", "0", "1", "1", "1000000", "1000000"]);
    }
}
