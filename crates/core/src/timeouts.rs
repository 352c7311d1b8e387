//! The connection timeouts, checked once a second: a request head must
//! arrive within `header_timeout`, a body may not stall longer than
//! `body_timeout`, an idle keep-alive connection closes after `keep_alive`,
//! and a lingering close gives up on its client.

use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::limits::Limits;

/// The timer's period: Date refresh and timeouts.
pub const TICK: Duration = Duration::from_secs(1);

/// What a connection's time is up for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// Idle past the keep-alive timeout, or lingering past its deadline:
    /// close it.
    Close,
    /// The request head did not arrive within the header timeout: 408.
    Head,
    /// A PROXY header begun did not end within the header timeout: the
    /// connection closes unanswered.
    ProxyHeader,
    /// The request body stalled past the body timeout: 408.
    Body,
}

/// Which timeout, if any, `conn` has passed at `now`.
pub fn expired(conn: &Conn, limits: &Limits, now: Instant) -> Option<Expired> {
    let past = |since: Instant, limit: Duration| now.duration_since(since) >= limit;
    if let Some(until) = conn.linger_deadline() {
        (now >= until).then_some(Expired::Close)
    } else if conn.handshaking() {
        // A TLS handshake is bounded like a request head; nothing can be
        // answered before it completes.
        past(conn.idle_since(), limits.header_timeout).then_some(Expired::Close)
    } else if conn
        .head_started()
        .is_some_and(|t| past(t, limits.header_timeout))
    {
        Some(if conn.in_proxy_header() {
            Expired::ProxyHeader
        } else {
            Expired::Head
        })
    } else if conn.reading_body() && past(conn.last_read(), limits.body_timeout) {
        Some(Expired::Body)
    } else if conn.is_idle() && past(conn.idle_since(), limits.keep_alive) {
        Some(Expired::Close)
    } else {
        None
    }
}
