//! Launching a planned pipeline: lock the state directory, build the sinks,
//! choose what to restore, open the keyed state, start the control plane
//! and the checkpoint coordinator, create the channels from the plan's
//! edges, start one task per subtask, and wait for them.

mod connect;
mod restore;
mod wiring;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_config::{OperatorSpec, Pipeline};
use sluice_runtime::{now_ms, Plugin};
use sluice_state::StateBackend;
use sluice_types::metrics::{Metrics, NodeCounters};
use sluice_types::{ControlSource, Sink};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint::{self, Ack, Aligner, Restore};
use crate::control::{self, AdminServer, ControlDir, Running, SwapController, Swaps};
use crate::error::DataflowError;
use crate::event_time::{AlignmentGroup, InputWatermarks};
use crate::plan::PhysicalPlan;
use crate::plugins::instance_config;
use crate::run_lock::{self, RunLock};
use crate::settings::{Settings, StopHandle};
use crate::task::operator::{Collector, OperatorTask, RestoredOperator};
use crate::task::sink::SinkTask;
use crate::task::source::SourceTask;
use wiring::Wiring;

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

/// A started task, by the name its errors give it.
type Task = (String, JoinHandle<Result<(), DataflowError>>);

/// Run `pipeline` to completion (bounded sources) or until `stop`.
pub(crate) async fn launch(
    pipeline: &Pipeline,
    plugins: &HashMap<String, Arc<Plugin>>,
    settings: &Settings,
    metrics: Arc<Metrics>,
    stop: StopHandle,
) -> Result<RunSummary, DataflowError> {
    let started = Instant::now();
    let first_read: Arc<OnceLock<Instant>> = Arc::default();
    let plan = PhysicalPlan::new(pipeline, settings);
    let wiring = Wiring::new(&plan, settings.channel_capacity.max(1));

    // Checkpoints: what to restore, and the coordinator's channels.
    let checkpoints = pipeline.checkpoints.enabled;
    let store = checkpoint::Store::of(pipeline, &settings.state_dir);
    // One run per state directory, taken before anything touches it (an
    // at-least-once file sink truncates its output when it is built) and
    // held until this function returns.
    let lock = RunLock::acquire(&run_lock::lock_dirs(pipeline, &settings.state_dir))
        .map_err(DataflowError::StateDir)?;
    // Sinks first: a sink that cannot finish a pre-commit after a crash
    // (Kafka) says which checkpoint recovery must start from.
    let mut sinks = connect::sinks(pipeline, checkpoints)?;
    let restore = restore::choose(pipeline, plugins, settings, &store, &mut sinks)?;
    // Operators that ran a deployed plugin at the checkpoint run it again.
    let control = ControlDir::new(&store.root);
    let deployed = restore::deployed(pipeline, settings, &control, restore.as_ref())?;
    let mut plugins = plugins.clone();
    plugins.extend(deployed.plugins.clone());
    let plugins = &plugins;
    let swaps = Arc::new(Swaps::new(stop.clone()));
    let ControlPlane {
        sources: control_sources,
        admin: _admin,
    } = if checkpoints {
        control_plane(pipeline, &control, plugins, restore.as_ref())?
    } else {
        ControlPlane {
            sources: Vec::new(),
            admin: None,
        }
    };
    let backend = open_state(pipeline, settings, restore.as_ref())?;

    let requested = Arc::new(AtomicU64::new(0));
    let (completed_tx, completed_rx) = watch::channel(0u64);
    let (final_tx, final_rx) = watch::channel(0u64);
    let (failed_tx, failed_rx) = watch::channel(0u64);
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>();
    let last_id = restore.as_ref().map_or(0, |r| r.manifest.id);
    let next_id = store.list().first().map_or(0, |l| l.id).max(last_id) + 1;
    let coordinator = checkpoints.then(|| checkpoint::Coordinator {
        pipeline: pipeline.clone(),
        store: store.clone(),
        backend: backend.clone(),
        participants: checkpoint::Participants {
            sources: pipeline
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.parallelism as usize))
                .collect(),
            operators: pipeline
                .operators
                .iter()
                .map(|o| (o.name.clone(), o.parallelism as usize))
                .collect(),
            sinks: pipeline.sinks.iter().map(|s| s.name.clone()).collect(),
        },
        requested: requested.clone(),
        completed: completed_tx,
        failed: failed_tx,
        final_id: final_tx,
        acks: ack_rx,
        run_id: lock.info.run.clone(),
        next_id,
        previous_files: restore
            .as_ref()
            .and_then(|r| r.manifest.state.as_ref())
            .map(|s| s.files.clone())
            .unwrap_or_default(),
        metrics: metrics.clone(),
        stop: stop.clone(),
        swap: SwapController::start(
            pipeline,
            control.clone(),
            swaps.clone(),
            control_sources,
            running(plugins, &deployed),
            settings.runtime.as_ref().map(|r| r.0.clone()),
            metrics.clone(),
        ),
    });
    let coordinator = match coordinator {
        Some(c) => Some(
            std::thread::Builder::new()
                .name("sluice-checkpoints".into())
                .spawn(move || c.run())
                .map_err(|e| DataflowError::Checkpoint(e.to_string()))?,
        ),
        None => None,
    };

    let mut spawner = Spawner {
        pipeline,
        plan: &plan,
        wiring,
        metrics: &metrics,
        stop: &stop,
        restore: restore.as_ref(),
        links: Links {
            requested,
            acks: checkpoints.then_some(ack_tx),
            completed: completed_rx,
            final_id: final_rx,
            failed: failed_rx,
            last_id,
        },
        tasks: Vec::new(),
    };
    spawner.sources(&first_read)?;
    spawner.operators(
        plugins,
        backend.as_ref(),
        settings.cache_bytes,
        &deployed.params,
        &swaps,
    )?;
    spawner.sinks(sinks);
    // Only the routers hold senders now: a node's channel closes when all
    // its producers are gone. The coordinator is told of failures through
    // the last sender of acknowledgements.
    let Spawner {
        tasks,
        links,
        wiring,
        ..
    } = spawner;
    drop(wiring);
    let abort = links.acks;

    let first_error = supervise(tasks, &stop, abort, coordinator).await;
    if let Some(b) = &backend {
        b.flush_to_disk().map_err(|source| DataflowError::State {
            node: pipeline.name.clone(),
            source,
        })?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let sum = |names: &mut dyn Iterator<Item = &String>, f: fn(&NodeCounters) -> u64| {
        names.map(|n| f(&metrics.node(n))).sum::<u64>()
    };
    Ok(RunSummary {
        elapsed: started.elapsed(),
        startup: first_read
            .get()
            .map(|t| t.saturating_duration_since(started)),
        records_in: sum(&mut pipeline.sources.iter().map(|s| &s.name), |c| {
            c.records_out.get()
        }),
        records_out: sum(&mut pipeline.sinks.iter().map(|s| &s.name), |c| {
            c.records_in.get()
        }),
        dead_letters: sum(&mut pipeline.operators.iter().map(|o| &o.name), |c| {
            c.dead_letters.get()
        }),
    })
}

/// What each operator runs at the start, as the swap controller tracks it:
/// plugin file name and digest, and what recovery restored as deployed.
fn running(plugins: &HashMap<String, Arc<Plugin>>, deployed: &restore::Deployed) -> Running {
    let plugins = plugins
        .iter()
        .map(|(n, p)| {
            let info = p.info();
            (
                n.clone(),
                (
                    info.path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    info.digest.clone(),
                ),
            )
        })
        .collect();
    Running {
        plugins,
        deployed: deployed.digests.clone(),
        params: deployed.params.clone(),
    }
}

/// Where a run's commands come from, and its admin endpoint (stopped when dropped).
struct ControlPlane {
    /// The control directory first, then `[control]` sources.
    sources: Vec<Box<dyn ControlSource>>,
    admin: Option<AdminServer>,
}

/// The control plane of a run with checkpoints: where commands come from
/// (the control directory first, then `[control]` sources) and the admin
/// endpoint. The versions running now are what a rollback can return to:
/// their bytes go to the plugin store and each operator's history starts.
fn control_plane(
    pipeline: &Pipeline,
    control: &ControlDir,
    plugins: &HashMap<String, Arc<Plugin>>,
    restore: Option<&Restore>,
) -> Result<ControlPlane, DataflowError> {
    let mut sources: Vec<Box<dyn ControlSource>> =
        vec![Box::new(control::DirectorySource::new(control))];
    // Commands, results, the plugin store and the admin token: owner-only.
    control.secure()?;
    let admin = match pipeline.control.http {
        Some(addr) => {
            let token = control::token::server_token(&pipeline.control, control)?;
            Some(AdminServer::start(
                addr,
                pipeline.name.clone(),
                control.clone(),
                token,
            )?)
        }
        None => None,
    };
    sources.extend(connect::control_sources(pipeline)?);
    let mut history = control.history();
    for (name, p) in plugins.iter() {
        let info = p.info();
        if let Ok(bytes) = std::fs::read(&info.path) {
            let _ = control.store_plugin(&info.digest, &bytes);
        }
        let versions = history.entry(name.clone()).or_default();
        if versions
            .iter()
            .rev()
            .find(|v| !v.rolled_back)
            .is_none_or(|v| v.digest != info.digest)
        {
            versions.push(control::Version {
                digest: info.digest.clone(),
                checkpoint: restore.map_or(0, |r| r.manifest.id),
                since_ms: now_ms(),
                command: "pipeline file".into(),
                rolled_back: false,
                params: None,
            });
        }
    }
    control.write_history(&history);
    Ok(ControlPlane { sources, admin })
}

/// The keyed state of the run, if any operator is keyed: restored from the
/// checkpoint if it has state, else fresh.
fn open_state(
    pipeline: &Pipeline,
    settings: &Settings,
    restore: Option<&Restore>,
) -> Result<Option<StateBackend>, DataflowError> {
    if keyed_subtasks(pipeline) == 0 {
        return Ok(None);
    }
    let dir = settings.state_dir.join(&pipeline.name).join("state");
    let state_err = |source| DataflowError::State {
        node: pipeline.name.clone(),
        source,
    };
    match restore.filter(|r| r.manifest.state.is_some()) {
        Some(r) => {
            checkpoint::restore_state(r, &dir)?;
            Ok(Some(StateBackend::open(&dir, false).map_err(state_err)?))
        }
        None => Ok(Some(StateBackend::open(&dir, true).map_err(state_err)?)),
    }
}

/// Subtasks of keyed operators, which share the cache budget.
fn keyed_subtasks(pipeline: &Pipeline) -> usize {
    pipeline
        .operators
        .iter()
        .filter(|o| o.key_by.is_some())
        .map(|o| o.parallelism as usize)
        .sum()
}

/// The task-side ends of the checkpoint channels.
struct Links {
    /// The checkpoint the coordinator asks the sources for.
    requested: Arc<AtomicU64>,
    /// Where acknowledgements go (checkpoints on).
    acks: Option<mpsc::Sender<Ack>>,
    /// The newest complete checkpoint.
    completed: watch::Receiver<u64>,
    /// The id of the final checkpoint, once the pipeline has ended.
    final_id: watch::Receiver<u64>,
    /// The newest checkpoint that failed.
    failed: watch::Receiver<u64>,
    /// The restored checkpoint (0: none): barriers up to it are done.
    last_id: u64,
}

/// Starts the tasks of a run, one per subtask.
struct Spawner<'a> {
    pipeline: &'a Pipeline,
    plan: &'a PhysicalPlan,
    wiring: Wiring,
    metrics: &'a Arc<Metrics>,
    stop: &'a StopHandle,
    restore: Option<&'a Restore>,
    links: Links,
    tasks: Vec<Task>,
}

impl Spawner<'_> {
    fn sources(&mut self, first_read: &Arc<OnceLock<Instant>>) -> Result<(), DataflowError> {
        let pipeline = self.pipeline;
        let batching = self.plan.batching;
        let mut groups: HashMap<String, Arc<AlignmentGroup>> = HashMap::new();
        for (index, spec) in pipeline.sources.iter().enumerate() {
            let group = spec
                .watermarks
                .as_ref()
                .and_then(|w| w.alignment_group.clone())
                .map(|g| groups.entry(g).or_default().clone());
            let resume = self
                .restore
                .and_then(|r| r.manifest.sources.iter().find(|s| s.name == spec.name))
                .map(|s| s.position.clone());
            for subtask in 0..spec.parallelism as usize {
                let source = connect::source(pipeline, spec, index, subtask, self.metrics)?;
                let mut router = self.wiring.router(self.plan, &spec.name, subtask);
                let counters = self.metrics.node(&spec.name);
                let gauges = self.metrics.watermarks(&spec.name, subtask as u32);
                let task = SourceTask {
                    name: spec.name.clone(),
                    subtask,
                    parallelism: spec.parallelism as usize,
                    watermarks: spec.watermarks.clone(),
                    alignment: group.clone().map(|g| {
                        g.join((index, subtask));
                        (g, (index, subtask))
                    }),
                    stop: self.stop.clone(),
                    batch: batching.size,
                    batch_timeout: batching.timeout,
                    requested: self.links.requested.clone(),
                    acks: self.links.acks.clone(),
                    completed: self.links.completed.clone(),
                    final_id: self.links.final_id.clone(),
                    resume: resume.clone(),
                    first_read: first_read.clone(),
                };
                let name = format!("{}[{subtask}]", spec.name);
                self.tasks.push((
                    name,
                    tokio::task::spawn_blocking(move || {
                        task.run(source, &mut router, &counters, &gauges)
                    }),
                ));
            }
        }
        Ok(())
    }

    fn operators(
        &mut self,
        plugins: &HashMap<String, Arc<Plugin>>,
        backend: Option<&StateBackend>,
        cache_bytes: usize,
        deployed_params: &HashMap<String, String>,
        swaps: &Arc<Swaps>,
    ) -> Result<(), DataflowError> {
        let pipeline = self.pipeline;
        // The write-back cache budget is shared by all keyed subtasks.
        let cache_per_subtask = cache_bytes / keyed_subtasks(pipeline).max(1);
        let source_names: Arc<[String]> = pipeline.sources.iter().map(|s| s.name.clone()).collect();
        for op in &pipeline.operators {
            let plugin = plugins
                .get(&op.name)
                .cloned()
                .ok_or_else(|| DataflowError::MissingPlugin(op.name.clone()))?;
            let node = self.plan.node(&op.name);
            let (upstream, expected) = (node.upstream.clone(), node.expected_ends);
            let sources = connect::source_labels(pipeline);
            let receivers = self.wiring.take_receivers(&op.name);
            for (subtask, rx) in receivers.into_iter().enumerate() {
                let state = match (backend, op.key_by) {
                    (Some(b), Some(_)) => {
                        Some(b.operator(&op.name, cache_per_subtask).map_err(|source| {
                            DataflowError::State {
                                node: op.name.clone(),
                                source,
                            }
                        })?)
                    }
                    _ => None,
                };
                // With the params deployed with a hot swap, if recovery restored one.
                let spec = match deployed_params
                    .get(&op.name)
                    .and_then(|p| serde_json::from_str(p).ok())
                {
                    Some(params) => OperatorSpec {
                        params,
                        ..op.clone()
                    },
                    None => op.clone(),
                };
                let mut config = instance_config(&spec, subtask as u32);
                config.sources = source_names.clone();
                let router = self.wiring.router(self.plan, &op.name, subtask);
                let (counters, gauges) = (
                    self.metrics.node(&op.name),
                    self.metrics.watermarks(&op.name, subtask as u32),
                );
                let task = OperatorTask {
                    out: Collector::new(
                        &spec,
                        subtask,
                        plugin.clone(),
                        router,
                        counters,
                        gauges,
                        sources.clone(),
                    ),
                    spec,
                    subtask,
                    batch_size: self.plan.batching.of(op),
                    inputs: InputWatermarks::new(upstream.len()),
                    timers: None,
                    windows: None,
                    aligner: Aligner::new(upstream.clone(), self.links.last_id),
                    acks: self.links.acks.clone(),
                    swaps: swaps.clone(),
                    probation: None,
                    control: pipeline.control.clone(),
                    restore: self
                        .restore
                        .and_then(|r| r.manifest.operators.iter().find(|o| o.name == op.name))
                        .map(|o| RestoredOperator {
                            watermark: o.watermarks.iter().copied().min().unwrap_or(i64::MIN),
                            generator: o.generators.get(subtask).cloned().flatten(),
                        }),
                };
                let metrics = self.metrics.clone();
                let name = format!("{}[{subtask}]", op.name);
                self.tasks.push((
                    name,
                    tokio::task::spawn_blocking(move || {
                        task.run(config, state, metrics, rx, expected)
                    }),
                ));
            }
        }
        Ok(())
    }

    fn sinks(&mut self, mut sinks: HashMap<String, Box<dyn Sink>>) {
        let pipeline = self.pipeline;
        for spec in &pipeline.sinks {
            let node = self.plan.node(&spec.name);
            let sink = sinks.remove(&spec.name).expect("every sink was built");
            let rx = self
                .wiring
                .take_receivers(&spec.name)
                .pop()
                .expect("a sink has one subtask");
            let restore = self.restore.and_then(|r| {
                r.manifest
                    .sinks
                    .iter()
                    .find(|s| s.name == spec.name)
                    .map(|s| (s.precommit.unwrap_or(r.manifest.id), s.snapshot.clone()))
            });
            let task = SinkTask {
                name: spec.name.clone(),
                expected_ends: node.expected_ends,
                counters: self.metrics.node(&spec.name),
                aligner: Aligner::new(node.upstream.clone(), self.links.last_id),
                acks: self.links.acks.clone(),
                completed: self.links.completed.clone(),
                final_id: self.links.final_id.clone(),
                restore,
                committed: 0,
                failed: self.links.failed.clone(),
                commit_timeout: Duration::from_millis(pipeline.checkpoints.timeout.0.max(0) as u64)
                    + Duration::from_secs(60),
            };
            self.tasks.push((
                spec.name.clone(),
                tokio::task::spawn_blocking(move || task.run(sink, rx)),
            ));
        }
    }
}

/// Take the tasks' results as they finish, so that the first failure stops
/// the run and aborts the checkpoint coordinator at once: tasks that wait
/// for the final checkpoint are released by that, whatever their order.
/// Returns the root cause of a failure, if any.
async fn supervise(
    tasks: Vec<Task>,
    stop: &StopHandle,
    abort: Option<mpsc::Sender<Ack>>,
    coordinator: Option<std::thread::JoinHandle<Result<(), DataflowError>>>,
) -> Option<DataflowError> {
    let mut first_error: Option<DataflowError> = None;
    let mut running = tokio::task::JoinSet::new();
    for (name, task) in tasks {
        running.spawn(async move { (name, task.await) });
    }
    while let Some(joined) = running.join_next().await {
        let result = match joined {
            Ok((_, Ok(r))) => r,
            Ok((name, Err(e))) => Err(DataflowError::Internal {
                node: name,
                message: e.to_string(),
            }),
            Err(e) => Err(DataflowError::Internal {
                node: "a node".into(),
                message: e.to_string(),
            }),
        };
        if let Err(e) = result {
            // Nodes stop on their own error and cancel their neighbours; keep
            // the root cause, not the disconnections it caused.
            stop.stop();
            if let Some(a) = &abort {
                let _ = a.send(Ack::Abort);
            }
            let replace = match (&first_error, &e) {
                (None, _) => true,
                (Some(DataflowError::Disconnected { .. }), DataflowError::Disconnected { .. }) => {
                    false
                }
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
            Err(_) => {
                first_error = first_error.or(Some(DataflowError::Internal {
                    node: "checkpoint coordinator".into(),
                    message: "panicked".into(),
                }))
            }
        }
    }
    first_error
}
