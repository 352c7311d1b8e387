//! The per-response calls (respond, start, write, end) as plain N-API
//! functions bound to one driver. napi-rs class methods pay on every call
//! for unwrapping `this`, a borrow registry and a heap `String` per
//! argument (a UTF-8 length pass, then the copy); these read the arguments
//! straight into reused buffers, which took a visible share of the CPU per
//! request in the pipelined hello-world profile.

use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::rc::Rc;

use napi::sys;
use rwsgi_core::{Engine, HeaderList};

use crate::driver::Driver;
use crate::js::{check, on_conn, outcome};

/// Buffers the arguments are decoded into, reused across calls; they hold
/// the last response's status, headers and body for the calls (and the
/// driver's repeat table) that repeat them.
#[derive(Default)]
pub struct Scratch {
    status: Held,
    headers: Held,
    /// The header count given with `headers`.
    fields: usize,
    /// A whole response's body (`respond`), held like a head.
    answer: Held,
    /// A streamed chunk (`write`).
    body: Vec<u8>,
}

/// A string as last decoded: JavaScript passes `undefined` for a status,
/// header list or short body that is the same as the last call's (apps
/// answer with the same few), which saves decoding it again.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    /// `bytes` holds a whole decoded string.
    valid: bool,
}

impl Held {
    /// A status or header list: a string is decoded and held, `undefined`
    /// the string held.
    fn decode(&mut self, env: sys::napi_env, value: sys::napi_value) -> Result<&[u8], String> {
        if is_undefined(env, value)? {
            self.repeat()
        } else {
            self.hold(env, value)
        }
    }

    /// A body: as `decode`, but a Uint8Array is borrowed (nothing held: its
    /// bytes may change).
    fn body(&mut self, env: sys::napi_env, value: sys::napi_value) -> Result<&[u8], String> {
        match value_type(env, value)? {
            sys::ValueType::napi_undefined => self.repeat(),
            sys::ValueType::napi_string => self.hold(env, value),
            _ => {
                self.valid = false;
                byte_array(env, value)
            }
        }
    }

    fn hold(&mut self, env: sys::napi_env, value: sys::napi_value) -> Result<&[u8], String> {
        self.valid = false;
        utf8_into(env, value, &mut self.bytes)?;
        self.valid = true;
        Ok(&self.bytes)
    }

    fn repeat(&self) -> Result<&[u8], String> {
        if self.valid {
            Ok(&self.bytes)
        } else {
            Err("no earlier status, headers or body to repeat".into())
        }
    }
}

fn value_type(env: sys::napi_env, value: sys::napi_value) -> Result<sys::napi_valuetype, String> {
    let mut kind = 0;
    // SAFETY: value is a live argument of this call.
    check(
        unsafe { sys::napi_typeof(env, value, &mut kind) },
        "napi_typeof",
    )?;
    Ok(kind)
}

fn is_undefined(env: sys::napi_env, value: sys::napi_value) -> Result<bool, String> {
    Ok(value_type(env, value)? == sys::ValueType::napi_undefined)
}

/// What a call hands back to JavaScript.
enum Reply {
    Bool(bool),
    Int(i32),
}

type Args = [sys::napi_value; 5];

/// The calls, as (JavaScript name, implementation).
const CALLS: [(&str, sys::napi_callback); 4] = [
    ("respond", Some(respond)),
    ("start", Some(start)),
    ("write", Some(write)),
    ("end", Some(end)),
];

/// `{ respond, start, write, end }`, each holding the driver alive.
pub fn functions(env: sys::napi_env, driver: &Rc<Driver>) -> Result<sys::napi_value, String> {
    let mut object = ptr::null_mut();
    // SAFETY: plain value creation on the JS thread.
    check(
        unsafe { sys::napi_create_object(env, &mut object) },
        "napi_create_object",
    )?;
    for (name, callback) in CALLS {
        let data = Rc::into_raw(Rc::clone(driver)) as *mut c_void;
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        let mut function = ptr::null_mut();
        // SAFETY: `data` is an owned Rc reference, released by `release`
        // when the function is collected.
        unsafe {
            check(
                sys::napi_create_function(
                    env,
                    cname.as_ptr(),
                    name.len() as isize,
                    callback,
                    data,
                    &mut function,
                ),
                "napi_create_function",
            )?;
            check(
                sys::napi_add_finalizer(
                    env,
                    function,
                    data,
                    Some(release),
                    ptr::null_mut(),
                    ptr::null_mut(),
                ),
                "napi_add_finalizer",
            )?;
            check(
                sys::napi_set_named_property(env, object, cname.as_ptr(), function),
                "napi_set_named_property",
            )?;
        }
    }
    Ok(object)
}

unsafe extern "C" fn release(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    // SAFETY: `data` came from Rc::into_raw in `functions`, released once.
    drop(unsafe { Rc::from_raw(data as *const Driver) });
}

/// Runs `body` with the call's driver and arguments; panics and errors
/// become JavaScript exceptions, never unwind into V8.
fn call(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    body: impl FnOnce(&Driver, &Args) -> Result<Reply, String>,
) -> sys::napi_value {
    let mut args: Args = [ptr::null_mut(); 5];
    let mut argc = args.len();
    let mut data = ptr::null_mut();
    // SAFETY: args has room for argc values; missing ones are set to undefined.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            args.as_mut_ptr(),
            ptr::null_mut(),
            &mut data,
        )
    };
    if status != sys::Status::napi_ok || data.is_null() {
        return throw(env, "rwsgi: bad call");
    }
    // SAFETY: data is the Rc<Driver> pointer this function was made with,
    // alive until the function's finalizer runs.
    let driver = unsafe { &*(data as *const Driver) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(driver, &args)));
    let mut result = ptr::null_mut();
    // SAFETY: plain value creation on the JS thread.
    let status = match outcome {
        Ok(Ok(Reply::Bool(b))) => unsafe { sys::napi_get_boolean(env, b, &mut result) },
        Ok(Ok(Reply::Int(n))) => unsafe { sys::napi_create_int32(env, n, &mut result) },
        Ok(Err(message)) => return throw(env, &message),
        Err(_) => return throw(env, "rwsgi: internal error"),
    };
    match check(status, "creating the result") {
        Ok(()) => result,
        Err(message) => throw(env, &message),
    }
}

fn throw(env: sys::napi_env, message: &str) -> sys::napi_value {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: text is a NUL-terminated string alive for the call.
    let status = unsafe { sys::napi_throw_error(env, ptr::null(), text.as_ptr()) };
    if let Err(e) = check(status, "napi_throw_error") {
        crate::js::log_failure(&format!("{e}: {message}"));
    }
    ptr::null_mut()
}

fn number(env: sys::napi_env, value: sys::napi_value) -> Result<f64, String> {
    let mut n = 0.0;
    // SAFETY: value is a live argument of this call.
    check(
        unsafe { sys::napi_get_value_double(env, value, &mut n) },
        "a number argument",
    )
    .map(|()| n)
}

/// Decodes a JavaScript string as UTF-8 into `buf`: one pass when it fits
/// the buffer's capacity, which is kept between calls.
fn utf8_into(env: sys::napi_env, value: sys::napi_value, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    if buf.capacity() < 256 {
        buf.reserve(256);
    }
    let mut written = 0usize;
    // SAFETY: the buffer has `capacity` writable bytes; N-API writes at most
    // capacity - 1 bytes plus a NUL.
    let status = unsafe {
        sys::napi_get_value_string_utf8(
            env,
            value,
            buf.as_mut_ptr().cast::<c_char>(),
            buf.capacity(),
            &mut written,
        )
    };
    if status != sys::Status::napi_ok {
        return Err("expected a string".into());
    }
    // Whole characters only are written: room for one more (up to 4 bytes)
    // means nothing was cut off.
    if written + 4 < buf.capacity() - 1 {
        // SAFETY: N-API initialized `written` bytes.
        unsafe { buf.set_len(written) };
        return Ok(());
    }
    let mut length = 0usize;
    // SAFETY: a NULL buffer asks for the length only.
    check(
        unsafe { sys::napi_get_value_string_utf8(env, value, ptr::null_mut(), 0, &mut length) },
        "napi_get_value_string_utf8",
    )?;
    buf.reserve(length + 1);
    // SAFETY: as above, with room for the whole string and the NUL.
    check(
        unsafe {
            sys::napi_get_value_string_utf8(
                env,
                value,
                buf.as_mut_ptr().cast::<c_char>(),
                length + 1,
                &mut written,
            )
        },
        "napi_get_value_string_utf8",
    )?;
    // SAFETY: N-API initialized `written` bytes.
    unsafe { buf.set_len(written) };
    Ok(())
}

/// A typed array's element type, data and length (in elements); None for
/// any other value.
pub fn typed_array(
    env: sys::napi_env,
    value: sys::napi_value,
) -> Result<Option<(sys::napi_typedarray_type, *mut c_void, usize)>, String> {
    let mut is_typed = false;
    // SAFETY: value is a live value of the current scope.
    check(
        unsafe { sys::napi_is_typedarray(env, value, &mut is_typed) },
        "napi_is_typedarray",
    )?;
    if !is_typed {
        return Ok(None);
    }
    let (mut array_type, mut length, mut data) = (0, 0usize, ptr::null_mut());
    // SAFETY: value is a typed array; its memory stays put while it is alive.
    check(
        unsafe {
            sys::napi_get_typedarray_info(
                env,
                value,
                &mut array_type,
                &mut length,
                &mut data,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        },
        "napi_get_typedarray_info",
    )?;
    Ok(Some((array_type, data, length)))
}

/// A body chunk: a string (as UTF-8, into `buf`) or a Uint8Array (borrowed).
fn chunk(env: sys::napi_env, value: sys::napi_value, buf: &mut Vec<u8>) -> Result<&[u8], String> {
    if value_type(env, value)? == sys::ValueType::napi_string {
        utf8_into(env, value, buf)?;
        return Ok(buf);
    }
    byte_array(env, value)
}

/// A Uint8Array's bytes, borrowed for the current call; an error for any other value.
fn byte_array<'a>(env: sys::napi_env, value: sys::napi_value) -> Result<&'a [u8], String> {
    if let Some((array_type, data, length)) = typed_array(env, value)? {
        if array_type == sys::TypedarrayType::uint8_array
            || array_type == sys::TypedarrayType::uint8_clamped_array
        {
            if length == 0 || data.is_null() {
                return Ok(&[]);
            }
            // SAFETY: data points at `length` bytes owned by the array, which
            // the caller's argument keeps alive for this call.
            return Ok(unsafe { std::slice::from_raw_parts(data as *const u8, length) });
        }
    }
    Err("body chunks must be strings or Uint8Arrays".into())
}

fn head<'a>(
    env: sys::napi_env,
    args: &Args,
    scratch: &'a mut Scratch,
) -> Result<(&'a [u8], HeaderList<'a>, &'a mut Held), String> {
    let fields = number(env, args[3])?;
    scratch.fields = if fields >= 0.0 { fields as usize } else { 0 };
    let status = scratch.status.decode(env, args[1])?;
    let list = HeaderList {
        joined: scratch.headers.decode(env, args[2])?,
        fields: scratch.fields,
    };
    Ok((status, list, &mut scratch.answer))
}

fn with_scratch<T>(
    driver: &Driver,
    f: impl FnOnce(&mut Scratch) -> Result<T, String>,
) -> Result<T, String> {
    let mut scratch = driver
        .scratch
        .try_borrow_mut()
        .map_err(|_| "rwsgi engine re-entered".to_string())?;
    f(&mut scratch)
}

/// The last `respond` again, to connection `conn` (listed in the driver's
/// repeat table). Ok also when the connection is gone.
pub fn respond_again(scratch: &Scratch, engine: &mut Engine, conn: f64) -> Result<(), String> {
    let status = scratch.status.repeat()?;
    let list = HeaderList {
        joined: scratch.headers.repeat()?,
        fields: scratch.fields,
    };
    let body = scratch.answer.repeat()?;
    outcome(on_conn(conn, |t| engine.respond(t, status, &list, body))).map(drop)
}

/// respond(conn, status, headers, fields, body) -> false if the connection is gone.
unsafe extern "C" fn respond(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    call(env, info, |driver, args| {
        let conn = number(env, args[0])?;
        // First: the repeats listed so far go out with the response held now.
        let mut engine = driver.engine_mut()?;
        with_scratch(driver, |scratch| {
            let (status, list, answer) = head(env, args, scratch)?;
            let body = answer.body(env, args[4])?;
            let r = on_conn(conn, |t| engine.respond(t, status, &list, body));
            Ok(Reply::Bool(outcome(r)?.is_some()))
        })
    })
}

/// start(conn, status, headers, fields, bodyLength) -> false if the connection is gone.
unsafe extern "C" fn start(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    call(env, info, |driver, args| {
        let conn = number(env, args[0])?;
        let length = number(env, args[4])?;
        let mut engine = driver.engine_mut()?;
        with_scratch(driver, |scratch| {
            let (status, list, _) = head(env, args, scratch)?;
            let length = (length >= 0.0).then_some(length as u64);
            let r = on_conn(conn, |t| engine.start(t, status, &list, length));
            Ok(Reply::Bool(outcome(r)?.is_some()))
        })
    })
}

/// write(conn, chunk) -> 1 written; 0 written, wait for onDrain; -1 connection gone.
unsafe extern "C" fn write(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    call(env, info, |driver, args| {
        let conn = number(env, args[0])?;
        let mut engine = driver.engine_mut()?;
        with_scratch(driver, |scratch| {
            let data = chunk(env, args[1], &mut scratch.body)?;
            let r = on_conn(conn, |t| engine.write(t, data));
            Ok(Reply::Int(match outcome(r)? {
                Some(true) => 1,
                Some(false) => 0,
                None => -1,
            }))
        })
    })
}

/// end(conn) -> false if the connection is gone.
unsafe extern "C" fn end(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    call(env, info, |driver, args| {
        let conn = number(env, args[0])?;
        let mut engine = driver.engine_mut()?;
        let r = on_conn(conn, |t| engine.end(t));
        Ok(Reply::Bool(outcome(r)?.is_some()))
    })
}
