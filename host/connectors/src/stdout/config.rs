//! The settings of the `stdout` sink.

use serde::Deserialize;

use crate::format::SinkFormat;

/// Configuration of a `stdout` sink (`type = "stdout"` in `[[sinks]]`),
/// which prints one line per record on standard output.
///
/// ```toml
/// [[sinks]]
/// name = "console"
/// type = "stdout"
/// input = "clean"
/// format = "envelope"
/// ```
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// How each record is written: `"value"` (the value bytes, the default)
    /// or `"envelope"` (a JSON object with key, value, event time and
    /// headers). See [`SinkFormat`].
    #[serde(default)]
    pub format: SinkFormat,
}
