//! What the access log costs per request, without Node and whatever else
//! the machine runs: `n` hello-world requests (keep-alive, 16 in flight on
//! a socketpair) through the engine, with the log off, in gunicorn's
//! default format, or as JSON (written to FILE, default /dev/null, by the
//! writer thread).
//!
//!   cargo build --release -p rwsgi-core --example access_log_cost
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/access_log_cost off|text|json N [FILE]
//!
//! Instructions per request = (Ir at N=40000 - Ir at N=20000) / 20000, for
//! each mode (see bench/README.md). Also prints CPU ns per request.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use rwsgi_core::access_log::format::Format;
use rwsgi_core::access_log::sink::Sink;
use rwsgi_core::access_log::AccessLog;
use rwsgi_core::{Engine, Event, HeaderList, Limits};
use rwsgi_test_llhttp as _;

const DEFAULT_FORMAT: &str = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;
const REQUEST: &[u8] =
    b"GET /hello?x=1 HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n";
const HEADERS: HeaderList<'static> = HeaderList {
    joined: b"Content-Type\0text/plain\0",
    fields: 1,
};
const IN_FLIGHT: usize = 16;

fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: usage is valid for writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// One engine turn: every request answered with a hello world.
fn turn(engine: &mut Engine) -> usize {
    engine.begin_turn();
    engine.poll();
    let events = std::mem::take(&mut engine.events);
    let mut answered = 0;
    for event in &events {
        if let Event::Request { conn, .. } = event {
            if engine
                .respond(*conn, b"200 OK", &HEADERS, b"Hello, World!")
                .is_ok()
            {
                answered += 1;
            }
        }
    }
    engine.arena.clear();
    engine.end_turn();
    answered
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("off", String::as_str);
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut engine = Engine::new(&[], Limits::default()).expect("llhttp is linked in");
    let format = match mode {
        "off" => None,
        "json" => Some(Format::json()),
        _ => Some(Format::compile(DEFAULT_FORMAT).expect("gunicorn's default format")),
    };
    if let Some(format) = format {
        let path = args.get(3).map_or("/dev/null", String::as_str);
        let sink = Sink::open(path).expect("the log file");
        sink.start_writer().expect("writer thread");
        engine.set_access_log(Some(AccessLog::new(format, sink)));
    }
    let (server, mut client) = UnixStream::pair().expect("socketpair");
    server.set_nonblocking(true).expect("nonblocking");
    engine.adopt(server.into()).expect("adopt");
    let batch: Vec<u8> = REQUEST.repeat(IN_FLIGHT);
    let mut buf = vec![0u8; 1 << 20];
    let start = cpu_seconds();
    let mut done = 0;
    while done < n {
        client.write_all(&batch).expect("write requests");
        let mut answered = 0;
        while answered < IN_FLIGHT {
            answered += turn(&mut engine);
        }
        // Drain the responses (their size does not matter here).
        client.set_nonblocking(true).expect("nonblocking");
        loop {
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        client.set_nonblocking(false).expect("blocking");
        done += IN_FLIGHT;
    }
    if let Some(sink) = engine.access_log_sink() {
        sink.flush();
    }
    let ns = (cpu_seconds() - start) * 1e9 / done as f64;
    println!("{mode}: {done} requests, {ns:.0} ns CPU per request");
}
