//! Host imports on wasm32: thin wrappers over the generated bindings.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::thread::LocalKey;

use super::Slot;
use crate::__private::bindings::sluice::operator::{context, log as wit_log, metrics, state};
use crate::log::Level;

type Registry<T> = RefCell<Vec<(&'static str, T)>>;

thread_local! {
    static VALUES: Registry<state::ValueState> = const { RefCell::new(Vec::new()) };
    static MAPS: Registry<state::MapState> = const { RefCell::new(Vec::new()) };
    static COUNTERS: Registry<metrics::Counter> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on the host resource called `name`, opening it on first use and
/// remembering its index in `slot`.
#[inline]
fn with<T, R>(
    reg: &'static LocalKey<Registry<T>>,
    name: &'static str,
    slot: &Slot,
    open: fn(&str) -> T,
    f: impl FnOnce(&T) -> R,
) -> R {
    reg.with(|reg| {
        let mut idx = slot.0.load(Ordering::Relaxed);
        if idx == u32::MAX {
            let mut entries = reg.borrow_mut();
            idx = match entries.iter().position(|(n, _)| *n == name) {
                Some(i) => i as u32,
                None => {
                    entries.push((name, open(name)));
                    (entries.len() - 1) as u32
                }
            };
            slot.0.store(idx, Ordering::Relaxed);
        }
        let entries = reg.borrow();
        f(&entries[idx as usize].1)
    })
}

#[inline]
pub(crate) fn set_current(index: u32) {
    context::set_current(index);
}

pub(crate) fn current_key() -> Option<Vec<u8>> {
    context::current_key()
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit_log::Level::Trace,
        Level::Debug => wit_log::Level::Debug,
        Level::Info => wit_log::Level::Info,
        Level::Warn => wit_log::Level::Warn,
        Level::Error => wit_log::Level::Error,
    };
    wit_log::log(level, message);
}

pub(crate) fn value_get(name: &'static str, slot: &Slot) -> Option<Vec<u8>> {
    with(&VALUES, name, slot, state::ValueState::new, |s| s.get())
}

pub(crate) fn value_set(name: &'static str, slot: &Slot, value: &[u8]) {
    with(&VALUES, name, slot, state::ValueState::new, |s| {
        s.set(value)
    })
}

pub(crate) fn value_clear(name: &'static str, slot: &Slot) {
    with(&VALUES, name, slot, state::ValueState::new, |s| s.clear())
}

pub(crate) fn map_get(name: &'static str, slot: &Slot, key: &[u8]) -> Option<Vec<u8>> {
    with(&MAPS, name, slot, state::MapState::new, |s| s.get(key))
}

pub(crate) fn map_set(name: &'static str, slot: &Slot, key: &[u8], value: &[u8]) {
    with(&MAPS, name, slot, state::MapState::new, |s| {
        s.set(key, value)
    })
}

pub(crate) fn map_remove(name: &'static str, slot: &Slot, key: &[u8]) {
    with(&MAPS, name, slot, state::MapState::new, |s| s.remove(key))
}

pub(crate) fn map_entries(name: &'static str, slot: &Slot) -> Vec<(Vec<u8>, Vec<u8>)> {
    with(&MAPS, name, slot, state::MapState::new, |s| s.entries())
}

pub(crate) fn map_clear(name: &'static str, slot: &Slot) {
    with(&MAPS, name, slot, state::MapState::new, |s| s.clear())
}

pub(crate) fn counter_add(name: &'static str, slot: &Slot, delta: u64) {
    with(&COUNTERS, name, slot, metrics::Counter::new, |c| {
        c.add(delta)
    })
}
