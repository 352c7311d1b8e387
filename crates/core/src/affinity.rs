//! Which CPUs a process may run on: read for this process, set for a worker
//! (its main thread, the one running the event loop) when new connections
//! are spread by CPU, so a worker runs where its connections arrive.

use std::io;

use crate::sys::cvt;

/// The CPUs this process may run on, ascending.
pub fn allowed_cpus() -> io::Result<Vec<u32>> {
    // SAFETY: a zeroed cpu_set_t is a valid out-buffer of the size passed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 = the calling thread; `set` outlives the call.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads within the set for cpu < its bit size.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .map(|cpu| cpu as u32)
        .collect())
}

/// Lets thread `tid` (a process's pid names its main thread) run on `cpus` only.
pub fn set_affinity(tid: i32, cpus: &[u32]) -> io::Result<()> {
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        let cpu = cpu as usize;
        if cpu >= max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no CPU {cpu}"),
            ));
        }
        // SAFETY: cpu is within the set's bit size (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    cvt(unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_be_pinned_and_released() {
        let all = allowed_cpus().unwrap();
        assert!(!all.is_empty());
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            set_affinity(tid, &all[..1]).unwrap();
            assert_eq!(allowed_cpus().unwrap(), all[..1]);
            set_affinity(tid, &all).unwrap();
            assert_eq!(allowed_cpus().unwrap(), all);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn no_cpu_is_an_error() {
        assert!(set_affinity(0, &[]).is_err());
        assert!(set_affinity(0, &[1 << 20]).is_err());
    }
}
