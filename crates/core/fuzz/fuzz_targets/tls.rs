//! A connection's TLS layer (tls_conn.rs) fed hostile bytes from a
//! socketpair at random split points: a ClientHello or its corruption,
//! garbage, plain HTTP, records after a handshake that never happened.
//! Nothing may panic or grow without bound; whatever it reports, the
//! layer must stay usable (flush) or say it failed.
#![no_main]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rwsgi_core::tls::{self, CertReqs, TicketKeys, TlsSettings, TICKET_KEY_LEN};
use rwsgi_core::tls_conn::{TlsLayer, TlsRead};

/// A server config with a certificate openssl makes once per fuzzing run.
fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("rwsgi-fuzz-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            let made = Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
                .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .status()
                .expect("openssl is installed");
            assert!(made.success());
            let settings = TlsSettings {
                certfile: cert.to_string_lossy().into_owned(),
                keyfile: key.to_string_lossy().into_owned(),
                ca_certs: None,
                cert_reqs: CertReqs::None,
                min_version: "1.2".into(),
                ciphers: vec![],
                alpn: vec!["http/1.1".into()],
            };
            let tickets = Arc::new(TicketKeys::default());
            tickets.set(&[vec![1; TICKET_KEY_LEN]]).expect("a key of the right size");
            tls::server_config(&settings, tickets).expect("the fuzz certificate loads")
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let (control, input) = data.split_at(data.len().min(4));
    if control.is_empty() {
        return;
    }
    let Some(mut layer) = TlsLayer::new(config()) else {
        return;
    };
    let Ok((server, mut client)) = UnixStream::pair() else {
        return;
    };
    if server.set_nonblocking(true).is_err() || client.set_nonblocking(true).is_err() {
        return;
    }
    let fd = server.as_raw_fd();
    let mut plain = Vec::new();
    let (mut pos, mut step) = (0, 0);
    while pos < input.len() && step < 128 {
        let c = control[step % control.len()];
        let end = (pos + 1 + usize::from(c) * 7).min(input.len());
        let _ = client.write(&input[pos..end]);
        pos = end;
        step += 1;
        match layer.receive(fd, &mut plain) {
            TlsRead::Failed | TlsRead::End | TlsRead::PlainHttp => return,
            TlsRead::Progress | TlsRead::Nothing => {}
        }
        let mut at = 0;
        if layer.flush(fd, b"HTTP/1.1 200 OK\r\n\r\n", &mut at, c & 1 == 1).is_err() {
            return;
        }
        // Whatever was decrypted came from a peer that finished a handshake.
        assert!(plain.is_empty() || !layer.is_handshaking());
    }
});
