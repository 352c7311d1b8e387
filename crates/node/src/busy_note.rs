//! The request a worker turned busy with, told to the arbiter only if the
//! JavaScript loop then stops turning: a native thread writes it to the
//! arbiter's pipe once the heartbeat is late, so the WORKER TIMEOUT line
//! names the request of a handler that blocked the loop right after a
//! heartbeat.
//!
//! Nothing is called per request. JavaScript keeps two cells of a shared
//! `Int32Array`: `[BUSY]`, non-zero while a request is in flight, and
//! `[ROW]`, the row of the batch being handed over whose request turned the
//! worker busy (a synchronous app turns it idle and busy again on every row
//! of a pipelined batch). The driver copies each batch's methods and paths
//! here before handing it over; a worker still busy when the next batch
//! comes keeps its request, which the driver resolves then (`ROW` becomes
//! `RESOLVED`).

use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::js_stack;

/// The cells of JavaScript's busy array (src/worker/main.ts).
const BUSY: usize = 0;
const ROW: usize = 1;
const CELLS: usize = 2;
/// `ROW` once the driver has resolved the request into `State::earlier`.
const RESOLVED: i32 = -1;

/// A request the worker turned busy with.
#[derive(Clone)]
struct Named {
    method: &'static str,
    path: Vec<u8>,
    since: Instant,
    /// Which note this is, so that each is sent once.
    key: (u64, i32),
}

/// The methods and paths of the batch last handed over.
struct Batch {
    methods: Vec<&'static str>,
    /// Where each row's path ends in `paths`.
    ends: Vec<usize>,
    paths: Vec<u8>,
    since: Option<Instant>,
    generation: u64,
}

impl Batch {
    fn named(&self, row: i32) -> Option<Named> {
        let index = usize::try_from(row).ok()?;
        let start = index
            .checked_sub(1)
            .map_or(Some(0), |i| self.ends.get(i).copied())?;
        let end = *self.ends.get(index)?;
        Some(Named {
            method: self.methods.get(index)?,
            path: self.paths.get(start..end)?.to_vec(),
            since: self.since?,
            key: (self.generation, row),
        })
    }

    fn clear(&mut self) {
        self.methods.clear();
        self.ends.clear();
        self.paths.clear();
        self.since = None;
    }
}

struct State {
    /// The request a worker still busy from an earlier batch turned busy with.
    earlier: Option<Named>,
    batch: Batch,
    /// The key of the last note sent.
    sent: Option<(u64, i32)>,
    last_tick: Option<Instant>,
}

static STATE: Mutex<State> = Mutex::new(State {
    earlier: None,
    batch: Batch {
        methods: Vec::new(),
        ends: Vec::new(),
        paths: Vec::new(),
        since: None,
        generation: 0,
    },
    sent: None,
    last_tick: None,
});

/// JavaScript's busy cells, once `watch_busy_notes` was given them.
static CELLS_AT: AtomicPtr<AtomicI32> = AtomicPtr::new(std::ptr::null_mut());

fn cells() -> Option<&'static [AtomicI32; CELLS]> {
    let cells = CELLS_AT.load(Ordering::Acquire);
    // SAFETY: set once from a live Int32Array of at least CELLS elements,
    // kept referenced for the process's life; aligned i32s are read and
    // written atomically.
    (!cells.is_null()).then(|| unsafe { &*cells.cast::<[AtomicI32; CELLS]>() })
}

/// Called by the driver before it hands a batch over: `rows` are its
/// requests' methods and targets, in row order.
pub fn hand_over<'a>(rows: impl Iterator<Item = (&'static str, &'a [u8])>) {
    let Some(cells) = cells() else { return };
    let Ok(mut state) = STATE.lock() else { return };
    if cells[BUSY].load(Ordering::Relaxed) == 0 {
        state.earlier = None;
    } else {
        let row = cells[ROW].load(Ordering::Relaxed);
        if row != RESOLVED {
            state.earlier = state.batch.named(row);
            cells[ROW].store(RESOLVED, Ordering::Relaxed);
        }
    }
    let batch = &mut state.batch;
    batch.clear();
    batch.generation += 1;
    batch.since = Some(Instant::now());
    for (method, url) in rows {
        let path = url.split(|&b| b == b'?').next().unwrap_or_default();
        batch.methods.push(method);
        batch.paths.extend_from_slice(path);
        batch.ends.push(batch.paths.len());
    }
}

/// The heartbeat reported the worker's state: what is noted before it is stale.
#[napi]
pub fn busy_note_tick() {
    let Ok(mut state) = STATE.lock() else { return };
    state.last_tick = Some(Instant::now());
    state.earlier = None;
    state.batch.clear();
}

/// Starts the thread that writes a note to `fd` once no tick came for
/// `late_ms` while `busy` (JavaScript's Int32Array: `[BUSY]`, `[ROW]`)
/// says the worker is busy.
#[napi]
pub fn watch_busy_notes(env: Env, fd: i32, late_ms: u32, busy: Unknown) -> Result<()> {
    let cell = match crate::fast::typed_array(env.raw(), busy.raw()).map_err(Error::from_reason)? {
        Some((napi::sys::TypedarrayType::int32_array, data, length))
            if !data.is_null() && length >= CELLS =>
        {
            data.cast::<AtomicI32>()
        }
        _ => return Err(Error::from_reason("busy must be an Int32Array of 2 cells")),
    };
    let mut keep = std::ptr::null_mut();
    // SAFETY: busy is live in this call; the reference is never deleted, so
    // the array's memory stays for the process's life.
    let status = unsafe { napi::sys::napi_create_reference(env.raw(), busy.raw(), 1, &mut keep) };
    crate::js::check(status, "napi_create_reference").map_err(Error::from_reason)?;
    CELLS_AT.store(cell, Ordering::Release);
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
    let cells = cells()?;
    let mut state = STATE.lock().ok()?;
    let ticked_late = state.last_tick.is_some_and(|t| t.elapsed() >= late);
    if cells[BUSY].load(Ordering::Relaxed) == 0 || !ticked_late {
        return None;
    }
    let row = cells[ROW].load(Ordering::Relaxed);
    let named = if row == RESOLVED {
        state.earlier.clone()?
    } else {
        state.batch.named(row)?
    };
    if state.sent == Some(named.key) {
        return None;
    }
    state.sent = Some(named.key);
    Some(format!(
        "{{\"type\":\"busy\",\"oldest\":{{\"method\":{},\"path\":{},\"age\":{:.3}}}}}\n",
        json_string(named.method.as_bytes()),
        json_string(&named.path),
        named.since.elapsed().as_secs_f64()
    ))
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

    fn line(method: &str, path: &str) -> String {
        format!(r#"{{"type":"busy","oldest":{{"method":"{method}","path":{path},"age":0."#)
    }

    #[test]
    fn a_note_names_the_row_that_turned_the_worker_busy_once_the_heartbeat_is_late() {
        static JS: [AtomicI32; CELLS] = [AtomicI32::new(0), AtomicI32::new(0)];
        let turn_busy = |row: i32| {
            JS[ROW].store(row, Ordering::Relaxed);
            JS[BUSY].store(1, Ordering::Relaxed);
        };
        CELLS_AT.store(
            std::ptr::from_ref(&JS).cast::<AtomicI32>().cast_mut(),
            Ordering::Release,
        );
        busy_note_tick();
        hand_over([("GET", &b"/a\"b?q=1"[..]), ("POST", b"/second")].into_iter());
        assert_eq!(due(NOW), None, "idle: nothing to send");
        turn_busy(0);
        assert_eq!(due(NEVER), None, "the heartbeat is not late yet");
        let first = due(NOW).unwrap_or_default();
        assert!(
            first.starts_with(&line("GET", r#""/a\"b""#)),
            "the first row, its path escaped: {first}"
        );
        assert!(first.ends_with("}}\n"), "{first}");
        assert_eq!(due(NOW), None, "sent once");

        // Idle and busy again inside the batch: the second row is named.
        JS[BUSY].store(0, Ordering::Relaxed);
        turn_busy(1);
        let second = due(NOW).unwrap_or_default();
        assert!(
            second.starts_with(&line("POST", r#""/second""#)),
            "{second}"
        );

        // Still busy when the next batch comes: the request is kept.
        hand_over([("GET", &b"/later"[..])].into_iter());
        assert_eq!(JS[ROW].load(Ordering::Relaxed), RESOLVED);
        assert_eq!(due(NOW), None, "the same request, already sent");
        busy_note_tick();
        assert_eq!(due(NOW), None, "a heartbeat made the note stale");

        JS[BUSY].store(0, Ordering::Relaxed);
        hand_over([("DELETE", &b"/x"[..])].into_iter());
        turn_busy(0);
        let next = due(NOW).unwrap_or_default();
        assert!(next.starts_with(&line("DELETE", r#""/x""#)), "{next}");
        turn_busy(5);
        assert_eq!(
            due(NOW),
            None,
            "a row the batch does not have names nothing"
        );
        CELLS_AT.store(std::ptr::null_mut(), Ordering::Release);
    }
}
