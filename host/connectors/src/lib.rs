//! Built-in sources and sinks of Sluice: the pieces that make
//! `sluice run pipeline.toml` work with no external service.
//!
//! | connector   | kind          | module        | config                |
//! |-------------|---------------|---------------|-----------------------|
//! | `generator` | source        | [`generator`] | [`GeneratorConfig`]   |
//! | `turbines`  | source        | [`turbines`]  | [`TurbineConfig`]     |
//! | `clicks`    | source        | [`clicks`]    | [`ClickConfig`]       |
//! | `file`      | source        | [`file`]      | [`FileSourceConfig`]  |
//! | `file`      | sink          | [`file`]      | [`FileSinkConfig`]    |
//! | `stdout`    | sink          | [`stdout`]    | [`StdoutSinkConfig`]  |
//! | `kafka`     | source, sink  | `sluice-kafka` crate | [`KafkaSourceConfig`], [`KafkaSinkConfig`] |
//!
//! Every connector implements [`sluice_types::Source`] or
//! [`sluice_types::Sink`] and is meant to run on its own blocking thread:
//! calls block (rate limiting, file I/O) instead of returning futures.
//!
//! The config structs are what a `[[sources]]` or `[[sinks]]` table of a
//! pipeline file deserializes into, minus the `name`, `type` and `input`
//! keys, which the pipeline crate handles. Unknown keys are rejected.
//!
//! ```
//! use sluice_connectors::{GeneratorConfig, TaxiGenerator};
//! use sluice_types::Source;
//!
//! let config: GeneratorConfig = serde_json::from_str(r#"{"seed": 7, "count": 10}"#).unwrap();
//! let mut source = TaxiGenerator::new(&config, 0).unwrap();
//! let batch = source.poll_batch(100).unwrap().unwrap();
//! assert_eq!(batch.len(), 10);
//! assert!(source.poll_batch(100).unwrap().is_none());
//! ```
#![deny(missing_docs)]

pub mod clicks;
pub mod file;
pub mod format;
pub mod generator;
pub mod kafka;
pub mod stdout;
mod synth;
pub mod turbines;

pub use clicks::{click_records, ClickConfig, ClickGenerator};
pub use file::{FileSink, FileSinkConfig, FileSource, FileSourceConfig};
pub use format::SinkFormat;
pub use generator::{taxi_records, GeneratorConfig, TaxiGenerator};
pub use kafka::{KafkaSinkConfig, KafkaSourceConfig};
pub use stdout::{StdoutSink, StdoutSinkConfig};
pub use synth::{Generated, Synthetic};
pub use turbines::{turbine_records, TurbineConfig, TurbineGenerator};
