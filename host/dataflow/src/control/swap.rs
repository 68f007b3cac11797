//! Hot swap as one controller. The checkpoint coordinator drives it at the
//! points it needs: it polls for commands when no final checkpoint is
//! coming (a deploy is prepared beside the pipeline, see `super::deploy`,
//! then planned at the next barrier, which the coordinator triggers), it
//! passes on what the subtasks report at the barrier (all switch or none),
//! it settles commands once their checkpoint is complete, it reports what
//! each operator runs for the manifest, it rolls back a version that fails
//! its probation, and it releases pauses when the input has ended.
//!
//! The plan it shares with the operator subtasks, which apply it at the
//! barrier, is [`Swaps`] (`super::plan`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use sluice_config::Pipeline;
use sluice_runtime::{now_ms, Plugin, Runtime};
use sluice_types::metrics::Metrics;
use sluice_types::ControlSource;

use super::command::{Action, Command, Outcome, SourceAt, Status};
use super::deploy::{DeployContext, Preparer};
use super::dir::{ControlDir, Version};
use super::fetch::FetchPolicy;
use super::plan::Swaps;

/// What each operator runs when the controller starts.
pub(crate) struct Running {
    /// Plugin file name and digest, by operator.
    pub(crate) plugins: HashMap<String, (String, String)>,
    /// Digests deployed by control commands (as at the restored checkpoint), by operator.
    pub(crate) deployed: HashMap<String, String>,
    /// Params deployed with them, by operator.
    pub(crate) params: HashMap<String, String>,
}

/// What an operator runs, as a checkpoint's manifest records it.
pub(crate) struct RunningPlugin {
    /// Plugin file name.
    pub(crate) plugin: String,
    /// Its sha256.
    pub(crate) digest: String,
    /// The digest deployed by a control command, if one was.
    pub(crate) deployed: Option<String>,
    /// Params deployed with it.
    pub(crate) deployed_params: Option<String>,
}

/// A checkpoint that just completed, as the controller needs it.
pub(crate) struct Completed {
    /// Its id.
    pub(crate) id: u64,
    /// Where each source stood at it.
    pub(crate) sources: BTreeMap<String, SourceAt>,
}

/// A deploy command between acceptance and its checkpoint.
struct InFlight {
    command: Command,
    /// Which control source sent it, and its token there.
    source: usize,
    token: u64,
    at: u64,
    digest: String,
    previous: ((String, String), Option<String>),
    swapped: usize,
    errors: Vec<String>,
}

/// The hot-swap controller of one run.
pub(crate) struct SwapController {
    pipeline: Pipeline,
    /// Parallelism of each operator: a swap is decided once every subtask reported.
    operators: Vec<(String, usize)>,
    /// The control directory: outcomes, the plugin store, the history.
    control: ControlDir,
    /// The plan shared with the operator subtasks.
    swaps: Arc<Swaps>,
    /// The worker that fetches and compiles deployed plugins.
    preparer: Preparer,
    /// Plugin file name and digest each operator runs now.
    plugin_digests: HashMap<String, (String, String)>,
    /// What is deployed now, by operator.
    deployed: HashMap<String, String>,
    /// Params deployed with them, by operator.
    deployed_params: HashMap<String, String>,
    /// Deployed digests already rolled back automatically.
    auto_rolled_back: HashSet<String>,
    /// Where commands come from: the directory first, then `[control]` sources.
    control_sources: Vec<Box<dyn ControlSource>>,
    /// Commands received and not handled yet: (source, token, command).
    backlog: VecDeque<(usize, u64, Command)>,
    /// Sources whose failure was already logged.
    control_warned: HashSet<usize>,
    /// Commands accepted and not settled yet.
    in_flight: Vec<InFlight>,
}

impl SwapController {
    /// The controller of a run of `pipeline`, starting its deploy worker.
    pub(crate) fn start(
        pipeline: &Pipeline,
        control: ControlDir,
        swaps: Arc<Swaps>,
        control_sources: Vec<Box<dyn ControlSource>>,
        running: Running,
        runtime: Option<Arc<Runtime>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let preparer = Preparer::start(DeployContext {
            pipeline: pipeline.clone(),
            control: control.clone(),
            runtime,
            metrics,
            policy: FetchPolicy::new(&pipeline.control, &pipeline.file, &control.plugins()),
        });
        SwapController {
            pipeline: pipeline.clone(),
            operators: pipeline
                .operators
                .iter()
                .map(|o| (o.name.clone(), o.parallelism as usize))
                .collect(),
            control,
            swaps,
            preparer,
            plugin_digests: running.plugins,
            deployed: running.deployed,
            deployed_params: running.params,
            auto_rolled_back: HashSet::new(),
            control_sources,
            backlog: VecDeque::new(),
            control_warned: HashSet::new(),
            in_flight: Vec::new(),
        }
    }

    /// What `operator` runs now, for a checkpoint's manifest.
    pub(crate) fn running(&self, operator: &str) -> RunningPlugin {
        let (plugin, digest) = self
            .plugin_digests
            .get(operator)
            .cloned()
            .unwrap_or_default();
        RunningPlugin {
            plugin,
            digest,
            deployed: self.deployed.get(operator).cloned(),
            deployed_params: self.deployed_params.get(operator).cloned(),
        }
    }

    /// The input has ended: a paused operator must drain for the run to end.
    pub(crate) fn input_ended(&self) {
        self.swaps.release_all();
    }

    /// A newly deployed plugin of `name` failed its probation in `subtask`:
    /// roll it back.
    pub(crate) fn unhealthy(
        &mut self,
        name: String,
        subtask: usize,
        digest: String,
        reason: String,
    ) {
        // Once per deployed version, through the control directory like any command.
        if self.deployed.get(&name) == Some(&digest) && !self.auto_rolled_back.contains(&digest) {
            self.auto_rolled_back.insert(digest.clone());
            tracing::warn!("operator `{name}` subtask {subtask}: {reason}; rolling back");
            let command = Command {
                id: format!("auto-rollback-{name}-{}-{}", &digest[..12], now_ms()),
                pipeline: self.pipeline.name.clone(),
                operator: name,
                action: Action::Rollback,
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

    /// Subtask `subtask` of `name` prepared its swap at barrier `id` (or
    /// failed to, with `error`).
    pub(crate) fn swapped(&mut self, name: String, subtask: usize, id: u64, error: Option<String>) {
        if let Some(f) = self
            .in_flight
            .iter_mut()
            .find(|f| f.command.operator == name && f.at == id)
        {
            f.swapped += 1;
            if let Some(e) = error {
                f.errors.push(format!("subtask {subtask}: {e}"));
            }
            // The subtasks hold the barrier until all have
            // prepared: they switch together or not at all.
            let parallelism = self
                .operators
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, p)| *p);
            if f.swapped >= parallelism {
                self.swaps.decide(&name, id, f.errors.is_empty());
            }
        }
    }

    /// Take new commands from the control sources; returns the barrier a
    /// new deploy was planned at (`next_id`, the next checkpoint not yet
    /// triggered).
    pub(crate) fn poll(&mut self, next_id: u64) -> Option<u64> {
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
                    let o = Outcome {
                        digest: command.sha256.clone(),
                        reason: Some(reason.to_string()),
                        ..Outcome::of(&command, Status::Rejected)
                    };
                    self.settle_command(si, token, &o);
                }
                Ok((plugin, digest)) => {
                    planned = Some(self.plan_deploy(command, (si, token), plugin, digest, next_id))
                }
            }
        }
        let mut later = VecDeque::new();
        while let Some((si, token, mut command)) = self.backlog.pop_front() {
            if self.in_flight.iter().any(|f| f.command.id == command.id)
                || self.preparer.has(&command.id)
            {
                continue;
            }
            // Idempotent: a command already settled is not applied again.
            if let Some(o) = self.control.read(&command.id).filter(|o| o.is_final()) {
                tracing::info!(
                    "control: command `{}` was already handled; ignoring the repeat",
                    command.id
                );
                self.settle_command(si, token, &o);
                continue;
            }
            // One swap per operator at a time, in order: the next waits for this one.
            let busy = |op: &str| {
                self.in_flight.iter().any(|f| f.command.operator == op)
                    || self.preparer.preparing(op)
                    || later
                        .iter()
                        .any(|(_, _, c): &(usize, u64, Command)| c.operator == op)
            };
            if busy(&command.operator) {
                later.push_back((si, token, command));
                continue;
            }
            let rejection = |command: &Command, reason: String| Outcome {
                digest: command.sha256.clone(),
                reason: Some(reason),
                ..Outcome::of(command, Status::Rejected)
            };
            match command.action {
                Action::Deploy => {}
                Action::Pause | Action::Resume
                    if self.pipeline.operator(&command.operator).is_none() =>
                {
                    let o = rejection(
                        &command,
                        format!(
                            "pipeline `{}` has no operator `{}`",
                            self.pipeline.name, command.operator
                        ),
                    );
                    self.settle_command(si, token, &o);
                    continue;
                }
                Action::Pause if self.swaps.held(&command.operator) => {
                    let o = rejection(
                        &command,
                        format!("operator `{}` is paused already", command.operator),
                    );
                    self.settle_command(si, token, &o);
                    continue;
                }
                Action::Pause => {
                    let at = next_id;
                    self.swaps.plan_pause(&command.operator, at);
                    let digest = self
                        .plugin_digests
                        .get(&command.operator)
                        .map(|(_, d)| d.clone())
                        .unwrap_or_default();
                    tracing::info!(
                        "control: command `{}`: operator `{}` pauses after checkpoint {at}",
                        command.id,
                        command.operator
                    );
                    let previous = (
                        self.plugin_digests
                            .get(&command.operator)
                            .cloned()
                            .unwrap_or_default(),
                        self.deployed.get(&command.operator).cloned(),
                    );
                    self.accept(InFlight {
                        command,
                        source: si,
                        token,
                        at,
                        digest,
                        previous,
                        swapped: 0,
                        errors: Vec::new(),
                    });
                    planned = Some(at);
                    continue;
                }
                Action::Resume => {
                    let o = if self.swaps.resume(&command.operator) {
                        Outcome::of(&command, Status::Applied)
                    } else {
                        rejection(
                            &command,
                            format!("operator `{}` is not paused", command.operator),
                        )
                    };
                    self.settle_command(si, token, &o);
                    continue;
                }
                Action::Rollback => match self.rollback_target(&command.operator) {
                    Some((digest, params)) => {
                        command.plugin = Some(self.control.plugin(&digest));
                        command.sha256 = Some(digest);
                        // The params that version ran with (the file's, if none were deployed).
                        command.params =
                            Some(match params.and_then(|p| serde_json::from_str(&p).ok()) {
                                Some(p) => p,
                                None => self
                                    .pipeline
                                    .operator(&command.operator)
                                    .map(|o| o.params.clone())
                                    .unwrap_or_default(),
                            });
                    }
                    None => {
                        let o = rejection(
                            &command,
                            format!(
                                "operator `{}` has no earlier version to roll back to",
                                command.operator
                            ),
                        );
                        self.settle_command(si, token, &o);
                        continue;
                    }
                },
            }
            // Fetched, checked and compiled by the worker, off this thread:
            // a slow URL or a big component must not hold up checkpoints.
            if !self.preparer.available() {
                let o = rejection(
                    &command,
                    "this run cannot prepare deploys (its deploy worker did not start)".into(),
                );
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

    /// Plan a prepared deploy at barrier `at` (the next checkpoint not yet
    /// triggered); returns it.
    fn plan_deploy(
        &mut self,
        command: Command,
        (si, token): (usize, u64),
        plugin: Arc<Plugin>,
        digest: String,
        at: u64,
    ) -> u64 {
        let name = command.operator.clone();
        let file_name = plugin
            .info()
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let previous = (
            self.plugin_digests.get(&name).cloned().unwrap_or_default(),
            self.deployed.get(&name).cloned(),
        );
        self.plugin_digests
            .insert(name.clone(), (file_name, digest.clone()));
        self.deployed.insert(name.clone(), digest.clone());
        let params = command.params.as_ref().map(|p| p.to_string());
        match &params {
            Some(p) => self.deployed_params.insert(name.clone(), p.clone()),
            None => self.deployed_params.remove(&name),
        };
        self.swaps.plan(&name, at, plugin, params);
        tracing::info!("control: command `{}` ({}): operator `{name}` switches to sha256:{} at checkpoint {at}", command.id, self.control_sources[si].describe(), &digest[..12.min(digest.len())]);
        self.accept(InFlight {
            command,
            source: si,
            token,
            at,
            digest,
            previous,
            swapped: 0,
            errors: Vec::new(),
        });
        at
    }

    /// A command takes effect at barrier `f.at`: say so (ledger and source)
    /// and follow it until it is settled.
    fn accept(&mut self, f: InFlight) {
        let o = Outcome {
            digest: Some(f.digest.clone()),
            checkpoint: Some(f.at),
            ..Outcome::of(&f.command, Status::Accepted)
        };
        self.control.write(&o);
        let _ = self.control_sources[f.source].report(
            &o.id,
            &serde_json::to_vec(&o).expect("an outcome serializes"),
        );
        self.in_flight.push(f);
    }

    /// Write a command's final outcome and tell its source.
    fn settle_command(&mut self, source: usize, token: u64, outcome: &Outcome) {
        if outcome.status == Status::Rejected {
            tracing::warn!(
                "control: command `{}` rejected: {}",
                outcome.id,
                outcome.reason.as_deref().unwrap_or("")
            );
        }
        self.control.write(outcome);
        let bytes = serde_json::to_vec(outcome).expect("an outcome serializes");
        if let Err(e) = self.control_sources[source].settle(token, &outcome.id, &bytes) {
            tracing::warn!("control: {}: {e}", self.control_sources[source].describe());
        }
    }

    /// The version a rollback of `operator` returns to: the one before the
    /// current one, among those not rolled back (none if it has no other).
    fn rollback_target(&self, operator: &str) -> Option<(String, Option<String>)> {
        let history = self.control.history();
        let active: Vec<&Version> = history
            .get(operator)
            .map(|v| v.iter().filter(|v| !v.rolled_back).collect())
            .unwrap_or_default();
        match active.len() {
            0 | 1 => None,
            n => Some((active[n - 2].digest.clone(), active[n - 2].params.clone())),
        }
    }

    /// Record in the history that `operator` runs `digest` from checkpoint `at`.
    fn record_version(&self, command: &Command, digest: &str, at: u64) {
        let mut history = self.control.history();
        let versions = history.entry(command.operator.clone()).or_default();
        if command.action == Action::Rollback {
            if let Some(last) = versions.iter_mut().rev().find(|v| !v.rolled_back) {
                last.rolled_back = true;
            }
        } else {
            versions.push(Version {
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
    /// at or after their barrier is complete (`completed`, none now: 0).
    pub(crate) fn settle(&mut self, completed: Option<&Completed>) {
        if self.in_flight.is_empty() {
            return;
        }
        let completed_id = completed.map_or(0, |c| c.id);
        // Where the sources stood at the swap's checkpoint (known when it is the one just completed).
        let after = |at: u64| -> BTreeMap<String, SourceAt> {
            completed
                .filter(|c| c.id == at)
                .map(|c| c.sources.clone())
                .unwrap_or_default()
        };
        let operators = self.operators.clone();
        let parallelism = |name: &str| {
            operators
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, p)| *p)
        };
        let mut i = 0;
        while i < self.in_flight.len() {
            let f = &self.in_flight[i];
            let all = f.swapped >= parallelism(&f.command.operator);
            let outcome = if all && !f.errors.is_empty() {
                Some(Outcome { digest: Some(f.digest.clone()), checkpoint: Some(f.at), reason: Some(format!("the new plugin failed to start or to migrate the state; the old one keeps running: {}", f.errors.join("; "))), ..Outcome::of(&f.command, Status::Rejected) })
            } else if all && completed_id >= f.at {
                Some(Outcome {
                    digest: Some(f.digest.clone()),
                    checkpoint: Some(f.at),
                    reason: f.command.reason.clone(),
                    after: after(f.at),
                    ..Outcome::of(&f.command, Status::Applied)
                })
            } else {
                None
            };
            match outcome {
                Some(o) => {
                    let f = self.in_flight.remove(i);
                    if o.status == Status::Rejected {
                        let (digests, deployed) = f.previous;
                        self.plugin_digests
                            .insert(f.command.operator.clone(), digests);
                        match deployed {
                            Some(d) => self.deployed.insert(f.command.operator.clone(), d),
                            None => self.deployed.remove(&f.command.operator),
                        };
                    }
                    tracing::info!(
                        "control: command `{}` {:?} at checkpoint {}",
                        o.id,
                        o.status,
                        f.at
                    );
                    if o.status == Status::Applied
                        && matches!(f.command.action, Action::Deploy | Action::Rollback)
                    {
                        self.record_version(&f.command, &f.digest, f.at);
                    }
                    self.swaps.done(&f.command.operator);
                    self.settle_command(f.source, f.token, &o);
                }
                None => i += 1,
            }
        }
    }
}
