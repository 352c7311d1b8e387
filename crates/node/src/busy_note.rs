//! The request a worker turned busy with, told to the arbiter only if the
//! JavaScript loop then stops turning: JavaScript leaves a note here (no
//! system call per request) and a native thread writes it to the arbiter's
//! pipe once the heartbeat is late, so the WORKER TIMEOUT line names the
//! request of a handler that blocked the loop right after a heartbeat.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use napi_derive::napi;

use crate::js_stack;

struct State {
    /// The start of a `busy` message line, up to the value of `age`, and
    /// when it was left; empty while idle.
    note: String,
    since: Option<Instant>,
    sent: bool,
    last_tick: Option<Instant>,
}

static STATE: Mutex<State> = Mutex::new(State {
    note: String::new(),
    since: None,
    sent: false,
    last_tick: None,
});

/// Leaves the line start of the `busy` message for the request the worker
/// just turned busy with; an empty string: the worker is idle again.
#[napi]
pub fn busy_note(line_start: String) {
    let Ok(mut state) = STATE.lock() else { return };
    state.note = line_start;
    state.since = Some(Instant::now());
    state.sent = false;
}

/// The heartbeat reported the worker's state: a note before it is stale.
#[napi]
pub fn busy_note_tick() {
    let Ok(mut state) = STATE.lock() else { return };
    state.last_tick = Some(Instant::now());
    state.note.clear();
}

/// Starts the thread that writes a note to `fd` once no tick came for `late_ms`.
#[napi]
pub fn watch_busy_notes(fd: i32, late_ms: u32) {
    let late = Duration::from_millis(u64::from(late_ms));
    // Lateness counts from now until the first heartbeat.
    busy_note_tick();
    let spawned = thread::Builder::new()
        .name("rwsgi-busy-note".into())
        .spawn(move || loop {
            // This thread is the addon's one writer to the pipe: it answers
            // stack requests too (see js_stack.rs).
            js_stack::wait_and_answer(fd, Duration::from_millis(50));
            if let Some(line) = due(late) {
                js_stack::write_line(fd, &line);
            }
        });
    // Without the thread the worker still runs; timeouts just name less.
    drop(spawned);
}

/// The line to write now, once per note.
fn due(late: Duration) -> Option<String> {
    let mut state = STATE.lock().ok()?;
    let since = state.since?;
    let ticked_late = state.last_tick.is_some_and(|t| t.elapsed() >= late);
    if state.note.is_empty() || state.sent || !ticked_late {
        return None;
    }
    state.sent = true;
    Some(format!(
        "{}{:.3}}}}}\n",
        state.note,
        since.elapsed().as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;
    const NEVER: Duration = Duration::from_secs(3600);

    #[test]
    fn a_note_is_sent_once_only_when_the_heartbeat_is_late_and_a_request_is_on() {
        busy_note_tick();
        assert_eq!(due(NOW), None, "idle: nothing to send");
        busy_note(r#"{"type":"busy","oldest":{"method":"GET","path":"/x","age":"#.into());
        assert_eq!(due(NEVER), None, "the heartbeat is not late yet");
        let line = due(NOW).unwrap_or_default();
        assert!(
            line.starts_with(r#"{"type":"busy","oldest":{"method":"GET","path":"/x","age":0."#),
            "{line}"
        );
        assert!(line.ends_with("}}\n"), "{line}");
        assert_eq!(due(NOW), None, "sent once");
        busy_note(String::new());
        assert_eq!(due(NOW), None, "idle again");
        busy_note("x".into());
        busy_note_tick();
        assert_eq!(due(NOW), None, "a heartbeat made the note stale");
    }
}
