use std::time::Instant;

use super::format::Format;
use super::sink::Sink;
use super::AccessLog;
use crate::event::Event;
use crate::response::HeaderList;
use crate::socket::Peer;

/// A log at a temporary file, and the lines written to it.
struct Scratch {
    log: AccessLog,
    path: std::path::PathBuf,
}

impl Scratch {
    fn new(name: &str, format: Format) -> Scratch {
        let path = std::env::temp_dir().join(format!("rwsgi-al-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sink = Sink::open(&path.to_string_lossy()).unwrap();
        Scratch {
            log: AccessLog::new(format, sink),
            path,
        }
    }

    /// Parses one request on connection `token` as the engine would report it.
    fn request(&mut self, token: u64, method: &'static str, url: &str, headers: &[(&str, &str)]) {
        let mut arena = Vec::new();
        let mut stash = |b: &[u8]| {
            let start = arena.len();
            arena.extend_from_slice(b);
            start..arena.len()
        };
        let url = stash(url.as_bytes());
        let joined: Vec<u8> = headers
            .iter()
            .flat_map(|(n, v)| [n.as_bytes(), b"\0", v.as_bytes(), b"\0"].concat())
            .collect();
        let headers = stash(&joined);
        let peer_ip = stash(b"127.0.0.1");
        let event = Event::Request {
            conn: token,
            method,
            url,
            headers,
            http_minor: 1,
            keep_alive: true,
            has_body: false,
            expect_continue: false,
            peer_ip: peer_ip.clone(),
            peer_port: 40000,
            local_port: 8000,
            client_ip: peer_ip,
            client_port: 40000,
            https: false,
            secure: Default::default(),
            same_headers: false,
        };
        self.log
            .capture(token, &[event], &arena, "127.0.0.1", None, Instant::now());
    }

    fn respond(&mut self, token: u64, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let joined: Vec<u8> = headers
            .iter()
            .flat_map(|(n, v)| [n.as_bytes(), b"\0", v.as_bytes(), b"\0"].concat())
            .collect();
        let list = HeaderList {
            joined: &joined,
            fields: headers.len(),
        };
        self.log.started(token, status, &list);
        self.log.wrote(token, body);
        self.log.ended(token);
    }

    fn lines(&self) -> Vec<String> {
        self.log.sink().flush();
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let _ = std::fs::remove_file(&self.path);
        text.lines().map(str::to_string).collect()
    }
}

#[test]
fn atoms_render_as_gunicorn_prints_them() {
    let format = Format::compile(r#"%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s %(B)s "%(f)s" "%(a)s" %(m)s %(U)s [%(q)s] %(H)s %(p)s %({x-one}i)s %({content-type}o)s %({missing}o)s %({http_x_one}e)s %({remote_port}e)s %({server_name}e)s:%({server_port}e)s %({raw_uri}e)s"#).unwrap();
    let mut s = Scratch::new("atoms", format);
    let headers = [
        ("Host", "example.com:8080"),
        ("Authorization", "Basic dXNlcjpwYXNz"),
        ("Referer", "http://r/\"x\""),
        ("User-Agent", "ua/1"),
        ("X-One", "a"),
        ("x-one", "b"),
    ];
    s.request(1, "GET", "/caf%C3%A9?x=1&y=2", &headers);
    s.respond(1, 404, &[("Content-Type", "text/plain")], b"nope");
    s.request(1, "POST", "/", &[]);
    s.respond(1, 200, &[], b"");
    let pid = std::process::id();
    assert_eq!(
        s.lines(),
        vec![
            format!("127.0.0.1 - user \"GET /caf%C3%A9?x=1&y=2 HTTP/1.1\" 404 4 4 \"http://r/\\\"x\\\"\" \"ua/1\" GET /cafÃ© [x=1&y=2] HTTP/1.1 <{pid}> b text/plain - a,b 40000 127.0.0.1:8000 /caf%C3%A9?x=1&y=2"),
            format!("127.0.0.1 - - \"POST / HTTP/1.1\" 200 0 0 \"-\" \"-\" POST / [] HTTP/1.1 <{pid}> - - - - 40000 127.0.0.1:8000 /"),
        ]
    );
}

#[test]
fn pipelined_responses_match_their_requests_and_raw_heads_are_read() {
    let mut s = Scratch::new(
        "raw",
        Format::compile("%(U)s %(s)s %(b)s %({x-a}o)s").unwrap(),
    );
    s.request(7, "GET", "/one", &[]);
    s.request(7, "HEAD", "/two", &[]);
    s.log.started_raw(7);
    s.log.wrote(7, b"HTTP/1.1 201 Created\r\nX-A: 1\r\n");
    s.log.wrote(7, b"\r\nhello");
    s.log.wrote(7, b"!");
    s.log.ended(7);
    s.respond(7, 200, &[("X-A", "2")], b"ignored for HEAD");
    assert_eq!(s.lines(), vec!["/one 201 6 1", "/two 200 0 2"]);
}

#[test]
fn refusals_and_json_lines() {
    let mut s = Scratch::new("json", Format::json());
    let peer = Peer {
        ip: "10.0.0.1".into(),
        port: 1,
        local_port: 2,
    };
    s.log.rejected(3, 431, 31, false, &peer, Instant::now());
    s.request(
        4,
        "PUT",
        "/p?q=\"1\"",
        &[("X-Request-Id", "abc"), ("User-Agent", "é")],
    );
    s.log.rejected(4, 413, 17, true, &peer, Instant::now());
    let lines = s.lines();
    let pid = std::process::id();
    let cut = |line: &str| {
        line.split_once(",\"remote\"")
            .unwrap()
            .1
            .replace(&pid.to_string(), "PID")
    };
    assert!(lines[0].starts_with("{\"time\":\"20"));
    assert_eq!(cut(&lines[0]).split(",\"duration_ms\"").next().unwrap(), ":\"10.0.0.1\",\"method\":null,\"path\":null,\"query\":null,\"protocol\":null,\"status\":431,\"bytes\":31");
    let second = cut(&lines[1]);
    assert!(second.starts_with(":\"127.0.0.1\",\"method\":\"PUT\",\"path\":\"/p\",\"query\":\"q=\\\"1\\\"\",\"protocol\":\"HTTP/1.1\",\"status\":413,\"bytes\":17,\"duration_ms\":"), "{second}");
    assert!(
        second.ends_with(
            ",\"referer\":null,\"user_agent\":\"Ã©\",\"pid\":PID,\"request_id\":\"abc\"}"
        ),
        "{second}"
    );
}

#[test]
fn a_reused_connection_slot_starts_empty() {
    let mut s = Scratch::new("slot", Format::compile("%(U)s").unwrap());
    s.request(5, "GET", "/old", &[]);
    // Same slab index, next generation: the old connection's entry is gone.
    let next = 5 | (1 << 32);
    s.request(next, "GET", "/new", &[]);
    s.respond(5, 200, &[], b"");
    s.respond(next, 200, &[], b"");
    assert_eq!(s.lines(), vec!["/new"]);
}
