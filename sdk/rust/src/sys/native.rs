//! Host imports on native targets: an in-memory stand-in for the Sluice host.
//!
//! State is a map per (state name, record key), exactly as the host scopes it;
//! counters and log lines are recorded so tests can read them. The stub a call
//! uses is the one installed on the current thread: [`crate::testing::Harness`]
//! installs its own for the duration of each call, and code run outside a
//! harness gets a per-thread default.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use super::Slot;
use crate::log::Level;

/// Map states: (state name, record key) -> map key -> value.
type Maps = HashMap<(String, Vec<u8>), BTreeMap<Vec<u8>, Vec<u8>>>;

/// The state of one stand-in host.
#[derive(Debug, Default)]
pub(crate) struct StubHost {
    /// Keys of the records of the batch being processed.
    pub(crate) batch_keys: Vec<Option<Vec<u8>>>,
    /// Index of the current record, once `set-current` was called.
    pub(crate) current: Option<u32>,
    pub(crate) values: HashMap<(String, Vec<u8>), Vec<u8>>,
    pub(crate) maps: Maps,
    pub(crate) counters: HashMap<String, u64>,
    pub(crate) logs: Vec<(Level, String)>,
    /// How many times `set-current` was called (the harness checks one per record).
    pub(crate) set_current_calls: u64,
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
    /// The key keyed state is scoped to right now; panics (the host traps) if
    /// there is no current record or it has no key.
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

pub(crate) fn log(level: Level, message: &str) {
    with_host(|h| h.logs.push((level, message.to_owned())))
}

pub(crate) fn value_get(name: &'static str, _: &Slot) -> Option<Vec<u8>> {
    with_host(|h| {
        let key = h.state_key("value state", name);
        h.values.get(&(name.to_owned(), key)).cloned()
    })
}

pub(crate) fn value_set(name: &'static str, _: &Slot, value: &[u8]) {
    with_host(|h| {
        let key = h.state_key("value state", name);
        h.values.insert((name.to_owned(), key), value.to_vec());
    })
}

pub(crate) fn value_clear(name: &'static str, _: &Slot) {
    with_host(|h| {
        let key = h.state_key("value state", name);
        h.values.remove(&(name.to_owned(), key));
    })
}

pub(crate) fn map_get(name: &'static str, _: &Slot, map_key: &[u8]) -> Option<Vec<u8>> {
    with_host(|h| {
        let key = h.state_key("map state", name);
        h.maps
            .get(&(name.to_owned(), key))
            .and_then(|m| m.get(map_key).cloned())
    })
}

pub(crate) fn map_set(name: &'static str, _: &Slot, map_key: &[u8], value: &[u8]) {
    with_host(|h| {
        let key = h.state_key("map state", name);
        h.maps
            .entry((name.to_owned(), key))
            .or_default()
            .insert(map_key.to_vec(), value.to_vec());
    })
}

pub(crate) fn map_remove(name: &'static str, _: &Slot, map_key: &[u8]) {
    with_host(|h| {
        let key = h.state_key("map state", name);
        if let Some(m) = h.maps.get_mut(&(name.to_owned(), key)) {
            m.remove(map_key);
        }
    })
}

pub(crate) fn map_entries(name: &'static str, _: &Slot) -> Vec<(Vec<u8>, Vec<u8>)> {
    with_host(|h| {
        let key = h.state_key("map state", name);
        h.maps
            .get(&(name.to_owned(), key))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    })
}

pub(crate) fn map_clear(name: &'static str, _: &Slot) {
    with_host(|h| {
        let key = h.state_key("map state", name);
        h.maps.remove(&(name.to_owned(), key));
    })
}

pub(crate) fn counter_add(name: &'static str, _: &Slot, delta: u64) {
    with_host(|h| *h.counters.entry(name.to_owned()).or_default() += delta)
}
