//! Aligned barrier checkpoints: the coordinator, the manifest, the store
//! layout, recovery, and barrier alignment at consumers.
//!
//! The coordinator (one thread per run) asks the sources to inject barrier
//! N; each operator and sink subtask aligns it over its inputs (buffering
//! what arrives behind it from producers that already delivered it),
//! flushes its keyed state or pre-commits its output, acknowledges, and
//! passes the barrier on. When every subtask has acknowledged, the
//! coordinator takes a RocksDB checkpoint (while caches are frozen, so that
//! RocksDB holds exactly the state at the barriers), copies new SST files to
//! the store, and writes the manifest, checksummed, last. Then the sinks
//! commit. When the input ends, a final checkpoint records where the sources
//! stopped.
//!
//! Store layout, under `[checkpoints] dir` (default
//! `<state dir>/<pipeline>/checkpoints`):
//!
//! ```text
//! shared/<xxh3>.sst              SST files, shared by the checkpoints that hold them
//! chk-<id>/db/<file>             small RocksDB files of checkpoint <id>
//! chk-<id>/manifest.json         line 1: the manifest; line 2: its sha256
//! savepoints/sp-<id>-<time>/     self-contained copies (own shared/)
//! requests/                      savepoint / stop requests from the CLI
//! ```
//!
//! Modules: `coordinator` (the thread that runs checkpoints), `manifest`
//! (what a checkpoint holds), `store` (where checkpoints live, reading
//! them back), `validate` (a manifest from disk is untrusted), `recovery`
//! (what a run restores), `align` (barrier alignment at a consumer subtask).

mod align;
mod coordinator;
mod manifest;
mod recovery;
mod store;
mod validate;

pub use crate::error::StoreError;
pub(crate) use align::{Aligner, Offer};
pub use coordinator::Request;
pub(crate) use coordinator::{Ack, Coordinator, Participants};
pub(crate) use manifest::GeneratorState;
pub use manifest::{Manifest, OperatorEntry, SinkEntry, SourceEntry, SourcePosition, StateEntry};
pub use recovery::{check_compatible, find_restore, restore_state, Restore};
pub use store::{read_manifest, verify, Listed, ManifestError, Store};
pub use validate::InvalidManifest;
