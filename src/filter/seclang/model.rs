//! The parsed rule set as plain data: rules (with their chain links), markers, default
//! actions per phase, and the load errors met on the way. Nothing here evaluates anything;
//! `eval.rs` walks this model, `parser.rs` builds it.

use super::operators::Operator;
use super::transforms::SecTransform;

/// Where a directive came from: every load error and every rule carries it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A directive or rule the engine cannot express. Loading never skips one silently: the
/// rule set records the error, and a strict load refuses the whole set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub origin: Origin,
    /// The id of the rule (or of its chain starter), when the directive has one.
    pub rule_id: Option<u32>,
    pub kind: LoadErrorKind,
    pub detail: String,
}

/// What went wrong, as a closed set so tests can assert which errors a rule file produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoadErrorKind {
    /// Unbalanced quotes, a missing argument: the text is not SecLang.
    Syntax,
    /// A directive this engine does not implement (`SecRuleScript`, `Include`...).
    UnsupportedDirective,
    /// A variable this engine does not know.
    UnsupportedVariable,
    /// An operator this engine does not implement (`@rbl`, `@geoLookup`...).
    UnsupportedOperator,
    /// An `@rx` pattern the linear-time engine rejects (backreferences, lookaround).
    UnsupportedRegex,
    UnsupportedTransform,
    UnsupportedAction,
    /// A value that does not make sense (`phase:9`, `id:abc`, a missing `@pmFromFile` file).
    InvalidValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    RequestHeaders = 1,
    RequestBody = 2,
    ResponseHeaders = 3,
    ResponseBody = 4,
    Logging = 5,
}

impl Phase {
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s.to_ascii_lowercase().as_str() {
            "1" | "request_headers" => Phase::RequestHeaders,
            "2" | "request" => Phase::RequestBody,
            "3" | "response_headers" => Phase::ResponseHeaders,
            "4" | "response" => Phase::ResponseBody,
            "5" | "logging" => Phase::Logging,
            _ => return None,
        })
    }
}

/// How the evaluator produces a variable in phases 1-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariableKind {
    /// Derived from the request alone: computed once per phase, and the same for every rule.
    Request,
    /// Read when a rule asks (collections rules write, the last match, the body processor a
    /// `ctl` may change).
    Live,
    /// Known and empty here: the response, persistent or external data not built here.
    Empty,
}

/// Every variable this engine accepts in a target list: the one table the parser checks
/// names against and the evaluator caches the request variables from.
pub const VARIABLES: &[(&str, VariableKind)] = {
    use VariableKind::*;
    &[
        ("ARGS", Request),
        ("ARGS_NAMES", Request),
        ("ARGS_GET", Request),
        ("ARGS_GET_NAMES", Request),
        ("ARGS_POST", Request),
        ("ARGS_POST_NAMES", Request),
        ("ARGS_COMBINED_SIZE", Request),
        ("REQUEST_HEADERS", Request),
        ("REQUEST_HEADERS_NAMES", Request),
        ("REQUEST_COOKIES", Request),
        ("REQUEST_COOKIES_NAMES", Request),
        ("REQUEST_URI", Request),
        ("REQUEST_URI_RAW", Request),
        ("REQUEST_FILENAME", Request),
        ("REQUEST_BASENAME", Request),
        ("REQUEST_LINE", Request),
        ("REQUEST_METHOD", Request),
        ("REQUEST_PROTOCOL", Request),
        ("QUERY_STRING", Request),
        ("REQUEST_BODY", Request),
        ("REQUEST_BODY_LENGTH", Request),
        ("FILES", Request),
        ("FILES_NAMES", Request),
        ("XML", Request),
        ("REMOTE_ADDR", Request),
        ("REQBODY_PROCESSOR", Live),
        ("REQBODY_ERROR", Live),
        ("MULTIPART_STRICT_ERROR", Live),
        ("TX", Live),
        ("IP", Live),
        ("GLOBAL", Live),
        ("SESSION", Live),
        ("USER", Live),
        ("RESOURCE", Live),
        ("MATCHED_VAR", Live),
        ("MATCHED_VARS", Live),
        ("MATCHED_VAR_NAME", Live),
        ("MATCHED_VARS_NAMES", Live),
        ("UNIQUE_ID", Live),
        ("DURATION", Live),
        ("FILES_COMBINED_SIZE", Request),
        ("FILES_SIZES", Request),
        ("MULTIPART_PART_HEADERS", Request),
        ("REMOTE_PORT", Empty),
        ("SERVER_NAME", Empty),
        ("SERVER_PORT", Empty),
        ("TIME", Empty),
        ("TIME_EPOCH", Empty),
        ("RESPONSE_BODY", Empty),
        ("RESPONSE_STATUS", Empty),
        ("RESPONSE_HEADERS", Empty),
        ("RESPONSE_HEADERS_NAMES", Empty),
        ("RESPONSE_PROTOCOL", Empty),
        ("RESPONSE_CONTENT_TYPE", Empty),
        ("RESPONSE_CONTENT_LENGTH", Empty),
        ("GEO", Empty),
        ("ENV", Empty),
    ]
};

/// The kind of an upper-cased variable name, `None` for a name this engine does not know.
pub fn variable_kind(name: &str) -> Option<VariableKind> {
    VARIABLES.iter().find(|(n, _)| *n == name).map(|&(_, k)| k)
}

/// One variable of a rule's target list: `ARGS`, `ARGS:foo`, `&TX:x`, `!ARGS:/^json\./`.
#[derive(Debug, Clone)]
pub struct Target {
    /// Upper-cased collection or variable name: `ARGS`, `REQUEST_HEADERS`, `TX`.
    pub collection: String,
    pub selector: Option<Selector>,
    /// `&ARGS`: the number of values instead of the values.
    pub count: bool,
    /// `!ARGS:x`: removes matching values from the rest of the list.
    pub exclude: bool,
}

#[derive(Debug, Clone)]
pub enum Selector {
    /// Compared case-insensitively with the key (lower-cased here).
    Key(String),
    /// `/regex/`, matched against the key.
    Regex(regex::bytes::Regex),
    /// `XML:/xpath`: the path as written.
    XPath(String),
}

impl Selector {
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Selector::Key(k) => key.eq_ignore_ascii_case(k.as_bytes()),
            Selector::Regex(re) => re.is_match(key),
            Selector::XPath(_) => true,
        }
    }
}

/// The `setvar` forms the CRS uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetVar {
    /// `tx.x=value` (value may hold macros).
    Assign { collection: String, key: String, value: String },
    /// `tx.x=+5`, `tx.x=-%{tx.y}`.
    Add { collection: String, key: String, value: String, negative: bool },
    /// `!tx.x`.
    Delete { collection: String, key: String },
}

/// `ctl:` actions: changes to the running transaction.
#[derive(Debug, Clone)]
pub enum Ctl {
    RuleEngine(EngineMode),
    RuleRemoveById(Vec<(u32, u32)>),
    RuleRemoveByTag(String),
    RuleRemoveTargetById(Vec<(u32, u32)>, Target),
    RuleRemoveTargetByTag(String, Target),
    RequestBodyProcessor(String),
    /// Accepted and without effect on detection here (audit log parts, body limits...);
    /// the name is kept for the report.
    NoEffect(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    On,
    Off,
    DetectionOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruptive {
    Pass,
    /// Resolved by the parser to the `SecDefaultAction` in force where the rule is read.
    Block,
    Deny,
    Drop,
    Allow,
    Redirect,
}

/// Every action of one rule (or chain link), parsed.
#[derive(Debug, Clone, Default)]
pub struct Actions {
    pub id: Option<u32>,
    pub phase: Option<Phase>,
    pub chain: bool,
    pub disruptive: Option<Disruptive>,
    pub status: Option<u16>,
    pub skip_after: Option<String>,
    pub skip: Option<u32>,
    /// `t:none` seen: the default transformations are dropped.
    pub transforms_reset: bool,
    pub transforms: Vec<SecTransform>,
    pub setvars: Vec<SetVar>,
    pub ctls: Vec<Ctl>,
    pub capture: bool,
    pub multi_match: bool,
    pub log: Option<bool>,
    pub msg: Option<String>,
    pub logdata: Option<String>,
    pub tags: Vec<String>,
    pub severity: Option<u8>,
    pub ver: Option<String>,
}

/// One `SecRule` (a link of a chain, or a whole unchained rule) or `SecAction` (no targets,
/// unconditional operator).
#[derive(Debug, Clone)]
pub struct RuleLink {
    pub origin: Origin,
    pub targets: Vec<Target>,
    pub operator: Operator,
    pub negated: bool,
    pub actions: Actions,
}

/// A rule as the engine runs it: the chain starter and the links that must all match.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: u32,
    pub phase: Phase,
    pub links: Vec<RuleLink>,
    /// `(group, pattern)` in `RuleSet::gates` when the starter is answered by a set first.
    pub gate: Option<(usize, usize)>,
}

impl Rule {
    pub fn tags(&self) -> &[String] {
        &self.links[0].actions.tags
    }
}

/// An entry of a phase's ordered program.
#[derive(Debug, Clone)]
pub enum Item {
    Rule(Rule),
    Marker(String),
}

/// `SecDefaultAction` for one phase.
#[derive(Debug, Clone, Default)]
pub struct DefaultAction {
    pub disruptive: Option<Disruptive>,
    pub transforms: Vec<SecTransform>,
    pub log: Option<bool>,
}

#[derive(Debug, Default)]
pub struct RuleSet {
    /// In file order; markers stay in place (every phase sees them, as ModSecurity does).
    pub items: Vec<Item>,
    /// Indexed by phase number (1..=5).
    pub defaults: [DefaultAction; 6],
    pub engine: Option<EngineMode>,
    pub component_signatures: Vec<String>,
    pub errors: Vec<LoadError>,
    /// The set-driven gate's groups (see `gate.rs`).
    pub gates: Vec<super::gate::Group>,
}

impl RuleSet {
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.items.iter().filter_map(|i| match i {
            Item::Rule(r) => Some(r),
            Item::Marker(_) => None,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules().count()
    }

    /// Leaves out the rules whose id is in `ranges`, and forgives their load errors: what an
    /// operator asks for to run a rule set without the few rules this engine cannot express
    /// (or does not want), instead of refusing the whole set.
    pub fn remove_ids(&mut self, ranges: &[(u32, u32)]) {
        let listed = |id: u32| ranges.iter().any(|&(a, b)| (a..=b).contains(&id));
        self.items.retain(|i| !matches!(i, Item::Rule(r) if listed(r.id)));
        self.errors.retain(|e| !e.rule_id.is_some_and(listed));
    }
}
