//! Launching a planned pipeline: lock the state directory, build the sinks,
//! choose what to restore, open the keyed state, start the control plane
//! and the checkpoint coordinator, create the channels from the plan's
//! edges, start one task per subtask, and wait for them.

mod connect;
mod restore;
mod spawn;
mod wiring;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_config::Pipeline;
use sluice_runtime::{now_ms, Plugin};
use sluice_state::StateBackend;
use sluice_types::metrics::{Metrics, NodeCounters};
use sluice_types::ControlSource;
use tokio::sync::watch;

use crate::checkpoint::{self, Ack, Restore};
use crate::control::{self, AdminServer, ControlDir, Running, SwapController, Swaps};
use crate::error::DataflowError;
use crate::plan::PhysicalPlan;
use crate::run_lock::{self, RunLock};
use crate::settings::{Settings, StopHandle};
use spawn::{keyed_subtasks, supervise, Links, Spawner};
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
    let registry = crate::connectors();
    let mut sinks = connect::sinks(&registry, pipeline)?;
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
        registry: &registry,
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
