//! Sources and sinks of Sluice, and the registry that names them: the
//! pieces that make `sluice run pipeline.toml` work with no external
//! service, and the place every other connector plugs into.
//!
//! | `type`      | kind         | folder          | settings                                   |
//! |-------------|--------------|-----------------|--------------------------------------------|
//! | `generator` | source       | [`datagen`]     | [`TaxiConfig`]                             |
//! | `turbines`  | source       | [`datagen`]     | [`TurbineConfig`]                          |
//! | `clicks`    | source       | [`datagen`]     | [`ClickConfig`]                            |
//! | `file`      | source, sink | [`file`]        | [`FileSourceConfig`], [`FileSinkConfig`]   |
//! | `stdout`    | sink         | [`stdout`]      | [`StdoutSinkConfig`]                       |
//! | `kafka`     | source, sink | `sluice-kafka` crate | its `KafkaSourceConfig`, `KafkaSinkConfig` |
//!
//! Every connector implements [`sluice_types::Source`] or
//! [`sluice_types::Sink`] and is meant to run on its own blocking thread:
//! calls block (rate limiting, file I/O) instead of returning futures.
//!
//! # The registry
//!
//! A connector is a folder with its settings (`config.rs`, what its
//! `[[sources]]` or `[[sinks]]` table deserializes into, minus the keys the
//! pipeline handles: `name`, `type`, `input`, `parallelism`, `watermarks`;
//! unknown keys are rejected), its source and sink, its tests, and a
//! `register` function that adds its [`SourceType`] or [`SinkType`] to a
//! [`Registry`] under its `type` name. A type checks its entries when the
//! pipeline is read, describes them for `sluice validate` and builds them
//! when the pipeline runs; neither the pipeline crate nor the engine names
//! a connector.
//!
//! Where the registry is filled: [`builtin`] lists this crate's connectors.
//! Connectors with heavy dependencies live in their own crates and export
//! their own `register` (`sluice_kafka::register`), so this crate does not
//! pull librdkafka into what only needs a synthetic source or a file (the
//! benchmarks); the engine (`sluice_dataflow::connectors`) adds them to
//! [`builtin`], and the CLI and the tests use that registry.
//! Adding a connector (Kinesis) is one folder or crate with a `register`
//! function, plus one line there.
//!
//! ```
//! use sluice_connectors::datagen::{records, Synthetic, TaxiConfig};
//! use sluice_types::Source;
//!
//! let config: TaxiConfig = serde_json::from_str(r#"{"seed": 7, "count": 10}"#).unwrap();
//! let mut source = Synthetic::new(&config, 0).unwrap();
//! let batch = source.poll_batch(100).unwrap().unwrap();
//! assert_eq!(batch, records(&config, 0).collect::<Vec<_>>());
//! assert!(source.poll_batch(100).unwrap().is_none());
//! ```
#![deny(missing_docs)]

mod builtin;
pub mod datagen;
pub mod file;
pub mod format;
pub mod registry;
pub mod stdout;

pub use builtin::builtin;
pub use datagen::{ClickConfig, TaxiConfig, TurbineConfig};
pub use file::{FileSink, FileSinkConfig, FileSource, FileSourceConfig};
pub use format::SinkFormat;
pub use registry::{Registry, SinkContext, SinkType, SourceContext, SourceType};
pub use stdout::{StdoutSink, StdoutSinkConfig};
