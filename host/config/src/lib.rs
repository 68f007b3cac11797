//! The Sluice pipeline file.
//!
//! A pipeline is a TOML file with `manifest_version = 1`, a `name`, and
//! `[[sources]]`, `[[operators]]` and `[[sinks]]` sections. Every error names
//! the file and the line, says what was expected, and says what to do:
//!
//! ```text
//! examples/taxi/pipeline.toml:14: source `trips` (generator): unknown field `sede`, expected one of `seed`, `count`, ...
//! ```
//!
//! Streams are named after what produces them: a source `trips` produces the
//! stream `trips`, an operator `parse` its main output `parse`, its side
//! outputs `parse.<side>` and, with `on_error = "dead-letter"`, its dead
//! letters `parse.dead-letter`.
//!
//! The crate knows no connector: a source or sink entry keeps its `type` and
//! the rest of its table ([`SourceSpec::settings`]), and the reader hands
//! each entry to the [`Connectors`] it is given (the registry of
//! `sluice-connectors`), which checks it with the connector's own config type.
//!
//! | module     | holds                                                        |
//! |------------|--------------------------------------------------------------|
//! | `pipeline` | [`Pipeline`], what a read pipeline is                         |
//! | `read`     | reading a file: top-level keys, then each entry in order      |
//! | `entry`    | [`SourceSpec`], [`SinkSpec`], [`Connectors`] and [`Entry`]    |
//! | `operator` | [`OperatorSpec`] and its limits, grants and error policy      |
//! | `graph`    | checks across entries: streams, cycles, dead letters, watermarks |
//! | `time`     | event time, windows and checkpoints                           |
//! | `control`  | `[control]`: hot swaps                                        |
//! | `stream`   | names of streams                                              |
//! | `reader`   | the text and the lines of its items                           |
//! | `error`    | [`ConfigError`]                                               |
#![deny(missing_docs)]

mod control;
mod entry;
mod error;
mod graph;
mod operator;
mod pipeline;
mod read;
mod reader;
mod stream;
mod time;

pub use control::{ControlSpec, KafkaControlConfig};
pub use entry::{Connectors, Entry, SinkSpec, SourceSpec};
pub use error::ConfigError;
pub use operator::{
    ErrorPolicy, Grants, KeyBy, Limits, OperatorSpec, MAX_BATCH_SIZE, MAX_DEADLINE_MS,
    MAX_MEMORY_MB, MAX_RECORD_KB, MAX_STACK_KB,
};
pub use pipeline::{Pipeline, MANIFEST_VERSION};
pub use sluice_types::MAX_PARALLELISM;
pub use stream::DEAD_LETTER_OUTPUT;
pub use time::{
    CheckpointSpec, Millis, TimeCharacteristic, Timestamps, WatermarkSpec, WindowKind, WindowSpec,
    LATE_OUTPUT,
};
