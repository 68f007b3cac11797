//! The settings of the `file` source and sink: what their `[[sources]]` and
//! `[[sinks]]` tables deserialize into.

use std::path::PathBuf;

use serde::Deserialize;
use sluice_types::ConnectorError;

use crate::format::SinkFormat;

/// Configuration of a `file` source (`type = "file"` in `[[sources]]`),
/// which reads a file of JSON lines: every non-empty line becomes one
/// record.
///
/// ```toml
/// [[sources]]
/// name = "trips"
/// type = "file"
/// path = "data/trips.jsonl"
/// ```
///
/// Each record's value is the line's bytes without the line ending (`\n`
/// or `\r\n`); the bytes are not checked, so a malformed line reaches the
/// operators as is. Empty lines are skipped. Records have no key and no
/// event time; their position is `{split: 0, offset: <1-based line number>}`.
/// The source is exhausted at the end of the file.
///
/// A line longer than `max_record_kb` KiB (default 1024, as an operator's
/// `limits.max_record_kb`) stops the pipeline with an error that names the
/// file and the line: the source never holds more than that of one line in
/// memory, and never drops a line silently.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The file to read. A relative path is relative to the directory of the
    /// pipeline file. Required.
    pub path: PathBuf,
    /// The longest line accepted, in KiB (without the line ending).
    #[serde(default = "default_max_record_kb")]
    pub max_record_kb: u64,
}

/// The default [`FileSourceConfig::max_record_kb`].
pub const DEFAULT_MAX_RECORD_KB: u64 = 1024;

/// The largest [`FileSourceConfig::max_record_kb`] (1 GiB).
pub const MAX_MAX_RECORD_KB: u64 = 1 << 20;

fn default_max_record_kb() -> u64 {
    DEFAULT_MAX_RECORD_KB
}

impl FileSourceConfig {
    /// A config reading `path` with the default limits.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSourceConfig {
            path: path.into(),
            max_record_kb: DEFAULT_MAX_RECORD_KB,
        }
    }

    /// Check what deserialization alone cannot: `max_record_kb` from 1 to
    /// [`MAX_MAX_RECORD_KB`].
    pub fn validate(&self) -> Result<(), ConnectorError> {
        if !(1..=MAX_MAX_RECORD_KB).contains(&self.max_record_kb) {
            return Err(ConnectorError::Config(format!(
                "file: `max_record_kb` is {}, but it must be from 1 to {MAX_MAX_RECORD_KB} (KiB); \
                 leave it out for the default ({DEFAULT_MAX_RECORD_KB})",
                self.max_record_kb
            )));
        }
        Ok(())
    }
}

/// Configuration of a `file` sink (`type = "file"` in `[[sinks]]`), which
/// writes one line per record.
///
/// ```toml
/// [[sinks]]
/// name = "out"
/// type = "file"
/// input = "clean"
/// path = "out/trips.jsonl"
/// format = "envelope"
/// ```
///
/// The file is created (with missing parent directories) or truncated when
/// the pipeline starts. In the at-least-once mode ([`FileSink::new`]),
/// writes are buffered and reach the operating system at least on every
/// flush (checkpoint) and at the end of the input. In the exactly-once mode
/// ([`FileSink::exactly_once`]), the file only ever holds the output of
/// committed checkpoints: see [`FileSink`].
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to write. A relative path is relative to the directory of
    /// the pipeline file. Required.
    pub path: PathBuf,
    /// How each record is written: `"value"` (the value bytes, the default)
    /// or `"envelope"` (a JSON object with key, value, event time and
    /// headers). See [`SinkFormat`].
    #[serde(default)]
    pub format: SinkFormat,
}
