//! What the engine tests share: the app's response headers, the bound on
//! every wait, a client connected to an engine over a socketpair, and one
//! host turn.
// Each test file is its own crate and uses some of these.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::time::Duration;

use rwsgi_core::{Engine, Event, HeaderList};

pub const TEXT: HeaderList<'static> = HeaderList {
    joined: b"Content-Type\0text/plain\0",
    fields: 1,
};

/// No wait in these tests is longer than this.
pub const BOUND: Duration = Duration::from_secs(10);

/// A non-blocking client whose server side `engine` serves (a socketpair:
/// its peer shows as 127.0.0.1, see `Peer::local`).
pub fn connect(engine: &mut Engine) -> UnixStream {
    let (server, client) = UnixStream::pair().unwrap();
    server.set_nonblocking(true).unwrap();
    client.set_nonblocking(true).unwrap();
    engine.adopt(server.into()).unwrap();
    client
}

/// One host turn: poll, hand each event (with the turn's arena, where its
/// strings lie) to `on_event`, then flush.
pub fn turn(engine: &mut Engine, mut on_event: impl FnMut(&mut Engine, Event, &[u8])) {
    engine.begin_turn();
    engine.poll();
    let events = std::mem::take(&mut engine.events);
    let arena = std::mem::take(&mut engine.arena);
    for event in events {
        on_event(engine, event, &arena);
    }
    engine.end_turn();
}
