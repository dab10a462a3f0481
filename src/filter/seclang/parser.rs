//! Directives to the rule-set model: `SecRule` (and its chain links), `SecAction`,
//! `SecMarker`, `SecDefaultAction`, `SecRuleRemoveById/ByTag`, `SecRuleUpdateTargetById/ByTag`,
//! and the configuration directives that do not change detection. Every directive that
//! cannot be expressed is recorded as a `LoadError` with file:line and the rule id.

use std::path::Path;

use super::actions::{parse_actions, parse_id_ranges, parse_targets};
use super::lexer;
use super::model::*;
use super::operators::{self, Operator};

/// Directives accepted that change nothing this engine decides in phases 1-2 (or whose
/// effect belongs to the nginx side: body limits and access are nginx's).
const NO_EFFECT: &[&str] = &[
    "seccollectiontimeout",
    "secrequestbodyaccess",
    "secresponsebodyaccess",
    "secrequestbodylimit",
    "secrequestbodynofileslimit",
    "secrequestbodyinmemorylimit",
    "secrequestbodylimitaction",
    "secresponsebodymimetype",
    "secresponsebodylimit",
    "secresponsebodylimitaction",
    "secauditengine",
    "secauditlog",
    "secauditlogparts",
    "secauditlogtype",
    "secauditlogrelevantstatus",
    "secauditlogstoragedir",
    "secdebuglog",
    "secdebugloglevel",
    "secargumentseparator",
    "seccookieformat",
    "sectmpdir",
    "secdatadir",
    "secuploaddir",
    "secpcrematchlimit",
    "secpcrematchlimitrecursion",
    "secunicodemapfile",
    "secstatusengine",
];

#[derive(Default)]
pub struct Builder {
    pub set: RuleSet,
    /// The chain being built: links gathered until one without `chain`.
    pending: Option<Rule>,
}

impl Builder {
    pub fn error(&mut self, origin: &Origin, rule_id: Option<u32>, (kind, detail): (LoadErrorKind, String)) {
        self.set.errors.push(LoadError { origin: origin.clone(), rule_id, kind, detail });
    }

    /// Parses one file's text; `path` names it in errors and resolves `@pmFromFile`.
    pub fn add_text(&mut self, path: &Path, text: &str) {
        let file = path.display().to_string();
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let (directives, lex_errors) = lexer::directives(text);
        for (line, e) in lex_errors {
            self.error(&Origin { file: file.clone(), line }, None, (LoadErrorKind::Syntax, e));
        }
        for d in directives {
            let origin = Origin { file: file.clone(), line: d.line };
            self.directive(&origin, &d, &dir);
        }
        if let Some(rule) = self.pending.take().filter(|r| !r.links.is_empty()) {
            let origin = rule.links[0].origin.clone();
            self.error(
                &origin,
                Some(rule.id),
                (LoadErrorKind::Syntax, "chain without a following rule at end of file".into()),
            );
        }
    }

    fn directive(&mut self, origin: &Origin, d: &lexer::Directive, dir: &Path) {
        let name = d.name.to_ascii_lowercase();
        let arg = |i: usize| d.args.get(i).map(String::as_str);
        let missing = (LoadErrorKind::Syntax, format!("{} needs more arguments", d.name));
        match name.as_str() {
            "secrule" => match (arg(0), arg(1)) {
                (Some(vars), Some(op)) => self.rule(origin, Some(vars), op, arg(2).unwrap_or(""), dir),
                _ => self.error(origin, None, missing),
            },
            "secaction" => match arg(0) {
                Some(actions) => self.rule(origin, None, "@unconditionalMatch", actions, dir),
                None => self.error(origin, None, missing),
            },
            "secmarker" => match arg(0) {
                Some(m) => self.set.items.push(Item::Marker(m.to_string())),
                None => self.error(origin, None, missing),
            },
            "secdefaultaction" => match arg(0).map(parse_actions) {
                Some(Ok(a)) => {
                    let phase = a.phase.unwrap_or(Phase::RequestBody) as usize;
                    self.set.defaults[phase] =
                        DefaultAction { disruptive: a.disruptive, transforms: a.transforms, log: a.log };
                }
                Some(Err(e)) => self.error(origin, None, e),
                None => self.error(origin, None, missing),
            },
            "secruleengine" => match arg(0).map(str::to_ascii_lowercase).as_deref() {
                Some("on") => self.set.engine = Some(EngineMode::On),
                Some("off") => self.set.engine = Some(EngineMode::Off),
                Some("detectiononly") => self.set.engine = Some(EngineMode::DetectionOnly),
                _ => self.error(
                    origin,
                    None,
                    (LoadErrorKind::InvalidValue, "SecRuleEngine takes On, Off or DetectionOnly".into()),
                ),
            },
            "seccomponentsignature" => self.set.component_signatures.extend(arg(0).map(str::to_string)),
            "secruleremovebyid" => match parse_id_ranges(&d.args.join(" ")) {
                Some(ranges) => self
                    .set
                    .items
                    .retain(|i| !matches!(i, Item::Rule(r) if ranges.iter().any(|&(a, b)| (a..=b).contains(&r.id)))),
                None => self.error(
                    origin,
                    None,
                    (LoadErrorKind::InvalidValue, format!("invalid ids \"{}\"", d.args.join(" "))),
                ),
            },
            "secruleremovebytag" => {
                let tag = d.args.join(" ");
                self.set.items.retain(|i| !matches!(i, Item::Rule(r) if r.tags().contains(&tag)));
            }
            "secruleupdatetargetbyid" | "secruleupdatetargetbytag" => match (arg(0), arg(1)) {
                (Some(which), Some(targets)) => self.update_targets(origin, name.ends_with("byid"), which, targets),
                _ => self.error(origin, None, missing),
            },
            n if NO_EFFECT.contains(&n) => {}
            _ => self.error(origin, None, (LoadErrorKind::UnsupportedDirective, d.name.clone())),
        }
    }

    fn update_targets(&mut self, origin: &Origin, by_id: bool, which: &str, targets: &str) {
        let targets = match parse_targets(targets) {
            Ok(t) => t,
            Err(e) => return self.error(origin, None, e),
        };
        let ids = if by_id {
            match parse_id_ranges(which) {
                Some(ids) => ids,
                None => {
                    return self.error(origin, None, (LoadErrorKind::InvalidValue, format!("invalid ids \"{which}\"")))
                }
            }
        } else {
            Vec::new()
        };
        let mut found = false;
        for item in &mut self.set.items {
            if let Item::Rule(r) = item {
                let hit = if by_id {
                    ids.iter().any(|&(a, b)| (a..=b).contains(&r.id))
                } else {
                    r.tags().iter().any(|t| t == which)
                };
                if hit {
                    found = true;
                    r.links[0].targets.extend(targets.iter().cloned());
                }
            }
        }
        if !found && by_id {
            // Named after the missing rule, so leaving that rule out (`remove=`) forgives this too.
            self.error(
                origin,
                ids.first().map(|&(a, _)| a),
                (LoadErrorKind::InvalidValue, format!("SecRuleUpdateTargetById: no rule {which} loaded before it")),
            );
        }
    }

    fn rule(&mut self, origin: &Origin, vars: Option<&str>, op: &str, actions: &str, dir: &Path) {
        let starter_id = self.pending.as_ref().map(|r| r.id);
        let actions = match parse_actions(actions) {
            Ok(a) => a,
            Err(e) => {
                return self.fail_link(origin, starter_id.or_else(|| id_in(actions)), e, actions.contains("chain"))
            }
        };
        let id = starter_id.or(actions.id);
        let targets = match vars.map(parse_targets).transpose() {
            Ok(t) => t.unwrap_or_default(),
            Err(e) => return self.fail_link(origin, id, e, actions.chain),
        };
        let (negated, operator) = match parse_operator(op, dir) {
            Ok(o) => o,
            Err(e) => return self.fail_link(origin, id, e, actions.chain),
        };
        let chain = actions.chain;
        let phase = self.pending.as_ref().map_or(actions.phase.unwrap_or(Phase::RequestBody), |r| r.phase);
        let actions = self.with_defaults(actions, phase, starter_id.is_none());
        let link = RuleLink { origin: origin.clone(), targets, operator, negated, actions };
        match self.pending.take() {
            Some(mut rule) => {
                rule.links.push(link);
                self.finish(rule, chain);
            }
            None => {
                let Some(id) = link.actions.id else {
                    return self.error(origin, None, (LoadErrorKind::InvalidValue, "rule without an id".into()));
                };
                let phase = link.actions.phase.unwrap_or(Phase::RequestBody);
                self.finish(Rule { id, phase, links: vec![link], gate: None }, chain);
            }
        }
    }

    /// `SecDefaultAction` as it stands when the rule is read (it applies to the rules after
    /// it): its transformations go first unless `t:none`; a starter's `block` (or no
    /// disruptive action) becomes the default's disruptive action.
    fn with_defaults(&self, mut actions: Actions, phase: Phase, starter: bool) -> Actions {
        let default = &self.set.defaults[phase as usize];
        if !actions.transforms_reset {
            let mut chain = default.transforms.clone();
            chain.append(&mut actions.transforms);
            actions.transforms = chain;
            actions.transforms_reset = true;
        }
        if starter && matches!(actions.disruptive, None | Some(Disruptive::Block)) {
            actions.disruptive =
                Some(default.disruptive.filter(|d| *d != Disruptive::Block).unwrap_or(Disruptive::Pass));
        }
        if starter && actions.log.is_none() {
            actions.log = default.log;
        }
        actions
    }

    /// A link that could not be built: the whole rule is reported and dropped; if the link
    /// announced more links, they are swallowed into a placeholder so they are not taken for
    /// rules of their own.
    fn fail_link(&mut self, origin: &Origin, id: Option<u32>, e: (LoadErrorKind, String), chain: bool) {
        self.error(origin, id, e);
        self.pending = None;
        if chain {
            self.pending = Some(Rule { id: id.unwrap_or(0), phase: Phase::RequestBody, links: Vec::new(), gate: None });
        }
    }

    fn finish(&mut self, rule: Rule, chain: bool) {
        if chain {
            self.pending = Some(rule);
        } else if rule.links.first().is_some_and(|l| l.actions.id.is_some()) {
            // (A placeholder chain, see `fail_link`, starts with a link that has no id.)
            self.set.items.push(Item::Rule(rule));
        }
    }
}

/// The id of a rule whose actions did not parse, for the error message.
fn id_in(actions: &str) -> Option<u32> {
    let at = actions.find("id:")?;
    actions[at + 3..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

/// `@rx x`, `!@eq 0`, or a bare pattern (implicit `@rx`).
pub fn parse_operator(text: &str, dir: &Path) -> Result<(bool, Operator), (LoadErrorKind, String)> {
    let (negated, body) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (name, arg) = match body.strip_prefix('@') {
        Some(rest) => match rest.split_once(|c: char| c.is_ascii_whitespace()) {
            Some((n, a)) => (n, a),
            None => (rest, ""),
        },
        None => ("rx", body),
    };
    Ok((negated, operators::compile(name, arg, dir)?))
}

/// Loads files in order (as nginx would list them) into one rule set.
pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> RuleSet {
    let mut b = Builder::default();
    for p in paths {
        let p = p.as_ref();
        match std::fs::read_to_string(p) {
            Ok(text) => b.add_text(p, &text),
            Err(e) => b.error(
                &Origin { file: p.display().to_string(), line: 0 },
                None,
                (LoadErrorKind::InvalidValue, e.to_string()),
            ),
        }
    }
    super::gate::build(&mut b.set);
    b.set
}

/// Loads rule text held in memory (tests, inline rules); `@pmFromFile` resolves from `dir`.
pub fn load_text(name: &str, text: &str) -> RuleSet {
    let mut b = Builder::default();
    b.add_text(Path::new(name), text);
    super::gate::build(&mut b.set);
    b.set
}
