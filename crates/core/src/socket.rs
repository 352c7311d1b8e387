//! Listening sockets: one SO_REUSEPORT socket per worker slot and address,
//! created by the arbiter and inherited by the workers.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

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

/// The local address of an inherited listening socket, checking it is one.
pub fn listener_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: the listener is only borrowed: into_raw_fd below gives it back
    // without closing it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let addr = listener.local_addr();
    let _ = listener.into_raw_fd();
    addr
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;

    #[test]
    fn group_shares_one_ephemeral_port() {
        let (fds, addr) = bind_group("127.0.0.1:0".parse().unwrap(), 3, 128).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        for fd in &fds {
            assert_eq!(listener_addr(fd.as_raw_fd()).unwrap(), addr);
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
