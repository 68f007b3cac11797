//! Logging into the host's log, tagged with the operator and subtask.
//!
//! Use the macros, which take `format!` arguments:
//!
//! ```
//! sluice_sdk::log::info!("loaded {} rules", 3);
//! sluice_sdk::log::warn!("skipping record with empty value");
//! ```
//!
//! Logging crosses into the host on every call: keep it off the per-record
//! path, or guard it.

use std::fmt;

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very verbose diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal events.
    Info,
    /// Something unexpected that the operator handled.
    Warn,
    /// Something that failed.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// Write one log line at `level`.
pub fn log(level: Level, message: &str) {
    crate::sys::log(level, message)
}

#[doc(hidden)]
pub fn __log_fmt(level: Level, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(s) => log(level, s),
        None => log(level, &args.to_string()),
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_log {
    ($level:ident, $($arg:tt)*) => {
        $crate::log::__log_fmt($crate::log::Level::$level, ::core::format_args!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_trace { ($($arg:tt)*) => { $crate::__sluice_log!(Trace, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_debug { ($($arg:tt)*) => { $crate::__sluice_log!(Debug, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_info { ($($arg:tt)*) => { $crate::__sluice_log!(Info, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_warn { ($($arg:tt)*) => { $crate::__sluice_log!(Warn, $($arg)*) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sluice_error { ($($arg:tt)*) => { $crate::__sluice_log!(Error, $($arg)*) }; }

/// Log at debug level: `debug!("x = {x}")`.
#[doc(inline)]
pub use crate::__sluice_debug as debug;
/// Log at error level: `error!("x = {x}")`.
#[doc(inline)]
pub use crate::__sluice_error as error;
/// Log at info level: `info!("x = {x}")`.
#[doc(inline)]
pub use crate::__sluice_info as info;
/// Log at trace level: `trace!("x = {x}")`.
#[doc(inline)]
pub use crate::__sluice_trace as trace;
/// Log at warn level: `warn!("x = {x}")`.
#[doc(inline)]
pub use crate::__sluice_warn as warn;
