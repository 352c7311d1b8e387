//! The bottom of the engine: libc return values as `io::Result`, symbols of
//! the host process, and the three kernel objects one worker's loop is made of
//! (an epoll set, a periodic timerfd, a wake-up eventfd). Nothing here knows HTTP.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A function or variable the host process exports (the node binary:
/// llhttp, V8), looked up at run time so this crate links without Node.
pub fn host_symbol(name: &std::ffi::CStr) -> Result<*mut libc::c_void, String> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if sym.is_null() {
        Err(format!(
            "the node binary does not export {}",
            name.to_string_lossy()
        ))
    } else {
        Ok(sym)
    }
}

/// A libc return value: negative means errno.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A descriptor a syscall just returned (or its errno).
pub fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: fd was just returned by a successful syscall and is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(cvt(fd)?) })
}

/// Reads the 8-byte counter of a timerfd or eventfd, resetting it.
fn read_counter(fd: &OwnedFd) {
    let mut buf = 0u64;
    // SAFETY: reading 8 bytes from a timerfd/eventfd into a u64.
    unsafe { libc::read(fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
}

/// An epoll set whose entries carry a 64-bit key.
pub struct Epoll(OwnedFd);

/// Readiness of one entry, as `Epoll::wait` reports it.
pub type Ready = libc::epoll_event;

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: a plain syscall creating a new descriptor.
        owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(Epoll)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: key };
        // SAFETY: valid epoll fd and event struct.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    pub fn add(&self, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, key)
    }

    pub fn modify(&self, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, key)
    }

    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// What is ready now, without waiting: at most `ready.len()` entries.
    /// The buffer need not be initialised (zeroing 256 entries each turn
    /// cost more than the rest of the call).
    pub fn poll<'a>(&self, ready: &'a mut [MaybeUninit<Ready>]) -> &'a [Ready] {
        let max = ready.len().min(i32::MAX as usize) as i32;
        // SAFETY: valid epoll fd and a buffer of `max` events.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), ready.as_mut_ptr().cast(), max, 0) };
        // SAFETY: the kernel initialised the first n entries.
        unsafe { std::slice::from_raw_parts(ready.as_ptr().cast(), n.max(0) as usize) }
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A periodic monotonic timer (timerfd).
pub struct Timer(OwnedFd);

impl Timer {
    pub fn new(period: Duration) -> io::Result<Timer> {
        // SAFETY: a plain syscall creating a new descriptor.
        let fd = owned(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        let timer = Timer(fd);
        timer.set_period(period)?;
        Ok(timer)
    }

    /// Fires every `period` from now on.
    pub fn set_period(&self, period: Duration) -> io::Result<()> {
        let tick = libc::timespec {
            tv_sec: period.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(period.subsec_nanos() as i32),
        };
        let spec = libc::itimerspec {
            it_interval: tick,
            it_value: tick,
        };
        // SAFETY: a timerfd and a valid itimerspec.
        cvt(unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) })
            .map(|_| ())
    }

    /// Acknowledges the expirations so far.
    pub fn acknowledge(&self) {
        read_counter(&self.0);
    }
}

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An eventfd that makes whatever polls it readable on demand.
pub struct Waker(OwnedFd);

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: a plain syscall creating a new descriptor.
        owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }).map(Waker)
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: an eventfd; writing 8 bytes is its protocol.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Acknowledges the wake-ups so far.
    pub fn acknowledge(&self) {
        read_counter(&self.0);
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// `n` in decimal, written into `digits` without allocating (response heads,
/// and the fatal-signal report, which must not allocate).
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_woken_waker_is_ready_until_acknowledged() {
        let epoll = Epoll::new().unwrap();
        let waker = Waker::new().unwrap();
        epoll
            .add(waker.as_raw_fd(), libc::EPOLLIN as u32, 7)
            .unwrap();
        let mut ready = [MaybeUninit::uninit(); 4];
        assert!(epoll.poll(&mut ready).is_empty());
        waker.wake();
        let keys: Vec<u64> = epoll.poll(&mut ready).iter().map(|r| r.u64).collect();
        assert_eq!(keys, [7]);
        waker.acknowledge();
        assert!(epoll.poll(&mut ready).is_empty());
    }

    #[test]
    fn errno_becomes_an_error() {
        // SAFETY: closing a descriptor that is not open fails with EBADF.
        let err = cvt(unsafe { libc::close(-1) }).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }
}
