//! The access log's JavaScript surface: checking a format, opening the log
//! on a server, and reopening, flushing and counting it (see
//! rwsgi_core::access_log).

use napi::bindgen_prelude::*;
use napi_derive::napi;
use rwsgi_core::access_log::format::Format;
use rwsgi_core::access_log::sink::{self, Sink};
use rwsgi_core::access_log::AccessLog;

use crate::NativeServer;

/// Why `format` is not a valid `--access-logformat`, or null.
#[napi]
pub fn check_access_log_format(format: String) -> Option<String> {
    Format::compile(&format).err()
}

/// Why the access log cannot be written at `path` (`-`: stdout), or null.
#[napi]
pub fn check_access_log_file(path: String) -> Option<String> {
    if path == "-" {
        return None;
    }
    sink::open_append(&path).err().map(|e| e.to_string())
}

/// `--access-logfile`, `--access-logformat` and `--access-log-json`.
#[napi(object)]
pub struct AccessLogOptions {
    /// A file path, or `-` for standard output.
    pub path: String,
    pub format: String,
    pub json: bool,
}

#[napi]
impl NativeServer {
    /// Writes a line per request from now on.
    #[napi]
    pub fn open_access_log(&self, options: AccessLogOptions) -> Result<()> {
        let format = if options.json {
            Format::json()
        } else {
            Format::compile(&options.format).map_err(Error::from_reason)?
        };
        let sink = Sink::open(&options.path)
            .map_err(|e| Error::from_reason(format!("access log {}: {e}", options.path)))?;
        sink.start_writer()
            .map_err(|e| Error::from_reason(format!("access log writer thread: {e}")))?;
        self.engine()?
            .set_access_log(Some(AccessLog::new(format, sink)));
        Ok(())
    }

    /// USR1: the file is reopened by its path before the next write.
    #[napi]
    pub fn reopen_access_log(&self) -> Result<()> {
        if let Some(sink) = self.engine()?.access_log_sink() {
            sink.request_reopen();
        }
        Ok(())
    }

    /// Writes out every line so far (at drain and exit); blocks on the file.
    #[napi]
    pub fn flush_access_log(&self) -> Result<()> {
        let sink = self.engine()?.access_log_sink();
        if let Some(sink) = sink {
            sink.flush();
        }
        Ok(())
    }

    /// Lines dropped since start (the buffer was full, or a write failed).
    #[napi]
    pub fn access_log_dropped(&self) -> Result<f64> {
        let sink = self.engine()?.access_log_sink();
        Ok(sink.map_or(0.0, |s| s.dropped() as f64))
    }
}
