//! A checkpoint manifest read back from disk is untrusted input (DESIGN.md,
//! decision 10): whoever supplies a savepoint writes it. Before anything
//! uses a manifest, every name in it that reaches a path is checked:
//! state files are plain file names inside the checkpoint (see
//! [`sluice_state::restore_paths`]), plugin digests are sha256 hex (they
//! name files in the plugin store), plugin file names have no separators.

use std::io::Read as _;
use std::path::Path;

use super::manifest::Manifest;

/// The largest manifest read: far above any real one (a few hundred bytes
/// per state file), and a bound on what a crafted one can make a run read.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Read `path` (a manifest) as text: a regular file (not a FIFO, device or
/// symlink, which could block or point anywhere) of at most 64 MiB.
pub(crate) fn read_manifest_text(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes, more than a manifest can be", meta.len()),
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_MANIFEST_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn sha256_problem(digest: &str) -> Option<&'static str> {
    (!(digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))))
    .then_some("not a sha256 (64 lowercase hex digits)")
}

/// Why a manifest read back from disk is refused: the entry and what is
/// wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum InvalidManifest {
    /// A state file name (as the state crate checks it).
    #[error("{0}")]
    StateFile(String),
    /// A name in an operator entry.
    #[error("operator `{operator}`: {what} {shown:?}: {problem}")]
    Operator {
        /// The operator's name (its first 80 characters).
        operator: String,
        /// The field.
        what: &'static str,
        /// Its value (the first 80 characters).
        shown: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Check every name in `m` that a run turns into a path. The error names
/// the entry and what is wrong with it.
pub(crate) fn check(m: &Manifest) -> Result<(), InvalidManifest> {
    if let Some(state) = &m.state {
        sluice_state::restore_paths::check_snapshot_files(&state.files)
            .map_err(InvalidManifest::StateFile)?;
    }
    for op in &m.operators {
        let entry =
            |what: &'static str, value: &str, problem: &'static str| InvalidManifest::Operator {
                operator: op.name.chars().take(80).collect(),
                what,
                shown: value.chars().take(80).collect(),
                problem,
            };
        if !op.plugin_digest.is_empty() {
            if let Some(p) = sha256_problem(&op.plugin_digest) {
                return Err(entry("plugin_digest", &op.plugin_digest, p));
            }
        }
        if let Some(d) = &op.deployed {
            if let Some(p) = sha256_problem(d) {
                return Err(entry("deployed", d, p));
            }
        }
        let p = &op.plugin;
        if p.contains(['/', '\\', '\0']) || p == ".." {
            return Err(entry(
                "plugin",
                p,
                "a path where a plain file name is expected",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
