//! Metrics, exported by the host with the operator and subtask as labels.

use std::fmt;

use crate::sys::{self, Slot};

/// A monotonically increasing counter.
///
/// ```
/// use sluice_sdk::Counter;
/// static DROPPED: Counter = Counter::new("dropped");
/// # fn f() {
/// DROPPED.add(1);
/// # }
/// ```
pub struct Counter {
    name: &'static str,
    slot: Slot,
}

impl Counter {
    /// Declare (or re-open) the counter called `name`.
    pub const fn new(name: &'static str) -> Counter {
        Counter {
            name,
            slot: Slot::new(),
        }
    }

    /// The counter's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Add `delta` to the counter.
    #[inline]
    pub fn add(&self, delta: u64) {
        sys::counter_add(self.name, &self.slot, delta)
    }

    /// Add one to the counter.
    #[inline]
    pub fn increment(&self) {
        self.add(1)
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter").field("name", &self.name).finish()
    }
}
