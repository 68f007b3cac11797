//! The host side of the contract's imports: one file per interface of
//! `sluice:operator` (`wit/operator.wit`), each implementing the trait that
//! `bindgen!` generated for it on [`StoreData`], the data of the instance's
//! store. A guest's import call lands here, scoped to its operator, subtask
//! and current record.
//!
//! (WASI and `wasi:http` are wasmtime's; what a plugin may do with them is
//! decided in `sandbox.rs`.)

mod context;
mod log;
mod metrics;
mod record_info;
mod state;
pub(crate) mod timers;

use crate::bindings::sluice::operator as api;
use crate::store::StoreData;

// `types` only defines the contract's data types: nothing to implement.
impl api::types::Host for StoreData {}
