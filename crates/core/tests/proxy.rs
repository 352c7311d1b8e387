//! The engine behind a proxy, without Node: a PROXY header (possibly in
//! pieces) before HTTP, and forwarding headers from a trusted peer. A
//! socketpair's peer shows as 127.0.0.1 (`Peer::local`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rwsgi_core::proxy_protocol::Mode;
use rwsgi_core::trust::{AllowList, Trust};
use rwsgi_core::{Engine, Event, Limits};
use rwsgi_test_llhttp as _;

mod common;
use common::{BOUND, TEXT};

/// What the app heard of one request.
#[derive(Debug, PartialEq)]
struct Seen {
    peer: String,
    peer_port: u16,
    local_port: u16,
    client: String,
    client_port: u16,
    https: bool,
}

struct Run {
    engine: Engine,
    seen: Vec<Seen>,
    refused: Vec<(u16, String)>,
}

impl Run {
    fn new(trust: Trust) -> Run {
        let mut engine =
            Engine::new(&[], Limits::default()).expect("llhttp is linked into the test");
        engine.set_trust(trust);
        engine.trace_rejections(true);
        Run {
            engine,
            seen: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn connect(&mut self) -> UnixStream {
        common::connect(&mut self.engine)
    }

    fn turn(&mut self) {
        common::turn(&mut self.engine, |engine, event, arena| {
            let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&arena[r]).into_owned();
            match event {
                Event::Request {
                    conn,
                    peer_ip,
                    peer_port,
                    local_port,
                    client_ip,
                    client_port,
                    https,
                    ..
                } => {
                    self.seen.push(Seen {
                        peer: text(peer_ip),
                        peer_port,
                        local_port,
                        client: text(client_ip),
                        client_port,
                        https,
                    });
                    engine.respond(conn, b"200 OK", &TEXT, b"ok").unwrap();
                }
                Event::Rejected { status, reason, .. } => self.refused.push((status, reason)),
                _ => {}
            }
        });
    }

    /// Sends `parts` one turn apart, then turns until `done` or the client's EOF.
    fn exchange(
        &mut self,
        client: &mut UnixStream,
        parts: &[&[u8]],
        done: impl Fn(&Run) -> bool,
    ) -> bool {
        for part in parts {
            client.write_all(part).unwrap();
            self.turn();
        }
        let deadline = Instant::now() + BOUND;
        let mut buf = [0u8; 4096];
        loop {
            self.turn();
            if done(self) {
                return false;
            }
            if let Ok(0) = client.read(&mut buf) {
                return true;
            }
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn proxy(mode: Mode, allow: &str) -> Trust {
    Trust {
        proxy_protocol: mode,
        proxy_allow: AllowList::parse(allow).unwrap(),
        ..Trust::default()
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn a_proxy_header_in_pieces_names_the_client() {
    let mut run = Run::new(proxy(Mode::Auto, "127.0.0.1"));
    let mut client = run.connect();
    let line = b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\n";
    run.exchange(
        &mut client,
        &[&line[..7], &line[7..30], &line[30..], GET],
        |r| !r.seen.is_empty(),
    );
    let seen = &run.seen[0];
    assert_eq!(
        (seen.peer.as_str(), seen.peer_port, seen.local_port),
        ("198.51.100.7", 4711, 443)
    );
    assert_eq!(
        (seen.client.as_str(), seen.client_port),
        ("198.51.100.7", 4711)
    );
}

#[test]
fn a_header_in_the_same_read_as_the_request_and_pipelined_requests_after_it() {
    let mut run = Run::new(proxy(Mode::V1, "127.0.0.1"));
    let mut client = run.connect();
    let mut bytes = b"PROXY TCP6 2001:db8::7 ::1 65535 80\r\n".to_vec();
    bytes.extend_from_slice(GET);
    bytes.extend_from_slice(GET);
    run.exchange(&mut client, &[&bytes], |r| r.seen.len() == 2);
    assert!(run
        .seen
        .iter()
        .all(|s| s.peer == "2001:db8::7" && s.peer_port == 65535));
}

#[test]
fn no_header_from_an_allowed_peer_and_a_header_from_another_close_unanswered() {
    for (trust, bytes, reason) in [
        (
            proxy(Mode::Auto, "127.0.0.1"),
            GET.to_vec(),
            "no PROXY header",
        ),
        (
            proxy(Mode::Auto, "10.0.0.0/8"),
            b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            "PROXY header from a peer not in --proxy-allow-from",
        ),
        (
            proxy(Mode::V2, "127.0.0.1"),
            b"PROXY UNKNOWN\r\n".to_vec(),
            "a PROXY v1 header, only v2 is taken",
        ),
    ] {
        let mut run = Run::new(trust);
        let mut client = run.connect();
        assert!(
            run.exchange(&mut client, &[&bytes], |_| false),
            "{reason}: closed"
        );
        assert!(run.seen.is_empty(), "{reason}: the app heard nothing");
        assert_eq!(run.refused, [(0, reason.to_string())]);
        assert_eq!(
            run.engine.rejected_counts(),
            &[],
            "not counted as HTTP rejections"
        );
    }
}

#[test]
fn a_peer_not_allowed_speaks_plain_http() {
    let mut run = Run::new(proxy(Mode::Auto, "10.0.0.0/8"));
    let mut client = run.connect();
    run.exchange(&mut client, &[b"G", &GET[1..]], |r| !r.seen.is_empty());
    assert_eq!(run.seen[0].peer, "127.0.0.1");
}

#[test]
fn forwarding_headers_count_from_a_trusted_peer_only() {
    let headers = b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n";
    for (trusted, client, https) in [
        ("127.0.0.0/8", "203.0.113.9", true),
        ("10.0.0.1", "127.0.0.1", false),
    ] {
        let mut run = Run::new(Trust {
            forwarded: AllowList::parse(trusted).unwrap(),
            ..Trust::default()
        });
        let mut c = run.connect();
        run.exchange(&mut c, &[headers], |r| !r.seen.is_empty());
        let seen = &run.seen[0];
        assert_eq!(
            (seen.peer.as_str(), seen.client.as_str(), seen.https),
            ("127.0.0.1", client, https),
            "{trusted}"
        );
    }
}

#[test]
fn forwarding_headers_are_believed_of_the_client_a_proxy_header_names() {
    // The PROXY client (198.51.100.7) is no trusted proxy: its X-Forwarded-For is not believed.
    let mut run = Run::new(Trust {
        forwarded: AllowList::parse("127.0.0.1").unwrap(),
        ..proxy(Mode::Auto, "127.0.0.1")
    });
    let mut client = run.connect();
    let bytes = b"PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\nGET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    run.exchange(&mut client, &[bytes], |r| !r.seen.is_empty());
    assert_eq!(run.seen[0].client, "198.51.100.7");
}
