//! Hot swap of operator plugins through a control source.
//!
//! A command (JSON, see [`Command`]) names an operator and a plugin with its
//! sha256. The checkpoint coordinator takes it off the hot path: it checks
//! the digest, keeps the bytes in the plugin store (by digest), compiles the
//! component and checks its kind against the operator. Then it plans the swap
//! at the next checkpoint barrier and triggers that checkpoint. Each subtask
//! of the operator switches instances right after it has aligned that
//! barrier: every record before the barrier is processed by the old version,
//! every record after it by the new one, in every subtask. Keyed state stays
//! in RocksDB and the new instance continues from it. The checkpoint's
//! manifest records the new digest, so recovery runs the same code.
//!
//! The control source of this version is a directory: `<checkpoint
//! store>/control/*.json`, with the outcome of each command in
//! `control/results/<id>.json` (`accepted`, then `applied` at a checkpoint,
//! or `rejected` with the reason). Commands are idempotent by id. Deployed
//! components are kept in `control/plugins/<sha256>.wasm`, each operator's
//! versions in `control/history/versions.json` (what `rollback` returns to).
//! All of it is owner-only (`0700` directories, `0600` files): whoever can
//! write it can run code in the pipeline (see `docs/security.md`).
//!
//! A deployed plugin is on probation for its first records
//! (`[control] probation_records`); if more than `max_error_rate` of them
//! fail, Sluice rolls it back by itself, through the same directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sluice_runtime::Plugin;

/// What a command asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Run a new plugin version.
    Deploy,
    /// Go back to the previous version (not in this version).
    Rollback,
    /// Hold the operator's input (not in this version).
    Pause,
    /// Release it (not in this version).
    Resume,
}

/// A control command.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// Unique id: a command is applied once, however often it is sent.
    pub id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The operator to change.
    pub operator: String,
    /// What to do.
    pub action: Action,
    /// The component: a path, or an `http://` URL (for `deploy`).
    #[serde(default)]
    pub plugin: Option<PathBuf>,
    /// Its sha256, hex (for `deploy`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// New params for the operator (a JSON object); without them it keeps
    /// the ones it runs with.
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    /// Why it was sent, when Sluice sends it itself (automatic rollback).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Where a command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked and planned; waiting for its checkpoint.
    Accepted,
    /// In effect from a checkpoint on.
    Applied,
    /// Refused; nothing changed.
    Rejected,
}

/// The result of a command, written to `control/results/<id>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// The command's id.
    pub id: String,
    /// Where it stands.
    pub status: Status,
    /// The operator.
    pub operator: String,
    /// The plugin digest it deploys.
    #[serde(default)]
    pub digest: Option<String>,
    /// The checkpoint at whose barrier it takes (or took) effect.
    #[serde(default)]
    pub checkpoint: Option<u64>,
    /// Why it was rejected.
    #[serde(default)]
    pub reason: Option<String>,
    /// Applied: where each source stood at that checkpoint (every record
    /// before it went to the old version, every record after to the new).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub after: BTreeMap<String, SourceAt>,
}

/// Where a source stood at a checkpoint, in an [`Outcome`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceAt {
    /// Records it had emitted.
    pub records: u64,
    /// Next offset per split (Kafka partition), for sources that have them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub splits: BTreeMap<u32, u64>,
}

impl std::fmt::Display for SourceAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.splits.is_empty() {
            return write!(f, "{} records", self.records);
        }
        let splits: Vec<String> = self.splits.iter().map(|(s, o)| format!("{s}@{o}")).collect();
        write!(f, "{} records (next offsets {})", self.records, splits.join(", "))
    }
}

impl Outcome {
    /// An outcome of `command`, with nothing more said yet.
    pub fn of(command: &Command, status: Status) -> Outcome {
        Outcome { id: command.id.clone(), status, operator: command.operator.clone(), digest: None, checkpoint: None, reason: None, after: BTreeMap::new() }
    }

    /// Whether nothing more will happen to the command.
    pub fn is_final(&self) -> bool {
        self.status != Status::Accepted
    }
}

/// Where a pipeline's control files are (under its checkpoint store).
#[derive(Clone, Debug)]
pub struct ControlDir {
    root: PathBuf,
}

impl ControlDir {
    /// The control directory below a checkpoint store's root.
    pub fn new(store_root: &Path) -> Self {
        ControlDir { root: store_root.join("control") }
    }

    /// Where commands are dropped.
    pub fn commands(&self) -> &Path {
        &self.root
    }

    /// The outcome file of command `id`.
    pub fn result(&self, id: &str) -> PathBuf {
        self.root.join("results").join(format!("{}.json", sanitize(id)))
    }

    /// The plugin store: deployed components by digest.
    pub fn plugin(&self, digest: &str) -> PathBuf {
        self.plugins().join(format!("{digest}.wasm"))
    }

    /// The plugin store's directory.
    pub fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }

    /// The admin endpoint's generated bearer token (see [`crate::token`]).
    pub fn token_file(&self) -> PathBuf {
        self.root.join("admin.token")
    }

    /// Create the control directory and the plugin store owner-only (and
    /// narrow them if an older version left them open to other users).
    pub fn secure(&self) -> Result<(), String> {
        for dir in [self.root.clone(), self.plugins()] {
            crate::private::create_dir(&dir).map_err(|e| format!("control directory {}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// Write `outcome` atomically, owner-only.
    pub fn write(&self, outcome: &Outcome) {
        let path = self.result(&outcome.id);
        let text = serde_json::to_string_pretty(outcome).unwrap_or_default();
        if let Err(e) = crate::private::write_atomic(&path, text.as_bytes()) {
            tracing::warn!("control: writing {}: {e}", path.display());
        }
    }

    /// Drop `command` into the command folder (atomically: the directory
    /// source never sees half a file; owner-only); returns the file.
    pub fn submit(&self, command: &Command) -> Result<PathBuf, String> {
        let path = self.root.join(format!("{}.json", sanitize(&command.id)));
        let bytes = serde_json::to_vec_pretty(command).map_err(|e| e.to_string())?;
        crate::private::write_atomic(&path, &bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    /// The outcome of command `id`, if there is one.
    pub fn read(&self, id: &str) -> Option<Outcome> {
        crate::private::read_regular(&self.result(id), MAX_COMMAND_BYTES).ok().and_then(|t| serde_json::from_slice(&t).ok())
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
        std::fs::read_to_string(self.history_file()).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }

    /// Replace the deploy history, atomically.
    pub fn write_history(&self, history: &History) {
        let path = self.history_file();
        let text = serde_json::to_string_pretty(history).unwrap_or_default();
        if let Err(e) = crate::private::write_atomic(&path, text.as_bytes()) {
            tracing::warn!("control: writing {}: {e}", path.display());
        }
    }

    /// Keep `bytes` (digest `digest`) in the plugin store, owner-only.
    pub fn store_plugin(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let stored = self.plugin(digest);
        if !stored.is_file() {
            crate::private::write_atomic(&stored, bytes).map_err(|e| format!("plugin store {}: {e}", stored.display()))?;
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
        DirectorySource { dir: control.commands().to_path_buf(), delivered: HashMap::new(), seen: Default::default(), next: 0 }
    }
}

impl sluice_types::ControlSource for DirectorySource {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn poll(&mut self) -> Result<Vec<(u64, Vec<u8>)>, sluice_types::ConnectorError> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Ok(Vec::new()) };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json") && !self.seen.contains(p)).collect();
        // Oldest first (names made by the CLI sort by time only within one id scheme).
        files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
        let mut out = Vec::new();
        for file in files {
            // Only regular files, bounded: a FIFO or a huge file named
            // `*.json` must not stop the coordinator.
            let bytes = match crate::private::read_regular(&file, MAX_COMMAND_BYTES) {
                Ok(b) => b,
                Err(crate::private::ReadError::Io(_)) => continue,
                Err(e) => {
                    tracing::warn!("control: ignoring {}: {e} (a command is a small JSON file)", file.display());
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

    fn settle(&mut self, token: u64, _id: &str, _outcome: &[u8]) -> Result<(), sluice_types::ConnectorError> {
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
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// What a subtask does at a planned barrier.
#[derive(Clone)]
pub(crate) enum Plan {
    /// Switch to this plugin (with these params, if new).
    Swap(Arc<Plugin>, Option<String>),
    /// Stop taking input until resumed (upstream backpressures).
    Pause,
}

/// Swaps and pauses planned at checkpoint barriers, shared by the
/// coordinator (which plans) and the operator subtasks (which apply).
#[derive(Default)]
pub(crate) struct Swaps {
    planned: Mutex<HashMap<String, (u64, Plan)>>,
    held: Mutex<std::collections::HashSet<String>>,
    /// Operator → (barrier, whether every subtask's swap succeeded).
    verdicts: Mutex<HashMap<String, (u64, bool)>>,
    decided: std::sync::Condvar,
    /// The run's stop signal: a stop (the CLI's, Ctrl-C, a failure) ends
    /// every pause, so that the paused operator drains and the run ends.
    stop: crate::StopHandle,
    /// The input has ended: no pause holds any more either.
    released: std::sync::atomic::AtomicBool,
}

/// How long a subtask that prepared a swap waits for the verdict on the
/// other subtasks' swaps: only a coordinator that is gone (a failing run)
/// takes this long.
const VERDICT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl Swaps {
    /// Swaps of a run that stops with `stop`.
    pub(crate) fn new(stop: crate::StopHandle) -> Self {
        Swaps { stop, ..Swaps::default() }
    }

    /// The input has ended: release every pause (and every later one).
    pub(crate) fn release_all(&self) {
        self.released.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every subtask of `operator` prepared its swap at barrier `at`: all
    /// switch (`ok`), or all keep the old plugin.
    pub(crate) fn decide(&self, operator: &str, at: u64, ok: bool) {
        self.verdicts.lock().unwrap_or_else(|p| p.into_inner()).insert(operator.to_string(), (at, ok));
        self.decided.notify_all();
    }

    /// Wait for the verdict on the swap of `operator` at barrier `at`
    /// (`false` if none comes in time).
    pub(crate) fn verdict(&self, operator: &str, at: u64) -> bool {
        let deadline = std::time::Instant::now() + VERDICT_WAIT;
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(&(id, ok)) = verdicts.get(operator) {
                if id == at {
                    return ok;
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::error!(operator, "no verdict on the swap at checkpoint {at} within {VERDICT_WAIT:?}; keeping the running plugin");
                return false;
            }
            verdicts = self.decided.wait_timeout(verdicts, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Operator `operator` switches to `plugin` at barrier `at`.
    pub(crate) fn plan(&self, operator: &str, at: u64, plugin: Arc<Plugin>, params: Option<String>) {
        self.planned.lock().unwrap_or_else(|p| p.into_inner()).insert(operator.to_string(), (at, Plan::Swap(plugin, params)));
    }

    /// Operator `operator` pauses after barrier `at`.
    pub(crate) fn plan_pause(&self, operator: &str, at: u64) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(operator.to_string());
        self.planned.lock().unwrap_or_else(|p| p.into_inner()).insert(operator.to_string(), (at, Plan::Pause));
    }

    /// Release a paused operator; whether it was paused.
    pub(crate) fn resume(&self, operator: &str) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).remove(operator)
    }

    /// Whether `operator` is paused (or about to be). Never once the run
    /// is stopping or its input has ended: a paused subtask waits for this
    /// to turn false, and must not hold up the end of the run.
    pub(crate) fn held(&self, operator: &str) -> bool {
        if self.stop.stopped() || self.released.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).contains(operator)
    }

    /// What `operator` does at barrier `id`, if anything is planned.
    pub(crate) fn at(&self, operator: &str, id: u64) -> Option<Plan> {
        let planned = self.planned.lock().unwrap_or_else(|p| p.into_inner());
        planned.get(operator).filter(|(at, _)| *at == id).map(|(_, p)| p.clone())
    }

    /// Forget the plan of `operator` (applied, or given up).
    pub(crate) fn done(&self, operator: &str) {
        self.planned.lock().unwrap_or_else(|p| p.into_inner()).remove(operator);
    }
}

/// The sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}
