//! Timers of one operator subtask: event-time and processing-time, per key,
//! with an optional namespace (the window a window operator's timer is for).
//!
//! The queue lives in memory (a sorted set per clock, so the next timer is
//! one lookup) and is mirrored into the subtask's keyed state under a
//! host-internal map state, so that timers are part of every RocksDB
//! checkpoint and follow their key group when an operator is rescaled.
//! Due timers of a keyed process function go to its `on-timer` handler here
//! (window timers fire windows instead: see the window module).

use std::collections::BTreeSet;

use sluice_runtime::wit::{self, TimeDomain};
use sluice_runtime::{Instance, TimerOp};
use sluice_state::{OperatorState, StateError, StateId, StateKind};

use super::collector::Collector;
use crate::error::DataflowError;

/// Rounds of timer firing per watermark: a handler that keeps registering
/// due timers cannot stall the subtask forever.
const MAX_TIMER_ROUNDS: usize = 1000;

/// Host-internal state holding the timers (names starting with NUL are
/// reserved for the host).
const TIMERS_STATE: &str = "\0timers";

/// One timer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    /// When it fires, ms. First, so the sets are in firing order.
    pub(crate) timestamp: i64,
    pub(crate) key_group: u16,
    pub(crate) key: Box<[u8]>,
    pub(crate) namespace: Box<[u8]>,
}

/// The timers of one operator subtask.
pub(crate) struct Timers {
    event: BTreeSet<Timer>,
    processing: BTreeSet<Timer>,
    state: StateId,
    scratch: Vec<u8>,
}

fn domain_byte(domain: TimeDomain) -> u8 {
    match domain {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

impl Timers {
    pub(crate) fn new(state: &mut OperatorState) -> Result<Self, StateError> {
        let id = state.declare(TIMERS_STATE, StateKind::Map)?;
        Ok(Timers {
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
            state: id,
            scratch: Vec::new(),
        })
    }

    fn set(&mut self, domain: TimeDomain) -> &mut BTreeSet<Timer> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// The state map key of a timer: clock, timestamp (order-preserving), namespace.
    fn map_key(&mut self, domain: TimeDomain, timer: &Timer) -> &[u8] {
        self.scratch.clear();
        self.scratch.push(domain_byte(domain));
        self.scratch
            .extend_from_slice(&((timer.timestamp as u64) ^ (1 << 63)).to_be_bytes());
        self.scratch.extend_from_slice(&timer.namespace);
        &self.scratch
    }

    /// Register a timer; registering an existing one is a no-op.
    pub(crate) fn register(&mut self, state: &mut OperatorState, domain: TimeDomain, timer: Timer) {
        if self.set(domain).contains(&timer) {
            return;
        }
        let id = self.state;
        let (kg, key) = (timer.key_group, timer.key.clone());
        let map_key = self.map_key(domain, &timer).to_vec();
        state.map_put(kg, id, &key, &map_key, &[]);
        self.set(domain).insert(timer);
    }

    /// Delete a timer, if it exists.
    pub(crate) fn delete(&mut self, state: &mut OperatorState, domain: TimeDomain, timer: &Timer) {
        if self.set(domain).remove(timer) {
            let id = self.state;
            let map_key = self.map_key(domain, timer).to_vec();
            state.map_remove(timer.key_group, id, &timer.key, &map_key);
        }
    }

    /// Remove and return up to `max` timers of `domain` due at `upto`, in
    /// timestamp order.
    pub(crate) fn pop_due(
        &mut self,
        state: &mut OperatorState,
        domain: TimeDomain,
        upto: i64,
        max: usize,
    ) -> Vec<Timer> {
        let mut due = Vec::new();
        while due.len() < max {
            let set = self.set(domain);
            match set.first() {
                Some(t) if t.timestamp <= upto => {
                    let t = set.pop_first().expect("first exists");
                    let id = self.state;
                    let map_key = self.map_key(domain, &t).to_vec();
                    state.map_remove(t.key_group, id, &t.key, &map_key);
                    due.push(t);
                }
                _ => break,
            }
        }
        due
    }

    /// Rebuild the in-memory queues from the state of the key groups this
    /// subtask owns (after a restore or a rescale).
    pub(crate) fn load(
        &mut self,
        state: &OperatorState,
        groups: std::ops::Range<u16>,
    ) -> Result<(), StateError> {
        let (event, processing) = (&mut self.event, &mut self.processing);
        state.scan_map(groups, self.state, |kg, key, map_key, _| {
            if map_key.len() < 9 {
                return;
            }
            let timestamp =
                (u64::from_be_bytes(map_key[1..9].try_into().expect("8 bytes")) ^ (1 << 63)) as i64;
            let timer = Timer {
                timestamp,
                key_group: kg,
                key: key.into(),
                namespace: map_key[9..].into(),
            };
            match map_key[0] {
                0 => event.insert(timer),
                _ => processing.insert(timer),
            };
        })
    }

    /// The earliest event-time timer.
    pub(crate) fn next_event(&self) -> Option<i64> {
        self.event.first().map(|t| t.timestamp)
    }

    /// The earliest processing-time timer.
    pub(crate) fn next_processing(&self) -> Option<i64> {
        self.processing.first().map(|t| t.timestamp)
    }

    /// Apply the timer changes of a successful guest call.
    pub(crate) fn apply(&mut self, instance: &mut Instance, ops: Vec<TimerOp>) {
        let Some(state) = instance.state_mut() else {
            return;
        };
        for op in ops {
            let timer = Timer {
                timestamp: op.timestamp,
                key_group: op.key_group,
                key: op.key.into(),
                namespace: Box::default(),
            };
            if op.delete {
                self.delete(state, op.domain, &timer);
            } else {
                self.register(state, op.domain, timer);
            }
        }
    }

    /// Deliver the guest's timers of `domain` due at `upto`, in order, in
    /// batches of `batch_size`; timers they register that are already due
    /// fire too.
    pub(crate) fn fire(
        &mut self,
        instance: &mut Instance,
        out: &mut Collector,
        domain: TimeDomain,
        upto: i64,
        batch_size: usize,
    ) -> Result<(), DataflowError> {
        for _ in 0..MAX_TIMER_ROUNDS {
            let Some(state) = instance.state_mut() else {
                return Ok(());
            };
            let due = self.pop_due(state, domain, upto, batch_size);
            if due.is_empty() {
                return Ok(());
            }
            let fired: Vec<wit::FiredTimer> = due
                .into_iter()
                .map(|t| wit::FiredTimer {
                    key: t.key.into_vec(),
                    timestamp: t.timestamp,
                    domain,
                })
                .collect();
            // What the error policy sees for a timer that fails.
            let originals: Vec<wit::Record> = fired
                .iter()
                .map(|t| {
                    let kind = if domain == TimeDomain::EventTime {
                        "event"
                    } else {
                        "processing"
                    };
                    let value = serde_json::json!({ "timer": t.timestamp, "domain": kind });
                    wit::Record {
                        key: Some(t.key.clone()),
                        value: value.to_string().into_bytes(),
                        event_time: Some(t.timestamp),
                        headers: Vec::new(),
                    }
                })
                .collect();
            let positions = vec![None; fired.len()];
            match instance.on_timer(&fired) {
                Ok(result) => {
                    let ops = instance.take_timer_ops();
                    self.apply(instance, ops);
                    out.route(result, &positions, &originals, None)?;
                }
                Err(e) => {
                    out.trapped(instance, &e)?;
                    for i in 0..fired.len() {
                        match instance.on_timer(&fired[i..i + 1]) {
                            Ok(result) => {
                                let ops = instance.take_timer_ops();
                                self.apply(instance, ops);
                                out.route(
                                    result,
                                    &positions[i..i + 1],
                                    &originals[i..i + 1],
                                    None,
                                )?;
                            }
                            Err(e) => {
                                out.trapped(instance, &e)?;
                                out.on_error(originals[i].clone(), None, format!("on-timer: {e}"))?;
                            }
                        }
                    }
                }
            }
        }
        tracing::warn!(operator = %out.operator(), "timers kept firing for {MAX_TIMER_ROUNDS} rounds at one watermark; the rest fire later");
        Ok(())
    }
}
