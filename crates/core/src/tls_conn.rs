//! The TLS layer of one connection, between the socket and the
//! connection's plaintext buffers: ciphertext is read with one `recv` per
//! readiness and decrypted into the same input the parser reads; the
//! turn's plaintext output is encrypted and sent with one `sendmsg`.
//! Plain HTTP sent to a TLS port is recognised by its first byte (a
//! ClientHello starts with 0x16), so it can be answered in plain HTTP.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use crate::tls::PeerCertificate;

/// Ciphertext asked of the socket per read.
const RAW_CHUNK: usize = 64 * 1024;
/// Plaintext encrypted ahead of sending, at most: a turn's output of up to
/// this size leaves in one `sendmsg`.
const SEAL_AHEAD: usize = 256 * 1024;
/// A TLS handshake record starts with this content type.
const HANDSHAKE_RECORD: u8 = 0x16;

/// What one read from a TLS connection got.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsRead {
    /// Ciphertext was taken in (plaintext may have been added, or the
    /// handshake moved on and has something to send).
    Progress,
    /// Nothing to read now.
    Nothing,
    /// The client closed (FIN or close_notify).
    End,
    /// A TLS error (an alert may be queued to send), or a socket error.
    Failed,
    /// The client speaks plain HTTP on the TLS port.
    PlainHttp,
}

pub struct TlsLayer {
    session: ServerConnection,
    /// Ciphertext received and not yet given to rustls.
    raw: Vec<u8>,
    /// Nothing was received yet (the first byte tells TLS from plain HTTP).
    fresh: bool,
    close_notify_sent: bool,
    /// The client's close_notify came with data, reported first; the close
    /// is reported on the next read.
    peer_closed: bool,
}

/// A connected socket as rustls reads and writes it.
struct Socket(RawFd);

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    /// One `sendmsg` for all of rustls' queued records.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: a zeroed msghdr is valid; iov points at `bufs`, whose
        // IoSlice has the layout of iovec, alive for the call.
        let n = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            libc::sendmsg(self.0, &msg, libc::MSG_NOSIGNAL)
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsLayer {
    pub fn new(config: Arc<ServerConfig>) -> Option<TlsLayer> {
        let mut session = ServerConnection::new(config).ok()?;
        session.set_buffer_limit(Some(SEAL_AHEAD));
        Some(TlsLayer {
            session,
            raw: Vec::new(),
            fresh: true,
            close_notify_sent: false,
            peer_closed: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.session.is_handshaking()
    }

    /// Encrypted bytes wait to be sent.
    pub fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Reads what the socket has, decrypting it into `plain`.
    pub fn receive(&mut self, fd: RawFd, plain: &mut Vec<u8>) -> TlsRead {
        if self.peer_closed {
            return TlsRead::End;
        }
        let start = self.raw.len();
        self.raw.reserve(RAW_CHUNK);
        let spare = self.raw.capacity() - start;
        // SAFETY: reading into the vector's spare capacity, then setting
        // the length to what the kernel wrote.
        let n = unsafe { libc::recv(fd, self.raw.as_mut_ptr().add(start).cast(), spare, 0) };
        match n {
            0 => return TlsRead::End,
            n if n < 0 => {
                return match io::Error::last_os_error().kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => TlsRead::Nothing,
                    _ => TlsRead::Failed,
                }
            }
            // SAFETY: the kernel initialised n bytes after start.
            n => unsafe { self.raw.set_len(start + n as usize) },
        }
        if std::mem::take(&mut self.fresh) && self.raw[0] != HANDSHAKE_RECORD {
            return if self.raw[0].is_ascii_uppercase() {
                TlsRead::PlainHttp
            } else {
                TlsRead::Failed
            };
        }
        self.decrypt(plain)
    }

    /// Feeds the received ciphertext to rustls, moving plaintext to `plain`.
    fn decrypt(&mut self, plain: &mut Vec<u8>) -> TlsRead {
        let plain_before = plain.len();
        let mut pos = 0;
        let mut closed = false;
        while pos < self.raw.len() {
            let mut rest = &self.raw[pos..];
            let before = rest.len();
            match self.session.read_tls(&mut rest) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => pos += before - rest.len(),
                Err(_) => return TlsRead::Failed,
            }
            let state = match self.session.process_new_packets() {
                Ok(state) => state,
                Err(_) => return TlsRead::Failed,
            };
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let at = plain.len();
                plain.resize(at + ready, 0);
                if self.session.reader().read_exact(&mut plain[at..]).is_err() {
                    return TlsRead::Failed;
                }
            }
            if state.peer_has_closed() {
                closed = true;
                break;
            }
        }
        self.raw.drain(..pos);
        // A request and the close after it in one read: the request first.
        self.peer_closed = closed && plain.len() > plain_before;
        if closed && !self.peer_closed {
            TlsRead::End
        } else {
            TlsRead::Progress
        }
    }

    /// Encrypts `out[*pos..]` and sends it with what the handshake has to
    /// say, then close_notify if `closing` and all is out. Ok(true) when
    /// nothing is left to send.
    pub fn flush(
        &mut self,
        fd: RawFd,
        out: &[u8],
        pos: &mut usize,
        closing: bool,
    ) -> io::Result<bool> {
        let mut socket = Socket(fd);
        loop {
            if !self.is_handshaking() {
                while *pos < out.len() {
                    let end = out.len().min(*pos + SEAL_AHEAD);
                    match self.session.writer().write(&out[*pos..end])? {
                        0 => break,
                        n => *pos += n,
                    }
                }
            }
            if closing && *pos == out.len() && !self.close_notify_sent {
                self.close_notify_sent = true;
                self.session.send_close_notify();
            }
            if !self.session.wants_write() {
                return Ok(*pos == out.len());
            }
            while self.session.wants_write() {
                match self.session.write_tls(&mut socket) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Sends what rustls queued (an alert after a failed handshake), best effort.
    pub fn send_queued(&mut self, fd: RawFd) {
        let _ = self.session.write_tls(&mut Socket(fd));
    }

    /// The verified client certificate, if the client sent one.
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        let leaf = self.session.peer_certificates()?.first()?;
        PeerCertificate::of(leaf)
    }

    pub fn has_peer_certificate(&self) -> bool {
        self.session
            .peer_certificates()
            .is_some_and(|c| !c.is_empty())
    }

    /// The negotiated protocol version and cipher suite as OpenSSL and
    /// Node name them: `TLSv1.3`, and the suite's IANA name
    /// (`TLS_AES_128_GCM_SHA256`).
    pub fn negotiated(&self) -> Option<(String, String)> {
        let version = format!("{:?}", self.session.protocol_version()?).replace('_', ".");
        let suite = format!("{:?}", self.session.negotiated_cipher_suite()?.suite());
        // rustls marks TLS 1.3 suites `TLS13_`; their IANA names start `TLS_`.
        let suite = match suite.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => suite,
        };
        Some((version, suite))
    }
}
