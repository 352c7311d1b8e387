//! The engine of one worker, as a dispatcher: an epoll set (sys) with the
//! inherited listening sockets (socket), the client connections (slab,
//! conn), a timer for the timeouts (timeouts) and the handoff scan
//! (handoff), and a wake-up eventfd. The host calls `poll` when the epoll
//! fd is readable, dispatches the `Event`s it collected, and answers
//! through `start`/`write`/`end`. Nothing here calls out: the host is never
//! re-entered while the engine is borrowed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::abort;
use crate::access_log::AccessLog;
use crate::busy_poll;
use crate::conn::{Conn, Received, Rejection};
use crate::date::DateCache;
use crate::event::{Event, Recorder};
use crate::handoff::{self, Handoff, HANDOFF_TICK};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::parser::RequestParser;
use crate::response::HeadCache;
use crate::slab::{index_of, Slab, Token};
use crate::socket::{self, listener_port, Accepted, Peer};
use crate::sys::{cvt, Epoll, Timer, Waker};
use crate::timeouts::{self, Expired, TICK};
use crate::trust::Trust;

// Epoll keys of the engine's own descriptors. Connection tokens stay below
// 2^52 (see slab.rs), so none of these can name a connection.
mod access;
mod proxying;
mod respond;

const TIMER_KEY: u64 = u64::MAX;
const WAKER_KEY: u64 = u64::MAX - 1;
const HANDOFF_KEY: u64 = u64::MAX - 2;
/// Listener `i` is keyed `LISTENER_TAG | i`.
const LISTENER_TAG: u64 = 1 << 62;
const LINGER: Duration = Duration::from_secs(2);
const EPOLL_BATCH: usize = 256;
/// Turns in a row that may read the lone connection without `epoll_wait`
/// (see `read_lone`): a bound on how long other descriptors wait.
const LONE_TURNS: u8 = 8;
/// After EMFILE and friends, accepting resumes on the next timer tick (1 s)
/// rather than spinning on a listening socket that stays readable.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

struct Listener {
    fd: RawFd,
    port: u16,
    /// Connections accepted here are served over TLS with this config.
    tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct Engine {
    epoll: Epoll,
    timer: Timer,
    waker: Waker,
    listeners: Vec<Listener>,
    /// Where other workers hand this one connections, and where its idle
    /// connections go when their packets arrive on another worker's CPU.
    handoff: Option<Handoff>,
    /// At its connection cap, or out of descriptors: told to the host, so
    /// the arbiter steers new connections elsewhere (see `report_capacity`).
    full: bool,
    /// When the timer's once-a-second work (Date, timeouts) is next due.
    next_second: Instant,
    /// Listening sockets are in the epoll set.
    accepting: bool,
    draining: bool,
    /// Connections accepted since start (the arbiter watches the spread).
    accepted: u64,
    /// Accepting is paused until then (out of descriptors).
    accept_retry_at: Option<Instant>,
    conns: Slab<Conn>,
    limits: Limits,
    date: DateCache,
    /// The last response status and headers checked.
    heads: HeadCache,
    now: Instant,
    /// Requests refused by the engine, per status sent, by status.
    rejected: Vec<(u16, u64)>,
    /// Each rejection is also an `Event::Rejected`.
    trace_rejections: bool,
    /// Requests and bytes, counted once the host asks for metrics.
    metrics: Option<Box<Metrics>>,
    /// Which peers' forwarding headers and PROXY headers are believed.
    trust: Trust,
    /// Events collected since the host last took them.
    pub events: Vec<Event>,
    /// Bytes the events' ranges point into; cleared with the events.
    pub arena: Vec<u8>,
    dirty: Vec<Token>,
    resumed: Vec<Token>,
    in_turn: bool,
    /// `end_turn` is flushing the turn's output.
    flushing_turn: bool,
    access_log: Option<AccessLog>,
    /// The connection that alone woke the last `epoll_wait`, and the turns
    /// since that read it without one (see `read_lone`).
    lone: Option<(Token, u8)>,
    /// The turn read one request (`serving_one`).
    one_request: bool,
}

/// Tells the SIGABRT handler whether `conn` owes a response (see abort.rs).
fn publish_waiting(token: Token, conn: &Conn) {
    abort::set_waiting(index_of(token), conn.raw_fd(), conn.awaits_response());
}

impl Engine {
    /// Takes over the inherited listening sockets `listen_fds`.
    pub fn new(listen_fds: &[RawFd], limits: Limits) -> io::Result<Engine> {
        crate::llhttp::api().map_err(io::Error::other)?;
        let mut engine = Engine {
            epoll: Epoll::new()?,
            timer: Timer::new(TICK)?,
            waker: Waker::new()?,
            listeners: Vec::new(),
            handoff: None,
            full: false,
            next_second: Instant::now(),
            accepting: false,
            draining: false,
            accepted: 0,
            accept_retry_at: None,
            conns: Slab::default(),
            limits,
            date: DateCache::new(),
            heads: HeadCache::default(),
            now: Instant::now(),
            rejected: Vec::new(),
            trace_rejections: false,
            metrics: None,
            trust: Trust::default(),
            events: Vec::new(),
            arena: Vec::new(),
            dirty: Vec::new(),
            resumed: Vec::new(),
            in_turn: false,
            flushing_turn: false,
            access_log: None,
            lone: None,
            one_request: false,
        };
        for &fd in listen_fds {
            let port = listener_port(fd)?;
            // SAFETY: fd is an open socket handed to this process.
            cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK | libc::O_RDWR) })?;
            engine.listeners.push(Listener {
                fd,
                port,
                tls: None,
            });
        }
        let readable = libc::EPOLLIN as u32;
        engine
            .epoll
            .add(engine.timer.as_raw_fd(), readable, TIMER_KEY)?;
        engine
            .epoll
            .add(engine.waker.as_raw_fd(), readable, WAKER_KEY)?;
        engine.update_accepting();
        Ok(engine)
    }

    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Takes new connections unless draining, at the connection cap, or
    /// backing off after running out of descriptors.
    fn update_accepting(&mut self) {
        let on = !self.draining
            && self.accept_retry_at.is_none()
            && self.connection_count() < self.limits.max_connections;
        if on == self.accepting {
            return;
        }
        // EPOLLEXCLUSIVE: a socket all workers share (Unix) wakes one of
        // them per connection, not all; a worker's own SO_REUSEPORT socket
        // is in its epoll alone, where the flag changes nothing.
        let interest = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32;
        for (i, l) in self.listeners.iter().enumerate() {
            let _ = if on {
                self.epoll.add(l.fd, interest, LISTENER_TAG | i as u64)
            } else {
                self.epoll.delete(l.fd)
            };
        }
        self.accepting = on;
    }

    /// Graceful stop: no new connections; each connection gets one more
    /// response at most, marked `Connection: close`, and closes right after
    /// it, or at its keep-alive timeout if no request comes. Never while a
    /// request may be on its way.
    pub fn drain(&mut self) {
        self.draining = true;
        self.update_accepting();
    }

    /// Open connections, including lingering ones.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Connections accepted since start.
    /// Connections handed to other workers and received from them.
    pub fn handoff_counts(&self) -> (u64, u64) {
        self.handoff.as_ref().map_or((0, 0), Handoff::counts)
    }

    pub fn accepted_count(&self) -> u64 {
        self.accepted
    }

    /// Requests the engine refused (malformed, over a limit, too slow), as
    /// (status sent, count), by status.
    pub fn rejected_counts(&self) -> &[(u16, u64)] {
        &self.rejected
    }

    /// Whether each rejection is also reported as an `Event::Rejected`
    /// (one per request: for debugging, not for a server scanners reach).
    pub fn trace_rejections(&mut self, on: bool) {
        self.trace_rejections = on;
    }

    /// Counts requests and bytes from now on (see `metrics`).
    pub fn enable_metrics(&mut self) {
        self.metrics.get_or_insert_with(Box::default);
    }

    /// The counters, if enabled.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    /// Marks the start of a host turn: output is corked until `end_turn`.
    pub fn begin_turn(&mut self) {
        self.in_turn = true;
        self.now = Instant::now();
    }

    /// Flushes everything written during the turn.
    pub fn end_turn(&mut self) {
        self.in_turn = false;
        if let Some(m) = &mut self.metrics {
            m.turn_ended();
        }
        // Events raised by these flushes (closes, drains) share one wake.
        self.flushing_turn = true;
        let dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            self.flush(token);
        }
        self.flushing_turn = false;
        self.dirty = dirty;
        self.dirty.clear();
        // Connections the app's responses closed may have made room.
        self.report_capacity();
        if !self.events.is_empty() {
            self.waker.wake();
        }
    }

    /// After a turn that read one request, with few connections open:
    /// whether anything (the client's next request, most likely) is ready
    /// within `spin` (`busy_poll`).
    pub fn wait_after_one_request(&self, spin: Duration) -> bool {
        self.one_request
            && self.connection_count() <= busy_poll::MAX_CONNECTIONS
            && busy_poll::readable_within(self.epoll.as_raw_fd(), spin)
    }

    /// This turn read one request.
    fn serving_one(&self) -> bool {
        self.in_turn && self.one_request
    }

    /// Events raised outside a turn need the host to poll again soon.
    fn wake_for_events(&self) {
        if !self.in_turn && !self.flushing_turn {
            self.waker.wake();
        }
    }

    /// Handles whatever is ready, collecting events for the host.
    pub fn poll(&mut self) {
        self.collect();
        let mut requests = self
            .events
            .iter()
            .filter(|event| matches!(event, Event::Request { .. }));
        self.one_request = requests.next().is_some() && requests.next().is_none();
    }

    fn collect(&mut self) {
        if self.read_lone() {
            return self.report_capacity();
        }
        let mut ready = [std::mem::MaybeUninit::uninit(); EPOLL_BATCH];
        let ready = self.epoll.poll(&mut ready);
        self.lone = match ready {
            [only] if only.events == libc::EPOLLIN as u32 && only.u64 < LISTENER_TAG => {
                Some((only.u64, 0))
            }
            _ => None,
        };
        for ev in ready {
            let (flags, key) = (ev.events, ev.u64);
            match key {
                TIMER_KEY => self.tick(),
                WAKER_KEY => self.on_wake(),
                HANDOFF_KEY => self.on_handoff(),
                k if k & LISTENER_TAG != 0 && k >> 32 == LISTENER_TAG >> 32 => {
                    self.accept(index_of(k))
                }
                token => self.on_conn_ready(token, flags),
            }
        }
        self.report_capacity();
    }

    /// One client at a time (c=1): the connection that alone woke the last
    /// `epoll_wait`, idle since, is most likely what woke this turn too, so
    /// its request is read without asking epoll first (one system call
    /// less per request). A miss (nothing to read) falls back to
    /// `epoll_wait`; other descriptors ready meanwhile keep the engine's
    /// epoll fd readable, and wait at most `LONE_TURNS` turns.
    fn read_lone(&mut self) -> bool {
        let Some((token, turns)) = self.lone else {
            return false;
        };
        let now = self.now;
        let Some(conn) = self.conns.get_mut(token) else {
            self.lone = None;
            return false;
        };
        if turns >= LONE_TURNS || !conn.is_movable() {
            return false;
        }
        match conn.receive(now) {
            Received::Nothing => {
                self.lone = None;
                false
            }
            received => {
                self.lone = Some((token, turns + 1));
                self.received(token, received);
                true
            }
        }
    }

    /// Raises `Event::Capacity` when the worker becomes full (at
    /// `max_connections`, or accepting paused for lack of descriptors) or
    /// has room again, with hysteresis: room again only below nine tenths
    /// of the cap, so a worker near it does not flap in and out.
    fn report_capacity(&mut self) {
        let cap = self.limits.max_connections;
        let count = self.connection_count();
        let exhausted = self.accept_retry_at.is_some();
        let full = exhausted
            || if self.full {
                count > cap.saturating_sub((cap / 10).max(1))
            } else {
                count >= cap
            };
        if full != self.full {
            self.full = full;
            self.events.push(Event::Capacity { full });
            self.wake_for_events();
        }
    }

    fn on_wake(&mut self) {
        self.waker.acknowledge();
        let resumed = std::mem::take(&mut self.resumed);
        for token in resumed {
            self.parse(token);
            self.update_interest(token);
        }
    }

    /// Serves an already connected socket as if it had been accepted: one
    /// handed over by another worker, or (tests and fuzzing) a socketpair.
    pub fn adopt(&mut self, fd: OwnedFd) -> io::Result<Token> {
        let parser = RequestParser::new(&self.limits).map_err(io::Error::other)?;
        let peer = Peer::of(&fd).unwrap_or_else(Peer::local);
        let tls = self.tls_for_port(peer.local_port);
        let mut conn = Conn::new(fd, parser, peer, self.now);
        if !Self::secure(&mut conn, tls) {
            return Err(io::Error::other("cannot start TLS"));
        }
        self.insert(conn)
    }

    /// Serves the listeners at `indexes` (in `listen_fds` order) over TLS.
    pub fn enable_tls(&mut self, config: Arc<rustls::ServerConfig>, indexes: &[usize]) {
        for &i in indexes {
            if let Some(listener) = self.listeners.get_mut(i) {
                listener.tls = Some(config.clone());
            }
        }
    }

    /// The TLS config of the listener a connection to `local_port` came
    /// through (a connection handed over from a full worker's queue is
    /// known by its port only).
    fn tls_for_port(&self, local_port: u16) -> Option<Arc<rustls::ServerConfig>> {
        self.listeners
            .iter()
            .find(|l| l.port == local_port && local_port != 0)
            .and_then(|l| l.tls.clone())
    }

    /// Serves `conn` over TLS if its listener does; false if it cannot start.
    fn secure(conn: &mut Conn, tls: Option<Arc<rustls::ServerConfig>>) -> bool {
        tls.is_none_or(|config| conn.start_tls(config))
    }

    /// The TLS version and cipher suite of `token`'s connection, if over TLS.
    pub fn tls_negotiated(&self, token: Token) -> Option<(String, String)> {
        self.conns.get(token)?.tls_negotiated()
    }

    /// The verified client certificate of `token`'s connection, if any.
    pub fn peer_certificate(&self, token: Token) -> Option<crate::tls::PeerCertificate> {
        self.conns.get(token)?.peer_certificate()
    }

    /// Receives connections other workers hand over, under `name`.
    pub fn enable_handoff(&mut self, name: &str) -> io::Result<()> {
        let handoff = Handoff::bind(name)?;
        self.epoll
            .add(handoff.raw_fd(), libc::EPOLLIN as u32, HANDOFF_KEY)?;
        self.handoff = Some(handoff);
        Ok(())
    }

    /// Per CPU, the handoff name of the worker to serve connections whose
    /// packets arrive there (None: this one). Empty: connections stay.
    pub fn set_cpu_owners(&mut self, owners: Vec<Option<String>>) {
        let Some(handoff) = &mut self.handoff else {
            return;
        };
        handoff.set_cpu_owners(owners);
        // Connections are looked at in short rounds while they may move.
        let period = if handoff.is_active() {
            HANDOFF_TICK
        } else {
            TICK
        };
        let _ = self.timer.set_period(period);
    }

    fn on_handoff(&mut self) {
        loop {
            let Some(handoff) = &self.handoff else { return };
            match handoff.receive() {
                Ok(handoff::Received::Conn(fd)) => {
                    if let Ok(token) = self.adopt(fd) {
                        if let Some(handoff) = &mut self.handoff {
                            handoff.arrived(token, self.now);
                        }
                        // A request may be queued already.
                        self.read(token);
                    }
                }
                Ok(handoff::Received::Refused) => {}
                Ok(handoff::Received::Empty) | Err(_) => return,
            }
        }
    }

    /// Hands idle connections whose packets now arrive on another worker's
    /// CPU to that worker, so each client thread is served where it runs.
    fn hand_off_strays(&mut self) {
        if self.draining {
            return;
        }
        let Some(handoff) = &mut self.handoff else {
            return;
        };
        for token in handoff.send_strays(&self.conns, self.now) {
            if let Some(conn) = self.conns.get_mut(token) {
                // The other worker holds the socket open: leave epoll explicitly.
                let _ = self.epoll.delete(conn.raw_fd());
            }
            self.close(token);
        }
    }

    fn insert(&mut self, mut conn: Conn) -> io::Result<Token> {
        self.admit(&mut conn);
        let raw = conn.raw_fd();
        let token = self.conns.insert(conn);
        let interest = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        if let Err(e) = self.epoll.add(raw, interest, token) {
            self.close(token);
            return Err(e);
        }
        if let Some(conn) = self.conns.get_mut(token) {
            conn.set_interest(interest);
        }
        self.update_interest(token);
        Ok(token)
    }

    fn accept(&mut self, index: usize) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let (fd, port, tls) = (listener.fd, listener.port, listener.tls.clone());
        loop {
            let (client, peer) = match socket::accept(fd, port) {
                Accepted::Conn(client, peer) => (client, peer),
                Accepted::Empty => return,
                Accepted::Skipped => continue,
                Accepted::Exhausted(reason) => {
                    if self.accept_retry_at.is_none() {
                        self.events.push(Event::AcceptPaused { reason });
                    }
                    self.accept_retry_at = Some(self.now + ACCEPT_RETRY);
                    self.update_accepting();
                    return;
                }
            };
            let Ok(parser) = RequestParser::new(&self.limits) else {
                return;
            };
            self.accepted += 1;
            let mut conn = Conn::new(client, parser, peer, self.now);
            if !Self::secure(&mut conn, tls.clone()) {
                continue;
            }
            if let Ok(token) = self.insert(conn) {
                // Clients write their request right after connecting: it is
                // usually here already, and reading it now saves a poll round.
                self.read(token);
            }
            if self.connection_count() >= self.limits.max_connections {
                self.update_accepting();
                return;
            }
        }
    }

    fn update_interest(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let want = conn.wanted_interest();
        publish_waiting(token, conn);
        if conn.set_interest(want) {
            let _ = self.epoll.modify(conn.raw_fd(), want, token);
        }
    }

    fn on_conn_ready(&mut self, token: Token, flags: u32) {
        let lingering = self.conns.get_mut(token).is_some_and(|c| c.is_lingering());
        if flags & (libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 && !lingering {
            // Reset or fully closed: nothing more can be read or written. (Reported
            // whatever the interest, so ignoring it would spin the loop.)
            self.close(token);
            return;
        }
        if flags & libc::EPOLLOUT as u32 != 0 {
            self.flush(token);
        }
        let readable = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if flags & readable != 0 {
            self.read(token);
        }
    }

    fn read(&mut self, token: Token) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.is_lingering() {
            if !conn.discard_input() {
                self.close(token);
            }
            return;
        }
        if !conn.wants_read() {
            return;
        }
        let received = conn.receive(now);
        self.received(token, received);
    }

    /// Acts on what a read of `token` got.
    fn received(&mut self, token: Token, received: Received) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        match received {
            Received::Data(n) => {
                if let Some(m) = &mut self.metrics {
                    m.received(n);
                }
            }
            Received::Nothing => return,
            Received::Failed => return self.close(token),
            Received::PlainHttp => {
                conn.refuse_plain_http(self.date.header_line());
                let reason = "plain HTTP sent to a TLS port".to_string();
                self.count_rejection(token, 400, reason, false);
                return self.mark_dirty(token);
            }
            Received::End => {
                // A request cut short can never complete; otherwise the client
                // may only have half-closed and still reads its responses.
                if conn.mid_request() || (conn.pending() == 0 && conn.unsent() == 0) {
                    self.close(token);
                } else {
                    conn.stop_reading();
                    if conn.known_to_app() && conn.pending() > 0 {
                        self.events.push(Event::PeerShutdown { conn: token });
                    }
                    self.update_interest(token);
                }
                return;
            }
        }
        self.parse(token);
        // Known before the app runs, in case it hangs (see abort.rs).
        if let Some(conn) = self.conns.get_mut(token) {
            publish_waiting(token, conn);
        }
        // Interest is settled when the turn's output is flushed: a response
        // written in this turn may close the connection, needing no change.
        self.mark_dirty(token);
    }

    /// Runs the parser over the connection's unparsed input.
    fn parse(&mut self, token: Token) {
        let in_proxy_header = self.conns.get_mut(token).map(|c| c.in_proxy_header());
        if in_proxy_header == Some(true) && !self.read_proxy_header(token) {
            return;
        }
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        // Draining: nothing is parsed past a request, so the response that
        // closes the connection is the last one the client waits for.
        let pause_at = if self.draining {
            1
        } else {
            self.limits.pipeline_depth
        };
        let first_event = self.events.len();
        let mut recorder = Recorder {
            token,
            events: &mut self.events,
            arena: &mut self.arena,
            trusted_proxies: conn.trusts_forwarded().then_some(&self.trust.forwarded),
        };
        let rejection = conn.parse(self.now, pause_at, &mut recorder);
        self.log_requests(token, first_event);
        let Some(Rejection {
            status,
            reason,
            in_body,
        }) = rejection
        else {
            return;
        };
        self.count_rejection(token, status, reason, in_body);
        if in_body {
            self.abandon_body(token, status);
        } else if let Some(conn) = self.conns.get_mut(token) {
            conn.fail(status, self.date.header_line());
            self.mark_dirty(token);
        }
    }

    /// Counts a request refused with `status` (`in_body`: the app has it),
    /// logs it, and traces it if asked to.
    fn count_rejection(&mut self, token: Token, status: u16, reason: String, in_body: bool) {
        self.log_rejection(token, status, in_body);
        match self.rejected.binary_search_by_key(&status, |&(s, _)| s) {
            Ok(i) => self.rejected[i].1 += 1,
            Err(i) => self.rejected.insert(i, (status, 1)),
        }
        if !self.trace_rejections {
            return;
        }
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let peer = conn.peer();
        self.events.push(Event::Rejected {
            status,
            reason,
            peer_ip: peer.ip.clone(),
            peer_port: peer.port,
        });
    }

    /// Gives up on the requests of `token` that the app has: it hears of
    /// the close, and the connection closes once its output is out.
    fn give_up_pending(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.close_after_output();
        if conn.take_known_to_app() {
            self.events.push(Event::Closed { conn: token });
        }
        self.mark_dirty(token);
    }

    /// A request body that cannot complete (malformed, too large, stalled).
    /// The app already has the request: it hears of the close, and the
    /// client gets `status` if no response has started, else just the close.
    fn abandon_body(&mut self, token: Token, status: u16) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let only = conn.pending() == 1 && !conn.response_started();
        conn.forget_head();
        conn.close_after_output();
        if only {
            conn.fail(status, self.date.header_line());
        }
        self.give_up_pending(token);
    }

    fn mark_dirty(&mut self, token: Token) {
        if self.in_turn {
            self.dirty.push(token);
        } else {
            self.flush(token);
        }
    }

    /// Writes buffered output; closes the connection when it is done with.
    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let unsent = conn.unsent();
        let flushed = conn.flush();
        if let Some(m) = &mut self.metrics {
            m.sent(unsent - conn.unsent());
        }
        match flushed {
            Err(_) => return self.close(token),
            Ok(true) => {
                if let Some(at_once) = conn.closes_now() {
                    // A client whose last request was read whole, with nothing
                    // after it, sends no more: close at once. Otherwise linger,
                    // so bytes still arriving cannot reset the response away.
                    if at_once {
                        self.close(token);
                    } else {
                        self.linger(token);
                    }
                    return;
                }
                if conn.take_wants_drain() {
                    self.events.push(Event::Drain { conn: token });
                    self.wake_for_events();
                }
            }
            Ok(false) => {}
        }
        self.update_interest(token);
    }

    fn linger(&mut self, token: Token) {
        let until = self.now + LINGER;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.linger(until);
        if conn.take_known_to_app() {
            self.events.push(Event::Closed { conn: token });
        }
        self.update_interest(token);
    }

    fn close(&mut self, token: Token) {
        let Some(conn) = self.conns.remove(token) else {
            return;
        };
        if !self.accepting {
            self.update_accepting();
        }
        // Closing the descriptor (dropping `conn`) takes it out of the epoll
        // set; a late event for the old token finds a newer generation.
        abort::set_waiting(index_of(token), conn.raw_fd(), false);
        if conn.known_to_app() {
            self.events.push(Event::Closed { conn: token });
            self.wake_for_events();
        }
    }

    fn tick(&mut self) {
        self.timer.acknowledge();
        self.hand_off_strays();
        let now = self.now;
        if now < self.next_second {
            return;
        }
        // Less than a second: the timer fires on time, its handling may not.
        self.next_second = now + TICK - HANDOFF_TICK / 2;
        self.date.refresh();
        if self.accept_retry_at.is_some_and(|t| now >= t) {
            self.accept_retry_at = None;
            self.update_accepting();
        }
        let expired: Vec<(Token, Expired)> = self
            .conns
            .iter()
            .filter_map(|(token, conn)| {
                timeouts::expired(conn, &self.limits, now).map(|e| (token, e))
            })
            .collect();
        for (token, expired) in expired {
            match expired {
                Expired::Close => self.close(token),
                Expired::Head => self.head_timed_out(token),
                Expired::ProxyHeader => {
                    let reason = "PROXY header not received within the header timeout";
                    self.refuse_unanswered(token, reason.to_string());
                }
                Expired::Body => {
                    let reason = "request body stalled past the body timeout".to_string();
                    self.count_rejection(token, 408, reason, true);
                    self.abandon_body(token, 408);
                }
            }
        }
    }

    /// A request head that took too long: 408 if it is the only request,
    /// else the requests ahead of it are given up too.
    fn head_timed_out(&mut self, token: Token) {
        let reason = "request head not received within the header timeout".to_string();
        self.count_rejection(token, 408, reason, false);
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.forget_head();
        if conn.pending() == 0 {
            conn.fail(408, self.date.header_line());
            self.mark_dirty(token);
        } else {
            self.give_up_pending(token);
        }
    }
}
