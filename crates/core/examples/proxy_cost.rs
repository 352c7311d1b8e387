//! What trusting a proxy costs the engine per request, for
//! `valgrind --tool=callgrind` (instruction counts do not care how loaded
//! the machine is). Serves `count` keep-alive requests (pipelined 16 at a
//! time, answered from Rust) over a socketpair, whose peer shows as
//! 127.0.0.1, as a proxy's would:
//!
//!   cargo build --release -p rwsgi-core --example proxy_cost
//!   valgrind --tool=callgrind target/release/examples/proxy_cost VARIANT COUNT
//!
//! VARIANT: `untrusted` (no forwarding headers read, the request has two),
//! `untrusted-plain` (none read, none sent), `trusted` (read; the request
//! has none), `forwarded` (read; X-Forwarded-For with two hops and
//! X-Forwarded-Proto), `proxy` (`forwarded` after a PROXY v1 header).
//! Instructions per request = the difference of two counts over the
//! difference of their request counts (start-up cancels out).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use rwsgi_core::proxy_protocol::Mode;
use rwsgi_core::trust::{AllowList, Trust};
use rwsgi_core::{Engine, Event, HeaderList, Limits};
use rwsgi_test_llhttp as _;

const TEXT: HeaderList<'static> = HeaderList {
    joined: b"Content-Type\0text/plain\0",
    fields: 1,
};
const PLAIN: &str =
    "GET /hello HTTP/1.1\r\nHost: app.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";
const FORWARDED: &str = "GET /hello HTTP/1.1\r\nHost: app.example\r\nUser-Agent: bench\r\nAccept: */*\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.5\r\nX-Forwarded-Proto: https\r\n\r\n";
const BATCH: usize = 16;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant = args.get(1).map_or("trusted", String::as_str);
    let count: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let list = |text: &str| AllowList::parse(text).expect("a valid list");
    let (trust, request) = match variant {
        "untrusted" => (Trust::default(), FORWARDED),
        "untrusted-plain" => (Trust::default(), PLAIN),
        "trusted" => (
            Trust {
                forwarded: list("127.0.0.1,10.0.0.0/8"),
                ..Trust::default()
            },
            PLAIN,
        ),
        "forwarded" => (
            Trust {
                forwarded: list("127.0.0.1,10.0.0.0/8"),
                ..Trust::default()
            },
            FORWARDED,
        ),
        "proxy" => (
            Trust {
                forwarded: list("10.0.0.0/8"),
                proxy_protocol: Mode::V1,
                proxy_allow: list("127.0.0.1"),
            },
            FORWARDED,
        ),
        other => panic!("unknown variant {other}"),
    };
    let mut engine = Engine::new(&[], Limits::default()).expect("llhttp is linked in");
    engine.set_trust(trust);
    let (server, mut client) = UnixStream::pair().expect("a socketpair");
    server.set_nonblocking(true).expect("non-blocking");
    engine.adopt(server.into()).expect("adopted");
    if variant == "proxy" {
        client
            .write_all(b"PROXY TCP4 10.0.0.7 10.0.0.1 4711 443\r\n")
            .expect("written");
    }
    let batch = request.repeat(BATCH);
    let mut served = 0;
    let mut sink = vec![0u8; 64 * 1024];
    while served < count {
        client.write_all(batch.as_bytes()).expect("written");
        let mut answered = 0;
        while answered < BATCH {
            engine.begin_turn();
            engine.poll();
            for event in std::mem::take(&mut engine.events) {
                if let Event::Request { conn, .. } = event {
                    engine
                        .respond(conn, b"200 OK", &TEXT, b"Hello, World!")
                        .expect("answered");
                    answered += 1;
                }
            }
            engine.arena.clear();
            engine.end_turn();
        }
        served += BATCH;
        let mut got = 0;
        while got < BATCH {
            let n = client.read(&mut sink).expect("read");
            got += sink[..n].windows(8).filter(|w| w == b"HTTP/1.1").count();
        }
    }
    println!("{variant}: {served} requests");
}
