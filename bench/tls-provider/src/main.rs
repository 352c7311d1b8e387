// Instruction counts (run under callgrind) of rustls handshakes and bulk
// transfer with the ring and aws-lc-rs providers: client and server in
// one process, bytes moved through memory, TLS 1.3 AES-128-GCM, an ECDSA
// P-256 certificate, each provider's default key exchange. Usage (see
// bench/README.md, "TLS provider"):
//   rwsgi-tls-provider-bench ring|aws full|resumed|bulk N
// full: N full handshakes; resumed: one full, then N resumed; bulk: N
// times 64 KiB from server to client on one connection. Subtract the run
// with N = 0 (start-up, key generation) and divide by N.
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

fn pump(c: &mut ClientConnection, s: &mut ServerConnection) {
    let mut buf = Vec::new();
    loop {
        let mut moved = false;
        while c.wants_write() {
            buf.clear();
            c.write_tls(&mut buf).unwrap();
            let mut r = &buf[..];
            while !r.is_empty() {
                s.read_tls(&mut r).unwrap();
                s.process_new_packets().unwrap();
            }
            moved = true;
        }
        while s.wants_write() {
            buf.clear();
            s.write_tls(&mut buf).unwrap();
            let mut r = &buf[..];
            while !r.is_empty() {
                c.read_tls(&mut r).unwrap();
                c.process_new_packets().unwrap();
            }
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let provider_name = args[1].as_str();
    let what = args[2].as_str();
    let n: usize = args[3].parse().unwrap();
    let provider: CryptoProvider = match provider_name {
        "ring" => rustls::crypto::ring::default_provider(),
        _ => rustls::crypto::aws_lc_rs::default_provider(),
    };
    let mut provider = provider;
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()) == "TLS13_AES_128_GCM_SHA256");
    let provider = Arc::new(provider);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let mut roots = RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    server.ticketer = match provider_name {
        "ring" => rustls::crypto::ring::Ticketer::new().unwrap(),
        _ => rustls::crypto::aws_lc_rs::Ticketer::new().unwrap(),
    };
    let server = Arc::new(server);
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = if what == "full" {
        Resumption::disabled()
    } else {
        Resumption::in_memory_sessions(256)
    };
    let client = Arc::new(client);
    let name = ServerName::try_from("localhost").unwrap();
    let connect = || {
        let mut c = ClientConnection::new(client.clone(), name.clone()).unwrap();
        let mut s = ServerConnection::new(server.clone()).unwrap();
        pump(&mut c, &mut s);
        (c, s)
    };
    match what {
        "full" | "resumed" => {
            if what == "resumed" {
                let (mut c, mut s) = connect();
                s.writer().write_all(b"x").unwrap();
                pump(&mut c, &mut s);
            }
            for _ in 0..n {
                let (c, _s) = connect();
                if what == "resumed" {
                    assert!(matches!(
                        c.handshake_kind(),
                        Some(rustls::HandshakeKind::Resumed)
                    ));
                }
            }
        }
        "bulk" => {
            let (mut c, mut s) = connect();
            let data = vec![7u8; 64 * 1024];
            let mut sink = vec![0u8; 64 * 1024];
            for _ in 0..n {
                s.writer().write_all(&data).unwrap();
                pump(&mut c, &mut s);
                c.reader().read_exact(&mut sink).unwrap();
            }
        }
        _ => panic!("what"),
    }
}
