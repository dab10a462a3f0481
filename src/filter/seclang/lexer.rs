//! SecLang's lexical layer: a rule file becomes a list of directives, each a name and its
//! arguments, with the line it starts on.
//!
//! The rules are Apache's configuration syntax, which ModSecurity keeps on every server:
//! - a line whose first non-blank character is `#` is a comment;
//! - a `\` at the very end of a line joins the next line to it (the newline is dropped);
//! - arguments are separated by blanks; an argument may be quoted with `"` or `'`, inside
//!   which `\` followed by the quote character is the quote itself and every other `\` is
//!   kept as it is (so regexes keep their escapes: `"@rx ^\d+$"`).
//!
//! Errors are `(line, message)`; the parser adds the file name.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub line: usize,
    pub name: String,
    pub args: Vec<String>,
}

/// Splits a whole file into directives. One bad line is reported and the rest still lexed,
/// so a file's every problem shows in one load.
pub fn directives(text: &str) -> (Vec<Directive>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, first)) = lines.next() {
        let start = index + 1;
        let mut logical = String::new();
        let mut current = first;
        loop {
            let trimmed_end = current.trim_end_matches(['\r']);
            match trimmed_end.strip_suffix('\\') {
                Some(head) => {
                    logical.push_str(head);
                    match lines.next() {
                        Some((_, next)) => current = next,
                        None => break,
                    }
                }
                None => {
                    logical.push_str(trimmed_end);
                    break;
                }
            }
        }
        let body = logical.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        match words(body) {
            Ok(mut words) if !words.is_empty() => {
                let name = words.remove(0);
                out.push(Directive { line: start, name, args: words });
            }
            Ok(_) => {}
            Err(e) => errors.push((start, e)),
        }
    }
    (out, errors)
}

/// Splits one logical line into words, honouring the quoting rules above.
pub fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        let mut word = String::new();
        if c == '"' || c == '\'' {
            let quote = c;
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\\' && chars.peek() == Some(&quote) {
                    word.push(quote);
                    chars.next();
                } else if c == quote {
                    closed = true;
                    break;
                } else {
                    word.push(c);
                }
            }
            if !closed {
                return Err(format!("unterminated {quote} quote"));
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(format!("unexpected text after the closing {quote} quote"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_comments_and_quotes() {
        let text = "# a comment\n  # indented comment\nSecRule ARGS \"@rx ^\\d+\\\"x$\" \\\n    \"id:1,\\\n    phase:2,msg:'a b'\"\n\nSecMarker END\n";
        let (dirs, errors) = directives(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(dirs.len(), 2);
        assert_eq!(dirs[0].line, 3);
        assert_eq!(dirs[0].name, "SecRule");
        assert_eq!(dirs[0].args, vec!["ARGS", "@rx ^\\d+\"x$", "id:1,    phase:2,msg:'a b'"]);
        assert_eq!(dirs[1], Directive { line: 7, name: "SecMarker".into(), args: vec!["END".into()] });
    }

    #[test]
    fn single_quotes_and_unterminated() {
        assert_eq!(words("SecMarker 'END X'").unwrap(), vec!["SecMarker", "END X"]);
        assert_eq!(words(r"a 'it\'s' \n").unwrap(), vec!["a", "it's", r"\n"]);
        assert!(words("SecRule ARGS \"@rx x").is_err());
        assert!(words("SecRule \"a\"b").is_err());
        let (dirs, errors) = directives("SecRule ARGS \"x\nSecMarker A\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, 1);
        assert_eq!(dirs.len(), 1, "the line after a bad one is still read");
    }

    #[test]
    fn continuation_at_end_of_file_and_crlf() {
        let (dirs, errors) = directives("SecAction \\\r\n \"id:1,pass\"\r\n");
        assert!(errors.is_empty());
        assert_eq!(dirs[0].args, vec!["id:1,pass"]);
        let (dirs, _) = directives("SecMarker A \\");
        assert_eq!(dirs[0].args, vec!["A"]);
    }
}
