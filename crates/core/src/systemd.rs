//! What a server supervised by systemd needs from the system: readiness
//! datagrams to `$NOTIFY_SOCKET` (sd_notify) and a look at the sockets
//! systemd passed in (socket activation). Node has no Unix datagram
//! sockets, so both live here.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where `$NOTIFY_SOCKET` points: a path, or an abstract name written `@name`.
pub fn notify_address(socket: &str) -> io::Result<SocketAddr> {
    if let Some(name) = socket.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET '{socket}' is neither an absolute path nor an @abstract name"),
        ))
    }
}

/// Sends `message` (`KEY=VALUE` lines) to `socket` as one datagram, as
/// sd_notify does. Never blocks: a receiver whose queue is full is an error
/// (EAGAIN) for the caller to report, not a stalled arbiter.
pub fn notify(socket: &str, message: &str) -> io::Result<()> {
    let addr = notify_address(socket)?;
    let sender = UnixDatagram::unbound()?;
    sender.set_nonblocking(true)?;
    let sent = sender.send_to_addr(message.as_bytes(), &addr)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}

/// The address a listening socket was given, as a bind is written:
/// `HOST:PORT` (IPv6 in brackets), `unix:PATH` or `unix:@NAME`.
pub fn socket_name(fd: RawFd) -> io::Result<String> {
    // SAFETY: fd is an open descriptor of this process for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let local = socket2::SockRef::from(&fd).local_addr()?;
    if let Some(addr) = local.as_socket() {
        return Ok(addr.to_string());
    }
    if let Some(path) = local.as_pathname() {
        return Ok(format!("unix:{}", path.display()));
    }
    if let Some(name) = local.as_abstract_namespace() {
        return Ok(format!("unix:@{}", String::from_utf8_lossy(name)));
    }
    Ok("unix:(unnamed)".to_owned())
}

/// Keeps an inherited socket out of the processes this one starts: each
/// is handed the sockets it serves explicitly.
pub fn close_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fd is an open descriptor of this process for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).set_cloexec(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("rwsgi-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).expect("bind");
        notify(
            path.to_str().expect("utf-8"),
            "READY=1\nSTATUS=1/1 workers ready",
        )
        .expect("sent");
        assert_eq!(receive(&systemd), "READY=1\nSTATUS=1/1 workers ready");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("rwsgi-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let systemd = UnixDatagram::bind_addr(&addr).expect("bind");
        notify(&format!("@{name}"), "STOPPING=1").expect("sent");
        assert_eq!(receive(&systemd), "STOPPING=1");
    }

    #[test]
    fn refuses_a_relative_address_and_reports_a_missing_receiver() {
        assert_eq!(
            notify("relative.sock", "READY=1").map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidInput)
        );
        assert!(notify("/nonexistent/rwsgi/notify.sock", "READY=1").is_err());
    }

    #[test]
    fn names_tcp_and_unix_sockets_as_binds() {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("tcp");
        let port = tcp.local_addr().expect("addr").port();
        assert_eq!(
            socket_name(tcp.as_raw_fd()).expect("name"),
            format!("127.0.0.1:{port}")
        );
        let dir = std::env::temp_dir().join(format!("rwsgi-name-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("app.sock");
        let _ = std::fs::remove_file(&path);
        let unix = UnixListener::bind(&path).expect("unix");
        assert_eq!(
            socket_name(unix.as_raw_fd()).expect("name"),
            format!("unix:{}", path.display())
        );
        close_on_exec(unix.as_raw_fd()).expect("cloexec");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
