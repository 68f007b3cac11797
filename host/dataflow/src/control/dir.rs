//! The control directory under a pipeline's checkpoint store: commands,
//! their outcomes, the plugin store and the version history, all
//! owner-only; and the embedded control source that watches it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::command::{Command, Outcome};
use crate::error::ControlDirError;
use crate::private;

/// Where a pipeline's control files are (under its checkpoint store).
#[derive(Clone, Debug)]
pub struct ControlDir {
    root: PathBuf,
}

impl ControlDir {
    /// The control directory below a checkpoint store's root.
    pub fn new(store_root: &Path) -> Self {
        ControlDir {
            root: store_root.join("control"),
        }
    }

    /// Where commands are dropped.
    pub fn commands(&self) -> &Path {
        &self.root
    }

    /// The outcome file of command `id`.
    pub fn result(&self, id: &str) -> PathBuf {
        self.root
            .join("results")
            .join(format!("{}.json", sanitize(id)))
    }

    /// The plugin store: deployed components by digest.
    pub fn plugin(&self, digest: &str) -> PathBuf {
        self.plugins().join(format!("{digest}.wasm"))
    }

    /// The plugin store's directory.
    pub fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// The admin endpoint's generated bearer token (see the token module).
    pub fn token_file(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// Create the control directory and the plugin store owner-only (and
    /// narrow them if an older version left them open to other users).
    pub fn secure(&self) -> Result<(), ControlDirError> {
        for dir in [self.root.clone(), self.plugins()] {
            private::create_dir(&dir).map_err(|source| ControlDirError::Secure {
                dir: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Write `outcome` atomically, owner-only.
    pub fn write(&self, outcome: &Outcome) {
        let path = self.result(&outcome.id);
        let text = serde_json::to_string_pretty(outcome).unwrap_or_default();
        if let Err(e) = private::write_atomic(&path, text.as_bytes()) {
            tracing::warn!("control: writing {}: {e}", path.display());
        }
    }

    /// Drop `command` into the command folder (atomically: the directory
    /// source never sees half a file; owner-only); returns the file.
    pub fn submit(&self, command: &Command) -> Result<PathBuf, ControlDirError> {
        let path = self.root.join(format!("{}.json", sanitize(&command.id)));
        let bytes = serde_json::to_vec_pretty(command).map_err(ControlDirError::Encode)?;
        private::write_atomic(&path, &bytes).map_err(|source| ControlDirError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The outcome of command `id`, if there is one.
    pub fn read(&self, id: &str) -> Option<Outcome> {
        private::read_regular(&self.result(id), MAX_COMMAND_BYTES)
            .ok()
            .and_then(|t| serde_json::from_slice(&t).ok())
    }
}

/// One version an operator ran, in `control/history.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Version {
    /// The plugin's sha256.
    pub digest: String,
    /// The checkpoint from whose barrier on it ran (0: from the start).
    pub checkpoint: u64,
    /// Wall-clock time it took effect, ms since the epoch.
    pub since_ms: i64,
    /// The command that deployed it (`pipeline file` for the original).
    pub command: String,
    /// Rolled back: no longer a candidate to return to.
    #[serde(default)]
    pub rolled_back: bool,
    /// Params it was deployed with, if new ones were given.
    #[serde(default)]
    pub params: Option<String>,
}

/// The versions of every operator, oldest first.
pub type History = std::collections::BTreeMap<String, Vec<Version>>;

impl ControlDir {
    fn history_file(&self) -> PathBuf {
        // Not in the commands folder itself: every `*.json` there is a command.
        self.root.join("history").join("versions.json")
    }

    /// The deploy history (empty if none yet).
    pub fn history(&self) -> History {
        std::fs::read_to_string(self.history_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Replace the deploy history, atomically.
    pub fn write_history(&self, history: &History) {
        let path = self.history_file();
        let text = serde_json::to_string_pretty(history).unwrap_or_default();
        if let Err(e) = private::write_atomic(&path, text.as_bytes()) {
            tracing::warn!("control: writing {}: {e}", path.display());
        }
    }

    /// Keep `bytes` (digest `digest`) in the plugin store, owner-only.
    pub fn store_plugin(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, ControlDirError> {
        let stored = self.plugin(digest);
        if !stored.is_file() {
            private::write_atomic(&stored, bytes).map_err(|source| ControlDirError::Store {
                path: stored.clone(),
                source,
            })?;
        }
        Ok(stored)
    }
}

/// The embedded control source: `*.json` files in the control directory.
/// A file stays until its command is settled.
pub struct DirectorySource {
    dir: PathBuf,
    delivered: HashMap<u64, PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
    next: u64,
}

impl DirectorySource {
    /// Watch `control`'s command folder.
    pub fn new(control: &ControlDir) -> Self {
        DirectorySource {
            dir: control.commands().to_path_buf(),
            delivered: HashMap::new(),
            seen: Default::default(),
            next: 0,
        }
    }
}

impl sluice_types::ControlSource for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn poll(&mut self) -> Result<Vec<(u64, Vec<u8>)>, sluice_types::ConnectorError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json") && !self.seen.contains(p))
            .collect();
        // Oldest first (names made by the CLI sort by time only within one id scheme).
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let mut out = Vec::new();
        for file in files {
            // Only regular files, bounded: a FIFO or a huge file named
            // `*.json` must not stop the coordinator.
            let bytes = match private::read_regular(&file, MAX_COMMAND_BYTES) {
                Ok(b) => b,
                Err(private::ReadError::Io(_)) => continue,
                Err(e) => {
                    tracing::warn!(
                        "control: ignoring {}: {e} (a command is a small JSON file)",
                        file.display()
                    );
                    self.seen.insert(file);
                    continue;
                }
            };
            self.seen.insert(file.clone());
            self.next += 1;
            self.delivered.insert(self.next, file);
            out.push((self.next, bytes));
        }
        Ok(out)
    }

    fn settle(
        &mut self,
        token: u64,
        _id: &str,
        _outcome: &[u8],
    ) -> Result<(), sluice_types::ConnectorError> {
        if let Some(file) = self.delivered.remove(&token) {
            let _ = std::fs::remove_file(&file);
            self.seen.remove(&file);
        }
        Ok(())
    }
}

/// The largest command or outcome file read from the control directory.
const MAX_COMMAND_BYTES: u64 = 1 << 20;

/// Ids become file names: keep them to a safe alphabet.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
