//! A SecLang (ModSecurity rule language) front end for the WAF, aimed at the OWASP Core
//! Rule Set: load the rule files users already have and run them in the linear-time engine.
//!
//! - `lexer`: files to directives (comments, `\` continuations, quoting);
//! - `actions`: the variable list and action list grammars of a rule;
//! - `parser`: directives to the `model` (rules, chains, markers, default actions, removals
//!   and target updates), every inexpressible construct a `LoadError` with file:line and id;
//! - `pcre`: PCRE spellings rewritten for the `regex` crate (same meaning, linear time);
//! - `operators`: `@rx` (regex crate: finite automata), `@pm`/`@pmFromFile` (Aho-Corasick),
//!   string, numeric, IP and validation operators, `@detectSQLi`/`@detectXSS` (libinjection
//!   ported to Rust);
//! - `transforms`: the `t:` names, mapped onto `filter::transform` or onto `decoders`;
//! - `request`: the request as rules see it (variables and collections);
//! - `files`: rule file lists (relative paths, `*.conf` patterns in name order);
//! - `gate`: request-variable `@rx` starters sharing a chain scanned as one `RegexSet` per phase;
//! - `eval`: phases 1 and 2 over a request: TX, macros, chains, skipAfter, ctl, scoring.
//!
//! Pure core: no nginx types.

pub mod actions;
mod decoders;
pub mod eval;
pub mod files;
pub mod gate;
pub mod lexer;
pub mod model;
pub mod operators;
pub mod parser;
pub mod pcre;
pub mod request;
pub mod transforms;

#[cfg(test)]
mod crs_tests;
#[cfg(test)]
mod tests;

pub use eval::{evaluate, Outcome};
pub use model::{LoadError, LoadErrorKind, RuleSet};
pub use parser::{load_files, load_text};
pub use request::Request;
