//! Apache Kafka for Sluice: a source that reads a topic from checkpointed
//! offsets, a sink that writes a topic in transactions committed with
//! checkpoints, and the small admin helpers the CLI's `kafka` commands use.
//!
//! A crate of its own because librdkafka is heavy: [`register`] adds the
//! `kafka` source and sink types to a connector registry
//! (`sluice_connectors::Registry`), and their settings are in [`config`].
//! Modules: `client` (client setup, error judgement), `producer` (the
//! producer shared by the sink, the admin helpers and the control reader),
//! `source`, `sink`, `control` (hot-swap commands from a topic), [`admin`].
//!
//! Both connectors are blocking (librdkafka does the I/O on its own threads)
//! and run on the node threads of the dataflow like every other connector.
//!
//! # Exactly-once
//! The source keeps no state of its own: the checkpoint records the next
//! offset of every partition, and a restored source seeks there. The sink
//! writes the records of each checkpoint interval in one Kafka transaction,
//! flushes it on the checkpoint barrier (pre-commit) and commits it when the
//! checkpoint is complete. A transaction cannot outlive its producer, so a
//! crash between "checkpoint complete" and "transaction committed" loses that
//! transaction; the sink therefore records, inside every transaction, the
//! checkpoint it belongs to (an offset commit of a marker consumer group), and
//! on recovery the pipeline restarts from the newest checkpoint whose
//! transaction did commit ([`sluice_types::Sink::recovery_point`]). What the
//! aborted transaction held is then produced again, exactly once.
#![deny(missing_docs)]

pub mod admin;
mod client;
pub mod config;
mod connector;
mod control;
mod producer;
mod sink;
mod source;

pub use client::CALL_TIMEOUT;
pub use config::{Delivery, KafkaSinkConfig, KafkaSourceConfig, StartOffset};
pub use connector::register;
pub use control::KafkaControl;
pub use sink::KafkaSink;
pub use source::{KafkaSource, Subtask};
