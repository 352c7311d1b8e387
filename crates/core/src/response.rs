//! Response head encoding: the status line and headers the app gave, checked
//! for CR/LF/NUL and token syntax, plus `Date`, framing and `Connection`.

use std::fmt;
use std::time::Instant;

use crate::metrics::MethodClass;

/// What the response is answering, as far as encoding is concerned.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo {
    pub is_head: bool,
    pub http_minor: u8,
    pub keep_alive: bool,
    /// For the metrics: the method, the status sent (0 until the response
    /// starts) and when the request was read.
    pub method: MethodClass,
    pub status: u16,
    pub since: Option<Instant>,
}

/// How the body that follows the head is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes are written (HEAD, 204, 304).
    None,
    /// Exactly this many bytes follow.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0, unknown length).
    UntilClose,
    /// The app frames the whole response itself (Node's ServerResponse
    /// writes its own head, Content-Length or chunking): bytes pass as-is.
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    pub keep_alive: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ResponseError {
    InvalidStatus(String),
    InvalidHeaderName(String),
    InvalidHeaderValue(String),
    InvalidContentLength(String),
    UnsupportedTransferEncoding(String),
    MalformedHeaderList,
    HeadTooLarge(usize),
}

/// Largest response head the engine writes; a bigger one is an app bug
/// (or a header injection attempt), not something to send.
pub const MAX_HEAD: usize = 64 * 1024;

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::InvalidStatus(s) => {
                write!(
                    f,
                    "invalid status {s:?}: expected '<3-digit code 200-599> <reason>'"
                )
            }
            ResponseError::InvalidHeaderName(n) => write!(f, "invalid response header name {n:?}"),
            ResponseError::InvalidHeaderValue(n) => {
                write!(f, "response header {n:?} has a value with CR, LF or NUL")
            }
            ResponseError::InvalidContentLength(v) => {
                write!(f, "response Content-Length {v:?} is not a number")
            }
            ResponseError::UnsupportedTransferEncoding(v) => {
                write!(
                    f,
                    "response Transfer-Encoding {v:?}: only 'chunked' is supported"
                )
            }
            ResponseError::MalformedHeaderList => write!(f, "malformed response header list"),
            ResponseError::HeadTooLarge(n) => {
                write!(f, "response head over {MAX_HEAD} bytes ({n})")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// RFC 9110 §5.6.2 tchar.
pub fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

fn valid_value(v: &[u8]) -> bool {
    !v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses `"200 OK"` into 200, refusing anything that would not be a valid
/// final status line.
pub fn parse_status(status: &[u8]) -> Result<u16, ResponseError> {
    let bad = || ResponseError::InvalidStatus(lossy(status));
    if status.len() < 3 || !status[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if status.len() > 3 && status[3] != b' ' {
        return Err(bad());
    }
    if !valid_value(status) {
        return Err(bad());
    }
    let code = status[..3]
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(200..=599).contains(&code) {
        return Err(bad());
    }
    Ok(code)
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

type Field<'a> = (&'a [u8], &'a [u8]);

/// Headers as the JavaScript side passes them: `name\0value\0name\0value\0`.
/// A NUL inside a name or value shifts the pairing, which `fields` catches.
pub struct HeaderList<'a> {
    pub joined: &'a [u8],
    pub fields: usize,
}

impl<'a> HeaderList<'a> {
    /// The (name, value) pairs, without allocating; `check` first.
    fn pairs(&self) -> impl Iterator<Item = Field<'a>> + 'a {
        let body = self.joined.strip_suffix(b"\0").unwrap_or(&[]);
        let mut parts = body.split(|&b| b == 0).filter(move |_| !body.is_empty());
        std::iter::from_fn(move || Some((parts.next()?, parts.next()?)))
    }

    /// The list holds exactly `fields` pairs.
    fn check(&self) -> Result<(), ResponseError> {
        let well_formed = if self.fields == 0 {
            self.joined.is_empty()
        } else {
            self.joined.ends_with(b"\0")
                && self.joined.iter().filter(|&&b| b == 0).count() == self.fields * 2
        };
        if well_formed {
            Ok(())
        } else {
            Err(ResponseError::MalformedHeaderList)
        }
    }
}

/// Appends `n` in decimal without allocating.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(crate::sys::decimal(n, &mut [0u8; 20]));
}

/// What the app's status and headers say about framing, once checked: the
/// part of a head that does not depend on the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppHead {
    pub code: u16,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    date: bool,
}

/// Checks the status and headers the app gave.
pub fn check_head(status: &[u8], headers: &HeaderList<'_>) -> Result<AppHead, ResponseError> {
    let code = parse_status(status)?;
    if status.len() + headers.joined.len() + 2 * headers.fields > MAX_HEAD {
        return Err(ResponseError::HeadTooLarge(
            status.len() + headers.joined.len(),
        ));
    }
    headers.check()?;
    let mut app = AppHead {
        code,
        length: None,
        chunked: false,
        close: false,
        date: false,
    };
    for (name, value) in headers.pairs() {
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(ResponseError::InvalidHeaderName(lossy(name)));
        }
        if !valid_value(value) {
            return Err(ResponseError::InvalidHeaderValue(lossy(name)));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = value.trim_ascii();
            let n = std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ResponseError::InvalidContentLength(lossy(value)))?;
            app.length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ResponseError::UnsupportedTransferEncoding(lossy(value)));
            }
            app.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            app.close |= has_token(value, b"close");
        } else if name.eq_ignore_ascii_case(b"date") {
            app.date = true;
        }
    }
    Ok(app)
}

/// The last status and headers checked, and what they said: apps answer
/// most requests with the same ones, which then cost a comparison.
#[derive(Default)]
pub struct HeadCache {
    /// status, then the joined headers.
    key: Vec<u8>,
    status_len: usize,
    fields: usize,
    head: Option<AppHead>,
}

impl HeadCache {
    pub fn check(
        &mut self,
        status: &[u8],
        headers: &HeaderList<'_>,
    ) -> Result<AppHead, ResponseError> {
        if let Some(head) = self.head {
            if self.status_len == status.len()
                && self.fields == headers.fields
                && self.key.len() == status.len() + headers.joined.len()
                && self.key[..status.len()] == *status
                && self.key[status.len()..] == *headers.joined
            {
                return Ok(head);
            }
        }
        let head = check_head(status, headers)?;
        self.key.clear();
        self.key.extend_from_slice(status);
        self.key.extend_from_slice(headers.joined);
        self.status_len = status.len();
        self.fields = headers.fields;
        self.head = Some(head);
        Ok(head)
    }
}

/// Checks and writes a response head; see `write_head`.
pub fn encode_head(
    out: &mut Vec<u8>,
    date_line: &[u8],
    status: &[u8],
    headers: &HeaderList<'_>,
    request: RequestInfo,
    body_len: Option<u64>,
) -> Result<Head, ResponseError> {
    let app = check_head(status, headers)?;
    Ok(write_head(
        out, date_line, status, headers, &app, request, body_len,
    ))
}

/// Writes the response head into `out` and says how the body is framed.
/// `app` is what `check_head` said of `status` and `headers`; `body_len`
/// is the whole body's length when the app gave it in one piece.
pub fn write_head(
    out: &mut Vec<u8>,
    date_line: &[u8],
    status: &[u8],
    headers: &HeaderList<'_>,
    app: &AppHead,
    request: RequestInfo,
    body_len: Option<u64>,
) -> Head {
    let code = app.code;
    let bodiless_status = code == 204 || code == 304;
    let mut keep_alive = request.keep_alive && !app.close;
    let framing = if bodiless_status {
        Framing::None
    } else if let Some(n) = app.length {
        Framing::Length(n)
    } else if let Some(n) = body_len.filter(|_| !app.chunked) {
        Framing::Length(n)
    } else if request.http_minor >= 1 {
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::UntilClose
    };

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status);
    if status.len() == 3 {
        out.push(b' ');
    }
    out.extend_from_slice(b"\r\n");
    let drop_framing_headers = code == 204 || framing == Framing::UntilClose;
    for (name, value) in headers.pairs() {
        if drop_framing_headers
            && (name.eq_ignore_ascii_case(b"content-length")
                || name.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !app.date {
        out.extend_from_slice(date_line);
    }
    match framing {
        Framing::Length(n) if app.length.is_none() => {
            out.extend_from_slice(b"Content-Length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        // A HEAD answer describes the GET body but, of unknown length, says nothing.
        Framing::Chunked if !app.chunked && !request.is_head => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
        }
        _ => {}
    }
    if !keep_alive && !app.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if keep_alive && request.http_minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let framing = if request.is_head {
        Framing::None
    } else {
        framing
    };
    Head {
        status: code,
        framing,
        keep_alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
    const GET11: RequestInfo = RequestInfo {
        is_head: false,
        http_minor: 1,
        keep_alive: true,
        method: MethodClass::GET,
        status: 0,
        since: None,
    };

    fn encode(
        status: &str,
        headers: &[(&str, &str)],
        req: RequestInfo,
        len: Option<u64>,
    ) -> Result<(String, Head), ResponseError> {
        let mut joined = Vec::new();
        for (n, v) in headers {
            joined.extend_from_slice(n.as_bytes());
            joined.push(0);
            joined.extend_from_slice(v.as_bytes());
            joined.push(0);
        }
        let list = HeaderList {
            joined: &joined,
            fields: headers.len(),
        };
        let mut out = Vec::new();
        let head = encode_head(&mut out, DATE, status.as_bytes(), &list, req, len)?;
        Ok((String::from_utf8(out).unwrap(), head))
    }

    #[test]
    fn head_cache_answers_only_for_the_same_bytes() {
        let mut cache = HeadCache::default();
        let list = |joined: &'static [u8], fields| HeaderList { joined, fields };
        let plain = cache
            .check(b"200 OK", &list(b"Content-Type\0text/plain\0", 1))
            .unwrap();
        assert_eq!(
            cache.check(b"200 OK", &list(b"Content-Type\0text/plain\0", 1)),
            Ok(plain)
        );
        // Same bytes split differently between status and headers.
        assert!(cache
            .check(b"200 OKContent-Type\0text/plain\0", &list(b"", 0))
            .is_err());
        let closing = cache
            .check(b"200 OK", &list(b"Connection\0close\0", 1))
            .unwrap();
        assert!(closing.close && !plain.close);
        // A bad head after a good one is still refused, and not remembered.
        let bad = list(b"Content-Type\0a\rb\0", 1);
        assert!(cache.check(b"200 OK", &bad).is_err());
        assert!(cache.check(b"200 OK", &bad).is_err());
        assert_eq!(
            cache.check(b"200 OK", &list(b"Connection\0close\0", 1)),
            Ok(closing)
        );
    }

    #[test]
    fn known_length_gets_content_length_and_date() {
        let (text, head) =
            encode("200 OK", &[("Content-Type", "text/plain")], GET11, Some(5)).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Length: 5\r\n\r\n"
        );
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
    }

    #[test]
    fn unknown_length_is_chunked_on_1_1_and_close_delimited_on_1_0() {
        let (text, head) = encode("200 OK", &[], GET11, None).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert_eq!(head.framing, Framing::Chunked);
        let req10 = RequestInfo {
            http_minor: 0,
            ..GET11
        };
        let (text, head) = encode("200 OK", &[], req10, None).unwrap();
        assert!(text.contains("Connection: close\r\n"));
        assert!(!head.keep_alive);
        assert_eq!(head.framing, Framing::UntilClose);
    }

    #[test]
    fn http10_keep_alive_is_announced() {
        let req10 = RequestInfo {
            http_minor: 0,
            ..GET11
        };
        let (text, head) = encode("200 OK", &[], req10, Some(0)).unwrap();
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(head.keep_alive);
    }

    #[test]
    fn head_and_bodiless_statuses_carry_no_body() {
        let head_req = RequestInfo {
            is_head: true,
            ..GET11
        };
        let (text, head) = encode("200 OK", &[], head_req, Some(13)).unwrap();
        assert!(text.contains("Content-Length: 13\r\n"));
        assert_eq!(head.framing, Framing::None);
        let (text, head) =
            encode("204 No Content", &[("Content-Length", "3")], GET11, Some(3)).unwrap();
        assert!(!text.contains("Content-Length"));
        assert_eq!(head.framing, Framing::None);
        let (_, head) = encode("304 Not Modified", &[], GET11, None).unwrap();
        assert_eq!(head.framing, Framing::None);
    }

    #[test]
    fn app_connection_close_is_honoured_once() {
        let (text, head) = encode("200 OK", &[("Connection", "close")], GET11, Some(0)).unwrap();
        assert_eq!(text.matches("Connection").count(), 1);
        assert!(!head.keep_alive);
    }

    #[test]
    fn app_content_length_wins_and_is_not_doubled() {
        let (text, head) = encode("200 OK", &[("content-length", "2")], GET11, None).unwrap();
        assert_eq!(text.matches("ontent-").count(), 1);
        assert_eq!(head.framing, Framing::Length(2));
    }

    #[test]
    fn refuses_injection_and_bad_statuses() {
        for bad in [
            "20 OK",
            "2000",
            "099 X",
            "600 X",
            "200OK",
            "200 OK\r\nX: y",
            "abc",
        ] {
            assert!(
                matches!(
                    encode(bad, &[], GET11, None),
                    Err(ResponseError::InvalidStatus(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            encode("200 OK", &[("X", "a\r\nSet-Cookie: x")], GET11, None),
            Err(ResponseError::InvalidHeaderValue(_))
        ));
        assert!(matches!(
            encode("200 OK", &[("X Y", "a")], GET11, None),
            Err(ResponseError::InvalidHeaderName(_))
        ));
        assert!(matches!(
            encode("200 OK", &[("X", "a\0b")], GET11, None),
            Err(ResponseError::MalformedHeaderList)
        ));
        assert!(matches!(
            encode("200 OK", &[("Content-Length", "1x")], GET11, None),
            Err(ResponseError::InvalidContentLength(_))
        ));
        assert!(matches!(
            encode("200 OK", &[("Transfer-Encoding", "gzip")], GET11, None),
            Err(ResponseError::UnsupportedTransferEncoding(_))
        ));
    }

    #[test]
    fn decimal_lengths() {
        for n in [0u64, 7, 10, 4096, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn refuses_a_huge_head() {
        let big = "v".repeat(MAX_HEAD);
        assert!(matches!(
            encode("200 OK", &[("X", big.as_str())], GET11, None),
            Err(ResponseError::HeadTooLarge(_))
        ));
    }

    #[test]
    fn bare_code_gets_the_required_space() {
        let (text, _) = encode("200", &[], GET11, Some(0)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 \r\n"));
    }
}
