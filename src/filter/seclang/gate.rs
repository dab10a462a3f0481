//! The set-driven gate: rules whose chain starter is a plain `@rx` over request variables are
//! grouped by transformation chain, and each group's patterns are compiled into one
//! `RegexSet`. Per phase, a group scans the distinct values of the variables its members
//! read, each transformed once (the evaluator's memo, shared with the rules), and so learns
//! which of its patterns match any of them. A member whose pattern matched none cannot
//! match its own targets (a subset of those values, after the same chain) and is skipped
//! without building its target list; the others run exactly as before.
//!
//! Not gated (they run rule by rule): negated or `multiMatch` starters, counts (`&ARGS`),
//! targets that live (TX, MATCHED_VAR...), macro patterns, and groups whose set does not
//! build within the size limits.

use regex::bytes::{RegexSet, RegexSetBuilder};

use super::model::{variable_kind, Item, RuleSet, VariableKind};
use super::operators::Operator;
use super::transforms::SecTransform;

/// Patterns per set: small enough for the lazy DFA to stay warm on short values.
const MAX_SET: usize = 48;

#[derive(Debug)]
pub struct Group {
    pub chain: Vec<SecTransform>,
    /// The request variables the members read: every member's values are among theirs.
    pub collections: Vec<&'static str>,
    pub set: RegexSet,
}

/// Builds the groups and gives every gated rule its `(group, pattern)` slot.
pub fn build(set: &mut RuleSet) {
    // (chain, collections, patterns, (item, pattern index) of each member)
    type Pending = (Vec<SecTransform>, Vec<&'static str>, Vec<String>, Vec<usize>);
    let mut pending: Vec<Pending> = Vec::new();
    for (item_index, item) in set.items.iter().enumerate() {
        let Item::Rule(rule) = item else { continue };
        let link = &rule.links[0];
        let Operator::Rx(re) = &link.operator else { continue };
        let request_only = |name: &str| variable_kind(name) == Some(VariableKind::Request);
        if link.negated
            || link.actions.multi_match
            || link.targets.is_empty()
            || link.targets.iter().any(|t| t.count || !request_only(&t.collection))
        {
            continue;
        }
        let chain = &link.actions.transforms;
        let at = match pending.iter().position(|(c, _, p, _)| c == chain && p.len() < MAX_SET) {
            Some(at) => at,
            None => {
                pending.push((chain.clone(), Vec::new(), Vec::new(), Vec::new()));
                pending.len() - 1
            }
        };
        let group = &mut pending[at];
        for t in link.targets.iter().filter(|t| !t.exclude) {
            let name = super::model::VARIABLES.iter().find(|(n, _)| *n == t.collection).map(|&(n, _)| n);
            if let Some(name) = name.filter(|n| !group.1.contains(n)) {
                group.1.push(name);
            }
        }
        group.2.push(re.as_str().to_string());
        group.3.push(item_index);
    }
    for (chain, collections, patterns, members) in pending {
        // The same options as each rule's own regex (`operators::regex`), so the same answers.
        let Ok(compiled) = RegexSetBuilder::new(&patterns)
            .unicode(false)
            .dot_matches_new_line(true)
            .size_limit(64 << 20)
            .dfa_size_limit(16 << 20)
            .build()
        else {
            continue;
        };
        let g = set.gates.len();
        set.gates.push(Group { chain, collections, set: compiled });
        for (pattern, item_index) in members.into_iter().enumerate() {
            if let Item::Rule(rule) = &mut set.items[item_index] {
                rule.gate = Some((g, pattern));
            }
        }
    }
}
