//! rwsgi's HTTP/1.1 engine, free of Node: sockets, the llhttp binding, the
//! per-connection state machine, limits and response encoding.

pub mod abort;
pub mod affinity;
pub mod body;
pub mod conn;
pub mod date;
pub mod fatal;
pub mod handoff;
pub mod limits;
pub mod llhttp;
pub mod parser;
pub mod response;
pub mod server;
pub mod socket;
pub mod steering;

pub use conn::WriteError;
pub use limits::Limits;
pub use response::HeaderList;
pub use server::{Engine, Event, Token};
