//! Input filtering on nginx's side. This folder owns:
//! - `directives`: the `shield_filter_*` handlers (every number range-checked at `nginx -t`);
//! - `inspect`: the rewrite-phase inspection (so a location that ends in `return` cannot
//!   bypass it), request-body reading that keeps the body for `proxy_pass`, the block response;
//! - `audit`: the audit log, opened by nginx with the cycle's files (reopened on USR1);
//! - `metrics`, `variables`: the counters and the `$shield_filter_*` values;
//! - `secrules`: `shield_filter_secrules` (SecLang files, the OWASP CRS) in place of the packs;
//! - this file: the per-location configuration, its merge, and the engines shared between
//!   locations whose rules are the same.

mod audit;
mod directives;
mod inspect;
mod metrics;
mod secrules;
mod variables;

use std::rc::Rc;

pub use directives::*;
pub use inspect::{rewrite, WafCtx};
pub use variables::{rules_variable, score_variable, status_variable};

use super::MainConf;
use crate::filter::ip::Cidr;
use crate::filter::rules::Rule;
use crate::filter::{self as waf, Engine, Exclusions, Limits};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Mode {
    #[default]
    Off,
    Block,
    Detect,
}

const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

#[derive(Default)]
pub struct WafLoc {
    mode: Option<Mode>,
    paranoia: Option<u8>,
    threshold: Option<u32>,
    status: Option<u16>,
    exclusions: Exclusions,
    custom: Option<Vec<Rule>>,
    limits: Option<Limits>,
    methods: Option<Vec<String>>,
    content_types: Option<Vec<String>>,
    allow: Option<Vec<Cidr>>,
    deny: Option<Vec<Cidr>>,
    scanners: Option<bool>,
    audit_log: Option<Option<audit::AuditLog>>,
    /// `shield_filter_inspect_headers`: the names, or empty for `all` (the default).
    inspect_headers: Option<Vec<String>>,
    /// `shield_filter_secrules`: `Some(None)` is `off`.
    secrules: Option<Option<Rc<secrules::SecRules>>>,
    /// Resolved at merge time: `shield_filter`, else on where SecLang rules are loaded.
    resolved_mode: Mode,
    /// Resolved at merge time when the filter is on here with the built-in packs.
    pub engine: Option<Rc<Engine>>,
}

impl WafLoc {
    pub fn merge(&mut self, prev: &WafLoc, mcf: &mut MainConf) -> Result<(), String> {
        self.mode = self.mode.or(prev.mode);
        self.paranoia = self.paranoia.or(prev.paranoia);
        self.threshold = self.threshold.or(prev.threshold);
        self.status = self.status.or(prev.status);
        // Exclusions accumulate: a location tunes on top of its server's tuning.
        let mut exclusions = prev.exclusions.clone();
        exclusions.extend(&self.exclusions);
        self.exclusions = exclusions;
        for (slot, parent) in [
            (&mut self.methods, &prev.methods),
            (&mut self.content_types, &prev.content_types),
            (&mut self.inspect_headers, &prev.inspect_headers),
        ] {
            if slot.is_none() {
                slot.clone_from(parent);
            }
        }
        if self.custom.is_none() {
            self.custom.clone_from(&prev.custom);
        }
        if self.limits.is_none() {
            self.limits.clone_from(&prev.limits);
        }
        if self.allow.is_none() {
            self.allow.clone_from(&prev.allow);
        }
        if self.deny.is_none() {
            self.deny.clone_from(&prev.deny);
        }
        // Settled here, once, so requests read them without cloning or rebuilding.
        self.limits.get_or_insert_with(Limits::default);
        self.inspect_headers.get_or_insert_with(Vec::new);
        self.scanners = self.scanners.or(prev.scanners);
        if self.audit_log.is_none() {
            self.audit_log = prev.audit_log;
        }
        if self.secrules.is_none() {
            self.secrules.clone_from(&prev.secrules);
        }
        let secrules = self.secrules.as_ref().is_some_and(Option::is_some);
        self.resolved_mode = self.mode.unwrap_or(if secrules { Mode::Block } else { Mode::Off });
        self.engine = None;
        // Where SecLang rules run, they replace the packs: no engine compiled for them.
        if self.resolved_mode != Mode::Off && !secrules {
            self.engine = Some(mcf.waf.engine(self.paranoia.unwrap_or(1), self.custom.as_deref().unwrap_or_default())?);
        }
        Ok(())
    }

    fn mode(&self) -> Mode {
        self.resolved_mode
    }

    /// The SecLang rule set this location runs, when the filter is on here.
    fn secrules(&self) -> Option<&secrules::SecRules> {
        self.secrules.as_ref()?.as_deref().filter(|_| self.resolved_mode != Mode::Off)
    }

    fn limits(&self) -> &Limits {
        self.limits.as_ref().expect("settled at merge")
    }

    fn threshold(&self) -> u32 {
        self.threshold.unwrap_or(waf::DEFAULT_THRESHOLD)
    }
}

/// Engines are shared between locations with the same paranoia level and the same custom
/// rules — compared whole (pattern, targets, transforms, score...), not by id: two locations
/// whose rules share an id but differ in pattern get an engine each.
#[derive(Default)]
pub struct WafMain {
    engines: Vec<(u8, Vec<Rule>, Rc<Engine>)>,
    /// SecLang rule sets of this configuration cycle, one per distinct file list.
    secrules: Vec<secrules::Compiled>,
    slots: Option<metrics::Slots>,
}

impl WafMain {
    fn engine(&mut self, paranoia: u8, custom: &[Rule]) -> Result<Rc<Engine>, String> {
        if let Some((_, _, e)) = self.engines.iter().find(|(p, rules, _)| *p == paranoia && rules == custom) {
            return Ok(e.clone());
        }
        let engine = Rc::new(Engine::new(paranoia, custom)?);
        self.engines.push((paranoia, custom.to_vec(), engine.clone()));
        Ok(engine)
    }
}
