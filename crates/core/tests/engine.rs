//! The engine's connection state machine without Node: llhttp is compiled
//! in (rwsgi-test-llhttp), a connection is a socketpair (or a loopback TCP
//! connection for the accept limit), and the "app" answers from Rust.
//! Each wait is for a condition, bounded in time.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rwsgi_core::{handoff, Engine, Event, Limits, Token};
use rwsgi_test_llhttp as _;

mod common;
use common::{BOUND, TEXT};

/// What the test's app does with each request: answer it with its URL, or
/// hold it (the test answers later).
#[derive(Clone, Copy, PartialEq)]
enum App {
    Echo,
    Hold,
}

struct Harness {
    engine: Engine,
    app: App,
    /// Requests delivered so far: (connection, URL).
    requests: Vec<(Token, String)>,
    closed: Vec<Token>,
    rejected: Vec<(u16, String)>,
}

impl Harness {
    fn new(limits: Limits, listeners: &[i32]) -> Harness {
        let engine = Engine::new(listeners, limits).expect("llhttp is linked into the test");
        Harness {
            engine,
            app: App::Echo,
            requests: Vec::new(),
            closed: Vec::new(),
            rejected: Vec::new(),
        }
    }

    /// A client connected over a socketpair.
    fn connect(&mut self) -> UnixStream {
        common::connect(&mut self.engine)
    }

    /// One host turn: poll, deliver the events to the app, flush.
    fn turn(&mut self) {
        common::turn(&mut self.engine, |engine, event, arena| match event {
            Event::Request { conn, url, .. } => {
                let url = String::from_utf8_lossy(&arena[url]).into_owned();
                if self.app == App::Echo {
                    engine
                        .respond(conn, b"200 OK", &TEXT, url.as_bytes())
                        .unwrap();
                }
                self.requests.push((conn, url));
            }
            Event::Closed { conn } => self.closed.push(conn),
            Event::Rejected { status, reason, .. } => self.rejected.push((status, reason)),
            _ => {}
        });
    }

    /// Runs turns until `done` holds; panics after `BOUND`.
    fn until(&mut self, what: &str, mut done: impl FnMut(&mut Harness) -> bool) {
        let deadline = Instant::now() + BOUND;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.turn();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs turns, collecting what the client receives, until it holds
    /// `count` responses (or the connection closes, if `until_eof`).
    fn read(
        &mut self,
        client: &mut impl Read,
        what: &str,
        until: impl Fn(&str, bool) -> bool,
    ) -> String {
        let mut got = Vec::new();
        let mut eof = false;
        self.until(what, |_| {
            let mut buf = [0u8; 4096];
            loop {
                match client.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            until(&String::from_utf8_lossy(&got), eof)
        });
        String::from_utf8_lossy(&got).into_owned()
    }

    fn responses(&mut self, client: &mut impl Read, count: usize) -> String {
        self.read(client, "responses", |text, _| {
            text.matches("HTTP/1.1 ").count() >= count
        })
    }

    fn until_closed(&mut self, client: &mut impl Read) -> String {
        self.read(client, "the close", |_, eof| eof)
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

/// The bodies of the responses in `text`, in order.
fn bodies(text: &str) -> Vec<&str> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split_once("\r\n\r\n").map_or("", |(_, body)| body))
        .collect()
}

#[test]
fn keep_alive_serves_one_request_after_another() {
    let mut h = Harness::new(Limits::default(), &[]);
    let mut client = h.connect();
    client.write_all(get("/one").as_bytes()).unwrap();
    let first = h.responses(&mut client, 1);
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(!first.contains("Connection: close"), "{first}");
    client.write_all(get("/two").as_bytes()).unwrap();
    let second = h.responses(&mut client, 1);
    assert_eq!(bodies(&second), ["/two"]);
    assert_eq!(h.engine.connection_count(), 1);
}

#[test]
fn metrics_count_responses_by_method_and_status_and_the_bytes_both_ways() {
    let mut h = Harness::new(Limits::default(), &[]);
    let mut client = h.connect();
    client.write_all(get("/one").as_bytes()).unwrap();
    h.responses(&mut client, 1);
    assert!(h.engine.metrics().is_none(), "off until enabled");
    h.engine.enable_metrics();
    let post = "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let sent = format!("{}{post}", get("/three"));
    client.write_all(sent.as_bytes()).unwrap();
    let received = h.responses(&mut client, 2);
    let m = h.engine.metrics().expect("enabled").snapshot();
    // Row per method (GET, HEAD, POST, ...), column per class 1xx..5xx.
    assert_eq!(m.requests[1], 1.0);
    assert_eq!(m.requests[2 * 5 + 1], 1.0);
    assert_eq!(m.requests.iter().sum::<f64>(), 2.0);
    assert_eq!(m.durations.iter().sum::<f64>(), 2.0);
    assert_eq!(m.received, sent.len() as f64);
    assert_eq!(m.sent, received.len() as f64);
}

#[test]
fn a_client_sending_every_turn_does_not_keep_another_waiting() {
    // With one connection busy the engine reads it without epoll_wait;
    // another connection's request must still be served within a few turns.
    let mut h = Harness::new(Limits::default(), &[]);
    let mut busy = h.connect();
    busy.write_all(get("/busy0").as_bytes()).unwrap();
    h.turn();
    let mut other = h.connect();
    other.write_all(get("/other").as_bytes()).unwrap();
    let mut turns = 0;
    while !h.requests.iter().any(|(_, url)| url == "/other") {
        turns += 1;
        assert!(turns <= 12, "the other connection waited {turns} turns");
        busy.write_all(get(&format!("/busy{turns}")).as_bytes())
            .unwrap();
        h.turn();
    }
    assert_eq!(bodies(&h.responses(&mut other, 1)), ["/other"]);
    let served = h
        .requests
        .iter()
        .filter(|(_, url)| url.starts_with("/busy"))
        .count();
    assert!(
        served >= turns,
        "the busy client was served every turn ({served} of {})",
        turns + 1
    );
}

#[test]
fn pipelined_responses_keep_request_order_and_depth() {
    let limits = Limits {
        pipeline_depth: 2,
        ..Limits::default()
    };
    let mut h = Harness::new(limits, &[]);
    h.app = App::Hold;
    let mut client = h.connect();
    let all: String = ["/a", "/b", "/c", "/d"].map(get).concat();
    client.write_all(all.as_bytes()).unwrap();
    h.until("two requests", |h| h.requests.len() == 2);
    // The depth is reached: nothing more is parsed until a response is out.
    for _ in 0..20 {
        h.turn();
    }
    assert_eq!(h.requests.len(), 2);
    let mut answered = 0;
    h.until("all four answered", |h| {
        while answered < h.requests.len() {
            let (conn, url) = h.requests[answered].clone();
            h.engine
                .respond(conn, b"200 OK", &TEXT, url.as_bytes())
                .unwrap();
            answered += 1;
        }
        answered == 4
    });
    let text = h.responses(&mut client, 4);
    assert_eq!(bodies(&text), ["/a", "/b", "/c", "/d"]);
}

#[test]
fn connection_close_ends_the_connection_and_runs_nothing_after_it() {
    let mut h = Harness::new(Limits::default(), &[]);
    let mut client = h.connect();
    let closing = "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    client
        .write_all(format!("{closing}{}", get("/never")).as_bytes())
        .unwrap();
    let text = h.until_closed(&mut client);
    assert_eq!(bodies(&text), ["/last"]);
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(h.requests.len(), 1);
    h.until("the slot to free", |h| h.engine.connection_count() == 0);
}

/// Sends `request` and expects exactly one canned `status` and a close.
fn refused(limits: Limits, request: &[u8], status: &str) -> Harness {
    let mut h = Harness::new(limits, &[]);
    h.engine.trace_rejections(true);
    let mut client = h.connect();
    client.write_all(request).unwrap();
    let text = h.until_closed(&mut client);
    assert!(
        text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
        "{text}"
    );
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    h
}

#[test]
fn each_size_limit_has_its_status() {
    let small = Limits {
        request_line: 64,
        header_fields: 3,
        field_size: 64,
        max_body: 8,
        ..Limits::default()
    };
    let long_url = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100));
    refused(small.clone(), long_url.as_bytes(), "414 URI Too Long");
    let many = "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    refused(
        small.clone(),
        many.as_bytes(),
        "431 Request Header Fields Too Large",
    );
    let wide = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nA: {}\r\n\r\n",
        "v".repeat(100)
    );
    refused(
        small.clone(),
        wide.as_bytes(),
        "431 Request Header Fields Too Large",
    );
    let big = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n123456789";
    refused(small, big.as_bytes(), "413 Content Too Large");
}

#[test]
fn a_rejection_is_counted_and_traced_with_the_parsers_reason() {
    let bad = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    let h = refused(Limits::default(), bad, "400 Bad Request");
    assert_eq!(h.engine.rejected_counts(), [(400, 1)]);
    assert_eq!(
        h.rejected,
        [(
            400,
            "HTTP/1.1 request needs exactly one Host header".to_string()
        )]
    );
    let untraced = {
        let mut h = Harness::new(Limits::default(), &[]);
        let mut client = h.connect();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        h.until_closed(&mut client);
        h
    };
    assert_eq!(untraced.engine.rejected_counts(), [(400, 1)]);
    assert!(untraced.rejected.is_empty());
}

fn one_second() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        keep_alive: Duration::from_secs(1),
        ..Limits::default()
    }
}

#[test]
fn keep_alive_counts_from_the_end_of_a_slow_response() {
    // A handler slower than the keep-alive timeout, answering inside one long
    // turn: the connection is idle from its response, not from the turn's start.
    let keep_alive = Duration::from_secs(2);
    let mut h = Harness::new(
        Limits {
            keep_alive,
            ..Limits::default()
        },
        &[],
    );
    h.app = App::Hold;
    let mut client = h.connect();
    client.write_all(get("/slow").as_bytes()).unwrap();
    h.until("the request", |h| !h.requests.is_empty());
    h.engine.begin_turn();
    std::thread::sleep(keep_alive + Duration::from_millis(500));
    let conn = h.requests[0].0;
    h.engine.respond(conn, b"200 OK", &TEXT, b"slow").unwrap();
    h.engine.end_turn();
    // A timeout tick comes within every second: run turns past one.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        h.turn();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        h.engine.connection_count(),
        1,
        "still open for the client's next request"
    );
    assert_eq!(bodies(&h.responses(&mut client, 1)), ["slow"]);
}

#[test]
fn a_slow_request_head_gets_408() {
    let h = refused(one_second(), b"GET / HTTP/1.1\r\nHo", "408 Request Timeout");
    assert_eq!(h.engine.rejected_counts(), [(408, 1)]);
}

#[test]
fn a_stalled_body_gets_408_and_the_app_hears_of_the_close() {
    let mut h = Harness::new(one_second(), &[]);
    h.app = App::Hold;
    let mut client = h.connect();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let text = h.until_closed(&mut client);
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert_eq!(h.requests.len(), 1);
    assert_eq!(h.closed, [h.requests[0].0]);
}

#[test]
fn an_idle_keep_alive_connection_closes_after_the_timeout() {
    let mut h = Harness::new(one_second(), &[]);
    let mut client = h.connect();
    client.write_all(get("/").as_bytes()).unwrap();
    h.responses(&mut client, 1);
    let idle = Instant::now();
    let rest = h.until_closed(&mut client);
    assert!(rest.is_empty(), "{rest}");
    assert!(idle.elapsed() >= Duration::from_millis(900));
    assert_eq!(h.engine.connection_count(), 0);
}

#[test]
fn draining_closes_after_one_more_response() {
    let mut h = Harness::new(Limits::default(), &[]);
    let mut client = h.connect();
    client.write_all(get("/before").as_bytes()).unwrap();
    let before = h.responses(&mut client, 1);
    assert!(!before.contains("Connection: close"), "{before}");
    h.engine.drain();
    client
        .write_all(format!("{}{}", get("/last"), get("/never")).as_bytes())
        .unwrap();
    let last = h.until_closed(&mut client);
    assert_eq!(bodies(&last), ["/last"]);
    assert!(last.contains("Connection: close\r\n"), "{last}");
    assert_eq!(h.requests.len(), 2);
}

#[test]
fn the_connection_cap_pauses_accepting_until_one_closes() {
    let (fds, addr) =
        rwsgi_core::socket::bind_group("127.0.0.1:0".parse().unwrap(), 1, 16).unwrap();
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let mut h = Harness::new(limits, &[fds[0].as_raw_fd()]);
    let mut first = TcpStream::connect(addr).unwrap();
    first.set_nonblocking(true).unwrap();
    first.write_all(get("/first").as_bytes()).unwrap();
    h.responses(&mut first, 1);
    let mut second = TcpStream::connect(addr).unwrap();
    second.set_nonblocking(true).unwrap();
    second.write_all(get("/second").as_bytes()).unwrap();
    for _ in 0..20 {
        h.turn();
    }
    assert_eq!(h.engine.connection_count(), 1);
    assert_eq!(h.requests.len(), 1);
    drop(first);
    let text = h.responses(&mut second, 1);
    assert_eq!(bodies(&text), ["/second"]);
    assert_eq!(h.engine.accepted_count(), 2);
}

/// Runs the calling thread on `cpu` only: on loopback, the packets it
/// sends arrive on that CPU (what SO_INCOMING_CPU reports).
fn run_on(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// A handoff socket name of this test process.
fn handoff_name(tag: &str) -> String {
    format!("rwsgi-test-{}-{tag}", std::process::id())
}

/// A loopback TCP client whose server side `engine` serves (the handoff
/// takes TCP connections only).
fn tcp_client(engine: &mut Engine) -> TcpStream {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_nonblocking(true).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    server_side.set_nonblocking(true).unwrap();
    engine.adopt(server_side.into()).unwrap();
    client
}

/// Two engines handing connections to each other: a serves CPU 0, b CPU 1.
fn handoff_pair(tag: &str) -> (Harness, Harness) {
    let [name_a, name_b] = [format!("{tag}a"), format!("{tag}b")].map(|n| handoff_name(&n));
    let mut a = Harness::new(Limits::default(), &[]);
    let mut b = Harness::new(Limits::default(), &[]);
    a.engine.enable_handoff(&name_a).unwrap();
    b.engine.enable_handoff(&name_b).unwrap();
    a.engine.set_cpu_owners(vec![None, Some(name_b)]);
    b.engine.set_cpu_owners(vec![Some(name_a), None]);
    (a, b)
}

/// Runs turns of both engines until `done` holds; panics after `BOUND`.
fn turn_both_until(
    a: &mut Harness,
    b: &mut Harness,
    what: &str,
    done: impl Fn(&Harness, &Harness) -> bool,
) {
    let deadline = Instant::now() + BOUND;
    while !done(a, b) {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        a.turn();
        b.turn();
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

#[test]
fn a_handoff_waits_for_the_client_to_stay_and_never_bounces_straight_back() {
    if !two_cpus() {
        return;
    }
    let (mut a, mut b) = handoff_pair("");

    run_on(1);
    let mut client = tcp_client(&mut a.engine);
    client.write_all(get("/one").as_bytes()).unwrap();
    a.responses(&mut client, 1);
    // Idle, its packets on CPU 1: it moves to b, but only after staying there.
    let idle_since = Instant::now();
    turn_both_until(&mut a, &mut b, "handed to b", |_, b| {
        b.engine.handoff_counts().1 > 0
    });
    let moved_at = Instant::now();
    assert!(moved_at - idle_since >= handoff::STAY_BEFORE_MOVE);
    assert_eq!(a.engine.handoff_counts(), (1, 0));
    client.write_all(get("/two").as_bytes()).unwrap();
    b.responses(&mut client, 1);
    assert_eq!(b.requests.last().map(|r| r.1.as_str()), Some("/two"));

    // The client moves at once to CPU 0 (a's): the connection goes back to
    // a only once it has settled at b.
    run_on(0);
    client.write_all(get("/three").as_bytes()).unwrap();
    b.responses(&mut client, 1);
    turn_both_until(&mut a, &mut b, "handed back to a", |a, _| {
        a.engine.handoff_counts().1 > 0
    });
    assert!(Instant::now() - moved_at >= handoff::SETTLE_AFTER_MOVE);
    assert_eq!(b.engine.handoff_counts(), (1, 1));
}

#[test]
fn a_busy_connection_keeps_its_time_astray_and_moves_once_idle() {
    if !two_cpus() {
        return;
    }
    let (mut a, mut b) = handoff_pair("busy-");

    // Its packets arrive on b's CPU while a holds its request: busy, it stays.
    run_on(1);
    a.app = App::Hold;
    let mut client = tcp_client(&mut a.engine);
    client.write_all(get("/held").as_bytes()).unwrap();
    a.until("the request", |h| !h.requests.is_empty());
    let conn = a.requests[0].0;
    let until = Instant::now() + handoff::STAY_BEFORE_MOVE * 2;
    while Instant::now() < until {
        a.turn();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        a.engine.handoff_counts(),
        (0, 0),
        "a busy connection never moves"
    );

    // Answered, it has been astray long enough: it moves at the next scan,
    // with no new wait (a connection under steady load is rarely idle).
    a.engine.respond(conn, b"200 OK", &TEXT, b"held").unwrap();
    a.turn();
    a.responses(&mut client, 1);
    let idle_since = Instant::now();
    turn_both_until(&mut a, &mut b, "handed to b", |_, b| {
        b.engine.handoff_counts().1 > 0
    });
    assert!(Instant::now() - idle_since < handoff::STAY_BEFORE_MOVE);
}

#[test]
fn a_client_bouncing_between_cpus_keeps_its_connection_where_it_is() {
    if !two_cpus() {
        return;
    }
    let name = handoff_name;
    let mut a = Harness::new(Limits::default(), &[]);
    a.engine.enable_handoff(&name("bounce-a")).unwrap();
    let _b = handoff::bind(&name("bounce-b")).unwrap();
    a.engine.set_cpu_owners(vec![None, Some(name("bounce-b"))]);
    let mut client = tcp_client(&mut a.engine);
    // A request every 150 ms from alternating CPUs, for 1.5 s.
    for i in 0..10 {
        run_on(i % 2);
        client.write_all(get("/bounce").as_bytes()).unwrap();
        a.responses(&mut client, 1);
        let until = Instant::now() + Duration::from_millis(150);
        while Instant::now() < until {
            a.turn();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(a.requests.len(), 10, "every request answered by a");
    assert_eq!(a.engine.handoff_counts(), (0, 0), "never moved");
}

#[test]
fn a_connection_that_sent_a_proxy_header_is_never_handed_off() {
    if !two_cpus() {
        return;
    }
    let name = handoff_name;
    let mut a = Harness::new(Limits::default(), &[]);
    a.engine.set_trust(rwsgi_core::trust::Trust {
        proxy_protocol: rwsgi_core::proxy_protocol::Mode::Auto,
        proxy_allow: rwsgi_core::trust::AllowList::parse("127.0.0.1").unwrap(),
        ..Default::default()
    });
    a.engine.enable_handoff(&name("proxied-a")).unwrap();
    let _b = handoff::bind(&name("proxied-b")).unwrap();
    a.engine.set_cpu_owners(vec![None, Some(name("proxied-b"))]);
    run_on(1);
    let mut client = tcp_client(&mut a.engine);
    client
        .write_all(
            format!(
                "PROXY TCP4 198.51.100.7 10.0.0.1 4711 443\r\n{}",
                get("/one")
            )
            .as_bytes(),
        )
        .unwrap();
    a.responses(&mut client, 1);
    // Idle on b's CPU three times as long as a move takes: it stays (the
    // receiver would know neither the addresses nor that the header is past).
    let until = Instant::now() + handoff::STAY_BEFORE_MOVE * 3;
    while Instant::now() < until {
        a.turn();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(a.engine.handoff_counts(), (0, 0), "never moved");
    client.write_all(get("/two").as_bytes()).unwrap();
    a.responses(&mut client, 1);
    assert_eq!(a.requests.len(), 2);
}
