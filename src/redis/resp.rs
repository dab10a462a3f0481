//! RESP2 framing: command encoding (appended to one buffer for pipelining) and an incremental
//! reply decoder that says `Ok(None)` until a whole reply is buffered. Lengths and nesting are
//! bounded so a broken or hostile server cannot make a worker allocate without limit.

use core::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis protocol error: {}", self.0)
    }
}

const MAX_BULK: i64 = 512 << 20;
const MAX_ARRAY: i64 = 1 << 20;
const MAX_DEPTH: usize = 32;
const MAX_LINE: usize = 64 << 10;

/// Appends `*N\r\n$len\r\narg\r\n...` for one command.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_array_header(out, args.len());
    for arg in args {
        push_bulk(out, arg);
    }
}

/// Appends the header of an array of `len` elements: `*<len>\r\n`.
pub fn push_array_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    push_dec(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string: `$<len>\r\n<bytes>\r\n`.
pub fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    push_bulk_header(out, bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends the header of a bulk string of `len` bytes: `$<len>\r\n`.
pub fn push_bulk_header(out: &mut Vec<u8>, len: usize) {
    out.push(b'$');
    push_dec(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `v` (no formatting machinery, no allocation); also used for
/// HTTP header values.
pub fn push_dec(out: &mut Vec<u8>, v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = v;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Decodes one reply from the start of `buf`: `Ok(Some((reply, bytes used)))`, `Ok(None)` if
/// incomplete, or an error for bytes that can never become a valid reply.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let mut pos = 0;
    Ok(parse(buf, &mut pos, 0)?.map(|r| (r, pos)))
}

fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, ProtocolError> {
    let rest = &buf[*pos..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            *pos += end + 2;
            Ok(Some(&rest[..end]))
        }
        None if rest.len() > MAX_LINE => Err(ProtocolError("line too long")),
        None => Ok(None),
    }
}

fn int(bytes: &[u8]) -> Result<i64, ProtocolError> {
    core::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or(ProtocolError("invalid integer"))
}

fn parse(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Reply>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("nesting too deep"));
    }
    let Some(&kind) = buf.get(*pos) else { return Ok(None) };
    *pos += 1;
    let Some(head) = line(buf, pos)? else { return Ok(None) };
    let text = || String::from_utf8_lossy(head).into_owned();
    Ok(Some(match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Integer(int(head)?),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some(Reply::Bulk(None)));
            }
            if n > MAX_BULK {
                return Err(ProtocolError("bulk string too long"));
            }
            let n = n as usize;
            if buf.len() < *pos + n + 2 {
                return Ok(None);
            }
            if &buf[*pos + n..*pos + n + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not terminated"));
            }
            let data = buf[*pos..*pos + n].to_vec();
            *pos += n + 2;
            Reply::Bulk(Some(data))
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some(Reply::Array(None)));
            }
            if n > MAX_ARRAY {
                return Err(ProtocolError("array too long"));
            }
            let mut items = Vec::with_capacity((n as usize).min(64));
            for _ in 0..n {
                match parse(buf, pos, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Reply::Array(Some(items))
        }
        _ => return Err(ProtocolError("unknown reply type")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn decodes_every_type() {
        let cases: Vec<(&[u8], Reply)> = vec![
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"-NOSCRIPT x\r\n", Reply::Error("NOSCRIPT x".into())),
            (b":-42\r\n", Reply::Integer(-42)),
            (b"$3\r\na\r\n\r\n", Reply::Bulk(Some(b"a\r\n".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (b"*2\r\n:1\r\n*1\r\n+x\r\n", Reply::Array(Some(vec![Reply::Integer(1), Reply::Array(Some(vec![Reply::Simple("x".into())]))]))),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode(bytes).unwrap(), Some((expected, bytes.len())));
        }
    }

    #[test]
    fn every_split_point_is_incomplete_then_whole() {
        let stream: &[u8] = b"*3\r\n:1\r\n$5\r\nhello\r\n*2\r\n+a\r\n$-1\r\n+NEXT\r\n";
        let first_len = stream.len() - b"+NEXT\r\n".len();
        for cut in 0..first_len {
            assert_eq!(decode(&stream[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (reply, used) = decode(stream).unwrap().unwrap();
        assert_eq!(used, first_len);
        assert!(matches!(reply, Reply::Array(Some(ref v)) if v.len() == 3));
        assert_eq!(decode(&stream[used..]).unwrap(), Some((Reply::Simple("NEXT".into()), 7)));
    }

    #[test]
    fn garbage_and_absurd_lengths_are_errors_not_allocations() {
        assert!(decode(b"?x\r\n").is_err());
        assert!(decode(b":12a\r\n").is_err());
        assert!(decode(b"$99999999999\r\n").is_err());
        assert!(decode(b"*99999999999\r\n").is_err());
        assert!(decode(b"$1\r\nab\r\n").is_err());
        let deep = "*1\r\n".repeat(40) + ":1\r\n";
        assert!(decode(deep.as_bytes()).is_err());
        assert!(decode(&vec![b'+'; MAX_LINE + 10]).is_err());
    }
}
