//! Request parsing glue over llhttp: collects the head, enforces the limits
//! and the checks llhttp leaves to its user (Host, Transfer-Encoding on
//! HTTP/1.0), and hands complete heads and body bytes to a `Sink`.

use std::ffi::{c_char, c_int};
use std::ptr;

use crate::forwarded;
use crate::limits::Limits;
use crate::llhttp::{self, Parser, Settings};

/// A complete, checked request head. `headers` is `name\0value\0...`.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'static str,
    pub url: &'a [u8],
    pub headers: &'a [u8],
    pub http_minor: u8,
    pub keep_alive: bool,
    pub has_body: bool,
    pub expect_continue: bool,
    /// A forwarding header (X-Forwarded-*, Forwarded) is among `headers`.
    pub forwarding: bool,
}

/// Receives what the parser finds, in order.
pub trait Sink {
    /// The first byte of a new request arrived.
    fn begin(&mut self);
    fn head(&mut self, head: RequestHead<'_>);
    fn body(&mut self, data: &[u8]);
    /// The request is complete. Returning true pauses parsing after it
    /// (pipelining depth reached); `RequestParser::resume` continues.
    fn complete(&mut self, had_body: bool) -> bool;
}

/// How one `execute` call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All bytes were parsed.
    Consumed,
    /// Parsing paused after `consumed` bytes: the sink asked for it.
    Paused { consumed: usize },
    /// No more requests may follow on this connection (`Connection: close`,
    /// HTTP/1.0 without keep-alive, or an upgrade): stop reading.
    /// `trailing`: bytes followed the last request (or may have).
    Finished { trailing: bool },
    /// The input is invalid: answer with `status` and close.
    Error {
        status: u16,
        reason: String,
        in_body: bool,
    },
}

/// What the Transfer-Encoding fields of a request say, in order.
#[derive(Default)]
struct TransferCodings {
    chunked: usize,
    other: bool,
    last_is_chunked: bool,
}

impl TransferCodings {
    fn add(&mut self, value: &[u8]) {
        for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                continue;
            }
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked += usize::from(chunked);
            self.other |= !chunked;
            self.last_is_chunked = chunked;
        }
    }

    /// RFC 9112 §6.1/§6.3: chunked must be the final coding, applied once;
    /// rwsgi decodes no other coding (501, as §6.1 recommends).
    fn check(&self) -> Result<(), (u16, &'static str)> {
        if !self.last_is_chunked {
            Err((400, "Transfer-Encoding does not end in chunked"))
        } else if self.chunked > 1 {
            Err((400, "chunked applied more than once"))
        } else if self.other {
            Err((501, "unsupported transfer coding"))
        } else {
            Ok(())
        }
    }
}

/// A byte class as a table: one load per byte instead of a chain of
/// comparisons (these scans were most of a one-header request's callback).
macro_rules! byte_table {
    ($allowed:ident) => {{
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = $allowed(b as u8);
            b += 1;
        }
        table
    }};
}

/// RFC 3986 reg-name / IP-literal characters, plus ':' for the port.
const fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

/// RFC 9110 §5.5: field values are VCHAR, obs-text, SP and HTAB only.
const fn field_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

const HOST_BYTES: [bool; 256] = byte_table!(host_byte);
const FIELD_VALUE_BYTES: [bool; 256] = byte_table!(field_value_byte);

fn valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| HOST_BYTES[usize::from(b)])
}

fn valid_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| FIELD_VALUE_BYTES[usize::from(b)])
}

/// What is being collected, across reads, for the current request.
#[derive(Default)]
struct HeadState {
    buf: Vec<u8>,
    url_end: usize,
    method_len: usize,
    field_start: usize,
    value_start: usize,
    fields: usize,
    host_count: usize,
    transfer_encoding: bool,
    /// Transfer codings in order, across all Transfer-Encoding fields.
    codings: TransferCodings,
    expect_continue: bool,
    forwarding: bool,
    in_message: bool,
    in_trailers: bool,
    in_body: bool,
    had_body: bool,
    /// Body bytes announced so far (Content-Length, or chunk sizes).
    body_announced: u64,
    keep_alive: bool,
    /// Set by a callback that refused the input: (status, reason).
    refusal: Option<(u16, &'static str)>,
    pause_requested: bool,
    finished: bool,
}

struct Context<'s> {
    state: &'s mut HeadState,
    limits: &'s Limits,
    sink: &'s mut dyn Sink,
}

pub struct RequestParser {
    raw: Box<Parser>,
    state: HeadState,
    limits: Limits,
}

static SETTINGS: Settings = Settings {
    on_message_begin: Some(on_message_begin),
    on_protocol: None,
    on_url: Some(on_url),
    on_status: None,
    on_method: Some(on_method),
    on_version: None,
    on_header_field: Some(on_header_field),
    on_header_value: Some(on_header_value),
    on_chunk_extension_name: None,
    on_chunk_extension_value: None,
    on_headers_complete: Some(on_headers_complete),
    on_body: Some(on_body),
    on_message_complete: Some(on_message_complete),
    on_protocol_complete: None,
    on_url_complete: Some(on_url_complete),
    on_status_complete: None,
    on_method_complete: None,
    on_version_complete: None,
    on_header_field_complete: Some(on_header_field_complete),
    on_header_value_complete: Some(on_header_value_complete),
    on_chunk_extension_name_complete: None,
    on_chunk_extension_value_complete: None,
    on_chunk_header: Some(on_chunk_header),
    on_chunk_complete: None,
    on_reset: None,
};

// SAFETY: SETTINGS holds only function pointers, which are Sync.
unsafe impl Sync for Settings {}

impl RequestParser {
    pub fn new(limits: &Limits) -> Result<Self, String> {
        let api = llhttp::api()?;
        // SAFETY: Parser is plain data (integers and raw pointers); all-zero is
        // a valid value to hand to llhttp_init, which overwrites it.
        let mut raw: Box<Parser> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: raw is a valid, boxed (address-stable) llhttp_t; SETTINGS is static.
        unsafe { api.init(&mut *raw, &SETTINGS) };
        Ok(RequestParser {
            raw,
            state: HeadState::default(),
            limits: limits.clone(),
        })
    }

    /// Whether a request's body is partly received.
    pub fn in_body(&self) -> bool {
        self.state.in_message && self.state.in_body
    }

    /// Whether a request is partly received (head or body).
    pub fn busy(&self) -> bool {
        self.state.in_message
    }

    /// Parses `data`, reporting to `sink`.
    pub fn execute(&mut self, data: &[u8], sink: &mut dyn Sink) -> Outcome {
        let Ok(api) = llhttp::api() else {
            return Outcome::Error {
                status: 500,
                reason: "llhttp unavailable".into(),
                in_body: false,
            };
        };
        let mut ctx = Context {
            state: &mut self.state,
            limits: &self.limits,
            sink,
        };
        self.raw.data = ptr::addr_of_mut!(ctx).cast();
        // SAFETY: the parser was initialised in `new`; `data` points at a
        // live Context for the whole call and is cleared right after.
        let errno = unsafe { api.execute(&mut *self.raw, data) };
        self.raw.data = ptr::null_mut();
        let state = &mut self.state;
        match errno {
            llhttp::HPE_OK => Outcome::Consumed,
            llhttp::HPE_PAUSED | llhttp::HPE_PAUSED_UPGRADE => {
                let consumed = self.raw.error_pos as usize - data.as_ptr() as usize;
                if state.finished || errno == llhttp::HPE_PAUSED_UPGRADE {
                    Outcome::Finished {
                        trailing: errno == llhttp::HPE_PAUSED_UPGRADE || consumed < data.len(),
                    }
                } else {
                    state.pause_requested = false;
                    Outcome::Paused { consumed }
                }
            }
            llhttp::HPE_CLOSED_CONNECTION => Outcome::Finished { trailing: true },
            _ => {
                let (status, reason) = match state.refusal.take() {
                    Some((status, reason)) => (status, reason.to_string()),
                    // SAFETY: the parser is initialised.
                    None => (
                        400,
                        format!("{}: {}", api.errno_name(errno), unsafe {
                            api.error_reason(&*self.raw)
                        }),
                    ),
                };
                Outcome::Error {
                    status,
                    reason,
                    in_body: state.in_body,
                }
            }
        }
    }

    /// Continues after `Outcome::Paused`.
    pub fn resume(&mut self) {
        if let Ok(api) = llhttp::api() {
            // SAFETY: only called after execute returned HPE_PAUSED.
            unsafe { api.resume(&mut *self.raw) };
        }
    }
}

/// # Safety
/// `p` must be the parser whose `data` was set by `RequestParser::execute`.
unsafe fn context<'a>(p: *mut Parser) -> &'a mut Context<'a> {
    &mut *((*p).data as *mut Context<'a>)
}

fn bytes<'a>(at: *const c_char, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: llhttp passes a span inside the buffer given to execute.
    unsafe { std::slice::from_raw_parts(at.cast(), len) }
}

fn refuse(state: &mut HeadState, status: u16, reason: &'static str) -> c_int {
    state.refusal = Some((status, reason));
    -1
}

/// `METHOD SP target SP HTTP/1.1` is the request line gunicorn limits.
fn request_line_len(state: &HeadState) -> usize {
    state.method_len + 1 + state.url_end + " HTTP/1.1".len()
}

unsafe extern "C" fn on_message_begin(p: *mut Parser) -> c_int {
    let ctx = context(p);
    let buf = std::mem::take(&mut ctx.state.buf);
    *ctx.state = HeadState {
        buf,
        in_message: true,
        ..HeadState::default()
    };
    ctx.state.buf.clear();
    ctx.sink.begin();
    0
}

unsafe extern "C" fn on_method(p: *mut Parser, _at: *const c_char, len: usize) -> c_int {
    let ctx = context(p);
    ctx.state.method_len += len;
    if request_line_len(ctx.state) > ctx.limits.request_line {
        return refuse(ctx.state, 414, "request line too long");
    }
    0
}

unsafe extern "C" fn on_url(p: *mut Parser, at: *const c_char, len: usize) -> c_int {
    let ctx = context(p);
    ctx.state.buf.extend_from_slice(bytes(at, len));
    ctx.state.url_end = ctx.state.buf.len();
    if request_line_len(ctx.state) > ctx.limits.request_line {
        return refuse(ctx.state, 414, "request line too long");
    }
    0
}

unsafe extern "C" fn on_url_complete(p: *mut Parser) -> c_int {
    let ctx = context(p);
    ctx.state.field_start = ctx.state.buf.len();
    0
}

unsafe extern "C" fn on_header_field(p: *mut Parser, at: *const c_char, len: usize) -> c_int {
    let ctx = context(p);
    let state = &mut *ctx.state;
    if state.in_trailers {
        // Trailers are parsed (so framing stays right) but never exposed.
        return 0;
    }
    state.buf.extend_from_slice(bytes(at, len));
    if state.buf.len() - state.field_start > ctx.limits.field_size {
        return refuse(state, 431, "header field too large");
    }
    0
}

unsafe extern "C" fn on_header_field_complete(p: *mut Parser) -> c_int {
    let ctx = context(p);
    let state = &mut *ctx.state;
    if state.in_trailers {
        return 0;
    }
    state.fields += 1;
    if state.fields > ctx.limits.header_fields {
        return refuse(state, 431, "too many header fields");
    }
    state.buf.push(0);
    state.value_start = state.buf.len();
    0
}

unsafe extern "C" fn on_header_value(p: *mut Parser, at: *const c_char, len: usize) -> c_int {
    let ctx = context(p);
    let state = &mut *ctx.state;
    if state.in_trailers {
        return 0;
    }
    state.buf.extend_from_slice(bytes(at, len));
    if state.buf.len() - state.field_start > ctx.limits.field_size + 1 {
        return refuse(state, 431, "header field too large");
    }
    0
}

unsafe extern "C" fn on_header_value_complete(p: *mut Parser) -> c_int {
    let ctx = context(p);
    let state = &mut *ctx.state;
    if state.in_trailers {
        return 0;
    }
    while state.buf.len() > state.value_start
        && matches!(state.buf.last(), Some(b' ') | Some(b'\t'))
    {
        state.buf.pop();
    }
    let name = &state.buf[state.field_start..state.value_start - 1];
    let value = &state.buf[state.value_start..];
    if !valid_field_value(value) {
        return refuse(state, 400, "control character in a header value");
    }
    if name.eq_ignore_ascii_case(b"host") {
        state.host_count += 1;
        if !valid_host(value) {
            return refuse(state, 400, "invalid Host header");
        }
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        state.transfer_encoding = true;
        state.codings.add(value);
    } else if name.eq_ignore_ascii_case(b"expect") && value.eq_ignore_ascii_case(b"100-continue") {
        state.expect_continue = true;
    } else if forwarded::is_forwarding(name) {
        state.forwarding = true;
    }
    state.buf.push(0);
    state.field_start = state.buf.len();
    state.value_start = state.field_start;
    0
}

unsafe extern "C" fn on_headers_complete(p: *mut Parser) -> c_int {
    let ctx = context(p);
    let parser = &*p;
    let state = &mut *ctx.state;
    let minor = parser.http_minor;
    if parser.http_major != 1 {
        return refuse(state, 505, "HTTP version not supported");
    }
    if minor >= 1 && state.host_count != 1 {
        return refuse(state, 400, "HTTP/1.1 request needs exactly one Host header");
    }
    if state.host_count > 1 {
        return refuse(state, 400, "repeated Host header");
    }
    if minor == 0 && state.transfer_encoding {
        return refuse(state, 400, "Transfer-Encoding in an HTTP/1.0 request");
    }
    if state.transfer_encoding {
        if let Err((status, reason)) = state.codings.check() {
            return refuse(state, status, reason);
        }
    }
    let Ok(api) = llhttp::api() else {
        return -1;
    };
    let chunked = parser.flags & llhttp::F_CHUNKED != 0;
    if parser.flags & llhttp::F_CONTENT_LENGTH != 0 {
        state.body_announced = parser.content_length;
        if over_body_limit(state, ctx.limits) {
            return refuse(state, 413, "request body over --limit-request-body");
        }
    }
    let has_body =
        chunked || (parser.flags & llhttp::F_CONTENT_LENGTH != 0 && parser.content_length > 0);
    state.keep_alive = api.should_keep_alive(parser) && parser.upgrade == 0;
    state.in_trailers = true;
    state.in_body = true;
    state.had_body = has_body;
    let head = RequestHead {
        method: api.method_name(parser.method),
        url: &state.buf[..state.url_end],
        headers: &state.buf[state.url_end..],
        http_minor: minor,
        keep_alive: state.keep_alive,
        has_body,
        expect_continue: state.expect_continue && minor >= 1 && has_body,
        forwarding: state.forwarding,
    };
    ctx.sink.head(head);
    0
}

fn over_body_limit(state: &HeadState, limits: &Limits) -> bool {
    limits.max_body > 0 && state.body_announced > limits.max_body
}

/// Each chunk's size is known before its data: refuse a body over the limit
/// before reading it.
unsafe extern "C" fn on_chunk_header(p: *mut Parser) -> c_int {
    let ctx = context(p);
    let size = (*p).content_length;
    ctx.state.body_announced = ctx.state.body_announced.saturating_add(size);
    if over_body_limit(ctx.state, ctx.limits) {
        return refuse(ctx.state, 413, "request body over --limit-request-body");
    }
    0
}

unsafe extern "C" fn on_body(p: *mut Parser, at: *const c_char, len: usize) -> c_int {
    let ctx = context(p);
    ctx.sink.body(bytes(at, len));
    0
}

unsafe extern "C" fn on_message_complete(p: *mut Parser) -> c_int {
    let ctx = context(p);
    let state = &mut *ctx.state;
    let pause = ctx.sink.complete(state.had_body);
    let keep_alive = state.keep_alive;
    let buf = std::mem::take(&mut state.buf);
    *state = HeadState {
        buf,
        ..HeadState::default()
    };
    state.buf.clear();
    if !keep_alive {
        // Stop here: bytes pipelined behind a closing request are never run.
        state.finished = true;
        return llhttp::HPE_PAUSED;
    }
    if pause {
        state.pause_requested = true;
        return llhttp::HPE_PAUSED;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codings(values: &[&str]) -> Result<(), (u16, &'static str)> {
        let mut c = TransferCodings::default();
        for v in values {
            c.add(v.as_bytes());
        }
        c.check()
    }

    #[test]
    fn transfer_codings_follow_rfc_9112() {
        assert!(codings(&["chunked"]).is_ok());
        assert!(codings(&["Chunked"]).is_ok());
        assert_eq!(codings(&["gzip"]).unwrap_err().0, 400);
        assert_eq!(codings(&["chunked, gzip"]).unwrap_err().0, 400);
        assert_eq!(codings(&["gzip, chunked"]).unwrap_err().0, 501);
        assert_eq!(codings(&["gzip", "chunked"]).unwrap_err().0, 501);
        assert_eq!(codings(&["chunked", "chunked"]).unwrap_err().0, 400);
        assert_eq!(codings(&["chunked, chunked"]).unwrap_err().0, 400);
        assert_eq!(codings(&[""]).unwrap_err().0, 400);
    }

    #[test]
    fn host_and_value_characters() {
        assert!(valid_host(b"example.com:8080"));
        assert!(valid_host(b"[::1]:80"));
        assert!(valid_host(b""));
        assert!(!valid_host(b"a b"));
        assert!(!valid_host(b"a/b"));
        assert!(!valid_host(b"user@host"));
        assert!(valid_field_value(b"text\twith tab \x80\xff"));
        assert!(!valid_field_value(b"a\x7fb"));
        assert!(!valid_field_value(b"a\x01b"));
    }
}
