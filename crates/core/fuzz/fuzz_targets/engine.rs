//! The whole connection state machine over a socketpair: random request
//! bytes at random split points, random app responses (whole, streamed,
//! short, invalid, aborted, never sent, 100-continue). Nothing may panic,
//! hang or touch memory it should not; event ranges must index the arena.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use rwsgi_test_llhttp as _;
use rwsgi_core::proxy_protocol::Mode;
use rwsgi_core::trust::{AllowList, Trust};
use rwsgi_core::{Engine, Event, HeaderList, Limits};

const HEADERS: HeaderList<'static> = HeaderList {
    joined: b"Content-Type\0text/plain\0",
    fields: 1,
};
const BAD_HEADERS: HeaderList<'static> = HeaderList {
    joined: b"X\0a\r\nb\0",
    fields: 1,
};

fn app(engine: &mut Engine, choice: u8) {
    let events = std::mem::take(&mut engine.events);
    let arena_len = engine.arena.len();
    for event in &events {
        match event {
            Event::Request { conn, url, headers, peer_ip, client_ip, .. } => {
                assert!(url.end <= arena_len && headers.end <= arena_len && peer_ip.end <= arena_len);
                assert!(client_ip.end <= arena_len);
                let conn = *conn;
                let _ = match choice % 8 {
                    0 => engine.respond(conn, b"200 OK", &HEADERS, b"ok"),
                    1 => engine
                        .start(conn, b"200 OK", &HEADERS, None)
                        .and_then(|_| engine.write(conn, b"chunk").map(|_| ()))
                        .and_then(|_| engine.end(conn)),
                    2 => engine
                        .start(conn, b"200 OK", &HEADERS, Some(5))
                        .and_then(|_| engine.write(conn, b"abc").map(|_| ()))
                        .and_then(|_| engine.end(conn)),
                    3 => engine.respond(conn, b"200 OK", &BAD_HEADERS, b"x"),
                    4 => engine.abort(conn),
                    5 => Ok(()),
                    6 => engine.send_continue(conn),
                    _ => engine.respond(conn, b"204 No Content", &HEADERS, b"dropped"),
                };
            }
            Event::Body { data, .. } => assert!(data.end <= arena_len),
            _ => {}
        }
    }
    engine.arena.clear();
}

fn turn(engine: &mut Engine, choice: u8, client: Option<&mut UnixStream>) {
    engine.begin_turn();
    engine.poll();
    app(engine, choice);
    engine.end_turn();
    let mut sink = [0u8; 16 * 1024];
    if let Some(client) = client {
        while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
    }
}

fuzz_target!(|data: &[u8]| {
    let (control, input) = data.split_at(data.len().min(8));
    if control.is_empty() {
        return;
    }
    let limits = Limits {
        request_line: 256,
        header_fields: 16,
        field_size: 256,
        max_body: 4096,
        pipeline_depth: 4,
        ..Limits::default()
    };
    // A failure here is a broken harness (llhttp not linked), not a finding.
    let mut engine = Engine::new(&[], limits).expect("llhttp is compiled into the fuzz binary");
    // The first control byte also picks the PROXY protocol mode; every
    // peer's forwarding headers are read (the socketpair shows as 127.0.0.1).
    let proxy_protocol = [Mode::Off, Mode::V1, Mode::V2, Mode::Auto][usize::from(control[0] % 4)];
    engine.set_trust(Trust {
        forwarded: AllowList::parse("*").expect("a valid list"),
        proxy_protocol,
        proxy_allow: AllowList::parse("127.0.0.1").expect("a valid list"),
    });
    let Ok((server, mut client)) = UnixStream::pair() else {
        return;
    };
    if server.set_nonblocking(true).is_err() || client.set_nonblocking(true).is_err() {
        return;
    }
    if engine.adopt(server.into()).is_err() {
        return;
    }
    let mut pos = 0;
    let mut step = 0;
    while pos < input.len() && step < 256 {
        let c = control[step % control.len()];
        let end = (pos + 1 + usize::from(c) % 61).min(input.len());
        let _ = client.write(&input[pos..end]);
        pos = end;
        turn(&mut engine, c.rotate_left(step as u32 % 8), Some(&mut client));
        step += 1;
    }
    drop(client);
    turn(&mut engine, 0, None);
});
