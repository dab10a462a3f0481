//! Input filtering: a linear-time request inspection engine.
//!
//! - `transform`: decoders and normalisers (URL incl. `%uXXXX` and overlong UTF-8, HTML
//!   entities, comments, whitespace, paths), total and bounded;
//! - `rules`: rule types and custom rules; `packs`: the built-in rule packs (families,
//!   pipelines, per-paranoia scoring);
//! - `alphabet`: the fast path for plain words, derived from the compiled rules;
//! - `extract`: request → inspected values (query, cookie names and values, headers,
//!   urlencoded/JSON/multipart; XML in `xml`), streamed to the engine without copying them;
//! - `exclusions`: per-location false-positive tuning;
//! - `hygiene`: limits and the cheap checks that run before any rule;
//! - `ip`: CIDR allow/deny lists;
//! - this file: the engine (rules grouped by transform pipeline into `RegexSet`s, anomaly
//!   scoring).
//!
//! Every value is transformed once per distinct pipeline and scanned once per pipeline by a
//! `RegexSet` (finite automata: time linear in the input, no backtracking, no ReDoS). Only the
//! rules that matched run individually, to extract the fragment for the audit log.
//!
//! Memory: values are borrowed from the request (or the body) as they are extracted and
//! inspected one at a time; each transformed copy is cut at `transform::MAX_TRANSFORMED`, and
//! the copies of one value are dropped before the next. So inspection costs the body once plus
//! a constant, whatever the body's shape.

pub mod alphabet;
pub mod exclusions;
pub mod extract;
pub mod hygiene;
pub mod ip;
mod jsdecode;
pub mod packs;
mod packs_more;
pub mod rules;
pub mod seclang;
pub mod transform;
pub mod xml;

use regex::bytes::{Regex, RegexSet, RegexSetBuilder};

pub use exclusions::Exclusions;
pub use extract::{Item, Sink};
pub use hygiene::{check_uri, scanner, Hygiene, Limits, SCANNERS};
use regex_syntax::hir::Hir;
use rules::{target, Family, Rule};
use transform::{Transform, MAX_TRANSFORMED};

/// Default anomaly threshold: one critical rule blocks.
pub const DEFAULT_THRESHOLD: u32 = 5;

/// One `RegexSet` and the rule (index into `Engine::rules`) behind each of its patterns.
struct Scan {
    set: RegexSet,
    rules: Vec<usize>,
}

impl Scan {
    fn build(all: &[Rule], members: Vec<usize>) -> Result<Scan, String> {
        let set = RegexSetBuilder::new(members.iter().map(|&i| &all[i].pattern))
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(16 << 20)
            .build()
            .map_err(|e| format!("rule set: {e}"))?;
        Ok(Scan { set, rules: members })
    }
}

/// What a pipeline does with a plain value (only `[A-Za-z0-9_-]`).
enum Plain {
    /// No rule of the pipeline can match anything a plain value becomes (see `alphabet`).
    Skip,
    /// Every rule of the pipeline might: scan them all.
    All,
    /// Only these rules might.
    Some(Scan),
}

/// The rules to scan a value with: all of them, or for a plain value those that may match.
struct Scans {
    all: Scan,
    plain: Plain,
}

impl Scans {
    fn build(all: &[Rule], syntax: &[Hir], members: Vec<usize>, transforms: &[Transform]) -> Result<Scans, String> {
        let reachable = alphabet::image(transforms, alphabet::plain());
        let may_match: Vec<usize> =
            members.iter().copied().filter(|&i| alphabet::can_match_over(&syntax[i], &reachable)).collect();
        let plain = match may_match.len() {
            0 => Plain::Skip,
            n if n == members.len() => Plain::All,
            _ => Plain::Some(Scan::build(all, may_match)?),
        };
        Ok(Scans { all: Scan::build(all, members)?, plain })
    }

    fn pick(&self, plain: bool) -> Option<&Scan> {
        match (&self.plain, plain) {
            (Plain::Skip, true) => None,
            (Plain::Some(subset), true) => Some(subset),
            _ => Some(&self.all),
        }
    }
}

struct PipelineSet {
    transforms: Vec<Transform>,
    scan: Scans,
    /// Part of the fixed-point union (no transform that always changes a value).
    fixed_point: bool,
}

/// The rules of every pipeline without `Base64Decode`, as one scan: for a value that none of
/// their transforms changes, every such pipeline sees the value as it is.
struct FixedPoint {
    /// Every transform those pipelines use.
    transforms: Vec<Transform>,
    scan: Scans,
    /// For a value that only `Lowercase` changes (among `transforms`): the pipelines with
    /// `Lowercase` all see the lower-cased value, the others the value as it is. Lower-casing
    /// adds none of the bytes the other transforms act on, so this holds whatever the order.
    with_lowercase: Option<Scans>,
    without_lowercase: Option<Scans>,
    enabled: bool,
}

pub struct Engine {
    rules: Vec<Rule>,
    /// One per rule, to extract the matched fragment.
    regexes: Vec<Regex>,
    sets: Vec<PipelineSet>,
    fixed: Option<FixedPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub id: u32,
    pub family: Family,
    pub score: u32,
    /// `args:q`, `cookie:sid`, `header:user-agent`, `body:comment`, `path`...
    pub target: String,
    /// Masked and truncated: at most 64 bytes, control characters escaped.
    pub fragment: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub score: u32,
    pub matches: Vec<Match>,
}

impl Verdict {
    pub fn rule_ids(&self) -> String {
        let mut ids: Vec<u32> = self.matches.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}

impl Engine {
    /// Compiles the built-in rules up to `paranoia` plus `custom` rules. A rule whose pattern
    /// does not compile is an error naming its id.
    pub fn new(paranoia: u8, custom: &[Rule]) -> Result<Engine, String> {
        let mut all: Vec<Rule> = rules::builtin().into_iter().filter(|r| r.paranoia <= paranoia).collect();
        all.extend(custom.iter().filter(|r| r.paranoia <= paranoia).cloned());
        let mut ids = std::collections::HashSet::new();
        for r in &all {
            if !ids.insert(r.id) {
                return Err(format!("rule {} is duplicate", r.id));
            }
        }
        let mut regexes = Vec::with_capacity(all.len());
        let mut syntax = Vec::with_capacity(all.len());
        for r in &all {
            let invalid = |e: String| format!("rule {}: invalid pattern: {e}", r.id);
            regexes.push(
                regex::bytes::RegexBuilder::new(&r.pattern)
                    .unicode(false)
                    .size_limit(2 << 20)
                    .build()
                    .map_err(|e| invalid(e.to_string()))?,
            );
            syntax.push(alphabet::parse(&r.pattern).map_err(invalid)?);
        }
        let mut pipelines: Vec<Vec<Transform>> = all.iter().map(|r| r.pipeline.clone()).collect();
        pipelines.sort();
        pipelines.dedup();
        let mut sets = Vec::new();
        let mut fixed_members = Vec::new();
        let mut fixed_transforms: Vec<Transform> = Vec::new();
        for transforms in pipelines {
            let members: Vec<usize> = (0..all.len()).filter(|&i| all[i].pipeline == transforms).collect();
            let fixed_point = !transforms.contains(&Transform::Base64Decode);
            if fixed_point {
                fixed_members.extend(&members);
                fixed_transforms.extend(&transforms);
            }
            let scan = Scans::build(&all, &syntax, members, &transforms)?;
            sets.push(PipelineSet { transforms, scan, fixed_point });
        }
        fixed_transforms.sort();
        fixed_transforms.dedup();
        fixed_members.sort_unstable();
        let fixed = if fixed_members.is_empty() {
            None
        } else {
            let (lower, other): (Vec<usize>, Vec<usize>) =
                fixed_members.iter().partition(|&&i: &&usize| all[i].pipeline.contains(&Transform::Lowercase));
            let part = |members: Vec<usize>, transforms: &[Transform]| -> Result<Option<Scans>, String> {
                if members.is_empty() {
                    return Ok(None);
                }
                Scans::build(&all, &syntax, members, transforms).map(Some)
            };
            let with_lowercase = part(lower, &[Transform::Lowercase])?;
            let without_lowercase = part(other, &[])?;
            // A value none of these transforms changes stays plain through all of them.
            let scan = Scans::build(&all, &syntax, fixed_members, &[])?;
            Some(FixedPoint { transforms: fixed_transforms, scan, with_lowercase, without_lowercase, enabled: true })
        };
        Ok(Engine { rules: all, regexes, sets, fixed })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// (pipelines, pipelines that scan plain values): what the fast path saves.
    pub fn plain_scans(&self) -> (usize, usize) {
        (self.sets.len(), self.sets.iter().filter(|ps| !matches!(ps.scan.plain, Plain::Skip)).count())
    }

    /// Turns the fixed-point union scan off (tests compare the verdicts with and without it).
    #[cfg(test)]
    pub(crate) fn without_fixed_point(mut self) -> Engine {
        if let Some(f) = &mut self.fixed {
            f.enabled = false;
        }
        self
    }

    /// Starts inspecting one request; it stops scoring once `stop_at` is reached (the
    /// request is blocked either way, so more matches only cost time).
    pub fn start<'e>(&'e self, exclusions: &'e Exclusions, stop_at: u32) -> Inspection<'e> {
        Inspection {
            engine: self,
            exclusions,
            stop_at,
            verdict: Verdict::default(),
            same_site: false,
            steps: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Inspects every item.
    pub fn inspect(&self, items: &[Item], exclusions: &Exclusions, stop_at: u32) -> Verdict {
        let mut inspection = self.start(exclusions, stop_at);
        for item in items {
            inspection.item(item);
        }
        inspection.verdict
    }
}

/// One request's inspection, fed item by item as the request is read (see `extract`).
pub struct Inspection<'e> {
    engine: &'e Engine,
    exclusions: &'e Exclusions,
    stop_at: u32,
    verdict: Verdict,
    /// The request came from a page of the same site (see [`Inspection::same_site_referer`]).
    same_site: bool,
    /// The memo's buffers, reused by every item of the request (a fresh pair per item cost
    /// ~10% of a benign POST in reallocations).
    steps: Vec<Option<usize>>,
    values: Vec<Vec<u8>>,
}

impl<'e> Inspection<'e> {
    pub fn verdict(self) -> Verdict {
        self.verdict
    }

    /// The request's `Referer` is a page of its own site (see
    /// [`extract::same_site_referer`]): the rules that only mean an attack when a request comes
    /// from elsewhere or from nowhere ([`packs::OFF_SITE_ONLY`]: a session id passed as an
    /// argument, which a site's own links may do) are skipped. Call before the first item.
    pub fn same_site_referer(&mut self) {
        self.same_site = true;
    }

    pub fn item(&mut self, item: &Item) {
        if self.verdict.score >= self.stop_at || item.value.is_empty() || self.exclusions.skips_target(item) {
            return;
        }
        let plain = item.value.iter().all(|&b| alphabet::is_plain_byte(b));
        let engine = self.engine;
        self.steps.clear();
        self.values.clear();
        let mut memo = Memo {
            original: &item.value[..],
            traits: transform::Traits::of(&item.value),
            prev: &[],
            steps: &mut self.steps,
            values: &mut self.values,
        };
        // A value that no transform of the fixed-point pipelines changes is the same value
        // for all of them: one scan of their union instead of one per pipeline. A value that
        // only Lowercase changes is one of two values for all of them: two scans.
        let short = item.value.len() <= MAX_TRANSFORMED;
        let fixed = engine.fixed.as_ref().filter(|f| f.enabled && short);
        let changed = |t: &Transform| !memo.traits.unchanged_by(*t);
        let fixed = fixed.and_then(|f| match f.transforms.iter().filter(|t| changed(t)).collect::<Vec<_>>()[..] {
            [] => Some((f, false)),
            [Transform::Lowercase] => Some((f, true)),
            _ => None,
        });
        match fixed {
            Some((f, false)) => {
                if let Some(scan) = f.scan.pick(plain) {
                    score(engine, self.exclusions, self.same_site, &mut self.verdict, scan, &item.value, item);
                }
            }
            Some((f, true)) => {
                if let Some(scan) = f.without_lowercase.as_ref().and_then(|s| s.pick(plain)) {
                    score(engine, self.exclusions, self.same_site, &mut self.verdict, scan, &item.value, item);
                }
                if let Some(scan) = f.with_lowercase.as_ref().and_then(|s| s.pick(plain)) {
                    let lower = memo.get(&[Transform::Lowercase]);
                    score(engine, self.exclusions, self.same_site, &mut self.verdict, scan, lower, item);
                }
            }
            None => {}
        }
        for ps in &engine.sets {
            if fixed.is_some() && ps.fixed_point {
                continue;
            }
            let Some(scan) = ps.scan.pick(plain) else { continue };
            let value = memo.get(&ps.transforms);
            score(engine, self.exclusions, self.same_site, &mut self.verdict, scan, value, item);
        }
    }
}

/// Scores the rules of `scan` that match `value`.
#[allow(clippy::too_many_arguments)]
fn score(
    engine: &Engine,
    exclusions: &Exclusions,
    same_site: bool,
    verdict: &mut Verdict,
    scan: &Scan,
    value: &[u8],
    item: &Item,
) {
    // Most values match nothing: the early-exit scan decides that alone.
    if !scan.set.is_match(value) {
        return;
    }
    for k in scan.set.matches(value).iter() {
        let index = scan.rules[k];
        let rule = &engine.rules[index];
        if rule.targets & item.target == 0 || exclusions.excludes(rule, item) {
            continue;
        }
        if same_site && packs::OFF_SITE_ONLY.contains(&rule.id) {
            continue;
        }
        if verdict.matches.iter().any(|m| m.id == rule.id) {
            continue; // a rule scores once per request
        }
        let fragment = engine.regexes[index].find(value).map(|m| mask(&value[m.start()..m.end()])).unwrap_or_default();
        verdict.score += rule.score;
        verdict.matches.push(Match {
            id: rule.id,
            family: rule.family,
            score: rule.score,
            target: describe(item),
            fragment,
        });
    }
}

impl<'a> Sink<'a> for Inspection<'_> {
    fn push(&mut self, item: Item<'a>) {
        self.item(&item);
    }
}

/// The values of one item after each pipeline prefix, computed once: pipelines share
/// prefixes ([UrlDecode, HtmlDecode, Lowercase, ...]) and most transforms leave most values
/// unchanged, which costs neither a copy nor an allocation here. Each copy is at most
/// `MAX_TRANSFORMED` bytes, and there are at most as many as pipeline steps.
struct Memo<'p, 'v, 'm> {
    original: &'v [u8],
    /// What the transforms' checks need of `original`, from one pass.
    traits: transform::Traits,
    /// The pipeline asked for last, and after each of its steps the index of its value in
    /// `values` (`None`: the original).
    prev: &'p [Transform],
    steps: &'m mut Vec<Option<usize>>,
    values: &'m mut Vec<Vec<u8>>,
}

impl<'p> Memo<'p, '_, '_> {
    /// The value after `pipeline`. Only the previous pipeline's steps are kept (a stack):
    /// the engine asks for its pipelines in sorted order, where the longest prefix shared with
    /// any earlier pipeline is the one shared with the previous, so nothing is computed twice
    /// and finding the shared steps costs one comparison, not a scan of every earlier step.
    fn get(&mut self, pipeline: &'p [Transform]) -> &[u8] {
        let shared = self.prev.iter().zip(pipeline).take_while(|(a, b)| a == b).count();
        self.steps.truncate(shared);
        let mut at = self.steps.last().copied().flatten();
        for t in &pipeline[shared..] {
            let next = match at {
                None => t.apply_if_changed_given(self.original, self.traits),
                Some(i) => t.apply_if_changed(&self.values[i]),
            };
            if let Some(next) = next {
                self.values.push(next);
                at = Some(self.values.len() - 1);
            }
            self.steps.push(at);
        }
        self.prev = pipeline;
        at.map_or(self.original, |i| &self.values[i])
    }
}

fn describe(item: &Item) -> String {
    let name = String::from_utf8_lossy(&transform::url_decode(&item.name)).to_ascii_lowercase();
    match item.target {
        target::PATH => "path".into(),
        target::ARG_NAMES => format!("args_names:{name}"),
        target::ARG_VALUES => format!("args:{name}"),
        target::COOKIES => format!("cookie:{name}"),
        target::COOKIE_NAMES => format!("cookies_names:{name}"),
        target::HEADERS => format!("header:{name}"),
        target::BODY_NAMES => format!("body_names:{name}"),
        _ => format!("body:{name}"),
    }
}

/// At most 64 bytes of the matched text, non-printable bytes escaped.
fn mask(fragment: &[u8]) -> String {
    let mut out = String::new();
    for &b in fragment.iter().take(64) {
        match b {
            b' '..=b'~' if b != b'"' && b != b'\\' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if fragment.len() > 64 {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_packs;
