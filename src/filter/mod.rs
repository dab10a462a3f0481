//! Input filtering: a linear-time request inspection engine.
//!
//! - `transform`: decoders and normalisers (URL incl. `%uXXXX` and overlong UTF-8, HTML
//!   entities, comments, whitespace, paths), total and bounded;
//! - `rules`: the built-in rule packs and custom rules;
//! - `extract`: request → inspected values (query, cookies, headers, urlencoded/JSON/multipart);
//! - `ip`: CIDR allow/deny lists;
//! - this file: the engine (rules grouped by transform pipeline into `RegexSet`s, anomaly
//!   scoring, exclusions) and the cheap hygiene checks that run first.
//!
//! Every value is transformed once per distinct pipeline and scanned once per pipeline by a
//! `RegexSet` (finite automata: time linear in the input, no backtracking, no ReDoS). Only the
//! rules that matched run individually, to extract the fragment for the audit log.

pub mod extract;
pub mod ip;
pub mod rules;
pub mod seclang;
pub mod transform;

use regex::bytes::{Regex, RegexSet, RegexSetBuilder};

pub use extract::Item;
use rules::{target, Family, Rule};
use transform::Transform;

/// Default anomaly threshold: one critical rule blocks.
pub const DEFAULT_THRESHOLD: u32 = 5;

struct PipelineSet {
    transforms: Vec<Transform>,
    set: RegexSet,
    /// Index into `Engine::rules` of each pattern in `set`.
    rules: Vec<usize>,
    regexes: Vec<Regex>,
}

pub struct Engine {
    rules: Vec<Rule>,
    sets: Vec<PipelineSet>,
    /// Values made only of `[A-Za-z0-9_-]` cannot match a built-in rule (bare shell command
    /// words excepted); skipped when no custom rule could see them differently.
    fast_path: bool,
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
        let mut pipelines: Vec<Vec<Transform>> = all.iter().map(|r| r.pipeline.clone()).collect();
        pipelines.sort();
        pipelines.dedup();
        let mut sets = Vec::new();
        for transforms in pipelines {
            let members: Vec<usize> = (0..all.len()).filter(|&i| all[i].pipeline == transforms).collect();
            let mut regexes = Vec::with_capacity(members.len());
            for &i in &members {
                let re = regex::bytes::RegexBuilder::new(&all[i].pattern)
                    .unicode(false)
                    .size_limit(2 << 20)
                    .build()
                    .map_err(|e| format!("rule {}: invalid pattern: {e}", all[i].id))?;
                regexes.push(re);
            }
            let set = RegexSetBuilder::new(members.iter().map(|&i| &all[i].pattern))
                .unicode(false)
                .size_limit(64 << 20)
                .dfa_size_limit(16 << 20)
                .build()
                .map_err(|e| format!("rule set: {e}"))?;
            sets.push(PipelineSet { transforms, set, rules: members, regexes });
        }
        Ok(Engine { fast_path: custom.is_empty(), rules: all, sets })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Inspects every item; stops early once `stop_at` is reached (the request is blocked
    /// either way, so more matches only cost time).
    pub fn inspect(&self, items: &[Item], exclusions: &Exclusions, stop_at: u32) -> Verdict {
        let mut verdict = Verdict::default();
        for item in items {
            if item.value.is_empty() || (self.fast_path && is_plain(&item.value) && !is_command_word(&item.value)) {
                continue;
            }
            if exclusions.skips_target(item) {
                continue;
            }
            // Pipelines share prefixes ([UrlDecode, HtmlDecode, Lowercase, ...]): each
            // intermediate value is computed once per item, in pipeline order.
            let mut memo = Memo { steps: Vec::with_capacity(self.sets.len() * 2), values: vec![item.value.to_vec()] };
            for ps in &self.sets {
                let value = memo.get(&ps.transforms);
                // Most values match nothing: the early-exit scan decides that alone.
                if !ps.set.is_match(value) {
                    continue;
                }
                let hits = ps.set.matches(value);
                for k in hits.iter() {
                    let rule = &self.rules[ps.rules[k]];
                    if rule.targets & item.target == 0 || exclusions.excludes(rule, item) {
                        continue;
                    }
                    if verdict.matches.iter().any(|m| m.id == rule.id) {
                        continue; // a rule scores once per request
                    }
                    let fragment = ps.regexes[k].find(value).map(|m| mask(&value[m.start()..m.end()])).unwrap_or_default();
                    verdict.score += rule.score;
                    verdict.matches.push(Match { id: rule.id, family: rule.family, score: rule.score, target: describe(item), fragment });
                }
            }
            if verdict.score >= stop_at {
                break;
            }
        }
        verdict
    }
}

/// The values of one item after each pipeline prefix, computed once: pipelines share
/// prefixes ([UrlDecode, HtmlDecode, Lowercase, ...]) and most transforms leave most values
/// unchanged, which costs neither a copy nor an allocation here.
struct Memo<'p> {
    /// (prefix, index into `values`)
    steps: Vec<(&'p [Transform], usize)>,
    values: Vec<Vec<u8>>,
}

impl<'p> Memo<'p> {
    fn get(&mut self, pipeline: &'p [Transform]) -> &[u8] {
        let (mut at, done) = self
            .steps
            .iter()
            .filter(|(prefix, _)| pipeline.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or((0, 0), |(prefix, i)| (*i, prefix.len()));
        for (k, t) in pipeline.iter().enumerate().skip(done) {
            if let Some(next) = t.apply_if_changed(&self.values[at]) {
                self.values.push(next);
                at = self.values.len() - 1;
            }
            self.steps.push((&pipeline[..=k], at));
        }
        &self.values[at]
    }
}

fn is_plain(v: &[u8]) -> bool {
    v.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Single words that are a shell command on their own (`?cmd=whoami`).
fn is_command_word(v: &[u8]) -> bool {
    const WORDS: &[&[u8]] =
        &[b"whoami", b"ifconfig", b"ipconfig", b"systeminfo", b"sysinfo", b"netstat", b"uname", b"pwd", b"ls", b"dir", b"tasklist", b"passwd"];
    v.len() <= 10 && WORDS.iter().any(|w| v.eq_ignore_ascii_case(w))
}

fn describe(item: &Item) -> String {
    let name = String::from_utf8_lossy(&transform::url_decode(&item.name)).to_ascii_lowercase();
    match item.target {
        target::PATH => "path".into(),
        target::ARG_NAMES => format!("args_names:{name}"),
        target::ARG_VALUES => format!("args:{name}"),
        target::COOKIES => format!("cookie:{name}"),
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

/// Per-location false-positive tuning: `id=N`, `tag=T`, `target=KIND[:NAME]`, combinable
/// (`id=942100 target=args:q` excludes that rule for that argument only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions(Vec<Exclusion>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Exclusion {
    id: Option<u32>,
    tag: Option<String>,
    target: Option<(u8, Option<String>)>,
}

impl Exclusions {
    pub fn add(&mut self, args: &[&str]) -> Result<(), String> {
        let mut e = Exclusion { id: None, tag: None, target: None };
        for arg in args {
            match arg.split_once('=') {
                Some(("id", v)) => e.id = Some(v.parse().map_err(|_| format!("invalid parameter \"{arg}\""))?),
                Some(("tag", v)) if !v.is_empty() => e.tag = Some(v.to_ascii_lowercase()),
                Some(("target", v)) => {
                    let (kind, name) = match v.split_once(':') {
                        Some((k, n)) => (k, Some(n.to_ascii_lowercase())),
                        None => (v, None),
                    };
                    let mask = match kind {
                        "args" | "arg" => target::ARG_VALUES | target::ARG_NAMES,
                        "cookie" | "cookies" => target::COOKIES,
                        "header" | "headers" => target::HEADERS,
                        "body" => target::BODY_VALUES | target::BODY_NAMES,
                        "path" => target::PATH,
                        _ => return Err(format!("invalid target \"{v}\"")),
                    };
                    e.target = Some((mask, name));
                }
                _ => return Err(format!("invalid parameter \"{arg}\"")),
            }
        }
        if e.id.is_none() && e.tag.is_none() && e.target.is_none() {
            return Err("needs \"id=\", \"tag=\" or \"target=\"".into());
        }
        self.0.push(e);
        Ok(())
    }

    pub fn extend(&mut self, other: &Exclusions) {
        self.0.extend(other.0.iter().cloned());
    }

    fn target_matches(t: &Option<(u8, Option<String>)>, item: &Item) -> bool {
        match t {
            None => true,
            Some((mask, name)) => {
                mask & item.target != 0
                    && name.as_ref().is_none_or(|n| transform::url_decode(&item.name).eq_ignore_ascii_case(n.as_bytes()))
            }
        }
    }

    /// A target-only exclusion: the value is not inspected at all.
    fn skips_target(&self, item: &Item) -> bool {
        self.0.iter().any(|e| e.id.is_none() && e.tag.is_none() && Self::target_matches(&e.target, item))
    }

    fn excludes(&self, rule: &Rule, item: &Item) -> bool {
        self.0.iter().any(|e| {
            let rule_ok = e.id.is_none_or(|id| id == rule.id) && e.tag.as_ref().is_none_or(|t| rule.tags.iter().any(|rt| rt == t));
            rule_ok && (e.id.is_some() || e.tag.is_some()) && Self::target_matches(&e.target, item)
        })
    }
}

/// Request limits and hygiene, checked before any rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_uri: usize,
    pub max_args: usize,
    pub max_arg_name: usize,
    pub max_arg_value: usize,
    pub max_headers: usize,
    pub max_header_size: usize,
    /// Request bodies are inspected up to this many bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uri: 4096,
            max_args: 256,
            max_arg_name: 256,
            max_arg_value: 16 * 1024,
            max_headers: 100,
            max_header_size: 16 * 1024,
            max_body: 128 * 1024,
        }
    }
}

impl Limits {
    /// `shield_filter_limits uri=4k args=256 arg_name=256 arg_value=16k headers=100 header_size=16k body=128k`.
    pub fn set(&mut self, arg: &str) -> Result<(), String> {
        let (k, v) = arg.split_once('=').ok_or_else(|| format!("invalid parameter \"{arg}\""))?;
        let n = crate::parse::size(v).map_err(|_| format!("invalid parameter \"{arg}\""))?;
        let slot = match k {
            "uri" => &mut self.max_uri,
            "args" => &mut self.max_args,
            "arg_name" => &mut self.max_arg_name,
            "arg_value" => &mut self.max_arg_value,
            "headers" => &mut self.max_headers,
            "header_size" => &mut self.max_header_size,
            "body" => &mut self.max_body,
            _ => return Err(format!("invalid parameter \"{arg}\"")),
        };
        *slot = n;
        Ok(())
    }
}

/// Why a request failed hygiene: a stable short code for logs and variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hygiene {
    UriTooLong,
    TooManyArgs,
    ArgNameTooLong,
    ArgValueTooLong,
    TooManyHeaders,
    HeaderTooLarge,
    MethodNotAllowed,
    ContentTypeNotAllowed,
    NullByte,
    BadEncoding,
    Traversal,
    ScannerUserAgent,
    DeniedAddress,
    Smuggling,
}

impl Hygiene {
    pub fn code(self) -> &'static str {
        match self {
            Hygiene::UriTooLong => "uri_too_long",
            Hygiene::TooManyArgs => "too_many_args",
            Hygiene::ArgNameTooLong => "arg_name_too_long",
            Hygiene::ArgValueTooLong => "arg_value_too_long",
            Hygiene::TooManyHeaders => "too_many_headers",
            Hygiene::HeaderTooLarge => "header_too_large",
            Hygiene::MethodNotAllowed => "method_not_allowed",
            Hygiene::ContentTypeNotAllowed => "content_type_not_allowed",
            Hygiene::NullByte => "null_byte",
            Hygiene::BadEncoding => "bad_encoding",
            Hygiene::Traversal => "path_traversal",
            Hygiene::ScannerUserAgent => "scanner",
            Hygiene::DeniedAddress => "denied_address",
            Hygiene::Smuggling => "request_smuggling",
        }
    }

    /// The status a hygiene failure answers with when it is not a security block: malformed
    /// requests get 400, oversized ones 414/413/431, a forbidden method 405.
    pub fn status(self, block_status: u16) -> u16 {
        match self {
            Hygiene::BadEncoding | Hygiene::NullByte | Hygiene::Smuggling => 400,
            Hygiene::UriTooLong => 414,
            Hygiene::TooManyHeaders | Hygiene::HeaderTooLarge => 431,
            Hygiene::MethodNotAllowed => 405,
            Hygiene::ContentTypeNotAllowed => 415,
            _ => block_status,
        }
    }
}

/// Scanner and attack-tool user agents (case-insensitive substrings).
pub const SCANNERS: &[&str] = &[
    "sqlmap", "nikto", "nmap", "masscan", "wpscan", "dirbuster", "gobuster", "nuclei", "acunetix", "netsparker", "w3af",
    "havij", "zgrab", "openvas", "nessus", "arachni", "skipfish", "whatweb", "joomscan", "fimap", "commix", "xsstrike",
    "feroxbuster", "ffuf", "wfuzz", "burpcollaborator", "jorgee", "zmeu", "morfeus", "dirb/", "hydra",
];

pub fn scanner(user_agent: &[u8]) -> bool {
    let ua = user_agent.to_ascii_lowercase();
    SCANNERS.iter().any(|s| ua.windows(s.len()).any(|w| w == s.as_bytes()))
}

/// The raw request target checks: length, encoding, NUL, traversal after normalisation.
pub fn check_uri(limits: &Limits, raw_uri: &[u8]) -> Result<(), Hygiene> {
    if raw_uri.len() > limits.max_uri {
        return Err(Hygiene::UriTooLong);
    }
    let (path, query) = match raw_uri.iter().position(|&b| b == b'?') {
        Some(i) => (&raw_uri[..i], &raw_uri[i + 1..]),
        None => (raw_uri, &raw_uri[raw_uri.len()..]),
    };
    if transform::has_invalid_percent(raw_uri) {
        return Err(Hygiene::BadEncoding);
    }
    let decoded_path = transform::apply_all(&[Transform::UrlDecode], path);
    if decoded_path.contains(&0) || transform::url_decode(query).contains(&0) {
        return Err(Hygiene::NullByte);
    }
    let normal = transform::normalize_path(&decoded_path);
    if normal.split(|&b| b == b'/').any(|seg| seg == b"..") {
        return Err(Hygiene::Traversal);
    }
    let mut args = 0;
    for (name, value) in extract::pairs(query) {
        args += 1;
        if args > limits.max_args {
            return Err(Hygiene::TooManyArgs);
        }
        if name.len() > limits.max_arg_name {
            return Err(Hygiene::ArgNameTooLong);
        }
        if value.len() > limits.max_arg_value {
            return Err(Hygiene::ArgValueTooLong);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
