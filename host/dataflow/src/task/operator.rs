//! One parallel subtask of an operator: the input loop, the guest calls,
//! routing, the error policy, watermarks and timers. Window operators add
//! the window logic of [`crate::window`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_config::{ErrorPolicy, OperatorSpec, DEAD_LETTER_OUTPUT};
use sluice_types::metrics::{Metrics, NodeCounters, WatermarkGauges};
use sluice_types::{Header, Message, Position, Record};
use sluice_world::{now_ms, wit, CallError, InstanceConfig, Plugin};
use tokio::sync::mpsc::Receiver;

use crate::align::{Aligner, Offer};
use crate::checkpoint::{Ack, GeneratorState};
use crate::event_time::{InputWatermarks, WatermarkGenerator, WatermarkUpdate, NO_WATERMARK};
use crate::router::Router;
use crate::timers::{Timer, Timers};
use crate::window::Windows;
use crate::DataflowError;

/// Rounds of timer firing per watermark: a handler that keeps registering
/// due timers cannot stall the subtask forever.
const MAX_TIMER_ROUNDS: usize = 1000;

/// The probation of a newly deployed plugin in one subtask.
pub(crate) struct Probation {
    digest: String,
    seen: u64,
    failed: u64,
}

/// A source as provenance names it: its name and, for Kafka, its topic.
#[derive(Clone, Debug)]
pub(crate) struct SourceLabel {
    pub(crate) name: String,
    pub(crate) topic: Option<String>,
}

/// One parallel subtask of an operator.
pub(crate) struct OperatorTask {
    pub(crate) spec: OperatorSpec,
    pub(crate) plugin: Arc<Plugin>,
    pub(crate) router: Router,
    pub(crate) counters: NodeCounters,
    pub(crate) gauges: WatermarkGauges,
    pub(crate) sources: Arc<Vec<SourceLabel>>,
    pub(crate) subtask: usize,
    pub(crate) batch_size: usize,
    /// The watermark over this subtask's inputs.
    pub(crate) inputs: InputWatermarks,
    /// The watermark this subtask has acted on (timers fired up to it) and
    /// stamps on its output, record by record.
    pub(crate) current: i64,
    /// The last watermark it sent in a `Watermark` message.
    pub(crate) announced: i64,
    /// Set when the operator generates its own watermarks.
    pub(crate) generator: Option<WatermarkGenerator>,
    /// Timers (keyed process operators with a timer handler, windows).
    pub(crate) timers: Option<Timers>,
    /// Window logic, for window operators.
    pub(crate) windows: Option<Windows>,
    /// Checkpoint barrier alignment over the inputs.
    pub(crate) aligner: Aligner,
    /// Hot swaps planned at barriers.
    pub(crate) swaps: Arc<crate::control::Swaps>,
    /// A newly deployed plugin's first records: how many, how many failed.
    pub(crate) probation: Option<Probation>,
    pub(crate) control: sluice_config::ControlSpec,
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
    fn plugin_label(&self) -> String {
        let info = self.plugin.info();
        let file = info.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{file} sha256:{}", &info.digest[..12])
    }

    pub(crate) fn run(
        mut self,
        config: InstanceConfig,
        mut state: Option<sluice_state::OperatorState>,
        metrics: Arc<Metrics>,
        mut rx: Receiver<Message>,
        expected_ends: usize,
    ) -> Result<(), DataflowError> {
        let node = self.spec.name.clone();
        let state_err = |source| DataflowError::State { node: node.clone(), source };
        if let Some(s) = &mut state {
            s.set_default_ttl(self.spec.state_ttl.map(|ms| Duration::from_millis(ms as u64)));
            if self.spec.window.is_some() || self.plugin.info().kind == Some(sluice_world::OperatorKind::KeyedProcess) {
                let mut timers = Timers::new(s).map_err(state_err)?;
                if self.restore.is_some() {
                    let groups = sluice_state::keygroup::range_of(self.subtask as u32, sluice_state::keygroup::MAX_PARALLELISM, self.spec.parallelism);
                    timers.load(s, groups).map_err(state_err)?;
                }
                self.timers = Some(timers);
            }
            if let Some(w) = &self.spec.window {
                self.windows = Some(Windows::new(w.clone(), s).map_err(state_err)?);
            }
        }
        let mut instance = self.plugin.instantiate(config, state, metrics).map_err(|source| DataflowError::Instantiate {
            operator: self.spec.name.clone(),
            plugin: self.plugin.info().path.display().to_string(),
            source,
        })?;
        if let Some(r) = self.restore.take() {
            self.inputs.restore(r.watermark);
            instance.set_watermark(self.inputs.current());
            self.current = self.inputs.current();
            self.announced = self.current;
            if let (Some(g), Some(state)) = (&mut self.generator, &r.generator) {
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
                    Some(at) => match handle.block_on(tokio::time::timeout_at(at.into(), rx.recv())) {
                        Ok(m) => m,
                        Err(_) => {
                            self.on_processing_time(&mut instance, now_ms())?;
                            continue;
                        }
                    },
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
                Some(Message::Batch { from, records, watermarks }) => {
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
                    if self.inputs.all_idle() && self.generator.is_none() {
                        self.router.broadcast(|from| Message::Idle { from })?;
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
                None => return Err(DataflowError::Disconnected { node: self.spec.name.clone(), peer: "an upstream node".into() }),
            }
        }
        // End of input flushes what the wall clock has not fired yet.
        if all_exhausted {
            self.on_processing_time(&mut instance, i64::MAX)?;
        }
        if let Some(state) = instance.state_mut() {
            state.flush().map_err(|source| DataflowError::State { node: self.spec.name.clone(), source })?;
        }
        if let Some(acks) = &self.acks {
            let _ = acks.send(Ack::OperatorDone {
                name: self.spec.name.clone(),
                subtask: self.subtask,
                watermark: self.inputs.current(),
                generator: self.generator.as_ref().map(WatermarkGenerator::state),
            });
        }
        self.router.finish(all_exhausted)
    }

    /// Barrier `id` is aligned: write this subtask's keyed state (timers and
    /// windows included) to RocksDB, acknowledge, and pass the barrier on.
    fn snapshot(&mut self, instance: &mut sluice_world::Instance, id: u64, alignment: Duration) -> Result<(), DataflowError> {
        let plan = self.swaps.at(&self.spec.name, id);
        // A hot swap planned at this barrier: what came before it was
        // processed by the old plugin, what follows goes to the new one. It
        // happens before the state is written, so that the checkpoint holds
        // the state the new plugin (which its manifest names) continues from.
        if let Some(crate::control::Plan::Swap(plugin, params)) = &plan {
            self.swap(instance, id, plugin.clone(), params.clone());
        }
        let started = Instant::now();
        if let Some(state) = instance.state_mut() {
            state.flush().map_err(|source| DataflowError::State { node: self.spec.name.clone(), source })?;
        }
        if let Some(acks) = &self.acks {
            let _ = acks.send(Ack::Operator {
                sync: started.elapsed(),
                id,
                name: self.spec.name.clone(),
                subtask: self.subtask,
                watermark: self.inputs.current(),
                generator: self.generator.as_ref().map(WatermarkGenerator::state),
                alignment,
            });
        }
        self.router.broadcast(|from| Message::Barrier { from, id })?;
        if let Some(crate::control::Plan::Pause) = plan {
            if let Some(acks) = &self.acks {
                let _ = acks.send(Ack::Swapped { name: self.spec.name.clone(), subtask: self.subtask, id, error: None });
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
    fn swap(&mut self, instance: &mut sluice_world::Instance, id: u64, plugin: Arc<sluice_world::Plugin>, params: Option<String>) {
        let started = Instant::now();
        let (pending, error) = match instance.begin_swap(plugin.clone(), params) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let prepared = started.elapsed();
        let ok = match &self.acks {
            Some(acks) => {
                let _ = acks.send(Ack::Swapped { name: self.spec.name.clone(), subtask: self.subtask, id, error });
                self.swaps.verdict(&self.spec.name, id)
            }
            None => error.is_none(),
        };
        let Some(pending) = pending else { return };
        let migrated = pending.migrated;
        instance.finish_swap(pending, ok);
        if !ok {
            tracing::info!(operator = %self.spec.name, subtask = self.subtask, "kept plugin sha256:{} at checkpoint {id}: the swap failed in another subtask", &self.plugin.info().digest[..12]);
            return;
        }
        // Timers the migration registered.
        self.apply_timer_ops(instance);
        self.plugin = plugin;
        self.probation = Some(Probation { digest: self.plugin.info().digest.clone(), seen: 0, failed: 0 });
        let migrated = migrated.map_or(String::new(), |n| format!(", {n} keys migrated in {prepared:?}"));
        tracing::info!(operator = %self.spec.name, subtask = self.subtask, "switched to plugin sha256:{} at checkpoint {id} in {:?}{migrated}", &self.plugin.info().digest[..12], started.elapsed());
    }

    /// End a deployed plugin's probation: passed after `probation_records`,
    /// or failed (reported, the coordinator rolls back) once its error rate
    /// is above `max_error_rate` over at least 20 records.
    fn judge_probation(&mut self) {
        let Some(p) = &self.probation else { return };
        let control = &self.control;
        let rate = p.failed as f64 / p.seen.max(1) as f64;
        if p.seen >= 20 && rate > control.max_error_rate {
            let reason = format!("{} of its first {} records failed ({:.0}%, above {:.0}%)", p.failed, p.seen, rate * 100.0, control.max_error_rate * 100.0);
            if let Some(acks) = &self.acks {
                let _ = acks.send(Ack::Unhealthy { name: self.spec.name.clone(), subtask: self.subtask, digest: p.digest.clone(), reason });
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
    fn after_batch(&mut self, instance: &mut sluice_world::Instance) -> Result<(), DataflowError> {
        self.judge_probation();
        if let Some(g) = &mut self.generator {
            match g.poll(Instant::now()) {
                Some(WatermarkUpdate::Advance(wm)) => {
                    self.router.broadcast(|from| Message::Watermark { from, at: wm })?;
                    self.gauges.set_output(wm, now_ms());
                }
                Some(WatermarkUpdate::Idle) => self.router.broadcast(|from| Message::Idle { from })?,
                None => {}
            }
        } else {
            self.announce()?;
        }
        if self.timers.as_ref().and_then(Timers::next_processing).is_some_and(|t| t <= now_ms()) {
            self.on_processing_time(instance, now_ms())?;
        }
        Ok(())
    }

    /// Act on the input watermark if it is ahead (after a watermark, idle
    /// or end message, or records dropped before a guest saw them), and
    /// pass it on.
    fn catch_up(&mut self, instance: &mut sluice_world::Instance) -> Result<(), DataflowError> {
        let wm = self.inputs.current();
        if wm > self.current {
            self.advance(instance, wm)?;
        }
        if self.generator.is_none() {
            self.announce()?;
        }
        Ok(())
    }

    /// The watermark advanced to `wm`: fire event-time timers and windows
    /// due (what they emit carries the watermark before `wm`), then stamp
    /// `wm` on what follows.
    fn advance(&mut self, instance: &mut sluice_world::Instance, wm: i64) -> Result<(), DataflowError> {
        self.gauges.input.set(wm);
        instance.set_watermark(wm);
        match &self.windows {
            Some(w) if w.is_event_time() => self.fire_windows(instance, wit::TimeDomain::EventTime, wm)?,
            Some(_) => {}
            None => self.fire_timers(instance, wit::TimeDomain::EventTime, wm)?,
        }
        self.current = self.current.max(wm);
        Ok(())
    }

    /// Send the watermark in force downstream if it moved since last sent
    /// (records already carried it; this reaches consumers no record went to).
    fn announce(&mut self) -> Result<(), DataflowError> {
        if self.generator.is_none() && self.current > self.announced {
            let wm = self.current;
            self.announced = wm;
            self.router.broadcast(|from| Message::Watermark { from, at: wm })?;
            self.gauges.set_output(wm, now_ms());
        }
        Ok(())
    }

    /// The watermark stamped on records this subtask emits now.
    pub(crate) fn output_watermark(&self) -> i64 {
        self.generator.as_ref().map_or(self.current, WatermarkGenerator::current)
    }

    /// The wall clock reached `now`: fire processing-time timers and windows.
    fn on_processing_time(&mut self, instance: &mut sluice_world::Instance, now: i64) -> Result<(), DataflowError> {
        if self.timers.is_none() {
            return Ok(());
        }
        match &self.windows {
            Some(w) if !w.is_event_time() => self.fire_windows(instance, wit::TimeDomain::ProcessingTime, now)?,
            Some(_) => {}
            None => self.fire_timers(instance, wit::TimeDomain::ProcessingTime, now)?,
        }
        self.router.flush()
    }

    /// Apply the timer changes of the last successful guest call.
    fn apply_timer_ops(&mut self, instance: &mut sluice_world::Instance) {
        let ops = instance.take_timer_ops();
        self.apply_ops(instance, ops);
    }

    fn apply_ops(&mut self, instance: &mut sluice_world::Instance, ops: Vec<sluice_world::TimerOp>) {
        let (Some(timers), Some(state)) = (&mut self.timers, instance.state_mut()) else { return };
        for op in ops {
            let timer = Timer { timestamp: op.timestamp, key_group: op.key_group, key: op.key.into(), namespace: Box::default() };
            if op.delete {
                timers.delete(state, op.domain, &timer);
            } else {
                timers.register(state, op.domain, timer);
            }
        }
    }

    /// Deliver the guest's timers of `domain` due at `upto`, in order, in
    /// batches; timers they register that are already due fire too.
    fn fire_timers(&mut self, instance: &mut sluice_world::Instance, domain: wit::TimeDomain, upto: i64) -> Result<(), DataflowError> {
        for _ in 0..MAX_TIMER_ROUNDS {
            let (Some(timers), Some(state)) = (&mut self.timers, instance.state_mut()) else { return Ok(()) };
            let due = timers.pop_due(state, domain, upto, self.batch_size);
            if due.is_empty() {
                return Ok(());
            }
            let fired: Vec<wit::FiredTimer> = due.into_iter().map(|t| wit::FiredTimer { key: t.key.into_vec(), timestamp: t.timestamp, domain }).collect();
            // What the error policy sees for a timer that fails.
            let originals: Vec<wit::Record> = fired
                .iter()
                .map(|t| {
                    let kind = if domain == wit::TimeDomain::EventTime { "event" } else { "processing" };
                    let value = serde_json::json!({ "timer": t.timestamp, "domain": kind });
                    wit::Record { key: Some(t.key.clone()), value: value.to_string().into_bytes(), event_time: Some(t.timestamp), headers: Vec::new() }
                })
                .collect();
            let positions = vec![None; fired.len()];
            match instance.on_timer(&fired) {
                Ok(result) => {
                    self.apply_timer_ops(instance);
                    self.route(result, &positions, &originals, None)?;
                }
                Err(e) => {
                    self.trapped(instance, &e)?;
                    for i in 0..fired.len() {
                        match instance.on_timer(&fired[i..i + 1]) {
                            Ok(result) => {
                                self.apply_timer_ops(instance);
                                self.route(result, &positions[i..i + 1], &originals[i..i + 1], None)?;
                            }
                            Err(e) => {
                                self.trapped(instance, &e)?;
                                self.on_error(originals[i].clone(), None, format!("on-timer: {e}"))?;
                            }
                        }
                    }
                }
            }
        }
        tracing::warn!(operator = %self.spec.name, "timers kept firing for {MAX_TIMER_ROUNDS} rounds at one watermark; the rest fire later");
        Ok(())
    }

    /// A batch from producer `from`, with the watermark before each record.
    /// It is cut into spans that one guest call can take with the same
    /// result as calls record by record: a span ends where the watermark
    /// reaches a timer or window due (see `span_end`), which fires there.
    fn process(&mut self, instance: &mut sluice_world::Instance, from: u32, records: Vec<Record>, stamps: Vec<i64>) -> Result<(), DataflowError> {
        self.counters.records_in.inc_by(records.len() as u64);
        if let Some(p) = &mut self.probation {
            p.seen += records.len() as u64;
        }
        let keyed = self.spec.key_by.is_some();
        let mut positions = Vec::with_capacity(records.len());
        let mut batch = Vec::with_capacity(records.len());
        let mut wms = Vec::with_capacity(records.len());
        let max = self.max_record_bytes();
        let stamps = stamps.into_iter().chain(std::iter::repeat(NO_WATERMARK));
        for (mut r, stamp) in records.into_iter().zip(stamps) {
            let wm = self.inputs.stamp(from, stamp);
            if keyed && r.key.is_none() {
                let msg = format!("the record has no key, but operator `{}` is keyed (key_by = \"key\"); the upstream operator must set one", self.spec.name);
                self.on_error(sluice_world::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            if r.size_bytes() > max {
                let msg = format!("the record is {} bytes, over the operator's limits.max_record_kb = {}", r.size_bytes(), self.spec.limits.max_record_kb);
                self.on_error(sluice_world::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            if r.event_time.is_none() && self.windows.as_ref().is_some_and(|w| w.is_event_time()) {
                let msg = format!("the record has no event time, but `{}` has an event-time window; set one in the source or the upstream operator", self.spec.name);
                self.on_error(sluice_world::to_wit(&mut r), r.position, msg)?;
                continue;
            }
            positions.push(r.position);
            batch.push(sluice_world::to_wit(&mut r));
            wms.push(wm);
        }
        let mut i = 0;
        // After a failed call, its records go one by one.
        let mut single_until = 0;
        while i < batch.len() {
            if wms[i] > self.current {
                self.advance(instance, wms[i])?;
            }
            let end = if i < single_until { i + 1 } else { self.span_end(&batch, &wms, i) };
            let done = if self.windows.is_some() {
                self.window_batch(instance, &mut batch[i..end], &positions[i..end], &wms[i..end])?
            } else {
                self.call_process(instance, &batch[i..end], &positions[i..end], &wms[i..end])?
            };
            match done {
                Some(n) => {
                    self.current = self.current.max(wms[i + n - 1]);
                    i += n;
                }
                None => single_until = end,
            }
        }
        if let Some(state) = instance.state_mut() {
            state.maintain().map_err(|source| DataflowError::State { node: self.spec.name.clone(), source })?;
        }
        self.catch_up(instance)?;
        self.router.flush()
    }

    /// The end of the span from `start`: before the first later record at
    /// which the watermark advances to a pending event-time timer, counting
    /// the window timers the span's own records would register, and right
    /// after a record that makes a window fire again (allowed lateness).
    fn span_end(&self, batch: &[wit::Record], wms: &[i64], start: usize) -> usize {
        let mut due = self.timers.as_ref().and_then(Timers::next_event).unwrap_or(i64::MAX);
        let windows = self.windows.as_ref().filter(|w| w.is_event_time());
        let mut scratch = Vec::new();
        for k in start..batch.len() {
            if k > start && wms[k] > wms[k - 1] && due <= wms[k] {
                return k;
            }
            if let (Some(w), Some(ts)) = (windows, batch[k].event_time) {
                match w.first_firing(ts, wms[k], &mut scratch) {
                    Some(at) if at <= wms[k] => return k + 1,
                    Some(at) => due = due.min(at),
                    None => {}
                }
            }
        }
        batch.len()
    }

    /// One `process` call over a span; how many records it consumed, or
    /// `None` if the call failed and its records must go one by one.
    /// Operators with timers keep the call's state writes journaled until
    /// its timers are checked: a timer a record registered that a later
    /// record's watermark reaches must fire between the two, so the call is
    /// undone and redone up to that record.
    fn call_process(&mut self, instance: &mut sluice_world::Instance, batch: &[wit::Record], positions: &[Option<Position>], wms: &[i64]) -> Result<Option<usize>, DataflowError> {
        let hold = self.timers.is_some() && batch.len() > 1;
        match instance.process_at(batch, wms, positions, hold) {
            Ok(result) => {
                let ops = instance.take_timer_ops();
                if hold {
                    if let Some(k) = first_reached(&ops, wms) {
                        instance.settle(false);
                        self.reset(instance)?;
                        return self.call_process(instance, &batch[..k], &positions[..k], &wms[..k]);
                    }
                    instance.settle(true);
                }
                self.apply_ops(instance, ops);
                self.route(result, positions, batch, Some(wms))?;
                Ok(Some(batch.len()))
            }
            Err(e) => {
                // The failed call's state writes were rolled back; isolate
                // the poison record on a fresh instance.
                self.trapped(instance, &e)?;
                if batch.len() > 1 {
                    return Ok(None);
                }
                self.on_error(batch[0].clone(), positions[0], e.to_string())?;
                Ok(Some(1))
            }
        }
    }

    /// A fresh instance after an undone call (its memory saw records the
    /// state no longer has).
    fn reset(&mut self, instance: &mut sluice_world::Instance) -> Result<(), DataflowError> {
        instance.reset().map_err(|source| DataflowError::Instantiate {
            operator: self.spec.name.clone(),
            plugin: self.plugin.info().path.display().to_string(),
            source,
        })
    }

    pub(crate) fn trapped(&mut self, instance: &mut sluice_world::Instance, e: &CallError) -> Result<(), DataflowError> {
        self.counters.traps.inc();
        if let CallError::Deadline { .. } = e {
            self.counters.timeouts.inc();
        }
        tracing::debug!(operator = %self.spec.name, subtask = self.subtask, "guest call failed: {e}");
        self.reset(instance)
    }

    /// Route the emits of a successful call over `batch`; each carries the
    /// watermark as of its input (`wms`), or the one in force now.
    pub(crate) fn route(&mut self, result: wit::BatchResult, positions: &[Option<Position>], batch: &[wit::Record], wms: Option<&[i64]>) -> Result<(), DataflowError> {
        let now_wm = self.output_watermark();
        let batch_wm = (self.generator.is_some() && crate::event_time::per_batch_baseline()).then_some(now_wm);
        let mut out = 0u64;
        let max = self.max_record_bytes();
        // One clock read per batch, not per record.
        let now = Instant::now();
        for emit in result.emits {
            // Every emit must name an input of this batch: its provenance
            // (and later its checkpoint position) comes from there.
            let Some(original) = batch.get(emit.input as usize) else {
                return Err(self.bad_index(emit.input, batch.len(), "an emit"));
            };
            let position = positions.get(emit.input as usize).copied().flatten();
            let mut record = sluice_world::from_wit(emit.record, position);
            let wm = match &mut self.generator {
                Some(g) => {
                    let before = g.observe(&mut record, now, 0);
                    batch_wm.unwrap_or(before)
                }
                None => wms.and_then(|w| w.get(emit.input as usize)).copied().unwrap_or(now_wm),
            };
            if record.size_bytes() > max {
                let msg = format!("emitted a record of {} bytes, over the operator's limits.max_record_kb = {}", record.size_bytes(), self.spec.limits.max_record_kb);
                self.on_error(original.clone(), position, msg)?;
                continue;
            }
            match &emit.output {
                wit::Output::Main => self.router.push(None, record, wm)?,
                wit::Output::Side(name) => self.router.push(Some(name), record, wm)?,
            }
            out += 1;
        }
        self.counters.records_out.inc_by(out);
        for err in result.errors {
            let i = err.input as usize;
            let Some(original) = batch.get(i) else {
                return Err(self.bad_index(err.input, batch.len(), &err.message));
            };
            self.on_error(original.clone(), positions.get(i).copied().flatten(), err.message)?;
        }
        Ok(())
    }

    fn max_record_bytes(&self) -> usize {
        (self.spec.limits.max_record_kb as usize) << 10
    }

    /// A plugin that names an input index outside the batch is broken.
    pub(crate) fn bad_index(&self, index: u32, len: usize, what: &str) -> DataflowError {
        DataflowError::RecordFailed {
            operator: self.spec.name.clone(),
            plugin: self.plugin_label(),
            position: "an unknown position".into(),
            message: format!("the plugin referred to input {index} of a batch of {len} ({what}); the plugin is broken"),
        }
    }

    fn describe(&self, position: Option<Position>) -> String {
        match position {
            Some(p) => {
                match self.sources.get(p.source as usize) {
                    Some(SourceLabel { name, topic: Some(topic) }) => format!("source `{name}` topic `{topic}` partition {} offset {}", p.split, p.offset),
                    Some(SourceLabel { name, topic: None }) => format!("source `{name}` split {} offset {}", p.split, p.offset),
                    None => format!("source #{} split {} offset {}", p.source, p.split, p.offset),
                }
            }
            None => "an unknown position".into(),
        }
    }

    /// Apply the operator's error policy to one record.
    pub(crate) fn on_error(&mut self, record: wit::Record, position: Option<Position>, message: String) -> Result<(), DataflowError> {
        self.counters.record_errors.inc();
        if let Some(p) = &mut self.probation {
            p.failed += 1;
        }
        match self.spec.on_error {
            ErrorPolicy::Fail => Err(DataflowError::RecordFailed {
                operator: self.spec.name.clone(),
                plugin: self.plugin_label(),
                position: self.describe(position),
                message,
            }),
            ErrorPolicy::Skip => {
                self.counters.skipped.inc();
                tracing::debug!(operator = %self.spec.name, "skipped record at {}: {message}", self.describe(position));
                Ok(())
            }
            ErrorPolicy::DeadLetter => {
                self.counters.dead_letters.inc();
                let dl = self.dead_letter(record, position, &message);
                let wm = self.output_watermark();
                self.router.push(Some(DEAD_LETTER_OUTPUT), dl, wm)
            }
        }
    }

    /// A dead-letter record: the original bytes plus provenance, as a JSON
    /// value and as `sluice.*` headers.
    fn dead_letter(&self, original: wit::Record, position: Option<Position>, error: &str) -> Record {
        use base64::Engine as _;
        let info = self.plugin.info();
        let label = position.and_then(|p| self.sources.get(p.source as usize));
        let source = label.map(|l| l.name.clone());
        let topic = label.and_then(|l| l.topic.clone());
        let mut value = serde_json::json!({
            "operator": self.spec.name,
            "subtask": self.subtask,
            "plugin": info.path.file_name().map(|f| f.to_string_lossy().into_owned()),
            "plugin_digest": format!("sha256:{}", info.digest),
            "error": error,
            "source": source,
            "topic": topic,
            "split": position.map(|p| p.split),
            "offset": position.map(|p| p.offset),
            "event_time": original.event_time,
        });
        let text = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => serde_json::json!({ "utf8": s }),
            Err(_) => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        };
        value["key"] = original.key.as_deref().map(text).unwrap_or(serde_json::Value::Null);
        value["value"] = text(&original.value);
        let mut headers = vec![
            Header { name: "sluice.operator".into(), value: self.spec.name.clone().into_bytes() },
            Header { name: "sluice.plugin-digest".into(), value: info.digest.clone().into_bytes() },
            Header { name: "sluice.error".into(), value: error.as_bytes().to_vec() },
        ];
        if let Some(p) = position {
            headers.push(Header { name: "sluice.source".into(), value: source.unwrap_or_default().into_bytes() });
            headers.push(Header { name: "sluice.split".into(), value: p.split.to_string().into_bytes() });
            headers.push(Header { name: "sluice.offset".into(), value: p.offset.to_string().into_bytes() });
            if let Some(topic) = topic {
                headers.push(Header { name: "sluice.topic".into(), value: topic.into_bytes() });
                headers.push(Header { name: "sluice.partition".into(), value: p.split.to_string().into_bytes() });
            }
        }
        Record {
            key: original.key,
            value: serde_json::to_vec(&value).expect("a JSON value always serializes"),
            event_time: original.event_time,
            headers,
            position,
        }
    }
}

/// The first input of a call at which the watermark reaches an event-time
/// timer the call registered for an earlier input: called record by record,
/// the timer would have fired there, before that input.
fn first_reached(ops: &[sluice_world::TimerOp], wms: &[i64]) -> Option<usize> {
    let advances = |k: usize| wms[k] > wms[k - 1];
    let mut first: Option<usize> = None;
    for op in ops.iter().filter(|o| !o.delete && o.domain == wit::TimeDomain::EventTime) {
        let after = op.input as usize + 1;
        if after >= wms.len() {
            continue;
        }
        // The watermark never goes back: the first input at or past the timer...
        let at = after + wms[after..].partition_point(|w| *w < op.timestamp);
        // ...fires it if the watermark advanced there, else the next advance does.
        let k = (at..wms.len()).find(|&k| k > 0 && advances(k));
        if let Some(k) = k {
            first = Some(first.map_or(k, |f| f.min(k)));
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(input: u32, timestamp: i64) -> sluice_world::TimerOp {
        sluice_world::TimerOp { domain: wit::TimeDomain::EventTime, timestamp, key_group: 0, key: b"k".to_vec(), delete: false, input }
    }

    #[test]
    fn a_timer_is_reached_where_the_watermark_advances_to_it() {
        let wms = [0, 10, 20, 20, 30, 40];
        assert_eq!(first_reached(&[timer(0, 15)], &wms), Some(2));
        assert_eq!(first_reached(&[timer(0, 20)], &wms), Some(2));
        assert_eq!(first_reached(&[timer(2, 20)], &wms), Some(4), "registered at 20, in the past: the next advance fires it");
        assert_eq!(first_reached(&[timer(0, 41)], &wms), None, "not reached in this call");
        assert_eq!(first_reached(&[timer(5, 0)], &wms), None, "registered by the last input");
        assert_eq!(first_reached(&[timer(3, 35), timer(0, 25)], &wms), Some(4));
        let mut deleted = timer(0, 15);
        deleted.delete = true;
        assert_eq!(first_reached(&[deleted], &wms), None);
    }
}
