//! The error type user functions return.

use std::fmt;

/// An error from user code. It becomes a per-record error (`batch-result.errors`)
/// with [`Error::message`] as its text, or, from an init hook, refuses the plugin.
///
/// Any `std::error::Error` converts into it with `?`; for a plain message use
/// [`Error::msg`] or [`bail!`](crate::bail):
///
/// ```
/// use sluice_sdk::{bail, Error};
/// fn parse(s: &str) -> Result<u32, Error> {
///     let n: u32 = s.parse()?; // ParseIntError -> Error
///     if n == 0 {
///         bail!("zero is not allowed (got {s:?})");
///     }
///     Ok(n)
/// }
/// assert_eq!(parse("0").unwrap_err().message(), "zero is not allowed (got \"0\")");
/// assert!(parse("x").is_err());
/// ```
///
/// Like `anyhow::Error`, it deliberately does not implement `std::error::Error`
/// itself, so that the blanket `From` conversion can exist.
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error {
            message: message.to_string(),
        }
    }

    /// The message, as it will appear in `batch-result.errors`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// This error with `context: ` prepended to its message.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            message: format!("{context}: {}", self.message),
        }
    }

    /// The message, by value.
    pub fn into_message(self) -> String {
        self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error {
            message: e.to_string(),
        }
    }
}

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

/// Return early with an [`Error`] built from a format string.
///
/// ```
/// # fn f(zone: u16) -> Result<(), sluice_sdk::Error> {
/// if zone > 265 {
///     sluice_sdk::bail!("zone {zone} out of range 1..=265");
/// }
/// # Ok(()) }
/// # assert_eq!(f(300).unwrap_err().message(), "zone 300 out of range 1..=265");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::core::format_args!($($arg)*)))
    };
}
