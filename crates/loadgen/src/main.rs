//! rwsgi-load: keeps `connections` keep-alive connections busy with batches
//! of `pipeline` GET requests and counts responses by bytes only (every
//! response must have the size of the first one, as a fixed hello world
//! does), so the client spends far less CPU per request than wrk and the
//! server's own cost decides. Linux only (epoll).
//!
//!   rwsgi-load --port 8000 [--path /] [--connections 64] [--pipeline 16] [--seconds 5] [--requests N]
//!
//! `--requests N`: stop after N responses (at most `--seconds`), for counts per request.
//!
//! Prints one JSON line: requests, seconds, requests_per_second,
//! response_bytes, and the latency of every batch (from its write to its
//! last response byte; with `--pipeline 1`, of every request) in µs:
//! latency_p50_us, latency_p99_us, latency_p999_us, latency_max_us.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

struct Options {
    port: u16,
    path: String,
    connections: usize,
    pipeline: usize,
    seconds: f64,
    /// Stop after this many responses (0: run for `seconds`).
    requests: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        port: 8000,
        path: "/".into(),
        connections: 64,
        pipeline: 16,
        seconds: 5.0,
        requests: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = format!("invalid {flag} {value:?}");
        match flag.as_str() {
            "--port" => o.port = value.parse().map_err(|_| bad.clone())?,
            "--path" => o.path = value,
            "--connections" => o.connections = value.parse().map_err(|_| bad.clone())?,
            "--pipeline" => o.pipeline = value.parse().map_err(|_| bad.clone())?,
            "--seconds" => o.seconds = value.parse().map_err(|_| bad.clone())?,
            "--requests" => o.requests = value.parse().map_err(|_| bad.clone())?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if o.connections == 0 || o.pipeline == 0 {
        return Err("--connections and --pipeline must be at least 1".into());
    }
    Ok(o)
}

/// One request's response size, from a first request on its own connection.
fn response_size(port: u16, request: &[u8]) -> io::Result<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("closed before a whole response"));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| io::Error::other("the response needs a Content-Length"))?;
            if got.len() >= end + 4 + length {
                return Ok(end + 4 + length);
            }
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// Response bytes still expected for the batch in flight.
    owed: usize,
    /// When the batch in flight was written.
    sent_at: Instant,
}

impl Conn {
    fn send(&mut self, batch: &[u8], owed: usize) -> io::Result<()> {
        self.stream.write_all(batch)?;
        self.owed = owed;
        self.sent_at = Instant::now();
        Ok(())
    }
}

struct Outcome {
    requests: u64,
    seconds: f64,
    bytes: u64,
    /// Each batch's latency in µs, sorted.
    latencies: Vec<u32>,
}

impl Outcome {
    fn latency_at(&self, fraction: f64) -> u32 {
        let last = self.latencies.len().saturating_sub(1);
        let index = ((self.latencies.len() as f64 * fraction) as usize).min(last);
        self.latencies.get(index).copied().unwrap_or(0)
    }
}

fn run(o: &Options) -> io::Result<Outcome> {
    let request = format!("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", o.path);
    let size = response_size(o.port, request.as_bytes())?;
    let batch = request.repeat(o.pipeline).into_bytes();
    // SAFETY: plain syscall creating a new descriptor, checked below.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut conns = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        let stream = TcpStream::connect(("127.0.0.1", o.port))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: valid epoll fd, socket fd and event.
        unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut ev) };
        conns.push(Conn {
            stream,
            owed: 0,
            sent_at: Instant::now(),
        });
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.seconds);
    let mut sent = 0u64;
    let more = |sent: u64| o.requests == 0 || sent < o.requests;
    for c in &mut conns {
        if more(sent) {
            c.send(&batch, size * o.pipeline)?;
            sent += o.pipeline as u64;
        }
    }
    let mut latencies = Vec::with_capacity(1 << 20);
    let mut total_bytes = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while Instant::now() < deadline && conns.iter().any(|c| c.owed > 0) {
        // SAFETY: valid epoll fd and event buffer.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 100) };
        for ev in events.iter().take(n.max(0) as usize) {
            let Some(c) = conns.get_mut(ev.u64 as usize) else {
                continue;
            };
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => return Err(io::Error::other("the server closed a connection")),
                    Ok(k) => {
                        total_bytes += k as u64;
                        c.owed = c.owed.saturating_sub(k);
                        if c.owed == 0 {
                            let micros = c.sent_at.elapsed().as_micros();
                            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                            if more(sent) {
                                c.send(&batch, size * o.pipeline)?;
                                sent += o.pipeline as u64;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // SAFETY: closing the epoll fd created above.
    unsafe { libc::close(epoll) };
    latencies.sort_unstable();
    Ok(Outcome {
        requests: total_bytes / size as u64,
        seconds: elapsed,
        bytes: total_bytes,
        latencies,
    })
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rwsgi-load: {e}");
            std::process::exit(2);
        }
    };
    match run(&options) {
        Ok(out) => println!(
            "{{\"requests\":{},\"seconds\":{:.3},\"requests_per_second\":{:.0},\"response_bytes\":{},\"latency_p50_us\":{},\"latency_p99_us\":{},\"latency_p999_us\":{},\"latency_max_us\":{}}}",
            out.requests,
            out.seconds,
            out.requests as f64 / out.seconds,
            out.bytes,
            out.latency_at(0.5),
            out.latency_at(0.99),
            out.latency_at(0.999),
            out.latencies.last().copied().unwrap_or(0)
        ),
        Err(e) => {
            eprintln!("rwsgi-load: {e}");
            std::process::exit(1);
        }
    }
}
