//! systemd's interfaces for the arbiter: sd_notify and activated sockets
//! (see rwsgi_core::systemd).

use napi::bindgen_prelude::*;
use napi_derive::napi;

/// Sends `message` to the `$NOTIFY_SOCKET` at `socket` (a path or `@name`).
#[napi]
pub fn sd_notify(socket: String, message: String) -> Result<()> {
    rwsgi_core::systemd::notify(&socket, &message)
        .map_err(|e| Error::from_reason(format!("{socket}: {e}")))
}

/// The address listening socket `fd` was given, as a bind is written.
#[napi]
pub fn socket_name(fd: i32) -> Result<String> {
    rwsgi_core::systemd::socket_name(fd).map_err(|e| Error::from_reason(format!("fd {fd}: {e}")))
}

/// Keeps inherited socket `fd` out of the processes the arbiter starts.
#[napi]
pub fn close_on_exec(fd: i32) -> Result<()> {
    rwsgi_core::systemd::close_on_exec(fd).map_err(|e| Error::from_reason(format!("fd {fd}: {e}")))
}
