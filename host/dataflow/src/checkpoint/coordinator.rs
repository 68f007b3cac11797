//! The checkpoint coordinator of one run (one thread): it asks the sources
//! to inject barriers, collects the acknowledgements of every subtask,
//! completes the checkpoint (state snapshot, manifest last), tells the
//! tasks which checkpoints completed or failed, takes the final checkpoint
//! when the input ends, and answers savepoint and stop requests. It drives
//! the hot-swap controller at the points swaps need: commands are planned
//! at the next barrier, the subtasks' reports pass through, and commands
//! settle once their checkpoint completes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sluice_config::Pipeline;
use sluice_runtime::now_ms;
use sluice_state::checkpoint::SnapshotFile;
use sluice_state::StateBackend;
use sluice_types::metrics::Metrics;
use sluice_types::SinkSnapshot;

use super::manifest::{
    window_kind, GeneratorState, Manifest, OperatorEntry, SinkEntry, SourceEntry, SourcePosition,
    StateEntry,
};
use super::store::{io_err, Store};
use crate::control::{Completed, SourceAt, SwapController};
use crate::error::DataflowError;
use crate::settings::StopHandle;

/// What a node reports to the coordinator.
#[derive(Debug)]
pub(crate) enum Ack {
    /// A source injected barrier `id` after emitting `emitted` records.
    Source {
        id: u64,
        name: String,
        subtask: usize,
        position: SourcePosition,
    },
    /// An operator subtask aligned barrier `id`.
    Operator {
        id: u64,
        name: String,
        subtask: usize,
        watermark: i64,
        generator: Option<GeneratorState>,
        alignment: Duration,
        sync: Duration,
    },
    /// A sink aligned and pre-committed barrier `id`.
    Sink {
        id: u64,
        name: String,
        snapshot: SinkSnapshot,
        alignment: Duration,
    },
    /// A source ended (input exhausted, or stopped).
    SourceDone {
        name: String,
        subtask: usize,
        position: SourcePosition,
    },
    /// An operator subtask finished.
    OperatorDone {
        name: String,
        subtask: usize,
        watermark: i64,
        generator: Option<GeneratorState>,
    },
    /// A sink received all its input; it waits for the final checkpoint's id.
    SinkEnded { name: String },
    /// A sink pre-committed its last output under the final checkpoint's id.
    SinkDone {
        name: String,
        snapshot: SinkSnapshot,
    },
    /// An operator subtask switched plugins at barrier `id` (or failed to).
    Swapped {
        name: String,
        subtask: usize,
        id: u64,
        error: Option<String>,
    },
    /// A newly deployed plugin failed too often during its probation.
    Unhealthy {
        name: String,
        subtask: usize,
        digest: String,
        reason: String,
    },
    /// The run failed: stop coordinating.
    Abort,
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
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) stop: StopHandle,
    /// Hot swaps: commands, deploys, what each operator runs.
    pub(crate) swap: SwapController,
}

/// What the swap controller needs of a completed checkpoint: where the
/// sources stood at it.
fn completed(manifest: &Manifest) -> Completed {
    let sources = manifest
        .sources
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                SourceAt {
                    records: s.position.emitted,
                    splits: s.position.splits.clone(),
                },
            )
        })
        .collect();
    Completed {
        id: manifest.id,
        sources,
    }
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
        let mut done_operators: HashMap<(String, usize), (i64, Option<GeneratorState>)> =
            HashMap::new();
        let mut done_sinks: HashMap<String, SinkSnapshot> = HashMap::new();
        let mut ended_sinks: HashSet<String> = HashSet::new();
        let mut final_id: Option<u64> = None;
        let mut savepoint_waiters: Vec<PathBuf> = Vec::new();
        let mut stop_after_savepoint: Vec<PathBuf> = Vec::new();
        let metrics = self.metrics.clone();
        let cm = &metrics.checkpoints;
        loop {
            let wait = next_trigger
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
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
                Ok(Ack::Source {
                    id,
                    name,
                    subtask,
                    position,
                }) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                        p.sources.insert((name, subtask), position);
                    }
                }
                Ok(Ack::Operator {
                    id,
                    name,
                    subtask,
                    watermark,
                    generator,
                    alignment,
                    sync,
                }) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                        p.operators.insert((name, subtask), (watermark, generator));
                        p.alignment = p.alignment.max(alignment);
                        p.sync = p.sync.max(sync);
                    }
                }
                Ok(Ack::Sink {
                    id,
                    name,
                    snapshot,
                    alignment,
                }) => {
                    if let Some(p) = pending.as_mut().filter(|p| p.id == id) {
                        p.sinks.insert(name, snapshot);
                        p.alignment = p.alignment.max(alignment);
                    }
                }
                Ok(Ack::SourceDone {
                    name,
                    subtask,
                    position,
                }) => {
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
                Ok(Ack::OperatorDone {
                    name,
                    subtask,
                    watermark,
                    generator,
                }) => {
                    done_operators.insert((name, subtask), (watermark, generator));
                }
                Ok(Ack::SinkEnded { name }) => {
                    ended_sinks.insert(name);
                }
                Ok(Ack::SinkDone { name, snapshot }) => {
                    done_sinks.insert(name, snapshot);
                }
                Ok(Ack::Unhealthy {
                    name,
                    subtask,
                    digest,
                    reason,
                }) => self.swap.unhealthy(name, subtask, digest, reason),
                Ok(Ack::Swapped {
                    name,
                    subtask,
                    id,
                    error,
                }) => self.swap.swapped(name, subtask, id, error),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }

            // The final checkpoint, once everything has finished.
            let total_ops: usize = self.participants.operators.iter().map(|(_, p)| p).sum();
            let total_sources: usize = self.participants.sources.iter().map(|(_, p)| p).sum();
            let all_ended =
                done_sources.len() == total_sources && done_operators.len() == total_ops;
            if done_sources.len() == total_sources {
                // No more input: a paused operator must drain for the run to end.
                self.swap.input_ended();
            }
            if all_ended && ended_sinks.len() == self.participants.sinks.len() && final_id.is_none()
            {
                // Everything upstream is done: the sinks pre-commit their
                // last output under the final checkpoint's id.
                let id = self.next_id;
                self.next_id += 1;
                final_id = Some(id);
                let _ = self.final_id.send(id);
            }
            if let (true, Some(id)) = (
                all_ended && done_sinks.len() == self.participants.sinks.len(),
                final_id,
            ) {
                let finished = done_sources.values().all(|p| p.exhausted);
                let p = Pending {
                    id,
                    started: Instant::now(),
                    sources: std::mem::take(&mut done_sources),
                    operators: std::mem::take(&mut done_operators),
                    sinks: std::mem::take(&mut done_sinks),
                    alignment: Duration::ZERO,
                    sync: Duration::ZERO,
                    savepoint: savepoint_waiters
                        .drain(..)
                        .chain(stop_after_savepoint.drain(..))
                        .collect(),
                };
                self.complete(p, finished)?;
                let _ = self.completed.send(id);
                return Ok(());
            }

            if let Some(p) = &pending {
                let ready = p.sources.len() == total_sources
                    && p.operators.len() == total_ops
                    && p.sinks.len() == self.participants.sinks.len();
                if ready {
                    let p = pending.take().expect("pending");
                    let id = p.id;
                    match self.complete(p, false) {
                        Ok(manifest) => {
                            let _ = self.completed.send(id);
                            self.swap.settle(Some(&completed(&manifest)));
                        }
                        Err(e) => {
                            cm.failed.inc();
                            tracing::warn!("checkpoint {id} failed: {e}");
                            let _ = self.failed.send(id);
                        }
                    }
                    next_trigger = Instant::now() + interval;
                } else if p.started.elapsed() > timeout {
                    tracing::warn!(
                        "checkpoint {} did not complete within {timeout:?}; abandoned",
                        p.id
                    );
                    cm.failed.inc();
                    let _ = self.failed.send(p.id);
                    pending = None;
                    if let Some(b) = &self.backend {
                        b.thaw();
                    }
                }
            }

            // CLI requests.
            if self.take_requests(&mut savepoint_waiters, &mut stop_after_savepoint) {
                next_trigger = Instant::now();
            }

            // Control commands: a deploy is planned at the next barrier, which is triggered now.
            if done_sources.is_empty()
                && final_id.is_none()
                && self.swap.poll(self.next_id).is_some()
            {
                next_trigger = Instant::now();
            }
            self.swap.settle(None);

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

    /// Take the CLI's requests for this run: a savepoint is taken by the
    /// next checkpoint (returns whether to trigger it now), a stop ends the
    /// sources (with a savepoint, the final checkpoint is it).
    fn take_requests(
        &self,
        savepoint_waiters: &mut Vec<PathBuf>,
        stop_after_savepoint: &mut Vec<PathBuf>,
    ) -> bool {
        let mut trigger = false;
        let Ok(entries) = std::fs::read_dir(self.store.requests()) else {
            return trigger;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                let req: Option<Request> = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                let _ = std::fs::remove_file(&path);
                let Some(req) = req.filter(|r| r.run.as_deref() == Some(self.run_id.as_str()))
                else {
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
                    trigger = true;
                }
            }
        }
        trigger
    }

    fn answer_savepoint(&self, answer: &Path, manifest: &Manifest) {
        let text = match self.store.savepoint(manifest) {
            Ok(dir) => format!(
                "{{\"ok\":true,\"path\":{}}}",
                serde_json::Value::String(dir.display().to_string())
            ),
            Err(e) => format!(
                "{{\"ok\":false,\"error\":{}}}",
                serde_json::Value::String(e.to_string())
            ),
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
                std::fs::create_dir_all(&self.store.root)
                    .map_err(|e| io_err(&self.store.root, e))?;
                let info = b.snapshot(
                    &work,
                    &dir.join("db"),
                    &self.store.shared(),
                    &self.previous_files,
                );
                b.thaw();
                let info = info
                    .map_err(|e| DataflowError::Checkpoint(format!("checkpoint {}: {e}", p.id)))?;
                self.previous_files = info.files.clone();
                Some(StateEntry {
                    files: info.files,
                    uploaded_bytes: info.uploaded_bytes,
                    total_bytes: info.total_bytes,
                })
            }
            None => None,
        };
        let operators = self
            .pipeline
            .operators
            .iter()
            .map(|o| {
                let running = self.swap.running(&o.name);
                let per: Vec<&(i64, Option<GeneratorState>)> = (0..o.parallelism as usize)
                    .filter_map(|s| p.operators.get(&(o.name.clone(), s)))
                    .collect();
                OperatorEntry {
                    name: o.name.clone(),
                    parallelism: o.parallelism,
                    plugin: running.plugin,
                    plugin_digest: running.digest,
                    keyed: o.key_by.is_some(),
                    window: o.window.as_ref().map(|w| window_kind(&w.kind)),
                    watermarks: per.iter().map(|(w, _)| *w).collect(),
                    generators: per.iter().map(|(_, g)| g.clone()).collect(),
                    deployed: running.deployed,
                    deployed_params: running.deployed_params,
                }
            })
            .collect();
        let manifest = Manifest {
            version: 1,
            id: p.id,
            pipeline: self.pipeline.name.clone(),
            pipeline_hash: self.pipeline.hash.clone(),
            completed_ms: now_ms(),
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
                    position: SourcePosition::merge(
                        (0..*parallelism).filter_map(|s| p.sources.get(&(n.clone(), s))),
                    ),
                })
                .collect(),
            operators,
            sinks: self
                .participants
                .sinks
                .iter()
                .map(|n| SinkEntry {
                    name: n.clone(),
                    precommit: Some(p.id),
                    snapshot: p.sinks.get(n).cloned().unwrap_or_default(),
                })
                .collect(),
            state,
        };
        self.store.write_manifest(&manifest)?;
        cm.completed.inc();
        cm.last_duration_ms.set(manifest.duration_ms as i64);
        cm.last_size_bytes
            .set(manifest.state.as_ref().map_or(0, |s| s.total_bytes) as i64);
        cm.last_alignment_ms.set(manifest.alignment_ms as i64);
        tracing::debug!(
            "checkpoint {} complete in {} ms",
            p.id,
            manifest.duration_ms
        );
        self.store.retain(self.pipeline.checkpoints.retain);
        for w in &p.savepoint {
            self.answer_savepoint(w, &manifest);
        }
        Ok(manifest)
    }
}
