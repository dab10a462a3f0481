//! Directive value parsing in nginx's own grammar: sizes (`10m`), times (`1h30m`, `50ms`),
//! rates (`100r/m`), flags (`on|off`) and `name=value` parameters.
//!
//! Every parser returns a `ParseError` whose text completes nginx's
//! `invalid <what> "<value>"` wording, so directive handlers can report it verbatim.

use core::fmt;
use core::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

pub type Result<T> = core::result::Result<T, ParseError>;

pub fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ParseError(msg.into()))
}

/// A directive's configuration error. `nginx -t` prints it through the glue's one reporter,
/// which adds nginx's own framing (`"name" directive ...` or `... in "name" directive`) and
/// nginx completes with ` in <file>:<line>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// Reported as nginx does: `"shield_x" directive is duplicate`.
    #[error("is duplicate")]
    Duplicate,
    /// Reported as `"shield_x" must have "zone" parameter`, limit_req's wording.
    #[error("must have \"{0}\" parameter")]
    MissingParameter(&'static str),
    #[error("invalid parameter \"{0}\"")]
    InvalidParameter(String),
    /// A number outside the range the feature can honour exactly.
    #[error("invalid {what} \"{value}\", it must be between {min} and {max}")]
    OutOfRange { what: &'static str, value: String, min: u64, max: u64 },
    /// A value parser's own words (`invalid size "10x"`).
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Anything else, already in nginx's words.
    #[error("{0}")]
    Other(String),
}

impl From<String> for ConfError {
    fn from(s: String) -> Self {
        ConfError::Other(s)
    }
}

impl From<&str> for ConfError {
    fn from(s: &str) -> Self {
        ConfError::Other(s.to_string())
    }
}

/// A decimal number in `min..=max`, or `OutOfRange` naming `what` (`burst`, `cost`, ...).
pub fn bounded(what: &'static str, value: &str, min: u64, max: u64) -> core::result::Result<u64, ConfError> {
    let out_of_range = || ConfError::OutOfRange { what, value: value.to_string(), min, max };
    // Digits only: "+1", "1e3" and " 1" are not numbers in nginx's grammar.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConfError::Other(format!("invalid {what} \"{value}\"")));
    }
    let n: u64 = value.parse().map_err(|_| out_of_range())?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(out_of_range())
    }
}

/// `on` / `off`, as nginx's `ngx_conf_set_flag_slot` accepts them (case-insensitive).
pub fn flag(value: &str) -> Result<bool> {
    if value.eq_ignore_ascii_case("on") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("off") {
        Ok(false)
    } else {
        err(format!("invalid value \"{value}\", it must be \"on\" or \"off\""))
    }
}

/// A size with an optional `k`/`m`/`g` suffix, like `ngx_parse_size`.
pub fn size(value: &str) -> Result<usize> {
    let (digits, scale) = match value.as_bytes().last() {
        Some(b'k' | b'K') => (&value[..value.len() - 1], 1usize << 10),
        Some(b'm' | b'M') => (&value[..value.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    let n = number(digits).ok_or_else(|| ParseError(format!("invalid size \"{value}\"")))?;
    n.checked_mul(scale as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ParseError(format!("invalid size \"{value}\"")))
}

/// A time like `ngx_parse_time`: a sequence of `<n><unit>` with units
/// `ms s m h d w M y`; a bare number means seconds.
pub fn time(value: &str) -> Result<Duration> {
    let invalid = || ParseError(format!("invalid time \"{value}\""));
    if value.is_empty() {
        return Err(invalid());
    }
    let bytes = value.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let n = number(&value[start..i]).ok_or_else(invalid)?;
        let unit_ms: u64 = match &bytes[i..] {
            [] => 1000,
            [b'm', b's', ..] => {
                i += 1;
                1
            }
            [b's', ..] => 1000,
            [b'm', ..] => 60_000,
            [b'h', ..] => 3_600_000,
            [b'd', ..] => 86_400_000,
            [b'w', ..] => 7 * 86_400_000,
            [b'M', ..] => 30 * 86_400_000,
            [b'y', ..] => 365 * 86_400_000,
            _ => return Err(invalid()),
        };
        if i < bytes.len() {
            i += 1;
        }
        total_ms = n.checked_mul(unit_ms).and_then(|ms| total_ms.checked_add(ms)).ok_or_else(invalid)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// A request rate: `<n>r/s`, `<n>r/m` or `<n>r/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u64,
    pub period: Duration,
}

impl Rate {
    /// Time between two requests at this rate, in nanoseconds (the GCRA emission interval).
    pub fn interval_nanos(&self) -> u64 {
        (self.period.as_nanos() / u128::from(self.requests.max(1))) as u64
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}r/{unit}", self.requests)
    }
}

pub fn rate(value: &str) -> Result<Rate> {
    let invalid = || ParseError(format!("invalid rate \"{value}\""));
    let (n, unit) = value.split_once("r/").ok_or_else(invalid)?;
    let requests = number(n).filter(|&n| n > 0).ok_or_else(invalid)?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(invalid()),
    };
    Ok(Rate { requests, period: Duration::from_secs(secs) })
}

/// A decimal number made of ASCII digits only (no sign, no spaces), without overflow.
pub fn number(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// An HTTP status code in `min..=max`, for `*_status` directives.
pub fn status(value: &str, min: u16, max: u16) -> Result<u16> {
    match number(value) {
        Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(n as u16),
        _ => err(format!("value \"{value}\" must be between {min} and {max}")),
    }
}

/// Splits `name=value`; `None` for a bare word.
pub fn param(arg: &str) -> Option<(&str, &str)> {
    arg.split_once('=')
}

/// An HTTP header field name (RFC 9110 token).
pub fn header_name(value: &str) -> Result<&str> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !value.is_empty() && value.bytes().all(is_tchar) {
        Ok(value)
    } else {
        err(format!("invalid header name \"{value}\""))
    }
}

/// A header field value: visible ASCII, spaces and tabs, no CR/LF (no response splitting).
pub fn header_value(value: &str) -> Result<&str> {
    if value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        Ok(value)
    } else {
        err(format!("invalid header value \"{}\"", value.escape_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_accept_on_off_only() {
        assert_eq!(flag("on"), Ok(true));
        assert_eq!(flag("OFF"), Ok(false));
        assert!(flag("yes").unwrap_err().0.contains("it must be \"on\" or \"off\""));
    }

    #[test]
    fn sizes_scale_and_reject_garbage() {
        assert_eq!(size("512").unwrap(), 512);
        assert_eq!(size("10k").unwrap(), 10 * 1024);
        assert_eq!(size("10m").unwrap(), 10 << 20);
        assert!(size("10x").is_err());
        assert!(size("k").is_err());
        assert!(size("-1").is_err());
        assert!(size("99999999999999999999g").is_err());
    }

    #[test]
    fn times_combine_units() {
        assert_eq!(time("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(time("30").unwrap(), Duration::from_secs(30));
        assert_eq!(time("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(time("1y").unwrap(), Duration::from_secs(31_536_000));
        assert!(time("").is_err());
        assert!(time("5q").is_err());
        assert!(time("ms").is_err());
    }

    #[test]
    fn rates_need_unit_and_positive_count() {
        let r = rate("100r/m").unwrap();
        assert_eq!(r.requests, 100);
        assert_eq!(r.period, Duration::from_secs(60));
        assert_eq!(r.interval_nanos(), 600_000_000);
        assert_eq!(r.to_string(), "100r/m");
        assert!(rate("0r/s").is_err());
        assert!(rate("10r/d").is_err());
        assert!(rate("10/s").is_err());
    }

    #[test]
    fn status_range_is_enforced() {
        assert_eq!(status("429", 400, 599), Ok(429));
        assert!(status("200", 400, 599).is_err());
        assert!(status("4x9", 400, 599).is_err());
    }

    #[test]
    fn header_names_and_values_are_validated() {
        assert!(header_name("X-Frame-Options").is_ok());
        assert!(header_name("Bad Name").is_err());
        assert!(header_name("").is_err());
        assert!(header_value("max-age=1; preload").is_ok());
        assert!(header_value("a\r\nSet-Cookie: x").is_err());
    }

    #[test]
    fn bounded_numbers_are_range_checked() {
        assert_eq!(bounded("burst", "10", 0, 100), Ok(10));
        assert!(matches!(bounded("burst", "101", 0, 100), Err(ConfError::OutOfRange { .. })));
        assert!(matches!(bounded("burst", "18446744073709551616", 0, 100), Err(ConfError::OutOfRange { .. })));
        assert!(matches!(bounded("burst", "-1", 0, 100), Err(ConfError::Other(_))));
        assert!(matches!(bounded("burst", "", 0, 100), Err(ConfError::Other(_))));
        assert_eq!(
            bounded("cost", "0", 1, 9).unwrap_err().to_string(),
            "invalid cost \"0\", it must be between 1 and 9"
        );
    }
}
