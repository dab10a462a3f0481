//! RESP2 framing: command encoding (appended to one buffer for pipelining) and an incremental
//! reply decoder.
//!
//! The decoder is a bounded, incremental, sans-IO codec, and batching is why it must be one:
//! the worker pipelines every request of an event-loop turn as one script call on one shared
//! connection, so replies arrive in pieces of any size, interleaved with nothing else, and must
//! be decoded as they come without holding the event loop or memory hostage.
//! - **Incremental**: [`Decoder`] keeps its place (the arrays being filled, how far a partial
//!   line has been searched) between reads, so each byte is examined once: a reply split into
//!   any number of reads costs what one read would, and a large reply is linear, never the
//!   quadratic re-parse from the start that a stateless decoder does on every read.
//! - **Bounded**: each reply is decoded against a [`Bound`] that the command which asked for it
//!   knows (a batch's script returns a few integers per group; AUTH returns OK), not a generic
//!   512 MB: a length beyond it is a protocol error at the header, before anything is buffered,
//!   so a hostile or broken server cannot make a worker allocate.
//! - **Sans-IO**: it sees bytes and returns replies; sockets, timers and buffers belong to the
//!   caller (`glue/redis`), which is why it is unit-tested here without nginx.

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

/// What one reply may legitimately hold: at most `bytes` bytes on the wire and `elements`
/// array elements in all (nested ones included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub bytes: usize,
    pub elements: usize,
}

impl Bound {
    /// Room for an error reply (`-ERR ...`, `-NOSCRIPT ...`) that any command may get instead.
    pub const ERROR_LINE: usize = 1024;
    /// The longest RESP integer element: `:`, a sign, 19 digits, CRLF.
    pub const INTEGER: usize = 23;

    /// A simple reply (`+OK`, `+PONG`, `:n`) or an error.
    pub const SIMPLE: Bound = Bound { bytes: Bound::ERROR_LINE, elements: 0 };

    /// An array of at most `n` integers (or an error).
    pub fn integers(n: usize) -> Bound {
        Bound { bytes: Bound::ERROR_LINE.max(Bound::INTEGER * (n + 1)), elements: n }
    }
}

/// Decodes one reply at a time from bytes handed over as they arrive; see the module comment.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Arrays being filled, innermost last: elements still expected, elements so far.
    stack: Vec<(usize, Vec<Reply>)>,
    /// Bytes of the current reply consumed so far, and array elements it announced.
    used: usize,
    elements: usize,
    /// How much of the unconsumed input has been searched for a line end already: a line that
    /// arrives a byte at a time is searched once, not once per byte.
    scanned: usize,
    /// Bytes examined (searched or copied), to show that decoding is linear.
    #[cfg(test)]
    examined: usize,
}

const MAX_DEPTH: usize = 8;

impl Decoder {
    /// True once part of the current reply has been consumed: the server started it.
    pub fn in_reply(&self) -> bool {
        self.used > 0
    }

    /// Decodes from `input`, the bytes that earlier calls did not consume, followed by any new
    /// ones, against the `bound` of the reply expected (the same until that reply is whole).
    /// Returns how many bytes it consumed (drop them before the next call) and the reply once
    /// it is whole; the decoder is then ready for the next reply. An error means the bytes can
    /// never become a reply within the bound: the connection is unusable.
    pub fn decode(&mut self, input: &[u8], bound: Bound) -> Result<(usize, Option<Reply>), ProtocolError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            if rest.is_empty() {
                return Ok((pos, None));
            }
            let from = self.scanned.saturating_sub(1).max(1);
            let Some(eol) = find_crlf(rest, from) else {
                #[cfg(test)]
                {
                    self.examined += rest.len().saturating_sub(from);
                }
                self.scanned = rest.len();
                if self.used + rest.len() > bound.bytes {
                    return Err(ProtocolError("reply longer than the command can return"));
                }
                return Ok((pos, None));
            };
            #[cfg(test)]
            {
                self.examined += eol + 2 - from.min(eol);
            }
            let head = &rest[1..eol];
            let header = eol + 2;
            if self.used + header > bound.bytes {
                return Err(ProtocolError("reply longer than the command can return"));
            }
            let (element, consumed) = match rest[0] {
                b'+' => (Some(Reply::Simple(String::from_utf8_lossy(head).into_owned())), header),
                b'-' => (Some(Reply::Error(String::from_utf8_lossy(head).into_owned())), header),
                b':' => (Some(Reply::Integer(int(head)?)), header),
                b'$' => match int(head)? {
                    n if n < 0 => (Some(Reply::Bulk(None)), header),
                    n => {
                        let n = usize::try_from(n).map_err(|_| ProtocolError("bulk string too long"))?;
                        let whole = header
                            .checked_add(n)
                            .and_then(|w| w.checked_add(2))
                            .ok_or(ProtocolError("bulk string too long"))?;
                        if self.used + whole > bound.bytes {
                            return Err(ProtocolError("bulk string longer than the command can return"));
                        }
                        if rest.len() < whole {
                            // The header is complete: search from its end next time.
                            self.scanned = eol;
                            return Ok((pos, None));
                        }
                        if &rest[header + n..whole] != b"\r\n" {
                            return Err(ProtocolError("bulk string not terminated"));
                        }
                        #[cfg(test)]
                        {
                            self.examined += n;
                        }
                        (Some(Reply::Bulk(Some(rest[header..header + n].to_vec()))), whole)
                    }
                },
                b'*' => match int(head)? {
                    n if n < 0 => (Some(Reply::Array(None)), header),
                    0 => (Some(Reply::Array(Some(Vec::new()))), header),
                    n => {
                        let n = usize::try_from(n).map_err(|_| ProtocolError("array too long"))?;
                        if n > bound.elements.saturating_sub(self.elements) {
                            return Err(ProtocolError("array longer than the command can return"));
                        }
                        if self.stack.len() >= MAX_DEPTH {
                            return Err(ProtocolError("nesting too deep"));
                        }
                        self.elements += n;
                        self.stack.push((n, Vec::with_capacity(n)));
                        (None, header)
                    }
                },
                _ => return Err(ProtocolError("unknown reply type")),
            };
            pos += consumed;
            self.used += consumed;
            self.scanned = 0;
            let mut element = element;
            while let Some(done) = element.take() {
                match self.stack.last_mut() {
                    None => {
                        self.used = 0;
                        self.elements = 0;
                        return Ok((pos, Some(done)));
                    }
                    Some((left, items)) => {
                        items.push(done);
                        *left -= 1;
                        if *left == 0 {
                            let (_, items) = self.stack.pop().expect("just seen");
                            element = Some(Reply::Array(Some(items)));
                        }
                    }
                }
            }
        }
    }
}

/// The offset of the first CRLF in `buf` at or after `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match buf[i + 1] {
            b'\n' if buf[i] == b'\r' => return Some(i),
            b'\r' => i += 1,
            _ => i += 2,
        }
    }
    None
}

/// Decodes one whole reply from the start of `buf` within `bound`: `Ok(Some((reply, bytes
/// used)))`, `Ok(None)` if incomplete. For callers that hold the whole buffer (tests, tools).
pub fn decode(buf: &[u8], bound: Bound) -> Result<Option<(Reply, usize)>, ProtocolError> {
    Ok(match Decoder::default().decode(buf, bound)? {
        (used, Some(reply)) => Some((reply, used)),
        (_, None) => None,
    })
}

fn int(bytes: &[u8]) -> Result<i64, ProtocolError> {
    core::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or(ProtocolError("invalid integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roomy enough for every test reply that is not about bounds.
    const ROOMY: Bound = Bound { bytes: 1 << 24, elements: 1 << 21 };

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
            (b"*0\r\n", Reply::Array(Some(vec![]))),
            (
                b"*2\r\n:1\r\n*1\r\n+x\r\n",
                Reply::Array(Some(vec![Reply::Integer(1), Reply::Array(Some(vec![Reply::Simple("x".into())]))])),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode(bytes, ROOMY).unwrap(), Some((expected, bytes.len())));
        }
    }

    /// Feeds `stream` to one decoder in pieces of `step` bytes, keeping what it did not consume
    /// as a caller does; returns the replies and the bytes examined.
    fn feed(stream: &[u8], step: usize, bound: Bound) -> Result<(Vec<Reply>, usize), ProtocolError> {
        let (mut d, mut buf, mut replies) = (Decoder::default(), Vec::new(), Vec::new());
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let (used, reply) = d.decode(&buf, bound)?;
                buf.drain(..used);
                match reply {
                    Some(r) => replies.push(r),
                    None => break,
                }
            }
        }
        assert!(buf.is_empty() && !d.in_reply(), "everything consumed");
        Ok((replies, d.examined))
    }

    #[test]
    fn a_stream_split_at_every_byte_decodes_the_same() {
        let stream: &[u8] = b"*3\r\n:1\r\n$5\r\nhe\r\no\r\n*2\r\n+a\r\n$-1\r\n+NEXT\r\n-ERR x\r\n";
        let (whole, _) = feed(stream, stream.len(), ROOMY).unwrap();
        assert_eq!(whole.len(), 3);
        assert!(
            matches!(&whole[0], Reply::Array(Some(v)) if v.len() == 3 && v[1] == Reply::Bulk(Some(b"he\r\no".to_vec())))
        );
        assert_eq!(whole[1..], [Reply::Simple("NEXT".into()), Reply::Error("ERR x".into())]);
        for step in 1..stream.len() {
            assert_eq!(feed(stream, step, ROOMY).unwrap().0, whole, "pieces of {step} bytes");
        }
        // Cut anywhere, the first reply is incomplete until its last byte.
        let first = stream.len() - b"+NEXT\r\n-ERR x\r\n".len();
        for cut in 0..first {
            assert_eq!(decode(&stream[..cut], ROOMY).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn decoding_is_linear_in_the_bytes_however_they_arrive() {
        // 1,048,576 integers, the array that cost a worker 3 s a reply when every read
        // re-parsed from the start.
        let n = 1 << 20;
        let mut stream = format!("*{n}\r\n").into_bytes();
        for i in 0..n {
            stream.extend_from_slice(format!(":{i}\r\n").as_bytes());
        }
        for step in [16 * 1024, 1000, 7] {
            let (replies, examined) = feed(&stream, step, ROOMY).unwrap();
            assert!(
                matches!(&replies[..], [Reply::Array(Some(v))] if v.len() == n && v[n - 1] == Reply::Integer(n as i64 - 1))
            );
            assert!(examined <= 2 * stream.len(), "{examined} bytes examined for {} in pieces of {step}", stream.len());
        }
        // A long line dripped a byte at a time is searched once, not once per byte.
        let line = format!("+{}\r\n", "x".repeat(100_000));
        let (_, examined) = feed(line.as_bytes(), 1, ROOMY).unwrap();
        assert!(examined <= 2 * line.len(), "{examined}");
    }

    #[test]
    fn replies_beyond_their_bound_fail_at_the_header_before_buffering() {
        let bound = Bound::integers(3);
        assert!(decode(b"*3\r\n:1\r\n:2\r\n:3\r\n", bound).unwrap().is_some());
        // The announcement alone is refused: nothing of the 512 MB or 1M elements is awaited.
        assert!(decode(b"$536870912\r\n", bound).is_err());
        assert!(decode(b"*1048576\r\n", bound).is_err());
        assert!(decode(b"*4\r\n", bound).is_err());
        assert!(decode(b"*2\r\n*2\r\n", bound).is_err(), "nested elements count too");
        // An endless line is refused once it passes the bound.
        assert!(decode(&vec![b'+'; bound.bytes + 1], bound).is_err());
        assert_eq!(decode(&vec![b'+'; bound.bytes - 1], bound).unwrap(), None);
        // An error reply always fits.
        let err = format!("-ERR {}\r\n", "e".repeat(900));
        assert!(matches!(decode(err.as_bytes(), Bound::integers(1)).unwrap(), Some((Reply::Error(_), _))));
        assert!(matches!(decode(b"+OK\r\n", Bound::SIMPLE).unwrap(), Some((Reply::Simple(_), 5))));
    }

    #[test]
    fn garbage_is_an_error_not_an_allocation() {
        assert!(decode(b"?x\r\n", ROOMY).is_err());
        assert!(decode(b":12a\r\n", ROOMY).is_err());
        assert!(decode(b":\r\n", ROOMY).is_err());
        assert!(decode(b"$99999999999999999999\r\n", ROOMY).is_err());
        assert!(decode(b"*99999999999\r\n", ROOMY).is_err());
        assert!(decode(b"$1\r\nab\r\n", ROOMY).is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(decode(deep.as_bytes(), ROOMY).is_err());
        let ok = "*1\r\n".repeat(MAX_DEPTH) + ":1\r\n";
        assert!(decode(ok.as_bytes(), ROOMY).unwrap().is_some());
    }
}
