//! Starting a run's tasks, one per subtask (sources, operators, sinks), wired
//! by the plan's channels, and supervising them until the run ends.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_config::{OperatorSpec, Pipeline};
use sluice_connectors::Registry;
use sluice_runtime::Plugin;
use sluice_state::StateBackend;
use sluice_types::metrics::Metrics;
use sluice_types::Sink;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::connect;
use super::wiring::Wiring;
use crate::checkpoint::{Ack, Aligner, Restore};
use crate::control::Swaps;
use crate::error::DataflowError;
use crate::event_time::{AlignmentGroup, InputWatermarks};
use crate::plan::PhysicalPlan;
use crate::plugins::instance_config;
use crate::settings::StopHandle;
use crate::task::operator::{Collector, OperatorTask, RestoredOperator};
use crate::task::sink::SinkTask;
use crate::task::source::SourceTask;

/// A started task, by the name its errors give it.
pub(super) type Task = (String, JoinHandle<Result<(), DataflowError>>);

/// Subtasks of keyed operators, which share the cache budget.
pub(super) fn keyed_subtasks(pipeline: &Pipeline) -> usize {
    pipeline
        .operators
        .iter()
        .filter(|o| o.key_by.is_some())
        .map(|o| o.parallelism as usize)
        .sum()
}

/// The task-side ends of the checkpoint channels.
pub(super) struct Links {
    /// The checkpoint the coordinator asks the sources for.
    pub(super) requested: Arc<AtomicU64>,
    /// Where acknowledgements go (checkpoints on).
    pub(super) acks: Option<mpsc::Sender<Ack>>,
    /// The newest complete checkpoint.
    pub(super) completed: watch::Receiver<u64>,
    /// The id of the final checkpoint, once the pipeline has ended.
    pub(super) final_id: watch::Receiver<u64>,
    /// The newest checkpoint that failed.
    pub(super) failed: watch::Receiver<u64>,
    /// The restored checkpoint (0: none): barriers up to it are done.
    pub(super) last_id: u64,
}

/// Starts the tasks of a run, one per subtask.
pub(super) struct Spawner<'a> {
    pub(super) registry: &'a Registry,
    pub(super) pipeline: &'a Pipeline,
    pub(super) plan: &'a PhysicalPlan,
    pub(super) wiring: Wiring,
    pub(super) metrics: &'a Arc<Metrics>,
    pub(super) stop: &'a StopHandle,
    pub(super) restore: Option<&'a Restore>,
    pub(super) links: Links,
    pub(super) tasks: Vec<Task>,
}

impl Spawner<'_> {
    pub(super) fn sources(
        &mut self,
        first_read: &Arc<OnceLock<Instant>>,
    ) -> Result<(), DataflowError> {
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
                let source =
                    connect::source(self.registry, pipeline, spec, index, subtask, self.metrics)?;
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

    pub(super) fn operators(
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
            let sources = connect::source_labels(self.registry, pipeline);
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

    pub(super) fn sinks(&mut self, mut sinks: HashMap<String, Box<dyn Sink>>) {
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
pub(super) async fn supervise(
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
