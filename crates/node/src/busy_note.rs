//! The request a worker turned busy with, told to the arbiter only if the
//! JavaScript loop then stops turning: JavaScript leaves a note here (no
//! system call per request) and a native thread writes it to the arbiter's
//! pipe once the heartbeat is late, so the WORKER TIMEOUT line names the
//! request of a handler that blocked the loop right after a heartbeat.
//!
//! Whether the worker is busy is one shared `Int32Array` cell JavaScript
//! sets (no call per request), and the driver notes the first request of
//! each batch it hands to an idle worker; JavaScript leaves a note itself
//! only when the worker turns busy again inside one batch.

use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::js_stack;

/// What the note names.
enum Note {
    None,
    /// The start of a `busy` message line, up to the value of `age`.
    Line(String),
    /// A request the driver noted: its method and path, as received.
    Request {
        method: &'static str,
        path: Vec<u8>,
    },
}

struct State {
    /// Left when the worker turned busy (see `since`).
    note: Note,
    since: Option<Instant>,
    sent: bool,
    last_tick: Option<Instant>,
}

static STATE: Mutex<State> = Mutex::new(State {
    note: Note::None,
    since: None,
    sent: false,
    last_tick: None,
});

/// JavaScript's busy cell (non-zero: a request is in flight), once
/// `watch_busy_notes` was given it.
static BUSY: AtomicPtr<AtomicI32> = AtomicPtr::new(std::ptr::null_mut());

fn busy() -> Option<bool> {
    let cell = BUSY.load(Ordering::Acquire);
    // SAFETY: set once from a live Int32Array kept referenced for the
    // process's life; an aligned i32 is read atomically.
    (!cell.is_null()).then(|| unsafe { (*cell).load(Ordering::Relaxed) } != 0)
}

/// Notes the request `method` `url` (the first of a batch about to be
/// handed over) if the worker is idle: it is the one that turns it busy.
pub fn note_if_idle(method: &'static str, url: &[u8]) {
    if busy() != Some(false) {
        return;
    }
    let Ok(mut state) = STATE.lock() else { return };
    let path = url.split(|&b| b == b'?').next().unwrap_or_default();
    match &mut state.note {
        Note::Request {
            method: noted,
            path: kept,
        } => {
            *noted = method;
            kept.clear();
            kept.extend_from_slice(path);
        }
        _ => {
            state.note = Note::Request {
                method,
                path: path.to_vec(),
            }
        }
    }
    state.since = Some(Instant::now());
    state.sent = false;
}

/// Leaves the line start of the `busy` message for the request the worker
/// just turned busy with; an empty string: the worker is idle again.
#[napi]
pub fn busy_note(line_start: String) {
    let Ok(mut state) = STATE.lock() else { return };
    state.note = if line_start.is_empty() {
        Note::None
    } else {
        Note::Line(line_start)
    };
    state.since = Some(Instant::now());
    state.sent = false;
}

/// The heartbeat reported the worker's state: a note before it is stale.
#[napi]
pub fn busy_note_tick() {
    let Ok(mut state) = STATE.lock() else { return };
    state.last_tick = Some(Instant::now());
    state.note = Note::None;
}

/// Starts the thread that writes a note to `fd` once no tick came for
/// `late_ms` while `busy` (an Int32Array JavaScript keeps non-zero while a
/// request is in flight) says the worker is busy.
#[napi]
pub fn watch_busy_notes(env: Env, fd: i32, late_ms: u32, busy: Unknown) -> Result<()> {
    let cell = match crate::fast::typed_array(env.raw(), busy.raw()).map_err(Error::from_reason)? {
        Some((napi::sys::TypedarrayType::int32_array, data, length))
            if !data.is_null() && length >= 1 =>
        {
            data.cast::<AtomicI32>()
        }
        _ => return Err(Error::from_reason("busy must be an Int32Array")),
    };
    let mut keep = std::ptr::null_mut();
    // SAFETY: busy is live in this call; the reference is never deleted, so
    // the array's memory stays for the process's life.
    let status = unsafe { napi::sys::napi_create_reference(env.raw(), busy.raw(), 1, &mut keep) };
    crate::js::check(status, "napi_create_reference").map_err(Error::from_reason)?;
    BUSY.store(cell, Ordering::Release);
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
    Ok(())
}

/// The line to write now, once per note.
fn due(late: Duration) -> Option<String> {
    let mut state = STATE.lock().ok()?;
    let since = state.since?;
    let ticked_late = state.last_tick.is_some_and(|t| t.elapsed() >= late);
    if busy() == Some(false) || state.sent || !ticked_late {
        return None;
    }
    let start = match &state.note {
        Note::None => return None,
        Note::Line(line) => line.clone(),
        Note::Request { method, path } => format!(
            r#"{{"type":"busy","oldest":{{"method":{},"path":{},"age":"#,
            json_string(method.as_bytes()),
            json_string(path)
        ),
    };
    state.sent = true;
    Some(format!("{start}{:.3}}}}}\n", since.elapsed().as_secs_f64()))
}

/// Latin-1 `bytes` (as JavaScript got them) as a JSON string.
fn json_string(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0..=0x1f => out.push_str(&format!("\\u{b:04x}")),
            _ => out.push(char::from(b)),
        }
    }
    out.push('"');
    out
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

        // With the busy cell: the driver notes the first request of a batch.
        static CELL: AtomicI32 = AtomicI32::new(0);
        BUSY.store(std::ptr::from_ref(&CELL).cast_mut(), Ordering::Release);
        note_if_idle("GET", b"/a\"b?q=1");
        CELL.store(1, Ordering::Relaxed);
        note_if_idle("POST", b"/later");
        let line = due(NOW).unwrap_or_default();
        assert!(
            line.starts_with(r#"{"type":"busy","oldest":{"method":"GET","path":"/a\"b","age":0."#),
            "the request that turned the worker busy, its path escaped: {line}"
        );
        note_if_idle("GET", b"/b");
        CELL.store(0, Ordering::Relaxed);
        note_if_idle("GET", b"/c");
        assert_eq!(due(NOW), None, "idle: nothing to send");
        BUSY.store(std::ptr::null_mut(), Ordering::Release);
    }
}
