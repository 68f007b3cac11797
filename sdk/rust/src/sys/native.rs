//! Host imports on native targets: an in-memory stand-in for the Sluice host.
//!
//! State is a map per (state name, record key), exactly as the host scopes it;
//! entries written through a state with a TTL carry their expiry, measured on
//! the stub's processing-time clock. Timers are a set per domain of
//! (timestamp, key). Counters and log lines are recorded so tests can read
//! them. The stub a call uses is the one installed on the current thread:
//! [`crate::testing::Harness`] installs its own for the duration of each call,
//! and code run outside a harness gets a per-thread default.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Slot, StateId};
use crate::log::Level;
use crate::timers::TimeDomain;

/// One stored state value and when it expires (processing time, ms), if it does.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) bytes: Vec<u8>,
    pub(crate) expires_at: Option<i64>,
}

impl Entry {
    /// Whether the entry is visible at processing time `now`.
    pub(crate) fn live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// Map states: (state name, record key) -> map key -> entry.
type Maps = HashMap<(String, Vec<u8>), BTreeMap<Vec<u8>, Entry>>;

/// The state of one stand-in host.
#[derive(Debug)]
pub(crate) struct StubHost {
    /// Keys of the records (or fired timers) of the call in progress.
    pub(crate) batch_keys: Vec<Option<Vec<u8>>>,
    /// Index of the current record, once `set-current` was called.
    pub(crate) current: Option<u32>,
    pub(crate) values: HashMap<(String, Vec<u8>), Entry>,
    pub(crate) maps: Maps,
    pub(crate) counters: HashMap<String, u64>,
    pub(crate) logs: Vec<(Level, String)>,
    /// How many times `set-current` was called (the harness checks one per record).
    pub(crate) set_current_calls: u64,
    /// Whether the operator may use timers (it has an `on_timer` handler).
    pub(crate) timers_allowed: bool,
    /// Registered event-time timers: (timestamp, key).
    pub(crate) event_timers: BTreeSet<(i64, Vec<u8>)>,
    /// Registered processing-time timers: (timestamp, key).
    pub(crate) processing_timers: BTreeSet<(i64, Vec<u8>)>,
    /// The event-time watermark (`i64::MIN` before the first).
    pub(crate) watermark: i64,
    /// Where each record of the call in progress came from (tests set it).
    pub(crate) positions: Vec<Option<crate::context::Position>>,
    /// The processing-time clock, ms (also the TTL clock).
    pub(crate) processing_time: i64,
}

impl Default for StubHost {
    fn default() -> Self {
        StubHost {
            batch_keys: Vec::new(),
            current: None,
            values: HashMap::new(),
            maps: HashMap::new(),
            counters: HashMap::new(),
            logs: Vec::new(),
            set_current_calls: 0,
            timers_allowed: false,
            event_timers: BTreeSet::new(),
            processing_timers: BTreeSet::new(),
            watermark: i64::MIN,
            positions: Vec::new(),
            processing_time: 0,
        }
    }
}

thread_local! {
    static HOST: RefCell<StubHost> = RefCell::new(StubHost::default());
}

/// Swap `host` with the current thread's stub host.
pub(crate) fn swap_host(host: &mut StubHost) {
    HOST.with_borrow_mut(|h| std::mem::swap(h, host));
}

fn with_host<R>(f: impl FnOnce(&mut StubHost) -> R) -> R {
    HOST.with_borrow_mut(f)
}

impl StubHost {
    /// The key keyed state (and timers) are scoped to right now; panics (the
    /// host traps) if there is no current record or it has no key.
    fn state_key(&self, what: &str, name: &str) -> Vec<u8> {
        let Some(index) = self.current else {
            panic!("{what} `{name}` used outside of record processing (the Sluice host traps): keyed state is only available while a record is processed")
        };
        match self.batch_keys.get(index as usize) {
            Some(Some(key)) => key.clone(),
            Some(None) => panic!(
                "{what} `{name}` used for record {index}, which has no key (the Sluice host traps): keyed state needs a keyed operator (`key_by` in the pipeline); in tests give the records a key"
            ),
            None => panic!("set-current({index}) is outside the batch of {} records", self.batch_keys.len()),
        }
    }

    fn expiry(&self, ttl_ms: Option<u64>) -> Option<i64> {
        ttl_ms.map(|ttl| {
            self.processing_time
                .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
        })
    }

    fn timer_set(&mut self, domain: TimeDomain) -> &mut BTreeSet<(i64, Vec<u8>)> {
        match domain {
            TimeDomain::EventTime => &mut self.event_timers,
            TimeDomain::ProcessingTime => &mut self.processing_timers,
        }
    }
}

pub(crate) fn set_current(index: u32) {
    with_host(|h| {
        h.current = Some(index);
        h.set_current_calls += 1;
    })
}

pub(crate) fn current_key() -> Option<Vec<u8>> {
    with_host(|h| {
        h.current
            .and_then(|i| h.batch_keys.get(i as usize).cloned().flatten())
    })
}

pub(crate) fn record_watermark() -> i64 {
    with_host(|h| h.watermark)
}

pub(crate) fn record_position() -> Option<crate::context::Position> {
    with_host(|h| {
        h.current
            .and_then(|i| h.positions.get(i as usize).cloned().flatten())
    })
}

pub(crate) fn log(level: Level, message: &str) {
    with_host(|h| h.logs.push((level, message.to_owned())))
}

pub(crate) fn value_get(id: &StateId) -> Option<Vec<u8>> {
    with_host(|h| {
        let key = h.state_key("value state", id.name);
        let now = h.processing_time;
        h.values
            .get(&(id.name.to_owned(), key))
            .filter(|e| e.live(now))
            .map(|e| e.bytes.clone())
    })
}

pub(crate) fn value_set(id: &StateId, value: &[u8]) {
    with_host(|h| {
        let key = h.state_key("value state", id.name);
        let entry = Entry {
            bytes: value.to_vec(),
            expires_at: h.expiry(id.ttl_ms()),
        };
        h.values.insert((id.name.to_owned(), key), entry);
    })
}

pub(crate) fn value_clear(id: &StateId) {
    with_host(|h| {
        let key = h.state_key("value state", id.name);
        h.values.remove(&(id.name.to_owned(), key));
    })
}

pub(crate) fn map_get(id: &StateId, map_key: &[u8]) -> Option<Vec<u8>> {
    with_host(|h| {
        let key = h.state_key("map state", id.name);
        let now = h.processing_time;
        h.maps
            .get(&(id.name.to_owned(), key))
            .and_then(|m| m.get(map_key))
            .filter(|e| e.live(now))
            .map(|e| e.bytes.clone())
    })
}

pub(crate) fn map_set(id: &StateId, map_key: &[u8], value: &[u8]) {
    with_host(|h| {
        let key = h.state_key("map state", id.name);
        let entry = Entry {
            bytes: value.to_vec(),
            expires_at: h.expiry(id.ttl_ms()),
        };
        h.maps
            .entry((id.name.to_owned(), key))
            .or_default()
            .insert(map_key.to_vec(), entry);
    })
}

pub(crate) fn map_remove(id: &StateId, map_key: &[u8]) {
    with_host(|h| {
        let key = h.state_key("map state", id.name);
        if let Some(m) = h.maps.get_mut(&(id.name.to_owned(), key)) {
            m.remove(map_key);
        }
    })
}

pub(crate) fn map_entries(id: &StateId) -> Vec<(Vec<u8>, Vec<u8>)> {
    with_host(|h| {
        let key = h.state_key("map state", id.name);
        let now = h.processing_time;
        h.maps
            .get(&(id.name.to_owned(), key))
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| e.live(now))
                    .map(|(k, e)| (k.clone(), e.bytes.clone()))
                    .collect()
            })
            .unwrap_or_default()
    })
}

pub(crate) fn map_clear(id: &StateId) {
    with_host(|h| {
        let key = h.state_key("map state", id.name);
        h.maps.remove(&(id.name.to_owned(), key));
    })
}

pub(crate) fn counter_add(name: &'static str, _: &Slot, delta: u64) {
    with_host(|h| *h.counters.entry(name.to_owned()).or_default() += delta)
}

pub(crate) fn allow_timers(allowed: bool) {
    with_host(|h| h.timers_allowed = allowed)
}

pub(crate) fn timers_allowed() -> bool {
    with_host(|h| h.timers_allowed)
}

pub(crate) fn timer_register(domain: TimeDomain, timestamp: i64) {
    with_host(|h| {
        let key = h.state_key("timer at", &timestamp.to_string());
        h.timer_set(domain).insert((timestamp, key));
    })
}

pub(crate) fn timer_delete(domain: TimeDomain, timestamp: i64) {
    with_host(|h| {
        let key = h.state_key("timer at", &timestamp.to_string());
        h.timer_set(domain).remove(&(timestamp, key));
    })
}

pub(crate) fn current_watermark() -> i64 {
    with_host(|h| h.watermark)
}

pub(crate) fn current_processing_time() -> i64 {
    with_host(|h| h.processing_time)
}
