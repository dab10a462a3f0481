//! RESP2 framing: command encoding and an incremental reply decoder. No I/O.
//!
//! [`decode`] parses one reply from the front of a buffer and answers
//! [`Decoded::Incomplete`] when the buffer ends inside it, whatever the byte boundary, so the
//! caller keeps reading and tries again. Lengths and nesting are bounded and checked before
//! anything is allocated; garbage is a [`ProtocolError`], never a panic.

/// Largest bulk string accepted (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: usize = 512 << 20;
/// Most elements in one array.
pub const MAX_ARRAY: usize = 1 << 20;
/// Deepest array nesting.
pub const MAX_DEPTH: usize = 32;
/// Longest header, simple-string or error line: a peer that sends more without CRLF is broken.
pub const MAX_LINE: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    /// `None` is the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether this is an error reply whose code (first word) is `code`, e.g. `NOSCRIPT`.
    pub fn is_error(&self, code: &str) -> bool {
        matches!(self, Reply::Error(e) if e.split(|&b| b == b' ').next() == Some(code.as_bytes()))
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("unknown RESP type byte 0x{0:02x}")]
    UnknownType(u8),
    #[error("invalid integer or length")]
    BadInteger,
    #[error("invalid line ending")]
    BadLineEnding,
    #[error("line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("bulk string longer than {MAX_BULK} bytes")]
    BulkTooLong,
    #[error("array longer than {MAX_ARRAY} elements")]
    ArrayTooLong,
    #[error("arrays nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A reply and the number of bytes it took from the front of the buffer.
    Complete(Reply, usize),
    /// The buffer ends inside the reply: read more and call again with the whole buffer.
    Incomplete,
}

/// Decodes the first reply in `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProtocolError> {
    Ok(match reply(buf, 0, 0)? {
        Some((r, end)) => Decoded::Complete(r, end),
        None => Decoded::Incomplete,
    })
}

type Step<T> = Result<Option<(T, usize)>, ProtocolError>;

fn reply(buf: &[u8], pos: usize, depth: usize) -> Step<Reply> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((line, next)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(line.to_vec()), next))),
        b'-' => Ok(Some((Reply::Error(line.to_vec()), next))),
        b':' => Ok(Some((Reply::Integer(integer(line)?), next))),
        b'$' => {
            let Some(len) = length(line, MAX_BULK, ProtocolError::BulkTooLong)? else {
                return Ok(Some((Reply::Bulk(None), next)));
            };
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::BadLineEnding);
            }
            Ok(Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        b'*' => {
            let Some(len) = length(line, MAX_ARRAY, ProtocolError::ArrayTooLong)? else {
                return Ok(Some((Reply::Array(None), next)));
            };
            if len > 0 && depth >= MAX_DEPTH {
                return Err(ProtocolError::TooDeep);
            }
            // Grow with the bytes actually received, not with the announced length.
            let mut items = Vec::with_capacity(len.min(64));
            let mut pos = next;
            for _ in 0..len {
                let Some((item, after)) = reply(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = after;
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        other => Err(ProtocolError::UnknownType(other)),
    }
}

/// The bytes up to the next CRLF, and the position after it.
fn line(buf: &[u8], pos: usize) -> Step<&[u8]> {
    let rest = &buf[pos.min(buf.len())..];
    match rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if rest[i] == b'\n' => Err(ProtocolError::BadLineEnding),
        Some(i) => match rest.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&rest[..i], pos + i + 2))),
            Some(_) => Err(ProtocolError::BadLineEnding),
        },
        None if rest.len() > MAX_LINE => Err(ProtocolError::LineTooLong),
        None => Ok(None),
    }
}

fn integer(line: &[u8]) -> Result<i64, ProtocolError> {
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(ProtocolError::BadInteger);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(ProtocolError::BadInteger);
        }
        let digit = i64::from(d - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| if negative { n.checked_sub(digit) } else { n.checked_add(digit) })
            .ok_or(ProtocolError::BadInteger)?;
    }
    Ok(n)
}

/// A bulk or array length: `None` for -1 (null), bounded by `max`.
fn length(line: &[u8], max: usize, too_long: ProtocolError) -> Result<Option<usize>, ProtocolError> {
    match integer(line)? {
        -1 => Ok(None),
        n if n < 0 => Err(ProtocolError::BadInteger),
        n if n as u64 > max as u64 => Err(too_long),
        n => Ok(Some(n as usize)),
    }
}

/// Writes one command (an array of bulk strings) with a known argument count; appends to the
/// caller's buffer so several commands pipeline in one write.
pub struct CommandWriter<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
}

impl<'a> CommandWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>, argc: usize) -> CommandWriter<'a> {
        out.push(b'*');
        push_decimal(out, argc as u64);
        out.extend_from_slice(b"\r\n");
        CommandWriter { out, left: argc }
    }

    pub fn arg(&mut self, bytes: &[u8]) -> &mut Self {
        debug_assert!(self.left > 0, "more arguments than announced");
        self.left = self.left.saturating_sub(1);
        self.out.push(b'$');
        push_decimal(self.out, bytes.len() as u64);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(bytes);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// A number argument, in decimal.
    pub fn int(&mut self, n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let len = decimal(&mut digits, n);
        self.arg(&digits[20 - len..])
    }
}

impl Drop for CommandWriter<'_> {
    fn drop(&mut self) {
        debug_assert!(self.left == 0, "{} announced arguments missing", self.left);
    }
}

/// Appends one command made of `args`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut w = CommandWriter::new(out, args.len());
    for a in args {
        w.arg(a);
    }
}

/// Writes `n` right-aligned into `buf`; returns the digit count.
fn decimal(buf: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = 20;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return 20 - i;
        }
    }
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let len = decimal(&mut digits, n);
    out.extend_from_slice(&digits[20 - len..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Reply {
        match decode(buf) {
            Ok(Decoded::Complete(r, used)) => {
                assert_eq!(used, buf.len(), "{:?}", String::from_utf8_lossy(buf));
                r
            }
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn encodes_commands_for_pipelining() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"GET", b"k"]);
        CommandWriter::new(&mut out, 3).arg(b"SET").arg(b"").int(1234567890123);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$0\r\n\r\n$13\r\n1234567890123\r\n");
        let mut w = Vec::new();
        CommandWriter::new(&mut w, 2).int(0).int(u64::MAX);
        assert_eq!(w, b"*2\r\n$1\r\n0\r\n$20\r\n18446744073709551615\r\n");
    }

    #[test]
    fn decodes_every_type() {
        assert_eq!(complete(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(complete(b"-NOSCRIPT No matching script\r\n").is_error("NOSCRIPT"), true);
        assert_eq!(complete(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(complete(b":9223372036854775807\r\n"), Reply::Integer(i64::MAX));
        assert_eq!(complete(b":-9223372036854775808\r\n"), Reply::Integer(i64::MIN));
        assert_eq!(complete(b"$5\r\na\r\nbc\r\n"), bulk("a\r\nbc"));
        assert_eq!(complete(b"$0\r\n\r\n"), bulk(""));
        assert_eq!(complete(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(complete(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(complete(b"*0\r\n"), Reply::Array(Some(vec![])));
        assert_eq!(
            complete(b"*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n-ERR e\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Array(Some(vec![bulk("x"), Reply::Bulk(None)])),
                Reply::Error(b"ERR e".to_vec()),
            ]))
        );
    }

    const SAMPLES: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR wrong\r\n",
        b":123456\r\n",
        b"$12\r\nhello\r\nworld\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*4\r\n:0\r\n:12\r\n*2\r\n$0\r\n\r\n*0\r\n$3\r\nend\r\n",
    ];

    #[test]
    fn split_at_every_byte_is_incomplete_then_complete() {
        for sample in SAMPLES {
            for cut in 0..sample.len() {
                assert_eq!(decode(&sample[..cut]), Ok(Decoded::Incomplete), "{:?} cut at {cut}", String::from_utf8_lossy(sample));
            }
            complete(sample);
        }
    }

    #[test]
    fn pipelined_replies_come_out_one_by_one_from_any_chunking() {
        let stream: Vec<u8> = SAMPLES.concat();
        for chunk in 1..=stream.len() {
            let (mut buf, mut got) = (Vec::new(), Vec::new());
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Decoded::Complete(r, used) = decode(&buf).unwrap() {
                    got.push(r);
                    buf.drain(..used);
                }
            }
            assert!(buf.is_empty());
            let expected: Vec<Reply> = SAMPLES.iter().map(|s| complete(s)).collect();
            assert_eq!(got, expected, "chunk size {chunk}");
        }
    }

    #[test]
    fn absurd_lengths_are_errors_not_allocations() {
        assert_eq!(decode(b"$536870913\r\n"), Err(ProtocolError::BulkTooLong));
        assert_eq!(decode(b"*1048577\r\n"), Err(ProtocolError::ArrayTooLong));
        assert_eq!(decode(b"*1048576\r\n"), Ok(Decoded::Incomplete));
        assert_eq!(decode(b"$-2\r\n"), Err(ProtocolError::BadInteger));
        assert_eq!(decode(b":99999999999999999999\r\n"), Err(ProtocolError::BadInteger));
        let deep: Vec<u8> = b"*1\r\n".repeat(40);
        assert_eq!(decode(&deep), Err(ProtocolError::TooDeep));
        let ok_depth: Vec<u8> = [b"*1\r\n".repeat(32), b":1\r\n".to_vec()].concat();
        assert!(matches!(decode(&ok_depth), Ok(Decoded::Complete(..))));
        let long = [b"+".to_vec(), vec![b'a'; MAX_LINE + 1]].concat();
        assert_eq!(decode(&long), Err(ProtocolError::LineTooLong));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [&b"?\r\n"[..], b"+a\rb\r\n", b"+a\n", b":\r\n", b":+1\r\n", b":1a\r\n", b"$1\r\nab\r\n", b"$x\r\n"] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Pseudo-random bytes drawn mostly from RESP's own alphabet.
        let alphabet = b"+-:$*\r\n0123456789-1ab";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            if let Ok(Decoded::Complete(_, used)) = decode(&buf) {
                assert!(used <= buf.len());
            }
        }
    }
}
