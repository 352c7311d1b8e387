//! `--busy-poll`: after a loop turn that served one request, a worker with
//! few connections polls for the next one instead of sleeping. On these
//! VMs (no guest halt polling) a sleeping CPU is woken by an interrupt,
//! which made up half of a c=1 request's CPU time; a client that sends
//! request after request finds a polling worker awake.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The most connections a worker may have open to poll: with more,
/// something else is soon ready anyway, and polling cost a busy worker
/// (2 workers, wrk c=64: -13% requests/s).
pub const MAX_CONNECTIONS: usize = 4;

/// The longest run of turns kept inside one host callback: then the
/// host's own loop goes round (timers, the heartbeat, signals).
pub const TURNS_FOR: Duration = Duration::from_millis(1);

/// Runs `turn`, then again while `next_ready` (which polls) finds work,
/// for at most `TURNS_FOR`.
pub fn run_turns(mut turn: impl FnMut(), mut next_ready: impl FnMut() -> bool) {
    turn();
    let until = Instant::now() + TURNS_FOR;
    while Instant::now() < until && next_ready() {
        turn();
    }
}

/// Whether `fd` becomes readable within `spin`, polled without blocking
/// and yielding the CPU to any other runnable thread between tries.
pub fn readable_within(fd: RawFd, spin: Duration) -> bool {
    let deadline = Instant::now() + spin;
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd that outlives the call, zero timeout.
        if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // SAFETY: no arguments; gives the CPU to any thread waiting for it.
        unsafe { libc::sched_yield() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn turns_stop_after_their_bound_even_if_work_never_stops() {
        let started = Instant::now();
        let mut turns = 0u32;
        run_turns(|| turns += 1, || true);
        assert!(turns > 1, "polled turns ran");
        assert!(started.elapsed() >= TURNS_FOR);
    }

    #[test]
    fn one_turn_when_nothing_comes() {
        let mut turns = 0u32;
        run_turns(|| turns += 1, || false);
        assert_eq!(turns, 1);
    }

    #[test]
    fn readable_within_sees_bytes_and_gives_up_after_its_time() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let spin = Duration::from_millis(5);
        let started = Instant::now();
        assert!(!readable_within(b.as_raw_fd(), spin));
        assert!(started.elapsed() >= spin);
        a.write_all(b"x").unwrap();
        assert!(readable_within(b.as_raw_fd(), spin));
    }
}
