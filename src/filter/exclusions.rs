//! Per-location false-positive tuning (`shield_filter_exclude`): which rules skip which values.

use super::extract::Item;
use super::rules::{target, Rule};
use super::transform;

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
    pub fn add(&mut self, args: &[&str]) -> Result<(), crate::parse::ConfError> {
        let mut e = Exclusion { id: None, tag: None, target: None };
        for arg in args {
            match arg.split_once('=') {
                Some(("id", v)) => e.id = Some(crate::parse::bounded("id", v, 1, u64::from(u32::MAX))? as u32),
                Some(("tag", v)) if !v.is_empty() => e.tag = Some(v.to_ascii_lowercase()),
                Some(("target", v)) => {
                    let (kind, name) = match v.split_once(':') {
                        Some((k, n)) => (k, Some(n.to_ascii_lowercase())),
                        None => (v, None),
                    };
                    let mask = match kind {
                        "args" | "arg" => target::ARG_VALUES | target::ARG_NAMES,
                        "cookie" | "cookies" => target::COOKIES | target::COOKIE_NAMES,
                        "header" | "headers" => target::HEADERS,
                        "body" => target::BODY_VALUES | target::BODY_NAMES,
                        "path" => target::PATH,
                        _ => return Err(format!("invalid target \"{v}\"").into()),
                    };
                    e.target = Some((mask, name));
                }
                _ => return Err(crate::parse::ConfError::InvalidParameter(arg.to_string())),
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
                    && name
                        .as_ref()
                        .is_none_or(|n| transform::url_decode(&item.name).eq_ignore_ascii_case(n.as_bytes()))
            }
        }
    }

    /// A target-only exclusion: the value is not inspected at all.
    pub(super) fn skips_target(&self, item: &Item) -> bool {
        self.0.iter().any(|e| e.id.is_none() && e.tag.is_none() && Self::target_matches(&e.target, item))
    }

    pub(super) fn excludes(&self, rule: &Rule, item: &Item) -> bool {
        self.0.iter().any(|e| {
            let rule_ok = e.id.is_none_or(|id| id == rule.id)
                && e.tag.as_ref().is_none_or(|t| rule.tags.iter().any(|rt| rt == t));
            rule_ok && (e.id.is_some() || e.tag.is_some()) && Self::target_matches(&e.target, item)
        })
    }
}
