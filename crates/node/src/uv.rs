//! The few libuv functions the addon needs, from the node binary that
//! loads it (node exports libuv's API for addons).

use std::ffi::{c_int, c_void};

const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;

pub type PollCb = unsafe extern "C" fn(handle: *mut c_void, status: c_int, events: c_int);
type CloseCb = unsafe extern "C" fn(handle: *mut c_void);

extern "C" {
    fn uv_handle_size(kind: c_int) -> usize;
    fn uv_poll_init(lp: *mut c_void, handle: *mut c_void, fd: c_int) -> c_int;
    fn uv_poll_start(handle: *mut c_void, events: c_int, cb: PollCb) -> c_int;
    fn uv_poll_stop(handle: *mut c_void) -> c_int;
    fn uv_close(handle: *mut c_void, cb: CloseCb);
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
