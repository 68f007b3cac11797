//! Host imports on wasm32: thin wrappers over the generated bindings.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::thread::LocalKey;

use super::{Slot, StateId, Ttl};
use crate::__private::bindings::sluice::operator::{
    context, log as wit_log, metrics, record_info, state, timers,
};
use crate::log::Level;
use crate::timers::TimeDomain;

/// Opens a state resource with a TTL: `value-state.with-ttl` or `map-state.with-ttl`.
#[derive(Clone, Copy)]
pub(crate) enum TtlOpen {
    Value(fn(&str, u64) -> state::ValueState),
    Map(fn(&str, u64) -> state::MapState),
}

pub(crate) const VALUE_TTL: TtlOpen = TtlOpen::Value(state::ValueState::with_ttl);
pub(crate) const MAP_TTL: TtlOpen = TtlOpen::Map(state::MapState::with_ttl);

/// Opened host resources: (name, TTL in ms if declared with one, resource).
type Registry<T> = RefCell<Vec<(&'static str, Option<u64>, T)>>;

thread_local! {
    static VALUES: Registry<state::ValueState> = const { RefCell::new(Vec::new()) };
    static MAPS: Registry<state::MapState> = const { RefCell::new(Vec::new()) };
    static COUNTERS: Registry<metrics::Counter> = const { RefCell::new(Vec::new()) };
    static TIMERS_ALLOWED: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` on the host resource called `name` (with `ttl`), opening it on
/// first use and remembering its index in `slot`.
#[inline]
fn with<T, R>(
    reg: &'static LocalKey<Registry<T>>,
    name: &'static str,
    ttl: Option<u64>,
    slot: &Slot,
    open: impl FnOnce() -> T,
    f: impl FnOnce(&T) -> R,
) -> R {
    reg.with(|reg| {
        let mut idx = slot.0.load(Ordering::Relaxed);
        if idx == u32::MAX {
            let mut entries = reg.borrow_mut();
            idx = match entries.iter().position(|(n, t, _)| *n == name && *t == ttl) {
                Some(i) => i as u32,
                None => {
                    entries.push((name, ttl, open()));
                    (entries.len() - 1) as u32
                }
            };
            slot.0.store(idx, Ordering::Relaxed);
        }
        let entries = reg.borrow();
        f(&entries[idx as usize].2)
    })
}

#[inline]
fn value<R>(id: &StateId, f: impl FnOnce(&state::ValueState) -> R) -> R {
    let open = || match id.ttl {
        None => state::ValueState::new(id.name),
        Some(Ttl {
            ms,
            open: TtlOpen::Value(open),
        }) => open(id.name, ms),
        Some(_) => unreachable!("value state with a map opener"),
    };
    with(&VALUES, id.name, id.ttl_ms(), &id.slot, open, f)
}

#[inline]
fn map<R>(id: &StateId, f: impl FnOnce(&state::MapState) -> R) -> R {
    let open = || match id.ttl {
        None => state::MapState::new(id.name),
        Some(Ttl {
            ms,
            open: TtlOpen::Map(open),
        }) => open(id.name, ms),
        Some(_) => unreachable!("map state with a value opener"),
    };
    with(&MAPS, id.name, id.ttl_ms(), &id.slot, open, f)
}

#[inline]
pub(crate) fn set_current(index: u32) {
    context::set_current(index);
}

pub(crate) fn current_key() -> Option<Vec<u8>> {
    context::current_key()
}

pub(crate) fn record_watermark() -> i64 {
    record_info::current_watermark()
}

pub(crate) fn record_position() -> Option<crate::context::Position> {
    record_info::current_position().map(|p| crate::context::Position {
        source: p.source,
        split: p.split,
        offset: p.offset,
    })
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

pub(crate) fn value_get(id: &StateId) -> Option<Vec<u8>> {
    value(id, |s| s.get())
}

pub(crate) fn value_set(id: &StateId, bytes: &[u8]) {
    value(id, |s| s.set(bytes))
}

pub(crate) fn value_clear(id: &StateId) {
    value(id, |s| s.clear())
}

pub(crate) fn map_get(id: &StateId, key: &[u8]) -> Option<Vec<u8>> {
    map(id, |s| s.get(key))
}

pub(crate) fn map_set(id: &StateId, key: &[u8], bytes: &[u8]) {
    map(id, |s| s.set(key, bytes))
}

pub(crate) fn map_remove(id: &StateId, key: &[u8]) {
    map(id, |s| s.remove(key))
}

pub(crate) fn map_entries(id: &StateId) -> Vec<(Vec<u8>, Vec<u8>)> {
    map(id, |s| s.entries())
}

pub(crate) fn map_clear(id: &StateId) {
    map(id, |s| s.clear())
}

pub(crate) fn counter_add(name: &'static str, slot: &Slot, delta: u64) {
    with(
        &COUNTERS,
        name,
        None,
        slot,
        || metrics::Counter::new(name),
        |c| c.add(delta),
    )
}

pub(crate) fn allow_timers(allowed: bool) {
    TIMERS_ALLOWED.set(allowed)
}

pub(crate) fn timers_allowed() -> bool {
    TIMERS_ALLOWED.get()
}

pub(crate) fn timer_register(domain: TimeDomain, timestamp: i64) {
    timers::register(domain, timestamp)
}

pub(crate) fn timer_delete(domain: TimeDomain, timestamp: i64) {
    timers::delete(domain, timestamp)
}

pub(crate) fn current_watermark() -> i64 {
    timers::current_watermark()
}

pub(crate) fn current_processing_time() -> i64 {
    timers::current_processing_time()
}
