//! rwsgi's HTTP/1.1 engine, free of Node: sockets, the llhttp binding, the
//! per-connection state machine, limits and response encoding.
//!
//! Modules, bottom up (each uses only those above it in this list):
//! sys (syscalls, epoll, timerfd, eventfd), slab (connection tokens),
//! limits, date, llhttp, parser, response, body, socket, event, conn,
//! timeouts, handoff, engine (the dispatcher); tls (settings to a rustls
//! config, session-ticket keys) and tls_conn (a connection's TLS layer,
//! used by conn); beside them fatal (fatal-signal
//! reports), abort (the SIGABRT 503 table, using fatal), affinity and
//! steering (used by the arbiter).

pub mod abort;
pub mod affinity;
pub mod body;
pub mod conn;
pub mod date;
pub mod engine;
pub mod event;
pub mod fatal;
pub mod handoff;
pub mod limits;
pub mod llhttp;
pub mod parser;
pub mod response;
pub mod slab;
pub mod socket;
pub mod steering;
pub mod sys;
pub mod timeouts;
pub mod tls;
pub mod tls_conn;

pub use conn::WriteError;
pub use engine::Engine;
pub use event::Event;
pub use limits::Limits;
pub use response::HeaderList;
pub use slab::Token;
