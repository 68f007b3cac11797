//! Write [Sluice](https://github.com/) stream operators in Rust.
//!
//! A Sluice operator is a WebAssembly component that the Sluice host loads,
//! feeds batches of records, and can swap for a new version while the
//! pipeline runs, without losing records or state. This crate hides the
//! component contract (`sluice:operator@0.1.3`) behind one attribute over one
//! plain function (or, for window aggregates, one trait impl):
//!
//! | attribute | on | world | emits |
//! |---|---|---|---|
//! | [`#[filter]`](filter) | `fn(&Record) -> Result<bool, E>` | `process-operator` | the record if `true` |
//! | [`#[map]`](map) | `fn(Record) -> Result<Record, E>` | `process-operator` | the returned record |
//! | [`#[process]`](process) | `fn(Record, &mut Context) -> Result<(), E>` | `process-operator` | whatever it [`emit`](Context::emit)s, on the main or [side outputs](Context::emit_to) |
//! | [`#[process(on_timer = f)]`](process) | the same, plus `fn f(Timer, &mut Context) -> Result<(), E>` | `keyed-process-operator` | the same, from records and from [timers] |
//! | any of the three with [`migrate = m`](migration) | the same, plus `fn m(&[u8], &PreviousVersion) -> Result<(), E>` | `migrating-process-operator` (`migrating-keyed-process-operator` with `on_timer`) | the same; `m` rewrites the old version's state on a swap |
//! | [`#[aggregate]`](macro@aggregate) | `impl Aggregate for T` | `window-aggregate` | what [`Aggregate::finish`] emits per fired window |
//!
//! `E` is anything that converts into [`Error`] (every `std::error::Error`
//! does). An `Err` becomes a per-record error that the host hands to the
//! operator's error policy; a panic traps, which fails the batch and is also
//! handled by the error policy. A component exports exactly the interfaces of
//! its world: a plain `#[process]` plugin is still a `process-operator`.
//!
//! # Hello world
//!
//! ```
//! use sluice_sdk::{Error, Record};
//!
//! /// Keep records whose value mentions "sluice".
//! #[sluice_sdk::filter]
//! fn mentions_sluice(record: &Record) -> Result<bool, Error> {
//!     Ok(record.value_str().is_some_and(|v| v.contains("sluice")))
//! }
//!
//! # fn main() {
//! // The same code runs natively in tests, against an in-memory host:
//! let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), "{}");
//! let out = h.process(vec![Record::new("hello sluice"), Record::new("hello world")]);
//! assert_eq!(out.main_values(), ["hello sluice"]);
//! # }
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` in a crate with
//! `crate-type = ["cdylib", "rlib"]`; the `.wasm` file is the component the
//! host loads. One operator per plugin crate.
//!
//! # Params and init
//!
//! The operator's `params` table from the pipeline file arrives as [`Params`].
//! Two optional attribute arguments use it, for every kind of operator:
//!
//! - `params = T` deserializes the whole table into your `T` (serde) once, at
//!   init, and passes `&T` as the function's **last** argument. Invalid params
//!   refuse the plugin with the serde error.
//! - `init = path` calls `fn path(params: &Params) -> Result<(), E>` once before
//!   the first batch; an `Err` refuses the plugin with its message.
//!
//! ```
//! use serde::Deserialize;
//! use sluice_sdk::{Error, Params, Record};
//!
//! #[derive(Deserialize)]
//! struct Limits {
//!     #[serde(default = "default_max")]
//!     max_len: usize,
//! }
//! fn default_max() -> usize { 10 }
//!
//! fn announce(params: &Params) -> Result<(), Error> {
//!     sluice_sdk::log::info!("starting subtask {}", params.subtask());
//!     Ok(())
//! }
//!
//! #[sluice_sdk::filter(params = Limits, init = announce)]
//! fn short(record: &Record, limits: &Limits) -> Result<bool, Error> {
//!     Ok(record.value.len() <= limits.max_len)
//! }
//! # fn main() {
//! let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), r#"{"max_len": 3}"#);
//! assert_eq!(h.process(vec![Record::new("abc"), Record::new("abcd")]).main_values(), ["abc"]);
//! # }
//! ```
//!
//! Inside a `#[process]` function the raw params are also at
//! [`Context::params`].
//!
//! # Keyed state
//!
//! [`ValueState`] and [`MapState`] are typed (serde + postcard) views of state
//! that **the host** keeps in RocksDB, scoped to the operator and to the key
//! of the record being processed. It survives plugin swaps and restarts; guest
//! memory (statics, caches) survives neither. See [`state`].
//!
//! ```
//! use sluice_sdk::{Context, Error, Record, ValueState};
//!
//! static COUNT: ValueState<u64> = ValueState::new("count");
//!
//! #[sluice_sdk::process]
//! fn count(record: Record, ctx: &mut Context) -> Result<(), Error> {
//!     let n = COUNT.update(|n| n.unwrap_or(0) + 1)?;
//!     ctx.emit(record.with_value(n.to_string()));
//!     Ok(())
//! }
//! # fn main() {
//! let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), "");
//! let out = h.process(vec![Record::new("").with_key("a"), Record::new("").with_key("a")]);
//! assert_eq!(out.main_values(), ["1", "2"]);
//! # }
//! ```
//!
//! Declare a state with [`ValueState::with_ttl`] / [`MapState::with_ttl`] and
//! its entries expire a fixed time after they were last written (see
//! [`state`](state#time-to-live)).
//!
//! # Timers
//!
//! `#[process(on_timer = handler)]` makes a keyed process operator with
//! timers: register event-time or processing-time timers for the current key
//! with the functions in [`timers`], and the host calls `handler` with each
//! [`Timer`] when it is due, with the timer's key current (so keyed state and
//! timers act on it). See [`timers`] for an example.
//!
//! # Migrating state on a swap
//!
//! `migrate = f` (on `#[process]`, `#[filter]` or `#[map]`) rewrites the
//! keyed state an older version left behind when this version replaces it:
//! the host calls `f(key, &PreviousVersion)` for every key with state, with
//! that key current, before the first record; an `Err` for any key undoes the
//! whole migration and rejects the deploy. `migrate_if = g` decides whether
//! to migrate at all. See [`migration`].
//!
//! # Window aggregates
//!
//! The host runs tumbling, sliding and session windows and keeps one
//! accumulator per key and window; the plugin only says what the accumulator
//! is: a serde type implementing [`Aggregate`] (fold in a record, merge two,
//! produce results), exported with [`#[aggregate]`](macro@aggregate). See
//! [`aggregate`](mod@aggregate).
//!
//! # Metrics and logs
//!
//! [`Counter`] adds to a host counter; [`log`] writes to the host's log.
//!
//! # Testing natively
//!
//! On targets other than `wasm32` the host imports are replaced by an
//! in-memory stand-in, and [`testing::Harness`] drives your operator like the
//! host does, timers and migrations included
//! ([`testing::Harness::advance_watermark`],
//! [`testing::Harness::advance_processing_time`],
//! [`testing::Harness::migrate`]);
//! [`testing::AggregateHarness`] does the same for aggregates (see
//! [`testing`]). Each attribute macro defines a hidden `__sluice_operator()`
//! next to your function for the harnesses to use.
//!
//! # Performance
//!
//! The host calls `process` with a whole batch. Per record the SDK makes one
//! host call (`set-current`) and allocates nothing beyond the records
//! themselves; state writes encode into a reused buffer. [`Context::key`]
//! asks the host for the key only when called.

#![deny(missing_docs)]

extern crate self as sluice_sdk;

pub mod aggregate;
mod context;
mod error;
pub mod log;
mod metrics;
pub mod migration;
mod params;
mod record;
mod runtime;
pub mod state;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod timers;

pub use aggregate::{Aggregate, AggregateDef, Window, WindowOutput};
pub use context::{Context, Position};
pub use error::Error;
pub use metrics::Counter;
pub use migration::PreviousVersion;
pub use params::Params;
pub use record::{BatchResult, Emit, Header, Output, Record, RecordError};
pub use runtime::OperatorDef;
pub use state::{MapState, ValueState};
pub use timers::{TimeDomain, Timer};

/// Turn `fn(&Record) -> Result<bool, E>` into a filter operator: a record is
/// passed through unchanged to the main output when the function returns
/// `Ok(true)`, dropped on `Ok(false)`, and reported as a per-record error on
/// `Err`.
///
/// Arguments (all optional): `params = T` (deserialize params into `T`,
/// passed as `&T` last argument), `init = path` (an init hook
/// `fn(&Params) -> Result<(), E>`), and `migrate = path` / `migrate_if = path`
/// (rewrite the previous version's state on a swap; as for [`process`]). See
/// the [crate docs](crate).
pub use sluice_sdk_macros::filter;

/// Turn `fn(Record) -> Result<Record, E>` into a map operator: the returned
/// record goes to the main output; `Err` is a per-record error.
///
/// Arguments as for [`filter`] (including `migrate` and `migrate_if`).
pub use sluice_sdk_macros::map;

/// Turn `fn(Record, &mut Context) -> Result<(), E>` into a process operator:
/// it can emit any number of records through the [`Context`], to the main
/// output or to side outputs; `Err` is a per-record error (records already
/// emitted for that input are still delivered).
///
/// Arguments: `params = T` and `init = path` as for [`filter`], and
/// `on_timer = path`, which makes it a keyed process operator with timers
/// (world `keyed-process-operator`): `path` is
/// `fn(timer: Timer, ctx: &mut Context) -> Result<(), E>` (with `params = T`,
/// also `&T` last), called for every due timer registered with [`timers`],
/// with the timer's key current. Records it emits are attributed to the timer
/// (`emit.input` is the timer's index in the host's call); an `Err` is an
/// error of that timer.
///
/// ```
/// use sluice_sdk::{timers, Context, Error, Record, Timer};
///
/// /// Echo each record's key one minute (processing time) later.
/// #[sluice_sdk::process(on_timer = later)]
/// fn remind(_record: Record, _ctx: &mut Context) -> Result<(), Error> {
///     timers::register_processing_time(timers::current_processing_time() + 60_000);
///     Ok(())
/// }
///
/// fn later(timer: Timer, ctx: &mut Context) -> Result<(), Error> {
///     ctx.emit(Record::new(timer.key.clone()).with_key(timer.key));
///     Ok(())
/// }
/// # fn main() {
/// let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), "{}");
/// h.process(vec![Record::new("").with_key("k")]);
/// assert_eq!(h.advance_processing_time(60_000).main_values(), ["k"]);
/// # }
/// ```
///
/// `migrate = path` makes the component rewrite the keyed state of the
/// version it replaces on a hot swap (world `migrating-process-operator`, or
/// `migrating-keyed-process-operator` with `on_timer`): `path` is
/// `fn(key: &[u8], from: &PreviousVersion) -> Result<(), E>`, called once for
/// every key that has state in the subtask, with that key current (so
/// [`ValueState`] and [`MapState`] read and write that key's state), after
/// `init` and before the first record. The first `Err` stops the migration:
/// the host undoes all of its state writes and rejects the deploy with the
/// message, and the old version keeps running. `migrate_if = path`
/// (only with `migrate`), `fn(from: &PreviousVersion) -> bool`, is asked
/// first, once per subtask; without it the host always migrates. Neither
/// hook takes `&T` for `params = T`: read what a migration needs from the
/// params in the `init` hook. `#[filter]` and `#[map]` take both arguments
/// too. See [`migration`] for an example.
///
/// ```
/// use sluice_sdk::{Context, Error, PreviousVersion, Record, ValueState};
///
/// static OLD: ValueState<u32> = ValueState::new("n");
/// static NEW: ValueState<u64> = ValueState::new("n64");
///
/// #[sluice_sdk::process(migrate = widen, migrate_if = from_v1)]
/// fn count(record: Record, ctx: &mut Context) -> Result<(), Error> {
///     let n = NEW.update(|n| n.unwrap_or(0) + 1)?;
///     ctx.emit(record.with_value(n.to_string()));
///     Ok(())
/// }
///
/// fn from_v1(from: &PreviousVersion) -> bool {
///     from.params().is_ok_and(|p| p.get::<u32>("version").ok().flatten() == Some(1))
/// }
///
/// fn widen(_key: &[u8], _from: &PreviousVersion) -> Result<(), Error> {
///     if let Some(n) = OLD.get()? {
///         NEW.set(&u64::from(n))?;
///         OLD.clear();
///     }
///     Ok(())
/// }
/// # fn main() {
/// let mut h = sluice_sdk::testing::Harness::new(__sluice_operator(), "{}");
/// let v2 = sluice_sdk::PreviousVersion { params: r#"{"version": 2}"#.into(), ..Default::default() };
/// assert_eq!(h.migrate(&v2), Ok(false));
/// let v1 = sluice_sdk::PreviousVersion { params: r#"{"version": 1}"#.into(), ..Default::default() };
/// assert_eq!(h.migrate(&v1), Ok(true));
/// # }
/// ```
pub use sluice_sdk_macros::process;

/// Export a window aggregate: put it on the `impl Aggregate for T` block (or
/// on the definition of `T`, with the impl elsewhere). The component targets
/// world `window-aggregate` and exports only the `aggregator` interface.
///
/// Argument (optional): `init = path`, an init hook
/// `fn(&Params) -> Result<(), E>` run once before anything else. Params reach
/// the methods through [`Aggregate::Params`]. See [`aggregate`](mod@aggregate)
/// for an example. There is no `migrate`: the host keeps the accumulators, so
/// a new version must decode what the old one stored.
pub use sluice_sdk_macros::aggregate;

/// Implementation details used by the macros. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::aggregate::{
        guest_aggregate_add, guest_aggregate_finish, guest_aggregate_init, guest_aggregate_merge,
    };
    pub use crate::record::InitContext;
    pub use crate::runtime::{
        guest_init, guest_migrate, guest_needs_migration, guest_on_timer, guest_process, Operator,
    };

    #[cfg(target_arch = "wasm32")]
    pub use wit_bindgen;

    /// The SDK's types under their WIT names in `sluice:operator/types`: the
    /// plugins' bindings map that interface here.
    pub mod types {
        pub use crate::record::InitContext;
        pub use crate::{BatchResult, Emit, Header, Output, Record, RecordError};
        pub use crate::{TimeDomain, Timer as FiredTimer, Window};
    }

    /// The generated bindings of `sluice:operator@0.1.3`, world `sluice-host`
    /// (every import). Only the imports are used from here: each plugin
    /// generates the exports of its own world (see `__export_*!`), with its
    /// imports mapped to these.
    #[cfg(target_arch = "wasm32")]
    #[allow(missing_docs)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "sluice-host",
            path: "../../wit",
            // Public export macro: this crate's custom section then describes
            // only the imports, so it requires no export of a plugin.
            pub_export_macro: true,
            export_macro_name: "__export_sluice_host_unused",
            default_bindings_module: "::sluice_sdk::__private::bindings",
            with: {
                "sluice:operator/types@0.1.3/header": crate::Header,
                "sluice:operator/types@0.1.3/record": crate::Record,
                "sluice:operator/types@0.1.3/output": crate::Output,
                "sluice:operator/types@0.1.3/emit": crate::Emit,
                "sluice:operator/types@0.1.3/record-error": crate::RecordError,
                "sluice:operator/types@0.1.3/batch-result": crate::BatchResult,
                "sluice:operator/types@0.1.3/init-context": crate::record::InitContext,
                "sluice:operator/types@0.1.3/time-domain": crate::TimeDomain,
                "sluice:operator/types@0.1.3/fired-timer": crate::Timer,
                "sluice:operator/types@0.1.3/window": crate::Window,
            },
        });
    }
}
