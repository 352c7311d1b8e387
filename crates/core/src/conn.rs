//! One client connection: its parser, the queue of requests awaiting their
//! responses (answered strictly in order), and the output buffer.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use crate::body::{BodyEncoder, BodyError};
use crate::parser::RequestParser;
use crate::response::{self, AppHead, Framing, HeaderList, RequestInfo, ResponseError};

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

/// Canned error responses, written by the engine itself.
pub fn error_response(status: u16, date_line: &[u8], out: &mut Vec<u8>) {
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
    let status = if reason == "Bad Request" { 400 } else { status };
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    out.extend_from_slice(date_line);
    out.extend_from_slice(
        format!(
            "Connection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{reason}",
            reason.len()
        )
        .as_bytes(),
    );
}

pub struct Conn {
    pub fd: OwnedFd,
    pub parser: RequestParser,
    /// Received bytes not yet parsed (parsing paused).
    pub inbuf: Vec<u8>,
    pub out: Vec<u8>,
    out_pos: usize,
    /// Requests parsed and handed to the app, oldest first.
    pub pending: VecDeque<RequestInfo>,
    /// The body framing of the front request's response, once its head is out.
    body: Option<BodyEncoder>,
    pub peer_ip: String,
    pub peer_port: u16,
    pub local_port: u16,
    /// The app has been told of at least one request (so it must hear of the close).
    pub known_to_app: bool,
    /// Reading is stopped: the last request closes the connection, or an
    /// error response is queued.
    pub read_finished: bool,
    /// The parser is paused at the pipelining depth.
    pub parse_paused: bool,
    /// The app asked to stop reading (request body backpressure).
    pub app_paused: bool,
    /// Close once `out` is flushed.
    pub close_after_flush: bool,
    /// The client's last request (it asked to close) was read whole, and
    /// nothing came after it: closing needs no lingering.
    pub peer_done: bool,
    /// An error response to write once earlier responses are out.
    pub queued_error: Option<u16>,
    pub wants_drain: bool,
    pub continue_sent: bool,
    /// Lingering close: write side shut, draining input until this instant.
    pub linger_until: Option<Instant>,
    pub head_since: Option<Instant>,
    pub idle_since: Instant,
    /// When request bytes last arrived (for the body read timeout).
    pub last_read: Instant,
    /// The epoll interest currently registered.
    pub interest: u32,
}

impl Conn {
    pub fn new(
        fd: OwnedFd,
        parser: RequestParser,
        peer: (String, u16),
        local_port: u16,
        now: Instant,
    ) -> Self {
        Conn {
            fd,
            parser,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            pending: VecDeque::new(),
            body: None,
            peer_ip: peer.0,
            peer_port: peer.1,
            local_port,
            known_to_app: false,
            read_finished: false,
            parse_paused: false,
            app_paused: false,
            close_after_flush: false,
            peer_done: false,
            queued_error: None,
            wants_drain: false,
            continue_sent: false,
            linger_until: None,
            head_since: None,
            idle_since: now,
            last_read: now,
            interest: 0,
        }
    }

    pub fn wants_read(&self) -> bool {
        self.linger_until.is_some()
            || !(self.read_finished
                || self.parse_paused
                || self.app_paused
                || self.close_after_flush)
    }

    pub fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.unsent() == 0
            && !self.parser.busy()
            && self.inbuf.is_empty()
    }

    /// Idle and staying open: another worker could take it over as is.
    pub fn is_movable(&self) -> bool {
        self.is_idle()
            && self.linger_until.is_none()
            && !self.read_finished
            && !self.close_after_flush
            && self.queued_error.is_none()
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
        if self.body.is_some() {
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
        }
        self.body = Some(encoder);
        Ok(())
    }

    /// Starts a response the app frames itself; `keep_alive` is what its
    /// head said (`Connection: close` or not).
    pub fn start_raw(&mut self, keep_alive: bool) -> Result<(), WriteError> {
        if self.body.is_some() {
            return Err(WriteError::WrongState);
        }
        let front = self.pending.front_mut().ok_or(WriteError::NoRequest)?;
        front.keep_alive &= keep_alive;
        if !front.keep_alive {
            self.read_finished = true;
        }
        self.body = Some(BodyEncoder::new(Framing::Raw));
        Ok(())
    }

    /// Appends body bytes; false once the app should wait for `drain`.
    pub fn write(&mut self, data: &[u8]) -> Result<bool, WriteError> {
        let body = self.body.as_mut().ok_or(WriteError::WrongState)?;
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
    /// left, the connection is idle from `now`.
    pub fn end(&mut self, date_line: &[u8], now: Instant) -> Result<(), WriteError> {
        let mut body = self.body.take().ok_or(WriteError::WrongState)?;
        let finished = body.finish(&mut self.out);
        let info = self.pending.pop_front().ok_or(WriteError::NoRequest)?;
        self.continue_sent = false;
        if finished.is_err() || !info.keep_alive {
            // A short body cannot be delimited: closing is the only honest end.
            self.stop_reading();
            self.close_after_flush = true;
            self.queued_error = None;
            self.pending.clear();
        } else if self.pending.is_empty() {
            self.idle_since = now;
            if let Some(status) = self.queued_error.take() {
                error_response(status, date_line, &mut self.out);
                self.close_after_flush = true;
            }
        }
        Ok(())
    }

    /// Answers a request that cannot be parsed: right away if nothing is
    /// pending, else after the responses ahead of it.
    pub fn fail(&mut self, status: u16, date_line: &[u8]) {
        self.stop_reading();
        self.inbuf.clear();
        if self.pending.is_empty() {
            error_response(status, date_line, &mut self.out);
            self.close_after_flush = true;
        } else {
            self.queued_error = Some(status);
        }
    }

    /// `100 Continue` for the request whose body the app starts reading,
    /// when no earlier response is still being written.
    pub fn send_continue(&mut self) {
        if !self.continue_sent && self.pending.len() == 1 && self.body.is_none() {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.continue_sent = true;
        }
    }

    pub fn stop_reading(&mut self) {
        self.read_finished = true;
    }

    /// The front request waits for a response that has not started, with
    /// nothing unsent ahead of it: a canned error may go out on the socket.
    pub fn awaits_response(&self) -> bool {
        !self.pending.is_empty()
            && self.body.is_none()
            && self.unsent() == 0
            && self.linger_until.is_none()
    }

    pub fn response_started(&self) -> bool {
        self.body.is_some()
    }

    /// Sends what is buffered. Ok(true) when everything went out.
    pub fn flush(&mut self) -> io::Result<bool> {
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
