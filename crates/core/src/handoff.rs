//! Handing an idle keep-alive connection to another worker: its descriptor
//! goes over a datagram Unix socket (SCM_RIGHTS) bound in the abstract
//! namespace under a name the arbiter's workers agree on. The receiver
//! takes only TCP sockets, and only from processes of its own user.
//! `Handoff` is one worker's end: it receives, and it scans the worker's
//! connections for idle ones whose packets now arrive on another worker's
//! CPU (the client thread moved, or connected from a CPU it then left).

use std::collections::HashMap;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::slab::{Slab, Token};
use crate::socket::{self, Accepted};
use crate::sys::cvt;

/// The timer's period while idle connections may move to other workers.
pub const HANDOFF_TICK: Duration = Duration::from_millis(100);
/// Connections looked at per round (bounds the getsockopt calls).
const SCAN: usize = 256;
/// A connection moves only once its packets have kept arriving on the
/// other worker's CPU this long: a client thread the scheduler bounces
/// between CPUs is not chased back and forth (each move costs both
/// workers a wake-up and the connection a cold cache).
pub const STAY_BEFORE_MOVE: Duration = Duration::from_millis(500);
/// A connection that just arrived from another worker stays at least this
/// long, whatever its packets do meanwhile.
pub const SETTLE_AFTER_MOVE: Duration = Duration::from_secs(2);

/// One worker's end of the handoff: where other workers send it
/// connections, and where its own connections should go.
pub struct Handoff {
    sock: OwnedFd,
    /// Per CPU, the handoff name of the worker serving connections that
    /// arrive there, if not this one: idle connections move to it.
    cpu_owners: Vec<Option<String>>,
    /// Where the next scan starts.
    cursor: usize,
    /// Connections seen arriving on another owner's CPU, busy or idle:
    /// which CPU, since when. Entries of connections that stopped straying
    /// are dropped.
    straying: HashMap<Token, (u32, Instant)>,
    /// Connections received from other workers, and when.
    arrived: HashMap<Token, Instant>,
    sent: u64,
    received: u64,
}

impl Handoff {
    /// Receives connections under `name`.
    pub fn bind(name: &str) -> io::Result<Handoff> {
        Ok(Handoff {
            sock: bind(name)?,
            cpu_owners: Vec::new(),
            cursor: 0,
            straying: HashMap::new(),
            arrived: HashMap::new(),
            sent: 0,
            received: 0,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Per CPU, the worker to serve connections whose packets arrive there
    /// (None: this one). Empty: connections stay.
    pub fn set_cpu_owners(&mut self, owners: Vec<Option<String>>) {
        self.cpu_owners = owners;
    }

    /// Connections may move: the scan should run every `HANDOFF_TICK`.
    pub fn is_active(&self) -> bool {
        !self.cpu_owners.is_empty()
    }

    /// One handed-over connection, if any is queued.
    pub fn receive(&self) -> io::Result<Received> {
        receive(&self.sock)
    }

    /// `token` is a connection received from another worker at `now`.
    pub fn arrived(&mut self, token: Token, now: Instant) {
        self.received += 1;
        self.arrived.insert(token, now);
    }

    /// Connections handed to other workers, and received from them.
    pub fn counts(&self) -> (u64, u64) {
        (self.sent, self.received)
    }

    /// Sends the idle connections of the next round of `conns` whose
    /// packets have kept arriving on another worker's CPU for
    /// `STAY_BEFORE_MOVE` to that worker; returns their tokens, for the
    /// caller to forget (the socket stays open over there).
    pub fn send_strays(&mut self, conns: &Slab<Conn>, now: Instant) -> Vec<Token> {
        let mut moved = Vec::new();
        if !self.is_active() {
            return moved;
        }
        let count = conns.capacity();
        let start = self.cursor.min(count);
        let end = (start + SCAN).min(count);
        self.cursor = if end == count { 0 } else { end };
        self.arrived
            .retain(|_, at| now.saturating_duration_since(*at) < SETTLE_AFTER_MOVE);
        for (token, conn) in conns.range(start..end) {
            // The receiver takes TCP only: a Unix connection stays here. A
            // busy connection keeps its time astray (under steady load it
            // is busy at most scans, and would never move: measured, 64
            // connections made from one CPU stayed on one worker for good);
            // it moves at a scan that finds it idle.
            let stray = (conn.may_move() && is_tcp(conn.raw_fd()))
                .then(|| incoming_cpu(conn.raw_fd()))
                .flatten()
                .filter(|&cpu| matches!(self.cpu_owners.get(cpu as usize), Some(Some(_))));
            let Some(cpu) = stray else {
                self.straying.remove(&token);
                continue;
            };
            let since = match self.straying.get(&token) {
                Some(&(seen, since)) if seen == cpu => since,
                _ => {
                    self.straying.insert(token, (cpu, now));
                    continue;
                }
            };
            if now.saturating_duration_since(since) < STAY_BEFORE_MOVE
                || self.arrived.contains_key(&token)
                || !conn.is_idle()
            {
                continue;
            }
            let Some(Some(name)) = self.cpu_owners.get(cpu as usize) else {
                continue;
            };
            if send(self.sock.as_raw_fd(), name, conn.raw_fd()).is_ok() {
                self.straying.remove(&token);
                self.sent += 1;
                moved.push(token);
            }
        }
        // Tokens of connections closed meanwhile (the slab hands out new
        // generations, so a stale entry can never match a new connection).
        if self.cursor == 0 {
            self.straying.retain(|&token, _| conns.get(token).is_some());
        }
        moved
    }
}

/// How long passing one queued connection may wait for the receiver.
const PASS_WAIT_US: libc::suseconds_t = 200_000;

/// What a connection that could not be passed on gets before it closes.
const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// Accepts up to `max` connections queued on `listener` and sends each to
/// the worker receiving under `to`: how the arbiter empties the queue of a
/// slot whose worker is full, so those clients need not wait for room
/// there. Returns how many were passed on. Each waits at most
/// `PASS_WAIT_US` for the receiver; one it does not take gets a 503 rather
/// than a reset, and passing stops there (the arbiter is never held long).
pub fn pass_queued(listener: RawFd, to: &str, max: usize) -> io::Result<usize> {
    // SAFETY: plain socket creation; the result is owned at once.
    let via = unsafe {
        OwnedFd::from_raw_fd(cvt(libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?)
    };
    // The receiver's queue is short (net.unix.max_dgram_qlen, often 10):
    // wait for it to take each connection, briefly.
    let wait = libc::timeval {
        tv_sec: 0,
        tv_usec: PASS_WAIT_US,
    };
    // SAFETY: setting a timeval option on our socket; reading and setting
    // the status flags of a descriptor we were given.
    unsafe {
        cvt(libc::setsockopt(
            via.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&wait as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        ))?;
        let flags = cvt(libc::fcntl(listener, libc::F_GETFL))?;
        cvt(libc::fcntl(
            listener,
            libc::F_SETFL,
            flags | libc::O_NONBLOCK,
        ))?;
    }
    let mut passed = 0;
    while passed < max {
        match socket::accept(listener, 0) {
            Accepted::Conn(conn, _) => {
                if send(via.as_raw_fd(), to, conn.as_raw_fd()).is_ok() {
                    passed += 1;
                } else {
                    // The receiver is not taking them (hung, or gone): this one
                    // gets an answer, the rest stay queued for their worker.
                    // SAFETY: a write to our own connected socket.
                    unsafe {
                        libc::write(
                            conn.as_raw_fd(),
                            UNAVAILABLE.as_ptr().cast(),
                            UNAVAILABLE.len(),
                        )
                    };
                    break;
                }
            }
            Accepted::Skipped => {}
            Accepted::Empty | Accepted::Exhausted(_) => break,
        }
    }
    Ok(passed)
}

/// An abstract-namespace address: a NUL, then the name.
fn address(name: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: a zeroed sockaddr_un is valid (an empty path).
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = name.as_bytes();
    if bytes.len() + 1 > addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "handoff name too long",
        ));
    }
    for (dst, &src) in addr.sun_path[1..].iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + 1 + bytes.len();
    Ok((addr, len as libc::socklen_t))
}

fn int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value/len describe a valid int out-buffer.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// The CPU that processed the connection's latest incoming packet.
pub fn incoming_cpu(fd: RawFd) -> Option<u32> {
    int_option(fd, libc::SOL_SOCKET, libc::SO_INCOMING_CPU)
        .ok()
        .and_then(|cpu| u32::try_from(cpu).ok())
}

/// A non-blocking datagram socket bound to `name`, receiving senders' credentials.
pub fn bind(name: &str) -> io::Result<OwnedFd> {
    let (addr, len) = address(name)?;
    // SAFETY: plain socket creation; the result is owned at once.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: fd was just created and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: setting an int option; binding to a valid address.
    unsafe {
        cvt(libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ))?;
        cvt(libc::bind(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        ))?;
    }
    Ok(sock)
}

fn empty_iov() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// A header for a one-byte datagram (`byte`) with control messages in `control`.
fn header(byte: &mut [u8; 1], iov: &mut libc::iovec, control: &mut [u64]) -> libc::msghdr {
    iov.iov_base = byte.as_mut_ptr().cast();
    iov.iov_len = 1;
    // SAFETY: a zeroed msghdr is valid; the caller keeps the buffers alive.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control);
    msg
}

/// Sends `conn` to the socket bound to `to`, through `via` (any datagram
/// socket): at once or not at all if `via` is non-blocking (a worker's own
/// socket), else waiting for room in the receiver's queue up to `via`'s
/// send timeout.
pub fn send(via: RawFd, to: &str, conn: RawFd) -> io::Result<()> {
    let (mut addr, len) = address(to)?;
    let (mut byte, mut iov) = ([0u8; 1], empty_iov());
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut msg = header(&mut byte, &mut iov, &mut control);
    msg.msg_name = (&mut addr as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = len;
    // SAFETY: CMSG_SPACE is pure arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    // SAFETY: the control buffer holds one cmsghdr with one fd (64 bytes >= CMSG_SPACE(4)).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), conn);
    }
    // SAFETY: msg describes valid buffers.
    let sent = unsafe { libc::sendmsg(via, &msg, libc::MSG_NOSIGNAL) };
    cvt(sent as libc::c_int).map(|_| ())
}

/// Whether `fd` is a TCP socket (what a handoff may carry).
fn is_tcp(fd: RawFd) -> bool {
    let domain = int_option(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).unwrap_or(-1);
    (domain == libc::AF_INET || domain == libc::AF_INET6)
        && int_option(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok() == Some(libc::IPPROTO_TCP)
}

/// What one receive produced.
pub enum Received {
    /// A TCP connection from a process of this user.
    Conn(OwnedFd),
    /// A datagram without a usable connection (dropped, descriptors closed).
    Refused,
    /// Nothing queued.
    Empty,
}

/// Receives one handed-off connection from `sock` (bound with `bind`).
pub fn receive(sock: &OwnedFd) -> io::Result<Received> {
    let (mut byte, mut iov) = ([0u8; 1], empty_iov());
    let mut control = [0u64; 16];
    let mut msg = header(&mut byte, &mut iov, &mut control);
    // SAFETY: msg describes valid buffers.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(Received::Empty)
        } else {
            Err(e)
        };
    }
    let mut fds = Vec::new();
    let mut same_user = false;
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            let payload = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                for i in 0..payload / size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            } else if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
            {
                let cred = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                same_user = cred.uid == libc::geteuid();
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if !same_user || fds.len() != 1 || msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Ok(Received::Refused);
    }
    match fds.pop() {
        Some(fd) if is_tcp(fd.as_raw_fd()) => Ok(Received::Conn(fd)),
        _ => Ok(Received::Refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn name(tag: &str) -> String {
        format!("rwsgi-test-{}-{tag}", std::process::id())
    }

    #[test]
    fn a_tcp_connection_crosses_and_keeps_its_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        let receiver = bind(&name("tcp")).unwrap();
        let sender = bind(&name("tcp-sender")).unwrap();
        send(sender.as_raw_fd(), &name("tcp"), server_side.as_raw_fd()).unwrap();
        drop(server_side);
        client.write_all(b"ping").unwrap();
        let Received::Conn(fd) = receive(&receiver).unwrap() else {
            panic!("no connection received");
        };
        let mut adopted = TcpStream::from(fd);
        let mut buf = [0u8; 4];
        adopted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        adopted.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        assert!(matches!(receive(&receiver).unwrap(), Received::Empty));
    }

    #[test]
    fn queued_connections_are_passed_on_up_to_the_bound() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let clients: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(listener.local_addr().unwrap()).unwrap())
            .collect();
        let receiver = bind(&name("queued")).unwrap();
        assert_eq!(
            pass_queued(listener.as_raw_fd(), &name("queued"), 2).unwrap(),
            2
        );
        for _ in 0..2 {
            assert!(matches!(receive(&receiver).unwrap(), Received::Conn(_)));
        }
        assert!(matches!(receive(&receiver).unwrap(), Received::Empty));
        // The third is still queued on the listener, for its own worker.
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_ok());
        assert_eq!(
            pass_queued(listener.as_raw_fd(), &name("queued"), 2).unwrap(),
            0
        );
        drop(clients);
    }

    #[test]
    fn anything_but_a_tcp_socket_is_refused() {
        let receiver = bind(&name("pipe")).unwrap();
        let sender = bind(&name("pipe-sender")).unwrap();
        let mut ends = [0; 2];
        // SAFETY: pipe writes two descriptors into `ends`.
        assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned here.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
        send(sender.as_raw_fd(), &name("pipe"), r.as_raw_fd()).unwrap();
        assert!(matches!(receive(&receiver).unwrap(), Received::Refused));
        drop((r, w));
    }

    #[test]
    fn a_connection_reports_its_incoming_cpu() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let cpu = incoming_cpu(server_side.as_raw_fd());
        assert!(cpu.is_some_and(|c| c < cpus.max(1024)), "{cpu:?}");
    }
}
