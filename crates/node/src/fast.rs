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
use rwsgi_core::{HeaderList, WriteError};

use crate::driver::Driver;

/// Buffers the arguments are decoded into, reused across calls.
#[derive(Default)]
pub struct Scratch {
    status: Vec<u8>,
    headers: Vec<u8>,
    body: Vec<u8>,
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

fn check(status: sys::napi_status, what: &str) -> Result<(), String> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(format!("{what} failed"))
    }
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
    match outcome {
        Ok(Ok(Reply::Bool(b))) => unsafe { sys::napi_get_boolean(env, b, &mut result) },
        Ok(Ok(Reply::Int(n))) => unsafe { sys::napi_create_int32(env, n, &mut result) },
        Ok(Err(message)) => return throw(env, &message),
        Err(_) => return throw(env, "rwsgi: internal error"),
    };
    result
}

fn throw(env: sys::napi_env, message: &str) -> sys::napi_value {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: text is a NUL-terminated string alive for the call.
    unsafe { sys::napi_throw_error(env, ptr::null(), text.as_ptr()) };
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

fn token(env: sys::napi_env, value: sys::napi_value) -> Result<u64, String> {
    number(env, value).map(crate::token)
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
    let mut kind = 0;
    // SAFETY: value is a live argument of this call.
    check(
        unsafe { sys::napi_typeof(env, value, &mut kind) },
        "napi_typeof",
    )?;
    if kind == sys::ValueType::napi_string {
        utf8_into(env, value, buf)?;
        return Ok(buf);
    }
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

/// Ok(Some) done, Ok(None) the connection is gone, Err for app mistakes.
pub fn outcome<T>(r: Result<T, WriteError>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(WriteError::Closed) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn head<'a>(
    env: sys::napi_env,
    args: &Args,
    scratch: &'a mut Scratch,
) -> Result<(&'a [u8], HeaderList<'a>, &'a mut Vec<u8>), String> {
    utf8_into(env, args[1], &mut scratch.status)?;
    utf8_into(env, args[2], &mut scratch.headers)?;
    let fields = number(env, args[3])?;
    let list = HeaderList {
        joined: &scratch.headers,
        fields: if fields >= 0.0 { fields as usize } else { 0 },
    };
    Ok((&scratch.status, list, &mut scratch.body))
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

/// respond(conn, status, headers, fields, body) -> false if the connection is gone.
unsafe extern "C" fn respond(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    call(env, info, |driver, args| {
        let conn = token(env, args[0])?;
        with_scratch(driver, |scratch| {
            let (status, list, body_buf) = head(env, args, scratch)?;
            let body = chunk(env, args[4], body_buf)?;
            let r = driver.engine_mut()?.respond(conn, status, &list, body);
            Ok(Reply::Bool(outcome(r)?.is_some()))
        })
    })
}

/// start(conn, status, headers, fields, bodyLength) -> false if the connection is gone.
unsafe extern "C" fn start(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    call(env, info, |driver, args| {
        let conn = token(env, args[0])?;
        let length = number(env, args[4])?;
        with_scratch(driver, |scratch| {
            let (status, list, _) = head(env, args, scratch)?;
            let length = (length >= 0.0).then_some(length as u64);
            let r = driver.engine_mut()?.start(conn, status, &list, length);
            Ok(Reply::Bool(outcome(r)?.is_some()))
        })
    })
}

/// write(conn, chunk) -> 1 written; 0 written, wait for onDrain; -1 connection gone.
unsafe extern "C" fn write(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    call(env, info, |driver, args| {
        let conn = token(env, args[0])?;
        with_scratch(driver, |scratch| {
            let data = chunk(env, args[1], &mut scratch.body)?;
            let r = driver.engine_mut()?.write(conn, data);
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
        let conn = token(env, args[0])?;
        let r = driver.engine_mut()?.end(conn);
        Ok(Reply::Bool(outcome(r)?.is_some()))
    })
}
