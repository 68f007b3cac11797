//! What a checkpoint holds: the manifest (written last, as line 1 of
//! `manifest.json`, with its sha256 as line 2) and the source positions,
//! watermarks and sink snapshots it records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_config::WindowKind;
use sluice_state::checkpoint::SnapshotFile;
use sluice_types::SinkSnapshot;

/// Per-split event-time progress of a watermark generator: (source, split, max event time).
pub(crate) type GeneratorState = Vec<(u16, u32, i64)>;

/// Where a source is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Records emitted since the beginning of the input (the resume point
    /// of deterministic sources: file, generators).
    pub emitted: u64,
    /// Next offset per split, for display and per-split sources.
    pub splits: BTreeMap<u32, u64>,
    /// Its watermark generator's progress, if it has one.
    pub generator: Option<GeneratorState>,
    /// The input is exhausted (not merely stopped).
    pub exhausted: bool,
}

impl SourcePosition {
    /// The position of a source read by several subtasks, from theirs: each
    /// reads its own splits, so their split offsets and watermark
    /// generators together are the source's.
    pub fn merge<'a>(parts: impl Iterator<Item = &'a SourcePosition>) -> SourcePosition {
        let mut merged = SourcePosition {
            exhausted: true,
            ..SourcePosition::default()
        };
        for p in parts {
            merged.emitted += p.emitted;
            merged.splits.extend(p.splits.iter().map(|(k, v)| (*k, *v)));
            if let Some(g) = &p.generator {
                merged
                    .generator
                    .get_or_insert_with(Vec::new)
                    .extend(g.iter().copied());
            }
            merged.exhausted &= p.exhausted;
        }
        merged
    }
}

/// A source in a manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceEntry {
    /// Source name.
    pub name: String,
    /// Its position.
    pub position: SourcePosition,
}

/// An operator in a manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OperatorEntry {
    /// Operator name.
    pub name: String,
    /// Parallelism at the checkpoint.
    pub parallelism: u32,
    /// Plugin file name.
    pub plugin: String,
    /// sha256 of the plugin it ran.
    pub plugin_digest: String,
    /// Whether it has keyed state (then the pipeline must keep it keyed).
    pub keyed: bool,
    /// Its window kind, if it is a window operator (state layout depends on it).
    pub window: Option<String>,
    /// Input watermark per subtask.
    pub watermarks: Vec<i64>,
    /// Watermark generator progress per subtask, if it generates watermarks.
    pub generators: Vec<Option<GeneratorState>>,
    /// The digest of a plugin deployed by a control command (kept in the
    /// plugin store), which recovery runs instead of the pipeline file's.
    #[serde(default)]
    pub deployed: Option<String>,
    /// Params deployed with it, which recovery uses instead of the file's.
    #[serde(default)]
    pub deployed_params: Option<String>,
}

/// A sink in a manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SinkEntry {
    /// Sink name.
    pub name: String,
    /// The id it pre-committed under (the checkpoint's own).
    #[serde(default)]
    pub precommit: Option<u64>,
    /// What it pre-committed.
    pub snapshot: SinkSnapshot,
}

/// The keyed-state part of a manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StateEntry {
    /// The snapshot's files.
    pub files: Vec<SnapshotFile>,
    /// Bytes copied into the store by this checkpoint.
    pub uploaded_bytes: u64,
    /// Bytes of the whole snapshot.
    pub total_bytes: u64,
}

/// What a checkpoint holds. Written last, as line 1 of `manifest.json`,
/// with its sha256 as line 2.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// Checkpoint id.
    pub id: u64,
    /// Pipeline name.
    pub pipeline: String,
    /// sha256 of the pipeline file it ran.
    pub pipeline_hash: String,
    /// When it completed, ms since the Unix epoch.
    pub completed_ms: i64,
    /// From trigger to manifest, ms.
    pub duration_ms: u64,
    /// Longest barrier alignment of any subtask, ms.
    pub alignment_ms: u64,
    /// Longest synchronous part of a subtask's snapshot (writing its cache
    /// to RocksDB on the barrier), ms: with alignment, the pause the
    /// checkpoint causes in the pipeline.
    #[serde(default)]
    pub sync_ms: u64,
    /// The input was exhausted: the run finished.
    pub finished: bool,
    /// Sources.
    pub sources: Vec<SourceEntry>,
    /// Operators.
    pub operators: Vec<OperatorEntry>,
    /// Sinks.
    pub sinks: Vec<SinkEntry>,
    /// Keyed state, if the pipeline has any.
    pub state: Option<StateEntry>,
}

/// How a manifest names a window kind (its state layout depends on it).
pub(crate) fn window_kind(kind: &WindowKind) -> String {
    match kind {
        WindowKind::Tumbling { size } => format!("tumbling {size}"),
        WindowKind::Sliding { size, slide } => format!("sliding {size}/{slide}"),
        WindowKind::Session { gap } => format!("session {gap}"),
    }
}
