//! Fatal signals tell their story. A process killed by SIGSEGV, SIGBUS,
//! SIGILL, SIGFPE (or another signal whose default action ends it and that
//! nothing else handles) writes, before it dies, one `[CRITICAL]` line in
//! gunicorn's log shape naming the signal, the faulting address (or the
//! sender, for a signal sent with kill), and a native backtrace, to the
//! error log's descriptor. Then the signal's default action runs, so a core
//! dump still happens where the operator enabled one.
//!
//! Only async-signal-safe work happens in the handler: the line is formatted
//! into a stack buffer, the time comes from `clock_gettime` with the UTC
//! offset computed beforehand, and the log descriptor is read from an
//! atomic. The backtrace uses glibc's `backtrace` (its first call loads the
//! unwinder, so `install` makes that call) and `backtrace_symbols_fd`,
//! which writes without allocating; frames in the node binary are named by
//! its exported symbols, frames in the addon as `rwsgi.<platform>.node(+offset)`
//! (`addr2line -f -C -e <the .node file> offset` names those).

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Once;

/// Faults: the process cannot go on.
const FAULTS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGSYS,
];

/// Signals whose default action ends the process and that neither Node nor
/// rwsgi handles: a process ended by one of them says so too.
const TERMINATING: [c_int; 9] = [
    libc::SIGUSR2,
    libc::SIGPROF,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGPWR,
    libc::SIGSTKFLT,
    libc::SIGIO,
];

/// Which process this is, for the log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Arbiter,
    Worker,
}

static ROLE: AtomicU8 = AtomicU8::new(0);
static LOG_FD: AtomicI32 = AtomicI32::new(2);
static UTC_OFFSET_SECONDS: AtomicI64 = AtomicI64::new(0);
/// Set by the first report, so a fault inside the report does not recurse.
static REPORTING: AtomicBool = AtomicBool::new(false);
/// V8's WebAssembly trap handler (`v8::TryHandleWebAssemblyTrapPosix`), when
/// the host exports it: Node's own SIGSEGV handler, which ours replaces,
/// exists only to hand out-of-bounds WebAssembly accesses to it.
static WASM_TRAP: AtomicUsize = AtomicUsize::new(0);

/// What a dying worker does for its clients first (abort.rs's 503s), as a
/// `fn()` address; 0 for none.
static LAST_RITES: AtomicUsize = AtomicUsize::new(0);

type WasmTrapFn = unsafe extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) -> bool;

const ALT_STACK_SIZE: usize = 64 * 1024;

/// Installs the handlers once per process, for `role`: for each signal
/// above (and SIGABRT in the arbiter; a worker's SIGABRT is abort.rs's)
/// whose disposition is still the default. A handler someone else set is
/// left alone (a profiler's SIGPROF, say), except Node's SIGSEGV handler,
/// whose one job, WebAssembly traps, this handler does first.
pub fn install(role: Role) {
    ROLE.store(role as u8 + 1, Ordering::Relaxed);
    refresh_utc_offset();
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let wasm = lookup_wasm_trap_handler();
        WASM_TRAP.store(wasm, Ordering::Relaxed);
        warm_up_backtrace();
        install_alt_stack();
        let abort = (role == Role::Arbiter).then_some(libc::SIGABRT);
        for signal in FAULTS.iter().chain(&TERMINATING).copied().chain(abort) {
            let replaceable = signal == libc::SIGSEGV && wasm != 0;
            if replaceable || disposition_is_default(signal) {
                set_handler(signal, on_fatal);
            }
        }
    });
}

type Handler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// Runs `handler` for `signal` on the alternate stack, every other signal
/// blocked meanwhile (nothing interleaves with the report).
pub(crate) fn set_handler(signal: c_int, handler: Handler) {
    // SAFETY: a zeroed sigaction with an SA_SIGINFO handler and a full mask is valid.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigfillset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

fn disposition_is_default(signal: c_int) -> bool {
    // SAFETY: reading the current action into a zeroed sigaction.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_DFL
    }
}

/// `rites` runs in the handler before the report: it must be
/// async-signal-safe.
pub fn set_last_rites(rites: fn()) {
    LAST_RITES.store(rites as usize, Ordering::Relaxed);
}

/// Reports go to `fd` (the error log) from now on.
pub fn set_log_fd(fd: i32) {
    LOG_FD.store(fd, Ordering::Relaxed);
    refresh_utc_offset();
}

/// The local UTC offset, as the JavaScript log lines print it; computed
/// here because `localtime_r` is not async-signal-safe.
fn refresh_utc_offset() {
    // SAFETY: time(NULL) and localtime_r into a local tm are plain libc calls.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if !libc::localtime_r(&now, &mut tm).is_null() {
            UTC_OFFSET_SECONDS.store(tm.tm_gmtoff, Ordering::Relaxed);
        }
    }
}

fn lookup_wasm_trap_handler() -> usize {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let sym = unsafe {
        libc::dlsym(
            libc::RTLD_DEFAULT,
            c"_ZN2v829TryHandleWebAssemblyTrapPosixEiP9siginfo_tPv".as_ptr(),
        )
    };
    sym as usize
}

/// glibc's first `backtrace` loads libgcc's unwinder (dlopen, malloc):
/// done here, never first inside a handler.
fn warm_up_backtrace() {
    #[cfg(target_env = "gnu")]
    {
        let mut frames = [std::ptr::null_mut::<c_void>(); 4];
        // SAFETY: the buffer holds the 4 entries passed.
        unsafe { libc::backtrace(frames.as_mut_ptr(), 4) };
    }
}

/// A stack overflow faults on the guard page: the handler needs a stack of
/// its own to run on. (Threads Rust spawns get one from std.)
fn install_alt_stack() {
    // SAFETY: an anonymous private mapping; on success it is handed to the
    // kernel as this thread's alternate signal stack for the process's life.
    unsafe {
        let stack = libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if stack == libc::MAP_FAILED {
            return;
        }
        let mut old: libc::stack_t = std::mem::zeroed();
        // Keep one the host set up already.
        if libc::sigaltstack(std::ptr::null(), &mut old) == 0
            && old.ss_flags & libc::SS_DISABLE == 0
        {
            libc::munmap(stack, ALT_STACK_SIZE);
            return;
        }
        let new = libc::stack_t {
            ss_sp: stack,
            ss_flags: 0,
            ss_size: ALT_STACK_SIZE,
        };
        libc::sigaltstack(&new, std::ptr::null_mut());
    }
}

extern "C" fn on_fatal(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    if signal == libc::SIGSEGV {
        let wasm = WASM_TRAP.load(Ordering::Relaxed);
        if wasm != 0 {
            // SAFETY: the symbol is V8's `bool TryHandleWebAssemblyTrapPosix(int,
            // siginfo_t*, void*)`, made to be called from a SIGSEGV handler.
            let handled =
                unsafe { std::mem::transmute::<usize, WasmTrapFn>(wasm)(signal, info, context) };
            if handled {
                return;
            }
        }
    }
    let rites = LAST_RITES.load(Ordering::Relaxed);
    if rites != 0 {
        // SAFETY: the value was stored from a `fn()` by `set_last_rites`.
        unsafe { std::mem::transmute::<usize, fn()>(rites)() };
    }
    report_once(signal, info, context);
    die_by_default(signal);
}

/// The report, once per process: a fault inside it, or a second signal,
/// goes straight to the default action.
pub(crate) fn report_once(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    if !REPORTING.swap(true, Ordering::SeqCst) {
        report(signal, info, context);
    }
}

/// Ends the process by `signal`'s default action, from its handler.
pub(crate) fn die_by_default(signal: c_int) {
    // SAFETY: sigaction and raise are async-signal-safe. The signal is
    // blocked while its handler runs, so the raised one is delivered, with
    // the default action, as soon as the handler returns: the process ends
    // (with a core where enabled) in the context that faulted.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &action, std::ptr::null_mut());
        libc::raise(signal);
    }
}

/// Writes the CRITICAL line and the backtrace to the log descriptor.
fn report(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let fd = LOG_FD.load(Ordering::Relaxed);
    let mut line = Line::new();
    line.timestamp_and_pid(b"CRITICAL");
    line.push(match ROLE.load(Ordering::Relaxed) {
        1 => b"Arbiter",
        2 => b"Worker",
        _ => b"Process",
    });
    line.push(b" (pid:");
    // SAFETY: getpid is async-signal-safe.
    line.decimal(unsafe { libc::getpid() } as u64);
    line.push(b") received fatal signal ");
    line.push(signal_name(signal));
    if !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
        let info = unsafe { &*info };
        describe_origin(&mut line, signal, info);
    }
    line.push(b", pc ");
    line.hex(program_counter(context) as u64);
    line.push(b"; native backtrace:\n");
    line.write_to(fd);
    write_backtrace(fd);
    let mut tail = Line::new();
    tail.timestamp_and_pid(b"CRITICAL");
    tail.push(b"Ending with ");
    tail.push(signal_name(signal));
    tail.push(b"'s default action (a core is dumped where enabled: ulimit -c, /proc/sys/kernel/core_pattern)\n");
    tail.write_to(fd);
}

/// What raised the signal: the faulting address, or who sent it.
fn describe_origin(line: &mut Line, signal: c_int, info: &libc::siginfo_t) {
    if info.si_code <= 0 {
        // SI_USER, SI_QUEUE, SI_TKILL: sent by a process (kill, raise, abort).
        line.push(b" sent by pid ");
        // SAFETY: for these codes the kernel filled in the sender's pid and uid.
        let (pid, uid) = unsafe { (info.si_pid(), info.si_uid()) };
        line.decimal(pid as u64);
        line.push(b" (uid ");
        line.decimal(u64::from(uid));
        line.push(b")");
        return;
    }
    if FAULTS.contains(&signal) {
        line.push(b" (");
        line.push(fault_code_name(signal, info.si_code));
        line.push(b") at address ");
        // SAFETY: for a fault the kernel filled in the faulting address.
        line.hex(unsafe { info.si_addr() } as u64);
    }
}

fn program_counter(context: *mut c_void) -> usize {
    if context.is_null() {
        return 0;
    }
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let uc = unsafe { &*(context as *const libc::ucontext_t) };
    #[cfg(target_arch = "x86_64")]
    {
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize
    }
    #[cfg(target_arch = "aarch64")]
    {
        uc.uc_mcontext.pc as usize
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = uc;
        0
    }
}

fn write_backtrace(fd: c_int) {
    #[cfg(target_env = "gnu")]
    {
        const MAX_FRAMES: usize = 64;
        let mut frames = [std::ptr::null_mut::<c_void>(); MAX_FRAMES];
        // SAFETY: the buffer holds MAX_FRAMES entries; the unwinder was loaded
        // by `install`, so this call does not allocate.
        let count = unsafe { libc::backtrace(frames.as_mut_ptr(), MAX_FRAMES as c_int) };
        for (i, frame) in frames.iter().take(count.max(0) as usize).enumerate() {
            let mut prefix = Line::new();
            prefix.push(b"    #");
            prefix.decimal(i as u64);
            prefix.push(b" ");
            prefix.write_to(fd);
            // SAFETY: one valid frame address; backtrace_symbols_fd writes the
            // symbolised line (with its newline) without allocating.
            unsafe { libc::backtrace_symbols_fd(frame, 1, fd) };
        }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let mut line = Line::new();
        line.push(b"    (no backtrace on this C library)\n");
        line.write_to(fd);
    }
}

fn signal_name(signal: c_int) -> &'static [u8] {
    match signal {
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGBUS => b"SIGBUS",
        libc::SIGILL => b"SIGILL",
        libc::SIGFPE => b"SIGFPE",
        libc::SIGTRAP => b"SIGTRAP",
        libc::SIGSYS => b"SIGSYS",
        libc::SIGABRT => b"SIGABRT",
        libc::SIGUSR2 => b"SIGUSR2",
        libc::SIGPROF => b"SIGPROF",
        libc::SIGALRM => b"SIGALRM",
        libc::SIGVTALRM => b"SIGVTALRM",
        libc::SIGXCPU => b"SIGXCPU",
        libc::SIGXFSZ => b"SIGXFSZ",
        libc::SIGPWR => b"SIGPWR",
        libc::SIGSTKFLT => b"SIGSTKFLT",
        libc::SIGIO => b"SIGIO",
        _ => b"(unknown signal)",
    }
}

fn fault_code_name(signal: c_int, code: c_int) -> &'static [u8] {
    match (signal, code) {
        (libc::SIGSEGV, 1) => b"SEGV_MAPERR: no mapping",
        (libc::SIGSEGV, 2) => b"SEGV_ACCERR: access denied",
        (libc::SIGBUS, 1) => b"BUS_ADRALN: misaligned",
        (libc::SIGBUS, 2) => b"BUS_ADRERR: no such physical address",
        (libc::SIGBUS, 3) => b"BUS_OBJERR: object error",
        (libc::SIGFPE, 1) => b"FPE_INTDIV: integer divide by zero",
        (libc::SIGILL, 1) => b"ILL_ILLOPC: illegal opcode",
        _ => b"fault",
    }
}

/// One log line built without allocating.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn decimal(&mut self, n: u64) {
        self.push(crate::sys::decimal(n, &mut [0u8; 20]));
    }

    fn two_digits(&mut self, n: u64) {
        self.push(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
    }

    fn hex(&mut self, n: u64) {
        let mut digits = [0u8; 18];
        digits[0] = b'0';
        digits[1] = b'x';
        for i in 0..16 {
            let nibble = (n >> (60 - 4 * i)) & 0xf;
            digits[2 + i] = b"0123456789abcdef"[nibble as usize];
        }
        self.push(&digits);
    }

    /// `[2026-11-25 14:00:00 +0000] [pid] [LEVEL] `, as src/log.ts writes it.
    fn timestamp_and_pid(&mut self, level: &[u8]) {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime is async-signal-safe and writes a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        let offset = UTC_OFFSET_SECONDS.load(Ordering::Relaxed);
        let local = ts.tv_sec + offset;
        let (year, month, day) = civil_from_days(local.div_euclid(86_400));
        let seconds = local.rem_euclid(86_400) as u64;
        self.push(b"[");
        self.decimal(year as u64);
        self.push(b"-");
        self.two_digits(month);
        self.push(b"-");
        self.two_digits(day);
        self.push(b" ");
        self.two_digits(seconds / 3600);
        self.push(b":");
        self.two_digits(seconds / 60 % 60);
        self.push(b":");
        self.two_digits(seconds % 60);
        self.push(if offset < 0 { b" -" } else { b" +" });
        let minutes = offset.unsigned_abs() / 60;
        self.two_digits(minutes / 60);
        self.two_digits(minutes % 60);
        self.push(b"] [");
        // SAFETY: getpid is async-signal-safe.
        self.decimal(unsafe { libc::getpid() } as u64);
        self.push(b"] [");
        self.push(level);
        self.push(b"] ");
    }

    fn write_to(&self, fd: c_int) {
        let mut written = 0;
        while written < self.len {
            // SAFETY: write(2) is async-signal-safe; the range is within buf.
            let n = unsafe {
                libc::write(
                    fd,
                    self.buf[written..self.len].as_ptr().cast(),
                    self.len - written,
                )
            };
            if n <= 0 {
                return;
            }
            written += n as usize;
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm; no table, no allocation).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Run by `a_real_fault_...` in a child process of the test binary.
    #[test]
    #[ignore = "a helper: faults on purpose, run in a child process"]
    fn fault_on_purpose() {
        // The test binary's std set a SIGSEGV handler (stack overflows):
        // a worker process has none of its own.
        // SAFETY: resetting a disposition to the default.
        unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
        install(Role::Worker);
        // SAFETY: none; this reads an unmapped address to fault for real.
        unsafe { std::ptr::read_volatile(16 as *const u8) };
    }

    #[test]
    fn a_real_fault_is_reported_with_its_address_and_ends_by_its_signal() {
        use std::os::unix::process::ExitStatusExt;
        let exe = std::env::current_exe().unwrap();
        let out = Command::new(exe)
            .args([
                "--ignored",
                "--exact",
                "fatal::tests::fault_on_purpose",
                "--nocapture",
            ])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{log}");
        assert!(
            log.contains(
                "received fatal signal SIGSEGV (SEGV_MAPERR: no mapping) at address 0x0000000000000010, pc 0x"
            ),
            "{log}"
        );
        assert!(log.contains("] [CRITICAL] Worker (pid:"), "{log}");
        assert!(log.contains("    #0 "), "a backtrace: {log}");
        assert!(
            log.contains("Ending with SIGSEGV's default action"),
            "{log}"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn line_formats_numbers_and_stops_at_its_size() {
        let mut line = Line::new();
        line.decimal(0);
        line.push(b" ");
        line.decimal(4_294_967_296);
        line.push(b" ");
        line.hex(0xdead);
        assert_eq!(&line.buf[..line.len], b"0 4294967296 0x000000000000dead");
        for _ in 0..100 {
            line.push(b"0123456789");
        }
        assert_eq!(line.len, 512);
    }

    #[test]
    fn timestamp_has_the_log_shape() {
        let mut line = Line::new();
        line.timestamp_and_pid(b"CRITICAL");
        let text = String::from_utf8_lossy(&line.buf[..line.len]).into_owned();
        // [YYYY-MM-DD HH:MM:SS +HHMM] [pid] [CRITICAL]
        let bytes = text.as_bytes();
        assert_eq!(bytes[0], b'[');
        assert_eq!(bytes[5], b'-');
        assert_eq!(bytes[11], b' ');
        assert_eq!(bytes[14], b':');
        assert!(text.ends_with("] [CRITICAL] "), "{text}");
        assert!(
            text.contains(&format!("] [{}] [", std::process::id())),
            "{text}"
        );
    }
}
