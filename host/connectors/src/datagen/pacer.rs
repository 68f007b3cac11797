//! Pacing a synthetic source to a rate of records per second.

use std::time::{Duration, Instant};

/// Longest a rate-limited source waits to fill a batch.
const BATCH_WINDOW_SECS: f64 = 0.010;

/// Keeps a synthetic source at `rate` records per second (every dataset
/// paces the same way): batches at most ~10 ms apart, catching up by at
/// most one second's worth of records after a stall.
pub(crate) struct Pacer {
    rate: f64,
    /// Start of the pacing schedule, set on the first call.
    start: Option<Instant>,
    /// Records allowed since `start`.
    paced: u64,
}

impl Pacer {
    pub(crate) fn new(rate: f64) -> Self {
        Pacer {
            rate,
            start: None,
            paced: 0,
        }
    }

    /// How many records (at most `want` > 0) to emit now, after sleeping as
    /// the rate requires.
    pub(crate) fn take(&mut self, want: u64) -> u64 {
        let rate = self.rate;
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        // Records allowed by now: record i is due at start + i / rate.
        let mut allowed = ((now - start).as_secs_f64() * rate).floor() as u64 + 1;
        // Forgive debt beyond one second's worth (e.g. after a long stall).
        let max_debt = (rate.ceil() as u64).max(1);
        if allowed > self.paced + max_debt {
            let skip = allowed - self.paced - max_debt;
            let shift = Duration::from_secs_f64(skip as f64 / rate);
            let start = start + shift.min(now - start);
            self.start = Some(start);
            allowed = ((now - start).as_secs_f64() * rate).floor() as u64 + 1;
        }
        let due = allowed.saturating_sub(self.paced);
        let window = ((rate * BATCH_WINDOW_SECS) as u64).max(1);
        let n = want.min(due.max(window));
        // Sleep until the last record of this batch is due.
        let last_due = self.start.unwrap_or(start)
            + Duration::from_secs_f64((self.paced + n - 1) as f64 / rate);
        let now = Instant::now();
        if last_due > now {
            std::thread::sleep(last_due - now);
        }
        self.paced += n;
        n
    }
}
