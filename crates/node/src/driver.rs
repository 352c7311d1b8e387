//! Runs the engine on the JavaScript thread: one uv_poll on the engine's
//! epoll fd; each readiness is one turn, inside one callback scope, in which
//! the collected events are handed to JavaScript with plain arguments.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::ptr;

use napi::sys;
use rwsgi_core::{Engine, Event};

/// Request flag bits passed to `onRequest`.
pub const FLAG_KEEP_ALIVE: u32 = 1;
pub const FLAG_HAS_BODY: u32 = 2;
pub const FLAG_EXPECT_CONTINUE: u32 = 4;
pub const FLAG_HTTP10: u32 = 8;

/// The JavaScript functions the engine's events are delivered to.
pub struct Callbacks {
    pub on_request: sys::napi_ref,
    pub on_body: sys::napi_ref,
    pub on_body_end: sys::napi_ref,
    pub on_close: sys::napi_ref,
    pub on_drain: sys::napi_ref,
    pub on_accept_paused: sys::napi_ref,
    pub on_peer_shutdown: sys::napi_ref,
}

pub struct Driver {
    pub engine: RefCell<Engine>,
    /// Argument buffers of the per-response calls (see fast.rs).
    pub scratch: RefCell<crate::fast::Scratch>,
    pub env: sys::napi_env,
    pub callbacks: Callbacks,
    pub resource: sys::napi_ref,
    pub async_context: sys::napi_async_context,
}

struct Napi(sys::napi_env);

impl Napi {
    fn deref(&self, r: sys::napi_ref) -> sys::napi_value {
        let mut v = ptr::null_mut();
        // SAFETY: r is a live reference created on this env.
        unsafe { sys::napi_get_reference_value(self.0, r, &mut v) };
        v
    }

    fn number(&self, n: f64) -> sys::napi_value {
        let mut v = ptr::null_mut();
        // SAFETY: plain value creation on the JS thread.
        unsafe { sys::napi_create_double(self.0, n, &mut v) };
        v
    }

    fn latin1(&self, bytes: &[u8]) -> sys::napi_value {
        let mut v = ptr::null_mut();
        // SAFETY: bytes is a valid buffer of the given length.
        unsafe {
            sys::napi_create_string_latin1(
                self.0,
                bytes.as_ptr().cast(),
                bytes.len() as isize,
                &mut v,
            )
        };
        v
    }

    fn buffer(&self, bytes: &[u8]) -> sys::napi_value {
        let mut v = ptr::null_mut();
        let mut data = ptr::null_mut();
        // SAFETY: bytes is valid for reads of its length; the copy is owned by JS.
        unsafe {
            sys::napi_create_buffer_copy(
                self.0,
                bytes.len(),
                bytes.as_ptr().cast(),
                &mut data,
                &mut v,
            )
        };
        v
    }

    fn undefined(&self) -> sys::napi_value {
        let mut v = ptr::null_mut();
        // SAFETY: plain value access on the JS thread.
        unsafe { sys::napi_get_undefined(self.0, &mut v) };
        v
    }

    /// Calls `f`; an exception it throws is reported as uncaught, the way
    /// Node reports exceptions from any other I/O callback.
    fn call(&self, f: sys::napi_ref, args: &[sys::napi_value]) {
        let func = self.deref(f);
        let recv = self.undefined();
        let mut result = ptr::null_mut();
        // SAFETY: func is a function value; args are live values of this scope.
        let status = unsafe {
            sys::napi_call_function(self.0, recv, func, args.len(), args.as_ptr(), &mut result)
        };
        if status == sys::Status::napi_pending_exception {
            let mut err = ptr::null_mut();
            // SAFETY: an exception is pending; clear it before any other call.
            unsafe {
                sys::napi_get_and_clear_last_exception(self.0, &mut err);
                sys::napi_fatal_exception(self.0, err);
            }
        }
    }
}

impl Driver {
    /// One loop turn: poll the engine, deliver its events, let promise jobs
    /// run (closing the callback scope), then flush the corked output.
    pub fn turn(&self) {
        let napi = Napi(self.env);
        let mut handle_scope = ptr::null_mut();
        let mut callback_scope = ptr::null_mut();
        // SAFETY: we are on the JS thread, inside a libuv callback.
        unsafe {
            sys::napi_open_handle_scope(self.env, &mut handle_scope);
            let resource = napi.deref(self.resource);
            sys::napi_open_callback_scope(
                self.env,
                resource,
                self.async_context,
                &mut callback_scope,
            );
        }
        let (events, arena) = match self.engine.try_borrow_mut() {
            Ok(mut engine) => {
                engine.begin_turn();
                engine.poll();
                (
                    std::mem::take(&mut engine.events),
                    std::mem::take(&mut engine.arena),
                )
            }
            Err(_) => (Vec::new(), Vec::new()),
        };
        for event in &events {
            self.deliver(&napi, event, &arena);
        }
        if let Ok(mut engine) = self.engine.try_borrow_mut() {
            // Give the allocations back for the next turn.
            let (mut events, mut arena) = (events, arena);
            if engine.events.is_empty() {
                events.clear();
                arena.clear();
                engine.events = events;
                engine.arena = arena;
            }
        }
        // SAFETY: closing the scopes opened above, innermost first.
        unsafe {
            sys::napi_close_callback_scope(self.env, callback_scope);
        }
        if let Ok(mut engine) = self.engine.try_borrow_mut() {
            engine.end_turn();
        }
        // SAFETY: as above.
        unsafe {
            sys::napi_close_handle_scope(self.env, handle_scope);
        }
    }

    fn deliver(&self, napi: &Napi, event: &Event, arena: &[u8]) {
        let cb = &self.callbacks;
        let bytes = |r: &std::ops::Range<usize>| arena.get(r.clone()).unwrap_or(&[]);
        match event {
            Event::Request {
                conn,
                method,
                url,
                headers,
                http_minor,
                keep_alive,
                has_body,
                expect_continue,
                peer_ip,
                peer_port,
                local_port,
                ..
            } => {
                let flags = (if *keep_alive { FLAG_KEEP_ALIVE } else { 0 })
                    | (if *has_body { FLAG_HAS_BODY } else { 0 })
                    | (if *expect_continue {
                        FLAG_EXPECT_CONTINUE
                    } else {
                        0
                    })
                    | (if *http_minor == 0 { FLAG_HTTP10 } else { 0 });
                let args = [
                    napi.number(*conn as f64),
                    napi.latin1(method.as_bytes()),
                    napi.latin1(bytes(url)),
                    napi.latin1(bytes(headers)),
                    napi.number(f64::from(flags)),
                    napi.latin1(bytes(peer_ip)),
                    napi.number(f64::from(*peer_port)),
                    napi.number(f64::from(*local_port)),
                ];
                napi.call(cb.on_request, &args);
            }
            Event::Body { conn, data } => {
                napi.call(
                    cb.on_body,
                    &[napi.number(*conn as f64), napi.buffer(bytes(data))],
                );
            }
            Event::BodyEnd { conn } => napi.call(cb.on_body_end, &[napi.number(*conn as f64)]),
            Event::Closed { conn } => napi.call(cb.on_close, &[napi.number(*conn as f64)]),
            Event::PeerShutdown { conn } => {
                napi.call(cb.on_peer_shutdown, &[napi.number(*conn as f64)])
            }
            Event::Drain { conn } => napi.call(cb.on_drain, &[napi.number(*conn as f64)]),
            Event::AcceptPaused { reason } => {
                napi.call(cb.on_accept_paused, &[napi.latin1(reason.as_bytes())])
            }
        }
    }
}

/// The uv_poll callback. Panics must not cross into libuv.
pub unsafe extern "C" fn on_readable(handle: *mut c_void, _status: c_int, _events: c_int) {
    let driver = crate::uv::Poll::data_of(handle) as *const Driver;
    if driver.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (*driver).turn()));
}
