//! The engine behind a proxy: what each new connection's peer is trusted
//! with (trust.rs), and the PROXY header step before its first HTTP byte
//! (conn.rs holds the state, proxy_protocol.rs parses).

use crate::conn::{Conn, ProxyHeader};
use crate::event::Event;
use crate::proxy_protocol::Mode;
use crate::slab::Token;
use crate::trust::Trust;

use super::Engine;

impl Engine {
    /// Which peers are trusted with forwarding and PROXY headers, for the
    /// connections accepted from now on.
    pub fn set_trust(&mut self, trust: Trust) {
        self.trust = trust;
    }

    /// What a new connection's peer is trusted with. A connection handed
    /// over by another worker is admitted the same way: it either never
    /// had a byte read (passed from a full worker's queue) or came from a
    /// peer that sent no PROXY header (those that did are never handed on).
    pub(super) fn admit(&self, conn: &mut Conn) {
        let peer = &conn.peer().ip;
        let forwarded = self.trust.forwarded.allows_peer(peer);
        let proxy_required = (self.trust.proxy_protocol != Mode::Off)
            .then(|| self.trust.proxy_allow.allows_peer(peer));
        conn.set_trusts_forwarded(forwarded);
        if let Some(required) = proxy_required {
            conn.expect_proxy_header(required);
        }
    }

    /// The PROXY header step of `token`; true once HTTP may be parsed.
    pub(super) fn read_proxy_header(&mut self, token: Token) -> bool {
        let Some(conn) = self.conns.get_mut(token) else {
            return false;
        };
        match conn.read_proxy_header(self.trust.proxy_protocol, self.now) {
            ProxyHeader::Waiting => false,
            ProxyHeader::Read => {
                // Forwarding headers are believed of the client the header names.
                let trusted = self.trust.forwarded.allows_peer(&conn.peer().ip);
                conn.set_trusts_forwarded(trusted);
                true
            }
            ProxyHeader::Refused(reason) => {
                self.refuse_unanswered(token, reason.to_string());
                false
            }
        }
    }

    /// Closes a connection refused before HTTP (its PROXY header), without
    /// an answer: traced as status 0, not counted among the HTTP rejections.
    pub(super) fn refuse_unanswered(&mut self, token: Token, reason: String) {
        if self.trace_rejections {
            if let Some(conn) = self.conns.get_mut(token) {
                let peer = conn.peer();
                self.events.push(Event::Rejected {
                    status: 0,
                    reason,
                    peer_ip: peer.ip.clone(),
                    peer_port: peer.port,
                });
                self.wake_for_events();
            }
        }
        self.close(token);
    }
}
