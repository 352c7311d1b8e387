//! The bottom of the addon: N-API statuses as results, and JavaScript
//! numbers as connection tokens. Used by every other module, using none.

use napi::sys;
use rwsgi_core::{Token, WriteError};

/// An N-API status as a result naming the call that failed.
pub fn check(status: sys::napi_status, what: &str) -> Result<(), String> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(format!("{what} failed (napi_status {status})"))
    }
}

/// Reports a failure where nothing can be thrown (a libuv callback): on
/// stderr, where the worker's log goes too.
pub fn log_failure(message: &str) {
    eprintln!("[rwsgi] [ERROR] {message}");
}

/// A connection token passed from JavaScript as a number; None for one no
/// connection can have.
pub fn token(conn: f64) -> Option<Token> {
    (conn.is_finite() && conn >= 0.0 && conn < (1u64 << 52) as f64).then_some(conn as Token)
}

/// `call` on the connection `conn` names; a number that names none is a
/// connection that is gone.
pub fn on_conn<T>(
    conn: f64,
    call: impl FnOnce(Token) -> Result<T, WriteError>,
) -> Result<T, WriteError> {
    token(conn).map_or(Err(WriteError::Closed), call)
}

/// Ok(Some) done, Ok(None) the connection is gone, Err for app mistakes.
pub fn outcome<T>(r: Result<T, WriteError>) -> Result<Option<T>, String> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(WriteError::Closed) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_numbers_a_token_can_be_are_tokens() {
        assert_eq!(token(0.0), Some(0));
        assert_eq!(token(4_294_967_297.0), Some(1 << 32 | 1));
        assert_eq!(token(-1.0), None);
        assert_eq!(token(f64::NAN), None);
        assert_eq!(token(f64::INFINITY), None);
        assert_eq!(token(u64::MAX as f64), None);
        assert_eq!(on_conn(-1.0, |_| Ok(())), Err(WriteError::Closed));
    }
}
