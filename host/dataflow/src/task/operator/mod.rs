//! One parallel subtask of an operator: the input loop, barrier alignment
//! and snapshots, hot swaps at barriers, watermarks and timers. Its results
//! go through its [`collector::Collector`]; window operators add the window
//! logic of [`window`], keyed process functions the timers of [`timers`].

mod collector;
mod process;
mod timers;
mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{ControlSpec, OperatorSpec};
use sluice_runtime::{now_ms, wit, Instance, InstanceConfig, OperatorKind, Plugin};
use sluice_types::metrics::Metrics;
use sluice_types::{Message, Record};
use tokio::sync::mpsc::Receiver;

use crate::checkpoint::{Ack, Aligner, GeneratorState, Offer};
use crate::control::{Plan, Swaps};
use crate::error::DataflowError;
use crate::event_time::{InputWatermarks, WatermarkGenerator, NO_WATERMARK};
pub(crate) use collector::{Collector, SourceLabel};
use process::{call_process, span_end};
use timers::Timers;
use window::Windows;

/// The probation of a newly deployed plugin in one subtask.
pub(crate) struct Probation {
    digest: String,
    /// Records it has been given.
    seen: u64,
    /// The collector's error count when it started: what it failed is the rest.
    errors_before: u64,
}

/// One parallel subtask of an operator.
pub(crate) struct OperatorTask {
    pub(crate) spec: OperatorSpec,
    /// Where its results go: the router, the error policy, the output watermark.
    pub(crate) out: Collector,
    pub(crate) subtask: usize,
    pub(crate) batch_size: usize,
    /// The watermark over this subtask's inputs.
    pub(crate) inputs: InputWatermarks,
    /// Timers (keyed process operators with a timer handler, windows).
    pub(crate) timers: Option<Timers>,
    /// Window logic, for window operators.
    pub(crate) windows: Option<Windows>,
    /// Checkpoint barrier alignment over the inputs.
    pub(crate) aligner: Aligner,
    /// Hot swaps planned at barriers.
    pub(crate) swaps: Arc<Swaps>,
    /// A newly deployed plugin's first records: how many, how many failed.
    pub(crate) probation: Option<Probation>,
    pub(crate) control: ControlSpec,
    /// Where checkpoint acknowledgements go (checkpoints on).
    pub(crate) acks: Option<std::sync::mpsc::Sender<Ack>>,
    /// What the restored checkpoint says about this operator.
    pub(crate) restore: Option<RestoredOperator>,
}

/// An operator's part of a restored checkpoint.
pub(crate) struct RestoredOperator {
    /// The lowest input watermark of its subtasks then.
    pub(crate) watermark: i64,
    /// This subtask's watermark generator progress.
    pub(crate) generator: Option<GeneratorState>,
}

impl OperatorTask {
    pub(crate) fn run(
        mut self,
        config: InstanceConfig,
        mut state: Option<sluice_state::OperatorState>,
        metrics: Arc<Metrics>,
        mut rx: Receiver<Message>,
        expected_ends: usize,
    ) -> Result<(), DataflowError> {
        let node = self.spec.name.clone();
        let state_err = |source| DataflowError::State {
            node: node.clone(),
            source,
        };
        let plugin = self.out.plugin().clone();
        if let Some(s) = &mut state {
            s.set_default_ttl(
                self.spec
                    .state_ttl
                    .map(|ms| Duration::from_millis(ms as u64)),
            );
            if self.spec.window.is_some() || plugin.info().kind == Some(OperatorKind::KeyedProcess)
            {
                let mut timers = Timers::new(s).map_err(state_err)?;
                if self.restore.is_some() {
                    let groups = sluice_state::keygroup::range_of(
                        self.subtask as u32,
                        sluice_state::keygroup::MAX_PARALLELISM,
                        self.spec.parallelism,
                    );
                    timers.load(s, groups).map_err(state_err)?;
                }
                self.timers = Some(timers);
            }
            if let Some(w) = &self.spec.window {
                self.windows =
                    Some(Windows::new(w.clone(), self.batch_size, s).map_err(state_err)?);
            }
        }
        let mut instance = plugin
            .instantiate(config, state, metrics)
            .map_err(|source| DataflowError::Instantiate {
                operator: self.spec.name.clone(),
                plugin: plugin.info().path.display().to_string(),
                source,
            })?;
        if let Some(r) = self.restore.take() {
            self.inputs.restore(r.watermark);
            instance.set_watermark(self.inputs.current());
            self.out.restore_watermark(self.inputs.current());
            if let (Some(g), Some(state)) = (&mut self.out.generator, &r.generator) {
                g.restore(state);
            }
        }
        let handle = tokio::runtime::Handle::current();
        let mut ends = 0;
        let mut all_exhausted = true;
        while ends < expected_ends || !self.aligner.idle() {
            let message = match self.aligner.replay() {
                Some(m) => Some(m),
                None => match self.next_wakeup() {
                    None => rx.blocking_recv(),
                    Some(at) => {
                        match handle.block_on(tokio::time::timeout_at(at.into(), rx.recv())) {
                            Ok(m) => m,
                            Err(_) => {
                                self.on_processing_time(&mut instance, now_ms())?;
                                continue;
                            }
                        }
                    }
                },
            };
            let message = match message.map(|m| self.aligner.offer(m)) {
                Some(Offer::Handle(m)) => Some(m),
                Some(Offer::Held) => continue,
                Some(Offer::Aligned(id, alignment)) => {
                    self.snapshot(&mut instance, id, alignment)?;
                    continue;
                }
                None => None,
            };
            match message {
                Some(Message::Batch {
                    from,
                    records,
                    watermarks,
                }) => {
                    self.process(&mut instance, from, records, watermarks)?;
                    self.after_batch(&mut instance)?;
                }
                Some(Message::Barrier { .. }) => {}
                Some(Message::Watermark { from, at }) => {
                    self.inputs.watermark(from, at);
                    self.catch_up(&mut instance)?;
                }
                Some(Message::Idle { from }) => {
                    self.inputs.idle(from);
                    self.catch_up(&mut instance)?;
                    if self.inputs.all_idle() && self.out.generator.is_none() {
                        self.out.router.broadcast(|from| Message::Idle { from })?;
                    }
                }
                Some(Message::End { from, exhausted }) => {
                    ends += 1;
                    all_exhausted &= exhausted;
                    // A stopped input keeps its watermark: nothing fires
                    // early, and a savepoint resumes where it stopped.
                    if exhausted {
                        self.inputs.end(from);
                        self.catch_up(&mut instance)?;
                    }
                    if let Some((id, alignment)) = self.aligner.ended(from) {
                        self.snapshot(&mut instance, id, alignment)?;
                    }
                }
                None => {
                    return Err(DataflowError::Disconnected {
                        node: self.spec.name.clone(),
                        peer: "an upstream node".into(),
                    })
                }
            }
        }
        // End of input flushes what the wall clock has not fired yet.
        if all_exhausted {
            self.on_processing_time(&mut instance, i64::MAX)?;
        }
        if let Some(state) = instance.state_mut() {
            state
                .flush()
                .map_err(|source| self.out.state_error(source))?;
        }
        if let Some(acks) = &self.acks {
            let _ = acks.send(Ack::OperatorDone {
                name: self.spec.name.clone(),
                subtask: self.subtask,
                watermark: self.inputs.current(),
                generator: self.out.generator.as_ref().map(WatermarkGenerator::state),
            });
        }
        self.out.router.finish(all_exhausted)
    }

    /// Barrier `id` is aligned: write this subtask's keyed state (timers and
    /// windows included) to RocksDB, acknowledge, and pass the barrier on.
    fn snapshot(
        &mut self,
        instance: &mut Instance,
        id: u64,
        alignment: Duration,
    ) -> Result<(), DataflowError> {
        let plan = self.swaps.at(&self.spec.name, id);
        // A hot swap planned at this barrier: what came before it was
        // processed by the old plugin, what follows goes to the new one. It
        // happens before the state is written, so that the checkpoint holds
        // the state the new plugin (which its manifest names) continues from.
        if let Some(Plan::Swap(plugin, params)) = &plan {
            self.swap(instance, id, plugin.clone(), params.clone());
        }
        let started = Instant::now();
        if let Some(state) = instance.state_mut() {
            state
                .flush()
                .map_err(|source| self.out.state_error(source))?;
        }
        if let Some(acks) = &self.acks {
            let _ = acks.send(Ack::Operator {
                sync: started.elapsed(),
                id,
                name: self.spec.name.clone(),
                subtask: self.subtask,
                watermark: self.inputs.current(),
                generator: self.out.generator.as_ref().map(WatermarkGenerator::state),
                alignment,
            });
        }
        self.out
            .router
            .broadcast(|from| Message::Barrier { from, id })?;
        if let Some(Plan::Pause) = plan {
            if let Some(acks) = &self.acks {
                let _ = acks.send(Ack::Swapped {
                    name: self.spec.name.clone(),
                    subtask: self.subtask,
                    id,
                    error: None,
                });
            }
            // Hold the input until resumed: upstream backpressures.
            tracing::info!(operator = %self.spec.name, subtask = self.subtask, "paused after checkpoint {id}");
            let started = Instant::now();
            while self.swaps.held(&self.spec.name) {
                std::thread::sleep(Duration::from_millis(10));
            }
            tracing::info!(operator = %self.spec.name, subtask = self.subtask, "resumed after {:?}", started.elapsed());
        }
        Ok(())
    }

    /// Switch this subtask to `plugin` at barrier `id`, together with the
    /// operator's other subtasks: each prepares the new instance (and its
    /// state migration), reports, and waits for the verdict, so that either
    /// all switch or all keep the old plugin with the state as it was.
    fn swap(
        &mut self,
        instance: &mut Instance,
        id: u64,
        plugin: Arc<Plugin>,
        params: Option<String>,
    ) {
        let started = Instant::now();
        let (pending, error) = match instance.begin_swap(plugin.clone(), params) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let prepared = started.elapsed();
        let ok = match &self.acks {
            Some(acks) => {
                let _ = acks.send(Ack::Swapped {
                    name: self.spec.name.clone(),
                    subtask: self.subtask,
                    id,
                    error,
                });
                self.swaps.verdict(&self.spec.name, id)
            }
            None => error.is_none(),
        };
        let Some(pending) = pending else { return };
        let migrated = pending.migrated;
        instance.finish_swap(pending, ok);
        if !ok {
            tracing::info!(operator = %self.spec.name, subtask = self.subtask, "kept plugin sha256:{} at checkpoint {id}: the swap failed in another subtask", &self.out.plugin().info().digest[..12]);
            return;
        }
        // Timers the migration registered.
        self.apply_timer_ops(instance);
        self.out.set_plugin(plugin);
        self.probation = Some(Probation {
            digest: self.out.plugin().info().digest.clone(),
            seen: 0,
            errors_before: self.out.errors,
        });
        let migrated = migrated.map_or(String::new(), |n| {
            format!(", {n} keys migrated in {prepared:?}")
        });
        tracing::info!(operator = %self.spec.name, subtask = self.subtask, "switched to plugin sha256:{} at checkpoint {id} in {:?}{migrated}", &self.out.plugin().info().digest[..12], started.elapsed());
    }

    /// End a deployed plugin's probation: passed after `probation_records`,
    /// or failed (reported, the coordinator rolls back) once its error rate
    /// is above `max_error_rate` over at least 20 records.
    fn judge_probation(&mut self) {
        let Some(p) = &self.probation else { return };
        let control = &self.control;
        let failed = self.out.errors - p.errors_before;
        let rate = failed as f64 / p.seen.max(1) as f64;
        if p.seen >= 20 && rate > control.max_error_rate {
            let reason = format!(
                "{failed} of its first {} records failed ({:.0}%, above {:.0}%)",
                p.seen,
                rate * 100.0,
                control.max_error_rate * 100.0
            );
            if let Some(acks) = &self.acks {
                let _ = acks.send(Ack::Unhealthy {
                    name: self.spec.name.clone(),
                    subtask: self.subtask,
                    digest: p.digest.clone(),
                    reason,
                });
            }
            self.probation = None;
        } else if p.seen >= control.probation_records {
            self.probation = None;
        }
    }

    /// When the wall clock next needs this subtask (a processing-time timer).
    fn next_wakeup(&self) -> Option<Instant> {
        let next = self.timers.as_ref()?.next_processing()?;
        let wait = next.saturating_sub(now_ms()).clamp(0, 3_600_000) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }

    /// After a batch: generated watermarks, and processing-time timers due.
    fn after_batch(&mut self, instance: &mut Instance) -> Result<(), DataflowError> {
        self.judge_probation();
        self.out.after_batch()?;
        if self
            .timers
            .as_ref()
            .and_then(Timers::next_processing)
            .is_some_and(|t| t <= now_ms())
        {
            self.on_processing_time(instance, now_ms())?;
        }
        Ok(())
    }

    /// Act on the input watermark if it is ahead (after a watermark, idle
    /// or end message, or records dropped before a guest saw them), and
    /// pass it on.
    fn catch_up(&mut self, instance: &mut Instance) -> Result<(), DataflowError> {
        let wm = self.inputs.current();
        if wm > self.out.current {
            self.advance(instance, wm)?;
        }
        if self.out.generator.is_none() {
            self.out.announce()?;
        }
        Ok(())
    }

    /// The watermark advanced to `wm`: fire event-time timers and windows
    /// due (what they emit carries the watermark before `wm`), then stamp
    /// `wm` on what follows.
    fn advance(&mut self, instance: &mut Instance, wm: i64) -> Result<(), DataflowError> {
        self.out.gauges.input.set(wm);
        instance.set_watermark(wm);
        self.fire(instance, wit::TimeDomain::EventTime, wm)?;
        self.out.current = self.out.current.max(wm);
        Ok(())
    }

    /// The wall clock reached `now`: fire processing-time timers and windows.
    fn on_processing_time(
        &mut self,
        instance: &mut Instance,
        now: i64,
    ) -> Result<(), DataflowError> {
        if self.timers.is_none() {
            return Ok(());
        }
        self.fire(instance, wit::TimeDomain::ProcessingTime, now)?;
        self.out.router.flush()
    }

    /// Fire what is due in `domain` at `upto`: the windows of a window
    /// operator in its time domain, else the guest's timers.
    fn fire(
        &mut self,
        instance: &mut Instance,
        domain: wit::TimeDomain,
        upto: i64,
    ) -> Result<(), DataflowError> {
        let Some(timers) = &mut self.timers else {
            return Ok(());
        };
        match &self.windows {
            Some(w) if w.is_event_time() == (domain == wit::TimeDomain::EventTime) => {
                w.fire(instance, timers, &mut self.out, domain, upto)
            }
            Some(_) => Ok(()),
            None => timers.fire(instance, &mut self.out, domain, upto, self.batch_size),
        }
    }

    /// Apply the timer changes of the last successful guest call.
    fn apply_timer_ops(&mut self, instance: &mut Instance) {
        let ops = instance.take_timer_ops();
        if let Some(timers) = &mut self.timers {
            timers.apply(instance, ops);
        }
    }

    /// A batch from producer `from`, with the watermark before each record.
    /// It is cut into spans that one guest call can take with the same
    /// result as calls record by record: a span ends where the watermark
    /// reaches a timer or window due (see `span_end`), which fires there.
    fn process(
        &mut self,
        instance: &mut Instance,
        from: u32,
        records: Vec<Record>,
        stamps: Vec<i64>,
    ) -> Result<(), DataflowError> {
        self.out.counters.records_in.inc_by(records.len() as u64);
        if let Some(p) = &mut self.probation {
            p.seen += records.len() as u64;
        }
        let keyed = self.spec.key_by.is_some();
        let mut positions = Vec::with_capacity(records.len());
        let mut batch = Vec::with_capacity(records.len());
        let mut wms = Vec::with_capacity(records.len());
        let max = self.out.max_record_bytes();
        let stamps = stamps.into_iter().chain(std::iter::repeat(NO_WATERMARK));
        for (mut r, stamp) in records.into_iter().zip(stamps) {
            let wm = self.inputs.stamp(from, stamp);
            if keyed && r.key.is_none() {
                let msg = format!("the record has no key, but operator `{}` is keyed (key_by = \"key\"); the upstream operator must set one", self.spec.name);
                self.out
                    .on_error(sluice_runtime::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            if r.size_bytes() > max {
                let msg = format!(
                    "the record is {} bytes, over the operator's limits.max_record_kb = {}",
                    r.size_bytes(),
                    self.spec.limits.max_record_kb
                );
                self.out
                    .on_error(sluice_runtime::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            if r.event_time.is_none() && self.windows.as_ref().is_some_and(|w| w.is_event_time()) {
                let msg = format!("the record has no event time, but `{}` has an event-time window; set one in the source or the upstream operator", self.spec.name);
                self.out
                    .on_error(sluice_runtime::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            positions.push(r.position);
            batch.push(sluice_runtime::to_wit(&mut r));
            wms.push(wm);
        }
        let mut i = 0;
        // After a failed call, its records go one by one.
        let mut single_until = 0;
        while i < batch.len() {
            if wms[i] > self.out.current {
                self.advance(instance, wms[i])?;
            }
            let end = if i < single_until {
                i + 1
            } else {
                span_end(self.timers.as_ref(), self.windows.as_ref(), &batch, &wms, i)
            };
            let done = match &self.windows {
                Some(w) => {
                    let timers = self.timers.as_mut().expect("window operators have timers");
                    w.add(
                        instance,
                        timers,
                        &mut self.out,
                        &mut batch[i..end],
                        &positions[i..end],
                        &wms[i..end],
                    )?
                }
                None => call_process(
                    instance,
                    &mut self.timers,
                    &mut self.out,
                    &batch[i..end],
                    &positions[i..end],
                    &wms[i..end],
                )?,
            };
            match done {
                Some(n) => {
                    self.out.current = self.out.current.max(wms[i + n - 1]);
                    i += n;
                }
                None => single_until = end,
            }
        }
        if let Some(state) = instance.state_mut() {
            state
                .maintain()
                .map_err(|source| self.out.state_error(source))?;
        }
        self.catch_up(instance)?;
        self.out.router.flush()
    }
}
