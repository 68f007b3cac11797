//! State snapshots for checkpoints: a RocksDB checkpoint (hard links),
//! copied incrementally into a checkpoint store.
//!
//! A snapshot of checkpoint N is a list of [`SnapshotFile`]s. SST files are
//! immutable, so they are stored once, content-addressed, in the store's
//! `shared/` directory (`<xxh3-128>.sst`) and referenced by every checkpoint
//! that contains them: a checkpoint uploads only the SSTs that the previous
//! one does not already hold. The few small files (MANIFEST, CURRENT,
//! OPTIONS) are copied into the checkpoint's own directory. Every file's
//! size and hash are recorded, so a truncated, bit-flipped or missing file
//! is detected before a restore uses it.

use std::fs::File;
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;

use crate::restore_paths::{check_snapshot_files, regular_file};
pub use crate::snapshot::{SnapshotFile, SnapshotInfo};
use crate::{OperatorState, StateBackend, StateError, StateId};

fn io(path: &Path, e: std::io::Error) -> StateError {
    StateError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Read `from` to the end, hashing it and writing it to `copy` if given.
fn read_hashing(from: &Path, mut copy: Option<(&Path, &mut File)>) -> Result<String, StateError> {
    let mut input = File::open(from).map_err(|e| io(from, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(|e| io(from, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some((path, out)) = &mut copy {
            out.write_all(&buf[..n]).map_err(|e| io(path, e))?;
        }
    }
    Ok(format!("{:032x}", hasher.digest128()))
}

/// Copy `from` to `to` (through a temporary name, then rename), returning
/// the content's hash.
fn copy_hashing(from: &Path, to: &Path) -> Result<String, StateError> {
    let tmp = to.with_extension("tmp");
    let mut output = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    let hash = read_hashing(from, Some((&tmp, &mut output)))?;
    output.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, to).map_err(|e| io(to, e))?;
    Ok(hash)
}

/// The hash of a file's content.
pub fn hash_file(path: &Path) -> Result<String, StateError> {
    read_hashing(path, None)
}

fn shared_name(hash: &str) -> String {
    format!("{hash}.sst")
}

impl StateBackend {
    /// Snapshot the database: a RocksDB checkpoint (hard links) in `work`
    /// (which must not exist; it is removed afterwards), whose small files
    /// are copied to `own` and whose SSTs go to `shared` unless `previous`
    /// (the last snapshot's files) already holds them.
    pub fn snapshot(
        &self,
        work: &Path,
        own: &Path,
        shared: &Path,
        previous: &[SnapshotFile],
    ) -> Result<SnapshotInfo, StateError> {
        let db_err = |source| StateError::Db {
            path: self.inner.path.clone(),
            source,
        };
        Checkpoint::new(&self.inner.db)
            .and_then(|c| c.create_checkpoint(work))
            .map_err(db_err)?;
        let result = (|| {
            std::fs::create_dir_all(own).map_err(|e| io(own, e))?;
            std::fs::create_dir_all(shared).map_err(|e| io(shared, e))?;
            let mut info = SnapshotInfo::default();
            let mut entries: Vec<_> = std::fs::read_dir(work)
                .map_err(|e| io(work, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| io(work, e))?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let size = entry.metadata().map_err(|e| io(&path, e))?.len();
                info.total_bytes += size;
                if name.ends_with(".sst") {
                    // SST numbers are unique within a database's history, and
                    // a restored database continues the history it was restored from.
                    if let Some(known) = previous
                        .iter()
                        .find(|f| f.shared && f.name == name && f.size == size)
                    {
                        if shared.join(shared_name(&known.hash)).is_file() {
                            info.files.push(known.clone());
                            continue;
                        }
                    }
                    let hash = hash_file(&path)?;
                    let dest = shared.join(shared_name(&hash));
                    if !dest.is_file() {
                        // Same filesystem: a hard link costs nothing; otherwise copy.
                        if std::fs::hard_link(&path, &dest).is_err() {
                            copy_hashing(&path, &dest)?;
                        }
                        info.uploaded_bytes += size;
                    }
                    info.files.push(SnapshotFile {
                        name,
                        size,
                        hash,
                        shared: true,
                    });
                } else {
                    let hash = copy_hashing(&path, &own.join(&name))?;
                    info.uploaded_bytes += size;
                    info.files.push(SnapshotFile {
                        name,
                        size,
                        hash,
                        shared: false,
                    });
                }
            }
            Ok(info)
        })();
        let _ = std::fs::remove_dir_all(work);
        result
    }
}

fn location(f: &SnapshotFile, own: &Path, shared: &Path) -> PathBuf {
    if f.shared {
        shared.join(shared_name(&f.hash))
    } else {
        own.join(&f.name)
    }
}

/// Check that every file of a snapshot is present with its size and hash.
/// The error names the first bad file and what is wrong with it.
/// Names are checked first ([`check_snapshot_files`]): a manifest is
/// untrusted input.
pub fn verify_snapshot(files: &[SnapshotFile], own: &Path, shared: &Path) -> Result<(), String> {
    check_snapshot_files(files)?;
    for f in files {
        let path = location(f, own, shared);
        let meta =
            regular_file(&path).map_err(|e| format!("{} ({}): {e}", f.name, path.display()))?;
        if meta.len() != f.size {
            return Err(format!(
                "{} ({}) is {} bytes, expected {}",
                f.name,
                path.display(),
                meta.len(),
                f.size
            ));
        }
        let hash = hash_file(&path).map_err(|e| e.to_string())?;
        if hash != f.hash {
            return Err(format!(
                "{} ({}) does not match its checksum",
                f.name,
                path.display()
            ));
        }
    }
    Ok(())
}

/// Rebuild a RocksDB directory `db` from a snapshot (hard links to the
/// store's SSTs where possible, copies otherwise). `db` is replaced. Every
/// name is checked before anything is touched, and only regular files are
/// read, so that a crafted manifest can neither write outside `db` nor make
/// the restore read a device or follow a symlink.
pub fn restore_snapshot(
    files: &[SnapshotFile],
    own: &Path,
    shared: &Path,
    db: &Path,
) -> Result<(), StateError> {
    check_snapshot_files(files).map_err(StateError::Untrusted)?;
    if db.exists() {
        std::fs::remove_dir_all(db).map_err(|e| io(db, e))?;
    }
    std::fs::create_dir_all(db).map_err(|e| io(db, e))?;
    for f in files {
        let from = location(f, own, shared);
        regular_file(&from).map_err(|e| io(&from, e))?;
        let to = db.join(&f.name);
        // RocksDB never modifies an SST and deletes it by unlinking, which
        // leaves the store's link intact.
        if !(f.shared && std::fs::hard_link(&from, &to).is_ok()) {
            std::fs::copy(&from, &to).map_err(|e| io(&from, e))?;
        }
    }
    Ok(())
}

impl OperatorState {
    /// Visit every entry of map state `state` stored in RocksDB for the key
    /// groups `groups` (flush first for a complete view): `(key group, key,
    /// map key, value)`. Used to rebuild in-memory indexes (timers) on start.
    pub fn scan_map(
        &self,
        groups: Range<u16>,
        state: StateId,
        mut f: impl FnMut(u16, &[u8], &[u8], &[u8]),
    ) -> Result<(), StateError> {
        let db = &self.backend.inner.db;
        for kg in groups {
            let mut prefix = Vec::with_capacity(6);
            prefix.extend_from_slice(&kg.to_be_bytes());
            prefix.extend_from_slice(&self.op.to_be_bytes());
            prefix.extend_from_slice(&state.0.to_be_bytes());
            let mut it = db.raw_iterator();
            it.seek(&prefix);
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(&prefix) || k.len() < 10 {
                    break;
                }
                let len = u32::from_be_bytes([k[6], k[7], k[8], k[9]]) as usize;
                if k.len() >= 10 + len {
                    f(kg, &k[10..10 + len], &k[10 + len..], v);
                }
                it.next();
            }
            it.status().map_err(|e| self.backend.err(e))?;
        }
        Ok(())
    }
}
