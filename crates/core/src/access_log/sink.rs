//! Where lines go: a bounded buffer the engine appends to (one uncontended
//! lock per line, never a system call), emptied into the file by a writer
//! thread every 100 ms. A slow or full disk stalls only that thread; once
//! the buffer is full, lines are dropped and counted.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

/// How often the writer thread empties the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The most bytes waiting to be written; lines past it are dropped.
pub const BUFFER_LIMIT: usize = 4 << 20;

/// Where the log is written.
enum Target {
    /// A file, by path: reopened on request (rotation).
    File { path: String, fd: OwnedFd },
    /// Standard output (`-`): never reopened, not owned.
    Stdout,
}

impl Target {
    fn fd(&self) -> RawFd {
        match self {
            Target::File { fd, .. } => fd.as_raw_fd(),
            Target::Stdout => 1,
        }
    }
}

struct Output {
    target: Target,
    /// A pipe or socket: writes stay within PIPE_BUF at line ends, so lines
    /// of several workers never interleave.
    atomic_chunks: bool,
    /// The buffer being written, swapped with the pending one.
    writing: Vec<u8>,
}

/// Lines not yet written, and how many were dropped.
#[derive(Default)]
pub struct Pending {
    pub buf: Vec<u8>,
}

pub struct Sink {
    pending: Mutex<Pending>,
    output: Mutex<Output>,
    reopen: AtomicBool,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens `path` for appending (created 0644 less the umask).
pub fn open_append(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::other("path contains a NUL byte"))?;
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
    // SAFETY: c is a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn is_stream(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is valid for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is valid for writes.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return true;
    }
    let kind = st.st_mode & libc::S_IFMT;
    kind == libc::S_IFIFO || kind == libc::S_IFSOCK
}

/// Writes all of `bytes` to `fd`, waiting out a non-blocking descriptor.
fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: bytes is valid for reads of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    let mut p = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: p is one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, 100) };
                    continue;
                }
                _ => return Err(err),
            }
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// Pieces of `bytes` ending at line ends, each at most `max` bytes unless
/// one line is longer.
fn line_chunks(bytes: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let window = &rest[..rest.len().min(max)];
        let end = if window.len() == rest.len() {
            rest.len()
        } else {
            window
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1)
                .or_else(|| rest.iter().position(|&b| b == b'\n').map(|i| i + 1))
                .unwrap_or(rest.len())
        };
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

impl Sink {
    /// Opens the log: `-` is standard output, anything else a file path.
    pub fn open(path: &str) -> io::Result<Arc<Sink>> {
        let target = if path == "-" {
            Target::Stdout
        } else {
            Target::File {
                path: path.to_string(),
                fd: open_append(path)?,
            }
        };
        let atomic_chunks = is_stream(target.fd());
        Ok(Arc::new(Sink {
            pending: Mutex::new(Pending::default()),
            output: Mutex::new(Output {
                target,
                atomic_chunks,
                writing: Vec::new(),
            }),
            reopen: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        }))
    }

    /// Starts the thread that writes the buffer out every `FLUSH_EVERY`.
    pub fn start_writer(self: &Arc<Self>) -> io::Result<()> {
        let sink = Arc::downgrade(self);
        thread::Builder::new()
            .name("rwsgi-access-log".into())
            .spawn(move || loop {
                thread::sleep(FLUSH_EVERY);
                match sink.upgrade() {
                    Some(sink) => sink.flush(),
                    None => return,
                }
            })
            .map(drop)
    }

    /// Appends one line, made by `render`, unless the buffer is full.
    pub fn append(&self, render: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = lock(&self.pending);
        let start = pending.buf.len();
        render(&mut pending.buf);
        if pending.buf.len() > BUFFER_LIMIT {
            pending.buf.truncate(start);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped since start: the buffer was full, or the write failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Reopen the file by its path before the next write (USR1, rotation).
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes out everything appended so far; blocks on the file. The writer
    /// thread calls it every 100 ms, the host at drain and exit.
    pub fn flush(&self) {
        let mut output = lock(&self.output);
        if self.reopen.swap(false, Ordering::Relaxed) {
            if let Target::File { path, fd } = &mut output.target {
                // A failed reopen keeps writing to the old file.
                if let Ok(new) = open_append(path) {
                    *fd = new;
                }
            }
            output.atomic_chunks = is_stream(output.target.fd());
        }
        let mut writing = std::mem::take(&mut output.writing);
        std::mem::swap(&mut lock(&self.pending).buf, &mut writing);
        let fd = output.target.fd();
        let max = if output.atomic_chunks {
            libc::PIPE_BUF
        } else {
            usize::MAX
        };
        for chunk in line_chunks(&writing, max) {
            if write_all(fd, chunk).is_err() {
                let lost = chunk.iter().filter(|&&b| b == b'\n').count();
                self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            }
        }
        writing.clear();
        output.writing = writing;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_at_line_ends() {
        let text = b"aaaa\nbb\ncccccc\nd\n";
        let chunks: Vec<&[u8]> = line_chunks(text, 8).collect();
        assert_eq!(chunks, vec![&b"aaaa\nbb\n"[..], b"cccccc\n", b"d\n"]);
        let long: Vec<&[u8]> = line_chunks(b"0123456789\nx\n", 4).collect();
        assert_eq!(long, vec![&b"0123456789\n"[..], b"x\n"]);
    }

    #[test]
    fn appends_flushes_reopens_and_counts_overflow() {
        let dir = std::env::temp_dir().join(format!("rwsgi-sink-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let rotated = dir.join("access.log.1");
        let path_text = path.to_string_lossy().to_string();
        let sink = Sink::open(&path_text).unwrap();
        sink.append(|b| b.extend_from_slice(b"one\n"));
        sink.flush();
        std::fs::rename(&path, &rotated).unwrap();
        sink.append(|b| b.extend_from_slice(b"two\n"));
        sink.request_reopen();
        sink.flush();
        assert_eq!(std::fs::read(&rotated).unwrap(), b"one\n");
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        sink.append(|b| b.resize(BUFFER_LIMIT + 1, b'x'));
        assert_eq!(sink.dropped(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
