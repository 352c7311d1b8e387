//! Runs the engine on the JavaScript thread: one uv_poll on the engine's
//! epoll fd; each readiness is one turn, inside one callback scope, in which
//! the collected events are handed to JavaScript with plain arguments.
//!
//! Requests go over in batches: a run of request events becomes one call,
//! `onRequests(count, text)`, with each request's numbers in a shared
//! Float64Array (`REQUEST_STRIDE` slots each) and its strings as offsets
//! into `text`, one Latin-1 string of the turn's buffer. Per request that
//! saves a JavaScript call and several N-API values.

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

/// Slots per request in the shared request table, in this order:
/// conn, flags, method index, url start/end, headers start/end, peer IP
/// start/end, peer port, local port (offsets index the batch's text).
pub const REQUEST_STRIDE: usize = 11;

/// The most text one batch spans (unless one request's head is longer):
/// strings JavaScript cuts from the text keep all of it alive, so an app
/// that keeps a URL keeps at most about this much, as it would keep one
/// request's head if each request had its own string.
const BATCH_TEXT_LIMIT: usize = 4096;

/// The shared request table: memory owned by a Float64Array the driver
/// holds a reference to.
pub struct RequestTable {
    pub slots: *mut f64,
    /// In requests.
    pub capacity: usize,
    pub _array: sys::napi_ref,
}

/// The JavaScript functions the engine's events are delivered to.
pub struct Callbacks {
    pub on_requests: sys::napi_ref,
    pub on_method: sys::napi_ref,
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
    pub table: RequestTable,
    /// Method names in the order JavaScript was told of them (`onMethod`).
    pub methods: RefCell<Vec<&'static str>>,
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
    /// The engine, for a call from JavaScript; refused while a turn holds it.
    pub fn engine_mut(&self) -> Result<std::cell::RefMut<'_, Engine>, String> {
        self.engine
            .try_borrow_mut()
            .map_err(|_| "rwsgi engine re-entered".to_string())
    }

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
        let mut batch = Batch::default();
        for event in &events {
            if let Event::Request {
                url,
                headers,
                peer_ip,
                ..
            } = event
            {
                let (start, end) = batch.span_with([url, headers, peer_ip]);
                if batch.count == self.table.capacity
                    || (batch.count > 0 && end - start > BATCH_TEXT_LIMIT)
                {
                    self.flush(&napi, &mut batch, &arena);
                }
                self.record(&napi, &mut batch, event);
            } else {
                self.flush(&napi, &mut batch, &arena);
                self.deliver(&napi, event, &arena);
            }
        }
        self.flush(&napi, &mut batch, &arena);
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

    /// The index JavaScript knows `method` by, telling it of a new one.
    fn method_index(&self, napi: &Napi, method: &'static str) -> usize {
        let mut methods = self.methods.borrow_mut();
        if let Some(i) = methods.iter().position(|m| std::ptr::eq(*m, method)) {
            return i;
        }
        methods.push(method);
        let i = methods.len() - 1;
        drop(methods);
        napi.call(
            self.callbacks.on_method,
            &[napi.number(i as f64), napi.latin1(method.as_bytes())],
        );
        i
    }

    /// Adds one request event to the shared table.
    fn record(&self, napi: &Napi, batch: &mut Batch, event: &Event) {
        let Event::Request {
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
        } = event
        else {
            return;
        };
        let flags = (if *keep_alive { FLAG_KEEP_ALIVE } else { 0 })
            | (if *has_body { FLAG_HAS_BODY } else { 0 })
            | (if *expect_continue {
                FLAG_EXPECT_CONTINUE
            } else {
                0
            })
            | (if *http_minor == 0 { FLAG_HTTP10 } else { 0 });
        let method = self.method_index(napi, method);
        (batch.start, batch.end) = batch.span_with([url, headers, peer_ip]);
        let row = [
            *conn as f64,
            f64::from(flags),
            method as f64,
            url.start as f64,
            url.end as f64,
            headers.start as f64,
            headers.end as f64,
            peer_ip.start as f64,
            peer_ip.end as f64,
            f64::from(*peer_port),
            f64::from(*local_port),
        ];
        // SAFETY: count < capacity (checked by the caller), and the table
        // holds capacity * REQUEST_STRIDE slots.
        unsafe {
            std::ptr::copy_nonoverlapping(
                row.as_ptr(),
                self.table.slots.add(batch.count * REQUEST_STRIDE),
                REQUEST_STRIDE,
            );
        }
        batch.count += 1;
    }

    /// Hands the recorded requests to JavaScript, with offsets made
    /// relative to the text passed along.
    fn flush(&self, napi: &Napi, batch: &mut Batch, arena: &[u8]) {
        if batch.count == 0 {
            return;
        }
        let base = batch.start as f64;
        // SAFETY: the first count rows were written by `record`.
        let rows = unsafe {
            std::slice::from_raw_parts_mut(self.table.slots, batch.count * REQUEST_STRIDE)
        };
        for row in rows.chunks_exact_mut(REQUEST_STRIDE) {
            for offset in &mut row[3..9] {
                *offset -= base;
            }
        }
        let text = arena.get(batch.start..batch.end).unwrap_or(&[]);
        napi.call(
            self.callbacks.on_requests,
            &[napi.number(batch.count as f64), napi.latin1(text)],
        );
        *batch = Batch::default();
    }

    fn deliver(&self, napi: &Napi, event: &Event, arena: &[u8]) {
        let cb = &self.callbacks;
        let bytes = |r: &std::ops::Range<usize>| arena.get(r.clone()).unwrap_or(&[]);
        match event {
            // Batched by `record` and `flush`.
            Event::Request { .. } | Event::Rejected { .. } => {}
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

/// A run of request events not yet handed over: how many, and the span of
/// the turn's buffer their strings lie in.
struct Batch {
    count: usize,
    start: usize,
    end: usize,
}

impl Batch {
    /// The span of the turn's buffer the batch covers with `ranges` added.
    fn span_with(&self, ranges: [&std::ops::Range<usize>; 3]) -> (usize, usize) {
        ranges
            .iter()
            .fold((self.start, self.end), |(start, end), r| {
                (start.min(r.start), end.max(r.end))
            })
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            count: 0,
            start: usize::MAX,
            end: 0,
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
