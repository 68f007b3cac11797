//! Timers of keyed process operators.
//!
//! A `#[process(on_timer = handler)]` operator (world `keyed-process-operator`)
//! can ask the host to call `handler` back for the current key at a given time:
//!
//! - **event time**: once the operator's watermark reaches the timestamp
//!   ([`register_event_time`]);
//! - **processing time**: once the host's wall clock does
//!   ([`register_processing_time`]).
//!
//! Timers belong to the key of the record being processed (or of the timer
//! being handled), live in the host (RocksDB, part of every checkpoint) and so
//! survive plugin swaps and restarts. A key has at most one timer per domain
//! and timestamp: registering the same one again is a no-op. Due timers fire
//! in timestamp order through the handler, which gets the [`Timer`] and a
//! [`Context`](crate::Context) on which the timer's key is current: keyed
//! state reads and writes that key's state, new timers are registered for it,
//! and records emitted are attributed to the timer (`emit.input` is its index
//! in the host's `on-timer` call).
//!
//! ```
//! use sluice_sdk::{timers, Context, Error, Record, Timer, ValueState};
//!
//! static PENDING: ValueState<u64> = ValueState::new("pending");
//!
//! /// Count records per key; report the count one second (event time) after
//! /// the first record of a burst.
//! #[sluice_sdk::process(on_timer = report)]
//! fn collect(record: Record, _ctx: &mut Context) -> Result<(), Error> {
//!     let Some(t) = record.event_time else { sluice_sdk::bail!("no event time") };
//!     if PENDING.update(|n| n.unwrap_or(0) + 1)? == 1 {
//!         timers::register_event_time(t + 1000);
//!     }
//!     Ok(())
//! }
//!
//! fn report(timer: Timer, ctx: &mut Context) -> Result<(), Error> {
//!     let n = PENDING.get()?.unwrap_or(0);
//!     PENDING.clear();
//!     ctx.emit(Record::new(format!("{n} by {}", timer.timestamp)).with_key(timer.key));
//!     Ok(())
//! }
//! # fn main() {
//! let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), "{}");
//! h.process(vec![
//!     Record::new("").with_key("a").with_event_time(100),
//!     Record::new("").with_key("a").with_event_time(150),
//! ]);
//! assert_eq!(h.timers(b"a"), [(timers::TimeDomain::EventTime, 1100)]);
//! assert!(h.advance_watermark(1099).emits.is_empty());
//! assert_eq!(h.advance_watermark(1100).main_values(), ["2 by 1100"]);
//! # }
//! ```
//!
//! The functions of this module are only available to operators with an
//! `on_timer` handler: anywhere else they panic (a trap in the host) with a
//! message saying so, since only a `keyed-process-operator` component imports
//! the host's timers. Like keyed state, timers need a keyed operator.

use crate::sys;

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimeDomain {
    /// Event time: fires when the operator's watermark reaches the timestamp.
    EventTime,
    /// Processing time: fires when the host's wall clock reaches the timestamp.
    ProcessingTime,
}

impl TimeDomain {
    /// Used by the generated bindings to read the WIT enum.
    #[doc(hidden)]
    #[allow(clippy::missing_safety_doc)]
    pub unsafe fn _lift(val: u8) -> TimeDomain {
        match val {
            0 => TimeDomain::EventTime,
            1 => TimeDomain::ProcessingTime,
            _ => panic!("invalid time-domain discriminant {val}"),
        }
    }
}

/// A timer that fired, handed to the `on_timer` handler.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Timer {
    /// The key the timer was registered for (also the current key while the
    /// handler runs).
    pub key: Vec<u8>,
    /// The timer's timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    /// Its clock.
    pub domain: TimeDomain,
}

impl Timer {
    /// The key as UTF-8, if it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.key).ok()
    }
}

#[track_caller]
fn check(what: &str) {
    if !sys::timers_allowed() {
        panic!(
            "sluice_sdk::timers::{what} called by an operator without an `on_timer` handler: \
             timers are only available to `#[sluice_sdk::process(on_timer = ...)]` operators \
             (world keyed-process-operator)"
        );
    }
}

/// Register an event-time timer for the current key at `timestamp` (ms): the
/// handler runs once the watermark reaches it.
///
/// ```no_run
/// use sluice_sdk::{timers, Record};
/// # let record = Record::new("").with_event_time(0);
/// // Fire one minute of event time after the record.
/// timers::register_event_time(record.event_time.unwrap_or(0) + 60_000);
/// ```
pub fn register_event_time(timestamp: i64) {
    check("register_event_time");
    sys::timer_register(TimeDomain::EventTime, timestamp)
}

/// Register a processing-time timer for the current key at `timestamp` (ms
/// since the Unix epoch): the handler runs once the host's clock reaches it.
///
/// ```no_run
/// use sluice_sdk::timers;
/// // Thirty seconds from now, by the host's clock.
/// timers::register_processing_time(timers::current_processing_time() + 30_000);
/// ```
pub fn register_processing_time(timestamp: i64) {
    check("register_processing_time");
    sys::timer_register(TimeDomain::ProcessingTime, timestamp)
}

/// Delete the current key's event-time timer at `timestamp`, if there is one.
///
/// ```no_run
/// use sluice_sdk::timers;
/// // Move the key's timeout from 10 s to 20 s.
/// timers::delete_event_time(10_000);
/// timers::register_event_time(20_000);
/// ```
pub fn delete_event_time(timestamp: i64) {
    check("delete_event_time");
    sys::timer_delete(TimeDomain::EventTime, timestamp)
}

/// Delete the current key's processing-time timer at `timestamp`, if there is one.
///
/// ```no_run
/// use sluice_sdk::timers;
/// timers::delete_processing_time(1_700_000_000_000);
/// ```
pub fn delete_processing_time(timestamp: i64) {
    check("delete_processing_time");
    sys::timer_delete(TimeDomain::ProcessingTime, timestamp)
}

/// The operator's current event-time watermark (ms), or `None` before the
/// first watermark.
///
/// ```no_run
/// use sluice_sdk::timers;
/// let late = |event_time: i64| timers::current_watermark().is_some_and(|w| event_time < w);
/// ```
pub fn current_watermark() -> Option<i64> {
    check("current_watermark");
    match sys::current_watermark() {
        i64::MIN => None,
        w => Some(w),
    }
}

/// The host's wall clock, ms since the Unix epoch.
///
/// ```no_run
/// let now_ms: i64 = sluice_sdk::timers::current_processing_time();
/// ```
pub fn current_processing_time() -> i64 {
    check("current_processing_time");
    sys::current_processing_time()
}
