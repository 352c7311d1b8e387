//! The request counters of one worker, for the arbiter's Prometheus
//! metrics: responses by method and status class, their durations as a
//! histogram with fixed buckets, and bytes received and sent. Cumulative
//! since the engine started; a few integer increments per request.

use std::time::{Duration, Instant};

/// The methods counted by name, then everything else.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];

/// Status classes 1xx to 5xx.
pub const STATUS_CLASSES: usize = 5;

/// Upper bounds of the duration histogram's buckets, in seconds (Prometheus'
/// default buckets, from 1 ms); one more bucket counts the rest (+Inf).
pub const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A request's method as an index into `METHODS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodClass(u8);

impl MethodClass {
    pub const GET: MethodClass = MethodClass(0);

    pub fn of(method: &str) -> MethodClass {
        let named = &METHODS[..METHODS.len() - 1];
        let index = named
            .iter()
            .position(|m| *m == method)
            .unwrap_or(named.len());
        MethodClass(index as u8)
    }
}

/// The counters, each cumulative.
#[derive(Default)]
pub struct Metrics {
    /// Per method, per status class.
    requests: [[u64; STATUS_CLASSES]; METHODS.len()],
    /// Per bucket (not cumulative), the last one for longer than the bounds.
    durations: [u64; DURATION_BUCKETS.len() + 1],
    duration_sum: Duration,
    received: u64,
    sent: u64,
    /// Responses that ended in the current loop turn, timed when it ends:
    /// one clock read per turn rather than per response.
    ended: Vec<(MethodClass, u16, Instant)>,
}

/// The counters as the host exports them.
pub struct Snapshot {
    /// Method-major: `requests[m * STATUS_CLASSES + class - 1]`.
    pub requests: Vec<f64>,
    pub durations: Vec<f64>,
    pub duration_sum_seconds: f64,
    pub received: f64,
    pub sent: f64,
}

impl Metrics {
    /// A response with `status` to a `method` request, `elapsed` after it arrived.
    pub fn record(&mut self, method: MethodClass, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1;
        if let Some(row) = self.requests.get_mut(usize::from(method.0)) {
            row[class] += 1;
        }
        let seconds = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.durations[bucket] += 1;
        self.duration_sum += elapsed;
    }

    /// A response ended during a loop turn, in the request that began at
    /// `since`: counted with the others by `turn_ended`.
    pub fn ended_in_turn(&mut self, method: MethodClass, status: u16, since: Instant) {
        self.ended.push((method, status, since));
    }

    /// The loop turn is over: its responses are counted, timed to now.
    pub fn turn_ended(&mut self) {
        if self.ended.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut ended = std::mem::take(&mut self.ended);
        for &(method, status, since) in &ended {
            self.record(method, status, now.saturating_duration_since(since));
        }
        ended.clear();
        self.ended = ended;
    }

    pub fn received(&mut self, bytes: usize) {
        self.received += bytes as u64;
    }

    pub fn sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }

    /// Doubles are exact up to 2^53: far beyond what a worker counts.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.iter().flatten().map(|&n| n as f64).collect(),
            durations: self.durations.iter().map(|&n| n as f64).collect(),
            duration_sum_seconds: self.duration_sum.as_secs_f64(),
            received: self.received as f64,
            sent: self.sent as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_list_are_other() {
        assert_eq!(MethodClass::of("GET"), MethodClass::GET);
        assert_eq!(MethodClass::of("OPTIONS"), MethodClass(6));
        assert_eq!(MethodClass::of("PROPFIND"), MethodClass(7));
        assert_eq!(MethodClass::of("get"), MethodClass(7));
    }

    #[test]
    fn responses_are_counted_by_method_and_class() {
        let mut m = Metrics::default();
        m.record(MethodClass::GET, 200, Duration::ZERO);
        m.record(MethodClass::GET, 204, Duration::ZERO);
        m.record(MethodClass::of("POST"), 404, Duration::ZERO);
        m.record(MethodClass::of("BREW"), 599, Duration::ZERO);
        let s = m.snapshot();
        assert_eq!(s.requests.len(), METHODS.len() * STATUS_CLASSES);
        assert_eq!(s.requests[1], 2.0);
        assert_eq!(s.requests[2 * STATUS_CLASSES + 3], 1.0);
        assert_eq!(s.requests[7 * STATUS_CLASSES + 4], 1.0);
        assert_eq!(s.requests.iter().sum::<f64>(), 4.0);
    }

    #[test]
    fn responses_of_a_turn_are_counted_when_it_ends() {
        let mut m = Metrics::default();
        let since = Instant::now();
        m.ended_in_turn(MethodClass::GET, 200, since);
        m.ended_in_turn(MethodClass::GET, 500, since);
        assert_eq!(m.snapshot().requests.iter().sum::<f64>(), 0.0);
        m.turn_ended();
        let s = m.snapshot();
        assert_eq!(s.requests[1], 1.0);
        assert_eq!(s.requests[4], 1.0);
        assert_eq!(s.durations.iter().sum::<f64>(), 2.0);
    }

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let mut m = Metrics::default();
        m.record(MethodClass::GET, 200, Duration::from_micros(500));
        m.record(MethodClass::GET, 200, Duration::from_millis(1));
        m.record(MethodClass::GET, 200, Duration::from_millis(30));
        m.record(MethodClass::GET, 200, Duration::from_secs(11));
        let s = m.snapshot();
        assert_eq!(s.durations[0], 2.0);
        assert_eq!(s.durations[5], 1.0);
        assert_eq!(s.durations[DURATION_BUCKETS.len()], 1.0);
        assert!((s.duration_sum_seconds - 11.0315).abs() < 1e-9);
    }

    #[test]
    fn bytes_add_up() {
        let mut m = Metrics::default();
        m.received(10);
        m.received(5);
        m.sent(7);
        let s = m.snapshot();
        assert_eq!((s.received, s.sent), (15.0, 7.0));
    }
}
