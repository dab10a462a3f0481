//! Runs a rule set over one request, phases 1 and 2, the way ModSecurity does:
//! rules in file order per phase; a rule matches when any of its target values (after its
//! transformation chain) satisfies its operator; a chain matches when every link does.
//! On a full match the links' `setvar`/`ctl` actions run in order, then the starter's
//! disruptive action (`block` is the `SecDefaultAction` in force where the rule was read),
//! and `skipAfter` jumps past the named `SecMarker`. Anomaly scoring is not built in: the
//! CRS expresses it itself (`setvar:tx.anomaly_score_pl1=+...`, rules 949060-949110), and
//! this evaluator runs it.
//!
//! Collections: TX (per request), IP/GLOBAL/SESSION/USER/RESOURCE (per request too: nothing
//! persists across requests here). Macros: `%{tx.x}`, `%{MATCHED_VAR}`, `%{request_headers.host}`,
//! `%{rule.id}`... unknown ones expand to the empty string.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::model::*;
use super::operators::{atoi, Captures};
use super::request::{Entry, Parsed, Request};
use super::transforms::SecTransform;
use crate::filter::transform::MAX_TRANSFORMED;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub rule_id: u32,
    pub status: u16,
    /// False under `SecRuleEngine DetectionOnly` (or `ctl:ruleEngine=DetectionOnly`): what
    /// would have been blocked.
    pub enforced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRule {
    pub id: u32,
    pub phase: Phase,
    pub msg: String,
    /// Not `nolog` (nor under a `SecDefaultAction` with `nolog`): a detection to report,
    /// not bookkeeping (initialisation, paranoia skips, score sums).
    pub logged: bool,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub block: Option<Block>,
    pub allowed: bool,
    pub matched: Vec<MatchedRule>,
    /// The TX collection at the end (keys lower case).
    pub tx: BTreeMap<String, Vec<u8>>,
}

impl Outcome {
    pub fn tx_number(&self, key: &str) -> i64 {
        self.tx.get(key).map_or(0, |v| atoi(v))
    }

    /// The CRS's total inbound score (`tx.anomaly_score`, summed by rules 949060-949063).
    pub fn anomaly_score(&self) -> i64 {
        self.tx_number("anomaly_score")
    }

    pub fn matched_ids(&self) -> Vec<u32> {
        self.matched.iter().map(|m| m.id).collect()
    }
}

/// Evaluates phases 1 and 2 of `set` over `req`.
pub fn evaluate(set: &RuleSet, req: &Request) -> Outcome {
    evaluate_profiled(set, req, None)
}

/// Time spent per rule id (evaluation of its links and actions), summed over calls.
pub type Profile = HashMap<u32, std::time::Duration>;

/// `evaluate`, adding each rule's time to `profile` when one is given (for the per-rule cost
/// report; the clock is read only then).
pub fn evaluate_profiled(set: &RuleSet, req: &Request, mut profile: Option<&mut Profile>) -> Outcome {
    let mut t = Transaction {
        set,
        req,
        parsed: req.parse_headers(),
        phase: Phase::RequestHeaders,
        // The CRS keeps ~100 TX variables: room for them up front, not a rehash every doubling.
        collections: {
            let mut c: Map<String, Map<String, Vec<u8>>> = Map::default();
            c.insert("tx".to_string(), Map::with_capacity_and_hasher(256, Default::default()));
            c
        },
        matched_var: (String::new(), Vec::new()),
        matched_vars: Vec::new(),
        removed_ids: Vec::new(),
        removed_tags: Vec::new(),
        removed_targets: Vec::new(),
        mode: set.engine.unwrap_or(EngineMode::On),
        outcome: Outcome::default(),
        current: None,
        cache: Rc::default(),
        memo: Map::with_capacity_and_hasher(256, Default::default()),
        gate_hits: Vec::new(),
    };
    for phase in [Phase::RequestHeaders, Phase::RequestBody] {
        if t.mode == EngineMode::Off || t.outcome.allowed || t.outcome.block.as_ref().is_some_and(|b| b.enforced) {
            break;
        }
        t.phase = phase;
        if phase == Phase::RequestBody {
            req.parse_body(&mut t.parsed);
        }
        t.memo.clear();
        t.gate_hits = vec![None; set.gates.len()];
        t.cache = Rc::new(t.build_cache());
        t.run_phase(profile.as_deref_mut());
    }
    t.outcome.tx = t.collections.remove("tx").unwrap_or_default().into_iter().collect();
    t.outcome
}

/// Which rules a `ctl:ruleRemoveTarget*` applies to.
enum RuleSel {
    Ids(Vec<(u32, u32)>),
    Tag(String),
}

struct Transaction<'a> {
    set: &'a RuleSet,
    req: &'a Request,
    parsed: Parsed,
    phase: Phase,
    collections: Map<String, Map<String, Vec<u8>>>,
    matched_var: (String, Vec<u8>),
    matched_vars: Vec<(String, Vec<u8>)>,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    removed_targets: Vec<(RuleSel, Target)>,
    mode: EngineMode,
    outcome: Outcome,
    current: Option<&'a Rule>,
    cache: Rc<Cache>,
    /// Transformed request values of this phase, by (address, length) of the cached value.
    memo: Map<(usize, usize), Vec<Memoised>>,
    /// Per gate group, which of its patterns match some value this phase (computed when the
    /// first member is reached).
    gate_hits: Vec<Option<Vec<bool>>>,
}

/// One value through one transformation chain.
type Memoised = (Vec<SecTransform>, Rc<[u8]>);

/// Request variables of the current phase, by name.
type Cache = Map<&'static str, Vec<Entry>>;

/// The evaluator's maps are keyed by rule-set names and value addresses and live for one
/// request: a multiply-rotate hash (FxHash's) instead of SipHash, which showed at ~6% of a
/// CRS request. Collision flooding needs many keys, and keys come from the rule set (at most
/// one per `setvar` that runs), not from the request's own argument count.
type Map<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FastHasher>>;

#[derive(Default)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One value a link inspects; the name (`ARGS:q`) is only built when it matches.
struct Value<'c> {
    collection: &'c str,
    key: Cow<'c, [u8]>,
    value: Cow<'c, [u8]>,
}

/// The key in `Transaction::collections` of a collection rules write to (`TX` is `tx`).
fn stored_collection(name: &str) -> Option<&'static str> {
    Some(match name {
        "TX" => "tx",
        "IP" => "ip",
        "GLOBAL" => "global",
        "SESSION" => "session",
        "USER" => "user",
        "RESOURCE" => "resource",
        _ => return None,
    })
}

fn in_ranges(ranges: &[(u32, u32)], id: u32) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&id))
}

impl<'a> Transaction<'a> {
    fn run_phase(&mut self, mut profile: Option<&mut Profile>) {
        let mut skip_to: Option<&str> = None;
        let mut skip_n = 0u32;
        for item in &self.set.items {
            let rule = match item {
                Item::Marker(m) => {
                    if skip_to == Some(m.as_str()) {
                        skip_to = None;
                    }
                    continue;
                }
                Item::Rule(r) if r.phase == self.phase => r,
                Item::Rule(_) => continue,
            };
            if skip_to.is_some() {
                continue;
            }
            if skip_n > 0 {
                skip_n -= 1;
                continue;
            }
            if in_ranges(&self.removed_ids, rule.id) || rule.tags().iter().any(|t| self.removed_tags.contains(t)) {
                continue;
            }
            let started = profile.is_some().then(std::time::Instant::now);
            let matched = rule.gate.is_none_or(|(g, i)| self.gate_open(g, i)) && self.run_rule(rule);
            if let (Some(p), Some(s)) = (profile.as_deref_mut(), started) {
                *p.entry(rule.id).or_default() += s.elapsed();
            }
            if !matched {
                continue;
            }
            let starter = &rule.links[0].actions;
            skip_to = starter.skip_after.as_deref();
            skip_n = starter.skip.unwrap_or(0);
            // The parser resolved `block` (and no action) to SecDefaultAction's.
            match starter.disruptive.unwrap_or(Disruptive::Pass) {
                Disruptive::Pass | Disruptive::Block => {}
                Disruptive::Allow => {
                    self.outcome.allowed = true;
                    return;
                }
                Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect => {
                    let enforced = self.mode == EngineMode::On;
                    if self.outcome.block.is_none() {
                        self.outcome.block =
                            Some(Block { rule_id: rule.id, status: starter.status.unwrap_or(403), enforced });
                    }
                    if enforced {
                        return;
                    }
                }
            }
            if self.mode == EngineMode::Off {
                return;
            }
        }
    }

    /// True when every link of the rule matches. Each link's `setvar`/`ctl` run as soon as
    /// that link matches, before the next link is evaluated, whatever the rest of the chain
    /// does (ModSecurity's "actions independent of the chained rule result"): the CRS reads a
    /// starter's `setvar:tx.content_type=...` in the next link (920420), and keeps score
    /// increments in the last link for that reason.
    fn run_rule(&mut self, rule: &'a Rule) -> bool {
        self.current = Some(rule);
        // A rule without a chain runs its setvars once per matching value, as ModSecurity
        // does (CRS counts multipart headers that way; an anomaly score grows per match); a
        // chain's links run theirs once, as each link matches.
        let per_match = rule.links.len() == 1;
        for link in &rule.links {
            if !self.link_matches(rule, link, per_match) {
                return false;
            }
            if !per_match {
                for sv in &link.actions.setvars {
                    self.setvar(sv);
                }
            }
            for ctl in &link.actions.ctls {
                self.ctl(ctl);
            }
        }
        let starter = &rule.links[0].actions;
        let msg = starter.msg.as_deref().map(|m| lossy(&self.expand(m))).unwrap_or_default();
        let logged = starter.log.unwrap_or(true);
        self.outcome.matched.push(MatchedRule { id: rule.id, phase: rule.phase, msg, logged });
        true
    }

    fn link_matches(&mut self, rule: &Rule, link: &RuleLink, per_match: bool) -> bool {
        // The parser already put SecDefaultAction's transformations in front.
        let chain: &[SecTransform] = &link.actions.transforms;
        let cache = Rc::clone(&self.cache);
        let values = if link.targets.is_empty() {
            vec![Value { collection: "", key: Cow::Borrowed(&[][..]), value: Cow::Borrowed(&[][..]) }]
        } else {
            self.target_values(rule, link, &cache)
        };
        let mut matched = false;
        let mut matched_vars = Vec::new();
        let mut memo_hold: Rc<[u8]>;
        for v in values {
            // One candidate (no allocation for the list) unless multiMatch asks for every step.
            let steps: Vec<Cow<[u8]>>;
            let one: [Cow<[u8]>; 1];
            let candidates: &[Cow<[u8]>] = if link.actions.multi_match {
                let mut list = vec![Cow::Borrowed(&v.value[..])];
                for t in chain {
                    let next = t.apply(list.last().map_or(&[][..], |c| c.as_ref()));
                    if list.last().map(|c| c.as_ref()) != Some(next.as_slice()) {
                        list.push(Cow::Owned(next));
                    }
                }
                steps = list;
                &steps
            } else if chain.is_empty() {
                // The raw value whole: operators are linear, and a value cut at an arbitrary
                // byte would fail validations (`@validateUrlEncoding` on `...%2`).
                one = [Cow::Borrowed(&v.value[..])];
                &one
            } else if let Cow::Borrowed(raw) = v.value {
                memo_hold = self.transformed(raw, chain);
                one = [Cow::Borrowed(&memo_hold[..])];
                &one
            } else {
                one = [Cow::Owned(super::transforms::apply_all(chain, &v.value))];
                &one
            };
            for value in candidates {
                let mut caps: Captures = Vec::new();
                let want = link.actions.capture.then_some(&mut caps);
                let hit = {
                    let expand = |s: &str| self.expand(s);
                    link.operator.matches(value, &expand, want)
                };
                if hit != link.negated {
                    matched = true;
                    if link.actions.capture && !caps.is_empty() {
                        let tx = self.collections.entry("tx".into()).or_default();
                        for i in 0..10 {
                            tx.remove(&i.to_string());
                        }
                        for (i, c) in caps.into_iter().enumerate() {
                            tx.insert(i.to_string(), c);
                        }
                    }
                    let name = if v.key.is_empty() {
                        v.collection.to_string()
                    } else {
                        format!("{}:{}", v.collection, lossy(&v.key))
                    };
                    self.matched_var = (name.clone(), value.to_vec());
                    matched_vars.push((name, value.to_vec()));
                    if per_match {
                        for sv in &link.actions.setvars {
                            self.setvar(sv);
                        }
                    }
                    break;
                }
            }
        }
        if matched {
            self.matched_vars = matched_vars;
        }
        matched
    }

    /// The values a link inspects, after its own and ctl-made exclusions. Request variables
    /// are borrowed from the phase's cache; TX and the other live collections are read now.
    fn target_values<'c>(&self, rule: &Rule, link: &'c RuleLink, cache: &'c Cache) -> Vec<Value<'c>> {
        let ctl_excluded = self.removed_targets.iter().filter(|(sel, _)| match sel {
            RuleSel::Ids(ids) => in_ranges(ids, rule.id),
            RuleSel::Tag(tag) => rule.tags().contains(tag),
        });
        let excludes: Vec<&Target> =
            link.targets.iter().filter(|t| t.exclude).chain(ctl_excluded.map(|(_, t)| t)).collect();
        let kept = |t: &Target, k: &[u8]| {
            t.selector.as_ref().is_none_or(|s| s.matches(k))
                && !excludes
                    .iter()
                    .any(|x| x.collection == t.collection && x.selector.as_ref().is_none_or(|s| s.matches(k)))
        };
        let mut out = Vec::new();
        for t in link.targets.iter().filter(|t| !t.exclude) {
            let start = out.len();
            match cache.get(t.collection.as_str()) {
                Some(entries) => out.extend(entries.iter().filter(|(k, _)| kept(t, k)).map(|(k, v)| Value {
                    collection: &t.collection,
                    key: Cow::Borrowed(k.as_slice()),
                    value: Cow::Borrowed(v.as_slice()),
                })),
                None => {
                    let owned = |k: &[u8], v: &[u8]| Value {
                        collection: &t.collection,
                        key: Cow::Owned(k.to_vec()),
                        value: Cow::Owned(v.to_vec()),
                    };
                    match (&t.selector, stored_collection(&t.collection).and_then(|n| self.collections.get(n))) {
                        // `TX:paranoia_level`: one lookup, not a copy of the collection.
                        (Some(Selector::Key(k)), Some(c)) => {
                            out.extend(c.get(k).filter(|_| kept(t, k.as_bytes())).map(|v| owned(k.as_bytes(), v)))
                        }
                        // `TX:/^header_name_/`: only the kept entries are copied.
                        (_, Some(c)) => out.extend(
                            c.iter().filter(|(k, _)| kept(t, k.as_bytes())).map(|(k, v)| owned(k.as_bytes(), v)),
                        ),
                        _ => out.extend(
                            self.collection(&t.collection).iter().filter(|(k, _)| kept(t, k)).map(|(k, v)| owned(k, v)),
                        ),
                    }
                }
            }
            if t.count {
                let n = out.len() - start;
                out.truncate(start);
                out.push(Value {
                    collection: &t.collection,
                    key: Cow::Borrowed(&[][..]),
                    value: Cow::Owned(n.to_string().into_bytes()),
                });
            }
        }
        out
    }

    /// Whether pattern `i` of gate group `g` matches any value the group's variables hold
    /// this phase (see `gate.rs`); false means the rule cannot match.
    fn gate_open(&mut self, g: usize, i: usize) -> bool {
        if let Some(hits) = &self.gate_hits[g] {
            return hits[i];
        }
        let group = &self.set.gates[g];
        let cache = Rc::clone(&self.cache);
        let mut hits = vec![false; group.set.len()];
        // The fast hasher, not SipHash: request values are not keys an attacker can flood a
        // long-lived table with (the set lives for one gate group, bounded by the values).
        let mut seen: std::collections::HashSet<&[u8], std::hash::BuildHasherDefault<FastHasher>> =
            std::collections::HashSet::with_capacity_and_hasher(64, Default::default());
        for name in &group.collections {
            for (_, raw) in cache.get(name).map(Vec::as_slice).unwrap_or_default() {
                if !seen.insert(raw.as_slice()) {
                    continue;
                }
                // The value exactly as `link_matches` gives it to the rule's own regex.
                let transformed;
                let value: &[u8] = if group.chain.is_empty() {
                    raw
                } else {
                    transformed = self.transformed(raw, &group.chain);
                    &transformed
                };
                for m in group.set.matches(value).iter() {
                    hits[m] = true;
                }
            }
        }
        let open = hits[i];
        self.gate_hits[g] = Some(hits);
        open
    }

    /// A cached request value through a transformation chain, computed once per phase: many
    /// rules read the same values through the same chain (`t:none,t:urlDecodeUni`).
    fn transformed(&mut self, raw: &[u8], chain: &[SecTransform]) -> Rc<[u8]> {
        // The cache owns `raw` for the whole phase, so its address names the value.
        let slot = self.memo.entry((raw.as_ptr() as usize, raw.len())).or_default();
        if let Some((_, done)) = slot.iter().find(|(c, _)| c == chain) {
            return Rc::clone(done);
        }
        // The longest chain already computed for this value that starts this one (the CRS's
        // chains share prefixes: t:none,t:urlDecodeUni,t:htmlEntityDecode,...): only the rest
        // of the transformations run. (Each transformation reads only its input, so the
        // prefix's result is exactly where the longer chain would be after it.)
        let best = slot
            .iter()
            // (apply_all cuts its input at MAX_TRANSFORMED: a longer intermediate would differ.)
            .filter(|(c, v)| c.len() < chain.len() && chain.starts_with(c) && v.len() <= MAX_TRANSFORMED)
            .max_by_key(|(c, _)| c.len())
            .map(|(c, v)| (c.len(), Rc::clone(v)));
        let done: Rc<[u8]> = match best {
            Some((n, from)) => super::transforms::apply_all(&chain[n..], &from).into(),
            None => super::transforms::apply_all(chain, raw).into(),
        };
        slot.push((chain.to_vec(), Rc::clone(&done)));
        done
    }

    /// The request variables of this phase, computed once (REQBODY_PROCESSOR stays live:
    /// `ctl:requestBodyProcessor` changes it within phase 1).
    fn build_cache(&self) -> Cache {
        VARIABLES
            .iter()
            .filter(|(_, kind)| *kind == VariableKind::Request)
            .map(|&(name, _)| (name, self.collection(name)))
            .collect()
    }

    /// Every entry of a variable or collection (scalars: one entry with an empty key).
    fn collection(&self, name: &str) -> Vec<Entry> {
        let p = &self.parsed;
        let req = self.req;
        let scalar = |v: &[u8]| vec![(Vec::new(), v.to_vec())];
        let names = |list: &[Entry]| list.iter().map(|(k, _)| (k.clone(), k.clone())).collect::<Vec<_>>();
        let body_phase = self.phase == Phase::RequestBody;
        let post: &[Entry] = if body_phase { &p.args_post } else { &[] };
        match name {
            "ARGS" => p.args_get.iter().chain(post).cloned().collect(),
            "ARGS_NAMES" => names(&[&p.args_get[..], post].concat()),
            "ARGS_GET" => p.args_get.clone(),
            "ARGS_GET_NAMES" => names(&p.args_get),
            "ARGS_POST" => post.to_vec(),
            "ARGS_POST_NAMES" => names(post),
            "ARGS_COMBINED_SIZE" => {
                let size: usize = p.args_get.iter().chain(post).map(|(k, v)| k.len() + v.len()).sum();
                scalar(size.to_string().as_bytes())
            }
            "REQUEST_HEADERS" => {
                req.headers.iter().map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v.clone())).collect()
            }
            "REQUEST_HEADERS_NAMES" => {
                req.headers.iter().map(|(k, _)| (k.to_ascii_lowercase().into_bytes(), k.clone().into_bytes())).collect()
            }
            "REQUEST_COOKIES" => p.cookies.clone(),
            "REQUEST_COOKIES_NAMES" => names(&p.cookies),
            "REQUEST_URI" | "REQUEST_URI_RAW" => scalar(req.uri.as_bytes()),
            "REQUEST_FILENAME" => scalar(req.path().as_bytes()),
            "REQUEST_BASENAME" => scalar(req.path().rsplit('/').next().unwrap_or("").as_bytes()),
            "REQUEST_LINE" => scalar(format!("{} {} {}", req.method, req.uri, req.protocol).as_bytes()),
            "REQUEST_METHOD" => scalar(req.method.as_bytes()),
            "REQUEST_PROTOCOL" => scalar(req.protocol.as_bytes()),
            "QUERY_STRING" => scalar(req.query().as_bytes()),
            "REQUEST_BODY" if body_phase => scalar(&req.body),
            "REQUEST_BODY_LENGTH" => scalar(req.body.len().to_string().as_bytes()),
            "REQBODY_PROCESSOR" => scalar(p.body_processor.as_bytes()),
            "REQBODY_ERROR" | "MULTIPART_STRICT_ERROR" => scalar(if p.body_error { b"1" } else { b"0" }),
            "FILES" if body_phase => p.files.clone(),
            "FILES_NAMES" if body_phase => names(&p.files),
            "FILES_SIZES" if body_phase => p.file_sizes.clone(),
            "FILES_COMBINED_SIZE" if body_phase => {
                let total: u64 =
                    p.file_sizes.iter().filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse::<u64>().ok()).sum();
                scalar(total.to_string().as_bytes())
            }
            "MULTIPART_PART_HEADERS" if body_phase => p.part_headers.clone(),
            "XML" if body_phase => p.xml.clone(),
            "MATCHED_VAR" => scalar(&self.matched_var.1),
            "MATCHED_VAR_NAME" => scalar(self.matched_var.0.as_bytes()),
            "MATCHED_VARS" => self.matched_vars.iter().map(|(n, v)| (n.clone().into_bytes(), v.clone())).collect(),
            "MATCHED_VARS_NAMES" => {
                self.matched_vars.iter().map(|(n, _)| (n.clone().into_bytes(), n.clone().into_bytes())).collect()
            }
            "REMOTE_ADDR" => scalar(req.remote_addr.as_bytes()),
            "UNIQUE_ID" => scalar(b"0"),
            "DURATION" => scalar(b"0"),
            "TX" | "IP" | "GLOBAL" | "SESSION" | "USER" | "RESOURCE" => self
                .collections
                .get(&name.to_ascii_lowercase())
                .map(|c| c.iter().map(|(k, v)| (k.clone().into_bytes(), v.clone())).collect())
                .unwrap_or_default(),
            // Response variables, GEO, ENV and the rest: nothing in phases 1 and 2.
            _ => Vec::new(),
        }
    }

    /// Expands `%{...}` macros; the result is cut at `MAX_TRANSFORMED` bytes.
    fn expand(&self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            out.extend_from_slice(&rest.as_bytes()[..start]);
            let Some(len) = rest[start + 2..].find('}') else {
                out.extend_from_slice(&rest.as_bytes()[start..]);
                rest = "";
                break;
            };
            let name = &rest[start + 2..start + 2 + len];
            out.extend_from_slice(&self.macro_value(name));
            rest = &rest[start + 3 + len..];
            if out.len() > MAX_TRANSFORMED {
                break;
            }
        }
        out.extend_from_slice(rest.as_bytes());
        out.truncate(MAX_TRANSFORMED);
        out
    }

    fn macro_value(&self, name: &str) -> Vec<u8> {
        let (coll, key) = match name.split_once('.') {
            Some((c, k)) => (c.to_ascii_uppercase(), Some(k.to_ascii_lowercase())),
            None => (name.to_ascii_uppercase(), None),
        };
        if coll == "RULE" {
            let Some(rule) = self.current else { return Vec::new() };
            return match key.as_deref() {
                Some("id") => rule.id.to_string().into_bytes(),
                Some("msg") => rule.links[0].actions.msg.clone().unwrap_or_default().into_bytes(),
                _ => Vec::new(),
            };
        }
        let wanted = |k: &[u8]| key.as_deref().is_none_or(|key| k.eq_ignore_ascii_case(key.as_bytes()));
        // `%{tx.anomaly_score}`: one lookup, not a copy of the whole collection (the CRS
        // keeps ~100 TX variables and expands some in every rule's actions).
        if let Some(stored) = stored_collection(&coll).and_then(|n| self.collections.get(n)) {
            return match key.as_deref() {
                Some(k) => stored.get(k).cloned().unwrap_or_default(),
                None => stored.iter().next().map(|(_, v)| v.clone()).unwrap_or_default(),
            };
        }
        // Request variables from the phase's cache, computed once.
        if let Some(entries) = self.cache.get(coll.as_str()) {
            return entries.iter().find(|(k, _)| wanted(k)).map(|(_, v)| v.clone()).unwrap_or_default();
        }
        self.collection(&coll).into_iter().find(|(k, _)| wanted(k)).map(|(_, v)| v).unwrap_or_default()
    }

    fn setvar(&mut self, sv: &SetVar) {
        match sv {
            SetVar::Assign { collection, key, value } => {
                let (key, value) = (lossy(&self.expand(key)).to_ascii_lowercase(), self.expand(value));
                self.stored(collection).insert(key, value);
            }
            SetVar::Add { collection, key, value, negative } => {
                let key = lossy(&self.expand(key)).to_ascii_lowercase();
                let delta = atoi(&self.expand(value));
                let c = self.stored(collection);
                let current = c.get(&key).map_or(0, |v| atoi(v));
                let next = if *negative { current.saturating_sub(delta) } else { current.saturating_add(delta) };
                match c.get_mut(&key) {
                    Some(v) => {
                        v.clear();
                        v.extend_from_slice(next.to_string().as_bytes());
                    }
                    None => {
                        c.insert(key, next.to_string().into_bytes());
                    }
                }
            }
            SetVar::Delete { collection, key } => {
                let key = lossy(&self.expand(key)).to_ascii_lowercase();
                if let Some(c) = self.collections.get_mut(collection) {
                    c.remove(&key);
                }
            }
        }
    }

    /// A stored collection (TX, IP, ...), created on first use; no copy of its name each time.
    fn stored(&mut self, collection: &str) -> &mut Map<String, Vec<u8>> {
        if !self.collections.contains_key(collection) {
            self.collections.insert(collection.to_string(), Map::default());
        }
        self.collections.get_mut(collection).expect("inserted above")
    }

    fn ctl(&mut self, ctl: &Ctl) {
        match ctl {
            Ctl::RuleEngine(mode) => self.mode = *mode,
            Ctl::RuleRemoveById(ids) => self.removed_ids.extend(ids),
            Ctl::RuleRemoveByTag(tag) => self.removed_tags.push(tag.clone()),
            Ctl::RuleRemoveTargetById(ids, t) => self.removed_targets.push((RuleSel::Ids(ids.clone()), t.clone())),
            Ctl::RuleRemoveTargetByTag(tag, t) => self.removed_targets.push((RuleSel::Tag(tag.clone()), t.clone())),
            Ctl::RequestBodyProcessor(p) => self.parsed.body_processor = p.clone(),
            Ctl::NoEffect(_) => {}
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
