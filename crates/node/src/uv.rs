//! The few libuv functions the addon needs, from the node binary that
//! loads it (node exports libuv's API for addons).

use std::ffi::{c_int, c_void};

const UV_ASYNC: c_int = 1;
const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;

pub type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
pub type AsyncCb = unsafe extern "C" fn(handle: *mut c_void);
type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(lp: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCb) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
    fn uv_close(handle: *mut c_void, cb: CloseCb);
    fn uv_async_init(lp: *mut c_void, handle: *mut c_void, cb: AsyncCb) -> c_int;
    fn uv_async_send(handle: *mut c_void) -> c_int;
    fn uv_unref(handle: *mut c_void);
}

/// A `uv_async_t` for the process's life: any thread may `send`, and its
/// callback then runs on the loop's thread. It does not keep the loop alive.
#[derive(Clone, Copy)]
pub struct Async {
    handle: *mut c_void,
}

// SAFETY: uv_async_send, the only call made through a shared `Async`, is
// thread-safe (libuv's one cross-thread entry point).
unsafe impl Send for Async {}
// SAFETY: as for Send.
unsafe impl Sync for Async {}

impl Async {
    /// # Safety
    /// `uv_loop` must be the running loop of this thread.
    pub unsafe fn start(uv_loop: *mut c_void, cb: AsyncCb) -> Result<Async, String> {
        let handle = libc::calloc(1, uv_handle_size(UV_ASYNC));
        if handle.is_null() {
            return Err("out of memory for uv_async_t".into());
        }
        let rc = uv_async_init(uv_loop, handle, cb);
        if rc != 0 {
            libc::free(handle);
            return Err(format!("uv_async_init failed: {rc}"));
        }
        uv_unref(handle);
        Ok(Async { handle })
    }

    /// Runs the callback on the loop's thread soon (once for many sends).
    pub fn send(self) {
        // SAFETY: the handle was initialised by `start` and is never closed.
        unsafe { uv_async_send(self.handle) };
    }
}

/// A `uv_poll_t` watching one fd for readability. Its first field (`data`,
/// as in every uv handle) carries the owner's pointer to the callback.
pub struct Poll {
    handle: *mut c_void,
}

unsafe extern "C" fn free_handle(handle: *mut c_void) {
    libc::free(handle);
}

impl Poll {
    /// # Safety
    /// `uv_loop` must be the running loop of this thread; `data` must stay
    /// valid until `close`.
    pub unsafe fn start(
        uv_loop: *mut c_void,
        fd: c_int,
        data: *mut c_void,
        cb: PollCb,
    ) -> Result<Poll, String> {
        let handle = libc::calloc(1, uv_handle_size(UV_POLL));
        if handle.is_null() {
            return Err("out of memory for uv_poll_t".into());
        }
        let rc = uv_poll_init(uv_loop, handle, fd);
        if rc != 0 {
            libc::free(handle);
            return Err(format!("uv_poll_init failed: {rc}"));
        }
        *(handle as *mut *mut c_void) = data;
        let rc = uv_poll_start(handle, UV_READABLE, cb);
        if rc != 0 {
            uv_close(handle, free_handle);
            return Err(format!("uv_poll_start failed: {rc}"));
        }
        Ok(Poll { handle })
    }

    /// The `data` pointer given to `start`.
    ///
    /// # Safety
    /// `handle` must be a handle created by `start`.
    pub unsafe fn data_of(handle: *mut c_void) -> *mut c_void {
        *(handle as *mut *mut c_void)
    }

    /// Stops watching and frees the handle once libuv is done with it.
    pub fn close(self) {
        // SAFETY: the handle is live; uv_close frees it through free_handle.
        unsafe {
            uv_poll_stop(self.handle);
            uv_close(self.handle, free_handle);
        }
    }
}
