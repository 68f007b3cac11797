//! Where a pipeline's checkpoints live, and reading them back: listing,
//! writing a manifest last, retention, savepoints, verification.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_config::Pipeline;
use sluice_state::checkpoint::verify_snapshot;

use super::manifest::Manifest;
use super::validate::{self, InvalidManifest};
use crate::error::StoreError;

/// Why a checkpoint cannot be used: its manifest or its state files.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// No manifest, or not one that can be read.
    #[error("no readable manifest ({0}): the checkpoint is incomplete")]
    Unreadable(std::io::Error),
    /// Fewer than two lines.
    #[error("the manifest is truncated")]
    Truncated,
    /// The body does not match its sha256.
    #[error("the manifest does not match its checksum")]
    Checksum,
    /// The body is not a manifest.
    #[error("the manifest is not valid: {0}")]
    Parse(serde_json::Error),
    /// A name in it would reach a path it must not.
    #[error("the manifest {} is not valid: {source}", .path.display())]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        source: InvalidManifest,
    },
    /// A state file is missing or damaged (as the state crate checks it).
    #[error("{0}")]
    StateFiles(String),
}

/// Where a pipeline's checkpoints live.
#[derive(Clone, Debug)]
pub struct Store {
    /// The store directory.
    pub root: PathBuf,
}

/// A checkpoint or savepoint found in a store, checked or not.
#[derive(Debug)]
pub struct Listed {
    /// Its directory.
    pub dir: PathBuf,
    /// Its id.
    pub id: u64,
    /// The manifest, or why it is unusable.
    pub manifest: Result<Manifest, ManifestError>,
}

pub(super) fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// The store of `pipeline` with these settings.
    pub fn of(pipeline: &Pipeline, state_dir: &Path) -> Store {
        let root = pipeline
            .checkpoints
            .dir
            .clone()
            .unwrap_or_else(|| state_dir.join(&pipeline.name).join("checkpoints"));
        Store { root }
    }

    pub(super) fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }

    /// The directory of checkpoint `id`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("chk-{id}"))
    }

    /// The directory savepoints are written to.
    pub fn savepoints(&self) -> PathBuf {
        self.root.join("savepoints")
    }

    /// Where CLI requests to a running pipeline go.
    pub fn requests(&self) -> PathBuf {
        self.root.join("requests")
    }

    /// Checkpoints (newest first), each with its manifest if it is complete
    /// and its checksum matches.
    pub fn list(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push(Listed {
                    dir: e.path(),
                    id,
                    manifest: read_manifest(&e.path()),
                });
            }
        }
        out.sort_by_key(|l| std::cmp::Reverse(l.id));
        out
    }

    /// Savepoints, newest first.
    pub fn list_savepoints(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.savepoints()) else {
            return out;
        };
        for e in entries.flatten() {
            let manifest = read_manifest(&e.path());
            let id = manifest.as_ref().map_or(0, |m| m.id);
            out.push(Listed {
                dir: e.path(),
                id,
                manifest,
            });
        }
        out.sort_by(|a, b| b.dir.cmp(&a.dir));
        out
    }

    /// Write `manifest` as the last file of its checkpoint directory.
    pub(super) fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let dir = self.dir(manifest.id);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let body = serde_json::to_string(manifest).map_err(StoreError::Encode)?;
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        let tmp = dir.join("manifest.json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
            writeln!(f, "{body}\n{sum}").map_err(|e| io_err(&tmp, e))?;
            f.sync_all().map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::rename(&tmp, dir.join("manifest.json")).map_err(|e| io_err(&dir, e))?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Delete all but the newest `keep` complete checkpoints (and incomplete
    /// ones older than the newest complete one), then shared files no kept
    /// checkpoint references.
    pub(super) fn retain(&self, keep: usize) {
        let listed = self.list();
        let newest_complete = listed.iter().find(|l| l.manifest.is_ok()).map(|l| l.id);
        let mut kept = 0;
        let mut referenced: std::collections::HashSet<String> = std::collections::HashSet::new();
        for l in &listed {
            let keep_it = match &l.manifest {
                Ok(_) if kept < keep => {
                    kept += 1;
                    true
                }
                Ok(_) => false,
                // In progress (newer than the newest complete) or corrupt but recent: keep for now.
                Err(_) => newest_complete.is_none_or(|n| l.id > n),
            };
            if keep_it {
                if let Ok(m) = &l.manifest {
                    referenced.extend(
                        m.state.iter().flat_map(|s| {
                            s.files.iter().filter(|f| f.shared).map(|f| f.hash.clone())
                        }),
                    );
                }
            } else {
                let _ = std::fs::remove_dir_all(&l.dir);
            }
        }
        // An in-progress checkpoint may be uploading right now: only files
        // older than a minute are collected.
        if let Ok(entries) = std::fs::read_dir(self.shared()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let hash = name.trim_end_matches(".sst").to_string();
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(60));
                if !referenced.contains(&hash) && old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Copy checkpoint `manifest` into a self-contained savepoint directory.
    pub fn savepoint(&self, manifest: &Manifest) -> Result<PathBuf, StoreError> {
        let stamp = chrono_stamp();
        let dest = self
            .savepoints()
            .join(format!("sp-{}-{stamp}", manifest.id));
        let src = self.dir(manifest.id);
        std::fs::create_dir_all(dest.join("db")).map_err(|e| io_err(&dest, e))?;
        std::fs::create_dir_all(dest.join("shared")).map_err(|e| io_err(&dest, e))?;
        if let Some(state) = &manifest.state {
            for f in &state.files {
                let (from, to) = if f.shared {
                    (
                        self.shared().join(format!("{}.sst", f.hash)),
                        dest.join("shared").join(format!("{}.sst", f.hash)),
                    )
                } else {
                    (src.join("db").join(&f.name), dest.join("db").join(&f.name))
                };
                std::fs::copy(&from, &to).map_err(|e| io_err(&from, e))?;
            }
        }
        std::fs::copy(src.join("manifest.json"), dest.join("manifest.json"))
            .map_err(|e| io_err(&src, e))?;
        Ok(dest)
    }
}

fn chrono_stamp() -> String {
    let ms = sluice_runtime::now_ms();
    format!("{ms}")
}

/// Read and check a checkpoint's manifest: present, checksum intact, parseable.
pub fn read_manifest(dir: &Path) -> Result<Manifest, ManifestError> {
    let path = dir.join("manifest.json");
    let text = validate::read_manifest_text(&path).map_err(ManifestError::Unreadable)?;
    let mut lines = text.lines();
    let (Some(body), Some(sum)) = (lines.next(), lines.next()) else {
        return Err(ManifestError::Truncated);
    };
    if hex::encode(Sha256::digest(body.as_bytes())) != sum.trim() {
        return Err(ManifestError::Checksum);
    }
    let manifest = serde_json::from_str(body).map_err(ManifestError::Parse)?;
    validate::check(&manifest).map_err(|source| ManifestError::Invalid { path, source })?;
    Ok(manifest)
}

/// Where the state files of a checkpoint or savepoint at `dir` are.
pub(super) fn state_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    let own = dir.join("db");
    let shared = if dir.join("shared").is_dir() {
        dir.join("shared")
    } else {
        dir.parent().unwrap_or(dir).join("shared")
    };
    (own, shared)
}

/// Fully verify a checkpoint: manifest and every state file.
pub fn verify(dir: &Path) -> Result<Manifest, ManifestError> {
    let m = read_manifest(dir)?;
    if let Some(state) = &m.state {
        let (own, shared) = state_dirs(dir);
        verify_snapshot(&state.files, &own, &shared).map_err(ManifestError::StateFiles)?;
    }
    Ok(m)
}
