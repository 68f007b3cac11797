//! The Sluice side of the plugin contract: loading, checking and running
//! operator components with wasmtime.
//!
//! # The model
//!
//! One [`Runtime`] per process owns the wasmtime `Engine`, a `Linker` with the
//! host imports of `sluice:operator@0.1.0` (keyed state, context, logging,
//! metrics) plus a deny-everything WASI, and a thread that advances the
//! engine's epoch so that every guest call has a CPU deadline.
//!
//! [`Runtime::load`] turns a `.wasm` file into a [`Plugin`]: it checks that the
//! file is a component (not a core module), compiles it once (cached on disk by
//! sha256 digest), checks its exports and imports against the contract, and
//! pre-instantiates it. [`Plugin::instantiate`] then makes cheap [`Instance`]s,
//! one per operator subtask, each in its own `Store` with a memory cap.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use sluice_runtime::{Runtime, InstanceConfig};
//! let runtime = Runtime::new(None)?;
//! let plugin = runtime.load("plugins/dist/taxi_filter.wasm".as_ref())?;
//! let metrics = Arc::new(sluice_types::metrics::Metrics::default());
//! let mut instance = plugin.instantiate(InstanceConfig::new("plausible"), None, metrics)?;
//! let result = instance.process(&[sluice_runtime::wit::Record {
//!     key: None, value: b"...".to_vec(), event_time: None, headers: vec![],
//! }])?;
//! println!("{} emits", result.emits.len());
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! One module per role, the way `wasmtime-wasi` lays out its host:
//!
//! - `bindings`: the `bindgen!` output, the contract's version and the
//!   [`wit`] types;
//! - `engine`: [`Runtime`], its engines and the compile cache;
//! - `plugin`: loading, describing and checking a component ([`Plugin`]);
//! - `instance`: an instantiated operator and the calls into it
//!   ([`Instance`]);
//! - `swap`: what a hot swap needs of an instance (migration included);
//! - `sandbox`: the epoch ticker, memory cap and the WASI a grant allows;
//! - `store`: [`StoreData`], the host's data in each instance's store;
//! - `host/`: one file per host interface of the contract (state, context,
//!   record-info, timers, log, metrics);
//! - `resources`: what the host keeps behind the contract's resources;
//! - `error`: [`LoadError`] and [`CallError`].
#![deny(missing_docs)]

mod bindings;
mod engine;
mod error;
mod host;
mod instance;
mod plugin;
mod resources;
mod sandbox;
mod store;
mod swap;

pub use sluice_config::Grants;

pub use bindings::{
    from_wit, to_wit, wit, AGGREGATOR_EXPORT, MIGRATOR_EXPORT, PACKAGE, PROCESSOR_EXPORT,
    TIMER_EXPORT, VERSION,
};
pub use engine::{EngineOptions, Runtime};
pub use error::{CallError, LoadError};
pub use host::timers::{now_ms, MAX_TIMER_OPS_PER_CALL};
pub use instance::{Instance, InstanceConfig};
pub use plugin::{check_contract, OperatorKind, Plugin, PluginInfo};
pub use resources::{CounterHandle, MapStateHandle, ValueStateHandle};
pub use sandbox::EPOCH_TICK;
pub use store::{StoreData, TimerOp};
pub use swap::{PendingSwap, PreviousVersion};
