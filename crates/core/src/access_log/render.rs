//! One line, rendered: gunicorn's atoms as gunicorn 27 prints them
//! (`glogging.Logger.atoms` and `SafeAtoms`: `-` for what is missing, `"`
//! escaped as `\"` in every string, request bytes read as Latin-1 and
//! written as UTF-8), or a JSON object.

use std::time::Duration;

use super::clock::Clock;
use super::format::{base_field, Atom, Environ, Format, Op, Style};
use super::format::{JSON_REFERER, JSON_REQUEST_ID, JSON_USER_AGENT};
use super::Entry;

pub struct Line<'a> {
    pub entry: &'a Entry,
    pub format: &'a Format,
    pub elapsed: Duration,
    pub clock: &'a Clock,
    pub pid: u32,
}

/// Where a response head written by the app ends (after its blank line).
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

/// Request bytes as gunicorn writes them: each byte a Latin-1 character,
/// encoded as UTF-8, with `"` escaped.
/// Where `byte` first is in `bytes` (libc's vectorised memchr: header
/// blocks and values are scanned per request).
pub fn find(bytes: &[u8], byte: u8) -> Option<usize> {
    // SAFETY: bytes is valid for reads of its length.
    let at = unsafe { libc::memchr(bytes.as_ptr().cast(), i32::from(byte), bytes.len()) };
    (!at.is_null()).then(|| at as usize - bytes.as_ptr() as usize)
}

fn put_latin1(out: &mut Vec<u8>, mut bytes: &[u8]) {
    // Most values are ASCII without a quote: copied whole.
    if bytes.is_ascii() && find(bytes, b'"').is_none() {
        out.extend_from_slice(bytes);
        return;
    }
    while let Some(at) = bytes.iter().position(|&b| b == b'"' || b >= 0x80) {
        out.extend_from_slice(&bytes[..at]);
        match bytes[at] {
            b'"' => out.extend_from_slice(b"\\\""),
            b => out.extend_from_slice(&[0xc0 | (b >> 6), 0x80 | (b & 0x3f)]),
        }
        bytes = &bytes[at + 1..];
    }
    out.extend_from_slice(bytes);
}

pub(super) fn put_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(crate::sys::decimal(n, &mut digits));
}

/// `n` in decimal with at least `width` digits (zeros in front).
pub(super) fn put_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let text = crate::sys::decimal(n, &mut digits);
    out.resize(out.len() + width.saturating_sub(text.len()), b'0');
    out.extend_from_slice(text);
}

/// Percent-decoded, as gunicorn's PATH_INFO (`unquote_to_bytes`, read as
/// Latin-1).
fn put_decoded(out: &mut Vec<u8>, path: &[u8]) {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    let mut decoded = Vec::with_capacity(path.len());
    while i < path.len() {
        let escaped = (path[i] == b'%')
            .then(|| Some(hex(*path.get(i + 1)?)? << 4 | hex(*path.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(b) => {
                decoded.push(b);
                i += 3;
            }
            None => {
                decoded.push(path[i]);
                i += 1;
            }
        }
    }
    put_latin1(out, &decoded);
}

/// The path and query of a request target (`urlsplit`: an absolute URL
/// loses its scheme and authority, the fragment is dropped).
fn split_target(url: &[u8]) -> (&[u8], &[u8]) {
    let mut rest = url;
    if !rest.starts_with(b"/") {
        if let Some(at) = rest.windows(3).position(|w| w == b"://") {
            let after = &rest[at + 3..];
            let path_at = after
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(after.len());
            rest = &after[path_at..];
        }
    }
    let rest = match rest.iter().position(|&b| b == b'#') {
        Some(i) => &rest[..i],
        None => rest,
    };
    match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[]),
    }
}

/// Python's lenient `base64.b64decode`: characters outside the alphabet
/// are skipped, padding ends the input, a short final group is an error.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u8> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let (mut out, mut quad, mut pads, mut left) = (Vec::new(), 0, 0, 0u8);
    for &c in input {
        if c == b'=' {
            if quad >= 2 {
                pads += 1;
                if quad + pads >= 4 {
                    return Some(out);
                }
            }
            continue;
        }
        let Some(v) = value(c) else { continue };
        pads = 0;
        match quad {
            0 => left = v,
            1 => {
                out.push(left << 2 | v >> 4);
                left = v & 0xf;
            }
            2 => {
                out.push(left << 4 | v >> 2);
                left = v & 0x3;
            }
            _ => out.push(left << 6 | v),
        }
        quad = (quad + 1) % 4;
    }
    (quad == 0).then_some(out)
}

/// The user of `Authorization: Basic ...`, as gunicorn's `_get_user`.
fn basic_user(authorization: &[u8]) -> Option<Vec<u8>> {
    let scheme = authorization.get(..5)?;
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let space = authorization.iter().position(|&b| b == b' ')?;
    let decoded = base64_decode(&authorization[space + 1..])?;
    let user = decoded.split(|&b| b == b':').next()?;
    (std::str::from_utf8(user).is_ok() && !user.is_empty()).then(|| user.to_vec())
}

/// A JSON string of request bytes (Latin-1), or null.
fn put_json(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let Some(bytes) = value else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            0x80.. => out.extend_from_slice(&[0xc0 | (b >> 6), 0x80 | (b & 0x3f)]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

const PROTOCOLS: [&[u8]; 2] = [b"HTTP/1.0", b"HTTP/1.1"];

impl Line<'_> {
    fn protocol(&self) -> &'static [u8] {
        PROTOCOLS[usize::from(self.entry.http_minor != 0)]
    }

    fn url(&self) -> &[u8] {
        self.entry.bytes(&self.entry.url)
    }

    pub fn render(&self, out: &mut Vec<u8>) {
        match &self.format.style {
            Style::Text(ops) => {
                for op in ops {
                    self.op(out, op);
                }
            }
            Style::Json => self.json(out),
        }
        out.push(b'\n');
    }

    /// A value gunicorn has only when the request head was read.
    fn requested(&self, out: &mut Vec<u8>, put: impl FnOnce(&mut Vec<u8>)) {
        if self.entry.has_request() {
            put(out);
        } else {
            out.push(b'-');
        }
    }

    fn field_or_dash(out: &mut Vec<u8>, value: Option<&[u8]>) {
        match value {
            Some(v) => put_latin1(out, v),
            None => out.push(b'-'),
        }
    }

    fn op(&self, out: &mut Vec<u8>, op: &Op) {
        let entry = self.entry;
        match op {
            Op::Text(text) => out.extend_from_slice(text),
            Op::Atom(atom) => self.atom(out, *atom),
            Op::RequestField(i) => Self::field_or_dash(out, entry.field(*i)),
            Op::ResponseField(i) => Self::field_or_dash(out, entry.response_field(*i)),
            Op::Environ(var) => self.environ(out, *var),
        }
    }

    fn environ(&self, out: &mut Vec<u8>, var: Environ) {
        let entry = self.entry;
        match var {
            Environ::Atom(atom) => self.atom(out, atom),
            Environ::ClientPort => put_number(out, u64::from(entry.client_port)),
            Environ::Target => self.requested(out, |out| put_latin1(out, self.url())),
            Environ::ServerName => put_latin1(out, entry.bytes(&entry.server)),
            Environ::ServerPort => put_number(out, u64::from(entry.local_port)),
            Environ::Empty => {}
            Environ::Scheme if entry.https => out.extend_from_slice(b"https"),
            Environ::Scheme => out.extend_from_slice(b"http"),
            Environ::TlsProtocol => {
                Self::field_or_dash(out, non_empty(entry.bytes(&entry.tls_protocol)))
            }
            Environ::TlsCipher => {
                Self::field_or_dash(out, non_empty(entry.bytes(&entry.tls_cipher)))
            }
            Environ::Field(i) => Self::field_or_dash(out, entry.field(i)),
            Environ::Unknown => out.push(b'-'),
        }
    }

    fn atom(&self, out: &mut Vec<u8>, atom: Atom) {
        let entry = self.entry;
        let micros = || self.elapsed.as_micros() as u64;
        match atom {
            Atom::Client => put_latin1(out, entry.bytes(&entry.client)),
            Atom::Dash => out.push(b'-'),
            Atom::User => {
                let user = base_field(atom)
                    .and_then(|i| entry.field(i))
                    .and_then(basic_user);
                match user {
                    Some(user) => {
                        for b in user {
                            if b == b'"' {
                                out.push(b'\\');
                            }
                            out.push(b);
                        }
                    }
                    None => out.push(b'-'),
                }
            }
            Atom::Time => out.extend_from_slice(self.clock.bracketed().as_bytes()),
            Atom::RequestLine => self.requested(out, |out| {
                put_latin1(out, entry.method.as_bytes());
                out.push(b' ');
                put_latin1(out, self.url());
                out.push(b' ');
                out.extend_from_slice(self.protocol());
            }),
            Atom::Status => match entry.status {
                0 => out.push(b'-'),
                s => put_number(out, u64::from(s)),
            },
            Atom::Method => {
                self.requested(out, |out| out.extend_from_slice(entry.method.as_bytes()))
            }
            Atom::Path => self.requested(out, |out| put_decoded(out, split_target(self.url()).0)),
            Atom::Query => self.requested(out, |out| put_latin1(out, split_target(self.url()).1)),
            Atom::Protocol => self.requested(out, |out| out.extend_from_slice(self.protocol())),
            Atom::Bytes | Atom::BytesNumber => put_number(out, entry.sent),
            Atom::Referer | Atom::UserAgent => {
                Self::field_or_dash(out, base_field(atom).and_then(|i| entry.field(i)))
            }
            Atom::Seconds => put_number(out, self.elapsed.as_secs()),
            Atom::Micros => put_number(out, micros()),
            Atom::Millis => put_number(out, micros() / 1000),
            Atom::DecimalSeconds => {
                put_number(out, self.elapsed.as_secs());
                out.push(b'.');
                put_padded(out, micros() % 1_000_000, 6);
            }
            Atom::Pid => {
                out.push(b'<');
                put_number(out, u64::from(self.pid));
                out.push(b'>');
            }
        }
    }

    fn json(&self, out: &mut Vec<u8>) {
        let entry = self.entry;
        let known = entry.has_request();
        fn requested(known: bool, v: &[u8]) -> Option<&[u8]> {
            known.then_some(v)
        }
        let (path, query) = split_target(self.url());
        out.extend_from_slice(b"{\"time\":\"");
        self.clock.write_iso(out);
        out.extend_from_slice(b"\",\"remote\":");
        put_json(out, Some(entry.bytes(&entry.client)));
        out.extend_from_slice(b",\"method\":");
        put_json(out, requested(known, entry.method.as_bytes()));
        out.extend_from_slice(b",\"path\":");
        put_json(out, requested(known, path));
        out.extend_from_slice(b",\"query\":");
        put_json(out, requested(known, query));
        out.extend_from_slice(b",\"protocol\":");
        put_json(out, requested(known, self.protocol()));
        out.extend_from_slice(b",\"status\":");
        match entry.status {
            0 => out.extend_from_slice(b"null"),
            s => put_number(out, u64::from(s)),
        }
        out.extend_from_slice(b",\"bytes\":");
        put_number(out, entry.sent);
        let micros = self.elapsed.as_micros() as u64;
        out.extend_from_slice(b",\"duration_ms\":");
        put_number(out, micros / 1000);
        out.push(b'.');
        put_padded(out, micros % 1000, 3);
        out.extend_from_slice(b",\"referer\":");
        put_json(out, entry.field(JSON_REFERER));
        out.extend_from_slice(b",\"user_agent\":");
        put_json(out, entry.field(JSON_USER_AGENT));
        out.extend_from_slice(b",\"pid\":");
        put_number(out, u64::from(self.pid));
        out.extend_from_slice(b",\"request_id\":");
        put_json(out, entry.field(JSON_REQUEST_ID));
        out.push(b'}');
    }
}

/// `None` for an empty value (shown as `-`).
fn non_empty(bytes: &[u8]) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_as_lenient_as_pythons() {
        assert_eq!(base64_decode(b"dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode(b"dXNl cjpw\tYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode(b"YQ==").unwrap(), b"a");
        assert_eq!(base64_decode(b"YQ==junk").unwrap(), b"a");
        assert_eq!(base64_decode(b"YQ"), None);
        assert_eq!(base64_decode(b"Y"), None);
    }

    #[test]
    fn basic_user_as_gunicorn_reads_it() {
        assert_eq!(basic_user(b"Basic dXNlcjpwYXNz").unwrap(), b"user");
        assert_eq!(basic_user(b"basic  dXNlcjpwYXNz").unwrap(), b"user");
        assert_eq!(basic_user(b"Bearer dXNlcjpwYXNz"), None);
        assert_eq!(basic_user(b"Basic"), None);
        assert_eq!(basic_user(b"Basic OnBhc3M="), None); // ":pass": empty user
        assert_eq!(basic_user(b"Basic /w=="), None); // not UTF-8
    }

    #[test]
    fn targets_split_like_urlsplit() {
        assert_eq!(split_target(b"/a?b=1#f"), (&b"/a"[..], &b"b=1"[..]));
        assert_eq!(split_target(b"http://h:1/p?q"), (&b"/p"[..], &b"q"[..]));
        assert_eq!(split_target(b"*"), (&b"*"[..], &b""[..]));
        let mut out = Vec::new();
        put_decoded(&mut out, b"/caf%C3%A9%zz\"");
        assert_eq!(out, "/cafÃ©%zz\\\"".as_bytes());
    }
}
