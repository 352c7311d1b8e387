//! Runs the engine on the JavaScript thread: one uv_poll on the engine's
//! epoll fd; each readiness is one turn, inside one callback scope, in which
//! the collected events are handed to JavaScript with plain arguments.
//!
//! Requests go over in batches: a run of request events becomes one call,
//! `onRequests(count, text)`, with each request's numbers in a shared
//! Float64Array (`REQUEST_STRIDE` slots each) and its strings as offsets
//! into `text`, one Latin-1 string of the turn's buffer. Per request that
//! saves a JavaScript call and several N-API values.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::ptr;
use std::time::Duration;

use napi::sys;
use rwsgi_core::{busy_poll, Engine, Event};

use crate::contract::{
    Slot, FLAG_CLIENT_CERT, FLAG_EXPECT_CONTINUE, FLAG_HAS_BODY, FLAG_HTTP10, FLAG_HTTPS,
    FLAG_KEEP_ALIVE, FLAG_SAME_HEADERS, FLAG_TLS, REQUEST_STRIDE, TEXT_OFFSETS,
};
use crate::fast::{self, Scratch};
use crate::js::{check, log_failure};

/// The most text one batch spans (unless one request's head is longer):
/// strings JavaScript cuts from the text keep all of it alive, so an app
/// that keeps a URL keeps at most about this much, as it would keep one
/// request's head if each request had its own string.
const BATCH_TEXT_LIMIT: usize = 4096;

/// A table shared with JavaScript: memory owned by a Float64Array the
/// driver holds a reference to.
pub struct Table {
    pub slots: *mut f64,
    pub len: usize,
    /// Keeps the array (and so its memory) alive while the server is open.
    pub array: sys::napi_ref,
}

/// The repeat table's count while JavaScript may not add to it.
const REPEATS_CLOSED: f64 = -1.0;

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
    pub on_rejected: sys::napi_ref,
    pub on_capacity: sys::napi_ref,
}

impl Callbacks {
    fn all(&self) -> [sys::napi_ref; 10] {
        [
            self.on_requests,
            self.on_method,
            self.on_body,
            self.on_body_end,
            self.on_close,
            self.on_drain,
            self.on_accept_paused,
            self.on_peer_shutdown,
            self.on_rejected,
            self.on_capacity,
        ]
    }
}

pub struct Driver {
    pub engine: RefCell<Engine>,
    pub env: sys::napi_env,
    pub callbacks: Callbacks,
    /// Where each batch of requests is written (`REQUEST_STRIDE` slots each).
    pub table: Table,
    /// `contract::REPEAT_TABLE`: during `onRequests`, a response equal to
    /// the last one costs JavaScript two stores instead of a call (N-API's
    /// call and argument checks were a tenth of a pipelined hello world);
    /// the driver answers them when the call returns, or before any call
    /// from JavaScript that could write to a connection.
    pub repeats: Table,
    /// The last response's status, headers and body (see fast.rs).
    pub scratch: RefCell<Scratch>,
    /// Method names in the order JavaScript was told of them (`onMethod`).
    pub methods: RefCell<Vec<&'static str>>,
    pub resource: sys::napi_ref,
    pub async_context: sys::napi_async_context,
    /// The references and the async context are released (see `release`).
    pub released: Cell<bool>,
    /// How long to poll for the next request after a turn that served one
    /// (`--busy-poll`).
    pub busy_poll: Duration,
}

struct Napi(sys::napi_env);

/// A value made by N-API, or which call failed.
type Made = Result<sys::napi_value, String>;

impl Napi {
    fn make(&self, what: &str, f: impl FnOnce(*mut sys::napi_value) -> sys::napi_status) -> Made {
        let mut v = ptr::null_mut();
        check(f(&mut v), what)?;
        Ok(v)
    }

    fn deref(&self, r: sys::napi_ref) -> Made {
        // SAFETY: r is a live reference created on this env.
        self.make("napi_get_reference_value", |v| unsafe {
            sys::napi_get_reference_value(self.0, r, v)
        })
    }

    fn number(&self, n: f64) -> Made {
        // SAFETY: plain value creation on the JS thread.
        self.make("napi_create_double", |v| unsafe {
            sys::napi_create_double(self.0, n, v)
        })
    }

    fn latin1(&self, bytes: &[u8]) -> Made {
        // SAFETY: bytes is a valid buffer of the given length.
        self.make("napi_create_string_latin1", |v| unsafe {
            sys::napi_create_string_latin1(self.0, bytes.as_ptr().cast(), bytes.len() as isize, v)
        })
    }

    fn utf8(&self, text: &str) -> Made {
        // SAFETY: text is a valid UTF-8 buffer of the given length.
        self.make("napi_create_string_utf8", |v| unsafe {
            sys::napi_create_string_utf8(self.0, text.as_ptr().cast(), text.len() as isize, v)
        })
    }

    fn buffer(&self, bytes: &[u8]) -> Made {
        let mut data = ptr::null_mut();
        // SAFETY: bytes is valid for reads of its length; the copy is owned by JS.
        self.make("napi_create_buffer_copy", |v| unsafe {
            sys::napi_create_buffer_copy(self.0, bytes.len(), bytes.as_ptr().cast(), &mut data, v)
        })
    }

    fn undefined(&self) -> Made {
        // SAFETY: plain value access on the JS thread.
        self.make("napi_get_undefined", |v| unsafe {
            sys::napi_get_undefined(self.0, v)
        })
    }

    /// Calls `f`; an exception it throws is reported as uncaught, the way
    /// Node reports exceptions from any other I/O callback.
    fn call(&self, f: sys::napi_ref, args: &[sys::napi_value]) -> Result<(), String> {
        let func = self.deref(f)?;
        let recv = self.undefined()?;
        let mut result = ptr::null_mut();
        // SAFETY: func is a function value; args are live values of this scope.
        let status = unsafe {
            sys::napi_call_function(self.0, recv, func, args.len(), args.as_ptr(), &mut result)
        };
        if status == sys::Status::napi_pending_exception {
            let mut err = ptr::null_mut();
            // SAFETY: an exception is pending; clear it before any other call.
            unsafe {
                check(
                    sys::napi_get_and_clear_last_exception(self.0, &mut err),
                    "napi_get_and_clear_last_exception",
                )?;
                check(
                    sys::napi_fatal_exception(self.0, err),
                    "napi_fatal_exception",
                )?;
            }
            return Ok(());
        }
        check(status, "napi_call_function")
    }

    /// Calls `f` with one connection token.
    fn call_conn(&self, f: sys::napi_ref, conn: u64) -> Result<(), String> {
        self.call(f, &[self.number(conn as f64)?])
    }
}

impl Driver {
    /// The engine, for a call from JavaScript; refused while a turn holds
    /// it. The repeats listed so far are answered first, so a connection's
    /// responses keep their order.
    pub fn engine_mut(&self) -> Result<std::cell::RefMut<'_, Engine>, String> {
        let mut engine = self
            .engine
            .try_borrow_mut()
            .map_err(|_| "rwsgi engine re-entered".to_string())?;
        self.answer_repeats(&mut engine);
        Ok(engine)
    }

    /// Slot `i` of the repeat table: 0 the count, then connection ids.
    fn repeat_slot(&self, i: usize) -> f64 {
        debug_assert!(i < self.repeats.len);
        // SAFETY: i < len (the count is slot 0, len >= 1 was checked when
        // the table was taken; ids are read below the count, capped at
        // len - 1); the array is alive while the driver is (`repeats.array`)
        // and only touched on this thread.
        unsafe { self.repeats.slots.add(i).read() }
    }

    fn set_repeat_count(&self, count: f64) {
        // SAFETY: slot 0 exists and is only touched on this thread.
        unsafe { self.repeats.slots.write(count) }
    }

    /// Answers the connections listed in the repeat table with the last
    /// response again, and empties it.
    fn answer_repeats(&self, engine: &mut Engine) {
        let count = self.repeat_slot(0);
        if count < 1.0 {
            return;
        }
        self.set_repeat_count(0.0);
        let listed = (count as usize).min(self.repeats.len - 1);
        let Ok(scratch) = self.scratch.try_borrow() else {
            return log_failure("rwsgi: repeated responses met a busy scratch buffer");
        };
        for i in 1..=listed {
            if let Err(e) = fast::respond_again(&scratch, engine, self.repeat_slot(i)) {
                log_failure(&format!("rwsgi: a repeated response failed: {e}"));
            }
        }
    }

    /// JavaScript may list repeats (`open`) or not; what it listed is answered.
    pub fn set_repeats_open(&self, open: bool) {
        if let Ok(mut engine) = self.engine.try_borrow_mut() {
            self.answer_repeats(&mut engine);
        }
        self.set_repeat_count(if open { 0.0 } else { REPEATS_CLOSED });
    }

    /// One turn, then more while `--busy-poll` finds the next request
    /// ready within its time (see rwsgi_core::busy_poll).
    fn turns(&self) {
        if self.busy_poll.is_zero() {
            return self.turn();
        }
        busy_poll::run_turns(
            || self.turn(),
            || {
                !self.released.get()
                    && self
                        .engine
                        .try_borrow()
                        .is_ok_and(|engine| engine.wait_after_one_request(self.busy_poll))
            },
        );
    }

    /// One loop turn: poll the engine, deliver its events, let promise jobs
    /// run (closing the callback scope), then flush the corked output.
    pub fn turn(&self) {
        if self.released.get() {
            return;
        }
        let napi = Napi(self.env);
        let mut handle_scope = ptr::null_mut();
        // SAFETY: we are on the JS thread, inside a libuv callback.
        let opened = unsafe { sys::napi_open_handle_scope(self.env, &mut handle_scope) };
        if let Err(e) = check(opened, "napi_open_handle_scope") {
            return log_failure(&e);
        }
        let callback_scope = self.open_callback_scope(&napi).unwrap_or_else(|e| {
            log_failure(&e);
            ptr::null_mut()
        });
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
        if let Err(e) = self.deliver_all(&napi, &events, &arena) {
            log_failure(&e);
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
        if !callback_scope.is_null() {
            // SAFETY: closing the callback scope opened above (promise jobs run now).
            let closed = unsafe { sys::napi_close_callback_scope(self.env, callback_scope) };
            if let Err(e) = check(closed, "napi_close_callback_scope") {
                log_failure(&e);
            }
        }
        if let Ok(mut engine) = self.engine.try_borrow_mut() {
            engine.end_turn();
        }
        // SAFETY: closing the handle scope opened above.
        let closed = unsafe { sys::napi_close_handle_scope(self.env, handle_scope) };
        if let Err(e) = check(closed, "napi_close_handle_scope") {
            log_failure(&e);
        }
    }

    fn open_callback_scope(&self, napi: &Napi) -> Result<sys::napi_callback_scope, String> {
        let resource = napi.deref(self.resource)?;
        let mut scope = ptr::null_mut();
        // SAFETY: resource is live in the open handle scope; the context is
        // alive until `release`, which stops the turns first.
        let status = unsafe {
            sys::napi_open_callback_scope(self.env, resource, self.async_context, &mut scope)
        };
        check(status, "napi_open_callback_scope")?;
        Ok(scope)
    }

    /// Hands the turn's events to JavaScript, runs of requests batched.
    fn deliver_all(&self, napi: &Napi, events: &[Event], arena: &[u8]) -> Result<(), String> {
        let mut batch = Batch::default();
        for event in events {
            if let Event::Request {
                url,
                headers,
                peer_ip,
                client_ip,
                ..
            } = event
            {
                let (start, end) = batch.span_with([url, headers, peer_ip, client_ip]);
                if batch.count == self.table.len / REQUEST_STRIDE
                    || (batch.count > 0 && end - start > BATCH_TEXT_LIMIT)
                {
                    self.flush(napi, &mut batch, arena)?;
                }
                self.record(napi, &mut batch, event)?;
            } else {
                self.flush(napi, &mut batch, arena)?;
                self.deliver(napi, event, arena)?;
            }
        }
        self.flush(napi, &mut batch, arena)
    }

    /// The index JavaScript knows `method` by, telling it of a new one.
    fn method_index(&self, napi: &Napi, method: &'static str) -> Result<usize, String> {
        let methods = self.methods.borrow();
        if let Some(i) = methods.iter().position(|m| std::ptr::eq(*m, method)) {
            return Ok(i);
        }
        let i = methods.len();
        drop(methods);
        napi.call(
            self.callbacks.on_method,
            &[napi.number(i as f64)?, napi.latin1(method.as_bytes())?],
        )?;
        self.methods.borrow_mut().push(method);
        Ok(i)
    }

    /// Adds one request event to the shared table.
    fn record(&self, napi: &Napi, batch: &mut Batch, event: &Event) -> Result<(), String> {
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
            client_ip,
            client_port,
            https,
            secure,
            same_headers,
        } = event
        else {
            return Ok(());
        };
        let flags = (if *keep_alive { FLAG_KEEP_ALIVE } else { 0 })
            | (if *has_body { FLAG_HAS_BODY } else { 0 })
            | (if *expect_continue {
                FLAG_EXPECT_CONTINUE
            } else {
                0
            })
            | (if *http_minor == 0 { FLAG_HTTP10 } else { 0 })
            | (if *https { FLAG_HTTPS } else { 0 })
            | (if secure.tls { FLAG_TLS } else { 0 })
            | (if secure.client_cert {
                FLAG_CLIENT_CERT
            } else {
                0
            })
            | (if *same_headers { FLAG_SAME_HEADERS } else { 0 });
        let method = self.method_index(napi, method)?;
        (batch.start, batch.end) = batch.span_with([url, headers, peer_ip, client_ip]);
        let mut row = [0f64; REQUEST_STRIDE];
        row[Slot::Conn as usize] = *conn as f64;
        row[Slot::Flags as usize] = f64::from(flags);
        row[Slot::Method as usize] = method as f64;
        row[Slot::UrlStart as usize] = url.start as f64;
        row[Slot::UrlEnd as usize] = url.end as f64;
        row[Slot::HeadersStart as usize] = headers.start as f64;
        row[Slot::HeadersEnd as usize] = headers.end as f64;
        row[Slot::PeerIpStart as usize] = peer_ip.start as f64;
        row[Slot::PeerIpEnd as usize] = peer_ip.end as f64;
        row[Slot::PeerPort as usize] = f64::from(*peer_port);
        row[Slot::LocalPort as usize] = f64::from(*local_port);
        row[Slot::ClientIpStart as usize] = client_ip.start as f64;
        row[Slot::ClientIpEnd as usize] = client_ip.end as f64;
        row[Slot::ClientPort as usize] = f64::from(*client_port);
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
        Ok(())
    }

    /// Hands the recorded requests to JavaScript, with offsets made
    /// relative to the text passed along.
    fn flush(&self, napi: &Napi, batch: &mut Batch, arena: &[u8]) -> Result<(), String> {
        if batch.count == 0 {
            return Ok(());
        }
        let base = batch.start as f64;
        // SAFETY: the first count rows were written by `record`.
        let rows = unsafe {
            std::slice::from_raw_parts_mut(self.table.slots, batch.count * REQUEST_STRIDE)
        };
        let methods = self.methods.borrow();
        crate::busy_note::hand_over(rows.chunks_exact(REQUEST_STRIDE).map(|row| {
            let method = methods
                .get(row[Slot::Method as usize] as usize)
                .copied()
                .unwrap_or("");
            let url = arena
                .get(row[Slot::UrlStart as usize] as usize..row[Slot::UrlEnd as usize] as usize)
                .unwrap_or(&[]);
            (method, url)
        }));
        drop(methods);
        for row in rows.chunks_exact_mut(REQUEST_STRIDE) {
            for offset in &mut row[TEXT_OFFSETS] {
                *offset -= base;
            }
        }
        let text = arena.get(batch.start..batch.end).unwrap_or(&[]);
        let count = batch.count as f64;
        *batch = Batch::default();
        let args = [napi.number(count)?, napi.latin1(text)?];
        self.set_repeats_open(true);
        let called = napi.call(self.callbacks.on_requests, &args);
        self.set_repeats_open(false);
        called
    }

    fn deliver(&self, napi: &Napi, event: &Event, arena: &[u8]) -> Result<(), String> {
        let cb = &self.callbacks;
        let bytes = |r: &std::ops::Range<usize>| arena.get(r.clone()).unwrap_or(&[]);
        match event {
            // Batched by `record` and `flush`.
            Event::Request { .. } => Ok(()),
            Event::Body { conn, data } => napi.call(
                cb.on_body,
                &[napi.number(*conn as f64)?, napi.buffer(bytes(data))?],
            ),
            Event::BodyEnd { conn } => napi.call_conn(cb.on_body_end, *conn),
            Event::Closed { conn } => napi.call_conn(cb.on_close, *conn),
            Event::PeerShutdown { conn } => napi.call_conn(cb.on_peer_shutdown, *conn),
            Event::Drain { conn } => napi.call_conn(cb.on_drain, *conn),
            Event::AcceptPaused { reason } => {
                napi.call(cb.on_accept_paused, &[napi.latin1(reason.as_bytes())?])
            }
            Event::Capacity { full } => {
                napi.call(cb.on_capacity, &[napi.number(f64::from(u8::from(*full)))?])
            }
            Event::Rejected {
                status,
                reason,
                peer_ip,
                peer_port,
            } => napi.call(
                cb.on_rejected,
                &[
                    napi.number(f64::from(*status))?,
                    napi.utf8(reason)?,
                    napi.latin1(peer_ip.as_bytes())?,
                    napi.number(f64::from(*peer_port))?,
                ],
            ),
        }
    }

    /// Deletes the references and destroys the async context: when the
    /// server closes (its loop watcher already stopped). Idempotent.
    pub fn release(&self) {
        if self.released.replace(true) {
            return;
        }
        let refs = self.callbacks.all().into_iter().chain([
            self.table.array,
            self.repeats.array,
            self.resource,
        ]);
        for r in refs {
            // SAFETY: each reference was created on this env and is deleted once.
            let status = unsafe { sys::napi_delete_reference(self.env, r) };
            if let Err(e) = check(status, "napi_delete_reference") {
                log_failure(&e);
            }
        }
        // SAFETY: the context was made by napi_async_init and is destroyed once.
        let status = unsafe { sys::napi_async_destroy(self.env, self.async_context) };
        if let Err(e) = check(status, "napi_async_destroy") {
            log_failure(&e);
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
    fn span_with(&self, ranges: [&std::ops::Range<usize>; 4]) -> (usize, usize) {
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
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (*driver).turns()));
}
