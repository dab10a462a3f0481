//! Rule definitions: the built-in packs and custom rules (rules file or directive).
//!
//! Patterns are `regex` crate syntax, byte-oriented and ASCII (`(?-u)`), matched against the
//! value after the rule's transform pipeline. The engine compiles every rule sharing a
//! pipeline into one `RegexSet`, so a value is scanned once per pipeline — linear time, no
//! backtracking, whatever the input.

use serde::Deserialize;

use crate::parse::{self, ConfError};

use super::transform::Transform;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Sqli,
    Xss,
    Rce,
    Lfi,
    Rfi,
    Php,
    Java,
    Node,
    Protocol,
    /// Session fixation: setting a session id through a request.
    Session,
    Ssrf,
    Custom,
}

impl Family {
    pub const ALL: [Family; 12] = [
        Family::Sqli,
        Family::Xss,
        Family::Rce,
        Family::Lfi,
        Family::Rfi,
        Family::Php,
        Family::Java,
        Family::Node,
        Family::Protocol,
        Family::Session,
        Family::Ssrf,
        Family::Custom,
    ];

    pub fn tag(self) -> &'static str {
        match self {
            Family::Sqli => "sqli",
            Family::Xss => "xss",
            Family::Rce => "rce",
            Family::Lfi => "lfi",
            Family::Rfi => "rfi",
            Family::Php => "php",
            Family::Java => "java",
            Family::Node => "node",
            Family::Protocol => "protocol",
            Family::Session => "fixation",
            Family::Ssrf => "ssrf",
            Family::Custom => "custom",
        }
    }
}

/// Where a rule looks.
pub mod target {
    pub const PATH: u8 = 1;
    pub const ARG_NAMES: u8 = 2;
    pub const ARG_VALUES: u8 = 4;
    pub const COOKIES: u8 = 8;
    pub const HEADERS: u8 = 16;
    pub const BODY_NAMES: u8 = 32;
    pub const BODY_VALUES: u8 = 64;
    pub const COOKIE_NAMES: u8 = 128;
    pub const VALUES: u8 = ARG_VALUES | COOKIES | HEADERS | BODY_VALUES;
    /// Names an attacker chooses: argument, body field and cookie names.
    pub const NAMES: u8 = ARG_NAMES | BODY_NAMES | COOKIE_NAMES;
    pub const ALL: u8 = 0xff;

    pub fn parse(name: &str) -> Option<u8> {
        Some(match name {
            "path" => PATH,
            "args" => ARG_NAMES | ARG_VALUES,
            "args_names" => ARG_NAMES,
            "args_values" => ARG_VALUES,
            "cookies" => COOKIES | COOKIE_NAMES,
            "cookies_names" => COOKIE_NAMES,
            "cookies_values" => COOKIES,
            "headers" => HEADERS,
            "body" => BODY_NAMES | BODY_VALUES,
            "body_names" => BODY_NAMES,
            "body_values" => BODY_VALUES,
            "all" => ALL,
            _ => return None,
        })
    }
}

/// Compared whole (pattern, targets, pipeline...): locations share a compiled engine only
/// when their rules are the same, not merely their ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
    pub family: Family,
    pub msg: String,
    pub score: u32,
    pub paranoia: u8,
    pub targets: u8,
    pub tags: Vec<String>,
    pub pipeline: Vec<Transform>,
    pub pattern: String,
}

pub const CRITICAL: u32 = 5;
pub const ERROR: u32 = 4;
pub const WARNING: u32 = 3;
pub const NOTICE: u32 = 2;

pub use super::packs::builtin;

/// A custom rule as written in a rules file (JSON array) or a `shield_filter_rule` directive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Numbers are read wide and range-checked here, so `257` is refused, never wrapped.
    pub id: u64,
    #[serde(default)]
    pub msg: String,
    #[serde(default = "default_targets")]
    pub targets: Vec<String>,
    #[serde(default)]
    pub transforms: Vec<String>,
    pub pattern: String,
    #[serde(default = "default_score")]
    pub score: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_paranoia")]
    pub paranoia: u64,
}

/// A rule's score: at most the largest `shield_filter_threshold`.
pub const MAX_SCORE: u64 = 9999;

fn default_targets() -> Vec<String> {
    vec!["all".into()]
}
fn default_score() -> u64 {
    u64::from(CRITICAL)
}
fn default_paranoia() -> u64 {
    1
}

fn in_range(what: &'static str, n: u64, min: u64, max: u64) -> Result<u64, ConfError> {
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(ConfError::OutOfRange { what, value: n.to_string(), min, max })
    }
}

impl RuleSpec {
    pub fn into_rule(self) -> Result<Rule, ConfError> {
        let id = in_range("id", self.id, 1, u64::from(u32::MAX))? as u32;
        let score = in_range("score", self.score, 0, MAX_SCORE)? as u32;
        let paranoia = in_range("paranoia", self.paranoia, 1, 4)? as u8;
        let mut targets = 0u8;
        for t in &self.targets {
            targets |= target::parse(t).ok_or_else(|| format!("rule {id}: unknown target \"{t}\""))?;
        }
        let pipeline = self
            .transforms
            .iter()
            .map(|t| Transform::parse(t).ok_or_else(|| format!("rule {id}: unknown transform \"{t}\"")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut tags = self.tags;
        if !tags.iter().any(|t| t == "custom") {
            tags.push("custom".into());
        }
        let rule = Rule {
            id,
            family: Family::Custom,
            msg: self.msg,
            score,
            paranoia,
            targets,
            tags,
            pipeline,
            pattern: self.pattern,
        };
        check_pattern(&rule)?;
        Ok(rule)
    }
}

/// Compiles one rule's pattern as the engine will, so a bad one is reported with its rule.
pub fn check_pattern(rule: &Rule) -> Result<(), String> {
    regex::bytes::RegexBuilder::new(&rule.pattern)
        .unicode(false)
        .size_limit(2 << 20)
        .build()
        .map(drop)
        .map_err(|e| format!("rule {}: invalid pattern: {e}", rule.id))
}

/// The line (1-based) where each element of a JSON array starts.
fn element_lines(text: &str) -> Vec<usize> {
    let (mut lines, mut line, mut depth, mut in_string, mut escaped) = (Vec::new(), 1, 0usize, false, false);
    for b in text.bytes() {
        if b == b'\n' {
            line += 1;
        }
        if in_string {
            match (escaped, b) {
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => escaped = false,
            }
            continue;
        }
        let starts_element = depth == 1 && !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b',' | b']');
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if starts_element {
            lines.push(line);
        }
    }
    lines
}

/// Parses a rules file: a JSON array of rules. An error comes with the line it is about:
/// the rule's own line for a bad rule, serde's for bad JSON.
pub fn parse_rules_file(text: &str) -> Result<Vec<Rule>, (usize, String)> {
    let elements: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| (e.line(), format!("invalid rules file: {e}")))?;
    let lines = element_lines(text);
    let mut ids: std::collections::HashSet<u32> = super::packs::builtin_ids().collect();
    let mut rules = Vec::with_capacity(elements.len());
    for (k, element) in elements.into_iter().enumerate() {
        let line = lines.get(k).copied().unwrap_or(1);
        let spec: RuleSpec = serde_json::from_value(element).map_err(|e| (line, format!("invalid rule: {e}")))?;
        let rule = spec.into_rule().map_err(|e| (line, e.to_string()))?;
        if !ids.insert(rule.id) {
            return Err((line, format!("rule {} is duplicate", rule.id)));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Parses `shield_filter_rule id=N pattern=RE [targets=a,b] [transforms=x,y] [score=N] [tags=t]
/// [paranoia=N] [msg=text]`.
pub fn parse_rule_args(args: &[&str]) -> Result<Rule, ConfError> {
    let mut spec = RuleSpec {
        id: 0,
        msg: String::new(),
        targets: default_targets(),
        transforms: Vec::new(),
        pattern: String::new(),
        score: default_score(),
        tags: Vec::new(),
        paranoia: default_paranoia(),
    };
    let list = |v: &str| v.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>();
    for arg in args {
        let (k, v) = arg.split_once('=').ok_or_else(|| ConfError::InvalidParameter(arg.to_string()))?;
        match k {
            "id" => spec.id = parse::bounded("id", v, 1, u64::from(u32::MAX))?,
            "pattern" => spec.pattern = v.to_string(),
            "targets" => spec.targets = list(v),
            "transforms" => spec.transforms = list(v),
            "score" => spec.score = parse::bounded("score", v, 0, MAX_SCORE)?,
            "tags" => spec.tags = list(v),
            "paranoia" => spec.paranoia = parse::bounded("paranoia", v, 1, 4)?,
            "msg" => spec.msg = v.to_string(),
            _ => return Err(ConfError::InvalidParameter(arg.to_string())),
        }
    }
    if spec.id == 0 {
        return Err(ConfError::MissingParameter("id"));
    }
    if spec.pattern.is_empty() {
        return Err(ConfError::MissingParameter("pattern"));
    }
    spec.into_rule()
}
