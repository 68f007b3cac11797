//! Names read back from a checkpoint manifest are untrusted input
//! (DESIGN.md, decision 10): a crafted savepoint must not make a restore
//! read or write outside the checkpoint and the state directory.
//!
//! A snapshot file is restored as `<db>/<name>` and read from
//! `<checkpoint>/db/<name>` or `<store>/shared/<hash>.sst`, so a `name` must
//! be a plain file name of the kind RocksDB writes (`000012.sst`,
//! `MANIFEST-000005`, `CURRENT`, `OPTIONS-000007`) and a `hash` exactly what
//! [`hash_file`](crate::checkpoint::hash_file) produces. Anything else
//! (absolute paths, `..`, separators, NUL, control characters, names that
//! are too long, duplicates) is refused before any file is touched.

use std::collections::HashSet;
use std::path::Path;

use crate::snapshot::SnapshotFile;

/// The longest file name accepted (most filesystems' limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Hex digits of a snapshot file's content hash (xxh3-128).
const HASH_HEX_DIGITS: usize = 32;

/// Why `name` is not a plain file name that RocksDB could have written, or
/// `None` if it is one: 1 to [`MAX_NAME_BYTES`] ASCII letters, digits, `.`,
/// `-` and `_`, not starting with `.` (which also rules out `.` and `..`).
pub fn plain_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return Some("the name is longer than 255 bytes");
    }
    if name.contains('/') || name.contains('\\') {
        return Some("a path where a plain file name is expected");
    }
    if name.contains('\0') {
        return Some("the name contains a NUL byte");
    }
    if name.starts_with('.') {
        return Some("the name starts with `.`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Some("the name has characters other than letters, digits, `.`, `-` and `_`");
    }
    None
}

/// Why `hash` is not a content hash (32 lowercase hex digits), or `None`.
pub fn hash_problem(hash: &str) -> Option<&'static str> {
    if hash.len() == HASH_HEX_DIGITS && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        None
    } else {
        Some("the hash is not 32 lowercase hex digits")
    }
}

/// Check every file of a snapshot: plain names, well-formed hashes, no name
/// twice. The error names the entry (its index and its name, escaped) and
/// what is wrong with it.
pub fn check_snapshot_files(files: &[SnapshotFile]) -> Result<(), String> {
    let mut seen = HashSet::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let problem = plain_name_problem(&f.name)
            .or_else(|| hash_problem(&f.hash))
            .or_else(|| (!seen.insert(f.name.as_str())).then_some("the name is listed twice"));
        if let Some(problem) = problem {
            return Err(format!(
                "state file #{i} ({:?}, hash {:?}): {problem}; only plain file names inside the checkpoint are accepted",
                truncated(&f.name),
                truncated(&f.hash)
            ));
        }
    }
    Ok(())
}

/// At most 80 characters of an untrusted string, for an error message.
fn truncated(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// Whether `path` is a regular file (not a symlink, FIFO, device or
/// directory): the only kind of file a checkpoint holds. Reading a FIFO or a
/// device named by a crafted savepoint could block or never end.
pub(crate) fn regular_file(path: &Path) -> std::io::Result<std::fs::Metadata> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_file() {
        Ok(meta)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file (a checkpoint holds only regular files)",
        ))
    }
}

#[cfg(test)]
mod tests;
