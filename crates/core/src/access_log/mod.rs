//! The access log, written by the engine itself: what a line needs of a
//! request is copied when its head is parsed (the request line, the client
//! address, the few fields the format reads), the response's status,
//! fields and body bytes are noted as they are written, and the line is
//! rendered into the sink's buffer when the response ends. Requests the
//! engine refuses get a line too. Output is gunicorn's, atom for atom
//! (format.rs), or one JSON object a line.

pub mod clock;
pub mod format;
pub mod render;
pub mod sink;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::response::HeaderList;
use crate::slab::{index_of, Token};
use crate::socket::Peer;

use clock::Clock;
use format::Format;
use sink::Sink;

/// The client address a line shows (`%(h)s`, JSON `remote`) for a request
/// the engine refused: the connection's peer (the PROXY header's client
/// when there was one; forwarding headers of a refused request are not
/// believed). A request the app got shows the address the app was told
/// (`Event::Request`'s `client_ip`, see `capture`).
pub fn client_address(peer: &Peer) -> &str {
    &peer.ip
}

/// The response head of a raw response (the app frames it, as Node's
/// ServerResponse does) is read from the first bytes written, up to this.
const RAW_HEAD_LIMIT: usize = 16 * 1024;

/// A raw response whose head is still being read from the bytes written.
#[derive(Default)]
enum RawHead {
    #[default]
    Absent,
    Reading(Vec<u8>),
}

/// One request's line in the making. Byte strings live in `text`.
#[derive(Default)]
pub struct Entry {
    started: Option<Instant>,
    /// Empty for a request refused before its head was complete.
    method: &'static str,
    http_minor: u8,
    text: Vec<u8>,
    url: Range<usize>,
    client: Range<usize>,
    /// The address the connection arrived at, when the format shows it.
    server: Range<usize>,
    client_port: u16,
    local_port: u16,
    /// The request came over https (as `wsgi.url_scheme` says).
    https: bool,
    /// The connection's TLS version and cipher suite, when the format shows them.
    tls_protocol: Range<usize>,
    tls_cipher: Range<usize>,
    fields: Vec<Option<Range<usize>>>,
    response_fields: Vec<Option<Range<usize>>>,
    /// 0 until the response starts.
    status: u16,
    sent: u64,
    raw: RawHead,
}

impl Entry {
    fn clear(&mut self, fields: usize, response_fields: usize) {
        self.text.clear();
        self.fields.clear();
        self.fields.resize(fields, None);
        self.response_fields.clear();
        self.response_fields.resize(response_fields, None);
        self.status = 0;
        self.sent = 0;
        self.method = "";
        self.https = false;
        self.tls_protocol = 0..0;
        self.tls_cipher = 0..0;
        self.raw = RawHead::Absent;
    }

    fn stash(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        start..self.text.len()
    }

    fn has_request(&self) -> bool {
        !self.method.is_empty()
    }

    fn bytes(&self, range: &Range<usize>) -> &[u8] {
        self.text.get(range.clone()).unwrap_or(&[])
    }

    fn field(&self, i: usize) -> Option<&[u8]> {
        let range = self.fields.get(i)?.as_ref()?;
        Some(self.bytes(range))
    }

    fn response_field(&self, i: usize) -> Option<&[u8]> {
        let range = self.response_fields.get(i)?.as_ref()?;
        Some(self.bytes(range))
    }

    /// Records one request field into slot `i`.
    fn capture(&mut self, i: usize, joined: bool, value: &[u8]) {
        let Some(slot) = self.fields.get(i) else {
            return;
        };
        let range = match (slot.clone(), joined) {
            (Some(old), true) => {
                let start = self.text.len();
                self.text.extend_from_within(old);
                self.text.push(b',');
                self.text.extend_from_slice(value);
                start..self.text.len()
            }
            _ => self.stash(value),
        };
        self.fields[i] = Some(range);
    }

    fn capture_response(&mut self, names: &[Vec<u8>], name: &[u8], value: &[u8]) {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            let range = self.stash(value);
            self.response_fields[i] = Some(range);
        }
    }
}

/// `name\0value\0...` pairs.
fn pairs(joined: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = joined;
    let mut part = move || {
        let end = render::find(rest, 0)?;
        let (part, tail) = (&rest[..end], &rest[end + 1..]);
        rest = tail;
        Some(part)
    };
    std::iter::from_fn(move || Some((part()?, part()?)))
}

/// The entries of one connection, oldest first, and which connection
/// (the slab reuses indices).
struct Queue {
    token: Token,
    entries: VecDeque<Box<Entry>>,
}

pub struct AccessLog {
    format: Format,
    sink: Arc<Sink>,
    /// By the connection's slab index.
    queues: Vec<Queue>,
    /// Entries are boxed: moved between the queues and this list per
    /// request, they move as a pointer (measured: fewer instructions).
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Entry>>,
    clock: Clock,
    pid: u32,
    /// The format shows durations (see `Format::needs_duration`).
    timed: bool,
}

impl AccessLog {
    pub fn new(format: Format, sink: Arc<Sink>) -> AccessLog {
        AccessLog {
            timed: format.needs_duration(),
            format,
            sink,
            queues: Vec::new(),
            spare: Vec::new(),
            clock: Clock::default(),
            pid: std::process::id(),
        }
    }

    pub fn sink(&self) -> &Arc<Sink> {
        &self.sink
    }

    fn new_entry(&mut self) -> Box<Entry> {
        let mut entry = self.spare.pop().unwrap_or_default();
        entry.clear(self.format.fields.len(), self.format.response_fields.len());
        entry
    }

    /// The queue of `token`, emptied first if it held another connection's.
    fn queue_for(&mut self, token: Token) -> &mut Queue {
        let index = index_of(token);
        if self.queues.len() <= index {
            self.queues.resize_with(index + 1, || Queue {
                token,
                entries: VecDeque::new(),
            });
        }
        let queue = &mut self.queues[index];
        if queue.token != token {
            queue.token = token;
            self.spare.extend(queue.entries.drain(..));
        }
        queue
    }

    fn queue(&mut self, token: Token) -> Option<&mut VecDeque<Box<Entry>>> {
        queue_of(&mut self.queues, token)
    }

    /// Whether `capture` needs the address the connection arrived at.
    pub fn needs_server_address(&self) -> bool {
        self.format.needs_server_address()
    }

    /// Whether `capture` needs the connection's TLS version and cipher.
    pub fn needs_tls(&self) -> bool {
        self.format.needs_tls()
    }

    /// Notes the requests among `events` (just parsed on `token`, which
    /// arrived at `server`, over `tls`: its version and cipher suite).
    pub fn capture(
        &mut self,
        token: Token,
        events: &[Event],
        arena: &[u8],
        server: &str,
        tls: Option<&(String, String)>,
        now: Instant,
    ) {
        for event in events {
            let Event::Request {
                method,
                url,
                headers,
                http_minor,
                client_ip,
                client_port,
                local_port,
                https,
                ..
            } = event
            else {
                continue;
            };
            let bytes = |r: &Range<usize>| arena.get(r.clone()).unwrap_or(&[]);
            let mut entry = self.new_entry();
            entry.started = Some(now);
            entry.method = method;
            entry.http_minor = *http_minor;
            entry.url = entry.stash(bytes(url));
            // The address the app is told (REMOTE_ADDR): a trusted proxy's
            // client, else the peer (see forwarded.rs).
            entry.client = entry.stash(bytes(client_ip));
            entry.server = entry.stash(server.as_bytes());
            entry.client_port = *client_port;
            entry.local_port = *local_port;
            entry.https = *https;
            if let Some((protocol, cipher)) = tls {
                entry.tls_protocol = entry.stash(protocol.as_bytes());
                entry.tls_cipher = entry.stash(cipher.as_bytes());
            }
            for (name, value) in pairs(bytes(headers)) {
                for (i, field) in self.format.fields.iter().enumerate() {
                    if field.name.eq_ignore_ascii_case(name) {
                        entry.capture(i, field.joined, value);
                    }
                }
            }
            self.queue_for(token).entries.push_back(entry);
        }
    }

    /// The front response on `token` started with `status` and the app's
    /// `headers`.
    pub fn started(&mut self, token: Token, status: u16, headers: &HeaderList<'_>) {
        let names = &self.format.response_fields;
        if let Some(entry) = queue_of(&mut self.queues, token).and_then(|q| q.front_mut()) {
            entry.status = status;
            if !names.is_empty() {
                for (name, value) in pairs(headers.joined) {
                    entry.capture_response(names, name, value);
                }
            }
        }
    }

    /// The front response on `token` is framed by the app: its head is
    /// read from the bytes written.
    pub fn started_raw(&mut self, token: Token) {
        if let Some(entry) = self.queue(token).and_then(|q| q.front_mut()) {
            entry.raw = RawHead::Reading(Vec::new());
        }
    }

    /// Body bytes of the front response on `token` (none for HEAD).
    pub fn wrote(&mut self, token: Token, data: &[u8]) {
        let names = &self.format.response_fields;
        if let Some(entry) = queue_of(&mut self.queues, token).and_then(|q| q.front_mut()) {
            let body = match &mut entry.raw {
                RawHead::Absent => data.len(),
                RawHead::Reading(head) => {
                    let seen = head.len();
                    head.extend_from_slice(&data[..data.len().min(RAW_HEAD_LIMIT)]);
                    match render::head_end(head) {
                        Some(end) => {
                            let head = std::mem::take(head);
                            entry.raw = RawHead::Absent;
                            read_raw_head(entry, names, &head[..end]);
                            data.len().saturating_sub(end - seen)
                        }
                        None if head.len() >= RAW_HEAD_LIMIT => {
                            entry.raw = RawHead::Absent;
                            0
                        }
                        None => 0,
                    }
                }
            };
            if entry.method != "HEAD" {
                entry.sent += body as u64;
            }
        }
    }

    /// The front response on `token` ended: its line is written.
    pub fn ended(&mut self, token: Token) {
        let Some(entry) = self.queue(token).and_then(VecDeque::pop_front) else {
            return;
        };
        self.write(entry);
    }

    /// The engine refused a request on `token` with `status`, answered with
    /// a body of `sent` bytes. `in_body`: the app has the request (its body
    /// failed), which is the line's request.
    pub fn rejected(
        &mut self,
        token: Token,
        status: u16,
        sent: usize,
        in_body: bool,
        peer: &Peer,
        now: Instant,
    ) {
        let known = in_body
            .then(|| self.queue(token).and_then(VecDeque::pop_back))
            .flatten();
        let mut entry = match known {
            Some(entry) => entry,
            None => {
                let mut entry = self.new_entry();
                entry.started = Some(now);
                entry.client = entry.stash(client_address(peer).as_bytes());
                entry.client_port = peer.port;
                entry.local_port = peer.local_port;
                entry
            }
        };
        entry.status = status;
        entry.sent = sent as u64;
        self.write(entry);
    }

    fn write(&mut self, entry: Box<Entry>) {
        let elapsed = match entry.started {
            Some(start) if self.timed => start.elapsed(),
            _ => Duration::ZERO,
        };
        let clock = self.clock.now();
        let line = render::Line {
            entry: &entry,
            format: &self.format,
            elapsed,
            clock,
            pid: self.pid,
        };
        self.sink.append(|out| line.render(out));
        self.spare.push(entry);
    }
}

fn queue_of(queues: &mut [Queue], token: Token) -> Option<&mut VecDeque<Box<Entry>>> {
    queues
        .get_mut(index_of(token))
        .filter(|q| q.token == token)
        .map(|q| &mut q.entries)
}

/// Status and the fields the format wants, from a raw response head.
fn read_raw_head(entry: &mut Entry, names: &[Vec<u8>], head: &[u8]) {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or(&[]);
    let code = status_line.split(|&b| b == b' ').nth(1).unwrap_or(&[]);
    entry.status = std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    for line in lines {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            entry.capture_response(names, name, value);
        }
    }
}

#[cfg(test)]
mod tests;
