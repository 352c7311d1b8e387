//! The engine over TLS without Node: a loopback TCP listener served with
//! rustls, a rustls client on a thread, certificates made by openssl in a
//! temporary directory. Each wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use rwsgi_core::event::Secure;
use rwsgi_core::tls::{self, CertReqs, TicketKeys, TlsSettings, TICKET_KEY_LEN};
use rwsgi_core::{socket, Engine, Event, Limits};
use rwsgi_test_llhttp as _;

mod common;
use common::TEXT;
const BOUND: Duration = Duration::from_secs(20);

/// A self-signed ECDSA certificate for localhost, made once per test.
fn certificate(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("rwsgi-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        // A CA certificate as the server's own is refused by webpki clients.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success());
    (cert, key)
}

fn settings(cert: &Path, key: &Path) -> TlsSettings {
    TlsSettings {
        certfile: cert.to_string_lossy().into_owned(),
        keyfile: key.to_string_lossy().into_owned(),
        ca_certs: None,
        cert_reqs: CertReqs::None,
        min_version: "1.2".into(),
        ciphers: vec![],
        alpn: vec!["http/1.1".into()],
    }
}

/// An engine serving TLS on a loopback port, its tickets sealed with `keys`.
fn tls_engine(settings: &TlsSettings, keys: &[Vec<u8>]) -> (Engine, u16) {
    let (fds, addr) = socket::bind_group("127.0.0.1:0".parse().unwrap(), 1, 64).unwrap();
    let fd = fds[0].as_raw_fd();
    std::mem::forget(fds);
    let mut engine = Engine::new(&[fd], Limits::default()).unwrap();
    let tickets = Arc::new(TicketKeys::default());
    tickets.set(keys).unwrap();
    engine.enable_tls(tls::server_config(settings, tickets).unwrap(), &[0]);
    (engine, addr.port())
}

/// Runs `client` on a thread while serving `engines` (see `serve`); returns
/// what the client returned and the security of every request seen.
fn serve_while<T: Send + 'static>(
    engines: &mut [&mut Engine],
    client: impl FnOnce() -> T + Send + 'static,
) -> (T, Vec<Secure>) {
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let done = done.clone();
        std::thread::spawn(move || {
            let got = client();
            done.store(true, Ordering::SeqCst);
            got
        })
    };
    let seen = serve(engines, &done);
    (client.join().unwrap(), seen)
}

/// Serves `engines` (answering each request with its URL, `/short` with
/// a body shorter than its Content-Length) until `done`;
/// returns the security of every request seen.
fn serve(engines: &mut [&mut Engine], done: &AtomicBool) -> Vec<Secure> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + BOUND;
    while !done.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the client did not finish");
        for engine in engines.iter_mut() {
            common::turn(engine, |engine, event, arena| {
                if let Event::Request {
                    conn, url, secure, ..
                } = event
                {
                    seen.push(secure);
                    if &arena[url.clone()] == b"/short" {
                        // Ten bytes promised, three sent: the response is cut short.
                        engine.start(conn, b"200 OK", &TEXT, Some(10)).unwrap();
                        engine.write(conn, b"abc").unwrap();
                        engine.end(conn).unwrap();
                    } else {
                        engine.respond(conn, b"200 OK", &TEXT, &arena[url]).unwrap();
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    seen
}

fn client_config(cert: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::in_memory_sessions(8);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn connect(config: &Arc<ClientConfig>, port: u16) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let session = ClientConnection::new(config.clone(), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(BOUND)).unwrap();
    StreamOwned::new(session, tcp)
}

/// Reads until the server closes; Ok only for a clean close (close_notify).
fn read_all(stream: &mut StreamOwned<ClientConnection, TcpStream>) -> std::io::Result<String> {
    let mut text = String::new();
    stream.read_to_string(&mut text).map(|_| text)
}

#[test]
fn requests_over_tls_keep_alive_then_close_with_close_notify() {
    let (cert, key) = certificate("keepalive");
    let (mut engine, port) = tls_engine(&settings(&cert, &key), &[]);
    let config = client_config(&cert);
    let ((text, alpn), seen) = serve_while(&mut [&mut engine], move || {
        let mut stream = connect(&config, port);
        stream
            .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let text = read_all(&mut stream);
        let alpn = stream.conn.alpn_protocol().map(|p| p.to_vec());
        (text, alpn)
    });
    let text = text.expect("a clean TLS close (close_notify), not a truncation");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("/two"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let over_tls = Secure {
        tls: true,
        client_cert: false,
    };
    assert_eq!(seen, vec![over_tls, over_tls]);
    assert_eq!(engine.connection_count(), 0);
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_saying_so() {
    let (cert, key) = certificate("plain");
    let (mut engine, port) = tls_engine(&settings(&cert, &key), &[]);
    let (text, _) = serve_while(&mut [&mut engine], move || {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(BOUND)).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = tcp.read_to_string(&mut text);
        text
    });
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"));
    assert!(text.ends_with("The plain HTTP request was sent to an HTTPS port: use https://"));
    assert_eq!(engine.rejected_counts(), &[(400, 1)]);
}

#[test]
fn a_session_from_one_engine_resumes_on_another_with_the_same_ticket_keys() {
    let (cert, key) = certificate("resume");
    let keys = vec![vec![7u8; TICKET_KEY_LEN]];
    let (mut first, first_port) = tls_engine(&settings(&cert, &key), &keys);
    let (mut second, second_port) = tls_engine(&settings(&cert, &key), &keys);
    let (mut stranger, stranger_port) =
        tls_engine(&settings(&cert, &key), &[vec![9u8; TICKET_KEY_LEN]]);
    let config = client_config(&cert);
    let (kinds, _) = serve_while(&mut [&mut first, &mut second, &mut stranger], move || {
        let mut kinds = Vec::new();
        for port in [first_port, second_port, stranger_port] {
            let mut stream = connect(&config, port);
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            read_all(&mut stream).unwrap();
            kinds.push(stream.conn.handshake_kind());
        }
        kinds
    });
    assert_eq!(
        kinds,
        vec![
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            // Another key cannot open the ticket: a full handshake, not a failure.
            Some(HandshakeKind::Full),
        ]
    );
}

#[test]
fn a_request_followed_at_once_by_close_notify_is_still_answered() {
    let (cert, key) = certificate("close-notify");
    let (mut engine, port) = tls_engine(&settings(&cert, &key), &[]);
    let config = client_config(&cert);
    let (text, _) = serve_while(&mut [&mut engine], move || {
        let mut stream = connect(&config, port);
        stream
            .write_all(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        // The request and the client's close_notify leave together.
        stream.conn.send_close_notify();
        stream.flush().unwrap();
        read_all(&mut stream)
    });
    let text = text.expect("a clean close");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("/last"), "{text}");
}

#[test]
fn a_response_cut_short_closes_without_close_notify() {
    let (cert, key) = certificate("cut-short");
    let (mut engine, port) = tls_engine(&settings(&cert, &key), &[]);
    let config = client_config(&cert);
    let ((text, end), _) = serve_while(&mut [&mut engine], move || {
        let mut stream = connect(&config, port);
        stream
            .write_all(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = Vec::new();
        let end = stream.read_to_end(&mut text);
        (String::from_utf8_lossy(&text).into_owned(), end)
    });
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
    // A truncation, which the client can tell from a complete response.
    let err = end.expect_err("no close_notify after a cut-short response");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}
