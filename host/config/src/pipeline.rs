//! A parsed and validated pipeline.

use std::path::{Path, PathBuf};

use crate::control::ControlSpec;
use crate::entry::{SinkSpec, SourceSpec};
use crate::operator::OperatorSpec;
use crate::reader::resolve;
use crate::time::CheckpointSpec;

/// The only manifest version this host reads.
pub const MANIFEST_VERSION: u32 = 1;

/// A parsed and validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The pipeline's name; it names its state and checkpoint directories.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// sha256 of the file's bytes, hex.
    pub hash: String,
    /// Sources, in file order.
    pub sources: Vec<SourceSpec>,
    /// Operators, in an order where every operator comes after its inputs.
    pub operators: Vec<OperatorSpec>,
    /// Sinks, in file order.
    pub sinks: Vec<SinkSpec>,
    /// Checkpointing.
    pub checkpoints: CheckpointSpec,
    /// Hot swaps (`[control]`).
    pub control: ControlSpec,
    /// Records per batch (top-level `batch_size`; default 1024). A speed
    /// knob only: event-time results are the same for every batch size.
    pub batch_size: Option<usize>,
    /// How long a source may wait to fill a batch when input is slow, ms
    /// (top-level `batch_timeout`; default 0: send what is there).
    pub batch_timeout: Option<i64>,
}

impl Pipeline {
    /// The operator called `name`.
    pub fn operator(&self, name: &str) -> Option<&OperatorSpec> {
        self.operators.iter().find(|o| o.name == name)
    }

    /// `path` from a connector's settings: relative paths are relative to
    /// the pipeline file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve(&self.file, path)
    }
}
