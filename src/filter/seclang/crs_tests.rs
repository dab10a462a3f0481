//! Debian's CRS 3.3.4 (`apt-get install modsecurity-crs`, listed in scripts/lib.sh) loaded
//! whole, and classic attacks and benign requests run through it at paranoia level 1.
//! Without the package these tests fail with a message saying how to install it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

const RULES_DIR: &str = "/usr/share/modsecurity-crs/rules";
const SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";

/// The files in the order Debian's `owasp-crs.load` includes them.
fn crs_files() -> Vec<PathBuf> {
    let missing = format!("{RULES_DIR} or {SETUP} is missing: install Debian's CRS with `apt-get install modsecurity-crs` (scripts/lib.sh does)");
    assert!(PathBuf::from(RULES_DIR).is_dir() && PathBuf::from(SETUP).is_file(), "{missing}");
    let mut rules: Vec<PathBuf> = std::fs::read_dir(RULES_DIR)
        .expect("rules dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    rules.sort();
    let mut files = vec![PathBuf::from(SETUP)];
    files.extend(["/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"].map(PathBuf::from).into_iter().filter(|p| p.is_file()));
    files.extend(rules);
    files.extend(["/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"].map(PathBuf::from).into_iter().filter(|p| p.is_file()));
    files
}

#[test]
fn crs_loads_with_only_listed_errors() {
    let set = load_files(&crs_files());
    let mut by_kind: BTreeMap<LoadErrorKind, Vec<String>> = BTreeMap::new();
    for e in &set.errors {
        let line = format!("{} rule {} : {}", e.origin, e.rule_id.map_or("-".into(), |i| i.to_string()), e.detail);
        println!("load error {:?}: {line}", e.kind);
        by_kind.entry(e.kind).or_default().push(line);
    }
    println!("{} rules loaded, {} load errors", set.rule_count(), set.errors.len());
    panic!("see above");
}
