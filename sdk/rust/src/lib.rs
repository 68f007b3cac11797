//! Write [Sluice](https://github.com/) stream operators in Rust.
//!
//! A Sluice operator is a WebAssembly component that the Sluice host loads,
//! feeds batches of records, and can swap for a new version while the
//! pipeline runs, without losing records or state. This crate hides the
//! component contract (`sluice:operator@0.1.0`, world `process-operator`)
//! behind one attribute over one plain function:
//!
//! | attribute | function | emits |
//! |---|---|---|
//! | [`#[filter]`](filter) | `fn(&Record) -> Result<bool, E>` | the record if `true` |
//! | [`#[map]`](map) | `fn(Record) -> Result<Record, E>` | the returned record |
//! | [`#[process]`](process) | `fn(Record, &mut Context) -> Result<(), E>` | whatever it [`emit`](Context::emit)s, on the main or [side outputs](Context::emit_to) |
//!
//! `E` is anything that converts into [`Error`] (every `std::error::Error`
//! does). An `Err` becomes a per-record error that the host hands to the
//! operator's error policy; a panic traps, which fails the batch and is also
//! handled by the error policy.
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
//! # Metrics and logs
//!
//! [`Counter`] adds to a host counter; [`log`] writes to the host's log.
//!
//! # Testing natively
//!
//! On targets other than `wasm32` the host imports are replaced by an
//! in-memory stand-in, and [`testing::Harness`] drives your operator like the
//! host does (see [`testing`]). Each attribute macro defines a hidden
//! `__sluice_operator()` next to your function for the harness to use.
//!
//! # Performance
//!
//! The host calls `process` with a whole batch. Per record the SDK makes one
//! host call (`set-current`) and allocates nothing beyond the records
//! themselves; state writes encode into a reused buffer. [`Context::key`]
//! asks the host for the key only when called.

#![deny(missing_docs)]

extern crate self as sluice_sdk;

mod context;
mod error;
pub mod log;
mod metrics;
mod params;
mod record;
mod runtime;
pub mod state;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use context::Context;
pub use error::Error;
pub use metrics::Counter;
pub use params::Params;
pub use record::{BatchResult, Emit, Header, Output, Record, RecordError};
pub use runtime::OperatorDef;
pub use state::{MapState, ValueState};

/// Turn `fn(&Record) -> Result<bool, E>` into a filter operator: a record is
/// passed through unchanged to the main output when the function returns
/// `Ok(true)`, dropped on `Ok(false)`, and reported as a per-record error on
/// `Err`.
///
/// Arguments (both optional): `params = T` (deserialize params into `T`,
/// passed as `&T` last argument) and `init = path` (an init hook
/// `fn(&Params) -> Result<(), E>`). See the [crate docs](crate).
pub use sluice_sdk_macros::filter;

/// Turn `fn(Record) -> Result<Record, E>` into a map operator: the returned
/// record goes to the main output; `Err` is a per-record error.
///
/// Arguments as for [`filter`].
pub use sluice_sdk_macros::map;

/// Turn `fn(Record, &mut Context) -> Result<(), E>` into a process operator:
/// it can emit any number of records through the [`Context`], to the main
/// output or to side outputs; `Err` is a per-record error (records already
/// emitted for that input are still delivered).
///
/// Arguments as for [`filter`].
pub use sluice_sdk_macros::process;

/// Implementation details used by the macros. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::record::InitContext;
    pub use crate::runtime::{guest_init, guest_process, Operator};

    #[cfg(target_arch = "wasm32")]
    pub use bindings::export_process_operator;

    /// The generated bindings of `sluice:operator@0.1.0`, world `process-operator`.
    #[cfg(target_arch = "wasm32")]
    #[allow(missing_docs)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "process-operator",
            path: "../../wit",
            pub_export_macro: true,
            export_macro_name: "export_process_operator",
            default_bindings_module: "::sluice_sdk::__private::bindings",
            with: {
                "sluice:operator/types@0.1.0/header": crate::Header,
                "sluice:operator/types@0.1.0/record": crate::Record,
                "sluice:operator/types@0.1.0/output": crate::Output,
                "sluice:operator/types@0.1.0/emit": crate::Emit,
                "sluice:operator/types@0.1.0/record-error": crate::RecordError,
                "sluice:operator/types@0.1.0/batch-result": crate::BatchResult,
                "sluice:operator/types@0.1.0/init-context": crate::record::InitContext,
            },
        });
    }
}
