//! The JavaScript stack of the worker's main thread, on the arbiter's
//! request, even while a handler spins in `while (true) {}`.
//!
//! The arbiter sends a signal; its handler only writes a byte to a wake-up
//! pipe (nothing else is async-signal-safe). The addon's native thread (the
//! one that writes busy notes: one writer on the arbiter pipe) wakes, calls
//! `v8::Isolate::RequestInterrupt` — V8 runs the callback on the main thread
//! at its next interrupt check, which every loop back edge and function entry
//! makes — and also wakes the libuv loop, for a worker that is idle in it.
//! Whichever runs first reads the stack with V8's `StackTrace` API under a
//! `HandleScope` (no JavaScript runs there) and hands the line back to the
//! native thread, which writes it. A main thread blocked in a system call
//! runs neither, and the arbiter says so when no line comes.
//!
//! The V8 functions are C++ and looked up with dlsym in the node binary, as
//! llhttp is; the layouts and names were checked on V8 11.3 only
//! (`js_stack::check_v8_version`), other versions answer "unavailable".

use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use rwsgi_core::js_stack::{self, Frame, MAX_FRAMES};

use crate::uv;

type Isolate = c_void;
/// A `v8::Local<T>`: one pointer, returned in a register (trivially copyable).
type Local = *mut c_void;
type InterruptCb = unsafe extern "C" fn(*mut Isolate, *mut c_void);

/// `v8::HandleScope` of V8 11.3: `i_isolate_`, `prev_next_`, `prev_limit_`.
#[repr(C)]
struct HandleScope {
    _fields: [*mut c_void; 3],
}

/// `v8::Location`: line and column from 0, returned in one register.
#[repr(C)]
struct Location {
    line: c_int,
    column: c_int,
}

/// `StackTrace::kOverview`: line, column, script name, function name.
const STACK_TRACE_OVERVIEW: c_int = 0b1111;
/// Frames captured, to tell how deep the stack is beyond the ones shown.
const CAPTURE_LIMIT: c_int = 200;
/// `String::REPLACE_INVALID_UTF8 | String::NO_NULL_TERMINATION`.
const WRITE_UTF8_OPTIONS: c_int = 8 | 2;
/// Longest function or file name kept, in bytes.
const NAME_MAX: usize = 1024;

// The C++ signatures, with `this` first for member functions (Itanium C++ ABI).
type VersionFn = unsafe extern "C" fn() -> *const c_char;
type CurrentIsolateFn = unsafe extern "C" fn() -> *mut Isolate;
type RequestInterruptFn = unsafe extern "C" fn(*mut Isolate, InterruptCb, *mut c_void);
type ScopeOpenFn = unsafe extern "C" fn(*mut HandleScope, *mut Isolate);
type ScopeCloseFn = unsafe extern "C" fn(*mut HandleScope);
type CurrentStackTraceFn = unsafe extern "C" fn(*mut Isolate, c_int, c_int) -> Local;
type FrameCountFn = unsafe extern "C" fn(Local) -> c_int;
type FrameFn = unsafe extern "C" fn(Local, *mut Isolate, u32) -> Local;
type LocationFn = unsafe extern "C" fn(Local) -> Location;
type NameFn = unsafe extern "C" fn(Local) -> Local;
type WriteUtf8Fn =
    unsafe extern "C" fn(Local, *mut Isolate, *mut c_char, c_int, *mut c_int, c_int) -> c_int;

/// The V8 entry points used.
struct V8 {
    request_interrupt: RequestInterruptFn,
    scope_open: ScopeOpenFn,
    scope_close: ScopeCloseFn,
    current_stack_trace: CurrentStackTraceFn,
    frame_count: FrameCountFn,
    frame: FrameFn,
    location: LocationFn,
    script_name: NameFn,
    function_name: NameFn,
    write_utf8: WriteUtf8Fn,
}

fn lookup(name: &CStr) -> Result<*mut c_void> {
    rwsgi_core::sys::host_symbol(name).map_err(Error::from_reason)
}

macro_rules! resolve {
    ($name:literal, $ty:ty) => {{
        let sym = lookup($name)?;
        // SAFETY: the symbol is the V8 11.3 function the mangled name names
        // (the version is checked before), whose C++ signature, with `this`
        // first for members, is the field's type.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(sym) }
    }};
}

impl V8 {
    fn resolve() -> Result<V8> {
        Ok(V8 {
            request_interrupt: resolve!(
                c"_ZN2v87Isolate16RequestInterruptEPFvPS0_PvES2_",
                RequestInterruptFn
            ),
            scope_open: resolve!(c"_ZN2v811HandleScopeC1EPNS_7IsolateE", ScopeOpenFn),
            scope_close: resolve!(c"_ZN2v811HandleScopeD1Ev", ScopeCloseFn),
            current_stack_trace: resolve!(
                c"_ZN2v810StackTrace17CurrentStackTraceEPNS_7IsolateEiNS0_17StackTraceOptionsE",
                CurrentStackTraceFn
            ),
            frame_count: resolve!(c"_ZNK2v810StackTrace13GetFrameCountEv", FrameCountFn),
            frame: resolve!(c"_ZNK2v810StackTrace8GetFrameEPNS_7IsolateEj", FrameFn),
            location: resolve!(c"_ZNK2v810StackFrame11GetLocationEv", LocationFn),
            script_name: resolve!(c"_ZNK2v810StackFrame13GetScriptNameEv", NameFn),
            function_name: resolve!(c"_ZNK2v810StackFrame15GetFunctionNameEv", NameFn),
            write_utf8: resolve!(c"_ZNK2v86String9WriteUtf8EPNS_7IsolateEPciPii", WriteUtf8Fn),
        })
    }

    /// # Safety
    /// On the isolate's thread, with no JavaScript to run from here on.
    unsafe fn string(&self, isolate: *mut Isolate, s: Local) -> String {
        if s.is_null() {
            return String::new();
        }
        let mut buf = [0u8; NAME_MAX];
        let n = (self.write_utf8)(
            s,
            isolate,
            buf.as_mut_ptr().cast(),
            NAME_MAX as c_int,
            std::ptr::null_mut(),
            WRITE_UTF8_OPTIONS,
        );
        String::from_utf8_lossy(&buf[..(n.max(0) as usize).min(NAME_MAX)]).into_owned()
    }

    /// The `stack` line for the main thread's current stack.
    ///
    /// # Safety
    /// On the isolate's thread, in an interrupt or a loop callback.
    unsafe fn stack_line(&self, isolate: *mut Isolate) -> String {
        let mut scope = MaybeUninit::<HandleScope>::uninit();
        (self.scope_open)(scope.as_mut_ptr(), isolate);
        let trace = (self.current_stack_trace)(isolate, CAPTURE_LIMIT, STACK_TRACE_OVERVIEW);
        let total = if trace.is_null() {
            0
        } else {
            (self.frame_count)(trace).max(0) as u32
        };
        let mut frames = Vec::with_capacity(MAX_FRAMES);
        for i in 0..total.min(MAX_FRAMES as u32) {
            let frame = (self.frame)(trace, isolate, i);
            if frame.is_null() {
                break;
            }
            let at = (self.location)(frame);
            frames.push(Frame {
                function: self.string(isolate, (self.function_name)(frame)),
                file: self.string(isolate, (self.script_name)(frame)),
                line: at.line + 1,
                column: at.column + 1,
            });
        }
        (self.scope_close)(scope.as_mut_ptr());
        js_stack::stack_line(&frames, total as usize)
    }
}

/// What reading a stack takes, set up once on the main thread.
struct Reader {
    v8: V8,
    /// The main thread's isolate (an address: only used on that thread).
    isolate: usize,
    wake_loop: uv::Async,
}

/// The reader, or why this process has none.
static READER: OnceLock<std::result::Result<Reader, String>> = OnceLock::new();
/// The write end of the wake-up pipe (-1 until `enable_stack_reports`).
static WAKE: AtomicI32 = AtomicI32::new(-1);
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);
/// The signal came; the native thread has not asked V8 yet.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// An interrupt and a loop wake-up are out; the first to run reads the stack.
static ASKED: AtomicBool = AtomicBool::new(false);
/// A line read on the main thread, for the native thread to write.
static LINE: Mutex<Option<String>> = Mutex::new(None);

fn wake() {
    let fd = WAKE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) on our pipe is async-signal-safe; a full pipe
        // (EAGAIN) already holds a wake-up.
        unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
    }
}

extern "C" fn on_signal(_: c_int) {
    // SAFETY: reading and restoring errno, so the interrupted code sees its own.
    let errno = unsafe { *libc::__errno_location() };
    REQUESTED.store(true, Ordering::SeqCst);
    wake();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Reads the stack if it is still wanted (the interrupt and the loop
/// callback race; the first one answers).
fn answer(isolate: *mut Isolate) {
    if !ASKED.swap(false, Ordering::SeqCst) {
        return;
    }
    let Some(Ok(reader)) = READER.get() else {
        return;
    };
    // SAFETY: called on the main thread from a V8 interrupt or a libuv
    // callback, where V8's API may be used but no JavaScript runs.
    let line = unsafe { reader.v8.stack_line(isolate) };
    if let Ok(mut slot) = LINE.lock() {
        *slot = Some(line);
    }
    wake();
}

unsafe extern "C" fn on_interrupt(isolate: *mut Isolate, _: *mut c_void) {
    answer(isolate);
}

unsafe extern "C" fn on_loop_wake(_: *mut c_void) {
    if let Some(Ok(reader)) = READER.get() {
        answer(reader.isolate as *mut Isolate);
    }
}

/// From now on `signal` makes the worker write its main thread's stack as
/// a `stack` line to the arbiter pipe (see `wait_and_answer`); on a Node
/// whose V8 the binding was not checked against, the line says so.
#[napi]
pub fn enable_stack_reports(env: Env, signal: i32) -> Result<()> {
    let uv_loop = env.get_uv_event_loop()?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors of a live array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(Error::from_reason(format!(
            "cannot make the stack wake-up pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    READER.get_or_init(|| reader(uv_loop.cast()).map_err(|e| e.reason));
    WAKE_READ.store(fds[0], Ordering::SeqCst);
    WAKE.store(fds[1], Ordering::SeqCst);
    // SAFETY: a zeroed sigaction with a plain handler is valid; the handler
    // only stores an atomic and writes to a pipe (async-signal-safe).
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(signal, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(Error::from_reason(format!(
            "cannot handle signal {signal}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn reader(uv_loop: *mut c_void) -> Result<Reader> {
    if !cfg!(target_arch = "x86_64") {
        return Err(Error::from_reason(
            "the C++ calls are checked on x86-64 only",
        ));
    }
    let get_version = resolve!(c"_ZN2v82V810GetVersionEv", VersionFn);
    let get_current = resolve!(c"_ZN2v87Isolate10GetCurrentEv", CurrentIsolateFn);
    // SAFETY: V8::GetVersion returns a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(get_version()) }.to_string_lossy();
    js_stack::check_v8_version(&version).map_err(Error::from_reason)?;
    let v8 = V8::resolve()?;
    // SAFETY: called from JavaScript on the main thread, whose isolate this is.
    let isolate = unsafe { get_current() } as usize;
    // SAFETY: `uv_loop` is this (main) thread's running loop.
    let wake_loop =
        unsafe { uv::Async::start(uv_loop, on_loop_wake) }.map_err(Error::from_reason)?;
    Ok(Reader {
        v8,
        isolate,
        wake_loop,
    })
}

/// The native thread's wait between its checks: up to `timeout` for a
/// stack request or a stack read, and then asks V8 or writes the line to
/// `fd`. Without stack reports it just sleeps.
pub fn wait_and_answer(fd: c_int, timeout: Duration) {
    let wake_read = WAKE_READ.load(Ordering::SeqCst);
    if wake_read < 0 {
        std::thread::sleep(timeout);
        return;
    }
    let mut pfd = libc::pollfd {
        fd: wake_read,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut drain = [0u8; 64];
    // SAFETY: poll on one live pollfd; read into a live buffer of its size
    // (the pipe is non-blocking).
    unsafe {
        libc::poll(
            &mut pfd,
            1,
            timeout.as_millis().min(i32::MAX as u128) as c_int,
        );
        while libc::read(wake_read, drain.as_mut_ptr().cast(), drain.len()) > 0 {}
    }
    if REQUESTED.swap(false, Ordering::SeqCst) {
        ask_main_thread(fd);
    }
    let line = LINE.lock().ok().and_then(|mut slot| slot.take());
    if let Some(line) = line {
        write_line(fd, &line);
    }
}

/// Asks V8 for an interrupt and the loop for a wake-up, unless both are
/// out already; a worker without stacks answers at once.
fn ask_main_thread(fd: c_int) {
    match READER.get() {
        Some(Ok(reader)) if !ASKED.swap(true, Ordering::SeqCst) => {
            // SAFETY: RequestInterrupt is thread-safe; the isolate lives as
            // long as the process.
            unsafe {
                (reader.v8.request_interrupt)(
                    reader.isolate as *mut Isolate,
                    on_interrupt,
                    std::ptr::null_mut(),
                )
            };
            reader.wake_loop.send();
        }
        Some(Err(reason)) => write_line(fd, &js_stack::unavailable_line(reason)),
        _ => {}
    }
}

/// Writes one message line to the arbiter pipe from the native thread.
pub fn write_line(fd: c_int, line: &str) {
    // SAFETY: `fd` is the arbiter pipe, open for the process's life; `line`
    // is a live buffer of `line.len()` bytes. A write below PIPE_BUF is
    // atomic, so it never tears a line JavaScript writes.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}
