//! Request limits and timeouts. Defaults are gunicorn's, so users moving from
//! gunicorn see the same 414/431 boundaries.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line (method, target, version), in bytes: over it, 414.
    pub request_line: usize,
    /// Most header fields in one request: over it, 431.
    pub header_fields: usize,
    /// Longest header field (name + value), in bytes: over it, 431.
    pub field_size: usize,
    /// How long an idle keep-alive connection is kept open.
    pub keep_alive: Duration,
    /// How long a client may take to send a whole request head.
    pub header_timeout: Duration,
    /// Requests parsed ahead of their responses before reading pauses.
    pub pipeline_depth: usize,
    /// Largest request body in bytes, 0 = unlimited: over it, 413.
    pub max_body: u64,
    /// How long a request body may stall between reads.
    pub body_timeout: Duration,
    /// Open connections per worker before accepting pauses.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            header_fields: 100,
            field_size: 8190,
            keep_alive: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            pipeline_depth: 32,
            max_body: 0,
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}
