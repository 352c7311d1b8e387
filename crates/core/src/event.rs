//! What the engine tells its host, and the arena the events' byte ranges
//! point into: request heads and body bytes are copied there once, and the
//! host takes events and arena together after each `poll`.

use std::ops::Range;

use crate::forwarded;
use crate::parser::RequestHead;
use crate::slab::Token;
use crate::socket::Peer;
use crate::trust::AllowList;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, checked request head. Ranges index `Engine::arena`.
    Request {
        conn: Token,
        method: &'static str,
        url: Range<usize>,
        headers: Range<usize>,
        http_minor: u8,
        keep_alive: bool,
        has_body: bool,
        expect_continue: bool,
        peer_ip: Range<usize>,
        peer_port: u16,
        local_port: u16,
        /// The client address: the peer's (the very range of `peer_ip`),
        /// or the one a trusted proxy named in a forwarding header, stashed
        /// after `peer_ip` (so the range ends elsewhere, even when the
        /// peer's address is empty). What REMOTE_ADDR, the access log's
        /// `%(h)s` and the like show.
        client_ip: Range<usize>,
        client_port: u16,
        /// The scheme is https: a trusted proxy said so, or else the
        /// connection is TLS.
        https: bool,
        /// Over TLS, and whether with a verified client certificate.
        secure: Secure,
        /// The connection's previous request had the same header block.
        same_headers: bool,
    },
    Body {
        conn: Token,
        data: Range<usize>,
    },
    /// The body of the most recent request on `conn` is complete.
    BodyEnd {
        conn: Token,
    },
    /// The connection is gone; requests still pending on it are abandoned.
    Closed {
        conn: Token,
    },
    /// The client stopped sending (FIN) while requests wait for their
    /// responses: it may be gone, or only half-closed and still reading, so
    /// the responses may still be written; the app may stop working on them.
    PeerShutdown {
        conn: Token,
    },
    /// Buffered output fell below the high-water mark again.
    Drain {
        conn: Token,
    },
    /// Accepting stopped for a while: the process ran out of descriptors
    /// or memory (`reason` is the errno name). Reported once per episode.
    AcceptPaused {
        reason: &'static str,
    },
    /// The worker became full (at its connection cap, or out of
    /// descriptors), or has room again.
    Capacity {
        full: bool,
    },
    /// The engine refused a request with `status` (only while rejections
    /// are traced, see `Engine::trace_rejections`).
    Rejected {
        status: u16,
        reason: String,
        peer_ip: String,
        peer_port: u16,
    },
}

/// What a request's connection says about its security.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Secure {
    /// It came over TLS.
    pub tls: bool,
    /// The client presented a certificate the CAs verified.
    pub client_cert: bool,
}

/// Records one connection's parsed requests as events.
pub struct Recorder<'a> {
    pub token: Token,
    pub events: &'a mut Vec<Event>,
    pub arena: &'a mut Vec<u8>,
    /// The trusted proxies, when the connection's peer is one of them:
    /// its forwarding headers are read (see forwarded.rs).
    pub trusted_proxies: Option<&'a AllowList>,
}

impl Recorder<'_> {
    fn stash(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        start..self.arena.len()
    }

    /// `same_headers`: the connection's previous request had the same header block.
    pub fn request(
        &mut self,
        head: &RequestHead<'_>,
        peer: &Peer,
        secure: Secure,
        same_headers: bool,
    ) {
        let url = self.stash(head.url);
        let headers = self.stash(head.headers);
        let peer_ip = self.stash(peer.ip.as_bytes());
        // Scanned only when the parser saw a forwarding header.
        let forwarded = match self.trusted_proxies {
            Some(trusted) if head.forwarding => forwarded::scan(head.headers, trusted),
            _ => forwarded::Forwarded::default(),
        };
        let (client_ip, client_port) = match forwarded.client {
            Some(client) => (self.stash(client.ip), client.port),
            None => (peer_ip.clone(), peer.port),
        };
        self.events.push(Event::Request {
            conn: self.token,
            method: head.method,
            url,
            headers,
            http_minor: head.http_minor,
            keep_alive: head.keep_alive,
            has_body: head.has_body,
            expect_continue: head.expect_continue,
            peer_ip,
            peer_port: peer.port,
            local_port: peer.local_port,
            client_ip,
            client_port,
            https: forwarded.https.unwrap_or(secure.tls),
            secure,
            same_headers,
        });
    }

    pub fn body(&mut self, data: &[u8]) {
        let data = self.stash(data);
        self.events.push(Event::Body {
            conn: self.token,
            data,
        });
    }

    pub fn body_end(&mut self) {
        self.events.push(Event::BodyEnd { conn: self.token });
    }
}
