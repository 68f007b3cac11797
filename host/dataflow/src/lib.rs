//! The Sluice dataflow: sources → operators → sinks.
//!
//! [`run`] turns a validated [`Pipeline`] into running nodes. Each source,
//! each parallel subtask of an operator, and each sink is one blocking task on
//! the tokio runtime (Wasm calls and RocksDB calls block, so they stay off the
//! async workers). Nodes talk through bounded tokio channels of batches, so a
//! slow sink backpressures the whole pipeline back to its sources.
//!
//! A record's path: a source polls a batch and hands it to its
//! [router](router::Router), which partitions it over the consumers'
//! subtasks (by key group for keyed operators). An operator subtask moves the
//! batch into the contract's record type, calls the plugin once per batch,
//! routes the emits by output, and applies its error policy to records that
//! failed. Sinks write and flush. End of input travels as [`Message::End`]:
//! a node finishes when every producer feeding it has sent one.
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{OperatorSpec, Pipeline, WatermarkSpec};
use sluice_connectors::{SinkContext, SourceContext};
use sluice_state::StateBackend;
use sluice_types::metrics::{Metrics, NodeCounters, WatermarkGauges};
use sluice_types::{Message, Sink, Source};
use sluice_world::{now_ms, CallError, EngineOptions, InstanceConfig, LoadError, OperatorKind, Plugin, Runtime};
use tokio::sync::mpsc::{channel, Receiver, Sender};

mod admin;
mod align;
mod connectors;
pub mod checkpoint;
pub mod control;
mod deploy;
mod event_time;
mod fetch;
mod manifest_check;
mod operator;
mod private;
mod router;
pub mod run_lock;
mod timers;
pub mod token;
mod window;

pub use connectors::connectors;
use event_time::{InputWatermarks, WatermarkGenerator, WatermarkUpdate};
use operator::OperatorTask;
use router::{Partition, Router, Target};

/// Why a pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DataflowError {
    /// A record failed in an operator whose policy is `fail`.
    #[error("operator `{operator}` (plugin {plugin}) failed on the record at {position}: {message}\n  help: fix the input or the plugin, or set on_error = \"skip\" or \"dead-letter\" on `{operator}` to keep going")]
    RecordFailed {
        /// Operator name.
        operator: String,
        /// Plugin file and digest.
        plugin: String,
        /// Where the record came from.
        position: String,
        /// The error.
        message: String,
    },
    /// A plugin could not be instantiated or initialised.
    #[error("operator `{operator}` (plugin {plugin}): {source}")]
    Instantiate {
        /// Operator name.
        operator: String,
        /// Plugin file.
        plugin: String,
        /// The failure.
        #[source]
        source: CallError,
    },
    /// A source or sink failed.
    #[error("`{node}`: {source}")]
    Connector {
        /// Node name.
        node: String,
        /// The failure.
        #[source]
        source: sluice_types::ConnectorError,
    },
    /// Keyed state failed.
    #[error("operator `{node}`: state: {source}")]
    State {
        /// Node name.
        node: String,
        /// The failure.
        #[source]
        source: sluice_state::StateError,
    },
    /// A neighbour stopped (because of an error reported separately, or a bug).
    #[error("`{node}`: `{peer}` stopped unexpectedly")]
    Disconnected {
        /// This node.
        node: String,
        /// The neighbour.
        peer: String,
    },
    /// A plugin named in the pipeline was not loaded.
    #[error("operator `{0}`: its plugin was not loaded")]
    MissingPlugin(String),
    /// A checkpoint could not be taken or restored.
    #[error("checkpoints: {0}")]
    Checkpoint(String),
    /// The state directory is in use by another run, or cannot be locked.
    #[error("{0}")]
    StateDir(String),
    /// A node task panicked (a bug in Sluice).
    #[error("internal error in `{node}`: {message}")]
    Internal {
        /// Node name.
        node: String,
        /// Panic message.
        message: String,
    },
}

/// Stack size of the threads that run guests: above the largest Wasm stack an
/// operator may ask for (`limits.stack_kb`), with room for the host's frames.
pub const THREAD_STACK_BYTES: usize = 8 << 20;

/// The engine options an operator's limits call for.
pub fn engine_options(op: &OperatorSpec) -> EngineOptions {
    EngineOptions { stack_bytes: (op.limits.stack_kb as usize) << 10, fuel: op.limits.fuel.is_some(), ..EngineOptions::default() }
}

/// The instance settings of subtask `subtask` of `op`.
pub(crate) fn instance_config(op: &OperatorSpec, subtask: u32) -> InstanceConfig {
    InstanceConfig {
        operator: op.name.clone(),
        subtask,
        parallelism: op.parallelism,
        params: op.params.to_string(),
        // Saturating: a cap that does not fit never wraps to a small one.
        memory_bytes: usize::try_from(op.limits.memory_mb).ok().and_then(|mb| mb.checked_mul(1 << 20)).unwrap_or(usize::MAX),
        deadline_ms: op.limits.deadline_ms,
        fuel: op.limits.fuel,
        sources: Arc::from(Vec::new()),
    }
}

/// Load (compile, check, pre-instantiate) the plugin of `op` with its limits
/// and grants, and check that its kind fits how the pipeline uses it.
pub fn load_operator(runtime: &Runtime, op: &OperatorSpec) -> Result<Arc<Plugin>, LoadError> {
    let plugin = runtime.load_with(&op.plugin, engine_options(op), &op.grants)?;
    let info = plugin.info();
    let kind = info.kind.unwrap_or(OperatorKind::Process);
    let wrong = |expected: &str, help: &str| LoadError::WrongKind {
        path: info.path.clone(),
        operator: op.name.clone(),
        expected: expected.to_string(),
        found: kind.world().to_string(),
        help: help.to_string(),
    };
    match (op.window.is_some(), kind) {
        (true, OperatorKind::Window) | (false, OperatorKind::Process) => Ok(plugin.clone()),
        (false, OperatorKind::KeyedProcess) if op.key_by.is_some() => Ok(plugin.clone()),
        (false, OperatorKind::KeyedProcess) => Err(wrong("has no key_by, so it cannot have timers", "add key_by = \"key\" to the operator (timers are per key)")),
        (true, _) => Err(wrong("has a [operators.window]", "build the plugin as a window aggregate (Rust SDK: #[sluice_sdk::aggregate]), or remove the window")),
        (false, _) => Err(wrong("has no [operators.window]", "add a window table to the operator, e.g. window = { kind = \"tumbling\", size = \"1m\" }")),
    }
}

/// A stream `<operator>.<side>` that the operator's plugin declares it never
/// emits would stay empty, silently: refuse it, with the line of the reader
/// and what the plugin does emit. Plugins that declare nothing are not
/// checked. `dead-letter` (and `late` for windows) come from the host.
pub fn check_side_outputs(pipeline: &Pipeline, plugins: &HashMap<String, Arc<Plugin>>) -> Result<(), (usize, String)> {
    let readers = pipeline.operators.iter().map(|o| (&o.name, &o.inputs, o.input_line)).chain(pipeline.sinks.iter().map(|s| (&s.name, &s.inputs, s.input_line)));
    for (reader, inputs, line) in readers {
        for input in inputs {
            let Some((head, side)) = input.split_once('.') else { continue };
            let Some(op) = pipeline.operators.iter().find(|o| o.name == head) else { continue };
            let host_made = side == sluice_config::DEAD_LETTER_OUTPUT || op.window.as_ref().is_some_and(|w| w.late_output == side);
            let Some(declared) = plugins.get(head).and_then(|p| p.info().side_outputs.clone()) else { continue };
            if !host_made && !declared.iter().any(|d| d == side) {
                let emits = if declared.is_empty() { "none".to_string() } else { declared.iter().map(|d| format!("`{head}.{d}`")).collect::<Vec<_>>().join(", ") };
                return Err((
                    line,
                    format!("`{reader}` reads `{input}`, but the plugin of `{head}` declares no side output `{side}` (it declares {emits}), so nothing would ever arrive\n  help: read one of the side outputs it declares, or add `{side}` to its side_outputs"),
                ));
            }
        }
    }
    Ok(())
}

/// Process-level settings (flags and environment, not pipeline).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Directory under which the pipeline's state lives (`<dir>/<pipeline>/state`).
    pub state_dir: PathBuf,
    /// Write-back cache budget for all keyed state, in bytes.
    pub cache_bytes: usize,
    /// Records per batch, over the pipeline's `batch_size` (the CLI flag).
    pub batch_size: Option<usize>,
    /// Batches buffered per channel.
    pub channel_capacity: usize,
    /// Restore this checkpoint or savepoint directory instead of the latest checkpoint.
    pub restore_from: Option<PathBuf>,
    /// Drop the state of stateful operators the pipeline no longer has.
    pub allow_dropped_state: bool,
    /// The runtime that compiles plugins deployed while the pipeline runs
    /// (and on recovery, the deployed versions); without it, deploys are
    /// rejected.
    pub runtime: Option<RuntimeHandle>,
}

/// A shared [`Runtime`] in [`Settings`].
#[derive(Clone)]
pub struct RuntimeHandle(pub Arc<Runtime>);

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runtime")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            state_dir: PathBuf::from(".sluice"),
            cache_bytes: 256 << 20,
            batch_size: None,
            channel_capacity: 16,
            restore_from: None,
            allow_dropped_state: false,
            runtime: None,
        }
    }
}

/// A consumer of a stream: its name, its subtasks' senders, the producer's
/// parallelism, whether it is keyed, and its batch size.
type Consumer = (String, Vec<Sender<Message>>, Option<usize>, bool, usize);

/// Records per batch when neither the flag nor the pipeline sets it.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// Batch sizes and the sources' batch timeout: the CLI flag over the
/// pipeline file over the default. Batching is a speed knob only.
#[derive(Clone, Copy)]
struct Batching {
    size: usize,
    timeout: Duration,
    flag: Option<usize>,
}

impl Batching {
    fn new(pipeline: &Pipeline, settings: &Settings) -> Self {
        let size = settings.batch_size.or(pipeline.batch_size).unwrap_or(DEFAULT_BATCH_SIZE).max(1);
        let timeout = Duration::from_millis(pipeline.batch_timeout.unwrap_or(0).max(0) as u64);
        Batching { size, timeout, flag: settings.batch_size }
    }

    /// An operator's batch size: the flag, else its own, else the pipeline's.
    fn of(&self, op: &OperatorSpec) -> usize {
        self.flag.or(op.batch_size).unwrap_or(self.size).max(1)
    }
}

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Wall-clock time.
    pub elapsed: Duration,
    /// How much of it passed before the first source began to read (loading
    /// plugins and state, connecting, fencing transactions): throughput over
    /// the rest is what a long-running pipeline sustains.
    pub startup: Option<Duration>,
    /// Records produced by all sources.
    pub records_in: u64,
    /// Records written by all sinks.
    pub records_out: u64,
    /// Records sent to dead-letter outputs.
    pub dead_letters: u64,
}

/// A cooperative stop signal: sources stop reading and the pipeline drains.
#[derive(Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Ask the sources to stop; what was read is still processed and written.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Consumer-side wiring of one node: its receivers and how many `End`s each
/// subtask must see before it is done.
struct Inbox {
    receivers: Vec<Receiver<Message>>,
    expected_ends: usize,
}

/// Run `pipeline` to completion (bounded sources) or until `stop`.
pub async fn run(
    pipeline: &Pipeline,
    plugins: &HashMap<String, Arc<Plugin>>,
    settings: &Settings,
    metrics: Arc<Metrics>,
    stop: StopHandle,
) -> Result<RunSummary, DataflowError> {
    let started = Instant::now();
    let first_read: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let cap = settings.channel_capacity.max(1);
    let batching = Batching::new(pipeline, settings);

    // Subtask counts of every producer, by stream head.
    let mut producers: HashMap<&str, usize> = HashMap::new();
    for s in &pipeline.sources {
        producers.insert(&s.name, s.parallelism as usize);
    }
    for o in &pipeline.operators {
        producers.insert(&o.name, o.parallelism as usize);
    }
    let head = |stream: &str| stream.split('.').next().unwrap_or(stream).to_string();
    // Pipeline-wide producer ids of node subtasks (sources first), which
    // control messages carry so that consumers can merge them per producer.
    let mut producer_ids: HashMap<&str, Vec<u32>> = HashMap::new();
    let mut next_id = 0u32;
    for (name, n) in pipeline.sources.iter().map(|s| (s.name.as_str(), s.parallelism)).chain(pipeline.operators.iter().map(|o| (o.name.as_str(), o.parallelism))) {
        producer_ids.insert(name, (next_id..next_id + n).collect());
        next_id += n;
    }
    let distinct_producers = |inputs: &[String]| -> BTreeSet<u32> {
        inputs.iter().flat_map(|i| producer_ids.get(head(i).as_str()).cloned().unwrap_or_default()).collect()
    };

    // Channels: one per consumer subtask. Collect senders per (stream, consumer).
    let mut inboxes: HashMap<String, Inbox> = HashMap::new();
    let mut producer_sets: HashMap<String, BTreeSet<u32>> = HashMap::new();
    // stream name -> list of (consumer name, senders, partition)
    let mut wiring: HashMap<String, Vec<Consumer>> = HashMap::new();
    let consumers = pipeline
        .operators
        .iter()
        .map(|o| (o.name.clone(), o.inputs.clone(), o.parallelism as usize, o.key_by.is_some(), batching.of(o)))
        .chain(pipeline.sinks.iter().map(|s| (s.name.clone(), s.inputs.clone(), 1, false, batching.size)));
    for (name, inputs, parallelism, keyed, batch_size) in consumers {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..parallelism).map(|_| channel::<Message>(cap)).unzip();
        let expected_ends = inputs.iter().map(|i| producers.get(head(i).as_str()).copied().unwrap_or(0)).sum();
        inboxes.insert(name.clone(), Inbox { receivers: rxs, expected_ends });
        producer_sets.insert(name.clone(), distinct_producers(&inputs));
        for input in inputs {
            let producer_parallelism = producers.get(head(&input).as_str()).copied();
            wiring.entry(input).or_default().push((name.clone(), txs.clone(), producer_parallelism, keyed, batch_size));
        }
    }

    // A router for producer subtask `subtask` of node `node`.
    let router_for = |node: &str, subtask: usize| -> Router {
        let targets = |stream: &str| -> Vec<Target> {
            wiring
                .get(stream)
                .map(|v| {
                    v.iter()
                        .map(|(consumer, senders, producer_par, keyed, batch_size)| {
                            let partition = if *keyed {
                                Partition::Keyed
                            } else if Some(senders.len()) == *producer_par {
                                Partition::Forward
                            } else {
                                Partition::RoundRobin
                            };
                            Target::new(consumer.clone(), senders.clone(), partition, *batch_size)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let prefix = format!("{node}.");
        let sides = wiring
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|side| (side.to_string(), targets(&format!("{node}.{side}"))))
            .collect();
        let producer = producer_ids.get(node).and_then(|ids| ids.get(subtask)).copied().expect("every producer has an id");
        Router::new(node, subtask, producer, targets(node), sides)
    };

    // Checkpoints: what to restore, and the coordinator's channels.
    let checkpoints = pipeline.checkpoints.enabled;
    let store = checkpoint::Store::of(pipeline, &settings.state_dir);
    // One run per state directory, taken before anything touches it (an
    // at-least-once file sink truncates its output when it is built) and
    // held until this function returns.
    let lock = run_lock::RunLock::acquire(&run_lock::lock_dirs(pipeline, &settings.state_dir)).map_err(DataflowError::StateDir)?;
    // Sinks first: a sink that cannot finish a pre-commit after a crash
    // (Kafka) says which checkpoint recovery must start from.
    let registry = connectors();
    let mut sinks: HashMap<String, Box<dyn Sink>> = HashMap::new();
    let mut recovery_limit: Option<(u64, String)> = None;
    for spec in &pipeline.sinks {
        let connector_err = |source| DataflowError::Connector { node: spec.name.clone(), source };
        let sink = registry.build_sink(&SinkContext { pipeline, spec }).map_err(connector_err)?;
        sinks.insert(spec.name.clone(), sink);
    }
    // Concurrently: each may take a few round trips to a broker.
    let points = std::thread::scope(|scope| {
        let calls: Vec<_> = sinks.iter_mut().map(|(name, sink)| (name.clone(), scope.spawn(move || sink.recovery_point()))).collect();
        calls.into_iter().map(|(name, call)| (name, call.join())).collect::<Vec<_>>()
    });
    for (name, point) in points {
        let point = match point {
            Ok(p) => p.map_err(|source| DataflowError::Connector { node: name.clone(), source })?,
            Err(_) => return Err(DataflowError::Internal { node: name, message: "panicked while preparing recovery".into() }),
        };
        if let Some(point) = point {
            if recovery_limit.as_ref().is_none_or(|(p, _)| point < *p) {
                recovery_limit = Some((point, name));
            }
        }
    }
    let restore = if checkpoints || settings.restore_from.is_some() {
        checkpoint::find_restore(&store, settings.restore_from.as_deref(), recovery_limit.as_ref().map(|(p, s)| (*p, s.as_str())))?
    } else {
        None
    };
    if let Some(r) = &restore {
        checkpoint::check_compatible(pipeline, &r.manifest, settings.allow_dropped_state)?;
        if r.manifest.pipeline_hash != pipeline.hash {
            tracing::info!("the pipeline file changed since checkpoint {}; continuing from its state", r.manifest.id);
        }
        for old in &r.manifest.operators {
            if let Some(p) = plugins.get(&old.name) {
                if p.info().digest != old.plugin_digest && !old.plugin_digest.is_empty() {
                    tracing::info!("operator `{}` now runs plugin sha256:{} (checkpoint {} ran sha256:{}); its state is kept", old.name, &p.info().digest[..12], r.manifest.id, &old.plugin_digest[..12.min(old.plugin_digest.len())]);
                }
            }
        }
        tracing::info!("restoring checkpoint {} from {}", r.manifest.id, r.dir.display());
    }
    // Operators that ran a deployed plugin at the checkpoint run it again.
    let control = control::ControlDir::new(&store.root);
    let mut plugins = plugins.clone();
    let mut deployed: HashMap<String, String> = HashMap::new();
    let mut deployed_params: HashMap<String, String> = HashMap::new();
    if let Some(r) = &restore {
        for old in r.manifest.operators.iter() {
            let (Some(digest), Some(op)) = (&old.deployed, pipeline.operator(&old.name)) else { continue };
            let path = control.plugin(digest);
            let loaded = match (&settings.runtime, path.is_file()) {
                (Some(rt), true) => {
                    let mut spec = op.clone();
                    spec.plugin = path.clone();
                    load_operator(&rt.0, &spec).map_err(|e| e.to_string())
                }
                (None, _) => Err("no plugin runtime in this run".to_string()),
                (_, false) => Err(format!("{} is missing from the plugin store", path.display())),
            };
            match loaded {
                Ok(p) => {
                    tracing::info!("operator `{}` runs the deployed plugin sha256:{} (as at checkpoint {})", old.name, &digest[..12.min(digest.len())], r.manifest.id);
                    if let Some(params) = &old.deployed_params {
                        deployed_params.insert(old.name.clone(), params.clone());
                    }
                    plugins.insert(old.name.clone(), p);
                    deployed.insert(old.name.clone(), digest.clone());
                }
                Err(e) => return Err(DataflowError::Checkpoint(format!("operator `{}` ran deployed plugin sha256:{digest} at checkpoint {}, which cannot be loaded: {e}\n  help: put the component back into the plugin store, or restore another checkpoint", old.name, r.manifest.id))),
            }
        }
    }
    let plugins = &plugins;
    let swaps = Arc::new(control::Swaps::new(stop.clone()));
    let mut control_sources: Vec<Box<dyn sluice_types::ControlSource>> = vec![Box::new(control::DirectorySource::new(&control))];
    // Commands, results, the plugin store and the admin token: owner-only.
    if checkpoints {
        control.secure().map_err(DataflowError::Checkpoint)?;
    }
    let _admin = match (checkpoints, pipeline.control.http) {
        (true, Some(addr)) => {
            let token = token::server_token(&pipeline.control, &control).map_err(DataflowError::Checkpoint)?;
            Some(admin::AdminServer::start(addr, pipeline.name.clone(), control.clone(), token).map_err(DataflowError::Checkpoint)?)
        }
        _ => None,
    };
    if let (true, Some(k)) = (checkpoints, &pipeline.control.kafka) {
        control_sources.push(Box::new(sluice_kafka::KafkaControl::new(k, &pipeline.name).map_err(|source| DataflowError::Connector { node: "[control.kafka]".into(), source })?));
    }
    // The versions running now are what a rollback can return to: keep
    // their bytes in the plugin store and start each operator's history.
    if checkpoints {
        let mut history = control.history();
        for (name, p) in plugins.iter() {
            let info = p.info();
            if let Ok(bytes) = std::fs::read(&info.path) {
                let _ = control.store_plugin(&info.digest, &bytes);
            }
            let versions = history.entry(name.clone()).or_default();
            if versions.iter().rev().find(|v| !v.rolled_back).is_none_or(|v| v.digest != info.digest) {
                versions.push(control::Version { digest: info.digest.clone(), checkpoint: restore.as_ref().map_or(0, |r| r.manifest.id), since_ms: now_ms(), command: "pipeline file".into(), rolled_back: false, params: None });
            }
        }
        control.write_history(&history);
    }
    let keyed_subtasks: usize = pipeline.operators.iter().filter(|o| o.key_by.is_some()).map(|o| o.parallelism as usize).sum();
    let backend = if keyed_subtasks > 0 {
        let dir = settings.state_dir.join(&pipeline.name).join("state");
        let state_err = |source| DataflowError::State { node: pipeline.name.clone(), source };
        match restore.as_ref().filter(|r| r.manifest.state.is_some()) {
            Some(r) => {
                checkpoint::restore_state(r, &dir)?;
                Some(StateBackend::open(&dir, false).map_err(state_err)?)
            }
            None => Some(StateBackend::open(&dir, true).map_err(state_err)?),
        }
    } else {
        None
    };
    let requested = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (completed_tx, completed_rx) = tokio::sync::watch::channel(0u64);
    let (final_tx, final_rx) = tokio::sync::watch::channel(0u64);
    let (failed_tx, failed_rx) = tokio::sync::watch::channel(0u64);
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<checkpoint::Ack>();
    let last_id = restore.as_ref().map_or(0, |r| r.manifest.id);
    let next_id = store.list().first().map_or(0, |l| l.id).max(last_id) + 1;
    let coordinator = checkpoints.then(|| checkpoint::Coordinator {
        pipeline: pipeline.clone(),
        store: store.clone(),
        backend: backend.clone(),
        participants: checkpoint::Participants {
            sources: pipeline.sources.iter().map(|s| (s.name.clone(), s.parallelism as usize)).collect(),
            operators: pipeline.operators.iter().map(|o| (o.name.clone(), o.parallelism as usize)).collect(),
            sinks: pipeline.sinks.iter().map(|s| s.name.clone()).collect(),
        },
        requested: requested.clone(),
        completed: completed_tx,
        failed: failed_tx,
        final_id: final_tx,
        acks: ack_rx,
        run_id: lock.info.run.clone(),
        next_id,
        previous_files: restore.as_ref().and_then(|r| r.manifest.state.as_ref()).map(|s| s.files.clone()).unwrap_or_default(),
        plugin_digests: plugins
            .iter()
            .map(|(n, p)| {
                let info = p.info();
                (n.clone(), (info.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(), info.digest.clone()))
            })
            .collect(),
        metrics: metrics.clone(),
        stop: stop.clone(),
        control: control.clone(),
        swaps: swaps.clone(),
        preparer: deploy::Preparer::start(deploy::DeployContext {
            pipeline: pipeline.clone(),
            control: control.clone(),
            runtime: settings.runtime.as_ref().map(|r| r.0.clone()),
            metrics: metrics.clone(),
            policy: fetch::FetchPolicy::new(&pipeline.control, &pipeline.file, &control.plugins()),
        }),
        deployed,
        deployed_params: deployed_params.clone(),
        auto_rolled_back: Default::default(),
        control_sources,
        backlog: Default::default(),
        control_warned: Default::default(),
    });
    let coordinator = match coordinator {
        Some(c) => Some(std::thread::Builder::new().name("sluice-checkpoints".into()).spawn(move || c.run()).map_err(|e| DataflowError::Checkpoint(e.to_string()))?),
        None => None,
    };
    let acks = checkpoints.then_some(ack_tx);
    let cache_per_subtask = settings.cache_bytes / keyed_subtasks.max(1);

    let mut tasks: Vec<(String, tokio::task::JoinHandle<Result<(), DataflowError>>)> = Vec::new();

    let mut groups: HashMap<String, Arc<event_time::AlignmentGroup>> = HashMap::new();
    for (index, spec) in pipeline.sources.iter().enumerate() {
        let group = spec.watermarks.as_ref().and_then(|w| w.alignment_group.clone()).map(|g| groups.entry(g).or_default().clone());
        let resume = restore.as_ref().and_then(|r| r.manifest.sources.iter().find(|s| s.name == spec.name)).map(|s| s.position.clone());
        for subtask in 0..spec.parallelism as usize {
            let connector_err = |source| DataflowError::Connector { node: spec.name.clone(), source };
            let at = SourceContext { pipeline, spec, index: index as u16, subtask: subtask as u32, metrics: metrics.clone() };
            let source = registry.build_source(&at).map_err(connector_err)?;
            let mut router = router_for(&spec.name, subtask);
            let counters = metrics.node(&spec.name);
            let gauges = metrics.watermarks(&spec.name, subtask as u32);
            let node = SourceNode {
                name: spec.name.clone(),
                subtask,
                parallelism: spec.parallelism as usize,
                watermarks: spec.watermarks.clone(),
                alignment: group.clone().map(|g| {
                    g.join((index, subtask));
                    (g, (index, subtask))
                }),
                stop: stop.clone(),
                batch: batching.size,
                batch_timeout: batching.timeout,
                requested: requested.clone(),
                acks: acks.clone(),
                completed: completed_rx.clone(),
                final_id: final_rx.clone(),
                resume: resume.clone(),
                first_read: first_read.clone(),
            };
            let task = format!("{}[{subtask}]", spec.name);
            tasks.push((task, tokio::task::spawn_blocking(move || node.run(source, &mut router, &counters, &gauges))));
        }
    }

    let source_names: Arc<[String]> = pipeline.sources.iter().map(|s| s.name.clone()).collect();
    for op in &pipeline.operators {
        let plugin = plugins.get(&op.name).cloned().ok_or_else(|| DataflowError::MissingPlugin(op.name.clone()))?;
        let inbox = inboxes.remove(&op.name).expect("every operator has an inbox");
        let sources: Arc<Vec<operator::SourceLabel>> = Arc::new(
            pipeline
                .sources
                .iter()
                .map(|s| operator::SourceLabel {
                    name: s.name.clone(),
                    topic: registry.source_topic(s),
                })
                .collect(),
        );
        for (subtask, rx) in inbox.receivers.into_iter().enumerate() {
            let state = match (&backend, op.key_by) {
                (Some(b), Some(_)) => Some(b.operator(&op.name, cache_per_subtask).map_err(|source| DataflowError::State { node: op.name.clone(), source })?),
                _ => None,
            };
            // With the params deployed with a hot swap, if recovery restored one.
            let spec = match deployed_params.get(&op.name).and_then(|p| serde_json::from_str(p).ok()) {
                Some(params) => OperatorSpec { params, ..op.clone() },
                None => op.clone(),
            };
            let mut config = instance_config(&spec, subtask as u32);
            config.sources = source_names.clone();
            let task = OperatorTask {
                spec,
                plugin: plugin.clone(),
                router: router_for(&op.name, subtask),
                counters: metrics.node(&op.name),
                gauges: metrics.watermarks(&op.name, subtask as u32),
                sources: sources.clone(),
                subtask,
                batch_size: batching.of(op),
                inputs: InputWatermarks::new(producer_sets.get(&op.name).map_or(0, BTreeSet::len)),
                current: event_time::NO_WATERMARK,
                announced: event_time::NO_WATERMARK,
                generator: op.watermarks.as_ref().map(WatermarkGenerator::new),
                timers: None,
                windows: None,
                aligner: align::Aligner::new(producer_sets.get(&op.name).cloned().unwrap_or_default(), last_id),
                acks: acks.clone(),
                swaps: swaps.clone(),
                probation: None,
                control: pipeline.control.clone(),
                restore: restore.as_ref().and_then(|r| r.manifest.operators.iter().find(|o| o.name == op.name)).map(|o| operator::RestoredOperator {
                    watermark: o.watermarks.iter().copied().min().unwrap_or(i64::MIN),
                    generator: o.generators.get(subtask).cloned().flatten(),
                }),
            };
            let (expected, metrics) = (inbox.expected_ends, metrics.clone());
            let name = format!("{}[{subtask}]", op.name);
            tasks.push((name, tokio::task::spawn_blocking(move || task.run(config, state, metrics, rx, expected))));
        }
    }

    for spec in &pipeline.sinks {
        let mut inbox = inboxes.remove(&spec.name).expect("every sink has an inbox");
        let sink = sinks.remove(&spec.name).expect("every sink was built");
        let rx = inbox.receivers.pop().expect("a sink has one subtask");
        let node = SinkNode {
            name: spec.name.clone(),
            expected_ends: inbox.expected_ends,
            counters: metrics.node(&spec.name),
            aligner: align::Aligner::new(producer_sets.get(&spec.name).cloned().unwrap_or_default(), last_id),
            acks: acks.clone(),
            completed: completed_rx.clone(),
            final_id: final_rx.clone(),
            restore: restore.as_ref().and_then(|r| {
                r.manifest.sinks.iter().find(|s| s.name == spec.name).map(|s| (s.precommit.unwrap_or(r.manifest.id), s.snapshot.clone()))
            }),
            committed: 0,
            failed: failed_rx.clone(),
            commit_timeout: Duration::from_millis(pipeline.checkpoints.timeout.0.max(0) as u64) + Duration::from_secs(60),
        };
        tasks.push((spec.name.clone(), tokio::task::spawn_blocking(move || node.run(sink, rx))));
    }
    // Only the routers hold senders now: a node's channel closes when all its producers are gone.
    drop(wiring);
    let abort = acks.clone();
    drop(acks);

    let mut first_error: Option<DataflowError> = None;
    // Take the nodes' results as they finish, so that the first failure
    // aborts the checkpoint coordinator at once: nodes that wait for the
    // final checkpoint are released by that, whatever their order.
    let mut running = tokio::task::JoinSet::new();
    for (name, task) in tasks {
        running.spawn(async move { (name, task.await) });
    }
    while let Some(joined) = running.join_next().await {
        let result = match joined {
            Ok((_, Ok(r))) => r,
            Ok((name, Err(e))) => Err(DataflowError::Internal { node: name, message: e.to_string() }),
            Err(e) => Err(DataflowError::Internal { node: "a node".into(), message: e.to_string() }),
        };
        if let Err(e) = result {
            // Nodes stop on their own error and cancel their neighbours; keep
            // the root cause, not the disconnections it caused.
            stop.stop();
            if let Some(a) = &abort {
                let _ = a.send(checkpoint::Ack::Abort);
            }
            let replace = match (&first_error, &e) {
                (None, _) => true,
                (Some(DataflowError::Disconnected { .. }), DataflowError::Disconnected { .. }) => false,
                (Some(DataflowError::Disconnected { .. }), _) => true,
                _ => false,
            };
            if replace {
                first_error = Some(e);
            }
        }
    }
    drop(abort);
    if let Some(c) = coordinator {
        match c.join() {
            Ok(Err(e)) if first_error.is_none() => first_error = Some(e),
            Ok(_) => {}
            Err(_) => first_error = first_error.or(Some(DataflowError::Internal { node: "checkpoint coordinator".into(), message: "panicked".into() })),
        }
    }
    if let Some(b) = &backend {
        b.flush_to_disk().map_err(|source| DataflowError::State { node: pipeline.name.clone(), source })?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let sum = |names: &mut dyn Iterator<Item = &String>, f: fn(&NodeCounters) -> u64| names.map(|n| f(&metrics.node(n))).sum::<u64>();
    Ok(RunSummary {
        elapsed: started.elapsed(),
        startup: first_read.get().map(|t| t.saturating_duration_since(started)),
        records_in: sum(&mut pipeline.sources.iter().map(|s| &s.name), |c| c.records_out.get()),
        records_out: sum(&mut pipeline.sinks.iter().map(|s| &s.name), |c| c.records_in.get()),
        dead_letters: sum(&mut pipeline.operators.iter().map(|o| &o.name), |c| c.dead_letters.get()),
    })
}

/// A source task and what it needs for watermarks and checkpoints.
struct SourceNode {
    name: String,
    /// This subtask, of `parallelism`: it reads the splits `s` with
    /// `s % parallelism == subtask`.
    subtask: usize,
    parallelism: usize,
    watermarks: Option<WatermarkSpec>,
    /// Its alignment group and its place in it (source index, subtask).
    alignment: Option<(Arc<event_time::AlignmentGroup>, (usize, usize))>,
    stop: StopHandle,
    batch: usize,
    /// How long to wait to fill a batch when input is slow.
    batch_timeout: Duration,
    /// The checkpoint the coordinator asks for.
    requested: Arc<std::sync::atomic::AtomicU64>,
    acks: Option<std::sync::mpsc::Sender<checkpoint::Ack>>,
    /// The newest complete checkpoint.
    completed: tokio::sync::watch::Receiver<u64>,
    /// The id of the final checkpoint, once the pipeline has ended.
    final_id: tokio::sync::watch::Receiver<u64>,
    resume: Option<checkpoint::SourcePosition>,
    /// When the first source subtask began to read.
    first_read: Arc<std::sync::OnceLock<Instant>>,
}

impl SourceNode {
    fn run(mut self, mut source: Box<dyn Source>, router: &mut Router, counters: &NodeCounters, gauges: &WatermarkGauges) -> Result<(), DataflowError> {
        slow_start_fault();
        let name = self.name.as_str();
        let err = |source| DataflowError::Connector { node: name.to_string(), source };
        let mut generator = self.watermarks.as_ref().map(WatermarkGenerator::new);
        let mut position = checkpoint::SourcePosition::default();
        let mut exhausted = false;
        if let Some(resume) = &self.resume {
            position = resume.clone();
            if self.parallelism > 1 {
                // The subtasks' positions are merged into the source's: each
                // carries its own splits, and the count once.
                position.splits.retain(|split, _| *split as usize % self.parallelism == self.subtask);
                if self.subtask > 0 {
                    position.emitted = 0;
                }
            }
            if !source.seek(&resume.splits).map_err(err)? {
                let skipped = source.skip(resume.emitted).map_err(err)?;
                if skipped < resume.emitted {
                    tracing::warn!("source `{name}` has {skipped} records where the checkpoint counted {}; the input is shorter than when it was checkpointed", resume.emitted);
                }
                position.emitted = skipped;
            }
            if let (Some(g), Some(state)) = (&mut generator, &resume.generator) {
                // Only this subtask's splits (and, of the emitted watermarks of
                // all subtasks, the lowest: re-sending a lower one is harmless).
                let emitted = |e: &&(u16, u32, i64)| (e.0, e.1) == (u16::MAX, u32::MAX);
                let own = state.iter().filter(|e| !emitted(e) && (self.parallelism == 1 || e.1 as usize % self.parallelism == self.subtask));
                let lowest = state.iter().filter(emitted).min_by_key(|e| e.2);
                g.restore(&own.chain(lowest).copied().collect::<Vec<_>>());
            }
        }
        // Every checkpoint the coordinator asked for, including one asked
        // for before this subtask started (its connector may take seconds
        // to connect): skipping it would leave that checkpoint, and the
        // barrier alignment downstream, waiting forever.
        let mut injected = 0;
        // Positions of checkpoints in flight, acknowledged to the source once complete.
        let mut in_flight: std::collections::VecDeque<(u64, BTreeMap<u32, u64>)> = Default::default();
        let _ = self.first_read.set(Instant::now());
        while !self.stop.stopped() {
            let done = *self.completed.borrow();
            if in_flight.front().is_some_and(|(id, _)| *id <= done) {
                let mut newest = None;
                while in_flight.front().is_some_and(|(id, _)| *id <= done) {
                    newest = in_flight.pop_front().map(|(_, splits)| splits);
                }
                if let Some(splits) = newest {
                    source.checkpoint_complete(&splits).map_err(err)?;
                }
            }
            // Too far ahead of the slowest of its alignment group: wait
            // (still taking part in checkpoints) instead of reading.
            let polled = if self.must_wait(generator.as_ref()) {
                std::thread::sleep(Duration::from_millis(2));
                Some((Vec::new(), false))
            } else {
                self.fill(&mut *source).map_err(err)?
            };
            let Some((records, ended)) = polled else {
                exhausted = true;
                break;
            };
            counters.records_out.inc_by(records.len() as u64);
            position.emitted += records.len() as u64;
            let (now, now_ms) = (Instant::now(), now_ms());
            let batch_wm = generator.as_ref().filter(|_| event_time::per_batch_baseline()).map(WatermarkGenerator::current);
            for mut r in records {
                if let Some(p) = r.position {
                    position.splits.insert(p.split, p.offset + 1);
                }
                // The watermark before each record travels with it.
                let wm = match &mut generator {
                    Some(g) => {
                        let before = g.observe(&mut r, now, now_ms);
                        batch_wm.unwrap_or(before)
                    }
                    None => event_time::NO_WATERMARK,
                };
                router.push(None, r, wm)?;
            }
            router.flush()?;
            if let Some(g) = &mut generator {
                match g.poll(Instant::now()) {
                    Some(WatermarkUpdate::Advance(wm)) => {
                        router.broadcast(|from| Message::Watermark { from, at: wm })?;
                        gauges.set_output(wm, now_ms);
                    }
                    Some(WatermarkUpdate::Idle) => router.broadcast(|from| Message::Idle { from })?,
                    None => {}
                }
            }
            // A checkpoint was asked for: everything emitted so far is in it.
            let want = self.requested.load(std::sync::atomic::Ordering::SeqCst);
            if want > injected {
                injected = want;
                if let Some(acks) = &self.acks {
                    position.generator = generator.as_ref().map(WatermarkGenerator::state);
                    let _ = acks.send(checkpoint::Ack::Source { id: want, name: name.to_string(), subtask: self.subtask, position: position.clone() });
                    in_flight.push_back((want, position.splits.clone()));
                    router.broadcast(|from| Message::Barrier { from, id: want })?;
                }
            }
            if ended {
                exhausted = true;
                break;
            }
        }
        if let Some(acks) = &self.acks {
            position.generator = generator.as_ref().map(WatermarkGenerator::state);
            position.exhausted = exhausted;
            let _ = acks.send(checkpoint::Ack::SourceDone { name: name.to_string(), subtask: self.subtask, position: position.clone() });
        }
        if let Some((group, who)) = &self.alignment {
            group.leave(*who);
        }
        router.finish(exhausted)?;
        // Acknowledge the final checkpoint to the source as well (it holds
        // everything this source emitted), once the pipeline has taken it.
        if self.acks.is_some() {
            let handle = tokio::runtime::Handle::current();
            let (final_id, completed) = (&mut self.final_id, &mut self.completed);
            let taken = handle.block_on(async {
                let id = *final_id.wait_for(|v| *v > 0).await.ok()?;
                completed.wait_for(|v| *v >= id).await.ok().map(|_| ())
            });
            if taken.is_some() {
                source.checkpoint_complete(&position.splits).map_err(err)?;
            }
        }
        source.finish().map_err(err)?;
        Ok(())
    }
}

impl SourceNode {
    /// Whether this source is more than `max_drift` ahead of the slowest
    /// source of its alignment group.
    fn must_wait(&self, generator: Option<&WatermarkGenerator>) -> bool {
        let (Some((group, who)), Some(g), Some(spec)) = (&self.alignment, generator, &self.watermarks) else { return false };
        let drift = spec.max_drift.map_or(0, |d| d.0);
        let idle = spec.idle_timeout.map(|t| Duration::from_millis(t.0 as u64));
        group.must_wait(*who, g.current(), drift, idle)
    }

    /// One batch: up to `batch` records, waiting up to `batch_timeout` to
    /// fill it when input is slow. `Some((records, true))`: the input ended
    /// after these.
    fn fill(&self, source: &mut dyn Source) -> Result<Option<(Vec<sluice_types::Record>, bool)>, sluice_types::ConnectorError> {
        let Some(mut records) = source.poll_batch(self.batch)? else { return Ok(None) };
        if self.batch_timeout.is_zero() || records.len() >= self.batch {
            return Ok(Some((records, false)));
        }
        let deadline = Instant::now() + self.batch_timeout;
        while records.len() < self.batch && Instant::now() < deadline && !self.stop.stopped() {
            match source.poll_batch(self.batch - records.len())? {
                Some(more) if more.is_empty() => std::thread::sleep(Duration::from_millis(1)),
                Some(more) => records.extend(more),
                None => return Ok(Some((records, true))),
            }
        }
        Ok(Some((records, false)))
    }
}

/// Fault injection for the checkpoint tests: with
/// `SLUICE_FAULT_SOURCE_START_DELAY_MS=N`, every source subtask starts N ms
/// late, as one whose connector is slow to connect does (a loaded machine,
/// a broker that is just starting).
fn slow_start_fault() {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    if let Some(ms) = DELAY.get_or_init(|| std::env::var("SLUICE_FAULT_SOURCE_START_DELAY_MS").ok().and_then(|v| v.parse().ok())) {
        std::thread::sleep(std::time::Duration::from_millis(*ms));
    }
}

/// A sink task and what it needs for checkpoints.
struct SinkNode {
    name: String,
    expected_ends: usize,
    counters: NodeCounters,
    aligner: align::Aligner,
    acks: Option<std::sync::mpsc::Sender<checkpoint::Ack>>,
    completed: tokio::sync::watch::Receiver<u64>,
    final_id: tokio::sync::watch::Receiver<u64>,
    restore: Option<(u64, sluice_types::SinkSnapshot)>,
    /// The newest checkpoint committed to the sink.
    committed: u64,
    /// The newest checkpoint that failed.
    failed: tokio::sync::watch::Receiver<u64>,
    /// How long a sink may wait for a checkpoint to complete.
    commit_timeout: Duration,
}

impl SinkNode {
    fn run(mut self, mut sink: Box<dyn Sink>, mut rx: Receiver<Message>) -> Result<(), DataflowError> {
        let name = self.name.clone();
        let err = |source| DataflowError::Connector { node: name.clone(), source };
        sink.start(self.restore.as_ref().map(|(id, s)| (*id, s))).map_err(err)?;
        let handle = tokio::runtime::Handle::current();
        self.committed = self.restore.as_ref().map_or(0, |(id, _)| *id);
        let mut ends = 0;
        while ends < self.expected_ends || !self.aligner.idle() {
            let message = match self.aligner.replay() {
                Some(m) => Some(m),
                None => {
                    if self.acks.is_none() {
                        rx.blocking_recv()
                    } else {
                        // Wake up for completed checkpoints too, to commit them.
                        let completed = &mut self.completed;
                        let got = handle.block_on(async {
                            tokio::select! {
                                m = rx.recv() => Some(m),
                                _ = completed.changed() => None,
                            }
                        });
                        let done = *self.completed.borrow();
                        if done > self.committed {
                            sink.commit(done).map_err(err)?;
                            self.committed = done;
                        }
                        match got {
                            Some(m) => m,
                            None => continue,
                        }
                    }
                }
            };
            let Some(message) = message else {
                return Err(DataflowError::Disconnected { node: self.name.clone(), peer: "an upstream node".into() });
            };
            match self.aligner.offer(message) {
                align::Offer::Held => {}
                align::Offer::Aligned(id, alignment) => self.pre_commit(&mut *sink, id, alignment)?,
                align::Offer::Handle(Message::Batch { records, .. }) => {
                    sink.write(&records).map_err(err)?;
                    self.counters.records_in.inc_by(records.len() as u64);
                }
                align::Offer::Handle(Message::End { from, .. }) => {
                    ends += 1;
                    if let Some((id, alignment)) = self.aligner.ended(from) {
                        self.pre_commit(&mut *sink, id, alignment)?;
                    }
                }
                align::Offer::Handle(_) => {}
            }
        }
        let Some(acks) = &self.acks else { return sink.flush().map_err(err) };
        // The end: pre-commit the rest, and commit it with the final checkpoint.
        let _ = acks.send(checkpoint::Ack::SinkEnded { name: self.name.clone() });
        let final_id = &mut self.final_id;
        let Ok(id) = handle.block_on(final_id.wait_for(|v| *v > 0)).map(|v| *v) else { return Ok(()) };
        let snapshot = sink.pre_commit(id).map_err(err)?;
        let _ = acks.send(checkpoint::Ack::SinkDone { name: self.name.clone(), snapshot });
        let completed = &mut self.completed;
        if handle.block_on(completed.wait_for(|v| *v >= id)).is_ok() {
            sink.commit(id).map_err(err)?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, sink: &mut dyn Sink, id: u64, alignment: Duration) -> Result<(), DataflowError> {
        let err = |source| DataflowError::Connector { node: self.name.clone(), source };
        let snapshot = sink.pre_commit(id).map_err(err)?;
        if let Some(acks) = &self.acks {
            let _ = acks.send(checkpoint::Ack::Sink { id, name: self.name.clone(), snapshot, alignment });
        }
        // A sink with no room for another pending pre-commit waits here
        // (backpressure) until the checkpoint it needs is complete.
        if let Some(wait) = sink.awaiting_commit() {
            let handle = tokio::runtime::Handle::current();
            let (completed, failed) = (&mut self.completed, &mut self.failed);
            let timeout = self.commit_timeout;
            // A later complete checkpoint covers `wait` too; if the one this
            // sink just pre-committed (`id`) fails, no later one can complete
            // while the sink waits: stop rather than hang.
            let reached = handle.block_on(async {
                tokio::time::timeout(timeout, async {
                    tokio::select! {
                        r = completed.wait_for(|v| *v >= wait) => r.map(|v| *v),
                        _ = failed.wait_for(|v| *v >= id) => Ok(0),
                    }
                })
                .await
            });
            match reached {
                Ok(Ok(0)) => {
                    return Err(DataflowError::Checkpoint(format!(
                        "checkpoint {id} failed while sink `{}` held two pre-committed transactions; it cannot take more input\n  help: see the checkpoint's failure above; run again to recover from the last complete checkpoint",
                        self.name
                    )))
                }
                Ok(Ok(done)) => {
                    sink.commit(done).map_err(err)?;
                    self.committed = self.committed.max(done);
                }
                Ok(Err(_)) => return Err(DataflowError::Disconnected { node: self.name.clone(), peer: "the checkpoint coordinator".into() }),
                Err(_) => {
                    return Err(DataflowError::Checkpoint(format!(
                        "sink `{}` waited {:?} for checkpoint {wait} to complete before it could write more; the checkpoint did not complete\n  help: look for the checkpoint's failure above; the pipeline restarts from the last complete checkpoint",
                        self.name, self.commit_timeout
                    )))
                }
            }
        }
        Ok(())
    }
}


