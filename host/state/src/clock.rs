//! [`StateClock`]: the source of "now" for state TTL, the wall clock or a
//! manual clock for tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The source of "now" for state TTL: the wall clock, or a manual clock for
/// tests. Cheap to clone; clones of a manual clock share its time.
#[derive(Clone, Debug, Default)]
pub struct StateClock {
    /// The manual clock's time in ms, or `None` for the wall clock.
    manual: Option<Arc<AtomicI64>>,
}

impl StateClock {
    /// The wall clock ([`SystemTime::now`]).
    pub fn system() -> Self {
        StateClock { manual: None }
    }

    /// A clock that stands still at `start_ms` (ms since the Unix epoch)
    /// until [`set`](Self::set) or [`advance`](Self::advance) moves it.
    pub fn manual(start_ms: i64) -> Self {
        StateClock {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.manual.is_some()
    }

    /// Now, in ms since the Unix epoch (0 if the wall clock is before 1970).
    #[inline]
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(ms) => ms.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Set a manual clock to `ms` (since the Unix epoch). No effect on the
    /// wall clock.
    pub fn set(&self, ms: i64) {
        if let Some(now) = &self.manual {
            now.store(ms, Ordering::Relaxed);
        }
    }

    /// Move a manual clock forward by `ms` (backward if negative). No effect
    /// on the wall clock.
    pub fn advance(&self, ms: i64) {
        if let Some(now) = &self.manual {
            now.fetch_add(ms, Ordering::Relaxed);
        }
    }
}
