//! Aligned barrier checkpoints: the coordinator, the manifest, the store
//! layout, and recovery.
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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_config::{Pipeline, WindowKind};
use sluice_state::checkpoint::{restore_snapshot, verify_snapshot, SnapshotFile};
use sluice_state::StateBackend;
use sluice_types::metrics::Metrics;
use sluice_types::SinkSnapshot;

use crate::{DataflowError, StopHandle};

/// Per-split event-time progress of a watermark generator: (source, split, max event time).
pub(crate) type GeneratorState = Vec<(u16, u32, i64)>;

/// What a node reports to the coordinator.
#[derive(Debug)]
pub(crate) enum Ack {
    /// A source injected barrier `id` after emitting `emitted` records.
    Source { id: u64, name: String, subtask: usize, position: SourcePosition },
    /// An operator subtask aligned barrier `id`.
    Operator { id: u64, name: String, subtask: usize, watermark: i64, generator: Option<GeneratorState>, alignment: Duration, sync: Duration },
    /// A sink aligned and pre-committed barrier `id`.
    Sink { id: u64, name: String, snapshot: SinkSnapshot, alignment: Duration },
    /// A source ended (input exhausted, or stopped).
    SourceDone { name: String, subtask: usize, position: SourcePosition },
    /// An operator subtask finished.
    OperatorDone { name: String, subtask: usize, watermark: i64, generator: Option<GeneratorState> },
    /// A sink received all its input; it waits for the final checkpoint's id.
    SinkEnded { name: String },
    /// A sink pre-committed its last output under the final checkpoint's id.
    SinkDone { name: String, snapshot: SinkSnapshot },
    /// An operator subtask switched plugins at barrier `id` (or failed to).
    Swapped { name: String, subtask: usize, id: u64, error: Option<String> },
    /// A newly deployed plugin failed too often during its probation.
    Unhealthy { name: String, subtask: usize, digest: String, reason: String },
    /// The run failed: stop coordinating.
    Abort,
}

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
        let mut merged = SourcePosition { exhausted: true, ..SourcePosition::default() };
        for p in parts {
            merged.emitted += p.emitted;
            merged.splits.extend(p.splits.iter().map(|(k, v)| (*k, *v)));
            if let Some(g) = &p.generator {
                merged.generator.get_or_insert_with(Vec::new).extend(g.iter().copied());
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

fn window_kind(kind: &WindowKind) -> String {
    match kind {
        WindowKind::Tumbling { size } => format!("tumbling {size}"),
        WindowKind::Sliding { size, slide } => format!("sliding {size}/{slide}"),
        WindowKind::Session { gap } => format!("session {gap}"),
    }
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
    pub manifest: Result<Manifest, String>,
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

impl Store {
    /// The store of `pipeline` with these settings.
    pub fn of(pipeline: &Pipeline, state_dir: &Path) -> Store {
        let root = pipeline.checkpoints.dir.clone().unwrap_or_else(|| state_dir.join(&pipeline.name).join("checkpoints"));
        Store { root }
    }

    fn shared(&self) -> PathBuf {
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
        let Ok(entries) = std::fs::read_dir(&self.root) else { return out };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) {
                out.push(Listed { dir: e.path(), id, manifest: read_manifest(&e.path()) });
            }
        }
        out.sort_by(|a, b| b.id.cmp(&a.id));
        out
    }

    /// Savepoints, newest first.
    pub fn list_savepoints(&self) -> Vec<Listed> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.savepoints()) else { return out };
        for e in entries.flatten() {
            let manifest = read_manifest(&e.path());
            let id = manifest.as_ref().map_or(0, |m| m.id);
            out.push(Listed { dir: e.path(), id, manifest });
        }
        out.sort_by(|a, b| b.dir.cmp(&a.dir));
        out
    }

    /// Write `manifest` as the last file of its checkpoint directory.
    fn write_manifest(&self, manifest: &Manifest) -> Result<(), String> {
        let dir = self.dir(manifest.id);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let body = serde_json::to_string(manifest).map_err(|e| e.to_string())?;
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
    fn retain(&self, keep: usize) {
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
                    referenced.extend(m.state.iter().flat_map(|s| s.files.iter().filter(|f| f.shared).map(|f| f.hash.clone())));
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
                let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > Duration::from_secs(60));
                if !referenced.contains(&hash) && old {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Copy checkpoint `manifest` into a self-contained savepoint directory.
    pub fn savepoint(&self, manifest: &Manifest) -> Result<PathBuf, String> {
        let stamp = chrono_stamp();
        let dest = self.savepoints().join(format!("sp-{}-{stamp}", manifest.id));
        let src = self.dir(manifest.id);
        std::fs::create_dir_all(dest.join("db")).map_err(|e| io_err(&dest, e))?;
        std::fs::create_dir_all(dest.join("shared")).map_err(|e| io_err(&dest, e))?;
        if let Some(state) = &manifest.state {
            for f in &state.files {
                let (from, to) = if f.shared {
                    (self.shared().join(format!("{}.sst", f.hash)), dest.join("shared").join(format!("{}.sst", f.hash)))
                } else {
                    (src.join("db").join(&f.name), dest.join("db").join(&f.name))
                };
                std::fs::copy(&from, &to).map_err(|e| io_err(&from, e))?;
            }
        }
        std::fs::copy(src.join("manifest.json"), dest.join("manifest.json")).map_err(|e| io_err(&src, e))?;
        Ok(dest)
    }
}

fn chrono_stamp() -> String {
    let ms = sluice_runtime::now_ms();
    format!("{ms}")
}

/// Read and check a checkpoint's manifest: present, checksum intact, parseable.
pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join("manifest.json");
    let text = crate::manifest_check::read_manifest_text(&path).map_err(|e| format!("no readable manifest ({e}): the checkpoint is incomplete"))?;
    let mut lines = text.lines();
    let (Some(body), Some(sum)) = (lines.next(), lines.next()) else {
        return Err("the manifest is truncated".into());
    };
    if hex::encode(Sha256::digest(body.as_bytes())) != sum.trim() {
        return Err("the manifest does not match its checksum".into());
    }
    let manifest = serde_json::from_str(body).map_err(|e| format!("the manifest is not valid: {e}"))?;
    crate::manifest_check::check(&manifest).map_err(|e| format!("the manifest {} is not valid: {e}", path.display()))?;
    Ok(manifest)
}

/// Where the state files of a checkpoint or savepoint at `dir` are.
fn state_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    let own = dir.join("db");
    let shared = if dir.join("shared").is_dir() { dir.join("shared") } else { dir.parent().unwrap_or(dir).join("shared") };
    (own, shared)
}

/// Fully verify a checkpoint: manifest and every state file.
pub fn verify(dir: &Path) -> Result<Manifest, String> {
    let m = read_manifest(dir)?;
    if let Some(state) = &m.state {
        let (own, shared) = state_dirs(dir);
        verify_snapshot(&state.files, &own, &shared)?;
    }
    Ok(m)
}

/// The checkpoint a run restores, and how.
#[derive(Debug)]
pub struct Restore {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Find the checkpoint to restore: `from` if given, else the newest
/// complete, intact checkpoint of the store (falling back past corrupt
/// ones, saying so). `None` for a fresh start.
pub fn find_restore(store: &Store, from: Option<&Path>, limit: Option<(u64, &str)>) -> Result<Option<Restore>, DataflowError> {
    if let Some(dir) = from {
        let manifest = verify(dir).map_err(|e| DataflowError::Checkpoint(format!("cannot restore from {}: {e}", dir.display())))?;
        if let Some((point, sink)) = limit.filter(|(p, _)| manifest.id > *p) {
            tracing::warn!("restoring checkpoint {} as asked, but sink `{sink}` committed only up to checkpoint {point}: the output of the checkpoints in between is lost", manifest.id);
        }
        return Ok(Some(Restore { dir: dir.to_path_buf(), manifest }));
    }
    for l in store.list() {
        if let Some((point, sink)) = limit.filter(|(p, _)| l.id > *p) {
            // Complete, but a sink lost its transaction in the crash: start
            // before it, so that its records are produced again.
            tracing::info!("checkpoint {} is complete but sink `{sink}` committed only up to checkpoint {point}; restoring an earlier one", l.id);
            continue;
        }
        match verify(&l.dir) {
            Ok(manifest) if manifest.finished => {
                tracing::info!("the last run finished (checkpoint {} holds the end of its input): starting from the beginning", manifest.id);
                return Ok(None);
            }
            Ok(manifest) => {
                if let Some((point, sink)) = limit.filter(|(p, _)| manifest.id < *p) {
                    tracing::warn!("sink `{sink}` committed checkpoint {point}, which is gone; restoring checkpoint {}: its output after that checkpoint is written again", manifest.id);
                }
                return Ok(Some(Restore { dir: l.dir, manifest }));
            }
            Err(e) => tracing::warn!("checkpoint {} is unusable: {e}; falling back to the previous checkpoint", l.id),
        }
    }
    Ok(None)
}

/// Check that `pipeline` can continue from `manifest`; `allow_drop` lets it
/// drop the state of operators it no longer has.
pub fn check_compatible(pipeline: &Pipeline, manifest: &Manifest, allow_drop: bool) -> Result<(), DataflowError> {
    for old in manifest.operators.iter().filter(|o| o.keyed) {
        let problem = match pipeline.operator(&old.name) {
            None => Some(format!("operator `{}` has keyed state in checkpoint {} but is not in the pipeline any more", old.name, manifest.id)),
            Some(op) if op.key_by.is_none() => Some(format!("operator `{}` has keyed state in checkpoint {} but is no longer keyed", old.name, manifest.id)),
            Some(op) => {
                let now = op.window.as_ref().map(|w| window_kind(&w.kind));
                (now != old.window).then(|| {
                    format!(
                        "operator `{}` ran windows `{}` in checkpoint {} and now `{}`: its window state is incompatible",
                        old.name,
                        old.window.as_deref().unwrap_or("none"),
                        manifest.id,
                        now.as_deref().unwrap_or("none")
                    )
                })
            }
        };
        if let Some(p) = problem {
            if allow_drop {
                tracing::warn!("{p}; dropping that state (--allow-dropped-state)");
            } else {
                return Err(DataflowError::Checkpoint(format!(
                    "{p}\n  help: restore the operator, or run with --allow-dropped-state to drop its state, or start over with a new state dir"
                )));
            }
        }
    }
    Ok(())
}

/// Rebuild the state database of a run from `restore`.
pub fn restore_state(restore: &Restore, db: &Path) -> Result<(), DataflowError> {
    if let Some(state) = &restore.manifest.state {
        let (own, shared) = state_dirs(&restore.dir);
        restore_snapshot(&state.files, &own, &shared, db).map_err(|e| DataflowError::Checkpoint(format!("restoring checkpoint {}: {e}", restore.manifest.id)))?;
    }
    Ok(())
}

/// The expected participants of a pipeline's checkpoints.
pub(crate) struct Participants {
    pub(crate) sources: Vec<(String, usize)>,
    pub(crate) operators: Vec<(String, usize)>,
    pub(crate) sinks: Vec<String>,
}

struct Pending {
    id: u64,
    started: Instant,
    sources: HashMap<(String, usize), SourcePosition>,
    operators: HashMap<(String, usize), (i64, Option<GeneratorState>)>,
    sinks: HashMap<String, SinkSnapshot>,
    alignment: Duration,
    sync: Duration,
    savepoint: Vec<PathBuf>,
}

/// A request file from the CLI.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Take a savepoint.
    pub savepoint: bool,
    /// Stop the pipeline (after the savepoint, if any).
    pub stop: bool,
    /// The run it is for ([`crate::run_lock::RunInfo::run`]); any other
    /// run drops it, so a request left behind never stops a later run.
    #[serde(default)]
    pub run: Option<String>,
}

/// The checkpoint coordinator of one run.
pub(crate) struct Coordinator {
    pub(crate) pipeline: Pipeline,
    pub(crate) store: Store,
    pub(crate) backend: Option<StateBackend>,
    pub(crate) participants: Participants,
    pub(crate) requested: Arc<AtomicU64>,
    pub(crate) completed: tokio::sync::watch::Sender<u64>,
    /// The newest checkpoint that failed or was abandoned.
    pub(crate) failed: tokio::sync::watch::Sender<u64>,
    /// The id of the final checkpoint, once everything has ended.
    pub(crate) final_id: tokio::sync::watch::Sender<u64>,
    pub(crate) acks: mpsc::Receiver<Ack>,
    /// This run's id: requests for other runs are dropped.
    pub(crate) run_id: String,
    pub(crate) next_id: u64,
    pub(crate) previous_files: Vec<SnapshotFile>,
    pub(crate) plugin_digests: HashMap<String, (String, String)>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop: StopHandle,
    /// Hot swaps: the control directory, the shared plan, the worker that
    /// fetches and compiles deployed plugins, and what is deployed now, by
    /// operator.
    pub(crate) control: crate::control::ControlDir,
    pub(crate) swaps: Arc<crate::control::Swaps>,
    pub(crate) preparer: crate::deploy::Preparer,
    pub(crate) deployed: HashMap<String, String>,
    /// Params deployed with them, by operator.
    pub(crate) deployed_params: HashMap<String, String>,
    /// Deployed digests already rolled back automatically.
    pub(crate) auto_rolled_back: std::collections::HashSet<String>,
    /// Where commands come from: the directory first, then `[control]` sources.
    pub(crate) control_sources: Vec<Box<dyn sluice_types::ControlSource>>,
    /// Commands received and not handled yet: (source, token, command).
    pub(crate) backlog: std::collections::VecDeque<(usize, u64, crate::control::Command)>,
    /// Sources whose failure was already logged.
    pub(crate) control_warned: std::collections::HashSet<usize>,
}

/// A deploy command between acceptance and its checkpoint.
struct InFlight {
    command: crate::control::Command,
    /// Which control source sent it, and its token there.
    source: usize,
    token: u64,
    at: u64,
    digest: String,
    previous: ((String, String), Option<String>),
    swapped: usize,
    errors: Vec<String>,
}

impl Coordinator {
    /// Run until the final checkpoint is written or the run aborts.
    pub(crate) fn run(mut self) -> Result<(), DataflowError> {
        let spec = self.pipeline.checkpoints.clone();
        let interval = Duration::from_millis(spec.interval.0 as u64);
        let timeout = Duration::from_millis(spec.timeout.0 as u64);
        let mut next_trigger = Instant::now() + interval;
        let mut pending: Option<Pending> = None;
        let mut done_sources: HashMap<(String, usize), SourcePosition> = HashMap::new();
        let mut done_operators: HashMap<(String, usize), (i64, Option<GeneratorState>)> = HashMap::new();
        let mut done_sinks: HashMap<String, SinkSnapshot> = HashMap::new();
        let mut ended_sinks: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut final_id: Option<u64> = None;
        let mut savepoint_waiters: Vec<PathBuf> = Vec::new();
        let mut stop_after_savepoint: Vec<PathBuf> = Vec::new();
        let metrics = self.metrics.clone();
        let cm = &metrics.checkpoints;
        let mut in_flight: Vec<InFlight> = Vec::new();
        loop {
            let wait = next_trigger.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            match self.acks.recv_timeout(wait) {
                Ok(Ack::Abort) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if pending.is_some() {
                        cm.failed.inc();
                    }
                    if let Some(b) = &self.backend {
                        b.thaw();
                    }
                    return Ok(());
                }
                Ok(Ack::Source { id, name, subtask, position }) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                        p.sources.insert((name, subtask), position);
                    }
                }
                Ok(Ack::Operator { id, name, subtask, watermark, generator, alignment, sync }) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                        p.operators.insert((name, subtask), (watermark, generator));
                        p.alignment = p.alignment.max(alignment);
                        p.sync = p.sync.max(sync);
                    }
                }
                Ok(Ack::Sink { id, name, snapshot, alignment }) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                        p.sinks.insert(name, snapshot);
                        p.alignment = p.alignment.max(alignment);
                    }
                }
                Ok(Ack::SourceDone { name, subtask, position }) => {
                    done_sources.insert((name, subtask), position);
                    // A checkpoint in flight cannot complete once a source is gone.
                    if let Some(p) = pending.take() {
                        tracing::debug!("checkpoint {} abandoned: a source finished", p.id);
                        savepoint_waiters.extend(p.savepoint);
                        if let Some(b) = &self.backend {
                            b.thaw();
                        }
                    }
                }
                Ok(Ack::OperatorDone { name, subtask, watermark, generator }) => {
                    done_operators.insert((name, subtask), (watermark, generator));
                }
                Ok(Ack::SinkEnded { name }) => {
                    ended_sinks.insert(name);
                }
                Ok(Ack::SinkDone { name, snapshot }) => {
                    done_sinks.insert(name, snapshot);
                }
                Ok(Ack::Unhealthy { name, subtask, digest, reason }) => {
                    // Once per deployed version, through the control directory like any command.
                    if self.deployed.get(&name) == Some(&digest) && !self.auto_rolled_back.contains(&digest) {
                        self.auto_rolled_back.insert(digest.clone());
                        tracing::warn!("operator `{name}` subtask {subtask}: {reason}; rolling back");
                        let command = crate::control::Command {
                            id: format!("auto-rollback-{name}-{}-{}", &digest[..12], sluice_runtime::now_ms()),
                            pipeline: self.pipeline.name.clone(),
                            operator: name,
                            action: crate::control::Action::Rollback,
                            plugin: None,
                            sha256: None,
                            params: None,
                            reason: Some(format!("automatic rollback of sha256:{digest}: {reason}")),
                        };
                        if let Err(e) = self.control.submit(&command) {
                            tracing::warn!("control: cannot queue the automatic rollback: {e}");
                        }
                    }
                }
                Ok(Ack::Swapped { name, subtask, id, error }) => {
                    if let Some(f) = in_flight.iter_mut().find(|f| f.command.operator == name && f.at == id) {
                        f.swapped += 1;
                        if let Some(e) = error {
                            f.errors.push(format!("subtask {subtask}: {e}"));
                        }
                        // The subtasks hold the barrier until all have
                        // prepared: they switch together or not at all.
                        let parallelism = self.participants.operators.iter().find(|(n, _)| *n == name).map_or(0, |(_, p)| *p);
                        if f.swapped >= parallelism {
                            self.swaps.decide(&name, id, f.errors.is_empty());
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }

            // The final checkpoint, once everything has finished.
            let total_ops: usize = self.participants.operators.iter().map(|(_, p)| p).sum();
            let total_sources: usize = self.participants.sources.iter().map(|(_, p)| p).sum();
            let all_ended = done_sources.len() == total_sources && done_operators.len() == total_ops;
            if done_sources.len() == total_sources {
                // No more input: a paused operator must drain for the run to end.
                self.swaps.release_all();
            }
            if all_ended && ended_sinks.len() == self.participants.sinks.len() && final_id.is_none() {
                // Everything upstream is done: the sinks pre-commit their
                // last output under the final checkpoint's id.
                let id = self.next_id;
                self.next_id += 1;
                final_id = Some(id);
                let _ = self.final_id.send(id);
            }
            if let (true, Some(id)) = (all_ended && done_sinks.len() == self.participants.sinks.len(), final_id) {
                let finished = done_sources.values().all(|p| p.exhausted);
                let p = Pending {
                    id,
                    started: Instant::now(),
                    sources: std::mem::take(&mut done_sources),
                    operators: std::mem::take(&mut done_operators),
                    sinks: std::mem::take(&mut done_sinks),
                    alignment: Duration::ZERO,
                    sync: Duration::ZERO,
                    savepoint: savepoint_waiters.drain(..).chain(stop_after_savepoint.drain(..)).collect(),
                };
                self.complete(p, finished)?;
                let _ = self.completed.send(id);
                return Ok(());
            }

            if let Some(p) = &pending {
                let ready = p.sources.len() == total_sources && p.operators.len() == total_ops && p.sinks.len() == self.participants.sinks.len();
                if ready {
                    let p = pending.take().expect("pending");
                    let id = p.id;
                    match self.complete(p, false) {
                        Ok(manifest) => {
                            let _ = self.completed.send(id);
                            self.settle_swaps(&mut in_flight, Some(&manifest));
                        }
                        Err(e) => {
                            cm.failed.inc();
                            tracing::warn!("checkpoint {id} failed: {e}");
                            let _ = self.failed.send(id);
                        }
                    }
                    next_trigger = Instant::now() + interval;
                } else if p.started.elapsed() > timeout {
                    tracing::warn!("checkpoint {} did not complete within {timeout:?}; abandoned", p.id);
                    cm.failed.inc();
                    let _ = self.failed.send(p.id);
                    pending = None;
                    if let Some(b) = &self.backend {
                        b.thaw();
                    }
                }
            }

            // CLI requests.
            if let Ok(entries) = std::fs::read_dir(self.store.requests()) {
                for e in entries.flatten() {
                    let path = e.path();
                    if path.extension().is_some_and(|x| x == "json") {
                        let req: Option<Request> = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str(&t).ok());
                        let _ = std::fs::remove_file(&path);
                        let Some(req) = req.filter(|r| r.run.as_deref() == Some(self.run_id.as_str())) else {
                            tracing::info!("ignoring {}: not a request for this run", path.display());
                            continue;
                        };
                        let answer = path.with_extension("done");
                        if req.stop {
                            // Stopping ends the sources; the final checkpoint is the savepoint.
                            if req.savepoint {
                                stop_after_savepoint.push(answer);
                            }
                            self.stop.stop();
                        } else if req.savepoint {
                            savepoint_waiters.push(answer);
                            next_trigger = Instant::now();
                        }
                    }
                }
            }

            // Control commands: a deploy is planned at the next barrier, which is triggered now.
            if done_sources.is_empty() && final_id.is_none() {
                if self.poll_control(&mut in_flight).is_some() {
                    next_trigger = Instant::now();
                }
            }
            self.settle_swaps(&mut in_flight, None);

            let any_done = !done_sources.is_empty();
            if pending.is_none() && !any_done && Instant::now() >= next_trigger {
                let id = self.next_id;
                self.next_id += 1;
                if let Some(b) = &self.backend {
                    b.freeze();
                }
                pending = Some(Pending {
                    id,
                    started: Instant::now(),
                    sources: HashMap::new(),
                    operators: HashMap::new(),
                    sinks: HashMap::new(),
                    alignment: Duration::ZERO,
                    sync: Duration::ZERO,
                    savepoint: std::mem::take(&mut savepoint_waiters),
                });
                self.requested.store(id, Ordering::SeqCst);
                next_trigger = Instant::now() + interval;
            }
        }
    }

    /// Take new commands from the control sources; returns the barrier a
    /// new deploy was planned at.
    fn poll_control(&mut self, in_flight: &mut Vec<InFlight>) -> Option<u64> {
        use crate::control::{Action, Command, Outcome, Status};
        for (si, source) in self.control_sources.iter_mut().enumerate() {
            match source.poll() {
                Ok(commands) => {
                    for (token, bytes) in commands {
                        match serde_json::from_slice::<Command>(&bytes) {
                            Ok(c) => self.backlog.push_back((si, token, c)),
                            Err(err) => {
                                tracing::warn!("control: {} sent something that is not a command ({err}): {}; dropped", source.describe(), String::from_utf8_lossy(&bytes[..bytes.len().min(200)]));
                                let _ = source.settle(token, "", b"");
                            }
                        }
                    }
                }
                Err(e) => {
                    if self.control_warned.insert(si) {
                        tracing::warn!("control: {}: {e}", source.describe());
                    }
                }
            }
        }
        let mut planned = None;
        // Deploys the worker has prepared take effect at the next barrier.
        for (command, (si, token), prepared) in self.preparer.finished() {
            match prepared {
                Err(reason) => {
                    let o = Outcome { digest: command.sha256.clone(), reason: Some(reason), ..Outcome::of(&command, Status::Rejected) };
                    self.settle_command(si, token, &o);
                }
                Ok((plugin, digest)) => planned = Some(self.plan_deploy(in_flight, command, si, token, plugin, digest)),
            }
        }
        let mut later = std::collections::VecDeque::new();
        while let Some((si, token, mut command)) = self.backlog.pop_front() {
            if in_flight.iter().any(|f| f.command.id == command.id) || self.preparer.has(&command.id) {
                continue;
            }
            // Idempotent: a command already settled is not applied again.
            if let Some(o) = self.control.read(&command.id).filter(|o| o.is_final()) {
                tracing::info!("control: command `{}` was already handled; ignoring the repeat", command.id);
                self.settle_command(si, token, &o);
                continue;
            }
            // One swap per operator at a time, in order: the next waits for this one.
            let busy = |op: &str| in_flight.iter().any(|f| f.command.operator == op) || self.preparer.preparing(op) || later.iter().any(|(_, _, c): &(usize, u64, Command)| c.operator == op);
            if busy(&command.operator) {
                later.push_back((si, token, command));
                continue;
            }
            let rejection = |command: &Command, reason: String| Outcome { digest: command.sha256.clone(), reason: Some(reason), ..Outcome::of(command, Status::Rejected) };
            match command.action {
                Action::Deploy => {}
                Action::Pause | Action::Resume if self.pipeline.operator(&command.operator).is_none() => {
                    let o = rejection(&command, format!("pipeline `{}` has no operator `{}`", self.pipeline.name, command.operator));
                    self.settle_command(si, token, &o);
                    continue;
                }
                Action::Pause if self.swaps.held(&command.operator) => {
                    let o = rejection(&command, format!("operator `{}` is paused already", command.operator));
                    self.settle_command(si, token, &o);
                    continue;
                }
                Action::Pause => {
                    let at = self.next_id;
                    self.swaps.plan_pause(&command.operator, at);
                    let digest = self.plugin_digests.get(&command.operator).map(|(_, d)| d.clone()).unwrap_or_default();
                    tracing::info!("control: command `{}`: operator `{}` pauses after checkpoint {at}", command.id, command.operator);
                    let previous = (self.plugin_digests.get(&command.operator).cloned().unwrap_or_default(), self.deployed.get(&command.operator).cloned());
                    self.accept(in_flight, InFlight { command, source: si, token, at, digest, previous, swapped: 0, errors: Vec::new() });
                    planned = Some(at);
                    continue;
                }
                Action::Resume => {
                    let o = if self.swaps.resume(&command.operator) {
                        Outcome::of(&command, Status::Applied)
                    } else {
                        rejection(&command, format!("operator `{}` is not paused", command.operator))
                    };
                    self.settle_command(si, token, &o);
                    continue;
                }
                Action::Rollback => match self.rollback_target(&command.operator) {
                    Ok((digest, params)) => {
                        command.plugin = Some(self.control.plugin(&digest));
                        command.sha256 = Some(digest);
                        // The params that version ran with (the file's, if none were deployed).
                        command.params = Some(match params.and_then(|p| serde_json::from_str(&p).ok()) {
                            Some(p) => p,
                            None => self.pipeline.operator(&command.operator).map(|o| o.params.clone()).unwrap_or_default(),
                        });
                    }
                    Err(reason) => {
                        let o = rejection(&command, reason);
                        self.settle_command(si, token, &o);
                        continue;
                    }
                },
            }
            // Fetched, checked and compiled by the worker, off this thread:
            // a slow URL or a big component must not hold up checkpoints.
            if !self.preparer.available() {
                let o = rejection(&command, "this run cannot prepare deploys (its deploy worker did not start)".into());
                self.settle_command(si, token, &o);
                continue;
            }
            if let Some((command, (si, token))) = self.preparer.submit(command, (si, token)) {
                later.push_back((si, token, command));
            }
        }
        self.backlog = later;
        planned
    }

    /// Plan a prepared deploy at the next barrier (the next checkpoint not
    /// yet triggered); returns it.
    fn plan_deploy(&mut self, in_flight: &mut Vec<InFlight>, command: crate::control::Command, si: usize, token: u64, plugin: Arc<sluice_runtime::Plugin>, digest: String) -> u64 {
        let at = self.next_id;
        let name = command.operator.clone();
        let file_name = plugin.info().path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let previous = (self.plugin_digests.get(&name).cloned().unwrap_or_default(), self.deployed.get(&name).cloned());
        self.plugin_digests.insert(name.clone(), (file_name, digest.clone()));
        self.deployed.insert(name.clone(), digest.clone());
        let params = command.params.as_ref().map(|p| p.to_string());
        match &params {
            Some(p) => self.deployed_params.insert(name.clone(), p.clone()),
            None => self.deployed_params.remove(&name),
        };
        self.swaps.plan(&name, at, plugin, params);
        tracing::info!("control: command `{}` ({}): operator `{name}` switches to sha256:{} at checkpoint {at}", command.id, self.control_sources[si].describe(), &digest[..12.min(digest.len())]);
        self.accept(in_flight, InFlight { command, source: si, token, at, digest, previous, swapped: 0, errors: Vec::new() });
        at
    }

    /// A command takes effect at barrier `f.at`: say so (ledger and source)
    /// and follow it until it is settled.
    fn accept(&mut self, in_flight: &mut Vec<InFlight>, f: InFlight) {
        let o = crate::control::Outcome { digest: Some(f.digest.clone()), checkpoint: Some(f.at), ..crate::control::Outcome::of(&f.command, crate::control::Status::Accepted) };
        self.control.write(&o);
        let _ = self.control_sources[f.source].report(&o.id, &serde_json::to_vec(&o).expect("an outcome serializes"));
        in_flight.push(f);
    }

    /// Write a command's final outcome and tell its source.
    fn settle_command(&mut self, source: usize, token: u64, outcome: &crate::control::Outcome) {
        if outcome.status == crate::control::Status::Rejected {
            tracing::warn!("control: command `{}` rejected: {}", outcome.id, outcome.reason.as_deref().unwrap_or(""));
        }
        self.control.write(outcome);
        let bytes = serde_json::to_vec(outcome).expect("an outcome serializes");
        if let Err(e) = self.control_sources[source].settle(token, &outcome.id, &bytes) {
            tracing::warn!("control: {}: {e}", self.control_sources[source].describe());
        }
    }

    /// The version a rollback of `operator` returns to: the one before the
    /// current one, among those not rolled back.
    fn rollback_target(&self, operator: &str) -> Result<(String, Option<String>), String> {
        let history = self.control.history();
        let active: Vec<&crate::control::Version> = history.get(operator).map(|v| v.iter().filter(|v| !v.rolled_back).collect()).unwrap_or_default();
        match active.len() {
            0 | 1 => Err(format!("operator `{operator}` has no earlier version to roll back to")),
            n => Ok((active[n - 2].digest.clone(), active[n - 2].params.clone())),
        }
    }

    /// Record in the history that `operator` runs `digest` from checkpoint `at`.
    fn record_version(&self, command: &crate::control::Command, digest: &str, at: u64) {
        let mut history = self.control.history();
        let versions = history.entry(command.operator.clone()).or_default();
        if command.action == crate::control::Action::Rollback {
            if let Some(last) = versions.iter_mut().rev().find(|v| !v.rolled_back) {
                last.rolled_back = true;
            }
        } else {
            versions.push(crate::control::Version {
                digest: digest.to_string(),
                checkpoint: at,
                since_ms: sluice_runtime::now_ms(),
                command: command.id.clone(),
                rolled_back: false,
                params: command.params.as_ref().map(|p| p.to_string()),
            });
        }
        self.control.write_history(&history);
    }

    /// Settle deploys whose subtasks have all switched, once a checkpoint
    /// at or after their barrier is complete (`completed`, 0 if none now).
    fn settle_swaps(&mut self, in_flight: &mut Vec<InFlight>, completed: Option<&Manifest>) {
        use crate::control::{Outcome, SourceAt, Status};
        if in_flight.is_empty() {
            return;
        }
        let completed_id = completed.map_or(0, |m| m.id);
        // Where the sources stood at the swap's checkpoint (known when it is the one just completed).
        let after = |at: u64| -> std::collections::BTreeMap<String, SourceAt> {
            completed
                .filter(|m| m.id == at)
                .map(|m| m.sources.iter().map(|s| (s.name.clone(), SourceAt { records: s.position.emitted, splits: s.position.splits.clone() })).collect())
                .unwrap_or_default()
        };
        let operators = self.participants.operators.clone();
        let parallelism = |name: &str| operators.iter().find(|(n, _)| n == name).map_or(0, |(_, p)| *p);
        let mut i = 0;
        while i < in_flight.len() {
            let f = &in_flight[i];
            let all = f.swapped >= parallelism(&f.command.operator);
            let outcome = if all && !f.errors.is_empty() {
                Some(Outcome { digest: Some(f.digest.clone()), checkpoint: Some(f.at), reason: Some(format!("the new plugin failed to start or to migrate the state; the old one keeps running: {}", f.errors.join("; "))), ..Outcome::of(&f.command, Status::Rejected) })
            } else if all && completed_id >= f.at {
                Some(Outcome { digest: Some(f.digest.clone()), checkpoint: Some(f.at), reason: f.command.reason.clone(), after: after(f.at), ..Outcome::of(&f.command, Status::Applied) })
            } else {
                None
            };
            match outcome {
                Some(o) => {
                    let f = in_flight.remove(i);
                    if o.status == Status::Rejected {
                        let (digests, deployed) = f.previous;
                        self.plugin_digests.insert(f.command.operator.clone(), digests);
                        match deployed {
                            Some(d) => self.deployed.insert(f.command.operator.clone(), d),
                            None => self.deployed.remove(&f.command.operator),
                        };
                    }
                    tracing::info!("control: command `{}` {:?} at checkpoint {}", o.id, o.status, f.at);
                    if o.status == Status::Applied && matches!(f.command.action, crate::control::Action::Deploy | crate::control::Action::Rollback) {
                        self.record_version(&f.command, &f.digest, f.at);
                    }
                    self.swaps.done(&f.command.operator);
                    self.settle_command(f.source, f.token, &o);
                }
                None => i += 1,
            }
        }
    }

    fn answer_savepoint(&self, answer: &Path, manifest: &Manifest) {
        let text = match self.store.savepoint(manifest) {
            Ok(dir) => format!("{{\"ok\":true,\"path\":{}}}", serde_json::Value::String(dir.display().to_string())),
            Err(e) => format!("{{\"ok\":false,\"error\":{}}}", serde_json::Value::String(e)),
        };
        let _ = std::fs::write(answer, text);
    }

    /// Snapshot the state and write the manifest of `p`.
    fn complete(&mut self, p: Pending, finished: bool) -> Result<Manifest, DataflowError> {
        let cm = &self.metrics.checkpoints;
        let dir = self.store.dir(p.id);
        let state = match &self.backend {
            Some(b) => {
                let work = self.store.root.join(format!(".work-{}", p.id));
                let _ = std::fs::remove_dir_all(&work);
                std::fs::create_dir_all(&self.store.root).map_err(|e| DataflowError::Checkpoint(io_err(&self.store.root, e)))?;
                let info = b.snapshot(&work, &dir.join("db"), &self.store.shared(), &self.previous_files);
                b.thaw();
                let info = info.map_err(|e| DataflowError::Checkpoint(format!("checkpoint {}: {e}", p.id)))?;
                self.previous_files = info.files.clone();
                Some(StateEntry { files: info.files, uploaded_bytes: info.uploaded_bytes, total_bytes: info.total_bytes })
            }
            None => None,
        };
        let operators = self
            .pipeline
            .operators
            .iter()
            .map(|o| {
                let (plugin, digest) = self.plugin_digests.get(&o.name).cloned().unwrap_or_default();
                let per: Vec<&(i64, Option<GeneratorState>)> = (0..o.parallelism as usize).filter_map(|s| p.operators.get(&(o.name.clone(), s))).collect();
                OperatorEntry {
                    name: o.name.clone(),
                    parallelism: o.parallelism,
                    plugin,
                    plugin_digest: digest,
                    keyed: o.key_by.is_some(),
                    window: o.window.as_ref().map(|w| window_kind(&w.kind)),
                    watermarks: per.iter().map(|(w, _)| *w).collect(),
                    generators: per.iter().map(|(_, g)| g.clone()).collect(),
                    deployed: self.deployed.get(&o.name).cloned(),
                    deployed_params: self.deployed_params.get(&o.name).cloned(),
                }
            })
            .collect();
        let manifest = Manifest {
            version: 1,
            id: p.id,
            pipeline: self.pipeline.name.clone(),
            pipeline_hash: self.pipeline.hash.clone(),
            completed_ms: sluice_runtime::now_ms(),
            duration_ms: p.started.elapsed().as_millis() as u64,
            alignment_ms: p.alignment.as_millis() as u64,
            sync_ms: p.sync.as_millis() as u64,
            finished,
            sources: self
                .participants
                .sources
                .iter()
                .map(|(n, parallelism)| SourceEntry {
                    name: n.clone(),
                    position: SourcePosition::merge((0..*parallelism).filter_map(|s| p.sources.get(&(n.clone(), s)))),
                })
                .collect(),
            operators,
            sinks: self
                .participants
                .sinks
                .iter()
                .map(|n| SinkEntry { name: n.clone(), precommit: Some(p.id), snapshot: p.sinks.get(n).cloned().unwrap_or_default() })
                .collect(),
            state,
        };
        self.store.write_manifest(&manifest).map_err(DataflowError::Checkpoint)?;
        cm.completed.inc();
        cm.last_duration_ms.set(manifest.duration_ms as i64);
        cm.last_size_bytes.set(manifest.state.as_ref().map_or(0, |s| s.total_bytes) as i64);
        cm.last_alignment_ms.set(manifest.alignment_ms as i64);
        tracing::debug!("checkpoint {} complete in {} ms", p.id, manifest.duration_ms);
        self.store.retain(self.pipeline.checkpoints.retain);
        for w in &p.savepoint {
            self.answer_savepoint(w, &manifest);
        }
        Ok(manifest)
    }
}
