//! What a location's rewrite-module code does, read from its compiled code words: whether it
//! can answer the request in the rewrite phase (`return`, `rewrite ... redirect|permanent` or
//! to an absolute URL) and which variables its `set` directives assign. The limiter runs in
//! the rewrite phase, before those codes, in a location that can answer there; a key using a
//! variable the same location assigns would be read before `set` ran, so it is refused.
//!
//! nginx compiles a location's `return`, `rewrite`, `set` and `if` (with the directives
//! inside the `if`) into one array of pointer-sized words: each code starts with the address
//! of its C function, followed by its operands. Codes have different lengths and the array
//! holds inline strings, so it cannot be walked code by code from outside; it is scanned word
//! by word for the addresses of the functions that matter (a string would have to spell a
//! function's exact address, zero bytes included, to be mistaken for one).

/// The addresses of the script functions the scan looks for.
#[derive(Debug, Clone, Copy)]
pub struct CodeAddrs {
    /// `ngx_http_script_return_code`: `return`.
    pub return_code: usize,
    /// `ngx_http_script_regex_end_code`, whose next word holds its flags: `rewrite`.
    pub regex_end_code: usize,
    /// `ngx_http_script_set_var_code`, whose next word is the variable's index: `set`.
    pub set_var_code: usize,
}

/// The `redirect` flag of `ngx_http_script_regex_end_code_t` (`uri:1, args:1, add_args:1,
/// redirect:1`, laid out from the least significant bit by the C compilers nginx supports).
pub const REGEX_END_REDIRECT: usize = 1 << 3;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The codes can answer the request in the rewrite phase.
    pub answers: bool,
    /// Indices of the variables `set` assigns.
    pub assigned: Vec<usize>,
}

pub fn scan(words: &[usize], addrs: &CodeAddrs) -> Scan {
    let mut out = Scan::default();
    for (i, &w) in words.iter().enumerate() {
        let operand = words.get(i + 1).copied();
        let redirect = w == addrs.regex_end_code && operand.is_some_and(|f| f & REGEX_END_REDIRECT != 0);
        if w == addrs.return_code || redirect {
            out.answers = true;
        } else if w == addrs.set_var_code {
            if let Some(index) = operand {
                out.assigned.push(index);
            }
        }
    }
    out
}

/// The names of the variables a complex value (`$a:${b}x`) reads, without `$`; regex
/// captures (`$1`) are not variables.
pub fn key_variables(source: &str) -> Vec<&str> {
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let braced = bytes.get(i + 1) == Some(&b'{');
        let start = i + 1 + braced as usize;
        let len = bytes[start..].iter().take_while(|&&b| name_char(b)).count();
        let name = &source[start..start + len];
        if !name.is_empty() && !name.as_bytes()[0].is_ascii_digit() && !out.contains(&name) {
            out.push(name);
        }
        i = if len == 0 { i + 1 } else { start + len };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: CodeAddrs = CodeAddrs { return_code: 0x5000, regex_end_code: 0x6000, set_var_code: 0x7000 };

    #[test]
    fn finds_return_redirects_and_assigned_variables() {
        assert_eq!(scan(&[], &A), Scan::default());
        // if ($arg_x) { return 403; }: an if code, a variable code, then the return inside.
        let words = [0x1000, 0, 0x2000, 7, 0x5000, 403, 0, 0, 0];
        assert!(scan(&words, &A).answers);
        // set $k $arg_k; set $j 1;
        let words = [0x2000, 9, 0x7000, 42, 0x3000, 1, 0x7000, 43, 0];
        assert_eq!(scan(&words, &A), Scan { answers: false, assigned: vec![42, 43] });
    }

    #[test]
    fn only_a_redirecting_rewrite_answers() {
        let internal = [0x6000, 0b0011, 0];
        assert!(!scan(&internal, &A).answers, "rewrite ... last/break goes on to a location");
        let redirect = [0x6000, 0b1001, 0];
        assert!(scan(&redirect, &A).answers, "rewrite ... redirect answers");
        assert!(!scan(&[0x6000], &A).answers, "a truncated code is not read past the end");
        assert_eq!(scan(&[0x7000], &A).assigned, Vec::<usize>::new());
    }

    #[test]
    fn key_variables_are_named_without_captures() {
        assert_eq!(key_variables("$binary_remote_addr"), ["binary_remote_addr"]);
        assert_eq!(key_variables("${host}:$k-$1$k"), ["host", "k"]);
        assert_eq!(key_variables("plain"), Vec::<&str>::new());
        assert_eq!(key_variables("$"), Vec::<&str>::new());
        assert_eq!(key_variables("a$$b"), ["b"]);
    }
}
