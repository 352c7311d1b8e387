//! The engine's response API: what the host calls to answer the front
//! request of a connection (strictly in order), and the request-side
//! controls that go with it (100-continue, body backpressure, abort).

use crate::conn::{Conn, WriteError};
use crate::response::{HeaderList, RequestInfo};
use crate::slab::Token;

use super::{publish_waiting, Engine};

impl Engine {
    fn respond_with<T>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut Conn, &[u8], bool) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let conn = self
            .conns
            .get_mut(token)
            .filter(|conn| !conn.is_lingering())
            .ok_or(WriteError::Closed)?;
        let result = f(conn, self.date.header_line(), self.draining)?;
        publish_waiting(token, conn);
        self.mark_dirty(token);
        Ok(result)
    }

    /// Starts the front response on `token`. `body_len` is the length of the
    /// whole body when known up front.
    pub fn start(
        &mut self,
        token: Token,
        status: &[u8],
        headers: &HeaderList<'_>,
        body_len: Option<u64>,
    ) -> Result<(), WriteError> {
        let app = self
            .heads
            .check(status, headers)
            .map_err(WriteError::Response)?;
        self.respond_with(token, |c, date, draining| {
            c.start(date, status, headers, &app, body_len, draining)
        })?;
        self.log_start(token, app.code, headers);
        Ok(())
    }

    /// Starts the front response on `token` as bytes the app frames itself.
    pub fn start_raw(
        &mut self,
        token: Token,
        keep_alive: bool,
        status: u16,
    ) -> Result<(), WriteError> {
        self.respond_with(token, |c, _, draining| {
            c.start_raw(keep_alive && !draining, status)
        })?;
        self.log_start_raw(token);
        Ok(())
    }

    /// Appends body bytes; Ok(false) asks the app to wait for `Event::Drain`.
    pub fn write(&mut self, token: Token, data: &[u8]) -> Result<bool, WriteError> {
        let below = self.respond_with(token, |c, _, _| c.write(data))?;
        self.log_write(token, data);
        // An app that frames its own bytes (Node's `ServerResponse`) corks
        // them itself, so each write is what Node would send at once.
        self.send_early_if(token, Conn::writing_lone_raw);
        Ok(below)
    }

    /// Completes the front response and moves on to the next request.
    pub fn end(&mut self, token: Token) -> Result<(), WriteError> {
        let answered = self.respond_with(token, |c, date, _| c.end(date))?;
        self.count(answered);
        self.log_end(token);
        self.resume_parsing(token);
        self.send_early_if(token, |c| c.pending() == 0);
        Ok(())
    }

    /// A whole response in one call: head, body, end.
    pub fn respond(
        &mut self,
        token: Token,
        status: &[u8],
        headers: &HeaderList<'_>,
        body: &[u8],
    ) -> Result<(), WriteError> {
        // One step, so outside a turn the whole response leaves in one send.
        let app = self
            .heads
            .check(status, headers)
            .map_err(WriteError::Response)?;
        let answered = self.respond_with(token, |c, date, draining| {
            c.start(
                date,
                status,
                headers,
                &app,
                Some(body.len() as u64),
                draining,
            )?;
            c.write(body)?;
            c.end(date)
        })?;
        self.count(answered);
        self.log_start(token, app.code, headers);
        self.log_write(token, body);
        self.log_end(token);
        self.resume_parsing(token);
        self.send_early_if(token, |c| c.pending() == 0);
        Ok(())
    }

    /// Within a turn, output waits for the turn's end so that a connection
    /// gets one send however many of its requests the turn answers, and a
    /// busy worker's clients get their answers together (sent one by one,
    /// each wakes its client at once and the next turns carry fewer
    /// requests: measured 0.88 -> 1.05 µs per pipelined request). A turn
    /// that read one request has nothing else to wait for once it is
    /// answered (`ready`), so the answer is sent now, not after the rest of
    /// the turn (promise jobs, `finish` handlers).
    fn send_early_if(&mut self, token: Token, ready: impl FnOnce(&Conn) -> bool) {
        if self.serving_one() && self.conns.get(token).is_some_and(ready) {
            self.flush(token);
        }
    }

    /// Counts a response in the metrics, timed to when it ended: within a
    /// turn, at the turn's end (one clock read for all its responses; the
    /// turn's start is stale after a handler that took its time), else now.
    fn count(&mut self, answered: RequestInfo) {
        let (Some(m), Some(since)) = (&mut self.metrics, answered.since) else {
            return;
        };
        if self.in_turn {
            m.ended_in_turn(answered.method, answered.status, since);
        } else {
            m.record(answered.method, answered.status, since.elapsed());
        }
    }

    fn resume_parsing(&mut self, token: Token) {
        let depth = self.limits.pipeline_depth;
        if self.draining {
            return;
        }
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.pending() < depth && conn.resume_parsing() {
            self.resumed.push(token);
            self.waker.wake();
        }
    }

    /// Answers `Expect: 100-continue` once the app reads the body.
    pub fn send_continue(&mut self, token: Token) -> Result<(), WriteError> {
        self.respond_with(token, |c, _, _| {
            c.send_continue();
            Ok(())
        })
    }

    /// Request-body backpressure from the app.
    pub fn set_reading(&mut self, token: Token, on: bool) {
        if let Some(conn) = self.conns.get_mut(token) {
            conn.set_app_paused(!on);
            self.update_interest(token);
        }
    }

    /// Gives up on the connection after flushing what is buffered: for an
    /// app that failed after its response started, so the client sees an
    /// incomplete response rather than a clean one.
    pub fn abort(&mut self, token: Token) -> Result<(), WriteError> {
        self.respond_with(token, |c, _, _| {
            c.close_cut_short();
            Ok(())
        })
    }
}
