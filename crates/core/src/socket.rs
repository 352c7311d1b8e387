//! Listening sockets (one SO_REUSEPORT socket per worker slot and address,
//! or one Unix socket all workers share, created by the arbiter and
//! inherited by the workers), and accepting connections on them with the
//! errno policy that goes with it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{cvt, owned};

fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` can then both be bound, as with nginx.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

/// SO_REUSEPORT would silently join another server's group on the same port
/// (any process of the same user may): a plain bind first tells whether the
/// address is already listened on, as gunicorn's "Connection in use" does.
fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into())
}

/// Binds `count` SO_REUSEPORT sockets to `addr` (a port of 0 picks one port
/// for the whole group) and returns them with the address actually bound.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    if addr.port() != 0 {
        ensure_port_free(addr)?;
    }
    let mut bound = addr;
    let mut fds = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = reuseport_listener(bound, backlog)?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("bound socket has no inet address"))?;
        }
        fds.push(OwnedFd::from(socket));
    }
    Ok((fds, bound))
}

/// One more socket for an existing group of this process (a new slot).
pub fn join_group(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    reuseport_listener(addr, backlog).map(OwnedFd::from)
}

/// The port an inherited listening socket listens on; 0 for a Unix socket.
pub fn listener_port(fd: RawFd) -> io::Result<u16> {
    // SAFETY: fd is an open descriptor of this process for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&fd);
    let local = sock.local_addr()?;
    Ok(local.as_socket().map_or(0, |a| a.port()))
}

/// A TCP listening socket's accept queue: connections waiting for
/// `accept`, and the most it holds (the backlog).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptQueue {
    pub length: u32,
    pub backlog: u32,
}

/// The accept queue of listening socket `fd`, from `TCP_INFO` (on a
/// listener Linux reports the queue in `tcpi_unacked` and the backlog in
/// `tcpi_sacked`); None for a Unix socket, which has no such report.
pub fn accept_queue(fd: RawFd) -> io::Result<Option<AcceptQueue>> {
    // SAFETY: fd is an open descriptor of this process for this call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if socket2::SockRef::from(&borrowed)
        .local_addr()?
        .as_socket()
        .is_none()
    {
        return Ok(None);
    }
    // SAFETY: tcp_info is plain integers, valid when zeroed.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len describe a writable buffer of len bytes; the
    // kernel writes at most len bytes and updates len.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    })?;
    Ok(Some(AcceptQueue {
        length: info.tcpi_unacked,
        backlog: info.tcpi_sacked,
    }))
}

/// Whether `fd` is a listening socket (SO_ACCEPTCONN): an inherited
/// descriptor (`fd://N`) that is not would make accept fail forever.
pub fn is_listening(fd: RawFd) -> io::Result<bool> {
    // SAFETY: fd is an open descriptor of this process for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).is_listener()
}

/// Who is at the other end of a connected Unix socket, as the kernel saw it
/// at connect() time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The peer's credentials of Unix socket `fd` (SO_PEERCRED): the control
/// socket lets only its own user and root in, whatever the file's mode.
pub fn peer_credentials(fd: RawFd) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of a ucred for this
    // call; the kernel checks `fd` and writes at most `len` bytes.
    crate::sys::cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(PeerCredentials {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// A Unix stream socket at `path`, its mode what the process umask leaves.
/// A socket file nobody answers on (left by a crash) is replaced; one a
/// live server answers on, or a path that is not a socket, is an error.
pub fn bind_unix(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ));
        }
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is listening on this socket",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)?,
            Err(e) => return Err(e),
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(backlog)?;
    Ok(OwnedFd::from(socket))
}

/// Who is at the other end of a connection, as the app sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub ip: String,
    pub port: u16,
    /// The port the connection arrived on.
    pub local_port: u16,
}

impl Peer {
    /// A connected socket's peer, if it is TCP.
    pub fn of(fd: &OwnedFd) -> Option<Peer> {
        let sock = socket2::SockRef::from(fd);
        let peer = sock.peer_addr().ok()?.as_socket()?;
        let local = sock.local_addr().ok()?.as_socket()?;
        Some(Peer {
            ip: peer.ip().to_string(),
            port: peer.port(),
            local_port: local.port(),
        })
    }

    /// What a connection that is not TCP (a socketpair in tests) is shown as.
    pub fn local() -> Peer {
        Peer {
            ip: "127.0.0.1".to_string(),
            port: 1,
            local_port: 80,
        }
    }
}

fn peer_of(storage: &libc::sockaddr_storage, local_port: u16) -> Peer {
    let (ip, port) = match i32::from(storage.ss_family) {
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
    };
    Peer {
        ip,
        port,
        local_port,
    }
}

/// What one `accept` on a listening socket produced.
pub enum Accepted {
    /// A new connection (non-blocking, close-on-exec, TCP_NODELAY).
    Conn(OwnedFd, Peer),
    /// The queue is empty.
    Empty,
    /// This one connection failed (ECONNABORTED and the like): try the next.
    Skipped,
    /// The process ran out of descriptors or memory (the errno's name): the
    /// connection stays queued for when some free up.
    Exhausted(&'static str),
}

/// Accepts one connection from `listener`, which listens on `local_port`.
pub fn accept(listener: RawFd, local_port: u16) -> Accepted {
    // SAFETY: zeroed sockaddr_storage is a valid out-buffer for accept4.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: listener is a listening socket; storage/len describe a valid buffer.
    let client = owned(unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    });
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::EMFILE) => Accepted::Exhausted("EMFILE"),
                Some(libc::ENFILE) => Accepted::Exhausted("ENFILE"),
                Some(libc::ENOBUFS) => Accepted::Exhausted("ENOBUFS"),
                Some(libc::ENOMEM) => Accepted::Exhausted("ENOMEM"),
                Some(libc::EAGAIN) => Accepted::Empty,
                _ => Accepted::Skipped,
            }
        }
    };
    let one: libc::c_int = 1;
    // SAFETY: setting an int option on a socket (a Unix one refuses it, harmlessly).
    unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let peer = peer_of(&storage, local_port);
    Accepted::Conn(client, peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn accept_queue_counts_connections_not_yet_accepted() {
        let (fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
        let fd = fds[0].as_raw_fd();
        let empty = accept_queue(fd).unwrap().unwrap();
        assert_eq!(
            empty,
            AcceptQueue {
                length: 0,
                backlog: 16
            }
        );
        let _clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(accept_queue(fd).unwrap().unwrap().length, 3);
        let dir = std::env::temp_dir().join(format!("rwsgi-queue-{}", std::process::id()));
        let unix = bind_unix(&dir, 16).unwrap();
        assert_eq!(accept_queue(unix.as_raw_fd()).unwrap(), None);
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn peer_credentials_name_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(a.as_raw_fd()).unwrap();
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(
            cred,
            PeerCredentials {
                pid: std::process::id() as i32,
                uid,
                gid
            }
        );
    }

    #[test]
    fn peer_credentials_of_a_closed_descriptor_fail() {
        assert!(peer_credentials(-1).is_err());
    }

    #[test]
    fn group_shares_one_ephemeral_port() {
        let (fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        for fd in &fds {
            assert_eq!(listener_port(fd.as_raw_fd()).unwrap(), addr.port());
        }
    }

    #[test]
    fn group_accepts_connections() {
        let (fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 1, 128).unwrap();
        let listener = TcpListener::from(fds.into_iter().next().unwrap());
        listener.set_nonblocking(false).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(b"x").unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn accept_names_the_peer_and_reports_an_empty_queue() {
        let (fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
        let fd = fds[0].as_raw_fd();
        assert!(matches!(accept(fd, addr.port()), Accepted::Empty));
        let client = TcpStream::connect(addr).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let (conn, peer) = loop {
            match accept(fd, addr.port()) {
                Accepted::Conn(conn, peer) => break (conn, peer),
                _ if std::time::Instant::now() < deadline => std::thread::yield_now(),
                _ => panic!("no connection accepted"),
            }
        };
        let local = client.local_addr().unwrap();
        assert_eq!(peer.ip, "127.0.0.1");
        assert_eq!(peer.port, local.port());
        assert_eq!(peer.local_port, addr.port());
        assert_eq!(Peer::of(&conn), Some(peer));
    }

    #[test]
    fn ipv6_loopback_binds() {
        match bind_group("[::1]:0".parse().unwrap(), 2, 16) {
            Ok((fds, addr)) => {
                assert_eq!(fds.len(), 2);
                assert!(addr.is_ipv6());
            }
            // Machines without IPv6 loopback cannot run this check.
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL)),
        }
    }

    #[test]
    fn unix_socket_replaces_a_stale_file_and_refuses_a_live_one() {
        let dir = std::env::temp_dir().join(format!("rwsgi-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // A stale file: bound, then its socket closed.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind_unix(&path, 16).unwrap();
        assert_eq!(listener_port(live.as_raw_fd()).unwrap(), 0);
        let err = bind_unix(&path, 16).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let client = UnixStream::connect(&path).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let peer = loop {
            match accept(live.as_raw_fd(), 0) {
                Accepted::Conn(_, peer) => break peer,
                _ if std::time::Instant::now() < deadline => std::thread::yield_now(),
                _ => panic!("no connection accepted"),
            }
        };
        assert_eq!(peer.ip, "");
        drop(client);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn taken_port_is_an_error() {
        let (_fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = plain.local_addr().unwrap();
        assert!(bind_group(taken, 1, 16).is_err());
        // Nor may a second group join a live one.
        let err = bind_group(addr, 1, 16).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
