//! The log's timestamps in local time, formatted once a second:
//! `[04/Dec/2026:01:02:03 +0000]` (gunicorn's `%(t)s`, strftime
//! `[%d/%b/%Y:%H:%M:%S %z]`) and ISO 8601 for JSON lines.

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

pub struct Clock {
    second: i64,
    /// `[04/Dec/2026:01:02:03 +0000]`
    bracketed: String,
    /// `2026-12-04T01:02:03`
    iso: String,
    /// `+00:00`
    offset: String,
    millis: u32,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            second: i64::MIN,
            bracketed: String::new(),
            iso: String::new(),
            offset: String::new(),
            millis: 0,
        }
    }
}

/// Local broken-down time of `seconds` since the epoch, and the offset from
/// UTC in seconds.
fn local(seconds: i64) -> (libc::tm, i64) {
    // SAFETY: an all-zero tm is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = seconds;
    // SAFETY: t and tm are valid for the call; localtime_r is thread-safe.
    unsafe { libc::localtime_r(&t, &mut tm) };
    let offset = tm.tm_gmtoff;
    (tm, offset)
}

impl Clock {
    /// Reads the time; the strings change when the second does.
    pub fn now(&mut self) -> &Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.millis = now.subsec_millis();
        let second = now.as_secs() as i64;
        if second != self.second {
            self.second = second;
            self.format(second);
        }
        self
    }

    fn format(&mut self, seconds: i64) {
        let (tm, offset) = local(seconds);
        let sign = if offset < 0 { '-' } else { '+' };
        let (h, m) = (offset.abs() / 3600, offset.abs() % 3600 / 60);
        let month = MONTHS.get(tm.tm_mon as usize).copied().unwrap_or("Jan");
        let year = tm.tm_year + 1900;
        self.bracketed = format!(
            "[{:02}/{month}/{year}:{:02}:{:02}:{:02} {sign}{h:02}{m:02}]",
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        );
        self.iso = format!(
            "{year}-{:02}-{:02}T{:02}:{:02}:{:02}",
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        );
        self.offset = format!("{sign}{h:02}:{m:02}");
    }

    pub fn bracketed(&self) -> &str {
        &self.bracketed
    }

    /// `2026-12-04T01:02:03.456+00:00`
    pub fn write_iso(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.iso.as_bytes());
        out.push(b'.');
        super::render::put_padded(out, u64::from(self.millis), 3);
        out.extend_from_slice(self.offset.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_apache_and_iso_times() {
        let mut clock = Clock::default();
        clock.format(1_796_346_123); // 2026-12-04 01:02:03 UTC
        let (_, offset) = local(1_796_346_123);
        if offset == 0 {
            assert_eq!(clock.bracketed(), "[04/Dec/2026:01:02:03 +0000]");
            let mut out = Vec::new();
            clock.write_iso(&mut out);
            assert_eq!(out, b"2026-12-04T01:02:03.000+00:00");
        }
        assert_eq!(clock.bracketed().len(), 28);
    }
}
