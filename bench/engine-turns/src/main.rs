// N GETs, pipelined 16 deep, over a socketpair through the engine,
// answered from Rust: run under callgrind, before and after a change, for
// instructions per request (subtract a run with a small N). Usage:
//   rwsgi-engine-turns N
// build.rs exports llhttp (compiled in by rwsgi-test-llhttp) as Node would.
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use rwsgi_core::{Engine, Event, HeaderList, Limits};
use rwsgi_test_llhttp as _;

const TEXT: HeaderList<'static> = HeaderList {
    joined: b"Content-Type\0text/plain\0",
    fields: 1,
};

fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let mut engine = Engine::new(&[], Limits::default()).unwrap();
    let (server, mut client) = UnixStream::pair().unwrap();
    server.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    engine.adopt(server.into()).unwrap();
    let request = b"GET /hello HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\n\r\n";
    let (mut sent, mut answered, mut got) = (0usize, 0usize, 0usize);
    // Every response is the same length: the head (fixed-width Date) and the body.
    let (mut bytes, mut first) = (0usize, Vec::new());
    let mut response_len = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while got < n {
        while sent < n && sent < answered + 16 {
            client.write_all(request).unwrap();
            sent += 1;
        }
        engine.begin_turn();
        engine.poll();
        let events = std::mem::take(&mut engine.events);
        for event in events {
            if let Event::Request { conn, .. } = event {
                engine
                    .respond(conn, b"200 OK", &TEXT, b"Hello, World!")
                    .unwrap();
                answered += 1;
            }
        }
        engine.arena.clear();
        engine.end_turn();
        loop {
            match client.read(&mut buf) {
                Ok(k) => {
                    bytes += k;
                    if response_len == 0 {
                        first.extend_from_slice(&buf[..k]);
                        if let Some(end) = first.windows(4).position(|w| w == b"\r\n\r\n") {
                            response_len = end + 4 + 13;
                        }
                    }
                    if response_len > 0 {
                        got = bytes / response_len;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
}
