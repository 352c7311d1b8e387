//! rwsgi's HTTP/1.1 engine, free of Node: sockets, the llhttp binding, the
//! per-connection state machine, limits and response encoding.
//!
//! Modules, bottom up (each uses only those above it in this list):
//! sys (syscalls, epoll, timerfd, eventfd), slab (connection tokens),
//! limits, date, llhttp, parser, metrics, response, body, socket, proxy_protocol,
//! trust, forwarded, event, tls (settings to a rustls config, session-ticket
//! keys), tls_conn (a connection's TLS layer), conn, timeouts, handoff,
//! access_log, engine (the dispatcher); beside them fatal (fatal-signal
//! reports), abort (the SIGABRT 503 table, using fatal), js_stack (a
//! worker's JavaScript stack as a message), affinity and steering (used by
//! the arbiter), systemd (sd_notify, activated sockets).

pub mod abort;
pub mod access_log;
pub mod affinity;
pub mod body;
pub mod busy_poll;
pub mod conn;
pub mod date;
pub mod engine;
pub mod event;
pub mod fatal;
pub mod forwarded;
pub mod handoff;
pub mod js_stack;
pub mod limits;
pub mod llhttp;
pub mod metrics;
pub mod parser;
pub mod proxy_protocol;
pub mod response;
pub mod slab;
pub mod socket;
pub mod steering;
pub mod sys;
pub mod systemd;
pub mod timeouts;
pub mod tls;
pub mod tls_conn;
pub mod trust;

pub use conn::WriteError;
pub use engine::Engine;
pub use event::Event;
pub use limits::Limits;
pub use response::HeaderList;
pub use slab::Token;
