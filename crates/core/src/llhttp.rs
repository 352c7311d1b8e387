//! Binding to the llhttp that the host Node.js process exports.
//!
//! The functions are looked up with `dlsym(RTLD_DEFAULT, ..)` instead of being
//! linked, so the addon uses exactly the parser (and security fixes) of the
//! Node binary that loads it, and this crate still links without Node.
//! The struct layouts below are those of llhttp 9.3; `check_version` refuses
//! any other minor version, since llhttp 9.3 already inserted two callbacks
//! (`on_protocol`, `on_protocol_complete`) into the settings struct and a
//! stale layout would silently call the wrong callbacks.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

pub type DataCb = Option<unsafe extern "C" fn(*mut Parser, *const c_char, usize) -> c_int>;
pub type Cb = Option<unsafe extern "C" fn(*mut Parser) -> c_int>;

/// `llhttp_t` of llhttp 9.3: 96 bytes. Only the fields read directly are named.
#[repr(C)]
pub struct Parser {
    _index: i32,
    _span_pos0: *mut c_void,
    _span_cb0: *mut c_void,
    error: i32,
    reason: *const c_char,
    pub error_pos: *const c_char,
    pub data: *mut c_void,
    _current: *mut c_void,
    pub content_length: u64,
    kind: u8,
    pub method: u8,
    pub http_major: u8,
    pub http_minor: u8,
    header_state: u8,
    lenient_flags: u16,
    pub upgrade: u8,
    finish: u8,
    pub flags: u16,
    status_code: u16,
    initial_message_completed: u8,
    settings: *mut c_void,
}

/// `llhttp_settings_t` of llhttp 9.3: 25 callbacks, 200 bytes.
#[repr(C)]
#[derive(Default)]
pub struct Settings {
    pub on_message_begin: Cb,
    pub on_protocol: DataCb,
    pub on_url: DataCb,
    pub on_status: DataCb,
    pub on_method: DataCb,
    pub on_version: DataCb,
    pub on_header_field: DataCb,
    pub on_header_value: DataCb,
    pub on_chunk_extension_name: DataCb,
    pub on_chunk_extension_value: DataCb,
    pub on_headers_complete: Cb,
    pub on_body: DataCb,
    pub on_message_complete: Cb,
    pub on_protocol_complete: Cb,
    pub on_url_complete: Cb,
    pub on_status_complete: Cb,
    pub on_method_complete: Cb,
    pub on_version_complete: Cb,
    pub on_header_field_complete: Cb,
    pub on_header_value_complete: Cb,
    pub on_chunk_extension_name_complete: Cb,
    pub on_chunk_extension_value_complete: Cb,
    pub on_chunk_header: Cb,
    pub on_chunk_complete: Cb,
    pub on_reset: Cb,
}

const _: () = assert!(std::mem::size_of::<Parser>() == 96);
const _: () = assert!(std::mem::size_of::<Settings>() == 200);

pub const HPE_OK: c_int = 0;
pub const HPE_CLOSED_CONNECTION: c_int = 5;
pub const HPE_PAUSED: c_int = 21;
pub const HPE_PAUSED_UPGRADE: c_int = 22;
pub const HPE_USER: c_int = 24;

pub const F_CHUNKED: u16 = 0x8;
pub const F_CONTENT_LENGTH: u16 = 0x20;
pub const F_TRANSFER_ENCODING: u16 = 0x200;

const TYPE_REQUEST: c_int = 1;

type InitFn = unsafe extern "C" fn(*mut Parser, c_int, *const Settings);
type ExecuteFn = unsafe extern "C" fn(*mut Parser, *const c_char, usize) -> c_int;
type ParserFn = unsafe extern "C" fn(*mut Parser);
type ParserQueryFn = unsafe extern "C" fn(*const Parser) -> c_int;
type ParserTextFn = unsafe extern "C" fn(*const Parser) -> *const c_char;
type NameFn = unsafe extern "C" fn(c_int) -> *const c_char;

/// The llhttp entry points rwsgi calls, resolved once per process.
pub struct Api {
    init: InitFn,
    execute: ExecuteFn,
    resume: ParserFn,
    should_keep_alive: ParserQueryFn,
    get_error_reason: ParserTextFn,
    errno_name: NameFn,
    method_name: NameFn,
    /// `method_name`'s answers, each asked once: per request it cost a
    /// call, a `strlen` and a UTF-8 check. (Asked only of numbers the
    /// parser set: llhttp aborts on a number that names no method.)
    method_names: [OnceLock<&'static str>; 256],
}

/// The llhttp versions whose struct layouts are written above.
pub fn check_version(version: &str) -> Result<(), String> {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("9"), Some("3")) => Ok(()),
        _ => Err(format!(
            "llhttp {version} is not supported: rwsgi's binding is written for the llhttp 9.3 struct layout \
             (Node.js 20.19+/22). Run rwsgi with a Node.js that ships llhttp 9.3."
        )),
    }
}

fn lookup(name: &CStr) -> Result<*mut c_void, String> {
    crate::sys::host_symbol(name)
        .map_err(|e| format!("{e}: the llhttp exported by the node binary is required"))
}

macro_rules! resolve {
    ($name:literal, $ty:ty) => {{
        let sym = lookup($name)?;
        // SAFETY: the symbol comes from llhttp 9.3 (checked by the caller of
        // `api`), whose C prototype is `$ty`.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(sym) }
    }};
}

fn resolve_all() -> Result<Api, String> {
    Ok(Api {
        init: resolve!(c"llhttp_init", InitFn),
        execute: resolve!(c"llhttp_execute", ExecuteFn),
        resume: resolve!(c"llhttp_resume", ParserFn),
        should_keep_alive: resolve!(c"llhttp_should_keep_alive", ParserQueryFn),
        get_error_reason: resolve!(c"llhttp_get_error_reason", ParserTextFn),
        errno_name: resolve!(c"llhttp_errno_name", NameFn),
        method_name: resolve!(c"llhttp_method_name", NameFn),
        method_names: std::array::from_fn(|_| OnceLock::new()),
    })
}

/// The process-wide llhttp API, or why it is not available.
pub fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(resolve_all).as_ref().map_err(Clone::clone)
}

fn c_str(ptr: *const c_char) -> &'static str {
    if ptr.is_null() {
        return "";
    }
    // SAFETY: llhttp returns pointers to static NUL-terminated strings.
    unsafe { CStr::from_ptr(ptr) }.to_str().unwrap_or("")
}

impl Api {
    /// Initialises `parser` for requests. No lenient flag is ever set.
    ///
    /// # Safety
    /// `parser` must be valid for writes and `settings` must outlive every
    /// `execute` call on it.
    pub unsafe fn init(&self, parser: *mut Parser, settings: *const Settings) {
        (self.init)(parser, TYPE_REQUEST, settings)
    }

    /// # Safety
    /// `parser` must have been initialised by `init`, and its callbacks must
    /// tolerate being called with `data` as given.
    pub unsafe fn execute(&self, parser: *mut Parser, data: &[u8]) -> c_int {
        (self.execute)(parser, data.as_ptr().cast(), data.len())
    }

    /// # Safety
    /// `parser` must be initialised and paused.
    pub unsafe fn resume(&self, parser: *mut Parser) {
        (self.resume)(parser)
    }

    /// # Safety
    /// `parser` must be initialised.
    pub unsafe fn should_keep_alive(&self, parser: *const Parser) -> bool {
        (self.should_keep_alive)(parser) != 0
    }

    /// # Safety
    /// `parser` must be initialised.
    pub unsafe fn error_reason(&self, parser: *const Parser) -> &'static str {
        c_str((self.get_error_reason)(parser))
    }

    /// `errno` must be one `execute` returned.
    pub fn errno_name(&self, errno: c_int) -> &'static str {
        // SAFETY: llhttp_errno_name returns a static string for each error
        // llhttp returns (and aborts on any other number).
        c_str(unsafe { (self.errno_name)(errno) })
    }

    /// `method` must be a parser's `method` after its request line.
    pub fn method_name(&self, method: u8) -> &'static str {
        self.method_names[usize::from(method)].get_or_init(|| {
            // SAFETY: llhttp_method_name returns a static string for each
            // method number llhttp sets (and aborts on any other).
            c_str(unsafe { (self.method_name)(c_int::from(method)) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_verified_layout() {
        assert!(check_version("9.3.1").is_ok());
        assert!(check_version("9.3.0").is_ok());
        assert!(check_version("9.2.1").is_err());
        assert!(check_version("8.1.0").is_err());
        assert!(check_version("garbage").is_err());
    }

    #[test]
    fn missing_symbols_are_an_error_not_a_crash() {
        // A plain test binary is not Node: the lookup must fail cleanly.
        let err = api().err().unwrap_or_default();
        assert!(err.contains("llhttp_init") || err.is_empty());
    }
}
