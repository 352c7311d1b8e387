//! One client connection: its parser, the queue of requests awaiting their
//! responses (answered strictly in order), the output buffer, and its state
//! as enums (reading, writing, closing) changed only by named transitions.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::body::{BodyEncoder, BodyError};
use crate::event::{Recorder, Secure};
use crate::metrics::MethodClass;
use crate::parser::{Outcome, RequestHead, RequestParser, Sink};
use crate::proxy_protocol::{self, Mode, Parsed, Source};
use crate::response::{self, AppHead, Framing, HeaderList, RequestInfo, ResponseError};
use crate::socket::Peer;
use crate::tls::PeerCertificate;
use crate::tls_conn::{TlsLayer, TlsRead};

/// Output past this many unsent bytes tells the app to wait for `drain`.
pub const HIGH_WATER: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The connection is gone (closed by the client or by an error).
    Closed,
    /// There is no request waiting for a response on this connection.
    NoRequest,
    /// `start`/`respond` after the head was already written, or `write`/`end`
    /// before it.
    WrongState,
    Response(ResponseError),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Closed => write!(f, "connection closed"),
            WriteError::NoRequest => write!(f, "no request is waiting for a response"),
            WriteError::WrongState => write!(f, "response written out of order"),
            WriteError::Response(e) => e.fmt(f),
        }
    }
}

/// The status and reason (also the body) of the canned response for `status`.
pub fn canned_reason(status: u16) -> (u16, &'static str) {
    let reason = match status {
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Bad Request",
    };
    (if reason == "Bad Request" { 400 } else { status }, reason)
}

/// Canned error responses, written by the engine itself.
pub fn error_response(status: u16, date_line: &[u8], out: &mut Vec<u8>) {
    canned_response(status, None, date_line, out);
}

/// A canned response whose body is `body`, or the reason phrase.
fn canned_response(status: u16, body: Option<&str>, date_line: &[u8], out: &mut Vec<u8>) {
    let (status, reason) = canned_reason(status);
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    out.extend_from_slice(date_line);
    let body = body.unwrap_or(reason);
    out.extend_from_slice(
        format!(
            "Connection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// Whether more requests are read from the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// Before any HTTP byte (`--proxy-protocol`): a PROXY header is awaited
    /// from a peer in `--proxy-allow-from` (`required`), or, from any
    /// other peer, refused if one begins.
    ProxyHeader { required: bool },
    /// Requests are read and parsed (unless paused, see `Paused`).
    Open,
    /// No more requests are read. `peer_done`: the client's last request
    /// (it asked to close) was read whole with nothing after it, so closing
    /// needs no lingering.
    Finished { peer_done: bool },
    /// The input was refused: `status` goes out once the responses ahead
    /// of it are written, then the connection closes.
    Refused { status: u16 },
}

/// Where the front request's response is.
enum Writing {
    /// No response has started; `continue_sent`: `100 Continue` is out.
    Waiting { continue_sent: bool },
    /// The head is out; the body goes through the encoder.
    Body(BodyEncoder),
}

/// How the connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// It stays open after its responses (keep-alive).
    KeepOpen,
    /// It closes once the buffered output is flushed.
    AfterOutput,
    /// Write side shut; input is drained until the client closes, or
    /// until this instant.
    Lingering { until: Instant },
}

/// Why reading is paused, each reason on its own.
#[derive(Clone, Copy, Default)]
struct Paused {
    /// The pipelining depth is reached.
    pipeline: bool,
    /// The app asked (request body backpressure).
    app: bool,
}

/// A request the parser refused: answer with `status` (if nothing has
/// started) and close. `in_body`: the app already has the request.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
    pub in_body: bool,
}

pub struct Conn {
    fd: OwnedFd,
    parser: RequestParser,
    /// Received bytes not yet parsed (parsing paused).
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Requests parsed and handed to the app, oldest first.
    pending: VecDeque<RequestInfo>,
    peer: Peer,
    reading: Reading,
    writing: Writing,
    closing: Closing,
    paused: Paused,
    /// The app has been told of at least one request (so it must hear of the close).
    known_to_app: bool,
    /// The last request's header block, if at most `REMEMBERED_HEADERS`
    /// bytes: a request sending the same block is marked so, and the app
    /// interface reuses what it made of it (clients repeat their headers).
    last_headers: Vec<u8>,
    /// The app was told to wait for `drain`.
    wants_drain: bool,
    /// When the request head being received began.
    head_since: Option<Instant>,
    idle_since: Instant,
    /// When request bytes last arrived (for the body read timeout).
    last_read: Instant,
    /// The epoll interest currently registered.
    interest: u32,
    /// Its peer is a trusted proxy: its forwarding headers are believed.
    trusts_forwarded: bool,
    /// A PROXY header was read: the connection stays on this worker (one
    /// it were handed to would know neither the addresses nor that the
    /// header is past).
    proxied: bool,
    /// TLS between the socket and the buffers above (see tls_conn.rs).
    tls: Option<Box<TlsLayer>>,
    /// A response was cut short: over TLS the close then goes without
    /// close_notify, so the client cannot take the cut for the end.
    cut_short: bool,
}

/// The longest header block a connection remembers to tell a repeat of it
/// (a browser's is 0.5 to 1.5 KiB): it bounds the memory per connection.
const REMEMBERED_HEADERS: usize = 2048;

/// Parser events for one connection: the request queue is kept here, the
/// events go to the recorder.
struct Tracker<'a, 'r> {
    pending: &'a mut VecDeque<RequestInfo>,
    head_since: &'a mut Option<Instant>,
    known_to_app: &'a mut bool,
    last_headers: &'a mut Vec<u8>,
    peer: &'a Peer,
    secure: Secure,
    now: Instant,
    pause_at: usize,
    recorder: &'a mut Recorder<'r>,
}

impl Sink for Tracker<'_, '_> {
    fn begin(&mut self) {
        *self.head_since = Some(self.now);
    }

    fn head(&mut self, head: RequestHead<'_>) {
        *self.head_since = None;
        *self.known_to_app = true;
        self.pending.push_back(RequestInfo {
            is_head: head.method == "HEAD",
            http_minor: head.http_minor,
            keep_alive: head.keep_alive,
            method: MethodClass::of(head.method),
            status: 0,
            since: Some(self.now),
        });
        let same_headers = *self.last_headers == head.headers;
        if !same_headers {
            self.last_headers.clear();
            if head.headers.len() <= REMEMBERED_HEADERS {
                self.last_headers.extend_from_slice(head.headers);
            }
        }
        self.recorder
            .request(&head, self.peer, self.secure, same_headers);
    }

    fn body(&mut self, data: &[u8]) {
        self.recorder.body(data);
    }

    fn complete(&mut self, had_body: bool) -> bool {
        if had_body {
            self.recorder.body_end();
        }
        self.pending.len() >= self.pause_at
    }
}

/// What `Conn::read_proxy_header` made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// More bytes are needed.
    Waiting,
    /// Done: HTTP follows (the addresses are the header's, if it gave any).
    Read,
    /// The connection must close unanswered, for this reason.
    Refused(&'static str),
}

/// What one `Conn::receive` got.
pub enum Received {
    /// This many bytes were added to the unparsed input.
    Data(usize),
    /// The client is done sending (FIN).
    End,
    /// Nothing now.
    Nothing,
    /// The connection failed.
    Failed,
    /// Plain HTTP arrived on a TLS port.
    PlainHttp,
}

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

impl Conn {
    pub fn new(fd: OwnedFd, parser: RequestParser, peer: Peer, now: Instant) -> Self {
        Conn {
            fd,
            parser,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            pending: VecDeque::new(),
            peer,
            reading: Reading::Open,
            writing: Writing::Waiting {
                continue_sent: false,
            },
            closing: Closing::KeepOpen,
            paused: Paused::default(),
            known_to_app: false,
            last_headers: Vec::new(),
            wants_drain: false,
            head_since: None,
            idle_since: now,
            last_read: now,
            interest: 0,
            trusts_forwarded: false,
            proxied: false,
            tls: None,
            cut_short: false,
        }
    }

    /// Serves the connection over TLS; false if rustls refused to start.
    pub fn start_tls(&mut self, config: std::sync::Arc<rustls::ServerConfig>) -> bool {
        self.tls = TlsLayer::new(config).map(Box::new);
        self.tls.is_some()
    }

    /// The TLS handshake is still under way.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        self.tls.as_ref()?.peer_certificate()
    }

    /// The TLS version and cipher suite negotiated, if over TLS.
    pub fn tls_negotiated(&self) -> Option<(String, String)> {
        self.tls.as_ref()?.negotiated()
    }

    fn secure(&self) -> Secure {
        self.tls.as_ref().map_or(Secure::default(), |t| Secure {
            tls: true,
            client_cert: t.has_peer_certificate(),
        })
    }

    /// Answers plain HTTP sent to the TLS port in plain HTTP, as nginx
    /// does, then closes.
    pub fn refuse_plain_http(&mut self, date_line: &[u8]) {
        self.tls = None;
        self.inbuf.clear();
        let body = "The plain HTTP request was sent to an HTTPS port: use https://";
        canned_response(400, Some(body), date_line, &mut self.out);
        self.close_after_output();
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    pub fn wants_read(&self) -> bool {
        match self.closing {
            Closing::Lingering { .. } => true,
            Closing::AfterOutput => false,
            Closing::KeepOpen => {
                matches!(self.reading, Reading::Open | Reading::ProxyHeader { .. })
                    && !self.paused.pipeline
                    && !self.paused.app
            }
        }
    }

    pub fn unsent(&self) -> usize {
        let sealed = self.tls.as_ref().is_some_and(|t| t.wants_write());
        self.out.len() - self.out_pos + usize::from(sealed)
    }

    /// The epoll interest to register: reading and/or writing.
    pub fn wanted_interest(&self) -> u32 {
        let mut want = 0u32;
        if self.wants_read() {
            want |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if self.unsent() > 0 {
            want |= libc::EPOLLOUT as u32;
        }
        want
    }

    /// Records `want` as registered; false if it already was.
    pub fn set_interest(&mut self, want: u32) -> bool {
        std::mem::replace(&mut self.interest, want) != want
    }

    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.unsent() == 0
            && !self.parser.busy()
            && self.inbuf.is_empty()
            && !self.handshaking()
    }

    /// Idle and staying open: another worker could take it over as is.
    /// Not over TLS: the session's keys and sequence numbers live in this
    /// process, and cannot follow the descriptor.
    pub fn is_movable(&self) -> bool {
        self.is_idle() && self.may_move()
    }

    /// Staying open, with no state another worker could not take over
    /// (TLS, a PROXY header): movable whenever it is idle.
    pub fn may_move(&self) -> bool {
        self.reading == Reading::Open
            && self.closing == Closing::KeepOpen
            && !self.proxied
            && self.tls.is_none()
    }

    /// Whether the peer's forwarding headers are believed.
    pub fn trusts_forwarded(&self) -> bool {
        self.trusts_forwarded
    }

    pub fn set_trusts_forwarded(&mut self, trusted: bool) {
        self.trusts_forwarded = trusted;
    }

    /// Nothing of HTTP is read before the PROXY header step: a header is
    /// `required` of the peer, or else refused.
    pub fn expect_proxy_header(&mut self, required: bool) {
        self.reading = Reading::ProxyHeader { required };
    }

    /// The PROXY header step is not over.
    pub fn in_proxy_header(&self) -> bool {
        matches!(self.reading, Reading::ProxyHeader { .. })
    }

    /// The PROXY header step over the bytes received so far (nothing to do
    /// after it). A header's addresses replace the peer's; the bytes after
    /// it are HTTP. A partial header is bounded by the header timeout.
    pub fn read_proxy_header(&mut self, mode: Mode, now: Instant) -> ProxyHeader {
        let Reading::ProxyHeader { required } = self.reading else {
            return ProxyHeader::Read;
        };
        let parsed = if required {
            proxy_protocol::parse(&self.inbuf, mode)
        } else {
            match proxy_protocol::detect(&self.inbuf) {
                None => Parsed::Incomplete,
                Some(true) => Parsed::Invalid("PROXY header from a peer not in --proxy-allow-from"),
                // Plain HTTP, as a peer not allowed speaks: nothing to skip.
                Some(false) => Parsed::Header {
                    len: 0,
                    source: None,
                },
            }
        };
        match parsed {
            Parsed::Incomplete => {
                if !self.inbuf.is_empty() && self.head_since.is_none() {
                    self.head_since = Some(now);
                }
                ProxyHeader::Waiting
            }
            Parsed::Invalid(reason) => ProxyHeader::Refused(reason),
            Parsed::Header { len, source } => {
                self.inbuf.drain(..len.min(self.inbuf.len()));
                self.head_since = None;
                self.reading = Reading::Open;
                self.proxied = required;
                match source {
                    Some(Source::Inet { client, server }) => {
                        self.peer = Peer {
                            ip: client.ip().to_string(),
                            port: client.port(),
                            local_port: server.port(),
                        };
                    }
                    // As a direct Unix-socket peer is shown.
                    Some(Source::Unix) => {
                        self.peer.ip.clear();
                        self.peer.port = 0;
                    }
                    None => {}
                }
                ProxyHeader::Read
            }
        }
    }

    pub fn is_lingering(&self) -> bool {
        matches!(self.closing, Closing::Lingering { .. })
    }

    /// When a lingering close gives up on the client.
    pub fn linger_deadline(&self) -> Option<Instant> {
        match self.closing {
            Closing::Lingering { until } => Some(until),
            _ => None,
        }
    }

    /// When the request head being received began, if one is.
    pub fn head_started(&self) -> Option<Instant> {
        self.head_since
    }

    /// A request body is being read from the client.
    pub fn reading_body(&self) -> bool {
        self.parser.in_body() && self.reading == Reading::Open
    }

    pub fn last_read(&self) -> Instant {
        self.last_read
    }

    pub fn idle_since(&self) -> Instant {
        self.idle_since
    }

    /// Requests handed to the app and not yet answered.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The app has heard of this connection (and must hear of its close).
    pub fn known_to_app(&self) -> bool {
        self.known_to_app
    }

    /// Whether the app must hear of the close; it will not be told twice.
    pub fn take_known_to_app(&mut self) -> bool {
        std::mem::take(&mut self.known_to_app)
    }

    /// Whether the app waits for `drain`; it will not be told twice.
    pub fn take_wants_drain(&mut self) -> bool {
        std::mem::take(&mut self.wants_drain)
    }

    /// A request cut short by the client's FIN could never complete.
    pub fn mid_request(&self) -> bool {
        self.parser.busy()
    }

    /// Reads what the client sent into the unparsed input.
    pub fn receive(&mut self, now: Instant) -> Received {
        if let Some(tls) = &mut self.tls {
            let before = self.inbuf.len();
            let got = tls.receive(self.fd.as_raw_fd(), &mut self.inbuf);
            if got == TlsRead::Progress {
                self.last_read = now;
            }
            return match got {
                // Counted as the plaintext it gave (a handshake gives none).
                TlsRead::Progress => Received::Data(self.inbuf.len() - before),
                TlsRead::Nothing => Received::Nothing,
                TlsRead::End => Received::End,
                TlsRead::PlainHttp => Received::PlainHttp,
                TlsRead::Failed => {
                    tls.send_queued(self.fd.as_raw_fd());
                    Received::Failed
                }
            };
        }
        let start = self.inbuf.len();
        self.inbuf.reserve(READ_CHUNK);
        let spare = self.inbuf.capacity() - start;
        // recv rather than read: the socket call skips the VFS layer.
        // SAFETY: reading into the vector's spare capacity, then setting the
        // length to what the kernel wrote.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.inbuf.as_mut_ptr().add(start).cast(),
                spare,
                0,
            )
        };
        match n {
            0 => Received::End,
            n if n < 0 => match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Received::Nothing,
                _ => Received::Failed,
            },
            n => {
                // SAFETY: the kernel initialised n bytes after start.
                unsafe { self.inbuf.set_len(start + n as usize) };
                self.last_read = now;
                Received::Data(n as usize)
            }
        }
    }

    /// While lingering: reads and drops input. False once the client
    /// closed or the connection failed.
    pub fn discard_input(&mut self) -> bool {
        let mut sink = [0u8; 4096];
        // SAFETY: reading into a local buffer from our socket.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) };
        !(n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock))
    }

    /// Runs the parser over the unparsed input, recording what it finds,
    /// pausing after a request once `pause_at` requests are pending.
    pub fn parse(
        &mut self,
        now: Instant,
        pause_at: usize,
        recorder: &mut Recorder<'_>,
    ) -> Option<Rejection> {
        if self.inbuf.is_empty() || self.reading != Reading::Open {
            return None;
        }
        let secure = self.secure();
        let mut tracker = Tracker {
            pending: &mut self.pending,
            head_since: &mut self.head_since,
            known_to_app: &mut self.known_to_app,
            last_headers: &mut self.last_headers,
            peer: &self.peer,
            secure,
            now,
            pause_at,
            recorder,
        };
        match self.parser.execute(&self.inbuf, &mut tracker) {
            Outcome::Consumed => self.inbuf.clear(),
            Outcome::Paused { consumed } => {
                self.inbuf.drain(..consumed.min(self.inbuf.len()));
                self.paused.pipeline = true;
            }
            Outcome::Finished { trailing } => {
                self.inbuf.clear();
                self.reading = Reading::Finished {
                    peer_done: !trailing,
                };
            }
            Outcome::Error {
                status,
                reason,
                in_body,
            } => {
                return Some(Rejection {
                    status,
                    reason,
                    in_body,
                })
            }
        }
        None
    }

    /// Continues parsing paused at the pipelining depth, now that
    /// responses made room; false if it was not paused.
    pub fn resume_parsing(&mut self) -> bool {
        if !self.paused.pipeline {
            return false;
        }
        self.paused.pipeline = false;
        self.parser.resume();
        true
    }

    /// Request-body backpressure from the app.
    pub fn set_app_paused(&mut self, paused: bool) {
        self.paused.app = paused;
    }

    /// No more requests are read (the client is done, or the response
    /// being written closes the connection).
    pub fn stop_reading(&mut self) {
        if self.reading == Reading::Open {
            self.reading = Reading::Finished { peer_done: false };
        }
    }

    /// Stop reading, close once the buffered output is out, and give up
    /// on the requests still waiting (and any queued error response).
    pub fn close_after_output(&mut self) {
        if !matches!(self.reading, Reading::Finished { .. }) {
            self.reading = Reading::Finished { peer_done: false };
        }
        if self.closing == Closing::KeepOpen {
            self.closing = Closing::AfterOutput;
        }
        self.pending.clear();
    }

    /// As `close_after_output`, for a response that could not be completed.
    pub fn close_cut_short(&mut self) {
        self.cut_short = true;
        self.close_after_output();
    }

    /// The request head being received will not be waited for any longer.
    pub fn forget_head(&mut self) {
        self.head_since = None;
    }

    /// The output is flushed and the connection closes: true if it may
    /// close at once (the client sends no more), false if it must linger.
    pub fn closes_now(&self) -> Option<bool> {
        (self.closing == Closing::AfterOutput)
            .then(|| self.reading == Reading::Finished { peer_done: true } && self.inbuf.is_empty())
    }

    /// Shuts the write side and drains input until `until`, so a client
    /// still sending does not get a reset that would destroy the response
    /// it has not read yet.
    pub fn linger(&mut self, until: Instant) {
        // SAFETY: shutting down our own socket.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
        self.closing = Closing::Lingering { until };
        self.pending.clear();
    }

    fn front(&self) -> Result<RequestInfo, WriteError> {
        self.pending.front().copied().ok_or(WriteError::NoRequest)
    }

    /// Writes a response head for the front request.
    pub fn start(
        &mut self,
        date_line: &[u8],
        status: &[u8],
        headers: &HeaderList<'_>,
        app: &AppHead,
        body_len: Option<u64>,
        draining: bool,
    ) -> Result<(), WriteError> {
        if self.response_started() {
            return Err(WriteError::WrongState);
        }
        let mut info = self.front()?;
        // Draining: the last request handed to the app closes the connection.
        info.keep_alive &= !(draining && self.pending.len() == 1);
        let head = response::write_head(
            &mut self.out,
            date_line,
            status,
            headers,
            app,
            info,
            body_len,
        );
        if !head.keep_alive {
            self.stop_reading();
        }
        let encoder = BodyEncoder::new(head.framing);
        if let Some(front) = self.pending.front_mut() {
            front.keep_alive = head.keep_alive && !encoder.ends_with_close();
            front.status = app.code;
        }
        self.writing = Writing::Body(encoder);
        Ok(())
    }

    /// Starts a response the app frames itself; `keep_alive` and `status`
    /// are what its head said (`Connection: close` or not).
    pub fn start_raw(&mut self, keep_alive: bool, status: u16) -> Result<(), WriteError> {
        if self.response_started() {
            return Err(WriteError::WrongState);
        }
        let front = self.pending.front_mut().ok_or(WriteError::NoRequest)?;
        front.keep_alive &= keep_alive;
        front.status = status;
        if !front.keep_alive {
            self.stop_reading();
        }
        self.writing = Writing::Body(BodyEncoder::new(Framing::Raw));
        Ok(())
    }

    /// The front response is framed by the app and is the only one in
    /// flight: nothing else will be written to this connection until the
    /// app has finished it.
    pub fn writing_lone_raw(&self) -> bool {
        matches!(&self.writing, Writing::Body(body) if body.is_raw()) && self.pending.len() == 1
    }

    /// Appends body bytes; false once the app should wait for `drain`.
    pub fn write(&mut self, data: &[u8]) -> Result<bool, WriteError> {
        let Writing::Body(body) = &mut self.writing else {
            return Err(WriteError::WrongState);
        };
        if body.write(&mut self.out, data) == Err(BodyError::TooLong) {
            // The declared length is written; the rest cannot be framed.
            self.stop_reading();
            if let Some(front) = self.pending.front_mut() {
                front.keep_alive = false;
            }
        }
        let below = self.unsent() < HIGH_WATER;
        self.wants_drain |= !below;
        Ok(below)
    }

    /// Ends the front response and moves on to the next request; with none
    /// left, the connection is idle from now (the clock is read here: the
    /// turn's time may be seconds old after a slow handler, which would
    /// close the connection at the next tick as idle past its keep-alive).
    /// Returns the request answered.
    pub fn end(&mut self, date_line: &[u8]) -> Result<RequestInfo, WriteError> {
        let waiting = Writing::Waiting {
            continue_sent: false,
        };
        let Writing::Body(mut body) = std::mem::replace(&mut self.writing, waiting) else {
            return Err(WriteError::WrongState);
        };
        let finished = body.finish(&mut self.out);
        let info = self.pending.pop_front().ok_or(WriteError::NoRequest)?;
        if finished.is_err() {
            // A short body cannot be delimited: closing is the only honest end.
            self.close_cut_short();
        } else if !info.keep_alive {
            self.close_after_output();
        } else if self.pending.is_empty() {
            self.idle_since = Instant::now();
            if let Reading::Refused { status } = self.reading {
                error_response(status, date_line, &mut self.out);
                self.close_after_output();
            }
        }
        Ok(info)
    }

    /// Answers a request that cannot be parsed: right away if nothing is
    /// pending, else after the responses ahead of it.
    pub fn fail(&mut self, status: u16, date_line: &[u8]) {
        self.inbuf.clear();
        if self.pending.is_empty() {
            error_response(status, date_line, &mut self.out);
            self.close_after_output();
        } else {
            self.reading = Reading::Refused { status };
        }
    }

    /// `100 Continue` for the request whose body the app starts reading,
    /// when no earlier response is still being written.
    pub fn send_continue(&mut self) {
        if let Writing::Waiting { continue_sent } = &mut self.writing {
            if !*continue_sent && self.pending.len() == 1 {
                self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                *continue_sent = true;
            }
        }
    }

    /// The front request waits for a response that has not started, with
    /// nothing unsent ahead of it: a canned error may go out on the socket.
    pub fn awaits_response(&self) -> bool {
        !self.pending.is_empty()
            && !self.response_started()
            && self.unsent() == 0
            && !self.is_lingering()
    }

    pub fn response_started(&self) -> bool {
        matches!(self.writing, Writing::Body(_))
    }

    /// Sends what is buffered. Ok(true) when everything went out.
    pub fn flush(&mut self) -> io::Result<bool> {
        if let Some(tls) = &mut self.tls {
            let closing = self.closing == Closing::AfterOutput && !self.cut_short;
            let done = tls.flush(self.fd.as_raw_fd(), &self.out, &mut self.out_pos, closing)?;
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
            return Ok(done);
        }
        while self.out_pos < self.out.len() {
            let rest = &self.out[self.out_pos..];
            // SAFETY: fd is an open socket; rest is a valid readable buffer.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => return Ok(false),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(err),
                }
            }
            self.out_pos += n as usize;
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_errors_close_and_have_exact_length() {
        let mut out = Vec::new();
        error_response(431, b"Date: x\r\n", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        let mut out = Vec::new();
        error_response(499, b"", &mut out);
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}
