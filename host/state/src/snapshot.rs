//! What a state snapshot is made of ([`SnapshotFile`]) and what taking one
//! did ([`SnapshotInfo`]), on their own so that both taking a snapshot
//! (`checkpoint`) and checking a manifest's names (`restore_paths`) can use
//! them without importing each other. Public as `checkpoint::SnapshotFile`
//! and `checkpoint::SnapshotInfo`.

use serde::{Deserialize, Serialize};

/// One file of a state snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// File name in the RocksDB directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// xxh3-128 of the content, hex.
    pub hash: String,
    /// Stored in the shared directory (SSTs) rather than the checkpoint's own.
    pub shared: bool,
}

/// What taking a snapshot did.
#[derive(Clone, Debug, Default)]
pub struct SnapshotInfo {
    /// The files of the snapshot.
    pub files: Vec<SnapshotFile>,
    /// Bytes copied into the store by this snapshot (new SSTs and small files).
    pub uploaded_bytes: u64,
    /// Bytes of the whole snapshot.
    pub total_bytes: u64,
}
