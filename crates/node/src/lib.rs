//! The JavaScript surface of rwsgi's engine: type conversion and forwarding
//! to `rwsgi-core`, nothing else.

pub mod access_log;
pub mod busy_note;
mod contract;
mod driver;
mod fast;
mod js;
pub mod js_stack;
pub mod systemd;
pub mod tls;
mod uv;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::ptr;
use std::rc::Rc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use rwsgi_core::fatal;
use rwsgi_core::proxy_protocol::Mode;
use rwsgi_core::steering::Spread;
use rwsgi_core::trust::{AllowList, Trust};
use rwsgi_core::{Engine, Limits, WriteError};

use contract::REQUEST_STRIDE;
use driver::{Callbacks, Driver, Table};
use js::{on_conn, token};

/// Refuses an llhttp whose struct layout the binding was not written for.
#[napi]
pub fn check_llhttp(version: String) -> Result<()> {
    rwsgi_core::llhttp::check_version(&version).map_err(Error::from_reason)?;
    rwsgi_core::llhttp::api().map_err(Error::from_reason)?;
    Ok(())
}

/// The contract with src/native.ts (see contract.rs), for it to check at load.
#[napi(object)]
pub struct Contract {
    /// The request table's slot names, in row order.
    pub slots: Vec<String>,
    /// Request flag bits by name.
    pub flags: HashMap<String, u32>,
    /// The members of `callbacks` the server reads.
    pub callbacks: Vec<String>,
    /// The fields of `ServerOptions`, as JavaScript names them.
    pub server_options: Vec<String>,
}

#[napi]
pub fn contract() -> Contract {
    let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    Contract {
        slots: names(contract::SLOTS),
        flags: contract::FLAGS
            .iter()
            .map(|&(name, bit)| (name.to_string(), bit))
            .collect(),
        callbacks: names(&contract::CALLBACKS),
        server_options: SERVER_OPTION_FIELDS
            .iter()
            .map(|f| contract::js_name(f))
            .collect(),
    }
}

#[napi(object)]
pub struct BoundGroup {
    /// One listening socket per worker slot.
    pub fds: Vec<i32>,
    pub host: String,
    pub port: u32,
}

fn socket_addr(address: &str) -> Result<std::net::SocketAddr> {
    address
        .parse()
        .map_err(|_| Error::from_reason(format!("invalid address {address:?}")))
}

/// Binds `count` SO_REUSEPORT listening sockets to `address` ("host:port",
/// IPv6 as "[::1]:8000"). The caller owns the returned descriptors.
#[napi]
pub fn bind_listeners(address: String, count: u32, backlog: i32) -> Result<BoundGroup> {
    let addr = socket_addr(&address)?;
    let (fds, bound) = rwsgi_core::socket::bind_group(addr, count as usize, backlog)
        .map_err(|e| Error::from_reason(format!("{address}: {e}")))?;
    Ok(BoundGroup {
        fds: fds.into_iter().map(IntoRawFd::into_raw_fd).collect(),
        host: bound.ip().to_string(),
        port: u32::from(bound.port()),
    })
}

/// A Unix stream listening socket at `path` that all workers share (see
/// `socket::bind_unix` for stale and live files). The caller owns it.
#[napi]
pub fn bind_unix(path: String, backlog: i32) -> Result<i32> {
    let fd = rwsgi_core::socket::bind_unix(std::path::Path::new(&path), backlog)
        .map_err(|e| Error::from_reason(format!("{path}: {e}")))?;
    Ok(fd.into_raw_fd())
}

/// Adds one socket to this process's own group at `address` (an exact
/// port), for a new worker slot.
#[napi]
pub fn join_listeners(address: String, backlog: i32) -> Result<i32> {
    let fd = rwsgi_core::socket::join_group(socket_addr(&address)?, backlog)
        .map_err(|e| Error::from_reason(format!("{address}: {e}")))?;
    Ok(fd.into_raw_fd())
}

/// Steers the group `fd` belongs to: new connections go to the group
/// indices in `slots` only (all of the group's `groupSize` if empty),
/// picked by the CPU that took the SYN if `byCpu`, else at random.
#[napi]
pub fn steer(fd: i32, slots: Vec<u32>, group_size: u32, by_cpu: bool) -> Result<()> {
    let spread = if by_cpu {
        Spread::ByCpu
    } else {
        Spread::Random
    };
    rwsgi_core::steering::steer(fd, &slots, group_size, spread)
        .map_err(|e| Error::from_reason(e.to_string()))
}

/// The CPUs this process may run on.
#[napi]
pub fn allowed_cpus() -> Result<Vec<u32>> {
    rwsgi_core::affinity::allowed_cpus().map_err(|e| Error::from_reason(e.to_string()))
}

/// Lets process `pid`'s main thread run on `cpus` only.
#[napi]
pub fn set_affinity(pid: i32, cpus: Vec<u32>) -> Result<()> {
    rwsgi_core::affinity::set_affinity(pid, &cpus).map_err(|e| Error::from_reason(e.to_string()))
}

/// Passes up to `max` connections queued on listening socket `fd` to the
/// worker receiving handoffs under `to` (a full worker's queue); returns
/// how many.
#[napi]
pub fn pass_queued(fd: i32, to: String, max: u32) -> Result<u32> {
    rwsgi_core::handoff::pass_queued(fd, &to, max as usize)
        .map(|n| n as u32)
        .map_err(|e| Error::from_reason(format!("cannot pass queued connections: {e}")))
}

/// Whether `fd` is a listening socket.
#[napi]
pub fn is_listening(fd: i32) -> Result<bool> {
    rwsgi_core::socket::is_listening(fd).map_err(|e| Error::from_reason(e.to_string()))
}

/// The peer of a connected Unix socket (SO_PEERCRED).
#[napi(object)]
pub struct PeerCredentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Who connected to Unix socket `fd` (the control socket checks its peers).
#[napi]
pub fn peer_credentials(fd: i32) -> Result<PeerCredentials> {
    let c = rwsgi_core::socket::peer_credentials(fd)
        .map_err(|e| Error::from_reason(format!("cannot read the peer's credentials: {e}")))?;
    Ok(PeerCredentials {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

/// From now on a fatal signal ends this process with a CRITICAL line and a
/// native backtrace written to `logFd` (see rwsgi_core::fatal). Called
/// again when the error log is reopened.
#[napi]
pub fn report_fatal_signals(role: String, log_fd: i32) -> Result<()> {
    let role = match role.as_str() {
        "arbiter" => fatal::Role::Arbiter,
        "worker" => fatal::Role::Worker,
        other => {
            return Err(Error::from_reason(format!(
                "unknown process role {other:?}"
            )))
        }
    };
    fatal::install(role);
    fatal::set_log_fd(log_fd);
    Ok(())
}

/// The worker's JavaScript loop is alive; see `watchParent`.
#[napi]
pub fn beat() {
    rwsgi_core::abort::beat();
}

/// Ends this process (503s first) if its parent dies while the JavaScript
/// loop has not beaten for `stallMs`.
#[napi]
pub fn watch_parent(stall_ms: u32) {
    rwsgi_core::abort::watch_parent(u64::from(stall_ms));
}

/// The engine's settings, every one required: src/settings/ declares,
/// defaults and validates them, and a missing or invalid value stops the
/// server here rather than falling back to a default of the engine's own.
#[napi(object)]
pub struct ServerOptions {
    pub limit_request_line: u32,
    pub limit_request_fields: u32,
    pub limit_request_field_size: u32,
    pub keep_alive_seconds: f64,
    pub header_timeout_seconds: f64,
    pub limit_request_body: f64,
    pub body_timeout_seconds: f64,
    pub worker_connections: u32,
    pub busy_poll_microseconds: u32,
    /// Comma-separated addresses, CIDR ranges or `*`.
    pub forwarded_allow_ips: String,
    /// off, v1, v2 or auto.
    pub proxy_protocol: String,
    /// Comma-separated addresses, CIDR ranges or `*`.
    pub proxy_allow_from: String,
}

/// `ServerOptions`' fields, for `contract()`. The destructuring below
/// stops compiling when a field is added, renamed or removed and this list
/// is not.
const SERVER_OPTION_FIELDS: [&str; 12] = [
    "limit_request_line",
    "limit_request_fields",
    "limit_request_field_size",
    "keep_alive_seconds",
    "header_timeout_seconds",
    "limit_request_body",
    "body_timeout_seconds",
    "worker_connections",
    "busy_poll_microseconds",
    "forwarded_allow_ips",
    "proxy_protocol",
    "proxy_allow_from",
];

#[allow(dead_code)]
fn server_option_fields_are_listed(options: ServerOptions) {
    let ServerOptions {
        limit_request_line: _,
        limit_request_fields: _,
        limit_request_field_size: _,
        keep_alive_seconds: _,
        header_timeout_seconds: _,
        limit_request_body: _,
        body_timeout_seconds: _,
        worker_connections: _,
        busy_poll_microseconds: _,
        forwarded_allow_ips: _,
        proxy_protocol: _,
        proxy_allow_from: _,
    } = options;
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        Error::from_reason(format!(
            "{name} must be a number of seconds >= 0, got {value}"
        ))
    })
}

fn limits_from(options: &ServerOptions) -> Result<Limits> {
    let body = options.limit_request_body;
    // Integral and at most 2^53: exactly representable, so the cast is lossless.
    if !((0.0..=9_007_199_254_740_992.0).contains(&body) && body.fract() == 0.0) {
        return Err(Error::from_reason(format!(
            "limitRequestBody must be an integer >= 0, got {body}"
        )));
    }
    if options.worker_connections == 0 {
        return Err(Error::from_reason("workerConnections must be >= 1"));
    }
    Ok(Limits {
        request_line: options.limit_request_line as usize,
        header_fields: options.limit_request_fields as usize,
        field_size: options.limit_request_field_size as usize,
        keep_alive: seconds("keepAliveSeconds", options.keep_alive_seconds)?,
        header_timeout: seconds("headerTimeoutSeconds", options.header_timeout_seconds)?,
        // Not a setting: how far parsing runs ahead of responses is the engine's own.
        pipeline_depth: Limits::default().pipeline_depth,
        max_body: body as u64,
        body_timeout: seconds("bodyTimeoutSeconds", options.body_timeout_seconds)?,
        max_connections: options.worker_connections as usize,
    })
}

fn trust_from(options: &ServerOptions) -> Result<Trust> {
    let list = |name: &str, text: &str| {
        AllowList::parse(text).map_err(|e| Error::from_reason(format!("{name}: {e}")))
    };
    Ok(Trust {
        forwarded: list("forwardedAllowIps", &options.forwarded_allow_ips)?,
        proxy_protocol: Mode::parse(&options.proxy_protocol).map_err(Error::from_reason)?,
        proxy_allow: list("proxyAllowFrom", &options.proxy_allow_from)?,
    })
}

fn reference(env: sys::napi_env, value: sys::napi_value) -> Result<sys::napi_ref> {
    let mut r = ptr::null_mut();
    // SAFETY: value is live in the current scope.
    let status = unsafe { sys::napi_create_reference(env, value, 1, &mut r) };
    js::check(status, "napi_create_reference").map_err(Error::from_reason)?;
    Ok(r)
}

fn function_ref(env: sys::napi_env, callbacks: &Object, name: &str) -> Result<sys::napi_ref> {
    let f: Function<Unknown, Unknown> = callbacks
        .get(name)?
        .ok_or_else(|| Error::from_reason(format!("callbacks.{name} is missing")))?;
    reference(env, f.raw())
}

/// `callbacks[name]`, a Float64Array of at least `min_len` slots.
fn shared_table(
    env: sys::napi_env,
    callbacks: &Object,
    name: &str,
    min_len: usize,
) -> Result<Table> {
    let table: Unknown = callbacks
        .get(name)?
        .ok_or_else(|| Error::from_reason(format!("callbacks.{name} is missing")))?;
    match fast::typed_array(env, table.raw()).map_err(Error::from_reason)? {
        Some((sys::TypedarrayType::float64_array, data, len))
            if !data.is_null() && len >= min_len =>
        {
            Ok(Table {
                slots: data.cast(),
                len,
                array: reference(env, table.raw())?,
            })
        }
        _ => Err(Error::from_reason(format!(
            "callbacks.{name} must be a Float64Array of at least {min_len} slots"
        ))),
    }
}

/// Ok(Some) done, Ok(None) the connection is gone, Err for app mistakes.
fn outcome<T>(r: std::result::Result<T, WriteError>) -> Result<Option<T>> {
    js::outcome(r).map_err(Error::from_reason)
}

/// Requests refused with one status, and how many.
#[napi(object)]
pub struct RejectedCount {
    pub status: u32,
    /// A double: exact up to 2^53.
    pub count: f64,
}

/// One worker's request counters, cumulative (doubles: exact up to 2^53).
#[napi(object)]
pub struct RequestMetrics {
    /// Per method of `metricsLayout().methods`, per status class 1xx..5xx.
    pub requests: Vec<f64>,
    /// Responses per duration bucket of `metricsLayout().buckets`, then the rest.
    pub durations: Vec<f64>,
    /// Seconds, summed over the responses.
    pub duration_sum: f64,
    /// Bytes read from clients and written to them.
    pub received: f64,
    pub sent: f64,
}

/// How `RequestMetrics` is laid out.
#[napi(object)]
pub struct MetricsLayout {
    pub methods: Vec<String>,
    /// Status classes per method: 1xx, 2xx ...
    pub status_classes: u32,
    /// Upper bounds of the duration buckets, in seconds.
    pub buckets: Vec<f64>,
}

#[napi]
pub fn metrics_layout() -> MetricsLayout {
    use rwsgi_core::metrics::{DURATION_BUCKETS, METHODS, STATUS_CLASSES};
    MetricsLayout {
        methods: METHODS.iter().map(|m| m.to_string()).collect(),
        status_classes: STATUS_CLASSES as u32,
        buckets: DURATION_BUCKETS.to_vec(),
    }
}

/// A TCP listening socket's accept queue: `[length, backlog]`; null for a
/// Unix socket (Linux reports no queue for those).
#[napi]
pub fn accept_queue(fd: i32) -> Result<Option<Vec<u32>>> {
    let queue = rwsgi_core::socket::accept_queue(fd)
        .map_err(|e| Error::from_reason(format!("TCP_INFO: {e}")))?;
    Ok(queue.map(|q| vec![q.length, q.backlog]))
}

/// One worker's HTTP server on its inherited listening sockets.
/// `callbacks.onAcceptPaused(reason)` hears when accepting backs off,
/// `callbacks.onCapacity(full)` when the worker becomes full or has room, and
/// `callbacks.onRejected(status, reason, peerIp, peerPort)` of each refused
/// request while `setTraceRejections(true)`.
#[napi]
pub struct NativeServer {
    driver: Rc<Driver>,
    poll: Option<uv::Poll>,
    /// The session-ticket keys its TLS listeners seal tickets with.
    tickets: std::sync::Arc<rwsgi_core::tls::TicketKeys>,
}

#[napi]
impl NativeServer {
    /// `callbacks` holds the members `contract::CALLBACKS` names:
    /// requestTable (a Float64Array, see driver.rs) and the event callbacks.
    #[napi(constructor)]
    pub fn new(env: Env, fds: Vec<i32>, options: ServerOptions, callbacks: Object) -> Result<Self> {
        let raw_env = env.raw();
        rwsgi_core::abort::install();
        let mut engine = Engine::new(&fds, limits_from(&options)?)
            .map_err(|e| Error::from_reason(e.to_string()))?;
        engine.set_trust(trust_from(&options)?);
        let resource = Object::new(&env)?;
        let mut async_context = ptr::null_mut();
        let name = env.create_string("rwsgi.request")?;
        // SAFETY: resource and name are live values of this call's scope.
        let status = unsafe {
            sys::napi_async_init(raw_env, resource.raw(), name.raw(), &mut async_context)
        };
        js::check(status, "napi_async_init").map_err(Error::from_reason)?;
        let callback = |name| function_ref(raw_env, &callbacks, name);
        let driver = Rc::new(Driver {
            engine: RefCell::new(engine),
            env: raw_env,
            callbacks: Callbacks {
                on_requests: callback(contract::ON_REQUESTS)?,
                on_method: callback(contract::ON_METHOD)?,
                on_body: callback(contract::ON_BODY)?,
                on_body_end: callback(contract::ON_BODY_END)?,
                on_close: callback(contract::ON_CLOSE)?,
                on_drain: callback(contract::ON_DRAIN)?,
                on_accept_paused: callback(contract::ON_ACCEPT_PAUSED)?,
                on_capacity: callback(contract::ON_CAPACITY)?,
                on_peer_shutdown: callback(contract::ON_PEER_SHUTDOWN)?,
                on_rejected: callback(contract::ON_REJECTED)?,
            },
            table: shared_table(raw_env, &callbacks, contract::REQUEST_TABLE, REQUEST_STRIDE)?,
            // The count and one connection.
            repeats: shared_table(raw_env, &callbacks, contract::REPEAT_TABLE, 2)?,
            scratch: RefCell::default(),
            methods: RefCell::default(),
            resource: reference(raw_env, resource.raw())?,
            async_context,
            released: Cell::new(false),
            busy_poll: Duration::from_micros(u64::from(options.busy_poll_microseconds)),
        });
        // JavaScript lists no repeats before the first `onRequests`.
        driver.set_repeats_open(false);
        let epoll_fd = driver.engine.borrow().epoll_fd();
        let uv_loop = env.get_uv_event_loop()?;
        let data = &*driver as *const Driver as *mut std::ffi::c_void;
        // SAFETY: the driver is reference-counted (stable address) and
        // outlives the poll, which `close` (or drop) stops first.
        let poll = unsafe { uv::Poll::start(uv_loop.cast(), epoll_fd, data, driver::on_readable) }
            .map_err(|e| {
                driver.release();
                Error::from_reason(e)
            })?;
        Ok(NativeServer {
            driver,
            poll: Some(poll),
            tickets: Default::default(),
        })
    }

    fn engine(&self) -> Result<std::cell::RefMut<'_, Engine>> {
        self.driver.engine_mut().map_err(Error::from_reason)
    }

    /// `{ respond, start, write, end }`: the per-response calls, as plain
    /// functions bound to this server (see fast.rs).
    ///   respond(conn, status, headers, fields, body) -> false if gone
    ///   start(conn, status, headers, fields, bodyLength < 0 if unknown) -> false if gone
    ///   write(conn, chunk) -> 1 written, 0 wait for onDrain, -1 gone
    ///   end(conn) -> false if gone
    #[napi]
    pub fn response_calls<'env>(&self, env: &'env Env) -> Result<Object<'env>> {
        let raw = fast::functions(env.raw(), &self.driver).map_err(Error::from_reason)?;
        // SAFETY: raw is an object created on this env in this call.
        unsafe { Object::from_napi_value(env.raw(), raw) }
    }

    /// Starts a response whose head and framing the app writes itself
    /// (Node's ServerResponse); `keepAlive` and `status` are what that head says.
    #[napi]
    pub fn start_raw(&self, conn: f64, keep_alive: bool, status: u32) -> Result<bool> {
        let mut engine = self.engine()?;
        let status = u16::try_from(status).unwrap_or(0);
        Ok(outcome(on_conn(conn, |t| engine.start_raw(t, keep_alive, status)))?.is_some())
    }

    /// Closes `conn` after flushing: for a response that cannot be completed.
    #[napi]
    pub fn abort(&self, conn: f64) -> Result<()> {
        let mut engine = self.engine()?;
        outcome(on_conn(conn, |t| engine.abort(t)))?;
        Ok(())
    }

    #[napi]
    pub fn send_continue(&self, conn: f64) -> Result<()> {
        let mut engine = self.engine()?;
        outcome(on_conn(conn, |t| engine.send_continue(t)))?;
        Ok(())
    }

    /// Pauses (false) or resumes (true) reading request bytes on `conn`.
    #[napi]
    pub fn set_reading(&self, conn: f64, on: bool) -> Result<()> {
        let mut engine = self.engine()?;
        if let Some(t) = token(conn) {
            engine.set_reading(t, on);
        }
        Ok(())
    }

    /// Stops accepting and closes idle connections; responses from now on
    /// close their connections.
    #[napi]
    pub fn drain(&self) -> Result<()> {
        self.engine()?.drain();
        Ok(())
    }

    #[napi]
    pub fn connection_count(&self) -> Result<u32> {
        Ok(self.engine()?.connection_count() as u32)
    }

    /// Receives connections other workers hand over, under `name`.
    #[napi]
    pub fn enable_handoff(&self, name: String) -> Result<()> {
        self.engine()?
            .enable_handoff(&name)
            .map_err(|e| Error::from_reason(format!("cannot receive handed-off connections: {e}")))
    }

    /// Per CPU, the handoff name of the worker serving connections arriving
    /// there (null: this one); idle connections move to it. Empty: none move.
    #[napi]
    pub fn set_cpu_owners(&self, owners: Vec<Option<String>>) -> Result<()> {
        self.engine()?.set_cpu_owners(owners);
        Ok(())
    }

    /// `[sent, received]`: idle connections handed to other workers and
    /// received from them since start.
    #[napi]
    pub fn handoff_counts(&self) -> Result<Vec<f64>> {
        let (sent, received) = self.engine()?.handoff_counts();
        Ok(vec![sent as f64, received as f64])
    }

    /// Connections accepted since start (a double: exact up to 2^53).
    #[napi]
    pub fn accepted_count(&self) -> Result<f64> {
        Ok(self.engine()?.accepted_count() as f64)
    }

    /// Requests the engine refused (malformed, over a limit, too slow),
    /// counted by the status sent.
    #[napi]
    pub fn rejected_counts(&self) -> Result<Vec<RejectedCount>> {
        Ok(self
            .engine()?
            .rejected_counts()
            .iter()
            .map(|&(status, count)| RejectedCount {
                status: u32::from(status),
                count: count as f64,
            })
            .collect())
    }

    /// Counts requests and bytes from now on, for `requestMetrics`.
    #[napi]
    pub fn enable_metrics(&self) -> Result<()> {
        self.engine()?.enable_metrics();
        Ok(())
    }

    /// The request counters (see rwsgi_core::metrics); null until enabled.
    #[napi]
    pub fn request_metrics(&self) -> Result<Option<RequestMetrics>> {
        Ok(self.engine()?.metrics().map(|m| {
            let s = m.snapshot();
            RequestMetrics {
                requests: s.requests,
                durations: s.durations,
                duration_sum: s.duration_sum_seconds,
                received: s.received,
                sent: s.sent,
            }
        }))
    }

    /// Whether each refused request is reported to `callbacks.onRejected`
    /// (for `--log-level debug`: one call per request).
    #[napi]
    pub fn set_trace_rejections(&self, on: bool) -> Result<()> {
        self.engine()?.trace_rejections(on);
        Ok(())
    }

    /// Stops the server's loop watcher and releases what it holds in
    /// JavaScript (the callbacks, the request table, the async context);
    /// the process may then exit.
    #[napi]
    pub fn close(&mut self) {
        if let Some(poll) = self.poll.take() {
            poll.close();
            self.driver.release();
        }
    }
}

impl Drop for NativeServer {
    fn drop(&mut self) {
        self.close();
    }
}
