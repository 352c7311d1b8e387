//! The engine's side of the access log (see access_log/): where requests,
//! responses and refusals are noted. With the log off each hook is one
//! `Option` test.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;

use crate::access_log::sink::Sink;
use crate::access_log::AccessLog;
use crate::conn::canned_reason;
use crate::response::HeaderList;
use crate::slab::Token;

use super::Engine;

/// The local address of connection `fd` (gunicorn's SERVER_NAME).
fn server_address(fd: RawFd) -> String {
    // SAFETY: fd is an open connection of the engine, borrowed for the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let local = socket2::SockRef::from(&fd).local_addr().ok();
    local
        .and_then(|a| a.as_socket())
        .map_or_else(|| "localhost".to_string(), |a| a.ip().to_string())
}

impl Engine {
    /// Writes an access log line per request from now on (None: stops).
    pub fn set_access_log(&mut self, log: Option<AccessLog>) {
        self.access_log = log;
    }

    /// Where the access log's lines go, for reopening and flushing.
    pub fn access_log_sink(&self) -> Option<Arc<Sink>> {
        self.access_log.as_ref().map(|log| Arc::clone(log.sink()))
    }

    /// Notes the requests parsed on `token`: events from `first` on.
    pub(super) fn log_requests(&mut self, token: Token, first: usize) {
        let Some(log) = &mut self.access_log else {
            return;
        };
        let conn = self.conns.get(token);
        let server = match conn {
            Some(conn) if log.needs_server_address() => server_address(conn.raw_fd()),
            _ => String::new(),
        };
        let tls = conn
            .filter(|_| log.needs_tls())
            .and_then(|conn| conn.tls_negotiated());
        let events = self.events.get(first..).unwrap_or(&[]);
        log.capture(token, events, &self.arena, &server, tls.as_ref(), self.now);
    }

    /// A request refused with `status` (its canned response's).
    pub(super) fn log_rejection(&mut self, token: Token, status: u16, in_body: bool) {
        let (Some(log), Some(conn)) = (&mut self.access_log, self.conns.get_mut(token)) else {
            return;
        };
        let (status, body) = canned_reason(status);
        log.rejected(token, status, body.len(), in_body, conn.peer(), self.now);
    }

    /// `code`: the status the head check read (`AppHead::code`).
    pub(super) fn log_start(&mut self, token: Token, code: u16, headers: &HeaderList<'_>) {
        if let Some(log) = &mut self.access_log {
            log.started(token, code, headers);
        }
    }

    pub(super) fn log_start_raw(&mut self, token: Token) {
        if let Some(log) = &mut self.access_log {
            log.started_raw(token);
        }
    }

    pub(super) fn log_write(&mut self, token: Token, data: &[u8]) {
        if let Some(log) = &mut self.access_log {
            log.wrote(token, data);
        }
    }

    pub(super) fn log_end(&mut self, token: Token) {
        if let Some(log) = &mut self.access_log {
            log.ended(token);
        }
    }
}
