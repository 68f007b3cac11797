//! Core data types of the Sluice host: records as they flow between sources,
//! operators and sinks, and the messages that carry them through channels.
//!
//! These types are deliberately free of wasmtime, RocksDB and tokio so that
//! connectors compile without the heavy parts of the host.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;

/// Number of key groups: the unit in which keyed state is partitioned, and the
/// upper bound on an operator's parallelism. Fixed so that state written at one
/// parallelism can be redistributed at another.
pub const MAX_PARALLELISM: u32 = 128;

/// One record header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value, uninterpreted.
    pub value: Vec<u8>,
}

/// Where a record came from: a split of a source and an offset in it.
///
/// For the generator the offset is the sequence number; for a file source it
/// is the 1-based line number; for Kafka it will be the partition offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// Index of the source in the pipeline file (order of `[[sources]]`).
    pub source: u16,
    /// Split within the source: Kafka partition, Kinesis shard, file index.
    pub split: u32,
    /// Offset within the split.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "source {} split {} offset {}",
            self.source, self.split, self.offset
        )
    }
}

/// A record as the host moves it: key, value, event time, headers, and the
/// source position it derives from (for provenance and checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Partitioning key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub value: Vec<u8>,
    /// Event time, ms since the Unix epoch.
    pub event_time: Option<i64>,
    /// Headers.
    pub headers: Vec<Header>,
    /// The source position this record derives from, if known.
    pub position: Option<Position>,
}

impl Record {
    /// A record with just a value.
    pub fn from_value(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: value.into(),
            ..Default::default()
        }
    }

    /// Approximate heap size in bytes, used for batch sizing and metrics.
    pub fn size_bytes(&self) -> usize {
        self.value.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.len())
                .sum::<usize>()
    }
}

/// A unit of work on a dataflow channel. Control messages (watermarks,
/// checkpoint barriers, swap markers) travel in order with the batches.
///
/// Several producers share a consumer's channel; control messages name
/// their producer (`from`, a pipeline-wide id of a node subtask) so that the
/// consumer can merge them per producer.
#[derive(Debug)]
pub enum Message {
    /// Records, in order.
    Batch {
        /// Producer id.
        from: u32,
        /// The records.
        records: Vec<Record>,
        /// The producer's watermark as it stood just before each record
        /// (`watermarks[i]` for `records[i]`; `i64::MIN`: none yet). A
        /// consumer judges each record against the watermark as of that
        /// record, so event-time results do not depend on how records are
        /// batched: a batch means the same as its records sent one by one,
        /// each after a watermark message.
        watermarks: Vec<i64>,
    },
    /// Checkpoint barrier `id`: everything `from` sent before it belongs to
    /// checkpoint `id`, everything after to the next one.
    Barrier {
        /// Producer id.
        from: u32,
        /// Checkpoint id.
        id: u64,
    },
    /// No record with an event time at or before `at` will follow from `from`.
    Watermark {
        /// Producer id.
        from: u32,
        /// The watermark, ms.
        at: i64,
    },
    /// `from` has no records for now: until its next watermark it does not
    /// hold back the consumer's watermark.
    Idle {
        /// Producer id.
        from: u32,
    },
    /// `from` has no more records. If its input is `exhausted`, that
    /// implies a watermark of `i64::MAX` from it (every window and timer
    /// fires); if it was stopped (for a savepoint, to resume later), its
    /// watermark stays where it was.
    End {
        /// Producer id.
        from: u32,
        /// The input ended, rather than being stopped.
        exhausted: bool,
    },
}

/// Errors raised by sources and sinks.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// An I/O error on a named path.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done, e.g. "reading".
        what: &'static str,
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is invalid.
    #[error("{0}")]
    Config(String),
    /// An external service (a Kafka broker, …) failed or refused.
    #[error("{service}: {message}")]
    Remote {
        /// Which service, e.g. "kafka".
        service: &'static str,
        /// What went wrong and, where known, what to do.
        message: String,
    },
}

/// A source of records. It runs on its own blocking thread and is polled for
/// batches until it returns `None` (bounded input exhausted).
pub trait Source: Send {
    /// Return up to `max` records, blocking as long as needed (rate limits,
    /// waiting for data). `Ok(None)` means the source is exhausted.
    fn poll_batch(&mut self, max: usize) -> Result<Option<Vec<Record>>, ConnectorError>;

    /// Skip the next `n` records without emitting them (to resume after a
    /// checkpoint that recorded how many records the source had emitted),
    /// returning how many were skipped (fewer at the end of the input).
    /// Deterministic sources replay the same records, so skipping `n`
    /// resumes exactly where the checkpoint was taken. The default polls and
    /// discards; sources with a cheaper way (or a rate limit to bypass)
    /// override it.
    fn skip(&mut self, n: u64) -> Result<u64, ConnectorError> {
        let mut skipped = 0;
        while skipped < n {
            match self.poll_batch((n - skipped).min(8192) as usize)? {
                Some(batch) => skipped += batch.len() as u64,
                None => break,
            }
        }
        Ok(skipped)
    }

    /// Resume at the per-split offsets a checkpoint recorded (split → next
    /// offset to read), instead of skipping a count of records. Sources that
    /// read a log by offset (Kafka partitions, Kinesis shards) do this and
    /// return `true`; splits missing from `splits` start as configured. The
    /// default returns `false`: the node then resumes with [`skip`](Source::skip).
    fn seek(&mut self, splits: &BTreeMap<u32, u64>) -> Result<bool, ConnectorError> {
        let _ = splits;
        Ok(false)
    }

    /// A checkpoint holding everything read up to `splits` (split → next
    /// offset) is complete: the source may acknowledge it upstream, e.g.
    /// commit consumer-group offsets so that lag tools see its progress.
    fn checkpoint_complete(&mut self, splits: &BTreeMap<u32, u64>) -> Result<(), ConnectorError> {
        let _ = splits;
        Ok(())
    }

    /// The pipeline is done with the source: nothing more is polled and the
    /// last [`checkpoint_complete`](Source::checkpoint_complete) was called.
    /// Sources that acknowledge asynchronously wait here, for a bounded
    /// time, for what they sent.
    fn finish(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// What a sink keeps in a checkpoint to finish or undo its pre-committed
/// output on recovery: sink-defined JSON (`null` for sinks that keep nothing).
pub type SinkSnapshot = serde_json::Value;

/// A sink of records. It runs on its own blocking thread.
///
/// Exactly-once sinks take part in checkpoints with a two-phase commit: on a
/// checkpoint barrier they [`pre_commit`](Sink::pre_commit) (make what was
/// written durable but not yet visible), and once the checkpoint is complete
/// they [`commit`](Sink::commit) it (make it visible). After a crash,
/// [`start`](Sink::start) brings the output back to the state of the
/// checkpoint the pipeline restarts from. At-least-once sinks keep the
/// defaults.
pub trait Sink: Send {
    /// Called once, before any write. `restore` is the checkpoint the
    /// pipeline restarts from and what this sink pre-committed in it; `None`
    /// for a fresh start.
    fn start(&mut self, restore: Option<(u64, &SinkSnapshot)>) -> Result<(), ConnectorError> {
        let _ = restore;
        Ok(())
    }
    /// Write a batch. The sink may buffer.
    fn write(&mut self, batch: &[Record]) -> Result<(), ConnectorError>;
    /// Make everything written so far durable / visible.
    fn flush(&mut self) -> Result<(), ConnectorError>;
    /// Checkpoint barrier: make everything written since the last pre-commit
    /// durable but not yet visible, as part of checkpoint `checkpoint`, and
    /// return what recovery needs to finish or undo it.
    fn pre_commit(&mut self, checkpoint: u64) -> Result<SinkSnapshot, ConnectorError> {
        let _ = checkpoint;
        self.flush()?;
        Ok(SinkSnapshot::Null)
    }
    /// Checkpoint `checkpoint` is complete: make what was pre-committed up
    /// to it visible. Idempotent.
    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        let _ = checkpoint;
        Ok(())
    }
    /// Whether output is exactly-once through checkpoints (otherwise at
    /// least once: replayed records may be written again after a crash).
    fn exactly_once(&self) -> bool {
        false
    }

    /// For sinks that cannot finish a pre-commit after a crash (a Kafka
    /// transaction dies with its producer): the newest checkpoint whose
    /// output this sink has made visible, `Some(0)` if none. Recovery then
    /// restarts from that checkpoint, so that what was pre-committed after
    /// it is produced again instead of lost. Called once, before
    /// [`start`](Sink::start); it may fence and abort what a crashed
    /// predecessor left open. `None` (the default): the sink can finish any
    /// checkpoint it pre-committed, recovery is not constrained.
    fn recovery_point(&mut self) -> Result<Option<u64>, ConnectorError> {
        Ok(None)
    }
    /// A checkpoint whose commit the sink must see before it can take more
    /// input (it has no room for another pending pre-commit). The node waits
    /// for that checkpoint to complete, calls [`commit`](Sink::commit), then
    /// goes on. `None` (the default): never wait.
    fn awaiting_commit(&self) -> Option<u64> {
        None
    }
}

/// A source of control commands for hot swaps: a watched directory, a
/// Kafka topic, an HTTP endpoint… Commands and outcomes are JSON (their
/// schema lives in the dataflow's `control` module).
///
/// A command returned by [`poll`](ControlSource::poll) is returned once per
/// run; until it is [`settle`](ControlSource::settle)d, the source keeps it
/// (a file stays, an offset stays uncommitted), so that a restarted
/// pipeline receives it again. Commands are idempotent by id, so a command
/// received twice is applied once.
pub trait ControlSource: Send {
    /// What it is, for logs: "directory /x/control", "kafka topic t".
    fn describe(&self) -> String;
    /// New commands, without blocking: (token, JSON).
    fn poll(&mut self) -> Result<Vec<(u64, Vec<u8>)>, ConnectorError>;
    /// Publish the outcome of a command that is not settled yet (accepted).
    fn report(&mut self, id: &str, outcome: &[u8]) -> Result<(), ConnectorError> {
        let _ = (id, outcome);
        Ok(())
    }
    /// Command `token` is settled (applied or rejected) with `outcome`:
    /// publish it, and forget the command.
    fn settle(&mut self, token: u64, id: &str, outcome: &[u8]) -> Result<(), ConnectorError>;
}

pub mod metrics;
