//! Rule file lists as operators write them: paths relative to a prefix, and `*`/`?` patterns
//! in the last component expanded in name order (what nginx's `include` and Debian's
//! `owasp-crs.load` do).

use std::path::{Path, PathBuf};

/// A path or a pattern with `*`/`?` in its last component, relative to `prefix` unless
/// absolute; matches come in name order (as nginx's `include` and Debian's `owasp-crs.load`
/// list them). A pattern that matches nothing is an error: a WAF loading no rules silently
/// would be worse than one that refuses to start.
pub fn expand(prefix: &str, arg: &str) -> Result<Vec<PathBuf>, String> {
    let path = if arg.starts_with('/') { PathBuf::from(arg) } else { Path::new(prefix).join(arg) };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !name.contains(['*', '?']) {
        if !path.is_file() {
            return Err(format!("cannot open \"{}\"", path.display()));
        }
        return Ok(vec![path]);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read \"{}\": {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| wildcard(name.as_bytes(), e.file_name().as_encoded_bytes()) && e.path().is_file())
        .map(|e| e.path())
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!("no file matches \"{}\"", path.display()));
    }
    Ok(found)
}

/// Shell wildcards `*` and `?` over one file name (a leading `.` is not matched by them).
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    // Iterative matching with one backtrack point: linear in practice, no recursion.
    let (mut p, mut n, mut star, mut mark) = (0, 0, None, 0);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_names_as_the_shell_does() {
        assert!(wildcard(b"*.conf", b"REQUEST-901-INITIALIZATION.conf"));
        assert!(!wildcard(b"*.conf", b"crawlers-user-agents.data"));
        assert!(wildcard(b"REQUEST-9??-*.conf", b"REQUEST-942-APPLICATION-ATTACK-SQLI.conf"));
        assert!(!wildcard(b"*.conf", b".hidden.conf"));
        assert!(wildcard(b"a*b*c", b"aXbYbZc"));
        assert!(!wildcard(b"a*b*c", b"aXbYbZ"));
    }

    #[test]
    fn patterns_expand_in_name_order_relative_to_the_prefix() {
        let dir = std::env::temp_dir().join(format!("shield-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        for f in ["b.conf", "a.conf", "c.data"] {
            std::fs::write(dir.join("rules").join(f), "").unwrap();
        }
        let prefix = format!("{}/", dir.display());
        let got = expand(&prefix, "rules/*.conf").unwrap();
        assert_eq!(got, vec![dir.join("rules/a.conf"), dir.join("rules/b.conf")]);
        assert_eq!(expand(&prefix, "rules/c.data").unwrap(), vec![dir.join("rules/c.data")]);
        assert!(expand(&prefix, "rules/*.yaml").unwrap_err().contains("no file matches"));
        assert!(expand(&prefix, "rules/missing.conf").unwrap_err().contains("cannot open"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
