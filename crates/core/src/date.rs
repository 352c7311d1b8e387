//! The `Date` header, formatted once a second rather than per response.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// IMF-fixdate (RFC 9110 §5.6.7) for a count of seconds since the epoch.
pub fn imf_fixdate(unix_seconds: u64) -> String {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let weekday = DAYS[(days % 7) as usize];
    // Civil-from-days (Howard Hinnant's algorithm), valid for all u64 days we meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `Date: ...\r\n`, refreshed when the second changes.
pub struct DateCache {
    second: u64,
    line: Vec<u8>,
}

impl DateCache {
    pub fn new() -> Self {
        let mut cache = DateCache {
            second: u64::MAX,
            line: Vec::new(),
        };
        cache.refresh();
        cache
    }

    pub fn refresh(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now != self.second {
            self.second = now;
            self.line.clear();
            self.line.extend_from_slice(b"Date: ");
            self.line.extend_from_slice(imf_fixdate(now).as_bytes());
            self.line.extend_from_slice(b"\r\n");
        }
    }

    pub fn header_line(&self) -> &[u8] {
        &self.line
    }
}

impl Default for DateCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(imf_fixdate(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(imf_fixdate(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(imf_fixdate(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
    }

    #[test]
    fn cache_holds_one_header_line() {
        let cache = DateCache::new();
        let line = std::str::from_utf8(cache.header_line()).unwrap();
        assert!(line.starts_with("Date: ") && line.ends_with(" GMT\r\n"));
    }
}
