//! The engine of one worker: an epoll set with the inherited listening
//! sockets, the client connections, a one-second timer and a wake-up
//! eventfd. The host calls `poll` when the epoll fd is readable, dispatches
//! the `Event`s it collected, and answers through `start`/`write`/`end`.
//! Nothing here calls out: the host is never re-entered while the engine is
//! borrowed.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::abort;
use crate::conn::{Conn, WriteError};
use crate::date::DateCache;
use crate::handoff::{self, Received};
use crate::limits::Limits;
use crate::parser::{Outcome, RequestHead, RequestParser, Sink};
use crate::response::{HeadCache, HeaderList, RequestInfo};
use crate::socket::listener_addr;

/// Identifies a connection to the host: slot index and generation, so a
/// stale token never reaches a newer connection in the same slot.
pub type Token = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, checked request head. Ranges index `Engine::arena`.
    Request {
        conn: Token,
        method: &'static str,
        url: Range<usize>,
        headers: Range<usize>,
        http_minor: u8,
        keep_alive: bool,
        has_body: bool,
        expect_continue: bool,
        peer_ip: Range<usize>,
        peer_port: u16,
        local_port: u16,
    },
    Body {
        conn: Token,
        data: Range<usize>,
    },
    /// The body of the most recent request on `conn` is complete.
    BodyEnd {
        conn: Token,
    },
    /// The connection is gone; requests still pending on it are abandoned.
    Closed {
        conn: Token,
    },
    /// The client stopped sending (FIN) while requests wait for their
    /// responses: it may be gone, or only half-closed and still reading, so
    /// the responses may still be written; the app may stop working on them.
    PeerShutdown {
        conn: Token,
    },
    /// Buffered output fell below the high-water mark again.
    Drain {
        conn: Token,
    },
    /// Accepting stopped for a while: the process ran out of descriptors
    /// or memory (`reason` is the errno name). Reported once per episode.
    AcceptPaused {
        reason: &'static str,
    },
}

const TIMER_TOKEN: u64 = u64::MAX;
const KICK_TOKEN: u64 = u64::MAX - 1;
const HANDOFF_TOKEN: u64 = u64::MAX - 2;
const LISTENER_TAG: u64 = 1 << 62;
const READ_CHUNK: usize = 64 * 1024;
const LINGER: Duration = Duration::from_secs(2);
const EPOLL_BATCH: usize = 256;
/// After EMFILE and friends, accepting resumes on the next timer tick (1 s)
/// rather than spinning on a listening socket that stays readable.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

struct Listener {
    fd: RawFd,
    port: u16,
}

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

pub struct Engine {
    epoll: OwnedFd,
    timer: OwnedFd,
    kick: OwnedFd,
    listeners: Vec<Listener>,
    /// Where other workers hand this one connections (see `handoff`).
    handoff: Option<OwnedFd>,
    /// Per CPU, the handoff name of the worker serving connections that
    /// arrive there, if not this one: idle connections move to it.
    cpu_owners: Vec<Option<String>>,
    /// Where the next scan for connections to hand off starts.
    handoff_cursor: usize,
    /// When the timer's once-a-second work (Date, timeouts) is next due.
    next_second: Instant,
    /// Listening sockets are in the epoll set.
    accepting: bool,
    draining: bool,
    /// Connections accepted since start (the arbiter watches the spread).
    accepted: u64,
    /// Accepting is paused until then (out of descriptors).
    accept_retry_at: Option<Instant>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    limits: Limits,
    date: DateCache,
    /// The last response status and headers checked.
    heads: HeadCache,
    now: Instant,
    /// Events collected since the host last took them.
    pub events: Vec<Event>,
    /// Bytes the events' ranges point into; cleared with the events.
    pub arena: Vec<u8>,
    dirty: Vec<Token>,
    resumed: Vec<Token>,
    in_turn: bool,
    /// `end_turn` is flushing the turn's output.
    flushing_turn: bool,
}

/// A libc return value: negative means errno.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: fd was just returned by a successful syscall and is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(cvt(fd)?) })
}

fn token_of(index: u32, generation: u32) -> Token {
    (u64::from(generation) << 32) | u64::from(index)
}

/// Tells the SIGABRT handler whether `conn` owes a response (see abort.rs).
fn publish_waiting(token: Token, conn: &Conn) {
    abort::set_waiting(
        (token & 0xffff_ffff) as usize,
        conn.fd.as_raw_fd(),
        conn.awaits_response(),
    );
}

/// The connection `token` names, if it is still that one. A free function
/// over the slots alone, so callers can hold other engine fields meanwhile.
fn conn_in(slots: &mut [Slot], token: Token) -> Option<&mut Conn> {
    let slot = slots.get_mut((token & 0xffff_ffff) as usize)?;
    if u64::from(slot.generation) != token >> 32 {
        return None;
    }
    slot.conn.as_mut()
}

fn peer_of(storage: &libc::sockaddr_storage) -> (String, u16) {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            (ip.to_string(), u16::from_be(sin.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr));
            (ip.to_string(), u16::from_be(sin6.sin6_port))
        }
        _ => (String::new(), 0),
    }
}

/// The timer's period: Date refresh and timeouts.
const TICK: Duration = Duration::from_secs(1);
/// The timer's period while idle connections may move to other workers.
const HANDOFF_TICK: Duration = Duration::from_millis(100);
/// Connections looked at per handoff round (bounds the getsockopt calls).
const HANDOFF_SCAN: usize = 256;

fn arm_timer(timer: &OwnedFd, period: Duration) -> io::Result<()> {
    let tick = libc::timespec {
        tv_sec: period.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(period.subsec_nanos() as i32),
    };
    let spec = libc::itimerspec {
        it_interval: tick,
        it_value: tick,
    };
    // SAFETY: timer is a timerfd; spec is a valid itimerspec.
    cvt(unsafe { libc::timerfd_settime(timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })
        .map(|_| ())
}

/// A connected socket's peer address and local port; None unless TCP.
fn addresses_of(fd: &OwnedFd) -> Option<((String, u16), u16)> {
    let sock = socket2::SockRef::from(fd);
    let peer = sock.peer_addr().ok()?.as_socket()?;
    let local = sock.local_addr().ok()?.as_socket()?;
    Some(((peer.ip().to_string(), peer.port()), local.port()))
}

/// Parser events for one connection, recorded as engine events.
struct Recorder<'a> {
    token: Token,
    now: Instant,
    limits: &'a Limits,
    pending: &'a mut std::collections::VecDeque<RequestInfo>,
    head_since: &'a mut Option<Instant>,
    known_to_app: &'a mut bool,
    peer: (&'a str, u16, u16),
    draining: bool,
    events: &'a mut Vec<Event>,
    arena: &'a mut Vec<u8>,
}

impl Recorder<'_> {
    fn stash(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        start..self.arena.len()
    }
}

impl Sink for Recorder<'_> {
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
        });
        let url = self.stash(head.url);
        let headers = self.stash(head.headers);
        let peer_ip = self.stash(self.peer.0.as_bytes());
        self.events.push(Event::Request {
            conn: self.token,
            method: head.method,
            url,
            headers,
            http_minor: head.http_minor,
            keep_alive: head.keep_alive,
            has_body: head.has_body,
            expect_continue: head.expect_continue,
            peer_ip,
            peer_port: self.peer.1,
            local_port: self.peer.2,
        });
    }

    fn body(&mut self, data: &[u8]) {
        let data = self.stash(data);
        self.events.push(Event::Body {
            conn: self.token,
            data,
        });
    }

    fn complete(&mut self, had_body: bool) -> bool {
        if had_body {
            self.events.push(Event::BodyEnd { conn: self.token });
        }
        // Draining: nothing is parsed past this request, so the response
        // that closes the connection is the last one the client waits for.
        self.draining || self.pending.len() >= self.limits.pipeline_depth
    }
}

impl Engine {
    /// Takes over the inherited listening sockets `listen_fds`.
    pub fn new(listen_fds: &[RawFd], limits: Limits) -> io::Result<Engine> {
        crate::llhttp::api().map_err(io::Error::other)?;
        // SAFETY: plain syscalls creating new descriptors.
        let epoll = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let timer = owned(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        let kick = owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        arm_timer(&timer, TICK)?;
        let mut engine = Engine {
            epoll,
            timer,
            kick,
            listeners: Vec::new(),
            handoff: None,
            cpu_owners: Vec::new(),
            handoff_cursor: 0,
            next_second: Instant::now(),
            accepting: false,
            draining: false,
            accepted: 0,
            accept_retry_at: None,
            slots: Vec::new(),
            free: Vec::new(),
            limits,
            date: DateCache::new(),
            heads: HeadCache::default(),
            now: Instant::now(),
            events: Vec::new(),
            arena: Vec::new(),
            dirty: Vec::new(),
            resumed: Vec::new(),
            in_turn: false,
            flushing_turn: false,
        };
        for &fd in listen_fds {
            let port = listener_addr(fd)?.port();
            // SAFETY: fd is an open socket handed to this process.
            cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK | libc::O_RDWR) })?;
            engine.listeners.push(Listener { fd, port });
        }
        engine.ctl(
            libc::EPOLL_CTL_ADD,
            engine.timer.as_raw_fd(),
            libc::EPOLLIN as u32,
            TIMER_TOKEN,
        )?;
        engine.ctl(
            libc::EPOLL_CTL_ADD,
            engine.kick.as_raw_fd(),
            libc::EPOLLIN as u32,
            KICK_TOKEN,
        )?;
        engine.update_accepting();
        Ok(engine)
    }

    pub fn epoll_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid epoll fd and event struct.
        cvt(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
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
        let op = if on {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_DEL
        };
        for (i, l) in self.listeners.iter().enumerate() {
            let _ = self.ctl(op, l.fd, libc::EPOLLIN as u32, LISTENER_TAG | i as u64);
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
        self.slots.len() - self.free.len()
    }

    /// Connections accepted since start.
    pub fn accepted_count(&self) -> u64 {
        self.accepted
    }

    fn conn_mut(&mut self, token: Token) -> Option<&mut Conn> {
        conn_in(&mut self.slots, token)
    }

    /// Marks the start of a host turn: output is corked until `end_turn`.
    pub fn begin_turn(&mut self) {
        self.in_turn = true;
        self.now = Instant::now();
    }

    /// Flushes everything written during the turn.
    pub fn end_turn(&mut self) {
        self.in_turn = false;
        // Events raised by these flushes (closes, drains) share one wake.
        self.flushing_turn = true;
        let dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            self.flush(token);
        }
        self.flushing_turn = false;
        self.dirty = dirty;
        self.dirty.clear();
        if !self.events.is_empty() {
            self.wake();
        }
    }

    /// Events raised outside a turn need the host to poll again soon.
    fn wake_for_events(&self) {
        if !self.in_turn && !self.flushing_turn {
            self.wake();
        }
    }

    /// Makes the epoll fd readable so the host polls again soon.
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: kick is an eventfd; writing 8 bytes is its protocol.
        unsafe { libc::write(self.kick.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Handles whatever is ready, collecting events for the host.
    pub fn poll(&mut self) {
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH];
        // SAFETY: valid epoll fd and a buffer of EPOLL_BATCH events.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                ready.as_mut_ptr(),
                EPOLL_BATCH as i32,
                0,
            )
        };
        for ev in ready.iter().take(n.max(0) as usize) {
            let (flags, token) = (ev.events, ev.u64);
            match token {
                TIMER_TOKEN => self.tick(),
                KICK_TOKEN => self.on_kick(),
                HANDOFF_TOKEN => self.on_handoff(),
                t if t & LISTENER_TAG != 0 && t >> 32 == LISTENER_TAG >> 32 => {
                    self.accept((t & 0xffff_ffff) as usize)
                }
                t => self.on_conn_ready(t, flags),
            }
        }
    }

    fn on_kick(&mut self) {
        let mut buf = 0u64;
        // SAFETY: reading 8 bytes from an eventfd into a u64.
        unsafe { libc::read(self.kick.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
        let resumed = std::mem::take(&mut self.resumed);
        for token in resumed {
            self.parse(token);
            self.update_interest(token);
        }
    }

    /// Serves an already connected socket as if it had been accepted: one
    /// handed over by another worker, or (tests and fuzzing) a socketpair.
    pub fn adopt(&mut self, fd: OwnedFd) -> Token {
        let Ok(parser) = RequestParser::new(&self.limits) else {
            return u64::MAX;
        };
        let (peer, local_port) = addresses_of(&fd).unwrap_or((("127.0.0.1".to_string(), 1), 80));
        let conn = Conn::new(fd, parser, peer, local_port, self.now);
        self.insert(conn)
    }

    /// Receives connections other workers hand over, under `name`.
    pub fn enable_handoff(&mut self, name: &str) -> io::Result<()> {
        let sock = handoff::bind(name)?;
        self.ctl(
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            libc::EPOLLIN as u32,
            HANDOFF_TOKEN,
        )?;
        self.handoff = Some(sock);
        Ok(())
    }

    /// Per CPU, the handoff name of the worker to serve connections whose
    /// packets arrive there (None: this one). Empty: connections stay.
    pub fn set_cpu_owners(&mut self, owners: Vec<Option<String>>) {
        // Connections are looked at in short rounds while they may move.
        let period = if owners.is_empty() {
            TICK
        } else {
            HANDOFF_TICK
        };
        self.cpu_owners = owners;
        let _ = arm_timer(&self.timer, period);
    }

    fn on_handoff(&mut self) {
        loop {
            let Some(sock) = &self.handoff else { return };
            match handoff::receive(sock) {
                Ok(Received::Conn(fd)) => {
                    let token = self.adopt(fd);
                    // A request may be queued already.
                    self.read(token);
                }
                Ok(Received::Refused) => {}
                Ok(Received::Empty) | Err(_) => return,
            }
        }
    }

    /// Hands idle connections whose packets now arrive on another worker's
    /// CPU to that worker (the client thread moved, or connected from a CPU
    /// it then left), so each client thread is served where it runs.
    fn hand_off_strays(&mut self) {
        let Some(sock) = &self.handoff else { return };
        if self.cpu_owners.is_empty() || self.draining {
            return;
        }
        let via = sock.as_raw_fd();
        let mut moved = Vec::new();
        let count = self.slots.len();
        let start = self.handoff_cursor.min(count);
        let end = (start + HANDOFF_SCAN).min(count);
        self.handoff_cursor = if end == count { 0 } else { end };
        for (i, slot) in self.slots.iter().enumerate().take(end).skip(start) {
            let Some(conn) = &slot.conn else { continue };
            if !conn.is_movable() {
                continue;
            }
            let fd = conn.fd.as_raw_fd();
            let owner = handoff::incoming_cpu(fd).and_then(|cpu| self.cpu_owners.get(cpu as usize));
            if let Some(Some(name)) = owner {
                if handoff::send(via, name, fd).is_ok() {
                    moved.push(token_of(i as u32, slot.generation));
                }
            }
        }
        for token in moved {
            if let Some(conn) = self.conn_mut(token) {
                let fd = conn.fd.as_raw_fd();
                // The other worker holds the socket open: leave epoll explicitly.
                let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, token);
            }
            self.close(token);
        }
    }

    fn insert(&mut self, conn: Conn) -> Token {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let token = token_of(index, slot.generation);
        let raw = conn.fd.as_raw_fd();
        let interest = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        slot.conn = Some(conn);
        if self.ctl(libc::EPOLL_CTL_ADD, raw, interest, token).is_err() {
            self.close(token);
            return token;
        }
        if let Some(conn) = self.conn_mut(token) {
            conn.interest = interest;
        }
        self.update_interest(token);
        token
    }

    fn accept(&mut self, index: usize) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        let (fd, port) = (listener.fd, listener.port);
        loop {
            // SAFETY: zeroed sockaddr_storage is a valid out-buffer for accept4.
            let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: fd is a listening socket; storage/len describe a valid buffer.
            let client = unsafe {
                libc::accept4(
                    fd,
                    (&mut storage as *mut libc::sockaddr_storage).cast(),
                    &mut len,
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            let client = match owned(client) {
                Ok(client) => client,
                Err(e) => {
                    let reason = match e.raw_os_error() {
                        Some(libc::EMFILE) => "EMFILE",
                        Some(libc::ENFILE) => "ENFILE",
                        Some(libc::ENOBUFS) => "ENOBUFS",
                        Some(libc::ENOMEM) => "ENOMEM",
                        // EAGAIN: the queue is empty. Others concern one
                        // connection (ECONNABORTED): try the next.
                        Some(libc::EAGAIN) => return,
                        _ => continue,
                    };
                    // The connection stays queued for when descriptors free up.
                    if self.accept_retry_at.is_none() {
                        self.events.push(Event::AcceptPaused { reason });
                    }
                    self.accept_retry_at = Some(self.now + ACCEPT_RETRY);
                    self.update_accepting();
                    return;
                }
            };
            let one: libc::c_int = 1;
            // SAFETY: setting an int option on a TCP socket.
            unsafe {
                libc::setsockopt(
                    client.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            let Ok(parser) = RequestParser::new(&self.limits) else {
                return;
            };
            let conn = Conn::new(client, parser, peer_of(&storage), port, self.now);
            self.accepted += 1;
            let token = self.insert(conn);
            // Clients write their request right after connecting: it is
            // usually here already, and reading it now saves a poll round.
            self.read(token);
            if self.connection_count() >= self.limits.max_connections {
                self.update_accepting();
                return;
            }
        }
    }

    fn update_interest(&mut self, token: Token) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let mut want = 0u32;
        if conn.wants_read() {
            want |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if conn.unsent() > 0 {
            want |= libc::EPOLLOUT as u32;
        }
        publish_waiting(token, conn);
        if want != conn.interest {
            conn.interest = want;
            let fd = conn.fd.as_raw_fd();
            let _ = self.ctl(libc::EPOLL_CTL_MOD, fd, want, token);
        }
    }

    fn on_conn_ready(&mut self, token: Token, flags: u32) {
        let lingering = self
            .conn_mut(token)
            .is_some_and(|c| c.linger_until.is_some());
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
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.linger_until.is_some() {
            let mut sink = [0u8; 4096];
            // SAFETY: reading into a local buffer from our socket.
            let n =
                unsafe { libc::read(conn.fd.as_raw_fd(), sink.as_mut_ptr().cast(), sink.len()) };
            if n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock) {
                self.close(token);
            }
            return;
        }
        if !conn.wants_read() {
            return;
        }
        let start = conn.inbuf.len();
        conn.inbuf.reserve(READ_CHUNK);
        let spare = conn.inbuf.capacity() - start;
        // recv rather than read: the socket call skips the VFS layer.
        // SAFETY: reading into the vector's spare capacity, then setting the
        // length to what the kernel wrote.
        let n = unsafe {
            libc::recv(
                conn.fd.as_raw_fd(),
                conn.inbuf.as_mut_ptr().add(start).cast(),
                spare,
                0,
            )
        };
        if n == 0 {
            // The client is done sending. Pending responses can still go out
            // if it only half-closed; a partial request can never complete.
            conn.inbuf.truncate(start);
            // A request cut short can never complete; otherwise the client
            // may only have half-closed and still reads its responses.
            if conn.parser.busy() || (conn.pending.is_empty() && conn.unsent() == 0) {
                self.close(token);
            } else {
                conn.stop_reading();
                if conn.known_to_app && !conn.pending.is_empty() {
                    self.events.push(Event::PeerShutdown { conn: token });
                }
                self.update_interest(token);
            }
            return;
        }
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock && err.kind() != io::ErrorKind::Interrupted {
                self.close(token);
            }
            return;
        }
        // SAFETY: the kernel initialised n bytes after start.
        unsafe { conn.inbuf.set_len(start + n as usize) };
        conn.last_read = now;
        self.parse(token);
        // Known before the app runs, in case it hangs (see abort.rs).
        if let Some(conn) = self.conn_mut(token) {
            publish_waiting(token, conn);
        }
        // Interest is settled when the turn's output is flushed: a response
        // written in this turn may close the connection, needing no change.
        self.mark_dirty(token);
    }

    /// Runs the parser over the connection's unparsed input.
    fn parse(&mut self, token: Token) {
        let now = self.now;
        let limits = &self.limits;
        let date = self.date.header_line();
        let Some(conn) = conn_in(&mut self.slots, token) else {
            return;
        };
        if conn.inbuf.is_empty() || conn.read_finished {
            return;
        }
        let Conn {
            parser,
            inbuf,
            pending,
            head_since,
            known_to_app,
            peer_ip,
            peer_port,
            local_port,
            ..
        } = conn;
        let mut recorder = Recorder {
            token,
            now,
            limits,
            pending,
            head_since,
            known_to_app,
            peer: (peer_ip.as_str(), *peer_port, *local_port),
            draining: self.draining,
            events: &mut self.events,
            arena: &mut self.arena,
        };
        let outcome = parser.execute(inbuf, &mut recorder);
        match outcome {
            Outcome::Consumed => conn.inbuf.clear(),
            Outcome::Paused { consumed } => {
                conn.inbuf.drain(..consumed.min(conn.inbuf.len()));
                conn.parse_paused = true;
            }
            Outcome::Finished { trailing } => {
                conn.inbuf.clear();
                conn.stop_reading();
                conn.peer_done = !trailing;
            }
            Outcome::Error {
                status, in_body, ..
            } => {
                if in_body {
                    self.abandon_body(token, status);
                } else {
                    conn.fail(status, date);
                    self.mark_dirty(token);
                }
            }
        }
    }

    /// A request body that cannot complete (malformed, too large, stalled).
    /// The app already has the request: it hears of the close, and the
    /// client gets `status` if no response has started, else just the close.
    fn abandon_body(&mut self, token: Token, status: u16) {
        let date = self.date.header_line().to_vec();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let only = conn.pending.len() == 1 && !conn.response_started();
        conn.pending.clear();
        conn.head_since = None;
        if only {
            conn.fail(status, &date);
        } else {
            conn.stop_reading();
            conn.close_after_flush = true;
        }
        if std::mem::take(&mut conn.known_to_app) {
            self.events.push(Event::Closed { conn: token });
        }
        self.mark_dirty(token);
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
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        match conn.flush() {
            Err(_) => {
                self.close(token);
                return;
            }
            Ok(true) => {
                if conn.close_after_flush {
                    // A client whose last request was read whole, with nothing
                    // after it, sends no more: close at once. Otherwise linger,
                    // so bytes still arriving cannot reset the response away.
                    if conn.peer_done && conn.inbuf.is_empty() {
                        self.close(token);
                    } else {
                        self.linger(token);
                    }
                    return;
                }
                if conn.wants_drain {
                    conn.wants_drain = false;
                    self.events.push(Event::Drain { conn: token });
                    self.wake_for_events();
                }
            }
            Ok(false) => {}
        }
        self.update_interest(token);
    }

    /// Shuts the write side and reads until the client closes (or a short
    /// while passes), so a client still sending does not get a reset that
    /// would destroy the response it has not read yet.
    fn linger(&mut self, token: Token) {
        let now = self.now;
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        // SAFETY: shutting down our own socket.
        unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_WR) };
        conn.linger_until = Some(now + LINGER);
        conn.pending.clear();
        let notify = std::mem::take(&mut conn.known_to_app);
        if notify {
            self.events.push(Event::Closed { conn: token });
        }
        self.update_interest(token);
    }

    fn close(&mut self, token: Token) {
        let index = (token & 0xffff_ffff) as usize;
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        if u64::from(slot.generation) != token >> 32 {
            return;
        }
        let Some(conn) = slot.conn.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1) & 0x000f_ffff;
        self.free.push(index as u32);
        if !self.accepting {
            self.update_accepting();
        }
        // Closing the descriptor (dropping `conn`) takes it out of the epoll
        // set; a late event for the old token finds a newer generation.
        abort::set_waiting(index, conn.fd.as_raw_fd(), false);
        if conn.known_to_app {
            self.events.push(Event::Closed { conn: token });
            self.wake_for_events();
        }
    }

    fn tick(&mut self) {
        let mut buf = 0u64;
        // SAFETY: reading 8 bytes from a timerfd into a u64.
        unsafe { libc::read(self.timer.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
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
        let mut expired = Vec::new();
        let mut slow_head = Vec::new();
        let mut stalled_body = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(conn) = &slot.conn else { continue };
            let token = token_of(i as u32, slot.generation);
            if let Some(until) = conn.linger_until {
                if now >= until {
                    expired.push(token);
                }
            } else if conn
                .head_since
                .is_some_and(|t| now.duration_since(t) >= self.limits.header_timeout)
            {
                slow_head.push(token);
            } else if conn.parser.in_body()
                && !conn.read_finished
                && now.duration_since(conn.last_read) >= self.limits.body_timeout
            {
                stalled_body.push(token);
            } else if conn.is_idle()
                && now.duration_since(conn.idle_since) >= self.limits.keep_alive
            {
                expired.push(token);
            }
        }
        for token in expired {
            self.close(token);
        }
        let date = self.date.header_line().to_vec();
        for token in slow_head {
            let Some(conn) = self.conn_mut(token) else {
                continue;
            };
            conn.head_since = None;
            if conn.pending.is_empty() {
                conn.fail(408, &date);
            } else {
                conn.stop_reading();
                conn.close_after_flush = true;
            }
            self.mark_dirty(token);
        }
        for token in stalled_body {
            self.abandon_body(token, 408);
        }
    }

    fn respond_with<T>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut Conn, &[u8], bool) -> Result<T, WriteError>,
    ) -> Result<T, WriteError> {
        let draining = self.draining;
        // Field by field, so the date line is borrowed while the connection is mutated.
        let date = self.date.header_line();
        let conn = conn_in(&mut self.slots, token)
            .filter(|conn| conn.linger_until.is_none())
            .ok_or(WriteError::Closed)?;
        let result = f(conn, date, draining)?;
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
        })
    }

    /// Starts the front response on `token` as bytes the app frames itself.
    pub fn start_raw(&mut self, token: Token, keep_alive: bool) -> Result<(), WriteError> {
        self.respond_with(token, |c, _, draining| c.start_raw(keep_alive && !draining))
    }

    /// Appends body bytes; Ok(false) asks the app to wait for `Event::Drain`.
    pub fn write(&mut self, token: Token, data: &[u8]) -> Result<bool, WriteError> {
        self.respond_with(token, |c, _, _| c.write(data))
    }

    /// Completes the front response and moves on to the next request.
    pub fn end(&mut self, token: Token) -> Result<(), WriteError> {
        let now = self.now;
        self.respond_with(token, |c, date, _| c.end(date, now))?;
        self.resume_parsing(token);
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
        let now = self.now;
        let app = self
            .heads
            .check(status, headers)
            .map_err(WriteError::Response)?;
        self.respond_with(token, |c, date, draining| {
            c.start(
                date,
                status,
                headers,
                &app,
                Some(body.len() as u64),
                draining,
            )?;
            c.write(body)?;
            c.end(date, now)
        })?;
        self.resume_parsing(token);
        Ok(())
    }

    fn resume_parsing(&mut self, token: Token) {
        let depth = self.limits.pipeline_depth;
        let draining = self.draining;
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.parse_paused && conn.pending.len() < depth && !draining {
            conn.parse_paused = false;
            conn.parser.resume();
            self.resumed.push(token);
            self.wake();
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
        if let Some(conn) = self.conn_mut(token) {
            conn.app_paused = !on;
            self.update_interest(token);
        }
    }

    /// Gives up on the connection after flushing what is buffered: for an
    /// app that failed after its response started, so the client sees an
    /// incomplete response rather than a clean one.
    pub fn abort(&mut self, token: Token) -> Result<(), WriteError> {
        self.respond_with(token, |c, _, _| {
            c.stop_reading();
            c.close_after_flush = true;
            c.pending.clear();
            Ok(())
        })
    }
}
