//! Keyed windows run by the host: assignment (tumbling, sliding, session),
//! accumulators in keyed state, firing on the watermark or the wall clock,
//! allowed lateness and the late side output. The guest only folds records
//! into accumulators (`aggregator.add`/`merge`) and turns them into results
//! (`aggregator.finish`), in batches.
//!
//! State layout, in the operator's keyed state (host-internal names):
//!
//! - `\0window`: map per key, window (start, end, order-preserving) →
//!   accumulator bytes;
//! - `\0sessions`: value per key, the key's open session windows (session
//!   windows only, so that a merge does not scan RocksDB);
//! - timers (see `super::timers`) whose namespace is the window, one to
//!   fire it at `end - 1` and, with allowed lateness, one to purge it at
//!   `end - 1 + lateness`.
//!
//! [`Windows::add`] is one pass over a batch that assigns, merges sessions
//! and judges lateness per record against that record's watermark: the order
//! those steps keep is what makes event time exact, so it stays in one piece.
//! The window range is in `range.rs`, where outputs go in `route.rs`.

use std::collections::HashMap;

use sluice_config::{TimeCharacteristic, WindowKind, WindowSpec};
use sluice_runtime::{now_ms, wit, Instance};
use sluice_state::keygroup::{key_group, MAX_PARALLELISM};
use sluice_state::{OperatorState, StateError, StateId, StateKind};
use sluice_types::Position;

use super::collector::Collector;
use super::timers::{Timer, Timers};
use crate::error::DataflowError;

mod range;
mod route;

use range::Window;
use route::{route_late, route_window_results};

const ACC_STATE: &str = "\0window";
const SESSIONS_STATE: &str = "\0sessions";
/// Timer namespace tags.
const FIRE: u8 = 0;
const PURGE: u8 = 1;

/// The window logic of one operator subtask.
pub(crate) struct Windows {
    spec: WindowSpec,
    /// Windows fired per `finish` call (the operator's batch size).
    batch_size: usize,
    acc: StateId,
    sessions: StateId,
    domain: wit::TimeDomain,
}

/// Records of one batch that go into one (key, window) accumulator.
struct Group {
    kg: u16,
    /// Index in the batch of a record with the group's key.
    key_of: usize,
    window: Window,
    inputs: Vec<u32>,
    /// Existing windows this one replaces (merged sessions), including itself if it existed.
    absorbed: Vec<Window>,
    /// Index into the merge call's groups, when it absorbed several.
    merged: Option<usize>,
}

impl Windows {
    pub(crate) fn new(
        spec: WindowSpec,
        batch_size: usize,
        state: &mut OperatorState,
    ) -> Result<Self, StateError> {
        let acc = state.declare(ACC_STATE, StateKind::Map)?;
        let sessions = state.declare(SESSIONS_STATE, StateKind::Value)?;
        let domain = if spec.time == TimeCharacteristic::Event {
            wit::TimeDomain::EventTime
        } else {
            wit::TimeDomain::ProcessingTime
        };
        Ok(Windows {
            spec,
            batch_size,
            acc,
            sessions,
            domain,
        })
    }

    pub(crate) fn is_event_time(&self) -> bool {
        self.domain == wit::TimeDomain::EventTime
    }

    /// The windows a timestamp belongs to (one for tumbling and session).
    fn assign(&self, ts: i64, out: &mut Vec<Window>) {
        out.clear();
        match self.spec.kind {
            WindowKind::Tumbling { size } => {
                let start = ts - ts.rem_euclid(size);
                out.push(Window {
                    start,
                    end: start.saturating_add(size),
                });
            }
            WindowKind::Sliding { size, slide } => {
                let mut start = ts - ts.rem_euclid(slide);
                while start > ts - size {
                    out.push(Window {
                        start,
                        end: start.saturating_add(size),
                    });
                    start -= slide;
                }
            }
            WindowKind::Session { gap } => out.push(Window {
                start: ts,
                end: ts.saturating_add(gap),
            }),
        }
    }

    /// For a record at `ts` arriving at watermark `wm`: the earliest time a
    /// window it goes into fires, or `None` if it is late for all of them.
    /// At or below `wm` means it fires right after the record (late within
    /// the allowed lateness). A session counts its record's own window,
    /// which fires no later than any session it merges into.
    pub(crate) fn first_firing(&self, ts: i64, wm: i64, scratch: &mut Vec<Window>) -> Option<i64> {
        self.assign(ts, scratch);
        scratch
            .iter()
            .filter(|w| self.is_session() || !self.is_late(**w, wm))
            .map(|w| w.last())
            .min()
    }

    /// Whether a window is past its allowed lateness at watermark `wm`.
    fn is_late(&self, w: Window, wm: i64) -> bool {
        self.is_event_time() && w.last().saturating_add(self.spec.allowed_lateness) <= wm
    }

    fn sessions_of(
        &self,
        state: &mut OperatorState,
        kg: u16,
        key: &[u8],
    ) -> Result<Vec<Window>, StateError> {
        Ok(state
            .get(kg, self.sessions, key)?
            .map(|b| b.chunks_exact(16).filter_map(Window::decode).collect())
            .unwrap_or_default())
    }

    fn set_sessions(&self, state: &mut OperatorState, kg: u16, key: &[u8], sessions: &[Window]) {
        if sessions.is_empty() {
            state.delete(kg, self.sessions, key);
        } else {
            let bytes: Vec<u8> = sessions.iter().flat_map(|w| w.encode()).collect();
            state.put(kg, self.sessions, key, &bytes);
        }
    }

    fn is_session(&self) -> bool {
        matches!(self.spec.kind, WindowKind::Session { .. })
    }

    /// Assign a span of keyed records to windows and fold them in, each
    /// judged against the watermark as of that record (`wms`). Returns how
    /// many records it consumed, or `None` if a guest call failed and the
    /// records must go one by one.
    pub(crate) fn add(
        &self,
        instance: &mut Instance,
        timers: &mut Timers,
        out: &mut Collector,
        batch: &mut [wit::Record],
        positions: &[Option<Position>],
        wms: &[i64],
    ) -> Result<Option<usize>, DataflowError> {
        let (time, late_output) = (self.spec.time, self.spec.late_output.as_str());
        let wm = wms.last().copied().unwrap_or(i64::MIN);
        let now = now_ms();
        // Records too late for every window they belong to, in input order.
        let mut late: Vec<usize> = Vec::new();

        // Timestamps, window assignment, lateness.
        let mut assigned: Vec<(usize, Window)> = Vec::with_capacity(batch.len());
        let mut scratch = Vec::new();
        for i in 0..batch.len() {
            let ts = match time {
                TimeCharacteristic::Event => match batch[i].event_time {
                    Some(t) => t,
                    None => {
                        // Refused before the span (`OperatorTask::process`).
                        continue;
                    }
                },
                TimeCharacteristic::Processing => now,
                TimeCharacteristic::Ingestion => {
                    batch[i].event_time = Some(now);
                    now
                }
            };
            self.assign(ts, &mut scratch);
            let before = assigned.len();
            // Sessions merge first and judge lateness on the merged window (as Flink).
            let session = self.is_session();
            assigned.extend(
                scratch
                    .iter()
                    .filter(|w| session || !self.is_late(**w, wms[i]))
                    .map(|w| (i, *w)),
            );
            if assigned.len() == before {
                late.push(i);
            }
        }

        // Group by (key, window); sessions merge with the key's open sessions.
        let mut groups: Vec<Group> = Vec::new();
        let mut merges: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut session_lists: Vec<(u16, usize, Vec<Window>)> = Vec::new();
        {
            let state = instance.state_mut().expect("window operators are keyed");
            let key = |i: usize| batch[i].key.as_deref().expect("keyed records have keys");
            if self.is_session() {
                let mut by_key: HashMap<&[u8], Vec<(usize, Window)>> = HashMap::new();
                let mut order: Vec<&[u8]> = Vec::new();
                for (i, w) in &assigned {
                    let k = key(*i);
                    by_key.entry(k).or_insert_with(|| {
                        order.push(k);
                        Vec::new()
                    });
                    by_key.get_mut(k).expect("just inserted").push((*i, *w));
                }
                for k in order {
                    let kg = key_group(k, MAX_PARALLELISM);
                    let existing = self
                        .sessions_of(state, kg, k)
                        .map_err(|e| out.state_error(e))?;
                    // (window, absorbed existing windows, inputs)
                    let mut open: Vec<(Window, Vec<Window>, Vec<u32>)> = existing
                        .iter()
                        .map(|w| (*w, vec![*w], Vec::new()))
                        .collect();
                    for (i, w) in &by_key[k] {
                        // Late only if it is late alone: one that extends or
                        // bridges an open session joins it.
                        if self.is_late(*w, wms[*i]) && !open.iter().any(|o| o.0.intersects(*w)) {
                            late.push(*i);
                            continue;
                        }
                        let mut merged = (*w, Vec::new(), vec![*i as u32]);
                        let mut j = 0;
                        while j < open.len() {
                            if open[j].0.intersects(merged.0) {
                                let (ow, oa, oi) = open.swap_remove(j);
                                merged.0 = merged.0.cover(ow);
                                merged.1.extend(oa);
                                merged.2.extend(oi);
                            } else {
                                j += 1;
                            }
                        }
                        open.push(merged);
                    }
                    let first_key_index = by_key[k][0].0;
                    let mut final_windows = Vec::with_capacity(open.len());
                    for (w, absorbed, mut inputs) in open {
                        final_windows.push(w);
                        if inputs.is_empty() {
                            continue;
                        }
                        inputs.sort_unstable();
                        let merged = if absorbed.len() > 1 {
                            let mut accs = Vec::with_capacity(absorbed.len());
                            for a in &absorbed {
                                if let Some(acc) = state
                                    .map_get(kg, self.acc, k, &a.encode())
                                    .map_err(|e| out.state_error(e))?
                                {
                                    accs.push(acc.to_vec());
                                }
                            }
                            merges.push(accs);
                            Some(merges.len() - 1)
                        } else {
                            None
                        };
                        groups.push(Group {
                            kg,
                            key_of: first_key_index,
                            window: w,
                            inputs,
                            absorbed,
                            merged,
                        });
                    }
                    final_windows.sort();
                    session_lists.push((kg, first_key_index, final_windows));
                }
            } else {
                let mut index: HashMap<(&[u8], Window), usize> = HashMap::new();
                for (i, w) in &assigned {
                    let k = key(*i);
                    let g = *index.entry((k, *w)).or_insert_with(|| {
                        groups.push(Group {
                            kg: key_group(k, MAX_PARALLELISM),
                            key_of: *i,
                            window: *w,
                            inputs: Vec::new(),
                            absorbed: Vec::new(),
                            merged: None,
                        });
                        groups.len() - 1
                    });
                    groups[g].inputs.push(*i as u32);
                }
            }
        }

        if groups.is_empty() {
            route_late(out, batch, positions, wms, late, late_output)?;
            return Ok(Some(batch.len()));
        }
        // Guest calls: merge bridged sessions, then add.
        let merged = match if merges.is_empty() {
            Ok(Vec::new())
        } else {
            instance.merge(&merges)
        } {
            Ok(m) if m.len() == merges.len() => m,
            Ok(m) => {
                return Err(out.broken(format!(
                    "merge returned {} accumulators for {} groups",
                    m.len(),
                    merges.len()
                )))
            }
            Err(e) => return out.failed_span(instance, e, batch, positions),
        };
        let mut accumulate = Vec::with_capacity(groups.len());
        {
            let state = instance.state_mut().expect("window operators are keyed");
            for g in &groups {
                let accumulator = match g.merged {
                    Some(m) => Some(merged[m].clone()),
                    None => {
                        let k = batch[g.key_of].key.as_deref().expect("keyed");
                        let w = g.absorbed.first().copied().unwrap_or(g.window);
                        state
                            .map_get(g.kg, self.acc, k, &w.encode())
                            .map_err(|e| out.state_error(e))?
                            .map(<[u8]>::to_vec)
                    }
                };
                accumulate.push(wit::Accumulate {
                    accumulator,
                    inputs: g.inputs.clone(),
                });
            }
        }
        let result = match instance.add(batch, &accumulate) {
            Ok(r) if r.accumulators.len() == groups.len() => r,
            Ok(r) => {
                return Err(out.broken(format!(
                    "add returned {} accumulators for {} groups",
                    r.accumulators.len(),
                    groups.len()
                )))
            }
            Err(e) => return out.failed_span(instance, e, batch, positions),
        };
        route_late(out, batch, positions, wms, late, late_output)?;

        // Store accumulators, move merged sessions, register timers.
        let mut refire: Vec<(u16, Vec<u8>, Window)> = Vec::new();
        {
            let lateness = self.spec.allowed_lateness;
            let (acc_id, domain, event_time) = (self.acc, self.domain, self.is_event_time());
            let state = instance.state_mut().expect("window operators are keyed");
            for ((g, acc), before) in groups.iter().zip(result.accumulators).zip(&accumulate) {
                let k = batch[g.key_of].key.as_deref().expect("keyed");
                for old in g.absorbed.iter().filter(|w| **w != g.window) {
                    state.map_remove(g.kg, acc_id, k, &old.encode());
                    for (tag, at) in [
                        (FIRE, old.last()),
                        (PURGE, old.last().saturating_add(lateness)),
                    ] {
                        let t = Timer {
                            timestamp: at,
                            key_group: g.kg,
                            key: k.into(),
                            namespace: old.namespace(tag),
                        };
                        timers.delete(state, domain, &t);
                    }
                }
                // A window that already had an accumulator already has its timers.
                let existed = if self.is_session() {
                    g.absorbed.contains(&g.window)
                } else {
                    before.accumulator.is_some()
                };
                state.map_put(g.kg, acc_id, k, &g.window.encode(), &acc);
                // Late but within the allowed lateness: the window fires right
                // after this span, not again on a timer (as Flink's trigger).
                let due_now = event_time && g.window.last() <= wm;
                if !existed {
                    if !due_now {
                        timers.register(
                            state,
                            domain,
                            Timer {
                                timestamp: g.window.last(),
                                key_group: g.kg,
                                key: k.into(),
                                namespace: g.window.namespace(FIRE),
                            },
                        );
                    }
                    if event_time && lateness > 0 {
                        let at = g.window.last().saturating_add(lateness);
                        timers.register(
                            state,
                            domain,
                            Timer {
                                timestamp: at,
                                key_group: g.kg,
                                key: k.into(),
                                namespace: g.window.namespace(PURGE),
                            },
                        );
                    }
                }
                if due_now {
                    refire.push((g.kg, k.to_vec(), g.window));
                }
            }
            for (kg, key_of, list) in &session_lists {
                let k = batch[*key_of].key.as_deref().expect("keyed");
                self.set_sessions(state, *kg, k, list);
            }
        }
        let mut failed: Vec<u32> = result.errors.iter().map(|e| e.input).collect();
        failed.sort_unstable();
        failed.dedup();
        for err in result.errors {
            let i = err.input as usize;
            let Some(original) = batch.get(i) else {
                return Err(out.bad_index(err.input, batch.len(), &err.message));
            };
            if failed.binary_search(&err.input).is_ok() {
                failed.retain(|f| *f != err.input);
                out.on_error(original.clone(), positions[i], err.message)?;
            }
        }
        if !refire.is_empty() {
            let fired = self.collect_fired(instance, out, refire, false)?;
            self.finish(instance, out, fired)?;
        }
        Ok(Some(batch.len()))
    }

    /// Fire the windows whose timers of `domain` are due at `upto`.
    pub(crate) fn fire(
        &self,
        instance: &mut Instance,
        timers: &mut Timers,
        out: &mut Collector,
        domain: wit::TimeDomain,
        upto: i64,
    ) -> Result<(), DataflowError> {
        loop {
            let due = {
                let Some(state) = instance.state_mut() else {
                    return Ok(());
                };
                timers.pop_due(state, domain, upto, self.batch_size)
            };
            if due.is_empty() {
                return Ok(());
            }
            let mut fire = Vec::new();
            let mut purge = Vec::new();
            for t in due {
                let Some(w) = Window::decode(&t.namespace[1..]) else {
                    continue;
                };
                match t.namespace[0] {
                    FIRE => fire.push((t.key_group, t.key.into_vec(), w)),
                    _ => purge.push((t.key_group, t.key.into_vec(), w)),
                }
            }
            let purge_on_fire = !self.is_event_time() || self.spec.allowed_lateness == 0;
            let fired = self.collect_fired(instance, out, fire, purge_on_fire)?;
            self.finish(instance, out, fired)?;
            for (kg, key, w) in purge {
                self.purge(instance, out, kg, &key, w)?;
            }
        }
    }

    /// Read the accumulators of windows about to fire (purging them if asked).
    fn collect_fired(
        &self,
        instance: &mut Instance,
        out: &Collector,
        windows: Vec<(u16, Vec<u8>, Window)>,
        purge: bool,
    ) -> Result<Vec<wit::FiredWindow>, DataflowError> {
        let mut fired = Vec::with_capacity(windows.len());
        for (kg, key, w) in windows {
            let state = instance.state_mut().expect("window operators are keyed");
            let acc = state
                .map_get(kg, self.acc, &key, &w.encode())
                .map_err(|e| out.state_error(e))?
                .map(<[u8]>::to_vec);
            if purge {
                self.purge(instance, out, kg, &key, w)?;
            }
            if let Some(accumulator) = acc {
                fired.push(wit::FiredWindow {
                    key,
                    window: w.to_wit(),
                    accumulator,
                });
            }
        }
        Ok(fired)
    }

    /// Drop a window's accumulator (and its entry in the session list).
    fn purge(
        &self,
        instance: &mut Instance,
        out: &Collector,
        kg: u16,
        key: &[u8],
        w: Window,
    ) -> Result<(), DataflowError> {
        let state = instance.state_mut().expect("window operators are keyed");
        state.map_remove(kg, self.acc, key, &w.encode());
        if self.is_session() {
            let mut list = self
                .sessions_of(state, kg, key)
                .map_err(|e| out.state_error(e))?;
            list.retain(|s| *s != w);
            self.set_sessions(state, kg, key, &list);
        }
        Ok(())
    }

    /// Call `finish` on fired windows (in batches) and route the results.
    fn finish(
        &self,
        instance: &mut Instance,
        out: &mut Collector,
        fired: Vec<wit::FiredWindow>,
    ) -> Result<(), DataflowError> {
        for chunk in fired.chunks(self.batch_size.max(1)) {
            let originals: Vec<wit::Record> = chunk
                .iter()
                .map(|f| {
                    let value = serde_json::json!({ "window": { "start": f.window.start, "end": f.window.end } });
                    wit::Record { key: Some(f.key.clone()), value: value.to_string().into_bytes(), event_time: Some(f.window.end.saturating_sub(1)), headers: Vec::new() }
                })
                .collect();
            let positions = vec![None; chunk.len()];
            match instance.finish(chunk) {
                Ok(result) => route_window_results(out, result, chunk, &positions, &originals)?,
                Err(e) => {
                    out.trapped(instance, &e)?;
                    for i in 0..chunk.len() {
                        match instance.finish(&chunk[i..i + 1]) {
                            Ok(result) => route_window_results(
                                out,
                                result,
                                &chunk[i..i + 1],
                                &positions[i..i + 1],
                                &originals[i..i + 1],
                            )?,
                            Err(e) => {
                                out.trapped(instance, &e)?;
                                out.on_error(originals[i].clone(), None, format!("finish: {e}"))?;
                            }
                        }
                    }
                }
            }
        }
        out.router.flush()
    }
}
