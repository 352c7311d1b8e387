//! On SIGABRT (the arbiter's worker-timeout kill), answer every connection
//! still waiting for its response with a canned 503 before dying, instead of
//! leaving clients with a reset. The signal handler only reads a fixed table
//! of atomics and calls write(2) and _exit(2), all async-signal-safe. A
//! SIGABRT the arbiter did not send is a crash, reported as fatal.rs does;
//! a worker dying of any fatal signal sends the 503s too.

use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

use crate::fatal;

/// Connection slots covered; connections in higher slots get the reset.
const TABLE: usize = 16 * 1024;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicI32 = AtomicI32::new(-1);
static WAITING: [AtomicI32; TABLE] = [EMPTY; TABLE];
static HIGH: AtomicUsize = AtomicUsize::new(0);

const RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nService Unavailable";

/// Records whether connection slot `index` (socket `fd`) waits for a
/// response that has not started, with nothing else unsent before it.
pub fn set_waiting(index: usize, fd: i32, waiting: bool) {
    let Some(entry) = WAITING.get(index) else {
        return;
    };
    entry.store(if waiting { fd } else { -1 }, Ordering::Relaxed);
    if waiting && HIGH.load(Ordering::Relaxed) <= index {
        HIGH.fetch_max(index + 1, Ordering::Relaxed);
    }
}

/// Writes the canned 503 to every connection waiting for its response.
fn answer_waiting() {
    let high = HIGH.load(Ordering::Relaxed).min(TABLE);
    for entry in &WAITING[..high] {
        let fd = entry.load(Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; a stale fd at worst gets
            // a failed or ignored write, since the process ends right after.
            unsafe { libc::write(fd, RESPONSE.as_ptr().cast(), RESPONSE.len()) };
        }
    }
}

/// 134 = 128 + SIGABRT, as a shell reports it.
const ABORT_STATUS: libc::c_int = 134;

/// SIGABRT from the arbiter is its worker-timeout kill: 503s, then exit.
/// Any other SIGABRT (abort() in native code, a V8 check, another
/// process) is a crash: 503s, the fatal report, then the default action.
extern "C" fn on_abort(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    answer_waiting();
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler;
    // getppid is async-signal-safe.
    let from_arbiter = !info.is_null()
        && unsafe { (*info).si_code == libc::SI_USER && (*info).si_pid() == libc::getppid() };
    if from_arbiter {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(ABORT_STATUS) };
    }
    fatal::report_once(signal, info, context);
    fatal::die_by_default(signal);
}

/// Installs the SIGABRT handler once per process.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        fatal::set_handler(libc::SIGABRT, on_abort);
        // A worker that crashes answers its waiting clients the same way.
        fatal::set_last_rites(answer_waiting);
    });
}

/// Milliseconds on the monotonic clock, safe to read from any thread.
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

static LAST_BEAT_MS: AtomicU64 = AtomicU64::new(0);

/// The JavaScript loop is alive (called from the worker's heartbeat timer).
pub fn beat() {
    LAST_BEAT_MS.store(monotonic_ms(), Ordering::Relaxed);
}

/// A worker whose arbiter died normally drains and exits from JavaScript on
/// the pipe's EOF; one whose loop is blocked cannot. This thread ends such
/// an orphan the way a worker timeout would: once the parent is gone and
/// no beat came for `stall_ms`: 503s, then exit, as on SIGABRT.
pub fn watch_parent(stall_ms: u64) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        beat();
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        let spawned = std::thread::Builder::new()
            .name("rwsgi-orphan-watch".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(250));
                // SAFETY: getppid has no preconditions.
                let orphaned = unsafe { libc::getppid() } != parent;
                let stalled =
                    monotonic_ms().saturating_sub(LAST_BEAT_MS.load(Ordering::Relaxed)) > stall_ms;
                if orphaned && stalled {
                    answer_waiting();
                    // SAFETY: _exit ends the process from any thread.
                    unsafe { libc::_exit(ABORT_STATUS) };
                }
            });
        // Without the thread, only the JavaScript-side EOF handling remains.
        drop(spawned);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_tracks_the_highest_waiting_slot() {
        set_waiting(5, 7, true);
        assert_eq!(WAITING[5].load(Ordering::Relaxed), 7);
        assert!(HIGH.load(Ordering::Relaxed) >= 6);
        set_waiting(5, 7, false);
        assert_eq!(WAITING[5].load(Ordering::Relaxed), -1);
        set_waiting(TABLE + 1, 3, true); // out of range: ignored, no panic
    }
}
