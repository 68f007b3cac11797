//! A source subtask: it polls batches from its connector, stamps each record
//! with the watermark before it, routes them, and injects the checkpoint
//! barriers the coordinator asks for, with its position.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_config::WatermarkSpec;
use sluice_runtime::now_ms;
use sluice_types::metrics::{NodeCounters, WatermarkGauges};
use sluice_types::{ConnectorError, Message, Record, Source};

use crate::checkpoint::{Ack, SourcePosition};
use crate::error::DataflowError;
use crate::event_time::{self, AlignmentGroup, WatermarkGenerator, WatermarkUpdate};
use crate::router::Router;
use crate::settings::StopHandle;

/// A source task and what it needs for watermarks and checkpoints.
pub(crate) struct SourceTask {
    pub(crate) name: String,
    /// This subtask, of `parallelism`: it reads the splits `s` with
    /// `s % parallelism == subtask`.
    pub(crate) subtask: usize,
    pub(crate) parallelism: usize,
    pub(crate) watermarks: Option<WatermarkSpec>,
    /// Its alignment group and its place in it (source index, subtask).
    pub(crate) alignment: Option<(Arc<AlignmentGroup>, (usize, usize))>,
    pub(crate) stop: StopHandle,
    pub(crate) batch: usize,
    /// How long to wait to fill a batch when input is slow.
    pub(crate) batch_timeout: Duration,
    /// The checkpoint the coordinator asks for.
    pub(crate) requested: Arc<AtomicU64>,
    pub(crate) acks: Option<std::sync::mpsc::Sender<Ack>>,
    /// The newest complete checkpoint.
    pub(crate) completed: tokio::sync::watch::Receiver<u64>,
    /// The id of the final checkpoint, once the pipeline has ended.
    pub(crate) final_id: tokio::sync::watch::Receiver<u64>,
    pub(crate) resume: Option<SourcePosition>,
    /// When the first source subtask began to read.
    pub(crate) first_read: Arc<OnceLock<Instant>>,
}

impl SourceTask {
    pub(crate) fn run(
        mut self,
        mut source: Box<dyn Source>,
        router: &mut Router,
        counters: &NodeCounters,
        gauges: &WatermarkGauges,
    ) -> Result<(), DataflowError> {
        slow_start_fault();
        let name = self.name.as_str();
        let err = |source| DataflowError::Connector {
            node: name.to_string(),
            source,
        };
        let mut generator = self.watermarks.as_ref().map(WatermarkGenerator::new);
        let mut position = SourcePosition::default();
        let mut exhausted = false;
        if let Some(resume) = &self.resume {
            position = resume.clone();
            if self.parallelism > 1 {
                // The subtasks' positions are merged into the source's: each
                // carries its own splits, and the count once.
                position
                    .splits
                    .retain(|split, _| *split as usize % self.parallelism == self.subtask);
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
                let own = state.iter().filter(|e| {
                    !emitted(e)
                        && (self.parallelism == 1
                            || e.1 as usize % self.parallelism == self.subtask)
                });
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
        let mut in_flight: VecDeque<(u64, BTreeMap<u32, u64>)> = Default::default();
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
            let batch_wm = generator
                .as_ref()
                .filter(|_| event_time::per_batch_baseline())
                .map(WatermarkGenerator::current);
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
                    Some(WatermarkUpdate::Idle) => {
                        router.broadcast(|from| Message::Idle { from })?
                    }
                    None => {}
                }
            }
            // A checkpoint was asked for: everything emitted so far is in it.
            let want = self.requested.load(std::sync::atomic::Ordering::SeqCst);
            if want > injected {
                injected = want;
                if let Some(acks) = &self.acks {
                    position.generator = generator.as_ref().map(WatermarkGenerator::state);
                    let _ = acks.send(Ack::Source {
                        id: want,
                        name: name.to_string(),
                        subtask: self.subtask,
                        position: position.clone(),
                    });
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
            let _ = acks.send(Ack::SourceDone {
                name: name.to_string(),
                subtask: self.subtask,
                position: position.clone(),
            });
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

impl SourceTask {
    /// Whether this source is more than `max_drift` ahead of the slowest
    /// source of its alignment group.
    fn must_wait(&self, generator: Option<&WatermarkGenerator>) -> bool {
        let (Some((group, who)), Some(g), Some(spec)) =
            (&self.alignment, generator, &self.watermarks)
        else {
            return false;
        };
        let drift = spec.max_drift.map_or(0, |d| d.0);
        let idle = spec.idle_timeout.map(|t| Duration::from_millis(t.0 as u64));
        group.must_wait(*who, g.current(), drift, idle)
    }

    /// One batch: up to `batch` records, waiting up to `batch_timeout` to
    /// fill it when input is slow. `Some((records, true))`: the input ended
    /// after these.
    fn fill(&self, source: &mut dyn Source) -> Result<Option<(Vec<Record>, bool)>, ConnectorError> {
        let Some(mut records) = source.poll_batch(self.batch)? else {
            return Ok(None);
        };
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
    static DELAY: OnceLock<Option<u64>> = OnceLock::new();
    if let Some(ms) = DELAY.get_or_init(|| {
        std::env::var("SLUICE_FAULT_SOURCE_START_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
    }) {
        std::thread::sleep(Duration::from_millis(*ms));
    }
}
