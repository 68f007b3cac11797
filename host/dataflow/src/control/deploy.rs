//! Preparing a deploy beside the checkpoint coordinator: fetch, digest
//! check, plugin store, compile and a first start, on a worker thread.
//!
//! Whoever sends a command chooses what is fetched, and a fetch or a
//! compile can take long; the coordinator must keep triggering checkpoints
//! and answer `sluice stop` meanwhile. So it hands commands to a worker
//! through a bounded queue and picks up finished preparations on its loop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use sluice_config::Pipeline;
use sluice_runtime::{CallError, LoadError, Plugin, Runtime};
use sluice_types::metrics::Metrics;

use super::command::Command;
use super::dir::{sha256_hex, ControlDir};
use super::fetch::{FetchError, FetchPolicy};
use crate::error::ControlDirError;
use crate::plugins::{instance_config, load_operator, THREAD_STACK_BYTES};

/// Deploys waiting for the worker, at most.
const QUEUE: usize = 4;

/// What preparing a deploy needs.
pub(crate) struct DeployContext {
    pub(crate) pipeline: Pipeline,
    pub(crate) control: ControlDir,
    pub(crate) runtime: Option<Arc<Runtime>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) policy: FetchPolicy,
}

/// Why a deploy was rejected; the command's outcome gives the reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeployError {
    #[error("the command is for pipeline `{command}`, this is `{this}`")]
    OtherPipeline { command: String, this: String },
    #[error("pipeline `{pipeline}` has no operator `{operator}`")]
    NoOperator { pipeline: String, operator: String },
    #[error("a deploy needs `plugin` (a path) and `sha256`")]
    Incomplete,
    #[error("params must be a JSON object, not {0}")]
    Params(serde_json::Value),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Never the actual digest: it would reveal a file the sender may not read.
    #[error("digest mismatch: {} does not have the sha256 the command names ({want}); check the file and the digest", .path.display())]
    Digest { path: PathBuf, want: String },
    #[error(transparent)]
    Store(#[from] ControlDirError),
    #[error("this run has no plugin runtime for deploys (start it with `sluice run`)")]
    NoRuntime,
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "the new plugin failed to start or to migrate the state; the old one keeps running: {0}"
    )]
    Start(CallError),
    #[error("preparing the deploy of operator `{operator}` failed unexpectedly (see the log); nothing changed")]
    Panicked { operator: String },
}

/// A prepared deploy: the started plugin and its digest, or why not.
pub(crate) type Prepared = Result<(Arc<Plugin>, String), DeployError>;

/// Where a command given to the worker came from: (control source, token).
type Origin = (usize, u64);

/// The worker that prepares deploys, and what it is busy with.
pub(crate) struct Preparer {
    jobs: Option<mpsc::SyncSender<(Command, Origin)>>,
    done: mpsc::Receiver<(Command, Origin, Prepared)>,
    /// Commands queued or being prepared, by id.
    busy: HashMap<String, String>,
}

impl Preparer {
    /// Start the worker.
    pub(crate) fn start(context: DeployContext) -> Preparer {
        let (jobs, queue) = mpsc::sync_channel::<(Command, Origin)>(QUEUE);
        let (finished, done) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("sluice-deploys".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || {
                for (command, origin) in queue {
                    // A panic must not leave the command (and its operator) waiting forever.
                    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        prepare(&context, &command)
                    }))
                    .unwrap_or_else(|_| {
                        Err(DeployError::Panicked {
                            operator: command.operator.clone(),
                        })
                    });
                    if finished.send((command, origin, prepared)).is_err() {
                        return;
                    }
                }
            });
        let jobs = match spawned {
            Ok(_) => Some(jobs),
            Err(e) => {
                tracing::error!(
                    "control: cannot start the deploy worker ({e}); deploys are rejected"
                );
                None
            }
        };
        Preparer {
            jobs,
            done,
            busy: HashMap::new(),
        }
    }

    /// Queue `command`; gives it back if the queue is full (try later).
    pub(crate) fn submit(&mut self, command: Command, origin: Origin) -> Option<(Command, Origin)> {
        let Some(jobs) = &self.jobs else {
            return Some((command, origin));
        };
        let (id, operator) = (command.id.clone(), command.operator.clone());
        match jobs.try_send((command, origin)) {
            Ok(()) => {
                self.busy.insert(id, operator);
                None
            }
            Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) => Some(job),
        }
    }

    /// Whether there is a worker to prepare deploys.
    pub(crate) fn available(&self) -> bool {
        self.jobs.is_some()
    }

    /// Whether command `id` is queued or being prepared.
    pub(crate) fn has(&self, id: &str) -> bool {
        self.busy.contains_key(id)
    }

    /// Whether a deploy of `operator` is queued or being prepared.
    pub(crate) fn preparing(&self, operator: &str) -> bool {
        self.busy.values().any(|o| o == operator)
    }

    /// Preparations finished since the last call.
    pub(crate) fn finished(&mut self) -> Vec<(Command, Origin, Prepared)> {
        let done: Vec<_> = self.done.try_iter().collect();
        for (command, _, _) in &done {
            self.busy.remove(&command.id);
        }
        done
    }
}

/// Check a deploy: digest, plugin store, compile, kind, a first start.
fn prepare(context: &DeployContext, command: &Command) -> Prepared {
    let pipeline = &context.pipeline;
    if command.pipeline != pipeline.name {
        return Err(DeployError::OtherPipeline {
            command: command.pipeline.clone(),
            this: pipeline.name.clone(),
        });
    }
    let Some(op) = pipeline.operator(&command.operator) else {
        return Err(DeployError::NoOperator {
            pipeline: pipeline.name.clone(),
            operator: command.operator.clone(),
        });
    };
    let (Some(path), Some(want)) = (&command.plugin, &command.sha256) else {
        return Err(DeployError::Incomplete);
    };
    if let Some(p) = command.params.as_ref().filter(|p| !p.is_object()) {
        return Err(DeployError::Params(p.clone()));
    }
    let bytes = context.policy.fetch(path)?;
    let digest = sha256_hex(&bytes);
    if !digest.eq_ignore_ascii_case(want.trim_start_matches("sha256:")) {
        // Never the actual digest: it would reveal a file the sender may not read.
        return Err(DeployError::Digest {
            path: path.clone(),
            want: want.clone(),
        });
    }
    let stored = context.control.store_plugin(&digest, &bytes)?;
    let Some(runtime) = &context.runtime else {
        return Err(DeployError::NoRuntime);
    };
    let mut spec = op.clone();
    spec.plugin = stored;
    if let Some(p) = &command.params {
        spec.params = p.clone();
    }
    let plugin = load_operator(runtime, &spec)?;
    // Start it once here, without state, so that a plugin whose `init`
    // fails (or refuses its params) is rejected before any subtask switches.
    plugin
        .instantiate(instance_config(&spec, 0), None, context.metrics.clone())
        .map_err(DeployError::Start)?;
    Ok((plugin, digest))
}
